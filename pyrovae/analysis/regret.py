r"""The likelihood regret of each data point (Xiao et al. 2020), an anomaly score: how much the ELBO of one
input rises when the guide's output for that input alone is optimized (see :func:`likelihood_regret`).

References:

- Z. Xiao, Q. Yan and Y. Amit (2020), "Likelihood Regret: An Out-of-Distribution Detection Score
  For Variational Auto-encoder", NeurIPS.
"""

from __future__ import annotations

import contextlib
import math

import pyro
import pyro.poutine as poutine
import torch
from torch.distributions import transform_to

from pyrovae.errors import ConfigError
from pyrovae.infer import Chunk
from pyrovae.infer.pair import Pair, sweep_pair, trace_pair
from pyrovae.infer.sites import scored_sites
from pyrovae.options import check_options
from pyrovae.seeds import seeded

__all__ = ["likelihood_regret"]


def likelihood_regret(
    model,
    guide,
    data,
    *,
    steps: int = 100,
    lr: float = 1e-2,
    num_particles: int = 8,
    num_samples: int = 100,
    batch_size: int = 100,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    precision: str = "highest",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The likelihood regret of each data point (Xiao et al. 2020): how much the ELBO rises when
    the guide's output for that input alone is optimized,

    .. math:: \mathrm{LR}(x) = \max_{\lambda} \mathcal L(x; q_\lambda) - \mathcal L(x; q_{\phi(x)}),

    where :math:`q_{\phi(x)}` is the trained guide's distribution for :math:`x` and :math:`q_\lambda` the same
    family with free parameters :math:`\lambda`, initialized at :math:`\phi(x)` and improved by ``steps`` Adam
    steps (learning rate ``lr``) on a ``num_particles``-sample ELBO, the model fixed. An input the amortized
    guide serves well has a small regret; an out-of-distribution input, whose posterior the encoder never
    learned, a large one. Xiao et al. re-optimize the encoder's weights per input; optimizing its output, as
    here, is the same idea without copying the network per input, and batches exactly: each data point's
    :math:`\lambda` enters only its own term of the summed ELBO.

    Both bounds are estimated with the same ``num_samples`` draws of the noise, so most of it cancels in the
    difference, whose standard error comes from the per-draw differences; since the starting point is a
    candidate of the maximum, a negative difference (the optimizer's noise) counts as 0.

    **Which pairs qualify**: guides whose latent sites are all reparameterized (``rsample``; discrete
    or non-reparameterized latents are refused) and whose distributions hold the tensor parameters
    they are built from (``Normal``, ``MultivariateNormal``, ``Laplace``, ... possibly
    ``.to_event``; not ``LogNormal`` or ``Beta``, whose parameters are derived), such as every guide
    of pyrovae's models. Each site is replaced by a distribution of the same family with free
    per-datapoint parameters; a guide whose later latents depend on earlier ones (the HVAE's
    :math:`q(z_1 \mid x, z_2)`) gets free parameters for each, without the dependence, started at its
    output for one draw of the earlier latents (both bounds are then of the free family).

    The options ``batch_size``, ``seed``, ``device``, ``progress`` and ``precision`` are those of the pass
    over the data (:class:`~pyrovae.infer.Sweep`, :mod:`pyrovae.precision`).

    :returns: ``(regret, stderr)``, each ``(N,)`` on the CPU.
    """
    options = dict(steps=steps, lr=lr, num_particles=num_particles, num_samples=num_samples)
    check_options(**options, batch_size=batch_size, seed=seed)
    bar, probe = dict(progress=progress, desc="likelihood regret"), {"reparameterized": "likelihood-regret"}
    where = dict(device=device, seed=seed, precision=precision)
    sweep, pair = sweep_pair(model, guide, data, batch_size, probe=probe, **where, **bar)
    return sweep.map(lambda chunk: _regret(model, guide, pair, chunk, **options), grad=True)


def _regret(model, guide, pair: Pair, chunk: Chunk, *, steps, lr, num_particles, num_samples):
    """The regret of each data point of a chunk and its standard error (see :func:`likelihood_regret`)."""
    free_guide, params = _free_guide(guide, chunk.args)
    before = _elbo_weights(model, free_guide, chunk.args, pair, num_samples, chunk.seed)
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = -_log_weights(model, free_guide, chunk.args, pair, num_particles).mean(0).sum()
        for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
            p.grad = g
        optimizer.step()
    after = _elbo_weights(model, free_guide, chunk.args, pair, num_samples, chunk.seed)
    gain = after - before
    stderr = gain.std(0) / math.sqrt(num_samples) if num_samples > 1 else gain[0] * math.nan
    return gain.mean(0).clamp(min=0).double(), stderr.double()


def _log_weights(model, guide, args, pair: Pair, num_particles: int) -> torch.Tensor:
    model_trace, guide_trace = trace_pair(model, guide, args, {}, num_particles, pair.particle_dim)
    return pair.log_weights(model_trace, guide_trace, (num_particles, len(args[0])))


@torch.no_grad()
def _elbo_weights(model, guide, args, pair: Pair, num_samples: int, seed: int) -> torch.Tensor:
    """``(K, B)`` log-weights drawn with ``seed``: their mean over ``K`` estimates the ELBO."""
    with seeded(seed):
        return _log_weights(model, guide, args, pair, num_samples)


def _free_guide(guide, args) -> tuple:
    """A guide drawing each latent of ``guide`` from its family, in its plates, with free parameters:
    per-datapoint unconstrained copies of those of the guide's distributions on ``args``; and the
    free parameters."""
    with torch.no_grad():
        trace = poutine.trace(guide).get_trace(*args)
    # per site: name, family, transforms to its parameters' constraints, free parameters, event dims, plates
    sites, params = [], []
    for name, site in scored_sites(trace):
        if site["is_observed"]:
            continue
        fn, events = site["fn"], 0
        while isinstance(fn, torch.distributions.Independent):
            events += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        transforms = {}
        for a, constraint in fn.arg_constraints.items():
            if torch.is_tensor(vars(fn).get(a)):  # the parameters it holds (not those it would derive)
                with contextlib.suppress(NotImplementedError):
                    transforms[a] = transform_to(constraint)
        held = {a: vars(fn)[a] for a in transforms}
        if not fn.has_rsample or not transforms or not _rebuilds(type(fn), held):
            raise ConfigError(
                f"likelihood regret optimizes the guide's distributions per input, which needs "
                f"reparameterized latents whose tensor parameters it can rebuild them from (Normal, "
                f"MultivariateNormal, ...); site {name!r} is a {type(fn).__name__}"
            )
        batch, free = fn.batch_shape, {}
        for a, v in held.items():  # one copy per data point (parameters may be shared across the batch)
            free[a] = (
                transforms[a].inv(v.detach().expand(batch + v.shape[len(batch) :])).clone().requires_grad_()
            )
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        sites.append((name, type(fn), transforms, free, events, frames))
        params += free.values()

    def free_guide(*args, **kwargs):
        plates = {}  # each plate made once, entered by every site in it
        for name, cls, transforms, free, events, frames in sites:
            fn = cls(**{a: t(free[a]) for a, t in transforms.items()})
            with contextlib.ExitStack() as stack:
                for f in frames:
                    if f.name not in plates:
                        plates[f.name] = pyro.plate(f.name, f.size, dim=f.dim)
                    stack.enter_context(plates[f.name])
                pyro.sample(name, fn.to_event(events) if events else fn)

    return free_guide, params


def _rebuilds(cls, params: dict) -> bool:
    """Whether the family ``cls`` can be built from ``params`` alone."""
    try:
        cls(**params)
    except (TypeError, ValueError):
        return False
    return True
