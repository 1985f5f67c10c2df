r"""Per-datapoint importance-sampled estimates of :math:`\log p(x)` for any model/guide pair.

For a model :math:`p(x, z)` and a guide (proposal) :math:`q(z \mid x)`, each data point
:math:`x_n` gets :math:`K` importance log-weights

.. math:: \log w_k(x_n) = \log p(x_n, z_k) - \log q(z_k \mid x_n),
          \qquad z_k \sim q(\cdot \mid x_n),

and the estimate

.. math:: \widehat{\log p}(x_n) = \log \frac{1}{K} \sum_{k=1}^K w_k(x_n),

the IWAE-:math:`K` bound of Burda, Grosse & Salakhutdinov (2015). It is a stochastic lower
bound (Jensen) whose bias vanishes as :math:`K \to \infty`. Unlike Pyro's
:class:`~pyro.infer.RenyiELBO` and :func:`~pyro.infer.importance.vectorized_importance_weights`,
which sum the log-weights over every plate, the data-plate dimension is kept: one weight per
particle *and per data point*.

**Enumerated discrete latents.** A discrete latent :math:`y` that the guide marks
``infer={"enumerate": "parallel"}`` (the label of :class:`~pyrovae.SSVAE`) is summed out: for
each particle :math:`k`, every value :math:`y` gets its own draw :math:`z_k^{(y)} \sim q(z \mid
x, y)`, all values in parallel (Pyro's :func:`~pyro.poutine.enum`, at dims left of the particle
plate), and the weight is

.. math:: w_k = \sum_y q(y \mid x)\, \frac{p(x, y, z_k^{(y)})}{q(y \mid x)\, q(z_k^{(y)} \mid x, y)}
          = \sum_y \frac{p(x, y, z_k^{(y)})}{q(z_k^{(y)} \mid x, y)},

whose expectation is :math:`\sum_y p(x, y) = p(x)`, whatever :math:`q(y \mid x)`: the guide's
probabilities of :math:`y` cancel, and enumeration removes the variance they would add. A site
the *model* alone enumerates is summed out the same way, :math:`p(x, z_k) = \sum_y p(x, y, z_k)`.
The log-weights keep their shape (one per particle and data point), so every reduction,
diagnostic and bound below applies unchanged. Sequential enumeration is not supported.

References:

- Y. Burda, R. Grosse and R. Salakhutdinov (2015), "Importance Weighted Autoencoders", ICLR 2016.
- A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry (2024), "Pareto Smoothed Importance
  Sampling", JMLR 25(72).
- Y. Yao, A. Vehtari, D. Simpson and A. Gelman (2018), "Yes, but Did It Work?: Evaluating
  Variational Inference", ICML.
- A. Kong (1992), "A Note on Importance Sampling using Standardized Weights", Tech. Rep. 348,
  University of Chicago; A. B. Owen (2013), "Monte Carlo theory, methods and examples", ch. 9.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import site_is_subsample
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence
from tqdm.auto import tqdm

from . import distributed, kernels
from .allocator import retain_freed_memory
from .errors import ConfigError, DataError
from .handlers import DATA_PLATE
from .io import atomic_path
from .likelihoods import Decoded

__all__ = ["LogLikelihood", "log_likelihood", "reduce_log_weights"]

#: name of the outer plate that vectorizes the importance samples
PARTICLE_PLATE = "_particles"
#: default bound on the memory one chunk may use, in bytes
DEFAULT_MAX_MEMORY = 512 * 2**20
# Rows (particles x data points) per chunk when memory allows more: large enough for efficient
# matrix products, small enough that a chunk's activations stay in the last-level cache.
_TARGET_ROWS = 8192
# The same where the likelihood is decoded block by block (Decoded): its activations are
# bounded by the block size, and larger chunks spread the cost of tracing over more rows.
_TARGET_ROWS_DECODED = 4 * _TARGET_ROWS
# multiplies the visible per-row tensor sizes to account for activations inside the networks
_MEMORY_SAFETY = 4.0
_PROBE_PARTICLES = 4
# rows per block of the elementwise passes of the Bernoulli log-density (a cache-sized buffer)
_BLOCK_ROWS = 1024
# the most data points whose dot products with the likelihood's parameters _dot_last takes as
# separate matrix-vector products (beyond, one batched product)
_FEW_ROWS = 16
# PSIS fits cost about 0.5 ms a row plus a fixed cost a call: reduce at least this many rows at once
_REDUCE_ROWS = 64
# k-hat bins of Vehtari et al.: good below 0.5, usable below 0.7, unreliable above
KHAT_GOOD = 0.5
KHAT_BAD = 0.7
# log-weights within this many ulps of each other count as equal
_FLAT_ULPS = 64


# ---------------------------------------------------------------------------------------------
# reduction of a block of log-weights


def reduce_log_weights(log_weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
    r"""Reduce a ``(B, K)`` block of log-weights, one row per data point, to per-row figures.

    With normalized weights :math:`\bar w_k = w_k / \sum_j w_j` it returns, in float64:

    - ``log_px``: :math:`\log \frac1K \sum_k w_k`, computed with ``logsumexp``;
    - ``log_px_se``: the delta-method standard error of ``log_px``,
      :math:`\sqrt{\widehat{\mathrm{Var}}(w) / K} \,/\, \bar{w}
      = \sqrt{(K \sum_k \bar w_k^2 - 1) / (K - 1)}` (NaN for :math:`K = 1`);
    - ``ess``: Kong's effective sample size :math:`1 / \sum_k \bar w_k^2` (Kong 1992; Owen 2013);
    - ``khat``: the Pareto-smoothed importance sampling shape estimate :math:`\hat k`
      (Vehtari et al. 2024), from :func:`arviz.psislw` with ``reff=1`` (``inf`` when the tail
      holds too few draws to fit, ``-inf`` when all weights are equal to within rounding, as
      with the exact posterior as guide, NaN for a row with a NaN or no finite weight).

    Each row is reduced on its own, so any split of the rows into blocks gives identical results.
    """
    import arviz

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


# ---------------------------------------------------------------------------------------------
# result


def mean_stderr(values: torch.Tensor) -> float:
    r"""Standard error of the mean of ``values`` across data points, :math:`\mathrm{sd}/\sqrt N`
    (NaN for fewer than two)."""
    n = values.shape[0]
    return float(values.std() / math.sqrt(n)) if n > 1 else math.nan


class PerDatapoint:
    r"""What results holding one estimate of :math:`\log p(x)` per data point share: ``log_px`` and
    the per-datapoint columns named in ``_FIELDS``, a :meth:`summary` the subclass writes, and
    ``to_xarray``/``to_json_dict`` it defines."""

    _FIELDS: tuple[str, ...] = ("log_px",)
    log_px: torch.Tensor

    @property
    def num_data(self) -> int:
        """Number of data points :math:`N`."""
        return self.log_px.shape[0]

    @property
    def mean(self) -> float:
        """Mean of ``log_px`` over the data points, in nats."""
        return float(self.log_px.mean())

    @property
    def stderr(self) -> float:
        r"""Standard error of :attr:`mean` across data points (:func:`mean_stderr`)."""
        return mean_stderr(self.log_px)

    def summary(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.summary()

    def __str__(self) -> str:
        return self.summary()

    def to_dataframe(self):
        """A :class:`pandas.DataFrame`, one row per data point, one column per field of ``_FIELDS``."""
        import pandas as pd

        columns = {name: getattr(self, name).cpu().numpy() for name in self._FIELDS}
        return pd.DataFrame(columns, index=pd.RangeIndex(self.num_data, name="datapoint"))

    def to_netcdf(self, path: str | os.PathLike) -> None:
        """Write ``to_xarray()`` to a netCDF-4 file (h5netcdf engine), atomically."""
        ds = self.to_xarray()
        with atomic_path(path) as tmp:
            ds.to_netcdf(tmp, engine="h5netcdf")


@dataclass(repr=False)
class LogLikelihood(PerDatapoint):
    r"""Per-datapoint importance-sampled estimates of :math:`\log p(x)`, from :func:`log_likelihood`.

    :ivar torch.Tensor log_px: ``(N,)`` IWAE-:math:`K` estimates :math:`\log\frac1K\sum_k w_k`.
    :ivar torch.Tensor log_px_se: ``(N,)`` delta-method standard errors of ``log_px``.
    :ivar torch.Tensor ess: ``(N,)`` effective sample sizes :math:`1/\sum_k \bar w_k^2`.
    :ivar torch.Tensor khat: ``(N,)`` PSIS :math:`\hat k`; above 0.7 the estimate is unreliable.
    :ivar int num_samples: :math:`K`, the number of importance samples per data point.
    :ivar torch.Tensor log_weights: ``(N, K)`` log-weights, or ``None`` unless requested.
    :ivar float elapsed: wall time of the computation in seconds.
    """

    log_px: torch.Tensor
    log_px_se: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    num_samples: int
    log_weights: torch.Tensor | None = None
    elapsed: float = 0.0

    _FIELDS = ("log_px", "log_px_se", "ess", "khat")

    @classmethod
    def from_log_weights(
        cls, log_weights: torch.Tensor, chunk: int | None = None, elapsed: float = 0.0
    ) -> LogLikelihood:
        """Reduce an ``(N, K)`` matrix of log-weights with :func:`reduce_log_weights`, ``chunk``
        rows at a time (all at once if ``None``). The result keeps ``log_weights``."""
        if log_weights.dim() != 2:
            raise DataError(f"log-weights must have shape (N, K), got {tuple(log_weights.shape)}")
        n = log_weights.shape[0]
        step = n if chunk is None else int(chunk)
        if step < 1:
            raise ConfigError(f"chunk must be a positive number of rows, got {chunk}")
        parts = [reduce_log_weights(log_weights[lo : lo + step]) for lo in range(0, n, step)]
        fields = [torch.cat(p) for p in zip(*parts, strict=True)]
        return cls(*fields, num_samples=log_weights.shape[1], log_weights=log_weights, elapsed=elapsed)

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

    def summary(self) -> str:
        """A readable multi-line summary, with a warning listing unreliable data points."""
        good, ok, bad = self.khat_counts()
        ess = self.ess[torch.isfinite(self.ess)]
        lines = [
            f"log p(x) by importance sampling: N = {self.num_data} data points, "
            f"K = {self.num_samples} samples each",
            f"  mean log p(x) = {self.mean:.3f} ± {self.stderr:.3f} nats   (NLL {self.nll:.3f})",
        ]
        if ess.numel():
            lines.append(
                f"  ESS: median {float(ess.median()):.1f}, min {float(ess.min()):.1f} (of {self.num_samples})"
            )
        lines.append(f"  PSIS k-hat: {good} < 0.5, {ok} in 0.5-0.7, {bad} > 0.7")
        missing = int(torch.isnan(self.khat).sum())
        if missing:
            lines.append(f"  k-hat undefined for {missing} data points (NaN or no finite log-weight)")
        if bad:
            idx = torch.nonzero(self.khat > KHAT_BAD).flatten().tolist()
            shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
            lines.append(
                f"  WARNING: {bad} data point(s) have k-hat > 0.7; their estimates are unreliable "
                f"(the guide's tails are too light): {shown}"
            )
        lines.append(f"  elapsed {self.elapsed:.1f} s")
        return "\n".join(lines)

    def to_xarray(self):
        """An :class:`xarray.Dataset` with dimension ``"datapoint"`` (and ``"sample"`` for the
        log-weights when kept); summary figures in its ``attrs``."""
        import xarray as xr

        data_vars = {name: ("datapoint", getattr(self, name).cpu().numpy()) for name in self._FIELDS}
        if self.log_weights is not None:
            data_vars["log_weights"] = (("datapoint", "sample"), self.log_weights.cpu().numpy())
        attrs = {k: v for k, v in self.to_json_dict().items() if not isinstance(v, bool)}
        return xr.Dataset(data_vars, coords={"datapoint": np.arange(self.num_data)}, attrs=attrs)

    @classmethod
    def from_xarray(cls, ds) -> LogLikelihood:
        """Inverse of :meth:`to_xarray`."""
        fields = {name: torch.as_tensor(ds[name].values) for name in cls._FIELDS}
        log_weights = torch.as_tensor(ds["log_weights"].values) if "log_weights" in ds else None
        return cls(
            **fields,
            num_samples=int(ds.attrs["num_samples"]),
            log_weights=log_weights,
            elapsed=float(ds.attrs["elapsed"]),
        )

    @classmethod
    def from_netcdf(cls, path: str | os.PathLike) -> LogLikelihood:
        """Read a file written by :meth:`to_netcdf`."""
        import xarray as xr

        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return cls.from_xarray(ds.load())

    def to_json_dict(self) -> dict:
        """Summary figures as plain Python numbers."""
        good, ok, bad = self.khat_counts()
        ess = self.ess[torch.isfinite(self.ess)]
        return {
            "num_data": self.num_data,
            "num_samples": int(self.num_samples),
            "mean_log_px": self.mean,
            "stderr": self.stderr,
            "nll": self.nll,
            "ess_median": float(ess.median()) if ess.numel() else math.nan,
            "ess_min": float(ess.min()) if ess.numel() else math.nan,
            "khat_below_0_5": good,
            "khat_0_5_to_0_7": ok,
            "khat_above_0_7": bad,
            "elapsed": float(self.elapsed),
        }


# ---------------------------------------------------------------------------------------------
# data access


def _as_model_input(t: torch.Tensor) -> torch.Tensor:
    # boolean and byte images become floats; labels (int64) and floats pass unchanged
    if t.dtype in (torch.bool, torch.uint8):
        return t.to(torch.get_default_dtype())
    return t


class _Data:
    """Chunked access to the ``data`` argument of :func:`log_likelihood`."""

    def __init__(self, data):
        self._tensors: tuple[torch.Tensor, ...] | None = None
        self._dataset = None
        if isinstance(data, torch.Tensor):
            self._tensors = (data,)
        elif isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
            self._tensors = tuple(data)
        elif hasattr(data, "__len__") and (hasattr(data, "batch") or hasattr(data, "__getitem__")):
            self._dataset = data
        else:
            raise DataError(
                f"data must be a tensor of shape (N, ...), a tuple of such tensors, or a Dataset; "
                f"got {type(data).__name__}"
            )
        if self._tensors is not None:
            sizes = {t.shape[0] if t.dim() else None for t in self._tensors}
            if len(sizes) != 1 or None in sizes:
                shapes = ", ".join(str(tuple(t.shape)) for t in self._tensors)
                raise DataError(
                    f"the data tensors must share their leading (data point) dimension, got shapes {shapes}"
                )
            self.num_data = sizes.pop()
        else:
            self.num_data = len(self._dataset)
        if self.num_data == 0:
            raise DataError("data holds no data points; pass at least one")

    def get(self, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
        if self._tensors is not None:
            parts = tuple(t[lo:hi] for t in self._tensors)
        elif hasattr(self._dataset, "batch"):
            out = self._dataset.batch(torch.arange(lo, hi))
            parts = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        else:
            items = [self._dataset[i] for i in range(lo, hi)]
            if isinstance(items[0], (tuple, list)):
                columns = zip(*items, strict=True)
                parts = tuple(torch.stack([torch.as_tensor(v) for v in column]) for column in columns)
            else:
                parts = (torch.stack([torch.as_tensor(it) for it in items]),)
        return tuple(_as_model_input(p) for p in parts)


# ---------------------------------------------------------------------------------------------
# traces and per-site log-densities


def _scored_sites(trace) -> Iterator[tuple[str, dict]]:
    # the sample sites whose densities enter the weight, as in Pyro's ELBOs
    for name, site in trace.nodes.items():
        if (
            site["type"] == "sample"
            and not site_is_subsample(site)
            and not site["infer"].get("_do_not_score", False)
            and not site["infer"].get("_deterministic", False)
        ):
            yield name, site


def plate_nesting(*traces) -> int:
    """The number of vectorized plate dims the sites of ``traces`` use (Pyro's ``max_plate_nesting``)."""
    dims = [
        frame.dim
        for trace in traces
        for _, site in _scored_sites(trace)
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims, default=0)


def _data_frame(site: dict, data_plate: str):
    return next((f for f in site["cond_indep_stack"] if f.name == data_plate), None)


def _trace_pair(model, guide, args, kwargs, num_particles: int | None = None, particle_dim: int = -1):
    """Trace the guide, then the model replayed against it, optionally inside the particle plate;
    with the particle plate, sites marked for parallel enumeration are enumerated at the dims left
    of it (as :class:`~pyro.infer.TraceEnum_ELBO` does left of the plates)."""
    plate = contextlib.nullcontext()
    if num_particles is not None:
        plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim)
        guide = poutine.enum(guide, first_available_dim=particle_dim - 1)
        model = poutine.enum(model, first_available_dim=particle_dim - 1)
    with plate:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def _dot_last(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """``(x * y).sum(-1)`` for ``y`` broadcast along leading dims of ``x``, without the product.

    Written as an einsum, the contraction runs as a batched matrix-vector product that reads
    ``x`` once. Returns ``None`` when ``y`` is larger than ``x`` in some dimension.
    """
    n = x.dim()
    if y.dim() > n:
        return None
    d = x.shape[-1]
    if x.is_contiguous() and y.numel() == d:  # one row for all: a matrix-vector product
        return (x.view(-1, d) @ y.reshape(-1)).view(x.shape[:-1])
    if (
        x.is_contiguous()
        and n >= 2
        and y.dim() >= 2
        and y.shape[-2] == x.shape[-2] == y.numel() // d <= _FEW_ROWS
    ):
        # a few rows (data points) along x's last batch dim: one matrix-vector product each, on
        # strided views of x, which together read x once
        b = x.shape[-2]
        rows, y = x.view(-1, b, d), y.reshape(b, d)
        return torch.stack([torch.mv(rows[:, i], y[i]) for i in range(b)], -1).view(x.shape[:-1])
    y = y.reshape((1,) * (n - y.dim()) + y.shape)
    letters = string.ascii_letters[:n]
    keep = []
    for i, (sx, sy) in enumerate(zip(x.shape, y.shape, strict=True)):
        if sy != 1 and sx != sy:
            return None
        if sy != 1 or sx == 1:
            keep.append(i)
    y = y.squeeze([i for i in range(n) if i not in keep]) if len(keep) < n else y
    y_subscript = "".join(letters[i] for i in keep)
    return torch.einsum(f"{letters},{y_subscript}->{letters[:-1]}", x, y)


_INDEPENDENT = (Independent, pyro.distributions.Independent)
_BERNOULLI = (Bernoulli, pyro.distributions.Bernoulli)
_NORMAL = (Normal, pyro.distributions.Normal)


class Workspace:
    """A buffer reused by the elementwise passes of :func:`_log1p_exp_sum` from one call to the
    next (the blocks of a :class:`~pyrovae.likelihoods.Decoded` likelihood): a warm buffer, where
    a fresh one per block would be written from cold memory."""

    def __init__(self):
        self._buffer: torch.Tensor | None = None

    def get(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """A ``(rows, cols)`` tensor of ``like``'s dtype and device, of unspecified content."""
        b = self._buffer
        if b is None or b.numel() < rows * cols or b.dtype != like.dtype or b.device != like.device:
            b = self._buffer = like.new_empty(rows * cols)
        return b[: rows * cols].view(rows, cols)


def _fused_log_prob(fn, value: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor | None:
    """Event-summed ``fn.log_prob(value)`` by a faster route for the common likelihoods and
    latents of VAEs, ``Bernoulli(logits=...).to_event(n)`` and ``Normal(...).to_event(n)``,
    else ``None``. Both routes give the same values as ``log_prob`` to rounding."""
    if type(fn) not in _INDEPENDENT or fn.reinterpreted_batch_ndims < 1:
        return None
    base, n = fn.base_dist, fn.reinterpreted_batch_ndims
    if type(base) in _BERNOULLI and "logits" in base.__dict__:  # logits are lazy when given probs
        return _bernoulli_log_prob(base.logits, value, n, workspace)
    if type(base) in _NORMAL:
        return _normal_log_prob(base.loc, base.scale, value, n)
    return None


def _bernoulli_log_prob(
    logits: torch.Tensor, value: torch.Tensor, n: int, workspace: Workspace | None = None
) -> torch.Tensor | None:
    r""":math:`\sum_d x_d \ell_d - \log(1 + e^{\ell_d})` over the last ``n`` dims.

    One pass of :func:`pyrovae.kernels.bernoulli_log_prob` where it applies; else the first term
    is a contraction that never forms the product, and the second :func:`_log1p_exp_sum`.
    Either replaces the several elementwise passes of
    :func:`~torch.nn.functional.binary_cross_entropy_with_logits` and its event sum.
    """
    if logits.dim() < n or value.dim() < n:
        return None
    logits, value = logits.flatten(-n), value.flatten(-n)
    fused = kernels.bernoulli_log_prob(logits, value)
    if fused is not None:
        return fused
    dot = _dot_last(logits, value.to(logits.dtype))
    if dot is None:
        return None
    return dot - _log1p_exp_sum(logits, workspace)


def _log1p_exp_sum(logits: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
    r""":math:`\sum_d \log(1 + e^{\ell_d})` over the last dim.

    By :func:`pyrovae.kernels.log1p_exp_sum` where it applies; else as ``exp``, ``add_``,
    ``log_``, ``sum`` on blocks of rows in one small reused
    buffer (``workspace``'s, if given) that stays in cache: on CPU about twice as fast as
    :func:`~torch.nn.functional.softplus` (whose ``log1p`` is slow) on a large chunk. Rows where
    :math:`e^{\ell}` overflows are redone with ``softplus``; where :math:`e^{\ell}` is below the
    dtype's resolution the term is dropped, an error under one ulp of 1 per element.
    """
    fused = kernels.log1p_exp_sum(logits)
    if fused is not None:
        return fused
    flat = logits.reshape(-1, logits.shape[-1])
    out = flat.new_empty(flat.shape[0])
    rows = min(_BLOCK_ROWS, flat.shape[0])
    buf = (workspace or Workspace()).get(rows, flat.shape[1], flat)
    for lo in range(0, flat.shape[0], _BLOCK_ROWS):
        block = buf[: min(_BLOCK_ROWS, flat.shape[0] - lo)]
        torch.exp(flat[lo : lo + _BLOCK_ROWS], out=block).add_(1).log_()
        torch.sum(block, -1, out=out[lo : lo + _BLOCK_ROWS])
    overflow = torch.isinf(out)
    if overflow.any():
        out[overflow] = F.softplus(flat[overflow]).sum(-1)
    return out.view(logits.shape[:-1])


def _compact(t: torch.Tensor) -> torch.Tensor:
    """The distinct entries of an expanded tensor: size 1 along its stride-0 dims."""
    size = [1 if stride == 0 else size for size, stride in zip(t.shape, t.stride(), strict=True)]
    return t.as_strided(size, t.stride(), t.storage_offset())


def _normal_log_prob(loc: torch.Tensor, scale: torch.Tensor, value: torch.Tensor, n: int) -> torch.Tensor:
    r""":math:`-\frac12 \sum_d ((x_d - \mu_d)/\sigma_d)^2 - \sum_d \log\sigma_d - \frac D2 \log 2\pi`.

    At most three passes over the standardized values (the subtraction, the division in place,
    the sum of squares as a norm), fewer where the location is 0 or the scale 1
    throughout (a standard normal prior, expanded over particles and data points), and the log
    of the scale taken on its distinct entries only (scales broadcast over particles or data
    points are expanded views).
    """
    shape = torch.broadcast_shapes(value.shape, loc.shape, scale.shape)
    loc, scale = _compact(loc.expand(shape)), _compact(scale.expand(shape))
    std = value
    if not _is_constant(loc, 0.0, shape):
        std = value - loc
    if not _is_constant(scale, 1.0, shape):
        std = std.div_(scale) if std is not value and std.shape == shape else std / scale
    std = std.expand(shape).flatten(-n)
    quad = torch.linalg.vector_norm(std, dim=-1).square_()  # one pass, where vecdot takes two
    event = math.prod(shape[-n:])
    log_scale = scale.log().flatten(-n).sum(-1) * (event // math.prod(scale.shape[-n:]))
    return -0.5 * quad - log_scale - 0.5 * event * math.log(2 * math.pi)


def _is_constant(t: torch.Tensor, c: float, shape: torch.Size) -> bool:
    """Whether the distinct entries ``t`` of a tensor broadcast to ``shape`` all equal ``c``;
    checked only where they are few (a parameter broadcast over particles), else ``False``."""
    return t.numel() * 8 <= math.prod(shape) and bool((t == c).all())


def _reduce_enumerated_site(lp, particle_dim: int, data_dim: int) -> torch.Tensor:
    """As :func:`_reduce_site`, keeping the enumeration dims left of the particle dim: a tensor of
    shape ``(*enum, K, B)`` with the enumeration dims aligned from the right (left of ``K``), of
    size 1 where the site does not depend on them."""
    lp = torch.as_tensor(lp)
    need = -particle_dim
    if lp.dim() < need:
        lp = lp.reshape((1,) * (need - lp.dim()) + lp.shape)
    n = lp.dim()
    other = [i for i in range(n + particle_dim + 1, n) if i != n + data_dim]
    return lp.sum(other) if other else lp


def _reduce_site(lp, particle_dim: int, data_dim: int, shape: tuple[int, int]) -> torch.Tensor:
    """Sum a site's batch-shaped log-density over every dim but the particle and data dims."""
    if not torch.is_tensor(lp):
        return torch.as_tensor(float(lp)).expand(shape)
    need = -particle_dim
    if lp.dim() < need:
        lp = lp.reshape((1,) * (need - lp.dim()) + lp.shape)
    n = lp.dim()
    keep = (n + particle_dim, n + data_dim)
    other = [i for i in range(n) if i not in keep]
    if other:
        lp = lp.sum(other)
    return lp.expand(shape)


def site_log_prob(site: dict, particle_dim: int, data_dim: int, shape, fused=None) -> torch.Tensor:
    """A site's masked log-density in nats per data point, summed to ``shape`` = (particles, data
    points). The site's scale (minibatch or KL-annealing factors) is ignored. ``fused(fn, value)``
    computes the event-summed log-density by a faster route, or returns ``None`` where it does
    not apply (default :func:`_fused_log_prob`, which is not differentiable)."""
    return _reduce_site(masked_log_prob(site, fused), particle_dim, data_dim, shape)


def masked_log_prob(site: dict, fused=None) -> torch.Tensor:
    """A site's event-summed, masked log-density, unscaled, in the site's batch shape; ``fused``
    as for :func:`site_log_prob`."""
    fn, value = site["fn"], site["value"]
    if isinstance(fn, Decoded):  # decoded a block at a time, each block by the fused route
        lp = fn.log_prob_blocks(value, fused or functools.partial(_fused_log_prob, workspace=Workspace()))
    else:
        lp = (fused or _fused_log_prob)(fn, value)
        if lp is None:
            lp = fn.log_prob(value, *site["args"], **site["kwargs"])
    return scale_and_mask(lp, mask=site["mask"])


def check_support(name: str, site: dict) -> None:
    """Raise :class:`~pyrovae.errors.DataError` if an observed site's values are outside the support.

    Pyro's validation is switched off in the vectorized sweeps (it would check every large
    parameter tensor of every chunk); the observed values are checked with this instead, once
    per data chunk, on tensors without the particle dimension."""
    ok = site["fn"].support.check(site["value"])
    if not bool(torch.as_tensor(ok).all()):
        raise DataError(
            f"observed site {name!r} holds values outside the support of its distribution "
            f"({site['fn'].support}); check the data"
        )


class _Plan:
    """What a probe of the model/guide pair on one data point tells about the full run."""

    def __init__(self, model, guide, data: _Data, data_plate: str, model_args, model_kwargs):
        args = data.get(0, 1) + tuple(model_args)
        with pyro.validation_enabled(True):
            model_trace, guide_trace = _trace_pair(model, guide, args, model_kwargs)
            self._check_sites(model_trace, guide_trace, data_plate)
            self.max_plate_nesting = plate_nesting(model_trace, guide_trace)
            self.particle_dim = -self.max_plate_nesting - 1
            try:
                model_trace, guide_trace = _trace_pair(
                    model, guide, args, model_kwargs, _PROBE_PARTICLES, self.particle_dim
                )
            except Exception as e:
                raise ConfigError(
                    f"the model/guide pair failed when its samples were vectorized in an outer plate "
                    f"{PARTICLE_PLATE!r} at dim {self.particle_dim} (max_plate_nesting = "
                    f"{self.max_plate_nesting}): {type(e).__name__}: {e}. Write the model and guide so "
                    "that extra batch dimensions on the left broadcast (index from the right, e.g. "
                    "x.shape[-1], and reshape only trailing dimensions)."
                ) from e
        numel, decoded = 0, False
        for trace in (model_trace, guide_trace):
            for _, site in _scored_sites(trace):
                fn = site["fn"]
                numel += site["value"].numel()
                if isinstance(fn, Decoded):  # its parameters are never all stored at once
                    decoded = True
                    numel += 3 * sum(t.numel() for t in fn.inputs)
                else:
                    numel += 3 * (fn.batch_shape + fn.event_shape).numel()
        #: the most rows a chunk should have for speed, whatever the memory allows
        self.target_rows = _TARGET_ROWS_DECODED if decoded else _TARGET_ROWS
        itemsize = max(site["value"].element_size() for _, site in _scored_sites(model_trace))
        self.bytes_per_row = _MEMORY_SAFETY * itemsize * numel / _PROBE_PARTICLES
        #: the enumerated sites, whose values are summed out of the weights
        self.enumerated = [
            name
            for trace in (guide_trace, model_trace)
            for name, site in _scored_sites(trace)
            if site["infer"].get("enumerate")
        ]
        self.kl_note = self._check_kl(model_trace, guide_trace)
        if self.enumerated:
            self.kl_note = (
                f"analytic-KL ELBO omitted: site {self.enumerated[0]!r} is enumerated, and its "
                "values are summed out of the importance weights"
            )

    @staticmethod
    def _check_sites(model_trace, guide_trace, data_plate: str) -> None:
        sites = [("model", n, s) for n, s in _scored_sites(model_trace)]
        sites += [("guide", n, s) for n, s in _scored_sites(guide_trace)]
        for role, name, site in sites:
            how = site["infer"].get("enumerate")
            if how and how != "parallel":
                raise ConfigError(
                    f"site {name!r} of the {role} is enumerated with infer={{'enumerate': {how!r}}}; "
                    "importance sampling of log p(x) sums out parallel enumeration only: mark the site "
                    "infer={'enumerate': 'parallel'}, or sample it in the guide"
                )
        if not any(_data_frame(s, data_plate) for _, _, s in sites):
            raise ConfigError(
                f"no sample site of the model or guide lies in a plate named {data_plate!r}: a "
                "per-datapoint log p(x) needs every per-datapoint site inside "
                f"pyro.plate({data_plate!r}, N), with N = the number of data points passed in"
            )
        for role, name, site in sites:
            frame = _data_frame(site, data_plate)
            if frame is None:
                kind = "observed" if site["is_observed"] else "latent"
                raise ConfigError(
                    f"{kind} site {name!r} of the {role} lies outside the data plate {data_plate!r}. "
                    "log p(x_n) of one data point is undefined when a variable is shared across data "
                    "points: the data points are then not independent given the parameters. Put the "
                    f"site inside pyro.plate({data_plate!r}, N), or marginalize it out, or make it a "
                    "parameter (pyro.param)"
                )
            if frame.size != 1:
                raise ConfigError(
                    f"the data plate {data_plate!r} at site {name!r} of the {role} has size {frame.size} "
                    "when 1 data point was passed: its size must be the number of data points passed "
                    f"in, pyro.plate({data_plate!r}, x.shape[0]), without subsampling"
                )
        model_names = {n for n, _ in _scored_sites(model_trace)}
        guide_names = {n for n, _ in _scored_sites(guide_trace)}
        for name, site in _scored_sites(model_trace):
            if not site["is_observed"] and name not in guide_names and not site["infer"].get("enumerate"):
                raise ConfigError(
                    f"latent site {name!r} of the model is not sampled by the guide; importance "
                    "sampling needs the guide to propose every latent variable: add it to the guide"
                )
        for name in guide_names - model_names:
            raise ConfigError(
                f"site {name!r} of the guide does not appear in the model; auxiliary guide variables "
                "are not supported by importance sampling of log p(x)"
            )

    @staticmethod
    def _check_kl(model_trace, guide_trace) -> str | None:
        """Why the analytic-KL ELBO is unavailable, or ``None`` if it is available."""
        latents = [n for n, s in _scored_sites(model_trace) if not s["is_observed"]]
        guide_order = [n for n, _ in _scored_sites(guide_trace) if n in set(latents)]
        if latents != guide_order:
            return (
                "analytic-KL ELBO omitted: the guide samples the latents in a different order from the "
                f"model ({', '.join(guide_order)} vs {', '.join(latents)}), so the mean-field condition "
                "of Pyro's TraceMeanField_ELBO cannot be verified"
            )
        for name in latents:
            q, p = guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"]
            try:
                kl_divergence(q, p)
            except NotImplementedError:
                return (
                    f"analytic-KL ELBO omitted: no closed-form KL divergence is registered for site "
                    f"{name!r} ({type(q).__name__} in the guide, {type(p).__name__} in the model)"
                )
        return None


# ---------------------------------------------------------------------------------------------
# the sweep over data chunks


class _Sweep:
    """Draw ``K`` log-weights for every data point, one data chunk at a time.

    Iterating yields ``(lo, hi, log_w, elbo)``: the ``(hi - lo, K)`` log-weights of data points
    ``lo:hi`` and, when the analytic-KL ELBO was requested and is available, the ``(hi - lo, K)``
    single-sample terms :math:`\\log p(x \\mid z_k) - \\mathrm{KL}(q \\| p)` (else ``None``).

    With a ``seed``, the draws of the chunk starting at data point ``lo`` are seeded from
    ``(seed, lo)`` alone. In a distributed run each rank sweeps its contiguous share of the chunks
    (:func:`pyrovae.distributed.shard`), with the chunk sizes of the whole data set, so every data
    point gets the draws it gets in one process.
    """

    def __init__(
        self,
        model,
        guide,
        data,
        num_samples: int,
        *,
        data_plate: str = DATA_PLATE,
        batch_size: int | None = None,
        particle_batch_size: int | None = None,
        max_memory: int | None = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
        analytic_kl: bool = False,
        seed: int | None = None,
    ):
        for name, value in (
            ("num_samples", num_samples),
            ("batch_size", batch_size),
            ("particle_batch_size", particle_batch_size),
            ("max_memory", max_memory),
        ):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.model, self.guide = model, guide
        self.data = _Data(data)
        self.num_samples = num_samples
        self.data_plate = data_plate
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs or {})
        self.plan = _Plan(model, guide, self.data, data_plate, self.model_args, self.model_kwargs)
        self.analytic_kl = analytic_kl and self.plan.kl_note is None
        self.max_memory = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
        self.batch_size, self.particle_batch_size = self._chunk_sizes(batch_size, particle_batch_size)
        self.seed = seed
        self.span = distributed.shard(self.data.num_data, self.batch_size)
        retain_freed_memory()

    def _chunk_sizes(self, batch_size, particle_batch_size) -> tuple[int, int]:
        num_data, num_samples, max_memory = self.data.num_data, self.num_samples, self.max_memory
        rows = int(min(max(max_memory // self.plan.bytes_per_row, 1), self.plan.target_rows))
        if particle_batch_size is None:
            particle_batch_size = max(1, min(num_samples, rows // (batch_size or 1)))
        if batch_size is None:
            # the (batch, K) block of log-weights is kept whole, in float64 for the reduction
            weights_cap = max(1, max_memory // (4 * 8 * num_samples))
            batch_size = max(1, min(rows // particle_batch_size, weights_cap))
        return min(batch_size, num_data), min(particle_batch_size, num_samples)

    def _chunk(self, args, num_particles: int, num_data: int, check: bool):
        model_trace, guide_trace = _trace_pair(
            self.model, self.guide, args, self.model_kwargs, num_particles, self.plan.particle_dim
        )
        shape = (num_particles, num_data)
        log_w = torch.zeros(())
        elbo = torch.zeros(()) if self.analytic_kl else None
        for name, site in _scored_sites(model_trace):
            if check and site["is_observed"]:
                check_support(name, site)
            lp = self._site_log_prob(site, shape)
            log_w = log_w + lp
            if elbo is not None:
                if site["is_observed"]:
                    elbo = elbo + lp
                else:
                    g = guide_trace.nodes[name]
                    kl = scale_and_mask(kl_divergence(g["fn"], site["fn"]), mask=g["mask"])
                    elbo = elbo - _reduce_site(kl, self.plan.particle_dim, self._data_dim(g), shape)
        for _, site in _scored_sites(guide_trace):
            # an enumerated site's q(y | x) cancels from the weight (see the module docstring)
            if not site["infer"].get("enumerate"):
                log_w = log_w - self._site_log_prob(site, shape)
        if log_w.dim() > 2:  # sum the weights over the enumerated values
            log_w = log_w.flatten(0, -3).logsumexp(0)
        return log_w.expand(shape), None if elbo is None else elbo.expand(shape)

    def _data_dim(self, site) -> int:
        return _data_frame(site, self.data_plate).dim

    def _site_log_prob(self, site, shape) -> torch.Tensor:
        if self.plan.enumerated:
            lp = masked_log_prob(site)
            return _reduce_enumerated_site(lp, self.plan.particle_dim, self._data_dim(site))
        return site_log_prob(site, self.plan.particle_dim, self._data_dim(site), shape)

    def __len__(self) -> int:
        """The number of data points this rank sweeps."""
        return self.span[1] - self.span[0]

    def reducer(self, keep: bool) -> _Reducer:
        """A :class:`_Reducer` that batches at most ``max_memory / 4`` bytes of log-weights."""
        rows = max(1, min(_REDUCE_ROWS, self.max_memory // (4 * 8 * self.num_samples)))
        return _Reducer(self.num_samples, rows, keep)

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
        check = is_validation_enabled()
        for lo in range(*self.span, self.batch_size):
            hi = min(lo + self.batch_size, self.data.num_data)
            seed = None if self.seed is None else distributed.derived_seed(self.seed, lo)
            # the global modes are set per chunk, never across a yield: the caller's code runs
            # in its own modes, and they are restored even if the caller abandons the loop
            with torch.no_grad(), pyro.validation_enabled(False), seeded(seed):
                log_w, elbo = self._data_chunk(lo, hi, check)
            yield lo, hi, log_w, elbo

    def _data_chunk(self, lo: int, hi: int, check: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        args = self.data.get(lo, hi) + self.model_args
        log_w = elbo = None
        for plo in range(0, self.num_samples, self.particle_batch_size):
            phi = min(plo + self.particle_batch_size, self.num_samples)
            lw, el = self._chunk(args, phi - plo, hi - lo, check and plo == 0)
            if log_w is None:
                log_w = lw.new_empty(hi - lo, self.num_samples)
                elbo = None if el is None else lw.new_empty(hi - lo, self.num_samples)
            log_w[:, plo:phi] = lw.T
            if el is not None:
                elbo[:, plo:phi] = el.T
        return log_w, elbo


@contextlib.contextmanager
def seeded(seed: int | None):
    """Seed Pyro's generators (torch, random, numpy) for the duration, then restore the
    caller's state, so that a seeded evaluation leaves the surrounding random stream untouched."""
    if seed is None:
        yield
        return
    state = pyro.util.get_rng_state()
    try:
        pyro.set_rng_seed(seed)
        yield
    finally:
        pyro.util.set_rng_state(state)


class _Reducer:
    """Reduce blocks of log-weights with :func:`reduce_log_weights`, ``rows`` at a time, into a
    :class:`LogLikelihood`, keeping the log-weights if asked; in a distributed run, the ranks'
    contiguous shares are gathered in order."""

    def __init__(self, num_samples: int, rows: int, keep: bool):
        self.num_samples, self.rows, self.keep = num_samples, rows, keep
        self._pending: list[torch.Tensor] = []
        self._parts: list[tuple[torch.Tensor, ...]] = []
        self._kept: list[torch.Tensor] = []

    def add(self, log_w: torch.Tensor) -> None:
        self._pending.append(log_w)
        if sum(block.shape[0] for block in self._pending) >= self.rows:
            self._flush()

    def _flush(self) -> None:
        block = torch.cat(self._pending)
        self._pending = []
        self._parts.append(reduce_log_weights(block))
        if self.keep:
            self._kept.append(block)

    def result(self, elapsed: float) -> LogLikelihood:
        if self._pending:
            self._flush()
        fields = [torch.cat(p) for p in zip(*self._parts, strict=True)] or [_EMPTY] * 4
        kept = (torch.cat(self._kept) if self._kept else _EMPTY) if self.keep else None
        return LogLikelihood(
            *map(distributed.gather_rows, fields),
            num_samples=self.num_samples,
            log_weights=None if kept is None else distributed.gather_rows(kept),
            elapsed=elapsed,
        )


# what a rank with no data points to sweep contributes
_EMPTY = torch.empty(0, dtype=torch.float64)


def log_likelihood(
    model,
    guide,
    data,
    num_samples: int = 5000,
    *,
    data_plate: str = DATA_PLATE,
    batch_size: int | None = None,
    particle_batch_size: int | None = None,
    max_memory: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    return_log_weights: bool = False,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
) -> LogLikelihood:
    r"""Estimate :math:`\log p(x_n)` of every data point by importance sampling from the guide.

    For each data point :math:`x_n`, ``num_samples`` = :math:`K` draws :math:`z_k \sim q(\cdot
    \mid x_n)` give log-weights :math:`\log w_k = \log p(x_n, z_k) - \log q(z_k \mid x_n)` and
    the IWAE-:math:`K` estimate :math:`\log \frac1K \sum_k w_k` (Burda et al. 2015), a lower
    bound in expectation that tightens as :math:`K` grows. Each estimate comes with its
    delta-method standard error, Kong's effective sample size and the PSIS :math:`\hat k`
    diagnostic (Vehtari et al. 2024): above 0.7 the guide's tails are too light for the estimate
    to be trusted (Yao et al. 2018). See :func:`reduce_log_weights`.

    The particles are vectorized in an outer plate ``"_particles"`` at dim
    ``-(max_plate_nesting + 1)`` around the guide and the model replayed against it (as
    :class:`~pyro.infer.RenyiELBO` does), with ``max_plate_nesting`` found by a probe on one
    data point. Every sample site, latent or observed, must lie inside the data plate; its
    log-density is summed over all dims but the particle and data dims. Site scales (minibatch
    scaling, KL annealing) are ignored: the result is in nats per data point. Masks are applied.

    Memory is bounded: data points are processed ``batch_size`` at a time and particles
    ``particle_batch_size`` at a time; by default both are derived from ``max_memory`` and the
    tensor sizes seen in the probe. The draws depend on the chunk sizes, the estimates'
    distribution does not. With a ``seed``, the draws of each data chunk are seeded from ``seed``
    and the chunk's first data point alone.

    Launched by ``torchrun`` (see :mod:`pyrovae.distributed`), the data chunks are split into
    contiguous shards, one per worker, and the per-datapoint results (and log-weights) gathered on
    every worker: the result is exactly the one-process result for the same ``seed``, computed
    about :math:`W` times faster. Rank 0 alone shows progress, over its shard.

    :param callable model: model ``model(*data, *model_args, **model_kwargs)``.
    :param callable guide: guide with the same signature.
    :param data: a tensor of shape ``(N, ...)``; a tuple of tensors sharing the leading ``N``
        (passed positionally, e.g. several observed sites); or a data set, read through its
        ``batch(index)`` method if it has one, else item by item. Boolean and ``uint8`` tensors
        are cast to the default float dtype; the computation runs in the data's (and model's) dtype.
    :param int num_samples: :math:`K`, importance samples per data point.
    :param str data_plate: name of the data plate.
    :param int batch_size: data points per chunk.
    :param int particle_batch_size: particles per chunk.
    :param int max_memory: bytes one chunk may use when chunk sizes are derived (default 512 MiB).
    :param int seed: seed for the draws; the caller's random state is restored afterwards.
    :param bool progress: show a progress bar over data points.
    :param bool return_log_weights: keep the ``(N, K)`` log-weights in the result.
    :param tuple model_args: extra positional arguments after the data.
    :param dict model_kwargs: keyword arguments.
    :raises ConfigError: if a sample site lies outside the data plate, if a site is enumerated
        other than in parallel (enumerated sites are summed out: see the module docstring),
        or if a model latent is missing from the guide.
    :rtype: LogLikelihood
    """
    start = time.perf_counter()
    distributed.init()
    with seeded(seed):
        sweep = _Sweep(
            model,
            guide,
            data,
            num_samples,
            data_plate=data_plate,
            batch_size=batch_size,
            particle_batch_size=particle_batch_size,
            max_memory=max_memory,
            model_args=model_args,
            model_kwargs=model_kwargs,
            seed=seed,
        )
        reducer = sweep.reducer(keep=return_log_weights)
        shown = progress and distributed.is_main()
        with tqdm(total=len(sweep), unit="x", desc="log p(x)", disable=not shown) as bar:
            for lo, hi, log_w, _ in sweep:
                reducer.add(log_w)
                bar.update(hi - lo)
        return reducer.result(elapsed=time.perf_counter() - start)
