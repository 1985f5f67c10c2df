r"""The model/guide contract: one place that traces a pair, checks it and turns it into log-weights.

Every evaluator and importance-weighted estimator of pyrovae asks the same of a model/guide pair
and does the same with it:

1. **Trace** the guide and the model replayed against it (:func:`trace_pair`), optionally inside an
   outer plate of :math:`K` particles at dim ``-(max_plate_nesting + 1)``, as Pyro's
   :class:`~pyro.infer.RenyiELBO` vectorizes its particles. Sites the guide or model marks
   ``infer={"enumerate": "parallel"}`` are enumerated at the dims left of the particle plate.
2. **Check** the pair (:func:`check_pair`): every sample site lies in the *data plate*, the plate every
   observed site shares (:func:`find_data_plate`; named ``"data"`` by convention), whose size is the number of
   data points passed in; the guide proposes every latent of the model and nothing else; enumeration is
   parallel; for reparameterized estimators, every latent of the guide has ``rsample``.
3. **Reduce** the per-site log-densities to one log-weight per particle *and per data point*
   (:func:`log_weights`),

   .. math:: \log w_k(x_n) = \log p(x_n, z_{k}) - \log q(z_{k} \mid x_n),

   each site's batch-shaped log-density summed over every dim but the particle and data dims. An enumerated
   discrete latent :math:`y` is summed out, :math:`w_k = \sum_y p(x, y, z_k^{(y)}) / q(z_k^{(y)} \mid x, y)`:
   the guide's :math:`q(y \mid x)` cancels (see :mod:`pyrovae.infer.importance`).

:class:`Pair` probes a pair once on one data point and keeps what every chunk needs: the data
plate, the plate nesting, the enumerated sites, and whether the analytic-KL ELBO applies. A new
evaluation method is a file that uses these public functions.
"""

from __future__ import annotations

import contextlib

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from torch.distributions import kl_divergence as torch_kl_divergence

from pyrovae import devices
from pyrovae.errors import ConfigError
from pyrovae.infer.checks import check_pair, dtype_error, shape_error
from pyrovae.infer.sites import data_frame, find_data_plate, latents, plate_nesting, scored_sites
from pyrovae.infer.sweep import Sweep

__all__ = [
    "PARTICLE_PLATE",
    "Pair",
    "kl_divergence",
    "log_density",
    "log_weights",
    "reduce_site",
    "replay_trace",
    "site_log_density",
    "sweep_pair",
    "trace_pair",
]

#: name of the outer plate that vectorizes the particles (importance samples, AIS chains)
PARTICLE_PLATE = "_particles"
#: particles of the second probe of :class:`Pair`, which checks that the pair vectorizes
PROBE_PARTICLES = 4


def replay_trace(values: dict[str, torch.Tensor], like) -> poutine.Trace:
    """A trace holding ``values`` as latent sites (with the ``infer`` of ``like``'s sites), for
    :func:`~pyro.poutine.replay`."""
    trace = poutine.Trace()
    for name, value in values.items():
        trace.add_node(name, type="sample", is_observed=False, value=value, infer=like.nodes[name]["infer"])
    return trace


def trace_pair(
    model,
    guide,
    args: tuple,
    kwargs: dict,
    num_particles: int | None = None,
    particle_dim: int = -1,
    *,
    copy_latents: bool = False,
    replace=None,
):
    """Trace the guide, then the model replayed against it; returns ``(model_trace, guide_trace)``.

    With ``num_particles``, both run inside the particle plate at ``particle_dim``, and sites marked
    for parallel enumeration are enumerated at the dims left of it (as
    :class:`~pyro.infer.TraceEnum_ELBO` does left of the plates). With ``copy_latents`` the model
    is replayed against copies of the guide's latent values (so that gradients reaching the model
    through them can be reweighted, as DReG does); with ``replace``, a function of the guide's
    trace that returns latent values by site name, against those values (the guide's means, say).
    """
    plate = contextlib.nullcontext()
    if num_particles is not None:
        plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim)
        guide = poutine.enum(guide, first_available_dim=particle_dim - 1)
        model = poutine.enum(model, first_available_dim=particle_dim - 1)
    with plate:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        replayed = guide_trace
        if copy_latents:
            replayed = replay_trace({n: v.clone() for n, v in latents(guide_trace).items()}, guide_trace)
        elif replace is not None:
            replayed = replay_trace(replace(guide_trace), guide_trace)
        model_trace = poutine.trace(poutine.replay(model, trace=replayed)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def site_log_density(
    site: dict,
    particle_dim: int,
    data_plate: str,
    shape: tuple[int, int],
    *,
    value: torch.Tensor | None = None,
    scale=None,
    enumerated: bool = False,
) -> torch.Tensor:
    """A site's masked, event-summed log-density at its value (or ``value``), summed over every
    batch dim but the particle and data dims to ``shape = (particles, data points)``.

    The site's scale is ignored (nats per data point) unless ``scale`` is given: then the density
    is multiplied by ``site["scale"] / scale``. With ``enumerated``, the enumeration dims left of
    the particle dim are kept (aligned from the right, of size 1 where the site does not depend
    on them) and the result is not expanded.
    """
    fn = site["fn"]
    lp = fn.log_prob(site["value"] if value is None else value, *site["args"], **site["kwargs"])
    lp = scale_and_mask(lp, 1.0 if scale is None else site["scale"] / scale, site["mask"])
    return reduce_site(lp, site, particle_dim, data_plate, shape, enumerated=enumerated)


def reduce_site(
    lp, site: dict, particle_dim: int, data_plate: str, shape: tuple[int, int], *, enumerated: bool = False
) -> torch.Tensor:
    """Sum ``lp``, a tensor in ``site``'s batch shape (a log-density, a KL divergence, a log-Jacobian), over
    every dim but the particle and data dims, to ``shape``; ``enumerated`` as for :func:`site_log_density`."""
    if not torch.is_tensor(lp):
        lp = torch.as_tensor(float(lp))
    need = -particle_dim
    if lp.dim() < need:
        lp = lp.reshape((1,) * (need - lp.dim()) + lp.shape)
    n = lp.dim()
    data_dim = n + data_frame(site, data_plate).dim
    first = n + particle_dim if enumerated else 0
    other = [i for i in range(first, n) if i not in (n + particle_dim, data_dim)]
    if other:
        lp = lp.sum(other)
    return lp if enumerated else lp.expand(shape)


def log_density(
    trace,
    particle_dim: int,
    data_plate: str,
    shape: tuple[int, int],
    *,
    values: dict[str, torch.Tensor] | None = None,
    scale=None,
    enumerated: bool = False,
    skip_enumerated: bool = False,
) -> torch.Tensor:
    """The sum of :func:`site_log_density` over a trace's scored sites (at ``values`` where given);
    sites marked for enumeration are left out with ``skip_enumerated``."""
    total = torch.zeros(())
    values = values or {}
    for name, site in scored_sites(trace):
        if skip_enumerated and site["infer"].get("enumerate"):
            continue
        total = total + site_log_density(
            site, particle_dim, data_plate, shape, value=values.get(name), scale=scale, enumerated=enumerated
        )
    return total


def log_weights(
    model_trace,
    guide_trace,
    particle_dim: int,
    data_plate: str,
    shape: tuple[int, int],
    *,
    scale=None,
    enumerated: bool = False,
) -> torch.Tensor:
    r"""The ``(K, B)`` log-weights :math:`\log p(x, z_k) - \log q(z_k \mid x)` of a pair traced by
    :func:`trace_pair` in the particle plate; with ``enumerated``, the enumerated values summed
    out (the guide's probabilities of an enumerated site cancel and are left out). ``scale`` as in
    :func:`site_log_density`."""
    log_p = log_density(model_trace, particle_dim, data_plate, shape, scale=scale, enumerated=enumerated)
    log_q = log_density(
        guide_trace, particle_dim, data_plate, shape, scale=scale, enumerated=enumerated, skip_enumerated=True
    )
    log_w = log_p - log_q
    if log_w.dim() > 2:  # sum the weights over the enumerated values
        log_w = log_w.flatten(0, -3).logsumexp(0)
    return log_w.expand(shape)


def kl_divergence(q, p) -> torch.Tensor:
    """:func:`torch.distributions.kl_divergence` of ``q`` and ``p`` expanded to their common batch
    shape (raises :class:`NotImplementedError` where no closed form is registered).

    A model site replayed against a guide's values is not expanded by the plates around it, so its batch shape
    can lack the guide's particle dims; and some closed forms (Bernoulli's) index with one distribution's
    parameters into a tensor shaped like the other's, which fails unless the shapes agree."""
    if q.batch_shape != p.batch_shape:
        shape = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
        try:
            q, p = q.expand(shape), p.expand(shape)
        except NotImplementedError:  # a distribution without expand: as given, torch may broadcast
            pass
    return torch_kl_divergence(q, p)


def _cuda_devices(args, kwargs) -> list[torch.device]:
    """The CUDA devices of the tensors among ``args`` and the values of ``kwargs``."""
    values = (*args, *kwargs.values())
    return sorted({a.device for a in values if torch.is_tensor(a) and a.is_cuda}, key=str)


class Pair:
    """A model/guide pair probed on the data ``args`` (of ``num_data`` data points, one by default): checked
    (see :func:`check_pair`), its data plate and plate nesting found, its enumerated sites listed; then traced
    once more with ``num_particles`` particles, to check that it vectorizes.

    The probe runs under Pyro's validation, without gradients, and leaves the random state as it
    was. A pair that fails when its samples are vectorized in the particle plate, or whose guide
    proposes latents of the wrong shape, or that fails on the data's dtype, is refused with a
    :class:`~pyrovae.errors.ConfigError` or :class:`~pyrovae.errors.DataError` that says why.

    :ivar dict kwargs: the keyword arguments it was probed with.
    :ivar str data_plate: the data plate's name.
    :ivar int max_plate_nesting: vectorized plate dims the pair uses.
    :ivar int particle_dim: the dim of the particle plate, ``-(max_plate_nesting + 1)``.
    :ivar list enumerated: the names of the sites enumerated in parallel.
    :ivar str kl_note: why the analytic-KL ELBO is unavailable, or ``None``.
    :ivar int numel_per_particle: elements of every site's value and parameters, per particle.
    """

    def __init__(
        self,
        model,
        guide,
        args: tuple,
        kwargs: dict | None = None,
        data_plate: str | None = None,
        *,
        num_data: int = 1,
        reparameterized: str | None = None,
        num_particles: int = PROBE_PARTICLES,
    ):
        self.model, self.guide = model, guide
        self.kwargs = kwargs = dict(kwargs or {})
        state = pyro.util.get_rng_state()  # torch's CPU generator, random's and numpy's
        cuda = _cuda_devices(args, kwargs)  # whose generators Pyro's state leaves out
        try:
            with (
                poutine.block(),
                torch.no_grad(),
                pyro.validation_enabled(True),
                torch.random.fork_rng(devices=cuda),
            ):
                model_trace, guide_trace = self._probe(args, kwargs)
                self.data_plate = find_data_plate(model_trace, num_data, data_plate)
                check_pair(
                    model_trace, guide_trace, self.data_plate, num_data, reparameterized=reparameterized
                )
                self.max_plate_nesting = plate_nesting(model_trace, guide_trace)
                self.particle_dim = -self.max_plate_nesting - 1
                try:
                    model_trace, guide_trace = trace_pair(
                        model, guide, args, kwargs, num_particles, self.particle_dim
                    )
                except Exception as e:
                    raise ConfigError(
                        f"the model/guide pair failed when its samples were vectorized in an outer plate "
                        f"{PARTICLE_PLATE!r} at dim {self.particle_dim} (max_plate_nesting = "
                        f"{self.max_plate_nesting}): {type(e).__name__}: {e}. Write the model and guide so "
                        "that extra batch dimensions on the left broadcast (index from the right, e.g. "
                        "x.shape[-1], and reshape only trailing dimensions)."
                    ) from e
        finally:
            pyro.util.set_rng_state(state)
        numel = 0
        for trace in (model_trace, guide_trace):
            for _, site in scored_sites(trace):
                fn = site["fn"]
                numel += site["value"].numel() + 3 * (fn.batch_shape + fn.event_shape).numel()
        self.numel_per_particle = numel // num_particles
        self.enumerated = [
            name
            for trace in (guide_trace, model_trace)
            for name, site in scored_sites(trace)
            if site["infer"].get("enumerate")
        ]
        self.kl_note = self._kl_note(model_trace, guide_trace)

    def _probe(self, args, kwargs):
        """The pair traced on the probe's data, with the latents' shapes compared before the model
        is replayed against them, and dtype mistakes named."""
        model, guide = self.model, self.guide
        try:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            prior_trace = poutine.trace(model).get_trace(*args, **kwargs)
        except (RuntimeError, TypeError) as e:
            error = dtype_error(model, guide, args, e) or shape_error(args, e)
            if error is None:
                raise
            raise error from e
        for name, value in latents(guide_trace).items():
            site = prior_trace.nodes.get(name)
            if site is None or site["type"] != "sample" or site["is_observed"]:
                continue
            event = site["fn"].event_shape
            if value.shape[value.dim() - len(event) :] != event:
                raise ConfigError(
                    f"latent site {name!r}: the guide draws values of shape {tuple(value.shape)}, but the "
                    f"model's distribution there has event shape {tuple(event)}; make the guide's latent "
                    f"the model's size (e.g. the encoder's latent_dim)"
                )
        return trace_pair(model, guide, args, kwargs)

    @staticmethod
    def _kl_note(model_trace, guide_trace) -> str | None:
        """Why the analytic-KL ELBO is unavailable, or ``None`` if it is available."""
        enumerated = [
            n for t in (guide_trace, model_trace) for n, s in scored_sites(t) if s["infer"].get("enumerate")
        ]
        if enumerated:
            return (
                f"analytic-KL ELBO omitted: site {enumerated[0]!r} is enumerated, and its "
                "values are summed out of the importance weights"
            )
        names = [n for n, s in scored_sites(model_trace) if not s["is_observed"]]
        guide_order = [n for n, _ in scored_sites(guide_trace) if n in set(names)]
        if names != guide_order:
            return (
                "analytic-KL ELBO omitted: the guide samples the latents in a different order from the "
                f"model ({', '.join(guide_order)} vs {', '.join(names)}), so the mean-field condition "
                "of Pyro's TraceMeanField_ELBO cannot be verified"
            )
        for name in names:
            q, p = guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"]
            try:
                kl_divergence(q, p)
            except NotImplementedError:
                return (
                    f"analytic-KL ELBO omitted: no closed-form KL divergence is registered for site "
                    f"{name!r} ({type(q).__name__} in the guide, {type(p).__name__} in the model)"
                )
        return None

    def traces(
        self, args: tuple, kwargs: dict, num_particles: int, *, copy_latents: bool = False, replace=None
    ):
        """:func:`trace_pair` in this pair's particle plate."""
        plate = (num_particles, self.particle_dim)
        return trace_pair(
            self.model, self.guide, args, kwargs, *plate, copy_latents=copy_latents, replace=replace
        )

    def particles(self, num_particles: int) -> pyro.plate:
        """This pair's particle plate of ``num_particles``, for a trace of the model or the guide
        alone (the prior's draws of AIS, the model conditioned on a chain's state)."""
        return pyro.plate(PARTICLE_PLATE, num_particles, dim=self.particle_dim)

    def replay(
        self, fn, values: dict[str, torch.Tensor], like, args: tuple, kwargs: dict, num_particles: int
    ):
        """The trace of ``fn`` (the model or the guide) replayed against the latent ``values`` (with
        the ``infer`` of ``like``'s sites) in this pair's particle plate: the guide's density at
        other values than it drew, or the model's at detached ones."""
        replayed = poutine.trace(poutine.replay(fn, trace=replay_trace(values, like)))
        with self.particles(num_particles):
            return replayed.get_trace(*args, **kwargs)

    def log_weights(self, model_trace, guide_trace, shape: tuple[int, int], *, scale=None) -> torch.Tensor:
        """:func:`log_weights` of traces from :meth:`traces`."""
        where = (self.particle_dim, self.data_plate, shape)
        return log_weights(model_trace, guide_trace, *where, scale=scale, enumerated=bool(self.enumerated))


def sweep_pair(
    model,
    guide,
    data,
    chunk_size: int,
    *,
    device=None,
    model_kwargs=None,
    data_plate=None,
    probe=None,
    **options,
) -> tuple[Sweep, Pair]:
    """The :class:`~pyrovae.infer.Sweep` over ``data`` in chunks of ``chunk_size`` on the pair's
    device (the model's, or ``device``; ``options`` as for the sweep), and the :class:`Pair` probed
    on its first data point (``probe``: its options), with ``model_kwargs`` moved to that device
    (:attr:`Pair.kwargs`): how every evaluation starts."""
    dev = devices.place(model, guide, device=device)
    sweep = Sweep(data, chunk_size, device=dev, **options)
    kwargs = devices.move_kwargs(model_kwargs, dev)
    return sweep, Pair(model, guide, sweep.args(0, 1), kwargs, data_plate, **(probe or {}))
