r"""Per-datapoint importance-sampled estimates of :math:`\log p(x)` for any model/guide pair.

For a model :math:`p(x, z)` and a guide (proposal) :math:`q(z \mid x)`, each data point
:math:`x_n` gets :math:`K` importance log-weights

.. math:: \log w_k(x_n) = \log p(x_n, z_k) - \log q(z_k \mid x_n),
          \qquad z_k \sim q(\cdot \mid x_n),

and the estimate

.. math:: \widehat{\log p}(x_n) = \log \frac{1}{K} \sum_{k=1}^K w_k(x_n),

the IWAE-:math:`K` bound of Burda, Grosse & Salakhutdinov (2015). It is a stochastic lower bound (Jensen)
whose bias vanishes as :math:`K \to \infty`. Unlike Pyro's :class:`~pyro.infer.RenyiELBO` and
:func:`~pyro.infer.importance.vectorized_importance_weights`, which sum the log-weights over every plate, the
data-plate dimension is kept: one weight per particle *and per data point*.

**Enumerated discrete latents.** A discrete latent :math:`y` that the guide marks ``infer={"enumerate":
"parallel"}`` (the label of :class:`~pyrovae.SSVAE`) is summed out: for each particle :math:`k`, every value
:math:`y` gets its own draw :math:`z_k^{(y)} \sim q(z \mid x, y)`, all values in parallel (Pyro's
:func:`~pyro.poutine.enum`, at dims left of the particle plate), and the weight is

.. math:: w_k = \sum_y q(y \mid x)\, \frac{p(x, y, z_k^{(y)})}{q(y \mid x)\, q(z_k^{(y)} \mid x, y)}
          = \sum_y \frac{p(x, y, z_k^{(y)})}{q(z_k^{(y)} \mid x, y)},

whose expectation is :math:`\sum_y p(x, y) = p(x)`, whatever :math:`q(y \mid x)`: the guide's
probabilities of :math:`y` cancel, and enumeration removes the variance they would add. A site
the *model* alone enumerates is summed out the same way, :math:`p(x, z_k) = \sum_y p(x, y, z_k)`.
The log-weights keep their shape (one per particle and data point), so every reduction,
diagnostic and bound below applies unchanged. Sequential enumeration is not supported.

The pair is traced, checked and reduced to log-weights by :mod:`pyrovae.infer.pair`; the weights
are reduced to estimates and diagnostics by :mod:`pyrovae.infer.diagnostics`. This module sweeps the
data in chunks on the model's device (:class:`Sweep`) and collects the result.

References:

- Y. Burda, R. Grosse and R. Salakhutdinov (2015), "Importance Weighted Autoencoders", ICLR 2016.
- Y. Yao, A. Vehtari, D. Simpson and A. Gelman (2018), "Yes, but Did It Work?: Evaluating
  Variational Inference", ICML.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro.distributions.util import scale_and_mask

from pyrovae import distributed
from pyrovae.data.source import DataSource
from pyrovae.devices import check_memory
from pyrovae.errors import ConfigError, DataError
from pyrovae.graphs import RecordedGraphs, check_mode
from pyrovae.infer import Chunk, Sweep
from pyrovae.infer.checks import support_error, supported
from pyrovae.infer.diagnostics import KHAT_BAD, KHAT_GOOD, reduce_log_weights, verdict
from pyrovae.infer.pair import kl_divergence, reduce_site, site_log_density, sweep_pair
from pyrovae.infer.sites import scored_sites
from pyrovae.options import check_options
from pyrovae.precision import described
from pyrovae.results import Result, column, mean_stderr
from pyrovae.seeds import seeded

__all__ = [
    "CPU_EAGER_CHUNKS",
    "LogLikelihood",
    "LogWeights",
    "PerDatapoint",
    "default_max_memory",
    "log_likelihood",
]

#: default bound on the memory one chunk may use, in bytes, on the CPU
DEFAULT_MAX_MEMORY = 512 * 2**20
#: the same on a GPU, as a fraction of its memory
GPU_MEMORY_FRACTION = 0.25
# The memory (as estimated from the probe, MEMORY_SAFETY included) one chunk aims at on the CPU
# when the bound allows more: rows enough for efficient matrix products, temporaries small enough
# to stay near the last-level cache and to be reused by the C library's allocator from one chunk to
# the next rather than handed back to the system and faulted in again (benchmarks/bench_eval.py:
# 5000-particle chunks of the MNIST VAE fault in several times more pages and run 3-5 % slower than
# chunks a third that size, the size this gives). On a GPU, chunks are as large as the bound allows.
CPU_CHUNK_BYTES = 96 * 2**20
# multiplies the visible per-row tensor sizes to account for activations inside the networks
MEMORY_SAFETY = 4.0
# PSIS fits cost about 0.5 ms a row plus a fixed cost a call: reduce at least this many rows at once
REDUCE_ROWS = 64
#: chunks of each shape that ``compile="auto"`` traces on a CPU before it records one
#: (:mod:`pyrovae.graphs`): two recordings cost about 0.4 s for the MNIST VAE's 1,667-particle chunks, and
#: replaying saves about 2 ms a chunk, so only evaluations of thousands of chunks gain
CPU_EAGER_CHUNKS = 200


#: bytes per importance sample of a data point's log-weights: float64, with the reduction's copies
WEIGHT_BYTES = 4 * 8


def default_max_memory(device: torch.device) -> int:
    """The memory one chunk may use by default: 512 MiB on the CPU, a quarter of a GPU's."""
    if device.type == "cuda":
        return int(GPU_MEMORY_FRACTION * torch.cuda.get_device_properties(device).total_memory)
    return DEFAULT_MAX_MEMORY


# ---------------------------------------------------------------------------------------------
# results


class PerDatapoint(Result):
    r"""What results holding one estimate of :math:`\log p(x)` per data point share: ``log_px``,
    with ``num_data``, ``mean``, ``stderr`` and a summary, whose first line a subclass writes
    (``headline()``), and the lines after the mean (``diagnostics()``)."""

    log_px: torch.Tensor

    @property
    def mean(self) -> float:
        """Mean of ``log_px`` over the data points, in nats."""
        return float(self.log_px.mean())

    @property
    def stderr(self) -> float:
        r"""Standard error of :attr:`mean` across data points (:func:`~pyrovae.results.mean_stderr`)."""
        return mean_stderr(self.log_px)

    def figures(self) -> dict:
        """The mean and its standard error."""
        return {"mean_log_px": self.mean, "stderr": self.stderr}

    def summary(self) -> str:
        """A readable multi-line summary: what was estimated, the mean with its standard error, and
        the diagnostics."""
        lines = [
            self.headline(),
            f"  mean log p(x) = {self.mean:.3f} ± {self.stderr:.3f} nats   (NLL {-self.mean:.3f})",
        ]
        return "\n".join([*lines, *self.diagnostics(), f"  elapsed {self.elapsed:.1f} s"])


@dataclass(repr=False)
class LogLikelihood(PerDatapoint):
    r"""Per-datapoint importance-sampled estimates of :math:`\log p(x)`, from :func:`log_likelihood`.

    :ivar torch.Tensor log_px: ``(N,)`` IWAE-:math:`K` estimates :math:`\log\frac1K\sum_k w_k`.
    :ivar torch.Tensor log_px_se: ``(N,)`` delta-method standard errors of ``log_px``.
    :ivar torch.Tensor ess: ``(N,)`` effective sample sizes :math:`1/\sum_k \bar w_k^2`.
    :ivar torch.Tensor khat: ``(N,)`` PSIS :math:`\hat k`; above 0.7 the estimate is unreliable.
    :ivar int num_samples: :math:`K`, the number of importance samples per data point.
    :ivar torch.Tensor log_weights: ``(N, K)`` log-weights, or ``None`` unless requested.
    :ivar str precision: the arithmetic of the log-weights, one of :data:`~pyrovae.precision.PRECISIONS`.
    :ivar float elapsed: wall time of the computation in seconds.
    """

    log_px: torch.Tensor = column()
    log_px_se: torch.Tensor = column()
    ess: torch.Tensor = column()
    khat: torch.Tensor = column()
    num_samples: int
    log_weights: torch.Tensor | None = column("datapoint", "sample", default=None)
    precision: str = "highest"
    elapsed: float = 0.0

    @classmethod
    def from_log_weights(
        cls, log_weights: torch.Tensor, chunk: int | None = None, elapsed: float = 0.0
    ) -> LogLikelihood:
        r"""Reduce an ``(N, K)`` matrix of log-weights with :func:`reduce_log_weights`, ``chunk`` rows at a
        time (all at once if ``None``). The result keeps ``log_weights`` (detached, on the CPU).

        :param torch.Tensor log_weights: :math:`\log w_{nk}`, :math:`K` importance samples of each of
            :math:`N` data points, shape ``(N, K)``.
        :param int chunk: rows reduced at a time (≥ 1), to bound the memory the reduction takes.
        :param float elapsed: the wall time of the computation in seconds, recorded as ``elapsed``.
        """
        if log_weights.dim() != 2:
            raise DataError(f"log-weights must have shape (N, K), got {tuple(log_weights.shape)}")
        n = log_weights.shape[0]
        step = n if chunk is None else int(chunk)
        if step < 1:
            raise ConfigError(f"chunk must be a positive number of rows, got {chunk}")
        parts = [reduce_log_weights(log_weights[lo : lo + step]) for lo in range(0, n, step)]
        fields = [torch.cat(p) for p in zip(*parts, strict=True)]
        kept = log_weights.detach().cpu()
        return cls(*fields, num_samples=kept.shape[1], log_weights=kept, elapsed=elapsed)

    @classmethod
    def from_rows(
        cls, rows: tuple, num_samples: int, elapsed: float, precision: str = "highest"
    ) -> LogLikelihood:
        """The result of :meth:`LogWeights.estimate`: ``(log_px, log_px_se, ess, khat, log_weights
        or None)``.

        :param tuple rows: those five fields, the first four ``(N,)`` tensors, then the ``(N, K)``
            log-weights or ``None``.
        :param int num_samples: :math:`K`, the importance samples per data point they came from.
        :param float elapsed: the wall time of the computation in seconds.
        :param str precision: the arithmetic they were computed in (:data:`~pyrovae.precision.PRECISIONS`).
        """
        options = dict(num_samples=num_samples, elapsed=elapsed, precision=precision)
        return cls(*rows[:4], log_weights=rows[4], **options)

    @property
    def nll(self) -> float:
        """Negative log-likelihood per data point, ``-mean``."""
        return -self.mean

    def khat_counts(self) -> tuple[int, int, int]:
        """Numbers of data points with k-hat below 0.5, between 0.5 and 0.7, and above 0.7
        (including ``inf``: too few tail draws to fit)."""
        k = self.khat
        good = int((k < KHAT_GOOD).sum())
        ok = int(((k >= KHAT_GOOD) & (k <= KHAT_BAD)).sum())
        bad = int((k > KHAT_BAD).sum())
        return good, ok, bad

    def headline(self) -> str:
        """What was estimated, from how many draws."""
        n, k = self.num_data, self.num_samples
        arithmetic = described(self.precision)
        return f"log p(x) by importance sampling: N = {n} data points, K = {k} samples each{arithmetic}"

    def diagnostics(self) -> list[str]:
        r"""ESS and :math:`\hat k`, and the :meth:`verdict`."""
        good, ok, bad = self.khat_counts()
        ess = self.ess[torch.isfinite(self.ess)]
        lines = []
        if ess.numel():
            lines.append(
                f"  ESS: median {float(ess.median()):.1f}, min {float(ess.min()):.1f} (of {self.num_samples})"
            )
        lines.append(f"  PSIS k-hat: {good} < 0.5, {ok} in 0.5-0.7, {bad} > 0.7")
        missing = int(torch.isnan(self.khat).sum())
        if missing:
            lines.append(f"  k-hat undefined for {missing} data points (NaN or no finite log-weight)")
        return [*lines, f"  {self.verdict()}"]

    def verdict(self) -> str:
        r"""Whether to trust the mean, in a line or two (:func:`~pyrovae.infer.diagnostics.verdict`)."""
        return verdict(
            f"IS-{self.num_samples}", self.mean, self.stderr, self.khat, self.ess, self.num_samples
        )

    def figures(self) -> dict:
        r"""The mean and its standard error, and summaries of the ESS and :math:`\hat k`."""
        good, ok, bad = self.khat_counts()
        ess = self.ess[torch.isfinite(self.ess)]
        return {
            **super().figures(),
            "nll": self.nll,
            "ess_median": float(ess.median()) if ess.numel() else math.nan,
            "ess_min": float(ess.min()) if ess.numel() else math.nan,
            "khat_below_0_5": good,
            "khat_0_5_to_0_7": ok,
            "khat_above_0_7": bad,
            "verdict": self.verdict(),
        }


# ---------------------------------------------------------------------------------------------
# the sweep over data chunks


class LogWeights:
    """The ``K`` log-weights of every data point of a pair, with the chunk sizes memory allows.

    It probes the pair on one data point (:class:`~pyrovae.infer.pair.Pair`), derives how many data points and
    particles one chunk may hold from ``max_memory`` and the tensor sizes of the probe, and makes the
    :class:`~pyrovae.infer.Sweep` over the data with that chunk size; its :meth:`__call__` is the per-chunk
    function of that sweep: the ``(hi - lo, K)`` log-weights of a chunk (on the device), drawn
    ``particle_batch_size`` particles at a time, and, when the analytic-KL ELBO was requested and is
    available, the ``(hi - lo, K)`` single-sample terms :math:`\\log p(x \\mid z_k) - \\mathrm{KL}(q \\| p)`
    (else ``None``). Options as for :func:`log_likelihood`; ``desc`` labels the progress bar.
    """

    def __init__(
        self,
        model,
        guide,
        data,
        num_samples: int,
        *,
        data_plate: str | None = None,
        batch_size: int | None = None,
        particle_batch_size: int | None = None,
        max_memory: int | None = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
        analytic_kl: bool = False,
        seed: int | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
        desc: str = "log p(x)",
        name: str = "num_samples",
        compile: str = "auto",
        precision: str = "highest",
    ):
        sizes = dict(batch_size=batch_size, particle_batch_size=particle_batch_size, max_memory=max_memory)
        check_options(("batch_size", "max_memory", "seed"), num_samples=num_samples, seed=seed, **sizes)
        self.model, self.guide, self.num_samples, self.name = model, guide, num_samples, name
        source = DataSource(data)
        placement = dict(
            device=device, model_kwargs=model_kwargs, data_plate=data_plate, model_args=model_args
        )
        probe, self.pair = sweep_pair(model, guide, source, 1, **placement)
        self.model_kwargs = self.pair.kwargs
        self.analytic_kl = analytic_kl and self.pair.kl_note is None
        dev = probe.device
        self.max_memory = default_max_memory(dev) if max_memory is None else max(1, int(max_memory))
        sizes = self._chunk_sizes(probe, source.num_data, batch_size, particle_batch_size)
        self.batch_size, self.particle_batch_size = sizes
        # derived particle chunks are all drawn at one size (one graph), the last one cut: fewer than one
        # particle a chunk is drawn and dropped
        self._cut_last = particle_batch_size is None
        options = dict(seed=seed, model_args=model_args, progress=progress, desc=desc, precision=precision)
        self.sweep = Sweep(source, self.batch_size, device=dev, **options)
        # the chunks' log-weights recorded and replayed (pyrovae.graphs); "auto" on a CPU, where a chunk's
        # arithmetic dwarfs its Python, only after CPU_EAGER_CHUNKS chunks of a shape
        self.graphs = None
        if check_mode(compile) != "off":
            after = CPU_EAGER_CHUNKS if compile == "auto" and dev.type != "cuda" else 0
            self.graphs = RecordedGraphs(compile, dev, "evaluating eagerly", after=after)

    def _chunk_sizes(self, probe: Sweep, num_data: int, batch_size, particle_batch_size) -> tuple[int, int]:
        num_samples, max_memory = self.num_samples, self.max_memory
        itemsize = max(t.element_size() for t in probe.args(0, 1) if torch.is_tensor(t))
        bytes_per_row = MEMORY_SAFETY * itemsize * self.pair.numel_per_particle
        target = CPU_CHUNK_BYTES if probe.device.type == "cpu" else math.inf
        rows = max(int(min(max_memory, target) // bytes_per_row), 1)
        if particle_batch_size is None:
            particle_batch_size = max(1, min(num_samples, rows // (batch_size or 1)))
            # as few particle chunks as that allows, of equal size
            particle_batch_size = math.ceil(num_samples / math.ceil(num_samples / particle_batch_size))
        # the (batch, K) block of log-weights is kept whole, in float64 for the reduction
        need = WEIGHT_BYTES * num_samples
        check_memory(self.name, num_samples, need, probe.device, "one data point's log-weights")
        if batch_size is None:
            weights_cap = max(1, max_memory // (WEIGHT_BYTES * num_samples))
            batch_size = max(1, min(rows // particle_batch_size, weights_cap))
        return min(batch_size, num_data), min(particle_batch_size, num_samples)

    def _particles(self, args, num_particles: int, num_data: int, check: bool, record: bool):
        computed = None
        if record and self.graphs is not None and self.graphs.active:
            # the tensors are the graph's inputs; other arguments (model_args) constants of the key's graph
            shapes = ((a.shape, a.dtype) if torch.is_tensor(a) else repr(a) for a in args)
            key = (*shapes, num_particles, check)

            def traced(_, varying):
                tensors = iter(varying)
                full = tuple(next(tensors) if torch.is_tensor(a) else a for a in args)
                return self._traced(full, num_particles, num_data, check)

            computed = self.graphs(key, traced, [], [a for a in args if torch.is_tensor(a)])
        return computed or self._traced(args, num_particles, num_data, check)

    def _traced(self, args, num_particles: int, num_data: int, check: bool):
        """The log-weights (and ELBO terms) of ``num_particles`` particles of every data point of ``args``, by
        tracing the pair, and with ``check``, whether each observed site's values are in its support."""
        pair = self.pair
        model_trace, guide_trace = pair.traces(args, self.model_kwargs, num_particles)
        shape = (num_particles, num_data)
        ok = None
        if check:
            observed = [(name, site) for name, site in scored_sites(model_trace) if site["is_observed"]]
            # the sites of the message, the same in every call of a recorded graph
            self._supports = [(name, site["fn"].support) for name, site in observed]
            ok = torch.stack([supported(site) for _, site in observed]) if observed else None
        log_w = pair.log_weights(model_trace, guide_trace, shape)
        if not self.analytic_kl:
            return log_w, None, ok
        elbo = torch.zeros(())
        for name, site in scored_sites(model_trace):
            if site["is_observed"]:
                elbo = elbo + site_log_density(site, pair.particle_dim, pair.data_plate, shape)
            else:
                g = guide_trace.nodes[name]
                kl = scale_and_mask(kl_divergence(g["fn"], site["fn"]), mask=g["mask"])
                elbo = elbo - reduce_site(kl, g, pair.particle_dim, pair.data_plate, shape)
        return log_w, elbo.expand(shape), ok

    def reduce_rows(self) -> int:
        """Rows of log-weights reduced at once: :data:`REDUCE_ROWS`, fewer where they would take
        more than ``max_memory / 4`` bytes."""
        return max(1, min(REDUCE_ROWS, self.max_memory // (4 * 8 * self.num_samples)))

    def __call__(self, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ``(chunk.size, K)`` log-weights of a chunk of :attr:`sweep` (and the ELBO terms)."""
        log_w = elbo = None
        # every particle chunk of a full chunk of data has one shape, one graph; the short last chunk of data
        # is computed eagerly, a recording of it costing more than its few particle chunks
        record = chunk.size == self.batch_size
        for plo in range(0, self.num_samples, self.particle_batch_size):
            phi = min(plo + self.particle_batch_size, self.num_samples)
            drawn = self.particle_batch_size if self._cut_last else phi - plo
            lw, el, checked = self._particles(chunk.args, drawn, chunk.size, chunk.validate, record)
            if log_w is None:
                log_w = lw.new_empty(chunk.size, self.num_samples)
                elbo = None if el is None else lw.new_empty(chunk.size, self.num_samples)
                # every particle chunk checks the same data: the first one's check, copied (a CUDA graph's
                # next replay overwrites its outputs)
                ok = None if checked is None else checked.clone()
            log_w[:, plo:phi] = lw[: phi - plo].T
            if el is not None:
                elbo[:, plo:phi] = el[: phi - plo].T
        if ok is not None and not bool(ok.all()):  # one look at the device per chunk of data
            raise support_error(*self._supports[int(ok.int().argmin())])
        return log_w, elbo

    def estimate(self, extra: Callable | None = None, keep: bool = False) -> tuple:
        """Sweep the data: the fields of :func:`~pyrovae.infer.diagnostics.reduce_log_weights`
        (``log_px``, ``log_px_se``, ``ess``, ``khat``), the ``(N, K)`` log-weights with ``keep``
        (else ``None``), then the ``(N, ...)`` rows of ``extra(log_w, elbo_terms)`` of each chunk,
        a tuple of tensors; the log-weights are reduced in blocks of :meth:`reduce_rows` rows."""

        def rows(chunk: Chunk) -> tuple:
            log_w, elbo = self(chunk)
            return (log_w, *(extra(log_w, elbo) if extra else ()))

        def reduce(rows: tuple) -> tuple:
            return (*reduce_log_weights(rows[0]), rows[0] if keep else None, *rows[1:])

        return self.sweep.map(rows, reduce=reduce, reduce_rows=self.reduce_rows())


def log_likelihood(
    model,
    guide,
    data,
    num_samples: int = 5000,
    *,
    data_plate: str | None = None,
    batch_size: int | None = None,
    particle_batch_size: int | None = None,
    max_memory: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    return_log_weights: bool = False,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    device: str | torch.device | None = None,
    compile: str = "auto",
    precision: str = "highest",
) -> LogLikelihood:
    r"""Estimate :math:`\log p(x_n)` of every data point by importance sampling from the guide.

    For each data point :math:`x_n`, ``num_samples`` = :math:`K` draws :math:`z_k \sim q(\cdot \mid x_n)` give
    log-weights :math:`\log w_k = \log p(x_n, z_k) - \log q(z_k \mid x_n)` and the IWAE-:math:`K` estimate
    :math:`\log \frac1K \sum_k w_k` (Burda et al. 2015), a lower bound in expectation that tightens as
    :math:`K` grows, with its delta-method standard error, Kong's effective sample size and the PSIS
    :math:`\hat k` diagnostic (Vehtari et al. 2024): above 0.7 the guide's tails are too light for the
    estimate to be trusted (Yao et al. 2018). The particles are traced by :class:`~pyrovae.infer.pair.Pair`
    (every sample site inside the data plate; site scales ignored, masks applied: nats per data point) and the
    data swept by :class:`~pyrovae.infer.Sweep`: chunks seeded by their first index on the model's device,
    sharded under ``torchrun`` and gathered in input order on every rank (the one-process result, :math:`W`
    times faster); the result comes back on the CPU. Memory is bounded by ``max_memory``, from which the chunk
    sizes are derived (see :class:`LogWeights`).

    :param callable model: model ``model(*data, *model_args, **model_kwargs)``.
    :param callable guide: guide with the same signature.
    :param data: a tensor of shape ``(N, ...)``; a tuple of tensors sharing the leading ``N`` (passed
        positionally, e.g. several observed sites, or data and a condition); or any data set, every column
        passed (see :class:`~pyrovae.data.DataSource`). Boolean and ``uint8`` tensors are cast to the default
        float dtype; the computation runs in the data's (and model's) dtype.
    :param int num_samples: :math:`K`, importance samples per data point.
    :param str data_plate: name of the data plate (default: found, see
        :func:`~pyrovae.infer.pair.find_data_plate`).
    :param int batch_size: data points per chunk.
    :param int particle_batch_size: particles per chunk (default: as few chunks as ``max_memory`` allows,
        all drawn at one size, so that the last may draw a few particles it does not keep, fewer than one a
        chunk).
    :param int max_memory: bytes one chunk may use when chunk sizes are derived (default 512 MiB
        on the CPU, a quarter of a GPU's memory).
    :param int seed: seed for the draws; the caller's random state is restored afterwards.
    :param bool progress: show a progress bar over data points.
    :param bool return_log_weights: keep the ``(N, K)`` log-weights in the result.
    :param tuple model_args: extra positional arguments after the data.
    :param dict model_kwargs: keyword arguments.
    :param device: where to compute (see :mod:`pyrovae.devices`); default: the model's device.
    :param str compile: how the chunks after the first are computed (:mod:`pyrovae.graphs`): ``"graph"``,
        their log-weights recorded as a graph of tensor operations and replayed (on CUDA as a CUDA graph), the
        same values as eagerly; ``"auto"``, that on CUDA, and on a CPU, where a chunk's arithmetic dwarfs its
        Python, only after :data:`CPU_EAGER_CHUNKS` chunks of a shape (so only for large data sets);
        ``"inductor"``, that graph compiled; ``"off"``, traced each time. A pair the graph cannot hold is
        evaluated eagerly, with a warning that says why.
    :param str precision: the arithmetic of the log-weights (:mod:`pyrovae.precision`): ``"highest"`` (the
        default), full float32; ``"tf32"``, the float32 matrix products and convolutions in TensorFloat-32
        on a GPU that has it; ``"bf16"``, those of the networks in bfloat16 and everything else, every
        log-density and sum included, in float32. Recorded in the result.
    :raises ConfigError: for a sample site outside the data plate, a site enumerated other than in
        parallel (see the module docstring), or a model latent missing from the guide.
    :rtype: LogLikelihood
    """
    start = time.perf_counter()
    distributed.init()
    with seeded(seed):
        placement = dict(
            device=device, model_kwargs=model_kwargs, data_plate=data_plate, model_args=model_args
        )
        sizes = dict(batch_size=batch_size, particle_batch_size=particle_batch_size, max_memory=max_memory)
        weights = LogWeights(
            model,
            guide,
            data,
            num_samples,
            seed=seed,
            progress=progress,
            compile=compile,
            precision=precision,
            **placement,
            **sizes,
        )
        rows = weights.estimate(keep=return_log_weights)
    return LogLikelihood.from_rows(rows, num_samples, time.perf_counter() - start, precision)
