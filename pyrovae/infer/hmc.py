r"""The annealing path of one chunk of data points, and the HMC transitions that move chains along it.

For a pair and a chunk of data points, :class:`AnnealingPath` holds every continuous latent in one
flat unconstrained state of shape ``(chains, data points, D)`` (constrained sites through
:func:`torch.distributions.biject_to`, with the log-Jacobian) and evaluates, with their gradients,

.. math:: a = \log f_0(z) + \log|J|, \qquad b = \log p(x, z) + \log|J|,

:math:`f_0` the guide (or the prior), so that the potential at inverse temperature :math:`\beta`
is :math:`U_\beta = -((1 - \beta) a + \beta b)`. :func:`hmc_transition` is one HMC step at
:math:`\beta` with a step size per data point (Neal 2011); :func:`anneal` runs the chains along a
schedule of :math:`\beta` and accumulates the AIS log-weights (Neal 2001). Annealed importance
sampling itself, with its schedules and step-size adaptation, is :mod:`pyrovae.infer.annealing`.

References:

- R. M. Neal (2001), "Annealed Importance Sampling", Statistics and Computing 11(2).
- R. M. Neal (2011), "MCMC Using Hamiltonian Dynamics", Handbook of Markov Chain Monte Carlo.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyro.poutine as poutine
import torch
from torch.distributions import biject_to, constraints

from pyrovae.devices import wide_dtype
from pyrovae.errors import ConfigError
from pyrovae.infer.checks import check_support
from pyrovae.infer.pair import Pair, reduce_site, site_log_density
from pyrovae.infer.sites import data_frame, scored_sites

__all__ = ["AnnealingPath", "HMCState", "Latent", "anneal", "hmc_transition"]

# multiplicative step-size update after each transition when adapting (Wu et al. 2017)
ADAPT_UP, ADAPT_DOWN = 1.02, 0.98
# when adapting, a trajectory (leapfrog steps x step size) is kept no longer than this many times the pilot's
# estimate of the target's typical scale: an exponential average, weight SCALE_MEMORY per transition, of the
# median over the coordinates of their standard deviation over the pilot chains. With 4 pilot chains, 3 gave
# the most precise AIS both on PPCA (3 latents) and on the 10-epoch MNIST VAE (50); the smallest deviation
# instead of the median, biased low and noisy over 50 coordinates, more than doubled the spread on MNIST
TRAJECTORY_SCALES, SCALE_MEMORY = 3.0, 0.95


def support_of(fn) -> constraints.Constraint:
    """The support of ``fn``, that of its components for a mixture (``MixtureSameFamily``)."""
    support = fn.support
    while type(support).__name__.lstrip("_") == "MixtureSameFamilyConstraint":
        support = support.base_constraint
    return support


def is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


@dataclass
class Latent:
    """Where one latent site sits in the flat ``(chains, data points, D)`` unconstrained state."""

    name: str
    site: dict  # the model's site, for its plates
    transform: object | None  # None for real-valued sites
    shape: torch.Size  # of the unconstrained value
    perm: tuple[int, ...]  # moves the chain and data dims to the front
    batch_ndim: int
    offset: int
    size: int

    def unflatten(self, flat: torch.Tensor) -> torch.Tensor:
        part = flat[..., self.offset : self.offset + self.size]
        part = part.reshape(torch.Size(self.shape[i] for i in self.perm))
        return part.permute(tuple(np.argsort(self.perm).tolist()))


class AnnealingPath:
    r"""The geometric path from :math:`f_0` to :math:`p(x, z)` for one chunk of data points.

    :meth:`evaluate` returns, per chain and data point, :math:`a = \log f_0(z) + \log|J|` and
    :math:`b = \log p(x, z) + \log|J|` at unconstrained :math:`u` (:math:`z` = biject_to(u),
    :math:`J` its Jacobian) with their gradients, so that the potential at any :math:`\beta` is
    :math:`U_\beta = -((1 - \beta) a + \beta b)` and the AIS increment uses :math:`b - a`.
    """

    def __init__(self, pair: Pair, args, kwargs, num_chains, start, check):
        self.model, self.guide, self.args, self.kwargs = pair.model, pair.guide, args, kwargs
        self.particle_dim, self.data_plate, self.start = pair.particle_dim, pair.data_plate, start
        self.num_chains, self.particles = num_chains, pair.particles
        model = self.model
        if start == "guide":
            model_trace, guide_trace = pair.traces(args, kwargs, num_chains)
        else:
            with pair.particles(num_chains):
                model_trace = poutine.trace(model).get_trace(*args, **kwargs)
        latent_sites = []
        for name, site in scored_sites(model_trace):
            if site["is_observed"]:
                if check:
                    check_support(name, site)
            elif site["fn"].support.is_discrete:
                raise ConfigError(
                    f"latent site {name!r} of the model is discrete ({type(site['fn']).__name__}); AIS "
                    "with HMC transitions needs continuous latents: sum the discrete variable out of "
                    "the model, or estimate log p(x) with pyrovae.log_likelihood"
                )
            else:
                latent_sites.append((name, site))
        self.num_data = data_frame(latent_sites[0][1], self.data_plate).size if latent_sites else 0
        if not latent_sites:
            raise ConfigError("the model has no latent site: log p(x) needs no AIS, it is log p(x | nothing)")
        self.shape = (num_chains, self.num_data)
        source = guide_trace if start == "guide" else model_trace
        self.values = {name: source.nodes[name]["value"] for name, _ in latent_sites}
        self.latents: list[Latent] = []
        offset = 0
        for name, site in latent_sites:
            fn = site["fn"]
            support = support_of(fn)
            transform = None if is_real(support) else biject_to(support)
            value = self.values[name]
            shape = value.shape if transform is None else transform.inv(value).shape
            batch_ndim = value.dim() - fn.event_dim
            data_dim = data_frame(site, self.data_plate).dim
            lead = (batch_ndim + self.particle_dim, batch_ndim + data_dim)
            perm = lead + tuple(i for i in range(len(shape)) if i not in lead)
            size = math.prod(shape) // (num_chains * self.num_data)
            self.latents.append(Latent(name, site, transform, shape, perm, batch_ndim, offset, size))
            offset += size
        # the first site of the guide is drawn before any other latent: its distribution does not
        # depend on the latents' values, so a one-site guide is evaluated once, not at every step
        guide_sites = list(scored_sites(guide_trace)) if start == "guide" else []
        self._guide_site = guide_sites[0][1] if len(guide_sites) == 1 else None

    def flatten(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Unconstrained ``(chains, data points, D)`` state from constrained site values."""
        parts = []
        for lat in self.latents:
            u = values[lat.name].expand(self.values[lat.name].shape)
            if lat.transform is not None:
                u = lat.transform.inv(u)
            parts.append(u.permute(lat.perm).reshape(*self.shape, lat.size))
        return torch.cat(parts, -1)

    def _site_lp(self, site) -> torch.Tensor:
        return site_log_density(site, self.particle_dim, self.data_plate, self.shape)

    def evaluate(self, flat: torch.Tensor):
        """``(a, b, grad a, grad b)`` at the unconstrained state ``flat``."""
        u = flat.detach().requires_grad_(True)
        with torch.enable_grad():
            z, log_det = {}, 0.0
            for lat in self.latents:
                value = lat.unflatten(u)
                if lat.transform is not None:
                    unconstrained, value = value, lat.transform(value)
                    ld = lat.transform.log_abs_det_jacobian(unconstrained, value)
                    ld = ld.reshape(ld.shape[: lat.batch_ndim] + (-1,)).sum(-1)
                    log_det = log_det + reduce_site(
                        ld, lat.site, self.particle_dim, self.data_plate, self.shape
                    )
                z[lat.name] = value
            with self.particles(self.num_chains):
                trace = poutine.trace(poutine.condition(self.model, data=z)).get_trace(
                    *self.args, **self.kwargs
                )
                log_prior = sum(self._site_lp(trace.nodes[name]) for name in z)
                log_joint = sum((self._site_lp(site) for _, site in scored_sites(trace)), torch.zeros(()))
                if self.start == "prior":
                    log_start = log_prior
                elif self._guide_site is not None:
                    log_start = self._site_lp({**self._guide_site, "value": z[self._guide_site["name"]]})
                else:
                    guide_trace = poutine.trace(poutine.condition(self.guide, data=z)).get_trace(
                        *self.args, **self.kwargs
                    )
                    log_start = sum(self._site_lp(site) for _, site in scored_sites(guide_trace))
            a = (log_start + log_det).expand(self.shape)
            b = (log_joint + log_det).expand(self.shape)
            (grad_a,) = torch.autograd.grad(a.sum(), u, retain_graph=True)
            (grad_b,) = torch.autograd.grad(b.sum(), u)
        return a.detach(), b.detach(), grad_a, grad_b


class HMCState:
    """The chains' unconstrained position with :math:`a, b` and their gradients there."""

    def __init__(self, path: AnnealingPath, u: torch.Tensor):
        self.u = u
        self.a, self.b, self.grad_a, self.grad_b = path.evaluate(u)

    def potential(self, beta: float) -> torch.Tensor:
        return -(self.a + beta * (self.b - self.a))

    def grad_potential(self, beta: float) -> torch.Tensor:
        return -(self.grad_a + beta * (self.grad_b - self.grad_a))

    def select(self, accept: torch.Tensor, other: HMCState) -> None:
        """Keep ``other``'s values where ``accept`` (chains x data points) is true."""
        for name in ("a", "b"):
            setattr(self, name, torch.where(accept, getattr(other, name), getattr(self, name)))
        wide = accept.unsqueeze(-1)
        for name in ("u", "grad_a", "grad_b"):
            setattr(self, name, torch.where(wide, getattr(other, name), getattr(self, name)))


def hmc_transition(
    path: AnnealingPath,
    state: HMCState,
    beta: float,
    step_size: torch.Tensor,
    leapfrog_steps: int,
    jitter: float = 0.0,
) -> torch.Tensor:
    """One HMC transition at inverse temperature ``beta``, in place; returns the acceptance
    probabilities, chains x data points. Each chain's step size is ``step_size`` (per data point) times
    a factor drawn uniformly from ``[1 - jitter, 1 + jitter]``, independently of the chains' states: a
    trajectory of a fixed length can return near where it started (a resonance of HMC, Neal 2011, 5.4.2.2),
    and one of a random length cannot do so at every transition."""
    eps = step_size.expand(state.u.shape[:-1])
    if jitter:
        eps = eps * (1 + jitter * (2 * torch.rand_like(eps) - 1))
    eps = eps.unsqueeze(-1)  # per chain and data point, broadcast over coordinates
    p = torch.randn_like(state.u)
    energy = state.potential(beta) + 0.5 * p.square().sum(-1)
    p = p - 0.5 * eps * state.grad_potential(beta)
    u = state.u
    for i in range(leapfrog_steps):
        u = u + eps * p
        proposal = HMCState(path, u)
        p = p - (eps if i < leapfrog_steps - 1 else 0.5 * eps) * proposal.grad_potential(beta)
    log_ratio = energy - (proposal.potential(beta) + 0.5 * p.square().sum(-1))
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=-math.inf)
    accept = torch.rand_like(log_ratio).log() < log_ratio
    state.select(accept, proposal)
    return log_ratio.clamp(max=0).exp()


def anneal(
    path: AnnealingPath,
    u0,
    betas,
    leapfrog_steps,
    step_sizes,
    advance: Callable[[int], None],
    target_accept=None,
    pilot: int = 0,
    jitter: float = 0.0,
):
    """Run the chains from ``u0`` along ``betas``, the transition at ``betas[t]`` with the step
    sizes ``step_sizes[t - 1]`` (per data point), ``0 < t < T``, calling ``advance(1)`` after each
    step; returns log-weights (chains x data points, float64), mean acceptance probabilities (per
    data point), the step sizes used and the final positions of all the chains.

    With ``target_accept``, the last ``pilot`` chains (at least one) are a pilot: only ``step_sizes[0]`` is
    taken as given, and each later row is the previous one adapted to the pilot's mean acceptance
    probability at that transition, and capped by its estimate of the target's scale; the log-weights and
    acceptance returned are those of the other chains, which follow the pilot's step sizes.
    """
    if target_accept is not None and pilot < 1:
        raise ConfigError("adapting the step sizes (target_accept) needs a pilot: pilot >= 1 of the chains")
    state = HMCState(path, u0)
    wide = wide_dtype(u0.device)
    log_w = torch.zeros(path.shape, dtype=wide, device=u0.device)
    step_sizes = step_sizes.clone()
    acceptance = torch.zeros(path.num_data, dtype=wide, device=u0.device)
    num_steps, scale = len(betas) - 1, None
    for t in range(1, num_steps + 1):
        log_w += (betas[t] - betas[t - 1]).item() * (state.b - state.a).to(wide)
        if t < num_steps:  # the last transition would not change any weight
            rates = hmc_transition(path, state, betas[t].item(), step_sizes[t - 1], leapfrog_steps, jitter)
            kept = rates[: len(rates) - pilot]
            acceptance += kept.mean(0).to(wide)
            if target_accept is not None and t < num_steps - 1:
                rate = rates[len(rates) - pilot :].mean(0)
                factor = torch.where(rate > target_accept, ADAPT_UP, ADAPT_DOWN)
                step_sizes[t] = step_sizes[t - 1] * factor.to(step_sizes.dtype)
                if pilot > 1:
                    spread = state.u[len(rates) - pilot :].std(0).median(-1).values
                    scale = spread if scale is None else SCALE_MEMORY * scale + (1 - SCALE_MEMORY) * spread
                    step_sizes[t] = torch.minimum(step_sizes[t], TRAJECTORY_SCALES * scale / leapfrog_steps)
        advance(1)
    acceptance = acceptance / (num_steps - 1) if num_steps > 1 else torch.full_like(acceptance, math.nan)
    return log_w[: len(log_w) - pilot], acceptance, step_sizes, state.u
