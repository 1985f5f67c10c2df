r"""The IWAE bound at detached latents: what score-function and wake-sleep estimators differentiate.

:class:`IWAE` and its reparameterized relatives differentiate the log-weights through the samples
:math:`z_i = z(\epsilon_i, \phi)`, which discrete latents do not have. The estimators built on
:class:`DetachedIWAE` (:class:`~pyrovae.estimators.VIMCO`, :class:`~pyrovae.estimators.RWS`) treat
every latent value as a constant and differentiate only the densities at it, so they serve any
latent the guide *samples*: Bernoulli and Categorical ones, continuous ones without ``rsample``,
and reparameterizable ones too (whose pathwise gradient they then forgo).
"""

from __future__ import annotations

from numbers import Number
from typing import Any, NamedTuple

import torch

from pyrovae.errors import ConfigError
from pyrovae.estimators.iwae import IWAE, data_scale
from pyrovae.infer.pair import log_density, site_log_density
from pyrovae.infer.sites import latents, scored_sites

__all__ = ["DetachedIWAE", "WeightTerms"]


class WeightTerms(NamedTuple):
    r"""The ``(k, B)`` terms of the log-weights at detached latents (see :class:`DetachedIWAE`)."""

    #: :math:`\log p(x_n, z_i)`, each site scaled relative to the data scale (as in :class:`IWAE`)
    log_p: torch.Tensor
    #: :math:`\log q(z_i \mid x_n)` scaled likewise: ``log_p - log_q`` are the log-weights
    log_q: torch.Tensor
    #: :math:`\log q(z_i \mid x_n)` unscaled (masks applied): the density the draws came from,
    #: whose gradient is the score function
    log_q_sampled: torch.Tensor
    #: the data scale :math:`s` (the minibatch scale :math:`N/B`)
    scale: Any

    @property
    def log_w(self) -> torch.Tensor:
        """The log-weights :math:`\\log w_i = \\log p(x_n, z_i) - \\log q(z_i \\mid x_n)`."""
        return self.log_p - self.log_q


class DetachedIWAE(IWAE):
    r"""The IWAE-:math:`k` bound of :class:`IWAE`, with every latent value a constant.

    For each data point :math:`x_n`, :math:`k` draws :math:`z_1, \dots, z_k \sim q(\cdot \mid x_n)` are
    detached (:math:`\bar z_i`, no gradient flows through a sample), the model is replayed against them, and
    the guide too where it has several latent sites (so that a later site's density does not depend on an
    earlier draw through its path). :meth:`weight_terms` returns, per particle and data point,
    :math:`\log p(x_n, \bar z_i)`, :math:`\log q(\bar z_i \mid x_n)` and the log-weights :math:`\log w_i =
    \log p(x_n, \bar z_i) - \log q(\bar z_i \mid x_n)`, whose log-mean-exp is the bound

    .. math:: \hat{\mathcal L}_k(x_n) = \log \frac1k \sum_{i=1}^k w_i,

    with ``loss`` :math:`-s \sum_n \hat{\mathcal L}_k(x_n)`, as :class:`IWAE`'s. Its gradient at fixed
    :math:`\bar z` is :math:`\sum_i \tilde w_i \nabla \log w_i`, :math:`\tilde w_i = w_i / \sum_j w_j`: the
    model's IWAE gradient, but not the guide's, which needs the score-function terms :math:`\nabla_\phi \log
    q_\phi(\bar z_i \mid x_n)` of the distribution the draws came from; the subclasses add them (or replace
    the guide's gradient). This class has no ``differentiable_loss`` of its own.

    **Site scales.** As in :class:`IWAE` (so β of :class:`KLAnnealed` gives the β-IWAE weights); the score
    terms use the *unscaled* density :math:`\log q(\bar z_i \mid x_n)` (masks applied), the density the draws
    were made from, which is what the gradient of the expectation of a β-weighted bound calls for.

    **Requirements.** Those of :class:`IWAE`, except that latents need not be reparameterized; discrete
    latents must be sampled by the guide, not enumerated (a :class:`~pyrovae.ConfigError` says so).

    :param int k: the number of particles :math:`k` per data point, at least ``min_particles``.
    :param str data_plate: the name of the data plate.
    """

    name = "detached-iwae"
    reparameterized = False
    #: the fewest particles the estimator is defined for
    min_particles = 1

    def __init__(self, k: int = 5, *, data_plate: str | None = None):
        super().__init__(k, data_plate=data_plate)
        if k < self.min_particles:
            raise ConfigError(
                f"the {self.name!r} estimator needs at least {self.min_particles} particles per data "
                f"point, k >= {self.min_particles}; got k = {k}"
            )

    def _get_trace(self, model, guide, args, kwargs):
        """The guide's particles, detached, and the model (and where needed the guide) replayed on them."""
        pair = self.probe(model, guide, args, kwargs)
        if pair.enumerated:
            raise ConfigError(
                f"the {self.name!r} estimator samples every latent, but site {pair.enumerated[0]!r} is "
                "marked infer={'enumerate': 'parallel'}: drop the mark to sample it, or use 'enum', "
                "which sums it out"
            )
        values = {}

        def detached(guide_trace):
            values.update({name: value.detach() for name, value in latents(guide_trace).items()})
            return values

        model_trace, guide_trace = pair.traces(args, kwargs, self.num_particles, replace=detached)
        if len(values) > 1 and any(value.requires_grad for value in latents(guide_trace).values()):
            guide_trace = pair.replay(guide, values, guide_trace, args, kwargs, self.num_particles)
        else:  # one latent site, or none carries a gradient: the densities are the traced ones
            for name, value in values.items():
                guide_trace.nodes[name]["value"] = value
        self._check(model_trace, guide_trace)
        return model_trace, guide_trace

    def weight_terms(self, model, guide, args: tuple, kwargs: dict) -> WeightTerms:
        """The ``(k, B)`` :class:`WeightTerms` of ``k`` fresh draws per data point.

        :param model: the Pyro model.
        :param guide: the guide.
        :param tuple args: the positional arguments of both, the data first (its leading dimension
            indexes the data points).
        :param dict kwargs: their keyword arguments.
        """
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        scale, shape = data_scale(model_trace), self._shape(model_trace)
        dims = (self._pair.particle_dim, self._pair.data_plate, shape)
        log_p = log_density(model_trace, *dims, scale=scale)
        log_q = log_q_sampled = torch.zeros(())
        for _, site in scored_sites(guide_trace):
            sampled = site_log_density(site, *dims)
            ratio = site["scale"] / scale
            unit = isinstance(ratio, Number) and ratio == 1
            scaled = sampled if unit else site_log_density(site, *dims, scale=scale)
            log_q, log_q_sampled = log_q + scaled, log_q_sampled + sampled
        return WeightTerms(log_p, log_q.expand(shape), log_q_sampled.expand(shape), scale)

    def _log_weights(self, model, guide, args, kwargs, differentiable: bool, traces=None):
        """The log-weights and data scale of :meth:`weight_terms`, which :meth:`IWAE.loss` reads."""
        terms = self.weight_terms(model, guide, args, kwargs)
        return terms.log_w, terms.scale

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is a base class: use VIMCO or RWS")
