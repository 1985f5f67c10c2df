"""ELBO estimators, built by name.

Every estimator is a :class:`pyro.infer.ELBO` with ``loss`` and ``differentiable_loss``, so
:func:`pyrovae.fit`, ``ELBO(model, guide)`` modules and data-parallel wrappers accept it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import site_is_subsample

from .errors import ConfigError, unknown_name


def _log_prob_sum(trace) -> torch.Tensor:
    """The scaled log-density summed over a trace's sample sites (plates' subsample sites excluded)."""
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            total = (
                total + scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"]).sum()
            )
    return total


class TraceELBO(Trace_ELBO):
    r"""Pyro's :class:`~pyro.infer.Trace_ELBO`, with a lean path for reparameterized guides.

    .. math:: \mathcal{L} = \mathbb{E}_{q(z\mid x)}\big[\log p(x, z) - \log q(z \mid x)\big]

    With one particle, Pyro's validation off and every guide site reparameterizable, the
    surrogate loss is just :math:`-(\log p(x, z) - \log q(z \mid x))` at the sampled
    :math:`z` (Kingma & Welling 2014), so the bookkeeping for score-function terms (Ranganath et
    al. 2014) is skipped. The value and gradient are Pyro's; every other case is Pyro's code.
    """

    def _lean_traces(self, model, guide, args, kwargs):
        if self.num_particles != 1 or is_validation_enabled():
            return None
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs):
        traces = self._lean_traces(model, guide, args, kwargs)
        if traces is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        model_trace, guide_trace = traces
        reparameterized = all(
            site["fn"].has_rsample and not site["infer"].get("enumerate")
            for site in guide_trace.nodes.values()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        )
        if reparameterized:
            return _log_prob_sum(guide_trace) - _log_prob_sum(model_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        loss, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
        return loss + (surrogate - torch_item(surrogate))

    def loss(self, model, guide, *args, **kwargs):
        traces = self._lean_traces(model, guide, args, kwargs)
        if traces is None:
            return super().loss(model, guide, *args, **kwargs)
        model_trace, guide_trace = traces
        with torch.no_grad():
            return torch_item(_log_prob_sum(guide_trace) - _log_prob_sum(model_trace))


#: name -> (factory, the keyword arguments it accepts)
ESTIMATORS: dict[str, tuple[Callable[..., ELBO], tuple[str, ...]]] = {
    "elbo": (TraceELBO, ("num_particles", "vectorize_particles")),
    "elbo-analytic-kl": (TraceMeanField_ELBO, ("num_particles", "vectorize_particles")),
}


def estimator(name: str | ELBO, **kwargs) -> ELBO:
    """Build the estimator called ``name`` (see :data:`ESTIMATORS`) with ``kwargs``.

    An :class:`~pyro.infer.ELBO` instance is returned unchanged. Each estimator sees the data
    plate's size through ``max_plate_nesting=1`` unless given.
    """
    if isinstance(name, ELBO):
        if kwargs:
            raise ConfigError(
                "options were given together with an estimator instance; set them on the instance"
            )
        return name
    if name not in ESTIMATORS:
        raise unknown_name("estimator", name, ESTIMATORS)
    factory, accepted = ESTIMATORS[name]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"estimator {name!r} takes no option {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        )
    return factory(**kwargs)
