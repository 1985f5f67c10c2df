r"""The KL divergence :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z))` of a latent site from its prior per data
point (analytic where a closed form is registered, else Monte Carlo at the guide's draw; per dimension where
both factorize), and the split of its mean over the data through the aggregate posterior :math:`q(z) =
\frac1N \sum_n q(z \mid x_n)` into the index-code mutual information and the marginal KL (Hoffman & Johnson
2016; :func:`aggregate_terms`), for :func:`~pyrovae.analysis.latent_usage.latent_stats`.
"""

from __future__ import annotations

import math

import pyro.poutine as poutine
import torch
from pyro.distributions import Independent

from pyrovae import distributed
from pyrovae.infer import Chunk, Sweep
from pyrovae.infer.importance import LogWeights
from pyrovae.infer.pair import kl_divergence, reduce_site, site_log_density

__all__ = ["PAIRWISE_ELEMENTS", "aggregate_terms", "elementwise_kl", "factors", "site_kl"]

#: elements of one chunk of the :math:`N^2` aggregate-posterior densities
PAIRWISE_ELEMENTS = 1 << 22


def factors(fn):
    """The distribution of ``fn``'s elements (``fn`` with its :class:`Independent` wrappers
    removed) if they are independent, else ``None``."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn if fn.event_shape == torch.Size() else None


def elementwise_kl(q, p, value):
    """Per-element KL of two factorized distributions ``(kl, "analytic" | "monte carlo")``, or
    ``(None, None)`` when either does not factorize."""
    qe, pe = factors(q), factors(p)
    if qe is None or pe is None:
        return None, None
    try:
        return kl_divergence(qe, pe), "analytic"
    except NotImplementedError:
        return qe.log_prob(value) - pe.log_prob(value), "monte carlo"


def site_kl(g, m, pdim, plate, shape):
    """The ``(K, B)`` KL of one site, analytic where known, and the method."""
    try:
        kl = kl_divergence(g["fn"], m["fn"])
    except NotImplementedError:
        lq = site_log_density(g, pdim, plate, shape)
        return lq - site_log_density(m, pdim, plate, shape, value=g["value"]), "monte carlo"
    return reduce_site(kl, g, pdim, plate, shape), "analytic"


def aggregate_terms(weights: LogWeights, name: str, z, lq, lp) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The per-data-point terms :math:`\log q(z_n \mid x_n) - \log q(z_n)` and :math:`\log q(z_n)
    - \log p(z_n)` of site ``name``, from the draws ``z`` ``(N, *event)`` and their densities.

    The aggregate posterior's density :math:`\log q(z_n)` is a sweep over the draws: each rank
    takes one chunk of them and sums its density over every data chunk of ``weights.sweep``
    (:meth:`~pyrovae.infer.Sweep.each`), at most :data:`PAIRWISE_ELEMENTS` pairs at a time."""
    data, pair, kwargs = weights.sweep, weights.pair, weights.model_kwargs
    event = z.shape[1:]

    def log_agg(chunk: Chunk) -> torch.Tensor:
        (draws,) = chunk.args
        out = torch.full((chunk.size,), -math.inf, dtype=torch.float64, device=draws.device)
        for lo, hi, args in data.each():
            with poutine.block():
                fn = poutine.trace(pair.guide).get_trace(*args, **kwargs).nodes[name]["fn"]
            step = max(1, PAIRWISE_ELEMENTS // max(1, (hi - lo) * max(1, event.numel())))
            for zlo in range(0, chunk.size, step):
                lpair = fn.log_prob(draws[zlo : zlo + step].reshape((-1, 1) + event)).double()
                out[zlo : zlo + step] = torch.logaddexp(out[zlo : zlo + step], lpair.logsumexp(-1))
            chunk.advance(hi - lo)
        return out

    # one chunk of draws per rank: each rank traces the guide on the whole data set once
    bar = dict(progress=data.progress, desc=f"aggregate q({name})", work=lambda lo, hi: data.num_data)
    sweep = Sweep(z, math.ceil(data.num_data / distributed.world_size()), device=data.device, **bar)
    log_q = sweep.map(log_agg) - math.log(data.num_data)
    return lq - log_q, log_q - lp
