r"""Anomaly scores from a VAE's probabilities: one score per input, higher meaning more anomalous.

A VAE gives every input :math:`x` a probability :math:`p(x)`, estimated per data point by importance sampling
(:func:`~pyrovae.log_likelihood`); an input the model finds improbable is an anomaly. Likelihood alone is
known to fail: a model of Fashion-MNIST gives MNIST digits *higher* likelihood than its own test images
(Nalisnick et al. 2019), because the likelihood of an image is dominated by its complexity, not its semantics.
:func:`anomaly_scores` computes, for any model/guide pair (see the README) on any device:

- ``"nll"``: :math:`-\log p(x)`, the IWAE-:math:`K` estimate with its standard error and PSIS
  :math:`\hat k` (:func:`~pyrovae.log_likelihood`);
- ``"elbo"``: the negative ELBO, :math:`-\frac1K\sum_k \log w_k`, with its Monte Carlo standard error;
- ``"reconstruction"``: :math:`-\log p(x \mid z = \mathbb E_q[z])`, the autoencoder baseline (every
  latent at the mean of its guide distribution; continuous latents only);
- ``"likelihood-ratio"``: :math:`-\log p(x) + \log p_{\mathrm{bg}}(x)` (Ren et al. 2019), with a
  *background* model trained on inputs perturbed at a rate :math:`\mu` (:func:`perturb`), which
  learns the population statistics (complexity) and not the semantics;
- ``"likelihood-regret"``: :math:`\mathcal L(x; \phi^*_x) - \mathcal L(x; \phi)` (Xiao et al. 2020),
  the gain in the ELBO when the guide's output for that one input is optimized (see
  :func:`~pyrovae.analysis.regret.likelihood_regret` for which pairs qualify);
- ``"complexity"``: :math:`-\log p(x) - L(x)` (Serrà et al. 2020), :math:`L(x)` the input's code
  length in nats under a lossless compressor, PNG (:func:`complexity`);
- ``"typicality"``: the test of Nalisnick et al. (2019b) for groups of :math:`M` inputs,
  :math:`\bigl| \frac1M\sum_m -\log p(x_m) - \hat H \bigr|`, :math:`\hat H` the mean of
  :math:`-\log p` over in-distribution reference data (an estimate of the model's entropy): a
  group far from the typical set scores high, whether its likelihood is too low *or too high*.

:func:`~pyrovae.detect` turns the scores of in- and out-of-distribution data into AUROC, AUPRC and
FPR at 95 % TPR.

References:

- E. Nalisnick, A. Matsukawa, Y. W. Teh, D. Gorur and B. Lakshminarayanan (2019), "Do Deep
  Generative Models Know What They Don't Know?", ICLR.
- E. Nalisnick, A. Matsukawa, Y. W. Teh and B. Lakshminarayanan (2019b), "Detecting
  Out-of-Distribution Inputs to Deep Generative Models Using Typicality", arXiv:1906.02994.
- J. Ren, P. J. Liu, E. Fertig, J. Snoek, R. Poplin, M. DePristo, J. Dillon and B.
  Lakshminarayanan (2019), "Likelihood Ratios for Out-of-Distribution Detection", NeurIPS.
- Z. Xiao, Q. Yan and Y. Amit (2020), "Likelihood Regret: An Out-of-Distribution Detection Score
  for Variational Auto-encoder", NeurIPS.
- J. Serrà, D. Álvarez, V. Gómez, O. Slizovskaia, J. F. Núñez and J. Luque (2020), "Input
  Complexity and Out-of-Distribution Detection with Likelihood-based Generative Models", ICLR.
"""

from __future__ import annotations

import io
import math
import time
from collections import namedtuple
from dataclasses import dataclass, field

import pyro.poutine as poutine
import torch

from pyrovae.analysis.regret import likelihood_regret
from pyrovae.data.source import DataSource
from pyrovae.errors import ConfigError, DataError, unknown_name
from pyrovae.infer import Chunk
from pyrovae.infer.importance import LogWeights, log_likelihood
from pyrovae.infer.pair import site_log_density, sweep_pair
from pyrovae.infer.sites import latents, scored_sites
from pyrovae.options import check_options
from pyrovae.results import Result, column, columns

__all__ = ["METHODS", "AnomalyScores", "anomaly_scores", "complexity", "perturb"]


@dataclass(repr=False)
class AnomalyScores(Result):
    """Anomaly scores from :func:`anomaly_scores`, one per data point (per group for
    ``"typicality"``); higher means more anomalous.

    :ivar str method: the method (see :data:`METHODS`).
    :ivar torch.Tensor score: ``(N,)`` the scores.
    :ivar torch.Tensor stderr: ``(N,)`` their Monte Carlo standard errors, or ``None`` (a
        deterministic score).
    :ivar dict columns: further per-datapoint figures, by name (e.g. ``khat``, ``nll``,
        ``complexity``), each ``(N,)``.
    :ivar dict settings: the options the scores were computed with.
    :ivar float elapsed: wall time in seconds.
    """

    method: str
    score: torch.Tensor = column()
    stderr: torch.Tensor | None = column(default=None)
    columns: dict[str, torch.Tensor] = columns({})
    settings: dict = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def rows(self) -> str:
        """The scores' dimension: ``"group"`` for ``"typicality"``, else ``"datapoint"``."""
        return "group" if self.method == "typicality" else "datapoint"

    @property
    def mean(self) -> float:
        """The mean score."""
        return float(self.score.mean())

    def summary(self) -> str:
        what = "groups" if self.method == "typicality" else "data points"
        s = self.score
        lines = [
            f"anomaly scores, method {self.method!r}: {self.num_data} {what} (higher = more anomalous)",
            f"  mean {self.mean:.3f}, median {float(s.median()):.3f}, min {float(s.min()):.3f}, "
            f"max {float(s.max()):.3f}",
        ]
        if self.stderr is not None:
            lines.append(f"  median standard error {float(self.stderr.median()):.3f}")
        if "khat" in self.columns:
            bad = int((self.columns["khat"] > 0.7).sum())
            lines.append(f"  PSIS k-hat > 0.7 (unreliable log p(x)) for {bad} of them")
        lines.append(f"  elapsed {self.elapsed:.1f} s")
        return "\n".join(lines)

    def figures(self) -> dict:
        """The mean and median score."""
        return {"mean_score": self.mean, "median_score": float(self.score.median())}


# ---------------------------------------------------------------------------------------------
# the methods


def perturb(
    data: torch.Tensor, rate: float, seed: int = 0, values: torch.Tensor | None = None
) -> torch.Tensor:
    r"""A copy of ``data`` with each element replaced, with probability ``rate`` (Ren et al.'s
    :math:`\mu`, 0.1 to 0.3 in their experiments), by a value drawn uniformly from ``values``
    (default: 0 and 1 for binary data, else the 256 levels of :math:`[0, 1]`): the inputs a
    background model for ``"likelihood-ratio"`` is trained on. Seeded: the same draw every call."""
    if not 0 <= rate <= 1:
        raise ConfigError(f"the perturbation rate must lie in [0, 1]; got {rate}")
    data = torch.as_tensor(data)
    if values is None:
        binary = bool(((data == 0) | (data == 1)).all())
        values = torch.tensor([0.0, 1.0]) if binary else torch.arange(256) / 255
    generator = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same on any device
    flip = (torch.rand(data.shape, generator=generator) < rate).to(data.device)
    draw = values.cpu()[torch.randint(len(values), data.shape, generator=generator)]
    return torch.where(flip, draw.to(data.device, data.dtype), data)


def complexity(x: torch.Tensor) -> torch.Tensor:
    r"""The complexity :math:`L(x)` of each image of ``x`` in nats: :math:`\ln 2` times the bits of
    its lossless PNG encoding (Pillow, compression level 9), the compressor Serrà et al. (2020)
    report first. Images are ``(N, H, W)`` or ``(N, C, H, W)`` with ``C`` 1 or 3 and values in
    :math:`[0, 1]`, quantized to 8 bits. The PNG container's fixed overhead adds the same amount to
    every image of a size, and so does not change how images rank."""
    from PIL import Image

    x = torch.as_tensor(x).detach().cpu()
    if x.dim() == 4 and x.shape[1] in (1, 3):
        x = x.permute(0, 2, 3, 1) if x.shape[1] == 3 else x[:, 0]
    if x.dim() not in (3, 4) or x.shape[0] == 0:
        raise DataError(
            "complexity needs images of shape (N, H, W) or (N, C, H, W) with C = 1 or 3; "
            f"got {tuple(x.shape)}"
        )
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError("complexity needs images with values in [0, 1]; rescale the data")
    pixels = (x * 255).round().to(torch.uint8).numpy()
    out = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=9)
        out.append(8 * len(buffer.getvalue()) * math.log(2))
    return torch.tensor(out, dtype=torch.float64)


#: the options of :func:`anomaly_scores`, as the scoring function of each method takes them
_Options = namedtuple(
    "_Options",
    "num_samples seed steps lr group_size batch_size background reference progress device precision",
)


def _sweep(o: _Options, default: int | None = None) -> dict:
    """The options of a pass over the data (``default`` data points per chunk where ``batch_size``
    is ``None``)."""
    options = dict(seed=o.seed, progress=o.progress, device=o.device, precision=o.precision)
    return dict(options, batch_size=o.batch_size or default)


def _nll(model, guide, data, o: _Options):
    r""":math:`-\log p(x)` with its standard error, and the PSIS :math:`\hat k` as a column."""
    ll = log_likelihood(model, guide, data, o.num_samples, **_sweep(o))
    return -ll.log_px, ll.log_px_se, {"khat": ll.khat}, {}


def _elbo(model, guide, source: DataSource, o: _Options):
    """The negative ELBO and its Monte Carlo standard error, from one sweep."""
    weights = LogWeights(model, guide, source, o.num_samples, desc="ELBO", **_sweep(o))

    def score(chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None]:
        log_w = weights(chunk)[0].double()
        return -log_w.mean(-1), (log_w.var(-1) / o.num_samples).sqrt() if o.num_samples > 1 else None

    return (*weights.sweep.map(score), {}, {})


def _reconstruction(model, guide, source: DataSource, o: _Options):
    """:math:`-\\log p(x \\mid z = \\mathbb E_q[z])` per data point: each latent at the mean of
    its guide distribution (for a guide whose later latents depend on earlier ones, that given the
    earlier ones' draws)."""
    options = _sweep(o, 100)
    sweep, pair = sweep_pair(
        model, guide, source, options.pop("batch_size"), desc="reconstruction", **options
    )
    with torch.no_grad(), poutine.block():
        guide_trace = pair.traces(sweep.args(0, 1), {}, 1)[1]
    discrete = [n for n, site in scored_sites(guide_trace) if site["fn"].support.is_discrete]
    if pair.enumerated or discrete:
        raise ConfigError(
            f"the reconstruction score sets every latent to its guide mean, which a discrete latent "
            f"({', '.join(pair.enumerated or discrete)}) does not have (its mean is not one of its "
            "values); use method 'nll' or 'elbo'"
        )

    def score(chunk: Chunk) -> torch.Tensor:
        model_trace, _ = pair.traces(
            chunk.args, {}, 1, replace=lambda trace: {n: trace.nodes[n]["fn"].mean for n in latents(trace)}
        )
        log_lik = sum(
            site_log_density(site, pair.particle_dim, pair.data_plate, (1, chunk.size))
            for _, site in scored_sites(model_trace)
            if site["is_observed"]
        )
        return -log_lik[0].double()

    return sweep.map(score), None, {}, {}


def _likelihood_ratio(model, guide, source: DataSource, o: _Options):
    r""":math:`-\log p(x) + \log p_{\mathrm{bg}}(x)`, the standard errors added in quadrature."""
    if o.background is None or len(o.background) != 2:
        raise ConfigError(
            "method 'likelihood-ratio' needs background=(model, guide) of a background model: the "
            "same architecture trained with pyrovae.fit on inputs perturbed by "
            "pyrovae.analysis.anomaly.perturb(x, rate) (Ren et al. 2019)"
        )
    nll, stderr, columns, _ = _nll(model, guide, source, o)
    bg_nll, bg_stderr, bg_columns, _ = _nll(*o.background, source, o)
    columns.update(nll=nll, background_nll=bg_nll, background_khat=bg_columns["khat"])
    return nll - bg_nll, (stderr.square() + bg_stderr.square()).sqrt(), columns, {}


def _regret(model, guide, source: DataSource, o: _Options):
    """The likelihood regret (:func:`~pyrovae.analysis.regret.likelihood_regret`) and its standard error."""
    score, stderr = likelihood_regret(
        model, guide, source, steps=o.steps, lr=o.lr, num_samples=o.num_samples, **_sweep(o, 100)
    )
    return score, stderr, {}, {"steps": o.steps, "lr": o.lr}


def _complexity(model, guide, source: DataSource, o: _Options):
    """:math:`-\\log p(x) - L(x)`, :math:`L(x)` the image's PNG code length (:func:`complexity`)."""
    complexity(source.chunk(0, 1)[0])  # images of the right kind, before the long computation
    nll, stderr, columns, _ = _nll(model, guide, source, o)
    columns.update(nll=nll, complexity=complexity(source.chunk(0, len(source))[0]))
    return nll - columns["complexity"], stderr, columns, {"compressor": "PNG (Pillow, compress_level=9)"}


def _typicality(model, guide, source: DataSource, o: _Options):
    r"""The distance of each group's mean :math:`-\log p` from the entropy estimated on the reference data."""
    if o.reference is None:
        raise ConfigError(
            "method 'typicality' needs reference= in-distribution data (e.g. held-out training data) "
            "to estimate the model's entropy"
        )
    if o.group_size > len(source):
        raise ConfigError(f"group_size must be an integer from 1 to {len(source)}; got {o.group_size!r}")
    nll = _nll(model, guide, source, o)[0]
    entropy = float(_nll(model, guide, o.reference, o)[0].mean())
    groups = len(source) // o.group_size
    means = nll[: groups * o.group_size].reshape(groups, o.group_size).mean(-1)
    return (means - entropy).abs(), None, {"mean_nll": means}, dict(group_size=o.group_size, entropy=entropy)


#: each method's scoring function: ``(score, stderr, columns, settings)`` of a pair on a data set
_SCORES = {
    "nll": _nll,
    "elbo": _elbo,
    "reconstruction": _reconstruction,
    "likelihood-ratio": _likelihood_ratio,
    "likelihood-regret": _regret,
    "complexity": _complexity,
    "typicality": _typicality,
}
#: the scoring methods of :func:`anomaly_scores`, by name
METHODS = tuple(_SCORES)


def anomaly_scores(
    model,
    guide,
    data,
    method: str = "nll",
    *,
    num_samples: int = 1000,
    seed: int = 0,
    background: tuple | None = None,
    reference=None,
    group_size: int = 1,
    steps: int = 100,
    lr: float = 1e-2,
    batch_size: int | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    precision: str = "highest",
) -> AnomalyScores:
    r"""Score every input of ``data`` for how anomalous the model finds it (higher = more
    anomalous), by ``method`` (one of :data:`METHODS`; see the module docstring).

    :param model: the model of a model/guide pair in the sense of the README (per-datapoint sites
        in the data plate), trained on in-distribution data.
    :param guide: its guide.
    :param data: a tensor, tuple of tensors or data set (see :class:`~pyrovae.data.DataSource`).
    :param str method: the score: ``"nll"`` (the default), ``"elbo"``, ``"reconstruction"``,
        ``"likelihood-ratio"``, ``"likelihood-regret"``, ``"complexity"`` or ``"typicality"``
        (:data:`METHODS`), each defined in the module docstring.
    :param int num_samples: importance samples per input for the methods that estimate
        :math:`\log p(x)` or the ELBO.
    :param int seed: seed of the draws (the caller's random state is left as it was).
    :param background: ``(model, guide)`` of the background model, for ``"likelihood-ratio"``:
        the same architecture trained on inputs perturbed by :func:`perturb`.
    :param reference: in-distribution data (e.g. held-out training data) whose mean
        :math:`-\log p` estimates the entropy, for ``"typicality"``.
    :param int group_size: inputs per group for ``"typicality"`` (consecutive inputs of ``data``;
        shuffle first where order matters). With 1, each input is its own group.
    :param int steps: optimization steps per input of ``"likelihood-regret"``.
    :param float lr: their learning rate.
    :param int batch_size: data points per chunk (default: as :func:`~pyrovae.log_likelihood`
        chooses; 100 for the regret and the reconstruction).
    :param bool progress: show a progress bar for every pass over data (that of the background
        model and that of the reference data included).
    :param device: where to compute; default the model's device. Results come back on the CPU.
    :param str precision: the arithmetic of every pass (:mod:`pyrovae.precision`), as for
        :func:`~pyrovae.log_likelihood`; recorded in ``settings``.
    :rtype: AnomalyScores
    """
    if method not in METHODS:
        raise unknown_name("anomaly score method", method, METHODS)
    start = time.perf_counter()
    source = DataSource(data)
    if len(source) == 0:
        raise DataError("there are no data points to score; pass a non-empty data set")
    numbers = dict(
        num_samples=num_samples, seed=seed, steps=steps, lr=lr, group_size=group_size, batch_size=batch_size
    )
    check_options(("batch_size",), **numbers)
    passes = dict(progress=progress, device=device, precision=precision)
    o = _Options(**numbers, background=background, reference=reference, **passes)
    score, stderr, columns, settings = _SCORES[method](model, guide, source, o)
    settings = {"num_samples": num_samples, "seed": seed, "precision": precision, **settings}
    return AnomalyScores(method, score.double(), stderr, columns, settings, time.perf_counter() - start)
