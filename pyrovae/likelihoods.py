r"""Observation models :math:`p(x \mid z)` for the decoder's output.

A likelihood turns the decoder's output ``params`` of shape ``(..., *event_shape)`` into a
distribution with that batch shape; :class:`~pyrovae.VAE` declares the event dimensions with
``.to_event``. Each likelihood also checks that data lies in its support, so that a mismatch
(say, grey-level images under a Bernoulli likelihood) is reported before training, not as a
cryptic NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions.utils import lazy_property

from . import kernels
from .errors import DataError, unknown_name
from .nn import MLPDecoder


class Likelihood(nn.Module):
    """Base class: ``forward(params)`` returns the distribution, ``mean(params)`` its mean."""

    #: a short name, as accepted by :func:`likelihood`
    name: str = ""
    #: the range ``(low, high)`` of the data, where it is bounded (used to clip the VampPrior's
    #: pseudo-inputs), else ``None``
    bounds: tuple[float, float] | None = None
    #: whether the distributions it returns have ``rsample`` (``None``: not declared)
    has_rsample: bool | None = None

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self(params).mean

    def check(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`~pyrovae.errors.DataError` if ``x`` is outside the support."""
        bad = ~torch.isfinite(x)
        if bad.any():
            raise DataError(
                f"{what} contains {int(bad.sum())} NaN or infinite values; remove or impute them "
                "before training (for example x = torch.nan_to_num(x))."
            )


class Bernoulli(Likelihood):
    r""":math:`x_d \sim \mathrm{Bernoulli}(\sigma(\ell_d))` for binary data; ``params`` are logits."""

    name = "bernoulli"
    bounds = (0.0, 1.0)
    has_rsample = False

    def forward(self, params):
        return dist.Bernoulli(logits=params)

    def mean(self, params):
        return torch.sigmoid(params)

    def check(self, x, what="data"):
        super().check(x, what)
        if not ((x == 0) | (x == 1)).all():
            raise DataError(
                f"{what} is not binary (values other than 0 and 1), but the likelihood is 'bernoulli'. "
                "Binarize the data (binarize='dynamic' or 'threshold'; CLI --binarize) or choose a "
                "likelihood for continuous data ('gaussian', 'gaussian-learned' or 'continuous-bernoulli')."
            )


class ContinuousBernoulli(Likelihood):
    r"""The continuous Bernoulli on :math:`[0, 1]` (Loaiza-Ganem & Cunningham 2019); ``params`` are logits.

    Its normalizing constant corrects the Bernoulli likelihood's use on grey-level data.
    """

    name = "continuous-bernoulli"
    bounds = (0.0, 1.0)
    has_rsample = True

    def forward(self, params):
        return dist.ContinuousBernoulli(logits=params)

    def check(self, x, what="data"):
        super().check(x, what)
        if (x < 0).any() or (x > 1).any():
            raise DataError(
                f"{what} has values outside [0, 1], the support of the 'continuous-bernoulli' likelihood. "
                "Rescale the data to [0, 1] or use likelihood='gaussian'."
            )


class Gaussian(Likelihood):
    r""":math:`x_d \sim \mathcal{N}(\mu_d, \sigma^2)` with ``params`` the means.

    The scale :math:`\sigma` is fixed (``scale``), or learned per data dimension when
    ``learn_scale=True`` (a global parameter, not a latent).
    """

    name = "gaussian"
    has_rsample = True

    def __init__(self, event_shape=(), scale: float = 1.0, learn_scale: bool = False):
        super().__init__()
        log_scale = torch.full(tuple(event_shape) if learn_scale else (), math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, params):
        return dist.Normal(params, self.log_scale.exp().expand(params.shape))

    def mean(self, params):
        return params


LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian", "gaussian-learned")


def likelihood(name: str, event_shape=(), scale: float = 1.0) -> Likelihood:
    """The likelihood called ``name``: one of :data:`LIKELIHOODS`.

    ``scale`` is the Gaussian's fixed standard deviation, or the initial one for ``"gaussian-learned"``.
    """
    if name == "bernoulli":
        return Bernoulli()
    if name == "continuous-bernoulli":
        return ContinuousBernoulli()
    if name == "gaussian":
        return Gaussian(event_shape, scale)
    if name == "gaussian-learned":
        return Gaussian(event_shape, scale, learn_scale=True)
    raise unknown_name("likelihood", name, LIKELIHOODS)


_SCALAR = torch.Size()
#: elements of the decoder's output per block of :meth:`Decoded.log_prob_blocks`: 2 MB of float32,
#: within the per-core cache of current processors
BLOCK_ELEMENTS = 2**19


def _rows(t: torch.Tensor, dims: int, lo: int, rows: int) -> torch.Tensor:
    """Rows ``lo:lo+rows`` of the leftmost of ``dims`` right-aligned dims of ``t``; all of ``t``
    where it broadcasts along that dim (fewer dims, or size 1)."""
    if t.dim() < dims or t.shape[0] == 1:
        return t
    return t[lo : lo + rows]


class Decoded(TorchDistribution):
    r"""The likelihood :math:`p(x \mid \mathrm{decoder}(u_1, \dots, u_m))` of a model's
    observation, with the decoder's output computed when needed rather than when built.

    :class:`~pyrovae.VAE` and the other models of pyrovae observe their data through this
    distribution. It is ``likelihood(decoder(*inputs)).to_event(len(event_shape))`` in every
    respect (``log_prob``, ``sample``, ``mean``, ``expand``...), and those methods decode all of
    ``inputs`` at once. What it adds is :meth:`log_prob_blocks`: the same log-density, decoded in
    blocks of rows of the inputs, so that each block's decoder activations and likelihood
    parameters stay in the processor's cache. With :math:`K` importance samples of a
    784-pixel image the parameters are :math:`K \times 784` floats, 16 MB at
    :math:`K = 5000`; evaluated in blocks, the elementwise work of the decoder and the
    log-density reads them from cache, not from main memory, and the full tensor is never
    stored (see :func:`pyrovae.log_likelihood`).

    :param likelihood: maps the decoder's output to a distribution with that batch shape.
    :param decoder: maps ``inputs`` of shapes ``(*batch_i, features_i)``, whose leading dims
        broadcast to ``batch_shape``, to an output of shape ``(*batch_shape, *event_shape)``.
    :param inputs: the decoder's inputs, e.g. ``(z,)``, or ``(z, one_hot(y))``.
    :param event_shape: the shape of one data point.
    """

    arg_constraints: dict = {}

    def __init__(self, likelihood, decoder, inputs: Sequence[torch.Tensor], event_shape):
        self.likelihood, self.decoder, self.inputs = likelihood, decoder, tuple(inputs)
        batch_shape = torch.broadcast_shapes(*(t.shape[:-1] for t in self.inputs))
        super().__init__(batch_shape, torch.Size(event_shape), validate_args=False)

    def _decode(self, inputs) -> dist.TorchDistribution:
        return self.likelihood(self.decoder(*inputs)).to_event(len(self.event_shape))

    @lazy_property
    def base(self) -> dist.TorchDistribution:
        """The likelihood at the decoder's output for all of ``inputs``."""
        return self._decode(self.inputs)

    @lazy_property
    def _probe(self) -> dist.TorchDistribution:
        # the likelihood at one row of the inputs: its support and flags hold for every row
        return self._decode([t.reshape(-1, t.shape[-1])[:1] for t in self.inputs])

    @property
    def support(self):
        return self._probe.support

    @property
    def has_rsample(self) -> bool:
        # a Likelihood may declare it, which spares a decoder call at every sample statement
        known = getattr(self.likelihood, "has_rsample", None)
        return known if isinstance(known, bool) else self._probe.has_rsample

    @property
    def mean(self) -> torch.Tensor:
        return self.base.mean

    @property
    def variance(self) -> torch.Tensor:
        return self.base.variance

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        inputs = [t.expand(*batch_shape, t.shape[-1]) for t in self.inputs]
        return type(self)(self.likelihood, self.decoder, inputs, self.event_shape)

    def sample(self, sample_shape=_SCALAR):
        return self.base.sample(sample_shape)

    def rsample(self, sample_shape=_SCALAR):
        return self.base.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.base.log_prob(value)

    def log_prob_blocks(
        self, value: torch.Tensor, route=None, block_size: int = BLOCK_ELEMENTS
    ) -> torch.Tensor:
        """:meth:`log_prob`, decoded in blocks along the leftmost batch dim of about
        ``block_size`` elements of the decoder's output each.

        ``route(fn, value)`` computes the event-summed log-density of a block's likelihood
        ``fn`` by a faster route, or returns ``None`` for ``fn.log_prob(value)``. ``value`` must
        broadcast against the batch shape; it is not expanded. Where :mod:`pyrovae.kernels`
        evaluates the decoder and likelihood together (an :class:`~pyrovae.nn.MLPDecoder` with
        softplus or ReLU and the :class:`Bernoulli` likelihood, without autograd), one call of
        :func:`~pyrovae.kernels.mlp_bernoulli_log_prob` replaces the blocks."""
        native = self._native_log_prob(value)
        if native is not None:
            return native
        route = route or (lambda fn, value: None)
        batch = self.batch_shape
        per_row = math.prod(batch[1:]) * math.prod(self.event_shape)
        rows = max(1, block_size // max(per_row, 1))
        if not batch or rows >= batch[0] or value.dim() - len(self.event_shape) > len(batch):
            return self._block_log_prob(self.inputs, value, route)
        out = []
        for lo in range(0, batch[0], rows):
            inputs = [_rows(t, len(batch) + 1, lo, rows) for t in self.inputs]
            value_rows = _rows(value, len(batch) + len(self.event_shape), lo, rows)
            out.append(self._block_log_prob(inputs, value_rows, route))
        return torch.cat(out)

    def _native_log_prob(self, value: torch.Tensor) -> torch.Tensor | None:
        n = len(self.event_shape)
        if type(self.likelihood) is not Bernoulli or not isinstance(self.decoder, MLPDecoder):
            return None
        if len(self.inputs) != 1 or value.dim() < n:
            return None
        return kernels.mlp_bernoulli_log_prob(self.decoder.net, self.inputs[0], value.flatten(-n))

    def _block_log_prob(self, inputs, value, route) -> torch.Tensor:
        fn = self._decode(inputs)
        lp = route(fn, value)
        return fn.log_prob(value) if lp is None else lp
