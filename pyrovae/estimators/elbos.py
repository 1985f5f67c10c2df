"""Pyro's ELBOs by name: the single-sample estimators, score-function terms included."""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceGraph_ELBO, TraceTailAdaptive_ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

__all__ = ["TailAdaptiveELBO", "TraceELBO", "TraceGraphELBO"]


def _site_log_prob_sums(trace) -> list[torch.Tensor]:
    """The summed, scaled log-density of each of a trace's sample sites, in trace order."""
    return [
        scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"]).sum()
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in double precision (where the device has it), as Pyro adds site sums as Python floats."""
    return t if t.device.type == "mps" else t.double()


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
        """The negative ELBO, averaged over the particles, with the gradient of Pyro's surrogate loss:
        by the lean path where the class docstring says it applies, else by Pyro's.

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
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
            surrogate, value = 0.0, 0.0
            for term in _site_log_prob_sums(model_trace):
                surrogate, value = surrogate + term, value + _wide(term.detach())
            for term in _site_log_prob_sums(guide_trace):
                surrogate, value = surrogate - term, value - _wide(term.detach())
            # Pyro's value (the site sums added in double precision, rounded once) with the
            # surrogate's gradient; no item() calls, so no device synchronization
            return (-value).to(surrogate.dtype) - (surrogate - surrogate.detach())
        # as Pyro's get_importance_trace: without the plates' subsample sites, which the score
        # function terms' plate bookkeeping does not expect
        model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        loss, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
        return loss + (surrogate - torch_item(surrogate))

    def loss(self, model, guide, *args, **kwargs):
        """The negative ELBO, averaged over the particles, a float.

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        traces = self._lean_traces(model, guide, args, kwargs)
        if traces is None:
            return super().loss(model, guide, *args, **kwargs)
        model_trace, guide_trace = traces
        with torch.no_grad():
            # as Pyro: the two sums over sites, subtracted in double precision
            log_q, log_p = (sum(_site_log_prob_sums(trace), 0.0) for trace in (guide_trace, model_trace))
            return torch_item(_wide(log_q) - _wide(log_p))


class TraceGraphELBO(TraceGraph_ELBO):
    """Pyro's :class:`~pyro.infer.TraceGraph_ELBO` (Schulman et al. 2015; Mnih & Gregor 2014), with a
    ``differentiable_loss``: the negative ELBO as its value and the gradient of Pyro's surrogate loss
    (score-function terms with only the downstream costs, and baselines if the guide declares them)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The negative ELBO, with the gradient of Pyro's surrogate loss (see the class docstring).

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return -elbo.detach() + (surrogate_loss - surrogate_loss.detach())


class TailAdaptiveELBO(TraceTailAdaptive_ELBO):
    r"""Pyro's :class:`~pyro.infer.TraceTailAdaptive_ELBO`: the tail-adaptive :math:`f`-divergence
    (Wang, Liu & Liu 2018), with ``num_particles`` vectorized particles.

    Its gradient is :math:`-\sum_i \tilde\gamma_i \nabla \log \frac{p(x, z_i)}{q(z_i \mid x)}` with
    :math:`\tilde\gamma_i \propto \mathrm{rank}_i^{\beta}` the normalized rank of particle :math:`i`'s
    weight (``tail_adaptive_beta`` :math:`= \beta`), as in Pyro, where the log-weights are summed over
    the whole batch before ranking. Two differences from Pyro's: the value of ``loss`` and
    ``differentiable_loss`` is the negative ELBO averaged over the particles (Pyro has none, which
    would stop training as a non-finite loss); and the gradient is Wang et al.'s, ``num_particles``
    times Pyro's, which divides the already normalized weights by the number of particles once more.

    :param int num_particles: the number of particles, vectorized (with one, the gradient is the ELBO's,
        as Pyro warns).
    :param float tail_adaptive_beta: the exponent :math:`\beta` of the ranks, :math:`-1 \le \beta < 0`
        (default -1, Pyro's).
    """

    def __init__(self, num_particles: int = 5, tail_adaptive_beta: float = -1.0):
        super().__init__(
            num_particles=num_particles, vectorize_particles=True, tail_adaptive_beta=tail_adaptive_beta
        )

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The negative ELBO, averaged over the particles, a float (:class:`~pyro.infer.Trace_ELBO`'s).

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        return Trace_ELBO.loss(self, model, guide, *args, **kwargs)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        _, surrogate_loss = super()._differentiable_loss_particle(model_trace, guide_trace)
        elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
        # Trace_ELBO.differentiable_loss divides both by num_particles
        return -torch_item(elbo), self.num_particles * surrogate_loss
