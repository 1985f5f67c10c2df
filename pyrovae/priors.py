r"""Priors :math:`p(z)` over the latent code.

A prior is a module whose ``forward(batch_shape)`` returns a distribution over
``latent_dim``-vectors (event dimension 1) with the given batch shape. Swapping the prior of a
:class:`~pyrovae.VAE` changes nothing else: training, estimators and evaluation only see the
``"z"`` sample site.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from .errors import unknown_name


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


PRIORS = ("normal",)


def prior(name: str, latent_dim: int) -> nn.Module:
    """The prior called ``name``: one of :data:`PRIORS`."""
    if name == "normal":
        return StandardNormal(latent_dim)
    raise unknown_name("prior", name, PRIORS)
