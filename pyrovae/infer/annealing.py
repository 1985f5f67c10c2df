r"""Annealed importance sampling of :math:`\log p(x)`, per data point, with HMC transitions.

For a data point :math:`x` let :math:`f_0(z)` be a normalized starting density, the guide :math:`q(z \mid x)`
or the prior :math:`p(z)`, and :math:`f_T(z) = p(x, z)`, whose normalizer is :math:`p(x)`. The geometric path

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
\sum_k w_k` is a stochastic *upper* bound: see :mod:`pyrovae.infer.bidirectional`.

The transitions are Hamiltonian Monte Carlo (Neal 2011) with an identity mass matrix, one
trajectory of ``leapfrog_steps`` steps per annealing step, in the unconstrained space of
:func:`torch.distributions.biject_to` (the log-determinant of the Jacobian is added to the
potential, as in Pyro's HMC). The chains are an outer plate, like the particles of
:func:`~pyrovae.infer.importance.log_likelihood`, so one trace of the model and one gradient evaluate
every chain of every data point at once.

The step size :math:`\epsilon_t` of each data point's transition at :math:`\beta_t` is adapted as
in Wu et al. (2017): after every transition it is multiplied by 1.02 when the mean acceptance
probability of the chains exceeds the target and by 0.98 otherwise. The chains whose weights are
accumulated must not do this adapting themselves. :math:`w` is the ratio of an unnormalized
density of the path :math:`(z_0, \dots, z_{T-1})` of total mass :math:`p(x)` (:math:`p(x,
z_{T-1})`, then the reversals of the transitions, backwards) to its density under the forward
process, :math:`f_0(z_0) \prod_t \mathcal T_t(z_t \mid z_{t-1})`, so
:math:`\mathbb E[w] = p(x)` holds when every :math:`\mathcal T_t` is a kernel fixed in advance
(or chosen independently of the chains) that leaves :math:`f_t` invariant (Neal 2001). A step
size computed from the chains' own acceptances makes :math:`\mathcal T_t` depend on their past
states, :math:`z_{t-1}` included: each transition still leaves :math:`f_t` invariant, but the
path's density is no longer that product, and the weights are biased, in either direction (on
probabilistic PCA from a mean-field guide we measured :math:`\mathbb E[w]/p(x) = 1.012 \pm 0.001`
with one chain per data point and 50 steps, so that the "lower bound" exceeded :math:`\log p(x)`,
and :math:`0.986 \pm 0.0015` with two chains and 100 steps; the bias shrinks as :math:`K` grows).

So when the step sizes are adapted, a *pilot* of :math:`P = \max(1, \lfloor K/4 \rfloor)` more chains per data
point, drawn from :math:`f_0` like the :math:`K` chains of the estimate and run beside them in the same
batched transitions, sets them; its weights are left out. :math:`\epsilon_{t+1}` comes from the pilot's
transitions up to :math:`t` alone, so the kernel of each chain of the estimate is chosen independently of it,
and :math:`\mathbb E[w] = p(x)`. The pilot adds :math:`P/K` to the arithmetic and nothing to the number of
steps: where a step costs mostly the fixed price of tracing the model (a GPU; a small model on a CPU) it
costs nearly nothing, where the arithmetic fills the hardware (a large model on a CPU) a quarter. (A pilot in
a pass of its own, before the chains, had cost as much as the estimate on the former.)
In reverse the pilot must not start from the exact posterior draws that the reverse chains start from: its
chains first run forward from :math:`f_0` with the adaptation (a pass of :math:`P` chains), then back beside
the reverse chains from where they ended, adapting afresh from the initial step size, and
:math:`\mathbb E[w] = 1/p(x)`. (As
forward, the step sizes are still on their way from the initial value where the chains start in equilibrium;
following the forward schedule backwards instead left the least adapted step sizes near :math:`f_0`, where
the reverse chains lag most, and raised the spread of the upper bounds by 60% in a test on PPCA.)

The acceptance rate alone sets the step size, not the length of a trajectory of ``leapfrog_steps`` steps,
and the length is what decides how far a chain moves. On a linear-Gaussian model with a 3-dimensional
posterior (``examples/ais_bdmc.py``) adapting toward acceptance 0.65 gave trajectories of 2.8, about
14 times the posterior's smallest scale, and per-point errors of AIS-200 three times those of a fixed
:math:`\epsilon = 0.05` (trajectories of 0.5); and a trajectory of a fixed length that comes back near where
it started (a full turn of the Hamiltonian dynamics, Neal 2011, section 5.4.2.2) leaves a chain in place: a
fixed :math:`\epsilon = 0.1` did worse than 0.05 and than 0.2. So (a) each chain's step size is jittered, at
every transition, by a factor drawn uniformly from :math:`[1 - j, 1 + j]` (``step_size_jitter``, independent
of the chains: a mixture of kernels that each leave :math:`f_t` invariant), and (b) the pilot keeps a
trajectory no longer than :data:`~pyrovae.infer.hmc.TRAJECTORY_SCALES` times its estimate of the target's
typical scale (an exponential average along the path of the median over the coordinates of their standard
deviations over its chains; a pilot of one chain, :math:`K < 8`, has none, and adapts to the acceptance
alone). As the pilot's chains share the batched model evaluations of the estimate's, a model must not mix
its particles (no statistics over the particle dimension), as for every estimator of pyrovae.

On the linear-Gaussian model, AIS-1000 with 16 chains went from a spread of 0.098 nats over the points
(mean error −0.11) to 0.031 (mean +0.001), AIS-10000 from 0.053 to 0.009, and AIS-200 from 0.37 to 0.066; on
32 random test images of the 10-epoch binarized-MNIST VAE, AIS-100's per-image spread went from 0.45 to 0.18
nats (the figures of every budget: the AIS section of ``docs/results.md``).

References:

- R. M. Neal (2001), "Annealed Importance Sampling", Statistics and Computing 11(2).
- R. M. Neal (2011), "MCMC Using Hamiltonian Dynamics", Handbook of Markov Chain Monte Carlo.
- R. B. Grosse, Z. Ghahramani and R. P. Adams (2015), "Sandwiching the marginal likelihood using
  bidirectional Monte Carlo", arXiv:1511.02543.
- Y. Wu, Y. Burda, R. Salakhutdinov and R. Grosse (2017), "On the Quantitative Analysis of
  Decoder-Based Generative Models", ICLR.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from pyrovae import distributed
from pyrovae.devices import check_memory
from pyrovae.errors import ConfigError, DataError
from pyrovae.infer import Chunk
from pyrovae.infer.diagnostics import reduce_log_weights
from pyrovae.infer.hmc import AnnealingPath, anneal
from pyrovae.infer.importance import MEMORY_SAFETY, PerDatapoint
from pyrovae.infer.pair import Pair, sweep_pair
from pyrovae.infer.sites import data_frame
from pyrovae.options import check_option, check_options, check_schedule
from pyrovae.precision import described
from pyrovae.results import column
from pyrovae.seeds import seeded

__all__ = ["AIS", "ais", "annealing_schedule"]

#: the named annealing schedules
SCHEDULES = ("sigmoid", "linear")
#: starting distributions of the forward chains
# steepness of the sigmoid schedule (Grosse et al. 2015; Wu et al. 2017)
_SIGMOID_DELTA = 4.0
# the pilot that adapts the step sizes runs num_chains // _PILOT_FRACTION chains (at least one):
# the rule uses only the sign of (mean acceptance - target), and on PPCA (K = 16, 200 steps) a
# pilot of a quarter of the chains gave AIS estimates within 6% of the precision that a pilot of
# all of them gave, for a quarter of the cost (a single pilot chain: up to 30% worse)
_PILOT_FRACTION = 4


def _pilot_size(num_chains: int, adapt: bool) -> int:
    """The chains of the pilot, run beside ``num_chains`` (none without adaptation)."""
    return max(1, num_chains // _PILOT_FRACTION) if adapt else 0


# chains x data points per chunk
_TARGET_ROWS = 8192


def annealing_schedule(name: str | Sequence[float], num_steps: int) -> torch.Tensor:
    r"""The inverse temperatures :math:`0 = \beta_0 < \dots < \beta_T = 1`, float64, length ``num_steps + 1``.

    ``"linear"``: :math:`\beta_t = t/T`. ``"sigmoid"``: :math:`\tilde\beta_t = \sigma(\delta(2t/T
    - 1))` with :math:`\delta = 4`, rescaled to run from 0 to 1 (Grosse et al. 2015), which spends
    more steps near both ends. A sequence is taken as the :math:`\beta_t` themselves.
    """
    check_option("num_steps", num_steps)
    if not isinstance(name, str):
        check_schedule("schedule", name)
        return torch.as_tensor(name, dtype=torch.float64).flatten()
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
    :ivar torch.Tensor step_size: ``(N,)`` HMC step sizes of the last transition (at
        :math:`\beta_{T-1}`, or :math:`\beta_1` in reverse): the end of the pilot's adapted
        schedule, or ``step_size`` without adaptation or for :math:`T = 1`.
    :ivar torch.Tensor log_weights: ``(N, K)`` AIS log-weights, float64.
    :ivar int num_steps: :math:`T`, annealing steps.
    :ivar int leapfrog_steps: leapfrog steps per HMC trajectory.
    :ivar str schedule: the schedule's name (``"custom"`` for explicit betas).
    :ivar str start: ``"guide"`` or ``"prior"``.
    :ivar bool reverse: whether the chains ran from the posterior to the start distribution.
    :ivar int pilot_chains: the chains per data point that adapted the step sizes beside the :math:`K`
        (0 without adaptation); their weights are left out.
    :ivar str precision: the arithmetic of the chains, one of :data:`~pyrovae.precision.PRECISIONS`.
    :ivar float elapsed: wall time in seconds.
    """

    log_px: torch.Tensor = column()
    log_px_se: torch.Tensor = column()
    ess: torch.Tensor = column()
    acceptance: torch.Tensor = column()
    step_size: torch.Tensor = column()
    log_weights: torch.Tensor = column("datapoint", "chain")
    num_steps: int
    leapfrog_steps: int
    schedule: str
    start: str
    reverse: bool = False
    pilot_chains: int = 0
    precision: str = "highest"
    elapsed: float = 0.0

    @property
    def num_chains(self) -> int:
        """Number of chains :math:`K` per data point (the pilot's not counted)."""
        return self.log_weights.shape[1]

    @property
    def name(self) -> str:
        """Row name in a :class:`~pyrovae.infer.ladder.Bounds` ladder: ``"AIS-T"`` or ``"reverse AIS-T"``."""
        return f"{'reverse ' if self.reverse else ''}AIS-{self.num_steps}"

    def headline(self) -> str:
        """What was estimated, from how many chains and steps."""
        kind = "upper bound (reverse AIS)" if self.reverse else "lower bound (AIS)"
        return (
            f"log p(x) {kind}: N = {self.num_data} data points, K = {self.num_chains} chains"
            + (f" (and a pilot of {self.pilot_chains})" if self.pilot_chains else "")
            + ", "
            f"T = {self.num_steps} {self.schedule} steps from the {self.start}, "
            f"HMC with {self.leapfrog_steps} leapfrog steps" + described(self.precision)
        )

    def diagnostics(self) -> list[str]:
        """The spread over the chains, the ESS, the acceptance and the step sizes."""
        acc = self.acceptance[torch.isfinite(self.acceptance)]
        lines = [
            f"  median se over chains {float(self.log_px_se.nanmedian()):.3f} nats; "
            f"median ESS {float(self.ess.median()):.1f} of {self.num_chains} chains"
        ]
        if acc.numel():
            lines.append(
                f"  acceptance: mean {float(acc.mean()):.2f} (min {float(acc.min()):.2f}); "
                f"step size median {float(self.step_size.median()):.3g}"
            )
        return lines

    def figures(self) -> dict:
        """The number of chains, the mean and its standard error, and the mean acceptance."""
        acc = self.acceptance[torch.isfinite(self.acceptance)]
        mean_acceptance = float(acc.mean()) if acc.numel() else math.nan
        return {"num_chains": self.num_chains, **super().figures(), "acceptance": mean_acceptance}


def _pilot_start(
    pilot: AnnealingPath, betas, leapfrog_steps, step_sizes, target_accept, advance, jitter
) -> torch.Tensor:
    """Where the chains of ``pilot``, drawn from :math:`f_0` independently of the chains of the
    estimate, end after running forward along ``betas`` (from 1 to 0: a reverse path) with the adaptation:
    the start of the pilot of reverse AIS, near the posterior, from which it runs back beside the
    reverse chains.
    """
    u = pilot.flatten(pilot.values)
    every = pilot.num_chains  # all its chains are the pilot's
    return anneal(pilot, u, betas.flip(0), leapfrog_steps, step_sizes, advance, target_accept, every, jitter)[
        3
    ]


def _pilot_seed(seed: int | None, lo: int, device: torch.device) -> int:
    """A seed for the way forward of the reverse pilot of the chunk that starts at data point ``lo``: from
    ``(seed, lo)``, or without a seed from the caller's random state (on the CPU and ``device``), which that
    pass then leaves untouched."""
    if seed is not None:
        return distributed.derived_seed(seed, lo, 1)
    state = torch.get_rng_state()
    if device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(device)])
    return distributed.derived_seed(*state.tolist())


@dataclass
class _Annealing:
    """The per-chunk function of the sweep of :func:`ais`: the ``num_chains`` chains of each data
    point of the chunk, from :math:`f_0` (or from ``reverse_from``) along ``betas``, beside the pilot
    that adapts their step sizes toward ``target_accept`` (``None``: no pilot, every transition has
    ``step_size``); each annealing step, the reverse pilot's way forward included, advances the chunk's
    progress by one.
    The settings are checked when it is made.
    """

    betas: torch.Tensor
    num_chains: int
    start: str
    leapfrog_steps: int
    step_size: float
    target_accept: float | None
    reverse_from: Mapping[str, torch.Tensor] | None
    seed: int | None  # the sweep's, for the pilot's stream
    jitter: float = 0.0

    def __post_init__(self):
        settings = {
            name: getattr(self, name) for name in ("num_chains", "start", "leapfrog_steps", "step_size")
        }
        check_options(
            ("target_accept", "seed"),
            **settings,
            target_accept=self.target_accept,
            seed=self.seed,
            step_size_jitter=self.jitter,
        )

    def __call__(self, pair: Pair, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chunk's ``(B, K)`` log-weights, ``(B,)`` mean acceptance probabilities and ``(B,)`` step
        sizes of the last transition. The pilot's ``P`` chains run after the ``K`` in the same transitions."""
        pilot = _pilot_size(self.num_chains, self.target_accept is not None)
        path = AnnealingPath(
            pair, chunk.args, pair.kwargs, self.num_chains + pilot, self.start, chunk.validate
        )
        values = (
            path.values
            if self.reverse_from is None
            else _chunk_of(path, self.reverse_from, chunk.lo, chunk.hi)
        )
        u0 = path.flatten(values)
        num_steps = len(self.betas) - 1
        # the step sizes of the transitions at betas[1:-1], per data point
        eps = u0.new_full((num_steps - 1, path.num_data), self.step_size)
        if self.reverse_from is not None and pilot:
            # the pilot's chains must not start from the exact posterior draws of the others
            with seeded(_pilot_seed(self.seed, chunk.lo, u0.device)):
                warm = AnnealingPath(pair, chunk.args, pair.kwargs, pilot, self.start, check=False)
                u0[-pilot:] = _pilot_start(
                    warm, self.betas, self.leapfrog_steps, eps, self.target_accept, chunk.advance, self.jitter
                )
        log_w, acceptance, eps, _ = anneal(
            path,
            u0,
            self.betas,
            self.leapfrog_steps,
            eps,
            chunk.advance,
            self.target_accept,
            pilot,
            self.jitter,
        )
        final = eps[-1] if num_steps > 1 else u0.new_full((path.num_data,), self.step_size)
        return log_w.T, acceptance, final.to(torch.float64)


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
    step_size_jitter: float = 0.5,
    start: str = "guide",
    reverse_from: Mapping[str, torch.Tensor] | None = None,
    data_plate: str | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    device: str | torch.device | None = None,
    precision: str = "highest",
) -> AIS:
    r"""Estimate :math:`\log p(x_n)` of every data point by annealed importance sampling.

    :math:`K` chains per data point start from :math:`f_0` and are annealed to :math:`p(z \mid x_n)`
    over :math:`T` steps of HMC (see the module docstring): :math:`\log \frac1K \sum_k w_k` is a
    stochastic lower bound on :math:`\log p(x_n)`; with ``reverse_from``, exact posterior draws of
    the latents (:func:`~pyrovae.bdmc`), the chains run backwards and :math:`-\log \frac1K \sum_k
    w_k` is a stochastic upper bound (Grosse et al. 2015). Every latent must be continuous. The
    data are swept as by :func:`~pyrovae.log_likelihood`; results come back on the CPU.

    :param callable model: model ``model(*data, *model_args, **model_kwargs)``, its latents continuous.
    :param callable guide: guide with the same signature (:math:`f_0` where ``start="guide"``).
    :param data: a tensor of shape ``(N, ...)``, a tuple of tensors sharing the leading ``N`` or a
        data set, every column passed to the model and guide (see :class:`~pyrovae.data.DataSource`).
    :param int num_steps: :math:`T`, annealing steps (Wu et al. 2017 use 1000 to 10,000s).
    :param int num_chains: :math:`K`, chains per data point.
    :param schedule: ``"sigmoid"``, ``"linear"`` or the :math:`\beta_t` (see :func:`annealing_schedule`).
    :param int leapfrog_steps: leapfrog steps per HMC trajectory.
    :param float step_size: initial leapfrog step size.
    :param float target_accept: acceptance probability the step sizes are adapted toward.
    :param bool adapt_step_size: adapt each data point's step sizes in a pilot of
        :math:`P = \max(1, \lfloor K/4 \rfloor)` more chains, run beside the :math:`K` chains, whose
        weights are left out so that :math:`\mathbb E[w]` stays exact (module docstring); else every
        transition has ``step_size``.
    :param float step_size_jitter: :math:`j`: each chain's step size at each transition is multiplied by a
        factor drawn uniformly from :math:`[1 - j, 1 + j]` (0 for none; below 1).
    :param str start: :math:`f_0`, ``"guide"`` or ``"prior"``.
    :param dict reverse_from: site name to exact posterior draws, one per data point, shaped as
        the site's value in the model (without chains); runs reverse AIS.
    :param str data_plate: name of the data plate (default: found, see
        :func:`~pyrovae.infer.pair.find_data_plate`).
    :param int batch_size: data points per chunk (default: about 8192 chains x data points).
    :param int seed: seed; each chunk's draws are seeded from ``(seed, first index)`` (a reverse pilot's
        from a stream of its own).
    :param bool progress: show a progress bar over annealing steps.
    :param tuple model_args: extra positional arguments after the data.
    :param dict model_kwargs: keyword arguments of the model and guide.
    :param device: where to compute (see :mod:`pyrovae.devices`); default: the model's device.
    :param str precision: the arithmetic of the chains (:mod:`pyrovae.precision`), as for
        :func:`~pyrovae.log_likelihood`; recorded in the result.
    :rtype: AIS
    """
    check_options(("batch_size",), num_steps=num_steps, batch_size=batch_size, target_accept=target_accept)
    start_time, reverse = time.perf_counter(), reverse_from is not None
    betas = annealing_schedule(schedule, num_steps)
    num_steps, passes = (
        len(betas) - 1,
        2 if adapt_step_size and reverse else 1,
    )  # the reverse pilot's way forward too
    target = target_accept if adapt_step_size else None
    chains = (num_chains, start, leapfrog_steps, step_size, target, reverse_from, seed, step_size_jitter)
    annealing = _Annealing(betas.flip(0) if reverse else betas, *chains)
    with seeded(seed):
        placement = dict(
            device=device, model_kwargs=model_kwargs, data_plate=data_plate, model_args=model_args
        )
        bar = dict(progress=progress, desc="reverse AIS" if reverse else "AIS", unit="step")
        pilot = _pilot_size(num_chains, adapt_step_size)
        chunk_size = batch_size or max(1, _TARGET_ROWS // (num_chains + pilot))

        def work(lo: int, hi: int) -> int:  # annealing steps per chunk, the pilot's included
            return num_steps * passes

        options = dict(seed=seed, work=work, precision=precision, **placement, **bar)
        sweep, pair = sweep_pair(model, guide, data, chunk_size, **options)
        itemsize = max(t.element_size() for t in sweep.args(0, 1) if torch.is_tensor(t))
        need = MEMORY_SAFETY * itemsize * pair.numel_per_particle * (num_chains + pilot)
        check_memory("num_chains", num_chains, need, sweep.device, "one data point's chains")
        log_w, acceptance, step_sizes = sweep.map(functools.partial(annealing, pair))
    log_px, log_px_se, ess, _ = reduce_log_weights(log_w)
    fields = (-log_px if reverse else log_px, log_px_se, ess, acceptance, step_sizes, log_w, num_steps)
    name = schedule if isinstance(schedule, str) else "custom"
    settings = dict(precision=precision, elapsed=time.perf_counter() - start_time)
    return AIS(*fields, leapfrog_steps, name, start, reverse, pilot, **settings)


def _chunk_of(
    path: AnnealingPath, values: Mapping[str, torch.Tensor], lo: int, hi: int
) -> dict[str, torch.Tensor]:
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
