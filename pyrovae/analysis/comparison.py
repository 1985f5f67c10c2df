r"""Compare estimators on one model: their bounds and the signal-to-noise ratio of their gradients.

For each estimator, :func:`compare` draws the gradient of its loss :math:`R` times on one fixed
minibatch at fixed parameters, and reports

- the bound, :math:`-\text{loss}/B` in nats per data point, averaged over the draws, with its
  standard error :math:`\mathrm{sd}/\sqrt R`;
- the gradient signal-to-noise ratio of every parameter element :math:`j`,
  :math:`\mathrm{SNR}_j = |\bar g_j| / \mathrm{sd}(g_j)` over the draws (Rainforth et al. 2018),
  summarized by its median over the guide's (encoder's) and over the model's (decoder's) elements;
- the gradient variance :math:`\mathrm{Var}(g_j)`, summarized by its mean over the elements of each
  group (the trace of the covariance over the number of elements); gradients are those of the loss
  per data point, :math:`-\text{bound}/B`;
- the median wall time of one gradient draw (loss and backward pass).

Rainforth et al. (2018) showed that the IWAE-:math:`k` guide gradient's SNR falls as
:math:`O(1/\sqrt k)` while the model's rises as :math:`O(\sqrt k)`; DReG (Tucker et al. 2018)
keeps the guide's SNR from falling. The guide's parameters are found generically: those that
receive a gradient from the guide's log-density alone; every other parameter is the model's.

References:

- T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood and Y. W. Teh (2018),
  "Tighter Variational Bounds are Not Necessarily Better", ICML.
- G. Tucker, D. Lawson, S. Gu and C. J. Maddison (2018), "Doubly Reparameterized Gradient
  Estimators for Monte Carlo Objectives", ICLR 2019.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from tqdm.auto import tqdm

from pyrovae import devices
from pyrovae.analysis.latent_space import rows
from pyrovae.errors import ConfigError
from pyrovae.estimators import estimator
from pyrovae.infer.pair import trace_pair
from pyrovae.results import Result, table
from pyrovae.seeds import seeded

__all__ = ["Comparison", "compare"]

#: the columns of :meth:`Comparison.to_dataframe`, after the index ``estimator``
COLUMNS = (
    "bound",
    "bound_se",
    "guide_snr",
    "model_snr",
    "guide_grad_var",
    "model_grad_var",
    "seconds_per_step",
)
DEFAULT_ESTIMATORS = ("elbo", "iwae:k=5", "iwae:k=50", "dreg:k=5", "dreg:k=50", "stl")


@dataclass(repr=False)
class Comparison(Result):
    """What :func:`compare` returns: one row per estimator (see :data:`COLUMNS`).

    :ivar pandas.DataFrame table: the figures, indexed by estimator.
    :ivar int num_repeats: gradient draws per estimator.
    :ivar int batch_size: data points in the fixed minibatch.
    :ivar int num_guide_params: parameter elements of the guide.
    :ivar int num_model_params: parameter elements of the model.
    """

    table: pd.DataFrame = table("estimator")
    num_repeats: int
    batch_size: int
    num_guide_params: int
    num_model_params: int

    @property
    def num_data(self) -> int:
        """Data points in the minibatch (``batch_size``)."""
        return self.batch_size

    @property
    def mean(self) -> pd.Series:
        """The bound of each estimator, nats per data point, mean over the draws."""
        return self.table["bound"]

    @property
    def stderr(self) -> pd.Series:
        """The standard error of :attr:`mean` over the draws."""
        return self.table["bound_se"]

    def summary_table(self) -> pd.DataFrame:
        """The figures, one row per estimator."""
        return self.table

    def summary(self) -> str:
        formats = {"bound": "{:.3f}".format, "bound_se": "{:.3f}".format, "seconds_per_step": "{:.4f}".format}
        formatters = {c: formats.get(c, "{:.3g}".format) for c in self.table.columns}
        lines = [
            f"estimators compared on one batch of {self.batch_size} data points, {self.num_repeats} "
            f"gradient draws each; {self.num_guide_params:,} guide and {self.num_model_params:,} "
            "model parameter elements",
            "  bound: nats per data point, mean over the draws (bound_se: its standard error)",
            "  snr: |mean| / sd of each gradient element over the draws, median over the elements",
            "  grad_var: variance of each element of the per-data-point gradient, mean over the elements",
            "  seconds_per_step: median time of one loss and gradient",
            self.table.to_string(formatters=formatters),
        ]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike | None = None):
        """Bar charts of the guide's and model's gradient SNR and variance by estimator
        (:func:`pyrovae.plots.results.gradients`); saved when ``path`` is given. Returns the figure.

        :param path: where to save the figure, in the format its suffix names (PNG without one; see
            :func:`pyrovae.plots.save`); ``None`` only returns it.
        """
        from pyrovae.plots.results import gradients

        return gradients(self, path)


def compare(
    model,
    guide,
    data: torch.Tensor | Sequence[torch.Tensor],
    estimators: Sequence[str | ELBO] | Mapping[str, str | ELBO] = DEFAULT_ESTIMATORS,
    *,
    num_repeats: int = 100,
    params: Iterable[torch.Tensor] | None = None,
    seed: int | None = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Comparison:
    """Compare ``estimators`` on ``model``/``guide`` by repeated gradient draws on the minibatch ``data``.

    :param model: the model, called as ``model(*data)``; any pair whose per-datapoint sites lie in
        ``pyro.plate("data", B)`` serves.
    :param guide: the guide, called likewise.
    :param data: the fixed minibatch: a tensor of shape ``(B, ...)``, a tuple of tensors passed
        positionally, or a data set (all of it, every column; see :class:`~pyrovae.data.DataSource`).
    :param estimators: estimator specs such as ``"iwae:k=5"`` (see :func:`pyrovae.estimator`) or
        :class:`~pyro.infer.ELBO` instances, labelled by the spec or the class name; or a mapping
        label -> spec or instance.
    :param int num_repeats: gradient draws per estimator (at least 2).
    :param params: the parameters to differentiate; by default every leaf tensor that requires
        grad and that ``-log w`` (the single-sample ELBO) depends on.
    :param int seed: seed of each estimator's draws (the same for all); the caller's random state is
        restored afterwards.
    :param bool progress: show a progress bar.
    :param device: where to compute (see :mod:`pyrovae.devices`); default: the model's device.
    :rtype: Comparison
    """
    if isinstance(num_repeats, bool) or not isinstance(num_repeats, int) or num_repeats < 2:
        raise ConfigError(f"num_repeats must be an integer of at least 2; got {num_repeats!r}")
    args = devices.move(rows(data), devices.place(model, guide, device=device))
    batch_size = len(args[0])
    if isinstance(estimators, Mapping):
        labelled = {label: estimator(e) for label, e in estimators.items()}
    else:
        labelled = {e if isinstance(e, str) else type(e).__name__: estimator(e) for e in estimators}
    if len(labelled) != len(estimators) or not labelled:
        raise ConfigError(
            "give at least one estimator, each with its own label (pass a mapping label -> estimator)"
        )
    with seeded(seed):
        params = _params(model, guide, args) if params is None else [p for p in params if p.requires_grad]
        if not params:
            raise ConfigError(
                "the model and guide have no parameters that require grad: there is no gradient to compare"
            )
        # the guide's parameters: those that receive a gradient from its log-density alone
        log_q = poutine.trace(guide).get_trace(*args).log_prob_sum()
        is_guide = [g is not None for g in torch.autograd.grad(log_q, params, allow_unused=True)]
    guide_mask = torch.cat(
        [torch.full((p.numel(),), g, device=p.device) for p, g in zip(params, is_guide, strict=True)]
    )
    figures = {}
    with tqdm(total=len(labelled) * num_repeats, desc="compare", unit="draw", disable=not progress) as bar:
        for label, elbo in labelled.items():
            bar.set_postfix_str(label)
            with seeded(seed):
                figures[label] = _draws(elbo, model, guide, args, params, guide_mask, num_repeats, bar)
    table = pd.DataFrame.from_dict(figures, orient="index", columns=list(COLUMNS)).rename_axis("estimator")
    return Comparison(table, num_repeats, batch_size, int(guide_mask.sum()), int((~guide_mask).sum()))


def _draws(elbo, model, guide, args, params, guide_mask, num_repeats, bar) -> dict[str, float]:
    """``num_repeats`` gradient draws of ``elbo``, summarized; one draw first, as the user's Pyro
    validation has it, warms up (and checks the pair) and is not counted."""
    batch_size = len(args[0])

    def draw():
        loss = elbo.differentiable_loss(model, guide, *args)
        grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        return loss.item() / batch_size, torch.cat([g.reshape(-1) for g in grads]).double() / batch_size

    draw()
    values, seconds = [], []
    mean = m2 = None
    with pyro.validation_enabled(False):
        for r in range(1, num_repeats + 1):
            start = time.perf_counter()
            value, grad = draw()
            seconds.append(time.perf_counter() - start)
            values.append(-value)
            # Welford's running mean and sum of squared deviations
            if mean is None:
                mean, m2 = grad, torch.zeros_like(grad)
            else:
                delta = grad - mean
                mean = mean + delta / r
                m2 = m2 + delta * (grad - mean)
            bar.update()
    var = m2 / (num_repeats - 1)
    sd = var.sqrt()
    snr = torch.where(sd > 0, mean.abs() / sd, math.nan)
    values_t = torch.tensor(values, dtype=torch.float64)
    return {
        "bound": float(values_t.mean()),
        "bound_se": float(values_t.std() / math.sqrt(num_repeats)),
        "guide_snr": float(snr[guide_mask].nanmedian()),
        "model_snr": float(snr[~guide_mask].nanmedian()),
        "guide_grad_var": float(var[guide_mask].mean()),
        "model_grad_var": float(var[~guide_mask].mean()),
        "seconds_per_step": float(torch.tensor(seconds).median()),
    }


def _params(model, guide, args) -> list[torch.Tensor]:
    """The leaf tensors requiring grad that :math:`\\log p(x, z) - \\log q(z \\mid x)` depends on, by a
    walk of its autograd graph: parameters of torch modules and of Pyro's param store alike."""
    model_trace, guide_trace = trace_pair(model, guide, args, {})
    log_w = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    found, seen, stack = [], set(), [getattr(log_w, "grad_fn", None)]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # AccumulateGrad: the node of a leaf tensor
            found.append(node.variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found
