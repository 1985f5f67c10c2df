r"""Diagnostics of a block of importance log-weights, one row per data point.

References:

- A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry (2024), "Pareto Smoothed Importance
  Sampling", JMLR 25(72).
- A. Kong (1992), "A Note on Importance Sampling using Standardized Weights", Tech. Rep. 348,
  University of Chicago; A. B. Owen (2013), "Monte Carlo theory, methods and examples", ch. 9.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile

import numpy as np
import torch

from pyrovae.errors import DataError

__all__ = ["KHAT_BAD", "KHAT_GOOD", "UNRELIABLE_SHARE", "reduce_log_weights", "verdict"]

#: PSIS :math:`\hat k` below which importance sampling is reliable (Vehtari et al.)
KHAT_GOOD = 0.5
#: PSIS :math:`\hat k` above which it is unreliable (between the two: usable)
KHAT_BAD = 0.7
#: share of the data points with :math:`\hat k` above :data:`KHAT_BAD` beyond which a mean of their estimates
#: is itself unreliable (below it, the few points are named as unreliable)
UNRELIABLE_SHARE = 0.1
# log-weights within this many ulps of each other count as equal
_FLAT_ULPS = 64


def reduce_log_weights(log_weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
    r"""Reduce a ``(B, K)`` block of log-weights, one row per data point, to per-row figures.

    With normalized weights :math:`\bar w_k = w_k / \sum_j w_j` it returns, in float64:

    - ``log_px``: :math:`\log \frac1K \sum_k w_k`, computed with ``logsumexp``;
    - ``log_px_se``: the delta-method standard error of ``log_px``, :math:`\sqrt{\widehat{\mathrm{Var}}(w) /
      K} \,/\, \bar{w} = \sqrt{(K \sum_k \bar w_k^2 - 1) / (K - 1)}` (NaN for :math:`K = 1`);
    - ``ess``: Kong's effective sample size :math:`1 / \sum_k \bar w_k^2` (Kong 1992; Owen 2013);
    - ``khat``: the Pareto-smoothed importance sampling shape estimate :math:`\hat k`
      (Vehtari et al. 2024), from :func:`arviz.psislw` with ``reff=1`` (``inf`` when the tail
      holds too few draws to fit, ``-inf`` when all weights are equal to within rounding, as
      with the exact posterior as guide, NaN for a row with a NaN or no finite weight).

    Each row is reduced on its own, so any split of the rows into blocks gives identical results.
    """
    arviz = _arviz()
    if log_weights.dim() != 2:
        raise DataError(f"log-weights must have shape (N, K), got {tuple(log_weights.shape)}")
    lw = log_weights.detach().to(device="cpu", dtype=torch.float64)
    num_samples = lw.shape[-1]
    lse = torch.logsumexp(lw, -1)
    log_px = lse - math.log(num_samples)
    sum_sq = torch.logsumexp(2 * (lw - lse.unsqueeze(-1)), -1).exp()
    ess = sum_sq.reciprocal()
    if num_samples > 1:
        log_px_se = ((num_samples * sum_sq - 1) / (num_samples - 1)).clamp(min=0).sqrt()
    else:
        log_px_se = torch.full_like(log_px, math.nan)
    khat = torch.full_like(log_px, math.nan)
    ok = torch.isfinite(lse) & ~torch.isnan(lw).any(-1)
    # weights equal to within rounding (an exact posterior as guide) have no tail to fit
    spread = lw.amax(-1) - lw.amin(-1)
    flat = ok & (spread <= _FLAT_ULPS * torch.finfo(log_weights.dtype).eps * lw.abs().amax(-1).clamp(min=1))
    khat[flat] = -math.inf
    ok &= ~flat
    if ok.any():
        _, k = arviz.psislw(lw[ok].numpy(), reff=1.0)
        khat[ok] = torch.as_tensor(np.asarray(k, dtype=np.float64))
    return log_px, log_px_se, ess, khat


def _arviz():
    """ArviZ, imported on first use. Importing it writes a stamp under the user's cache directory
    (and matplotlib's config under their home); where home cannot be written, both go to a temporary
    directory for the import, and the environment is restored afterwards."""
    if "arviz" not in sys.modules:
        try:
            import arviz  # noqa: F401
        except OSError:
            with (
                tempfile.TemporaryDirectory() as cache,
                _environment(XDG_CACHE_HOME=cache, MPLCONFIGDIR=cache),
            ):
                import arviz  # noqa: F401
    return sys.modules["arviz"]


@contextlib.contextmanager
def _environment(**values: str):
    """Environment variables set to ``values`` inside the block, as they were after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def verdict(
    label: str, mean: float, stderr: float, khat: torch.Tensor, ess: torch.Tensor, num_samples: int
) -> str:
    r"""Whether to trust a mean of importance-sampled :math:`\log p(x)` estimates, in one line (two when not):
    the mean as a negative log-likelihood with its standard error, the share of the data points whose
    :math:`\hat k` exceeds :data:`KHAT_BAD`, the median effective sample size, and what follows.

    With :math:`\hat k > 0.7` the importance weights' tail is too heavy for the estimate to converge at the
    rate the standard error assumes (Vehtari et al. 2024): the estimate, a stochastic lower bound on
    :math:`\log p(x)`, is then likely further below it than its standard error shows. Beyond
    :data:`UNRELIABLE_SHARE` of the points, the mean is such a bound too, and the remedy is more samples or
    annealed importance sampling.

    :param str label: the estimator, e.g. ``"IS-1000"``.
    :param float mean: the mean of the estimates of :math:`\log p(x)`, in nats.
    :param float stderr: its standard error across the data points.
    :param torch.Tensor khat: ``(N,)`` PSIS :math:`\hat k` of each data point.
    :param torch.Tensor ess: ``(N,)`` effective sample sizes.
    :param int num_samples: the importance samples per data point.
    :rtype: str
    """
    n, undefined = len(khat), int(torch.isnan(khat).sum())
    bad = int((khat > KHAT_BAD).sum()) + undefined  # a point without a k-hat is not known to be reliable
    finite = ess[torch.isfinite(ess)]
    ess_text = (
        f"median ESS {float(finite.median()):.1f} of {num_samples:,}" if finite.numel() else "no finite ESS"
    )
    head = f"{label} NLL {-mean:.2f} ± {stderr:.2f}"
    if bad == 0:
        return f"{head}; k-hat <= 0.7 for all {n:,} points, {ess_text}: reliable"
    what = "k-hat > 0.7" + (" or undefined (no finite log-weight)" if undefined else "")
    if bad <= UNRELIABLE_SHARE * n:
        return (
            f"{head}; {what} for {bad:,}/{n:,} points, {ess_text}: their estimates are unreliable "
            "(see khat per point)"
        )
    return (
        f"{head}; {what} for {bad:,}/{n:,} points, {ess_text}:\n  a lower bound on log p(x), looser "
        "than its ± says: try more samples, or AIS (pyrovae evaluate --ais-steps 1000)"
    )
