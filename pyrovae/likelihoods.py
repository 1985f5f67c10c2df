r"""Observation models :math:`p(x \mid z)` for the decoder's output.

A likelihood turns the decoder's output ``params`` of shape ``(..., *event_shape)`` into a
distribution with that batch shape; :class:`~pyrovae.VAE` declares the event dimensions with
``.to_event``. Each likelihood also checks that data lies in its support, so that a mismatch
(say, grey-level images under a Bernoulli likelihood) is reported before training, not as a
cryptic NaN.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from .errors import DataError, unknown_name


class Likelihood(nn.Module):
    """Base class: ``forward(params)`` returns the distribution, ``mean(params)`` its mean."""

    #: a short name, as accepted by :func:`likelihood`
    name: str = ""
    #: the range ``(low, high)`` of the data, where it is bounded (used to clip the VampPrior's
    #: pseudo-inputs), else ``None``
    bounds: tuple[float, float] | None = None

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


#: the names :func:`likelihood` accepts
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
