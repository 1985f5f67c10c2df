"""Encoder and decoder networks.

Networks are plain :class:`torch.nn.Module` s that know nothing of Pyro: an encoder maps a batch
of data ``(B, *event_shape)`` to the location and scale of a diagonal Gaussian over the latent
``(B, latent_dim)``; a decoder maps latents ``(..., latent_dim)`` to the parameters of the
likelihood, one per data dimension, ``(..., *event_shape)``. Decoders accept any number of
leading batch dimensions (particles, data points), which is what vectorized evaluation needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .errors import ConfigError, unknown_name

ACTIVATIONS = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky-relu": nn.LeakyReLU,
}
NETWORKS = ("mlp", "conv")


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise unknown_name("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], act: str) -> nn.Sequential:
    """Linear layers of the given ``sizes`` with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


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


def _check_image_shape(event_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(event_shape) != 3 or event_shape[1] % 4 or event_shape[2] % 4:
        raise ConfigError(
            f"network='conv' needs image-shaped data (channels, height, width) with height and width "
            f"divisible by 4; got event shape {tuple(event_shape)}. Use network='mlp' for this data."
        )
    return tuple(event_shape)  # type: ignore[return-value]


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (32 and 64 channels), then a dense layer of ``hidden[0]`` units."""

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], act: str):
        super().__init__()
        c, h, w = _check_image_shape(event_shape)
        width = hidden[0] if hidden else 256
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
        loc, scale = self.head(self.body(x.reshape(-1, *x.shape[-3:])))
        return loc.reshape(*batch, -1), scale.reshape(*batch, -1)


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: dense layers, then two stride-2 transposed convolutions."""

    def __init__(self, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], act: str):
        super().__init__()
        c, h, w = _check_image_shape(event_shape)
        width = hidden[0] if hidden else 256
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
        out = self.maps[0](inputs[0])
        for layer, x in zip(self.maps[1:], inputs[1:], strict=True):
            out = out + layer(x)
        return out


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
        layers = [activation(act)]
        if len(hidden) > 1:
            layers += [mlp(hidden, act), activation(act)]
        self.body = nn.Sequential(*layers)
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


def networks(
    network: str, event_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], act: str
) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of the named ``network`` family (``"mlp"`` or ``"conv"``)."""
    activation(act)  # an unknown name is an error even where no layer uses it (hidden=())
    if network == "mlp":
        return (
            MLPEncoder(event_shape, latent_dim, hidden, act),
            MLPDecoder(event_shape, latent_dim, hidden, act),
        )
    if network == "conv":
        return (
            ConvEncoder(event_shape, latent_dim, hidden, act),
            ConvDecoder(event_shape, latent_dim, hidden, act),
        )
    raise unknown_name("network", network, NETWORKS)


__all__ = [
    "ACTIVATIONS",
    "NETWORKS",
    "ConditionalMLPDecoder",
    "ConditionalMLPEncoder",
    "ConvDecoder",
    "ConvEncoder",
    "JointLinear",
    "MLPDecoder",
    "MLPEncoder",
    "networks",
]
