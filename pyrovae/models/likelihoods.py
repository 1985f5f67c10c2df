r"""Observation models :math:`p(x \mid z)` for the decoder's output.

A likelihood turns the decoder's output ``params`` of shape ``(..., *event_shape)`` into a distribution with
that batch shape; :class:`~pyrovae.VAE` declares the event dimensions with ``.to_event``. Each likelihood also
checks that data lies in its support, so that a mismatch (say, grey-level images under a Bernoulli likelihood)
is reported before training, not as a cryptic NaN.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

from pyrovae.errors import ConfigError, DataError, unknown_name
from pyrovae.options import check_option, parse_spec


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
    r""":math:`x_d \sim \mathrm{Bernoulli}(p_d)` for binary data; ``params`` are logits
    :math:`\ell_d`, and :math:`p_d = \sigma(\ell_d)`.

    With ``clamp`` :math:`= \epsilon > 0` (``"bernoulli:clamp=1e-5"``) the probabilities are
    clamped to :math:`[\epsilon, 1 - \epsilon]`,

    .. math:: p_d = \min\big(\max(\sigma(\ell_d), \epsilon), 1 - \epsilon\big),

    as the VampPrior authors' ``log_Bernoulli`` does in training and evaluation (Tomczak & Welling
    2018, ``utils/distributions.py`` of ``github.com/jmtomczak/vae_vampprior``, with
    :math:`\epsilon = 10^{-5}`). It is still a Bernoulli, a proper distribution: each pixel costs at
    most :math:`-\log\epsilon` nats, and a logit beyond
    :math:`\pm\log\frac{1-\epsilon}{\epsilon}` gets no gradient. The clamp is applied to the
    logits, the same map without a round trip through probabilities.
    """

    name = "bernoulli"
    bounds = (0.0, 1.0)

    def __init__(self, clamp: float = 0.0):
        super().__init__()
        self.clamp = check_option("clamp", clamp)
        #: the logit of 1 - clamp, the clamp on the logits (infinite: none)
        self.max_logit = math.log1p(-self.clamp) - math.log(self.clamp) if self.clamp else math.inf

    def extra_repr(self) -> str:
        return f"clamp={self.clamp!r}" if self.clamp else ""

    def logits(self, params: torch.Tensor) -> torch.Tensor:
        """The logits of the probabilities, clamped where ``clamp`` is set."""
        return params.clamp(-self.max_logit, self.max_logit) if self.clamp else params

    def forward(self, params):
        return dist.Bernoulli(logits=self.logits(params))

    def mean(self, params):
        return torch.sigmoid(self.logits(params))

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


class GreyLevels(dist.TorchDistribution):
    r"""Grey levels :math:`x \in \{0, \frac{1}{n}, \dots, 1\}` with :math:`n x \sim
    \mathrm{Binomial}(n, \sigma(\ell))`, :math:`n` = ``levels`` − 1: a distribution on the data's
    own scale, so that ``log_prob`` is the probability of the observed level (not a density)."""

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, logits: torch.Tensor, levels: int, validate_args=None):
        self.logits, self.levels = logits, levels
        self._counts = dist.Binomial(total_count=levels - 1, logits=logits, validate_args=False)
        super().__init__(logits.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return GreyLevels(self.logits.expand(batch_shape), self.levels)

    @property
    def mean(self):
        return torch.sigmoid(self.logits)

    @property
    def variance(self):
        p = torch.sigmoid(self.logits)
        return p * (1 - p) / (self.levels - 1)

    def sample(self, sample_shape=()):
        return self._counts.sample(sample_shape) / (self.levels - 1)

    def log_prob(self, value):
        return self._counts.log_prob(torch.round(value * (self.levels - 1)))


class Binomial(Likelihood):
    r""":math:`(L-1)\,x_d \sim \mathrm{Binomial}(L - 1, \sigma(\ell_d))` for images of :math:`L`
    grey levels stored as intensities :math:`x_d \in \{0, \frac{1}{L-1}, \dots, 1\}` (scikit-learn's
    digits have :math:`L = 17`, 8-bit images 256); ``params`` are logits.

    A discrete likelihood for discrete data: :math:`\log p(x)` is the log-probability of the
    observed grey levels, so it compares across models as binarized data's does, where a density
    (Gaussian, continuous Bernoulli) on such data does not. With :math:`L = 2` it is the Bernoulli.
    Its mean :math:`\sigma(\ell_d)` is the expected intensity.
    """

    name = "binomial"
    bounds = (0.0, 1.0)

    def __init__(self, levels: int):
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ConfigError(f"levels must be an integer >= 2 (the number of grey levels); got {levels!r}")
        self.levels = levels

    def forward(self, params):
        return GreyLevels(params, self.levels)

    def mean(self, params):
        return torch.sigmoid(params)

    def check(self, x, what="data"):
        super().check(x, what)
        n = self.levels - 1
        if (x < 0).any() or (x > 1).any() or ((x * n - torch.round(x * n)).abs() > 1e-4).any():
            raise DataError(
                f"{what} is not on the grid of {self.levels} grey levels 0, 1/{n}, ..., 1 of the likelihood "
                f"'binomial:levels={self.levels}'; pass the data's number of levels (levels=L for "
                "intensities k/(L-1)), or choose a likelihood for continuous data ('gaussian', "
                "'gaussian-learned' or 'continuous-bernoulli')."
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
LIKELIHOODS = ("bernoulli", "binomial", "continuous-bernoulli", "gaussian", "gaussian-learned")


def likelihood(name: str, event_shape=(), scale: float = 1.0) -> Likelihood:
    """The likelihood called ``name``: one of :data:`LIKELIHOODS`, with the number of grey levels
    for the binomial, ``"binomial:levels=17"``, and optionally a clamp of the Bernoulli's
    probabilities, ``"bernoulli:clamp=1e-5"``.

    ``scale`` is the Gaussian's fixed standard deviation, or the initial one for ``"gaussian-learned"``.
    """
    name, options = parse_spec(name, what="likelihood")
    if name == "binomial":
        if set(options) != {"levels"}:
            raise ConfigError(
                "likelihood 'binomial' takes one option, the number of grey levels of the data: "
                "'binomial:levels=17' for scikit-learn's digits, 'binomial:levels=256' for 8-bit images"
            )
        return Binomial(options["levels"])
    if name == "bernoulli":
        if set(options) - {"clamp"}:
            raise ConfigError(
                "likelihood 'bernoulli' takes one option, the clamp of its probabilities to "
                f"[clamp, 1 - clamp] ('bernoulli:clamp=1e-5'); got {', '.join(options)}"
            )
        return Bernoulli(**options)
    if options:
        raise ConfigError(f"likelihood {name!r} takes no options; got {', '.join(options)}")
    if name == "continuous-bernoulli":
        return ContinuousBernoulli()
    if name in ("gaussian", "gaussian-learned"):
        return Gaussian(event_shape, scale, learn_scale=name == "gaussian-learned")
    raise unknown_name("likelihood", name, LIKELIHOODS)
