"""Encoder and decoder networks.

Networks are plain :class:`torch.nn.Module` s that know nothing of Pyro: an encoder maps a batch
of data ``(B, *event_shape)`` to the location and scale of a diagonal Gaussian over the latent
``(B, latent_dim)``; a decoder maps latents ``(..., latent_dim)`` to the parameters of the
likelihood, one per data dimension, ``(..., *event_shape)``. Decoders accept any number of
leading batch dimensions (particles, data points), which is what vectorized evaluation needs.

Three families, by name (:data:`NETWORKS`, :func:`networks`): ``"mlp"`` (fully connected layers of any sizes
and activation), ``"conv"`` (two stride-2 convolutions, for images) and ``"gated"``, the networks of the
VampPrior paper (Tomczak & Welling 2018): :class:`GatedDense` layers, an encoder whose log-variance is clamped
to :data:`LOG_VAR_RANGE`, and He-initialized weights, as in the authors' code
(``github.com/jmtomczak/vae_vampprior``: ``utils/nn.py``, ``models/VAE.py``, ``models/HVAE_2level.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.errors import ConfigError, unknown_name

#: the nonlinearities between layers, by name
ACTIVATIONS = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky-relu": nn.LeakyReLU,
}
#: the network families :func:`networks` builds
NETWORKS = ("mlp", "conv", "gated")
#: the range ``(low, high)`` the ``"gated"`` networks clamp a Gaussian's log-variance to
LOG_VAR_RANGE = (-6.0, 2.0)


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise unknown_name("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], act: str) -> nn.Sequential:
    """Linear layers of the given ``sizes`` with ``act`` between them (none after the last)."""
    linears = [nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]
    hidden = [module for linear in linears[:-1] for module in (linear, activation(act))]
    return nn.Sequential(*hidden, *linears[-1:])


class GaussianHead(nn.Module):
    """Maps features to the location and (positive) scale of a diagonal Gaussian."""

    def __init__(self, in_features: int, latent_dim: int):
        super().__init__()
        self.loc = nn.Linear(in_features, latent_dim)
        self.log_scale = nn.Linear(in_features, latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(h), torch.exp(self.log_scale(h))


class MLPEncoder(nn.Module):
    """``x -> (loc, scale)`` through fully connected layers of sizes ``hidden``."""

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], act: str):
        super().__init__()
        self.event_dim = len(event_shape)
        sizes = [math.prod(event_shape), *hidden]
        self.body = nn.Sequential(mlp(sizes, act), activation(act)) if hidden else nn.Identity()
        self.head = GaussianHead(sizes[-1], latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x.flatten(-self.event_dim)))


class MLPDecoder(nn.Module):
    """``z -> likelihood parameters`` through fully connected layers of sizes ``hidden`` (reversed)."""

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], act: str):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.net = mlp([latent_dim, *reversed(hidden), math.prod(event_shape)], act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.event_shape)


def _conv_shape(event_shape: Sequence[int], hidden: Sequence[int]) -> tuple[int, int, int, int]:
    """The channels, height and width of image-shaped data, and the width of the dense layer."""
    if len(event_shape) != 3 or event_shape[1] % 4 or event_shape[2] % 4:
        raise ConfigError(
            f"network='conv' needs image-shaped data (channels, height, width) with height and width "
            f"divisible by 4; got event shape {tuple(event_shape)}. Use network='mlp' for this data."
        )
    return (*event_shape, hidden[0] if hidden else 256)  # type: ignore[return-value]


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (32 and 64 channels), then a dense layer of ``hidden[0]`` units."""

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], act: str):
        super().__init__()
        c, h, w, width = _conv_shape(event_shape, hidden)
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 4, stride=2, padding=1),
            activation(act),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            activation(act),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), width),
            activation(act),
        )
        self.head = GaussianHead(width, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[:-3]
        return tuple(t.reshape(*batch, -1) for t in self.head(self.body(x.reshape(-1, *x.shape[-3:]))))


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: dense layers, then two stride-2 transposed convolutions."""

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], act: str):
        super().__init__()
        c, h, w, width = _conv_shape(event_shape, hidden)
        self.event_shape = (c, h, w)
        self.body = nn.Sequential(
            nn.Linear(latent_dim, width),
            activation(act),
            nn.Linear(width, 64 * (h // 4) * (w // 4)),
            activation(act),
            nn.Unflatten(-1, (64, h // 4, w // 4)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            activation(act),
            nn.ConvTranspose2d(32, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        return self.body(z.reshape(-1, z.shape[-1])).reshape(*batch, *self.event_shape)


class JointLinear(nn.Module):
    r"""A linear layer on the concatenation of several inputs, :math:`W [a; b] + c = W_a a + W_b b + c`.

    Written as a sum of one linear map per input, so that inputs with different leading
    (batch) dimensions broadcast: the map of an enumerated label of shape ``(C, 1, d)`` is added
    to that of a batch of data ``(B, D)`` without repeating the data ``C`` times.
    """

    def __init__(self, in_features: Sequence[int], out_features: int):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(n, out_features, bias=i == 0) for i, n in enumerate(in_features))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return sum(layer(x) for layer, x in zip(self.maps, inputs, strict=True))


class ConditionalMLPEncoder(nn.Module):
    """``(x, c) -> (loc, scale)`` of :math:`q(z \\mid x, c)`: an :class:`MLPEncoder` whose first layer
    reads the flattened ``x`` and a condition vector ``c`` of ``cond_dim`` features, which broadcast."""

    def __init__(
        self, event_shape: Sequence[int], cond_dim: int, latent_dim: int, hidden: Sequence[int], act: str
    ):
        super().__init__()
        if not hidden:
            raise ConfigError("a conditional encoder needs at least one hidden layer (hidden=(400,))")
        self.event_dim = len(event_shape)
        self.first = JointLinear([math.prod(event_shape), cond_dim], hidden[0])
        self.body = nn.Sequential(
            activation(act), *([mlp(hidden, act), activation(act)] if hidden[1:] else [])
        )
        self.head = GaussianHead(hidden[-1], latent_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(self.first(x.flatten(-self.event_dim), c)))


class ConditionalMLPDecoder(nn.Module):
    """``(z, c) -> likelihood parameters`` of :math:`p(x \\mid z, c)`: an :class:`MLPDecoder` whose
    first layer reads ``z`` and a condition vector ``c`` of ``cond_dim`` features, which broadcast."""

    def __init__(
        self, event_shape: Sequence[int], cond_dim: int, latent_dim: int, hidden: Sequence[int], act: str
    ):
        super().__init__()
        self.event_shape = tuple(event_shape)
        sizes = [*reversed(hidden), math.prod(event_shape)]
        self.first = JointLinear([latent_dim, cond_dim], sizes[0])
        self.rest = nn.Sequential(activation(act), mlp(sizes, act)) if hidden else nn.Identity()

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(z, c)).unflatten(-1, self.event_shape)


class GatedDense(nn.Module):
    r"""A gated dense layer, :math:`h = (W_1 x + b_1) \odot \sigma(W_2 x + b_2)` (Dauphin et al.
    2017), the VampPrior paper's elementwise nonlinearity: no activation on the first branch, as
    the authors' ``GatedDense`` is used throughout (``activation=None``).

    Its parameters are two linear maps: :math:`2\,(n_\text{in} n_\text{out} + n_\text{out})`.
    Leading batch dimensions pass through.

    Reference: Y. N. Dauphin, A. Fan, M. Auli and D. Grangier (2017), "Language Modeling with Gated
    Convolutional Networks", ICML.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.h = nn.Linear(in_features, out_features)
        self.g = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


def gated(sizes: Sequence[int]) -> nn.Module:
    """:class:`GatedDense` layers of the given ``sizes``, one after the other (the gates are the
    nonlinearity); the identity for a single size."""
    layers = [GatedDense(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]
    return nn.Sequential(*layers) if layers else nn.Identity()


def he_init(module: nn.Module) -> None:
    r"""Draw the weights of every linear layer of ``module`` from :math:`\mathcal N(0, 2/n_\text{in})`
    (He et al. 2015), as the VampPrior code does for all of its networks (``he_init`` in its
    ``utils/nn.py``); biases keep torch's default.

    Reference: K. He, X. Zhang, S. Ren and J. Sun (2015), "Delving Deep into Rectifiers", ICCV.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / layer.in_features))


class ClampedGaussianHead(nn.Module):
    r"""Maps features :math:`h` to the location and scale of a diagonal Gaussian whose
    log-variance is clamped, as in the VampPrior code:

    .. math:: \mu = W_\mu h + b_\mu, \qquad \log\sigma^2 = \operatorname{hardtanh}(W_v h + b_v;\,
              -6, 2), \qquad \sigma = \exp(\tfrac12 \log\sigma^2) \in [e^{-3}, e].

    The clamp (:data:`LOG_VAR_RANGE`) keeps the scale away from 0 and infinity; like the authors'
    ``nn.Hardtanh``, it passes no gradient where it is active.
    """

    def __init__(self, in_features: int, latent_dim: int):
        super().__init__()
        self.loc = nn.Linear(in_features, latent_dim)
        self.log_var = nn.Linear(in_features, latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_var = F.hardtanh(self.log_var(h), *LOG_VAR_RANGE)
        return self.loc(h), torch.exp(0.5 * log_var)


class GatedEncoder(nn.Module):
    r"""``x -> (loc, scale)`` through :class:`GatedDense` layers of sizes ``hidden`` and a
    :class:`ClampedGaussianHead`: the VampPrior paper's :math:`q(z \mid x)` (``hidden=(300, 300)``),
    and, applied to :math:`z_2`, its :math:`p(z_1 \mid z_2)`. Weights He-initialized (:func:`he_init`)."""

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.event_dim = len(event_shape)
        sizes = [math.prod(event_shape), *hidden]
        self.body = gated(sizes)
        self.head = ClampedGaussianHead(sizes[-1], latent_dim)
        he_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x.flatten(-self.event_dim)))


class GatedDecoder(nn.Module):
    r"""``z -> likelihood parameters`` through :class:`GatedDense` layers of sizes ``hidden``
    (reversed) and a linear output layer: the VampPrior paper's :math:`p(x \mid z)`.

    The authors' decoder ends in a sigmoid, the Bernoulli means; here the output layer gives the
    likelihood's parameters, the logits of a Bernoulli likelihood, which is the same model (see
    :mod:`pyrovae.models.likelihoods`). Weights He-initialized (:func:`he_init`)."""

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.event_shape = tuple(event_shape)
        sizes = [latent_dim, *reversed(hidden)]
        self.body = gated(sizes)
        self.out = nn.Linear(sizes[-1], math.prod(event_shape))
        he_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z)).unflatten(-1, self.event_shape)


def _joined(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The concatenation ``[a; b]`` of two feature vectors whose leading (batch) dimensions broadcast."""
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*batch, -1), b.expand(*batch, -1)], -1)


class ConditionalGatedEncoder(nn.Module):
    r"""``(x, c) -> (loc, scale)`` of :math:`q(z \mid x, c)` as in the VampPrior paper's
    :math:`q(z_1 \mid x, z_2)` (``q_z1`` of its ``models/HVAE_2level.py``): ``x`` and ``c`` each
    pass a :class:`GatedDense` layer of ``hidden[0]`` units of its own, their concatenation the
    gated layers ``2 * hidden[0] -> hidden[1] -> ...``, then a :class:`ClampedGaussianHead`.

    With ``hidden=(300, 300)``: :math:`784 \to 300` and :math:`\dim c \to 300`, then
    :math:`600 \to 300`, the authors' layers. ``x`` and ``c`` broadcast (a batch of data against
    particles of ``c``); ``x``'s branch is computed once. Weights He-initialized (:func:`he_init`).
    """

    def __init__(self, event_shape: Sequence[int], cond_dim: int, latent_dim: int, hidden: Sequence[int]):
        super().__init__()
        if not hidden:
            raise ConfigError("a conditional encoder needs at least one hidden layer (hidden=(300, 300))")
        self.event_dim = len(event_shape)
        self.x_branch = GatedDense(math.prod(event_shape), hidden[0])
        self.c_branch = GatedDense(cond_dim, hidden[0])
        sizes = [2 * hidden[0], *hidden[1:]]
        self.joint = gated(sizes)
        self.head = ClampedGaussianHead(sizes[-1], latent_dim)
        he_init(self)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = _joined(self.x_branch(x.flatten(-self.event_dim)), self.c_branch(c))
        return self.head(self.joint(h))


class ConditionalGatedDecoder(nn.Module):
    r"""``(z, c) -> likelihood parameters`` of :math:`p(x \mid z, c)` as in the VampPrior paper's
    :math:`p(x \mid z_1, z_2)` (``p_x`` of its ``models/HVAE_2level.py``): ``z`` and ``c`` each pass
    a :class:`GatedDense` layer of ``hidden[-1]`` units of its own, their concatenation the gated
    layers of the remaining sizes of ``hidden`` reversed (from ``2 * hidden[-1]``), then a linear
    output layer (logits for a Bernoulli likelihood, where the authors' code has a sigmoid).

    With ``hidden=(300, 300)``: :math:`\dim z \to 300` and :math:`\dim c \to 300`, then
    :math:`600 \to 300`, then :math:`300 \to 784`, the authors' layers. ``z`` and ``c``
    broadcast. Weights He-initialized (:func:`he_init`).
    """

    def __init__(self, event_shape: Sequence[int], cond_dim: int, latent_dim: int, hidden: Sequence[int]):
        super().__init__()
        if not hidden:
            raise ConfigError("a conditional decoder needs at least one hidden layer (hidden=(300, 300))")
        self.event_shape = tuple(event_shape)
        widths = list(reversed(hidden))
        self.z_branch = GatedDense(latent_dim, widths[0])
        self.c_branch = GatedDense(cond_dim, widths[0])
        sizes = [2 * widths[0], *widths[1:]]
        self.joint = gated(sizes)
        self.out = nn.Linear(sizes[-1], math.prod(event_shape))
        he_init(self)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = _joined(self.z_branch(z), self.c_branch(c))
        return self.out(self.joint(h)).unflatten(-1, self.event_shape)


def networks(
    network: str, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], act: str
) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of the named ``network`` family: ``"mlp"``, ``"conv"`` or ``"gated"``
    (whose gates are its nonlinearity: ``act`` is checked but not used)."""
    activation(act)  # an unknown name is an error even where no layer uses it (hidden=())
    if network == "gated":
        return GatedEncoder(event_shape, latent_dim, hidden), GatedDecoder(event_shape, latent_dim, hidden)
    if network not in NETWORKS:
        raise unknown_name("network", network, NETWORKS)
    encoder, decoder = (MLPEncoder, MLPDecoder) if network == "mlp" else (ConvEncoder, ConvDecoder)
    return encoder(event_shape, latent_dim, hidden, act), decoder(event_shape, latent_dim, hidden, act)


__all__ = [
    "ACTIVATIONS",
    "LOG_VAR_RANGE",
    "NETWORKS",
    "ClampedGaussianHead",
    "ConditionalGatedDecoder",
    "ConditionalGatedEncoder",
    "ConditionalMLPDecoder",
    "ConditionalMLPEncoder",
    "ConvDecoder",
    "ConvEncoder",
    "GatedDecoder",
    "GatedDense",
    "GatedEncoder",
    "JointLinear",
    "MLPDecoder",
    "MLPEncoder",
    "networks",
]
