r"""Annealed importance sampling of :math:`\log p(x)`, per data point, with HMC transitions.

For a data point :math:`x` let :math:`f_0(z)` be a normalized starting density, the guide
:math:`q(z \mid x)` or the prior :math:`p(z)`, and :math:`f_T(z) = p(x, z)`, whose normalizer is
:math:`p(x)`. The geometric path

.. math:: f_t(z) = f_0(z)^{1 - \beta_t} f_T(z)^{\beta_t}, \qquad
          0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

with :math:`z_0 \sim f_0`, :math:`z_t \sim \mathcal T_t(\cdot \mid z_{t-1})` for transitions
:math:`\mathcal T_t` that leave :math:`f_t` invariant, gives the AIS log-weight (Neal 2001)

.. math:: \log w = \sum_{t=1}^T (\beta_t - \beta_{t-1})
          \big(\log p(x, z_{t-1}) - \log f_0(z_{t-1})\big),

with :math:`\mathbb E[w] = p(x)`. Averaging :math:`K` independent chains,
:math:`\log \frac1K \sum_k w_k` is a stochastic lower bound on :math:`\log p(x)` (Jensen), which
tightens as :math:`T` grows. Run backwards from an exact posterior draw (:math:`\beta` from 1 to 0),
the same recursion gives weights with :math:`\mathbb E[w] = 1/p(x)`, so :math:`-\log \frac1K
\sum_k w_k` is a stochastic *upper* bound: see :mod:`pyrovae.bdmc`.

The transitions are Hamiltonian Monte Carlo (Neal 2011) with an identity mass matrix, one
trajectory of ``leapfrog_steps`` steps per annealing step, in the unconstrained space of
:func:`torch.distributions.biject_to` (the log-determinant of the Jacobian is added to the
potential, as in Pyro's HMC). The step size of each data point is adapted after every
transition, multiplied by 1.02 when the mean acceptance probability of its chains exceeds the
target and by 0.98 otherwise (as in Wu et al. 2017). The chains are an outer plate, like the
particles of :func:`~pyrovae.importance.log_likelihood`, so one trace of the model and one
gradient evaluate every chain of every data point at once.

References:

- R. M. Neal (2001), "Annealed Importance Sampling", Statistics and Computing 11(2).
- R. M. Neal (2011), "MCMC Using Hamiltonian Dynamics", Handbook of Markov Chain Monte Carlo.
- R. B. Grosse, Z. Ghahramani and R. P. Adams (2015), "Sandwiching the marginal likelihood using
  bidirectional Monte Carlo", arXiv:1511.02543.
- Y. Wu, Y. Burda, R. Salakhutdinov and R. Grosse (2017), "On the Quantitative Analysis of
  Decoder-Based Generative Models", ICLR.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from torch.distributions import biject_to, constraints
from tqdm.auto import tqdm

from . import devices, distributed
from .data import DataSource
from .diagnostics import reduce_log_weights
from .errors import ConfigError, DataError
from .importance import PerDatapoint
from .seeds import seeded
from .traces import (
    PARTICLE_PLATE,
    Pair,
    check_support,
    data_frame,
    reduce_site,
    scored_sites,
    site_log_density,
)

__all__ = ["AIS", "ais", "annealing_schedule"]

#: the named annealing schedules
SCHEDULES = ("sigmoid", "linear")
#: starting distributions of the forward chains
STARTS = ("guide", "prior")
# steepness of the sigmoid schedule (Grosse et al. 2015; Wu et al. 2017)
_SIGMOID_DELTA = 4.0
# multiplicative step-size update after each transition (Wu et al. 2017)
_ADAPT_UP, _ADAPT_DOWN = 1.02, 0.98
# chains x data points per chunk
_TARGET_ROWS = 8192


def annealing_schedule(name: str | Sequence[float], num_steps: int) -> torch.Tensor:
    r"""The inverse temperatures :math:`0 = \beta_0 < \dots < \beta_T = 1`, float64, length
    ``num_steps + 1``.

    ``"linear"``: :math:`\beta_t = t/T`. ``"sigmoid"``: :math:`\tilde\beta_t = \sigma(\delta(2t/T
    - 1))` with :math:`\delta = 4`, rescaled to run from 0 to 1 (Grosse et al. 2015), which spends
    more steps near both ends. A sequence is taken as the :math:`\beta_t` themselves.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ConfigError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not isinstance(name, str):
        betas = torch.as_tensor(name, dtype=torch.float64).flatten()
        if betas.numel() < 2 or betas[0] != 0 or betas[-1] != 1 or (betas.diff() < 0).any():
            raise ConfigError("an explicit schedule must be nondecreasing from 0 to 1, both included")
        return betas
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    if name == "linear":
        return t
    if name == "sigmoid":
        s = torch.sigmoid(_SIGMOID_DELTA * (2 * t - 1))
        return (s - s[0]) / (s[-1] - s[0])
    raise ConfigError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)} or pass the betas")


# ---------------------------------------------------------------------------------------------
# result


@dataclass(repr=False)
class AIS(PerDatapoint):
    r"""Per-datapoint AIS estimates of :math:`\log p(x)`, from :func:`ais`.

    :ivar torch.Tensor log_px: ``(N,)`` estimates :math:`\log\frac1K\sum_k w_k` (forward: a
        stochastic lower bound), or :math:`-\log\frac1K\sum_k w_k` (reverse: an upper bound).
    :ivar torch.Tensor log_px_se: ``(N,)`` delta-method standard errors over the chains.
    :ivar torch.Tensor ess: ``(N,)`` effective numbers of chains :math:`1/\sum_k \bar w_k^2`.
    :ivar torch.Tensor acceptance: ``(N,)`` mean HMC acceptance probability over chains and steps.
    :ivar torch.Tensor step_size: ``(N,)`` final adapted HMC step sizes.
    :ivar torch.Tensor log_weights: ``(N, K)`` AIS log-weights, float64.
    :ivar int num_steps: :math:`T`, annealing steps.
    :ivar int leapfrog_steps: leapfrog steps per HMC trajectory.
    :ivar str schedule: the schedule's name (``"custom"`` for explicit betas).
    :ivar str start: ``"guide"`` or ``"prior"``.
    :ivar bool reverse: whether the chains ran from the posterior to the start distribution.
    :ivar float elapsed: wall time in seconds.
    """

    log_px: torch.Tensor
    log_px_se: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    log_weights: torch.Tensor
    num_steps: int
    leapfrog_steps: int
    schedule: str
    start: str
    reverse: bool = False
    elapsed: float = 0.0

    _FIELDS = ("log_px", "log_px_se", "ess", "acceptance", "step_size")

    @property
    def num_chains(self) -> int:
        """Number of chains :math:`K` per data point."""
        return self.log_weights.shape[1]

    @property
    def name(self) -> str:
        """Row name in a :class:`~pyrovae.bounds.Bounds` ladder: ``"AIS-T"`` or ``"reverse AIS-T"``."""
        return f"{'reverse ' if self.reverse else ''}AIS-{self.num_steps}"

    def summary(self) -> str:
        """A readable multi-line summary."""
        kind = "upper bound (reverse AIS)" if self.reverse else "lower bound (AIS)"
        acc = self.acceptance[torch.isfinite(self.acceptance)]
        lines = [
            f"log p(x) {kind}: N = {self.num_data} data points, K = {self.num_chains} chains, "
            f"T = {self.num_steps} {self.schedule} steps from the {self.start}, "
            f"HMC with {self.leapfrog_steps} leapfrog steps",
            f"  mean log p(x) = {self.mean:.3f} ± {self.stderr:.3f} nats   (NLL {-self.mean:.3f})",
            f"  median se over chains {float(self.log_px_se.nanmedian()):.3f} nats; "
            f"median ESS {float(self.ess.median()):.1f} of {self.num_chains} chains",
        ]
        if acc.numel():
            lines.append(
                f"  acceptance: mean {float(acc.mean()):.2f} (min {float(acc.min()):.2f}); "
                f"step size median {float(self.step_size.median()):.3g}"
            )
        lines.append(f"  elapsed {self.elapsed:.1f} s")
        return "\n".join(lines)

    def to_xarray(self):
        """An :class:`xarray.Dataset` with dimensions ``"datapoint"`` and ``"chain"`` (the
        log-weights); summary figures in its ``attrs``."""
        import xarray as xr

        data_vars = {name: ("datapoint", getattr(self, name).cpu().numpy()) for name in self._FIELDS}
        data_vars["log_weights"] = (("datapoint", "chain"), self.log_weights.cpu().numpy())
        attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in self.to_json_dict().items()}
        return xr.Dataset(data_vars, coords={"datapoint": np.arange(self.num_data)}, attrs=attrs)

    @classmethod
    def from_xarray(cls, ds) -> AIS:
        """Inverse of :meth:`to_xarray`."""
        fields = {name: torch.as_tensor(ds[name].values) for name in (*cls._FIELDS, "log_weights")}
        a = ds.attrs
        return cls(
            **fields,
            num_steps=int(a["num_steps"]),
            leapfrog_steps=int(a["leapfrog_steps"]),
            schedule=str(a["schedule"]),
            start=str(a["start"]),
            reverse=bool(a["reverse"]),
            elapsed=float(a["elapsed"]),
        )

    def to_json_dict(self) -> dict:
        """Summary figures as plain Python values."""
        acc = self.acceptance[torch.isfinite(self.acceptance)]
        return {
            "num_data": self.num_data,
            "num_chains": self.num_chains,
            "num_steps": int(self.num_steps),
            "leapfrog_steps": int(self.leapfrog_steps),
            "schedule": self.schedule,
            "start": self.start,
            "reverse": bool(self.reverse),
            "mean_log_px": self.mean,
            "stderr": self.stderr,
            "acceptance": float(acc.mean()) if acc.numel() else math.nan,
            "elapsed": float(self.elapsed),
        }


# ---------------------------------------------------------------------------------------------
# the annealing path of one chunk of data points


def _support(fn) -> constraints.Constraint:
    """The support of ``fn``, that of its components for a mixture (``MixtureSameFamily``)."""
    support = fn.support
    while type(support).__name__.lstrip("_") == "MixtureSameFamilyConstraint":
        support = support.base_constraint
    return support


def _is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


@dataclass
class _Latent:
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


class _Path:
    r"""The geometric path from :math:`f_0` to :math:`p(x, z)` for one chunk of data points.

    :meth:`evaluate` returns, per chain and data point, :math:`a = \log f_0(z) + \log|J|` and
    :math:`b = \log p(x, z) + \log|J|` at unconstrained :math:`u` (:math:`z` = biject_to(u),
    :math:`J` its Jacobian) with their gradients, so that the potential at any :math:`\beta` is
    :math:`U_\beta = -((1 - \beta) a + \beta b)` and the AIS increment uses :math:`b - a`.
    """

    def __init__(self, pair: Pair, args, kwargs, num_chains, start, check):
        self.model, self.guide, self.args, self.kwargs = pair.model, pair.guide, args, kwargs
        self.particle_dim, self.data_plate, self.start = pair.particle_dim, pair.data_plate, start
        self.num_chains = num_chains
        model = self.model
        if start == "guide":
            model_trace, guide_trace = pair.traces(args, kwargs, num_chains)
        else:
            with pyro.plate(PARTICLE_PLATE, num_chains, dim=self.particle_dim):
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
        self.latents: list[_Latent] = []
        offset = 0
        for name, site in latent_sites:
            fn = site["fn"]
            support = _support(fn)
            transform = None if _is_real(support) else biject_to(support)
            value = self.values[name]
            shape = value.shape if transform is None else transform.inv(value).shape
            batch_ndim = value.dim() - fn.event_dim
            data_dim = data_frame(site, self.data_plate).dim
            lead = (batch_ndim + self.particle_dim, batch_ndim + data_dim)
            perm = lead + tuple(i for i in range(len(shape)) if i not in lead)
            size = math.prod(shape) // (num_chains * self.num_data)
            self.latents.append(_Latent(name, site, transform, shape, perm, batch_ndim, offset, size))
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
            with pyro.plate(PARTICLE_PLATE, self.num_chains, dim=self.particle_dim):
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


# ---------------------------------------------------------------------------------------------
# annealing with HMC transitions


class _State:
    """The chains' unconstrained position with :math:`a, b` and their gradients there."""

    def __init__(self, path: _Path, u: torch.Tensor):
        self.u = u
        self.a, self.b, self.grad_a, self.grad_b = path.evaluate(u)

    def potential(self, beta: float) -> torch.Tensor:
        return -(self.a + beta * (self.b - self.a))

    def grad_potential(self, beta: float) -> torch.Tensor:
        return -(self.grad_a + beta * (self.grad_b - self.grad_a))

    def select(self, accept: torch.Tensor, other: _State) -> None:
        """Keep ``other``'s values where ``accept`` (chains x data points) is true."""
        for name in ("a", "b"):
            setattr(self, name, torch.where(accept, getattr(other, name), getattr(self, name)))
        wide = accept.unsqueeze(-1)
        for name in ("u", "grad_a", "grad_b"):
            setattr(self, name, torch.where(wide, getattr(other, name), getattr(self, name)))


def _hmc(
    path: _Path, state: _State, beta: float, step_size: torch.Tensor, leapfrog_steps: int
) -> torch.Tensor:
    """One HMC transition at inverse temperature ``beta``, in place; returns the acceptance
    probabilities, chains x data points."""
    eps = step_size.unsqueeze(-1)  # per data point, broadcast over chains and coordinates
    p = torch.randn_like(state.u)
    energy = state.potential(beta) + 0.5 * p.square().sum(-1)
    p = p - 0.5 * eps * state.grad_potential(beta)
    u = state.u
    for i in range(leapfrog_steps):
        u = u + eps * p
        proposal = _State(path, u)
        p = p - (eps if i < leapfrog_steps - 1 else 0.5 * eps) * proposal.grad_potential(beta)
    log_ratio = energy - (proposal.potential(beta) + 0.5 * p.square().sum(-1))
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=-math.inf)
    accept = torch.rand_like(log_ratio).log() < log_ratio
    state.select(accept, proposal)
    return log_ratio.clamp(max=0).exp()


def _anneal(path: _Path, u0, betas, leapfrog_steps, step_size, target_accept, adapt, bar):
    """Run the chains along ``betas``; returns log-weights (chains x data points, float64), mean
    acceptance probabilities and final step sizes (per data point)."""
    state = _State(path, u0)
    wide = torch.float32 if u0.device.type == "mps" else torch.float64  # MPS has no float64
    log_w = torch.zeros(path.shape, dtype=wide, device=u0.device)
    eps = torch.full((path.num_data,), float(step_size), dtype=u0.dtype, device=u0.device)
    acceptance = torch.zeros(path.num_data, dtype=wide, device=u0.device)
    num_steps = len(betas) - 1
    for t in range(1, num_steps + 1):
        log_w += (betas[t] - betas[t - 1]).item() * (state.b - state.a).to(wide)
        if t < num_steps:  # the last transition would not change any weight
            rate = _hmc(path, state, betas[t].item(), eps, leapfrog_steps).mean(0)
            acceptance += rate.to(wide)
            if adapt:
                eps = eps * torch.where(rate > target_accept, _ADAPT_UP, _ADAPT_DOWN).to(eps.dtype)
        bar.update(1)
    acceptance = acceptance / (num_steps - 1) if num_steps > 1 else torch.full_like(acceptance, math.nan)
    return log_w, acceptance, eps


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def ais(
    model,
    guide,
    data,
    *,
    num_steps: int = 1000,
    num_chains: int = 16,
    schedule: str | Sequence[float] = "sigmoid",
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    adapt_step_size: bool = True,
    start: str = "guide",
    reverse_from: Mapping[str, torch.Tensor] | None = None,
    data_plate: str | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    device: str | torch.device | None = None,
) -> AIS:
    r"""Estimate :math:`\log p(x_n)` of every data point by annealed importance sampling.

    ``num_chains`` = :math:`K` chains per data point start from :math:`f_0`, the guide
    :math:`q(z \mid x_n)` (``start="guide"``) or the prior (``start="prior"``), and are annealed
    along the geometric path to :math:`p(z \mid x_n)` over ``num_steps`` = :math:`T` steps of the
    ``schedule``, with one HMC trajectory of ``leapfrog_steps`` leapfrog steps per step (see
    :mod:`pyrovae.ais`). The estimate :math:`\log \frac1K \sum_k w_k` is a stochastic lower bound
    on :math:`\log p(x_n)` (exact for every :math:`T` when :math:`f_0` is the exact posterior);
    with :math:`T = 1` it is importance sampling with :math:`K` draws.

    With ``reverse_from``, exact posterior draws of the latents (e.g. simulated with the data, as
    in :func:`~pyrovae.bdmc`), the chains run backwards from them to :math:`f_0` and the estimate
    :math:`-\log \frac1K \sum_k w_k` is a stochastic upper bound (Grosse et al. 2015).

    The model and guide are as for :func:`~pyrovae.log_likelihood` (every site in the data plate,
    chains vectorized in an outer plate), and every latent must be continuous; constrained latents
    are sampled in the unconstrained space of :func:`torch.distributions.biject_to`.

    :param model: model ``model(*data, *model_args, **model_kwargs)``.
    :param guide: guide with the same signature; the starting distribution when ``start="guide"``.
    :param data: a tensor ``(N, ...)``, a tuple of tensors, or a data set, as for
        :func:`~pyrovae.log_likelihood`.
    :param int num_steps: :math:`T`, annealing steps (Wu et al. 2017 use 1000 to 10,000s).
    :param int num_chains: :math:`K`, chains per data point.
    :param schedule: ``"sigmoid"``, ``"linear"`` or the :math:`\beta_t` (see :func:`annealing_schedule`).
    :param int leapfrog_steps: leapfrog steps per HMC trajectory.
    :param float step_size: initial leapfrog step size.
    :param float target_accept: acceptance probability the step sizes are adapted toward.
    :param bool adapt_step_size: adapt the step size of each data point after each transition.
    :param str start: ``"guide"`` or ``"prior"``.
    :param dict reverse_from: site name to exact posterior draws, one per data point, shaped as
        the site's value in the model (without chains); runs reverse AIS.
    :param str data_plate: name of the data plate (default: found, as for :func:`~pyrovae.log_likelihood`).
    :param int batch_size: data points per chunk (default: about 8192 chains x data points).
    :param int seed: seed; the draws of the chunk that starts at data point ``lo`` are seeded from
        ``(seed, lo)``, as in :func:`~pyrovae.log_likelihood`; the caller's random state is
        restored afterwards.
    :param bool progress: show a progress bar over annealing steps.
    :param tuple model_args: extra positional arguments after the data.
    :param dict model_kwargs: keyword arguments.
    :param device: where to compute (see :mod:`pyrovae.devices`); default: the model's device.
        Results come back on the CPU.
    :raises ConfigError: for a discrete latent, or a model/guide pair that
        :func:`~pyrovae.log_likelihood` refuses.
    :rtype: AIS
    """
    _check_positive(num_steps=num_steps, num_chains=num_chains, leapfrog_steps=leapfrog_steps)
    if batch_size is not None:
        _check_positive(batch_size=batch_size)
    if start not in STARTS:
        raise ConfigError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    if not (0 < target_accept < 1) or not step_size > 0:
        raise ConfigError(f"need 0 < target_accept < 1 and step_size > 0, got {target_accept}, {step_size}")
    betas = annealing_schedule(schedule, num_steps)
    schedule_name = schedule if isinstance(schedule, str) else "custom"
    num_steps = len(betas) - 1
    start_time = time.perf_counter()
    with seeded(seed):
        source = DataSource(data)
        dev = devices.place(model, guide, device=device)
        model_args = devices.move(tuple(model_args), dev)
        model_kwargs = devices.move_kwargs(model_kwargs, dev)
        pair = Pair(
            model, guide, devices.move(source.chunk(0, 1), dev) + model_args, model_kwargs, data_plate
        )
        batch_size = batch_size or max(1, _TARGET_ROWS // num_chains)
        chunks = range(*distributed.shard(source.num_data, batch_size), batch_size)
        log_w, acceptance, step_sizes = [], [], []
        if reverse_from is not None:
            betas = betas.flip(0)
        check = pyro.infer.util.is_validation_enabled()
        with tqdm(
            total=len(chunks) * num_steps,
            unit="step",
            desc="reverse AIS" if reverse_from is not None else "AIS",
            disable=not (progress and distributed.is_main()),
        ) as bar:
            for lo in chunks:
                hi = min(lo + batch_size, source.num_data)
                args = devices.move(source.chunk(lo, hi), dev) + model_args
                chunk_seed = None if seed is None else distributed.derived_seed(seed, lo)
                with torch.no_grad(), pyro.validation_enabled(False), seeded(chunk_seed):
                    path = _Path(pair, args, model_kwargs, num_chains, start, check)
                    u0 = path.flatten(
                        path.values if reverse_from is None else _chunk_of(path, reverse_from, lo, hi)
                    )
                    lw, acc, eps = _anneal(
                        path, u0, betas, leapfrog_steps, step_size, target_accept, adapt_step_size, bar
                    )
                log_w.append(lw.T.cpu())
                acceptance.append(acc.cpu())
                step_sizes.append(eps.to(torch.float64).cpu())
    empty = torch.empty(0, dtype=torch.float64)
    log_w = distributed.gather_rows(torch.cat(log_w) if log_w else empty.reshape(0, num_chains))
    log_px, log_px_se, ess, _ = reduce_log_weights(log_w)
    if reverse_from is not None:
        log_px = -log_px
    return AIS(
        log_px,
        log_px_se,
        ess,
        distributed.gather_rows(torch.cat(acceptance) if acceptance else empty),
        distributed.gather_rows(torch.cat(step_sizes) if step_sizes else empty),
        log_w,
        num_steps=num_steps,
        leapfrog_steps=leapfrog_steps,
        schedule=schedule_name,
        start=start,
        reverse=reverse_from is not None,
        elapsed=time.perf_counter() - start_time,
    )


def _chunk_of(path: _Path, values: Mapping[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    """Data points ``lo:hi`` of the posterior draws ``values`` (site name to a tensor without chains)."""
    missing = [lat.name for lat in path.latents if lat.name not in values]
    if missing:
        raise ConfigError(
            f"reverse_from has no value for latent site(s) {', '.join(missing)}: pass an exact "
            "posterior draw of every latent of the model"
        )
    out = {}
    for lat in path.latents:
        value = torch.as_tensor(values[lat.name])
        event_dim = path.values[lat.name].dim() - lat.batch_ndim
        dim = value.dim() - event_dim + data_frame(lat.site, path.data_plate).dim
        if dim < 0 or value.shape[dim] < hi:
            raise DataError(
                f"reverse_from[{lat.name!r}] has shape {tuple(value.shape)}, which does not hold one "
                "value per data point along the data plate's dim"
            )
        reference = path.values[lat.name]
        out[lat.name] = value.narrow(dim, lo, hi - lo).to(device=reference.device, dtype=reference.dtype)
    return out
