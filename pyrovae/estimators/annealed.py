"""β-weighted latents around any estimator: the β-VAE, KL annealing, the β-IWAE."""

from __future__ import annotations

import math

import torch
from pyro.infer import ELBO

from pyrovae.errors import ConfigError
from pyrovae.estimators.base import DifferentiableELBO
from pyrovae.handlers import scale_latents

__all__ = ["KLAnnealed"]


class KLAnnealed(DifferentiableELBO):
    r"""Any estimator with the log-density of every latent site scaled by :math:`\beta`.

    For the ELBO this is :math:`\mathbb{E}_q[\log p(x \mid z)] - \beta\,\mathrm{KL}(q \,\|\, p)`, the
    β-VAE (Higgins et al. 2017) and, with :math:`\beta` raised to 1 over training, KL annealing
    (Bowman et al. 2016; Sønderby et al. 2016). For the importance-weighted estimators the weights
    become :math:`\log w = \log p(x \mid z) + \beta(\log p(z) - \log q(z \mid x))`, the β-IWAE. At
    :math:`\beta = 1` it is ``base``; at :math:`\beta = 0` only the likelihood term is left.
    It applies :class:`~pyrovae.handlers.LatentScaleMessenger` around ``base``.

    :param base: an estimator (name or :class:`~pyro.infer.ELBO`).
    :param float beta: the weight :math:`\beta \ge 0` of the latent (KL) part.
    """

    def __init__(self, base: str | ELBO, beta: float):
        if not (math.isfinite(beta) and beta >= 0):
            raise ConfigError(f"beta, the weight of the KL part, must be a finite number >= 0; got {beta!r}")
        from pyrovae.estimators.registry import estimator  # (the registry imports this module)

        self.base = estimator(base)
        self.beta = float(beta)
        super().__init__(
            num_particles=self.base.num_particles, vectorize_particles=self.base.vectorize_particles
        )

    def _get_trace(self, model, guide, args, kwargs):
        with scale_latents(beta=self.beta):
            return self.base._get_trace(model, guide, args, kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        r"""``base``'s loss, a float, with every latent site's log-density scaled by :math:`\beta`.

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        with scale_latents(beta=self.beta):
            return self.base.loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        r"""``base``'s differentiable loss, with every latent site's log-density scaled by :math:`\beta`.

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        with scale_latents(beta=self.beta):
            return self.base.differentiable_loss(model, guide, *args, **kwargs)
