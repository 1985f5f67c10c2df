r"""Priors :math:`p(z)` over the latent code.

A prior is a module whose ``forward(batch_shape)`` returns a distribution over ``latent_dim``-vectors (event
dimension 1) with the given batch shape. Swapping the prior of a :class:`~pyrovae.VAE` (or of the top layer of
an :class:`~pyrovae.HVAE`) changes nothing else: training, estimators and evaluation only see the sample site.

- :class:`StandardNormal`: :math:`\mathcal N(0, I)`.
- :class:`LearnableNormal`: :math:`\mathcal N(\mu, \operatorname{diag}\sigma^2)` with learned
  :math:`\mu, \sigma`.
- :class:`GaussianMixture`: a learned mixture of :math:`K` diagonal Gaussians.
- :class:`VampPrior`: the "variational mixture of posteriors" of Tomczak & Welling (2018),
  :math:`p(z) = \frac1K \sum_k q_\phi(z \mid u_k)` at :math:`K` learned pseudo-inputs
  :math:`u_k`, pushed through the model's own encoder.

Both mixtures are :class:`DiagonalNormalMixture` distributions, whose log-density is computed with
matrix products.

References:

- J. M. Tomczak and M. Welling (2018), "VAE with a VampPrior", AISTATS.
- N. Dilokthanakul et al. (2016), "Deep Unsupervised Clustering with Gaussian Mixture Variational
  Autoencoders", arXiv:1611.02648 (a mixture-of-Gaussians prior).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.errors import ConfigError, unknown_name


class DiagonalNormalMixture(dist.MixtureSameFamily):
    r"""A mixture of :math:`K` diagonal Gaussians shared by every batch element,

    .. math:: p(z) = \sum_{k=1}^K \pi_k \prod_{d=1}^D \mathcal N(z_d;\ \mu_{kd}, \sigma_{kd}^2),
              \qquad \pi = \operatorname{softmax}(\text{logits}).

    A :class:`~pyro.distributions.MixtureSameFamily` (sampling, expansion, mean and variance are its own)
    whose ``log_prob`` expands the quadratic form, :math:`\sum_d (z_d - \mu_{kd})^2/\sigma_{kd}^2 =
    (z^2)\cdot\sigma_k^{-2} - 2 z\cdot(\mu_k \sigma_k^{-2}) + \mu_k^2\cdot\sigma_k^{-2}`, into two
    ``(N, D) @ (D, K)`` matrix products (in float64, against cancellation) instead of an ``(N, K, D)``
    elementwise tensor: the VampPrior's :math:`K = 500` components cost importance sampling little.

    :param logits: ``(K,)`` unnormalized log mixture weights.
    :param loc: ``(K, D)`` component means.
    :param scale: ``(K, D)`` component standard deviations.
    :param batch_shape: batch shape of the mixture (every element has the same parameters).
    """

    def __init__(
        self,
        logits: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        batch_shape: torch.Size | Sequence[int] = (),
        validate_args: bool | None = None,
    ):
        if logits.dim() != 1 or loc.dim() != 2 or loc.shape != scale.shape or loc.shape[0] != logits.shape[0]:
            raise ValueError(
                f"expected logits (K,), loc and scale (K, D); got {tuple(logits.shape)}, "
                f"{tuple(loc.shape)}, {tuple(scale.shape)}"
            )
        self.logits, self.loc, self.scale = logits, loc, scale
        batch_shape = torch.Size(batch_shape)
        mixture = dist.Categorical(logits=logits.expand(*batch_shape, -1))
        components = dist.Normal(loc.expand(*batch_shape, *loc.shape), scale.expand(*batch_shape, *loc.shape))
        super().__init__(mixture, components.to_event(1), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.logits, self.loc, self.scale, batch_shape, self._validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        z, loc, scale = (t.to(torch.float64) for t in (value, self.loc, self.scale))
        precision = scale.pow(-2)  # (K, D)
        weighted_loc = loc * precision
        quadratic = z.pow(2) @ precision.T - 2 * z @ weighted_loc.T + (loc * weighted_loc).sum(-1)
        log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_components = -0.5 * quadratic - log_norm  # (..., K)
        log_weights = torch.log_softmax(self.logits.to(torch.float64), -1)
        return torch.logsumexp(log_components + log_weights, -1).to(value.dtype)


class StandardNormal(nn.Module):
    r""":math:`p(z) = \mathcal{N}(0, I)`."""

    name = "normal"

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, batch_shape: torch.Size | tuple[int, ...]) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).expand([*batch_shape, self.latent_dim]).to_event(1)


class LearnableNormal(nn.Module):
    r""":math:`p(z) = \mathcal{N}(\mu, \operatorname{diag}\sigma^2)`, with :math:`\mu` and
    :math:`\log\sigma` learned (initialized at :math:`\mathcal N(0, I)`)."""

    name = "learnable-normal"

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, batch_shape: torch.Size | tuple[int, ...]) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.log_scale.exp()).expand([*batch_shape, self.latent_dim]).to_event(1)


class GaussianMixture(nn.Module):
    r""":math:`p(z) = \sum_{k=1}^K \pi_k\, \mathcal N(z;\ \mu_k, \operatorname{diag}\sigma_k^2)`
    with weights, means and scales learned.

    Means start at random draws from :math:`\mathcal N(0, I)` (so the components differ), scales
    at 1 and weights equal.
    """

    name = "mixture"

    def __init__(self, latent_dim: int, num_components: int = 10):
        super().__init__()
        self.latent_dim = latent_dim
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_components, latent_dim))

    def forward(self, batch_shape: torch.Size | tuple[int, ...]) -> DiagonalNormalMixture:
        return DiagonalNormalMixture(self.logits, self.loc, self.log_scale.exp(), batch_shape)


class VampPrior(nn.Module):
    r"""The VampPrior (Tomczak & Welling 2018): the mixture of the variational posteriors at
    :math:`K` learned pseudo-inputs :math:`u_1, \dots, u_K`,

    .. math:: p_\lambda(z) = \frac1K \sum_{k=1}^K q_\phi(z \mid u_k),

    which couples prior and encoder: the prior is the aggregate posterior of a learned "data
    set" of :math:`K` points. The ``encoder`` is the model's own (shared, not copied) module
    ``x -> (loc, scale)`` of :math:`q_\phi(z \mid x)`, so the prior's gradient also trains it.

    As in the paper's code, the pseudo-inputs start at :math:`\mathcal N(0.05, 0.01^2)` noise and, for data in
    :math:`[0, 1]` (Bernoulli likelihoods), are clipped to that range by a hardtanh; ``bounds=None`` leaves
    them unconstrained. (In ``github.com/jmtomczak/vae_vampprior``, ``utils/load_data.py`` sets mean 0.05 and
    standard deviation 0.01 for every data set, over ``experiment.py``'s default mean of -0.05, unless
    ``--use_training_data_init`` starts them at training images; ``add_pseudoinputs`` in ``models/Model.py``
    clips them with ``nn.Hardtanh(0, 1)``.) The authors' code produces the pseudo-inputs as a bias-free linear
    layer applied to the :math:`K \times K` identity matrix (its "idle input"), whose output is its
    :math:`D \times K` weight matrix transposed: the same function class and the same :math:`K D` parameters
    as the ``(K, *event_shape)`` parameter here, which is kept because it is simpler and spares a
    :math:`K \times K` matrix product. Like their hardtanh, the clip passes no gradient to a pseudo-input
    pixel outside ``bounds``.

    :param encoder: the module of :math:`q_\phi(z \mid x)`.
    :param event_shape: shape of one data point (of one pseudo-input).
    :param num_components: the number :math:`K` of pseudo-inputs (500 in the paper).
    :param bounds: the range ``(low, high)`` the pseudo-inputs are clipped to, or ``None``.
    :param init_mean: the mean of the normal distribution the pseudo-inputs start from.
    :param init_std: its standard deviation.
    """

    name = "vamp"

    def __init__(
        self,
        encoder: nn.Module,
        event_shape: Sequence[int],
        num_components: int = 500,
        bounds: tuple[float, float] | None = (0.0, 1.0),
        init_mean: float = 0.05,
        init_std: float = 0.01,
    ):
        super().__init__()
        self.encoder = encoder
        self.bounds = bounds
        self.pseudo_inputs = nn.Parameter(init_mean + init_std * torch.randn(num_components, *event_shape))
        self.register_buffer("logits", torch.zeros(num_components))

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs :math:`u_k`, ``(K, *event_shape)``, clipped to ``bounds``."""
        return self.pseudo_inputs if self.bounds is None else F.hardtanh(self.pseudo_inputs, *self.bounds)

    def forward(self, batch_shape: torch.Size | tuple[int, ...]) -> DiagonalNormalMixture:
        loc, scale = self.encoder(self.inputs())
        return DiagonalNormalMixture(self.logits, loc, scale, batch_shape)


#: the names :func:`prior` accepts
PRIORS = ("normal", "learnable-normal", "mixture", "vamp")
#: the default number of components of each mixture prior
DEFAULT_COMPONENTS = {"mixture": 10, "vamp": 500}


def prior(
    name: str,
    latent_dim: int,
    *,
    num_components: int | None = None,
    encoder: nn.Module | None = None,
    event_shape: Sequence[int] | None = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> nn.Module:
    """The prior called ``name``: one of :data:`PRIORS`.

    :param num_components: components of ``"mixture"`` and pseudo-inputs of ``"vamp"`` (default
        :data:`DEFAULT_COMPONENTS`); only those two priors take it.
    :param encoder: the encoder of :math:`q(z \\mid x)`, for ``"vamp"`` (see :class:`VampPrior`).
    :param event_shape: the data's shape, for ``"vamp"``.
    :param bounds: the range of the pseudo-inputs, for ``"vamp"``.
    """
    if name not in PRIORS:
        raise unknown_name("prior", name, PRIORS)
    if num_components is not None and name not in DEFAULT_COMPONENTS:
        raise ConfigError(
            f"the {name!r} prior has no components; num_components (--prior-components) applies to "
            f"the priors {', '.join(DEFAULT_COMPONENTS)} only"
        )
    k = DEFAULT_COMPONENTS.get(name) if num_components is None else num_components
    if k is not None and k < 1:
        raise ConfigError(f"a {name!r} prior needs at least one component; got num_components={k}")
    if name in ("normal", "learnable-normal"):
        return StandardNormal(latent_dim) if name == "normal" else LearnableNormal(latent_dim)
    if name == "mixture":
        return GaussianMixture(latent_dim, k)
    if encoder is None or event_shape is None:
        raise ConfigError("the 'vamp' prior needs the model's encoder and the data's event_shape")
    return VampPrior(encoder, event_shape, k, bounds)


__all__ = [
    "DEFAULT_COMPONENTS",
    "PRIORS",
    "DiagonalNormalMixture",
    "GaussianMixture",
    "LearnableNormal",
    "StandardNormal",
    "VampPrior",
    "prior",
]
