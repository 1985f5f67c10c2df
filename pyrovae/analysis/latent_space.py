r"""The latent space of any model/guide pair: its latent sites, the guide's posterior means
(:func:`encode`) and the likelihood at chosen latent values (:func:`decode`).

Nothing here needs a decoder network: the latent sites are the guide's (found from its trace,
named as the model names them), an *encoding* is the mean of each site's guide distribution,

.. math:: \bar z(x) = \mathbb{E}_{q(z \mid x)}[z],

(for a site whose guide distribution depends on other latents, the mean is averaged over draws
of those: :math:`\mathbb{E}_{q(z_1 \mid x)}\, \mathbb{E}_{q(z_2 \mid x, z_1)}[z_2]`), and a
*decoding* runs the model with chosen latent values: the sites given take their values, every
other latent site its conditional mean given the sites drawn before it (or a draw from it), and
the result is the mean (or a draw) of the model's observed distribution :math:`p(x \mid z)`.

**The hook.** Every picture of :mod:`pyrovae.plots` and :func:`pyrovae.latent_stats` takes a *pair*: an object
with ``model`` and ``guide`` methods (:class:`~pyrovae.VAE`, :class:`~pyrovae.HVAE`, :class:`~pyrovae.CVAE` or
a class of your own) or a ``(model, guide)`` tuple. The model's arguments are the data rows (a tensor, or a
tuple such as ``(x, c)``), as for every evaluator; the model must accept data rows whose latent sites are
conditioned, which any model written with ``pyro.sample`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger

from pyrovae import devices
from pyrovae.data.source import DataSource
from pyrovae.errors import ConfigError
from pyrovae.infer import Chunk
from pyrovae.infer.pair import Pair, sweep_pair, trace_pair
from pyrovae.infer.sites import data_frame, scored_sites
from pyrovae.options import check_options
from pyrovae.seeds import seeded

__all__ = [
    "DecodeMessenger",
    "as_pair",
    "decode",
    "encode",
    "interpolation",
    "latent_sites",
    "per_datapoint",
    "repeat_rows",
    "rows",
    "site_mean",
]


def as_pair(pair) -> tuple:
    """The ``(model, guide)`` of ``pair``: a ``(model, guide)`` tuple, or an object with ``model``
    and ``guide`` methods."""
    if isinstance(pair, (tuple, list)) and len(pair) == 2 and all(callable(f) for f in pair):
        return tuple(pair)
    model, guide = getattr(pair, "model", None), getattr(pair, "guide", None)
    if callable(model) and callable(guide):
        return model, guide
    raise ConfigError(
        f"expected a model/guide pair: an object with model and guide methods (pyrovae.VAE, HVAE, CVAE or "
        f"a class of your own) or a (model, guide) tuple; got {type(pair).__name__}"
    )


def rows(data, num: int | None = None) -> tuple[torch.Tensor, ...]:
    """The model's arguments for data rows: ``data`` (a tensor of rows, a tuple of such tensors,
    or a data set), the first ``num`` rows if given."""
    source = DataSource(data)
    return source.chunk(0, source.num_data if num is None else min(num, source.num_data))


def repeat_rows(args: tuple, index: torch.Tensor) -> tuple:
    """The data rows ``args`` at ``index`` (e.g. one row repeated)."""
    return tuple(a[index.to(a.device)] if torch.is_tensor(a) else a for a in args)


def per_datapoint(value: torch.Tensor, site: dict, particle_dim: int, data_plate: str) -> torch.Tensor:
    """``value``, a tensor of ``site``'s shape traced in a particle plate at ``particle_dim``,
    averaged over the particles, with the data dim first: ``(N, *rest)``, ``rest`` the site's
    other batch dims and its event dims."""
    event_dim = site["fn"].event_dim
    batch_dims = value.dim() - event_dim
    value = value.reshape((1,) * max(0, -particle_dim - batch_dims) + value.shape)
    batch_dims = value.dim() - event_dim
    p = batch_dims + particle_dim
    d = batch_dims + data_frame(site, data_plate).dim
    value = value.movedim(d, 0)
    return value.mean(p + (1 if p < d else 0))


def site_mean(site: dict) -> torch.Tensor:
    """The mean of a site's distribution in its full shape; its value where the mean is not implemented."""
    try:
        mean = site["fn"].mean
    except NotImplementedError:
        return site["value"]
    return mean.expand(site["value"].shape)


def latent_sites(pair, data, *, data_plate: str | None = None, model_kwargs: dict | None = None) -> list[str]:
    """The names of the pair's latent sites in the order the model draws them, probed on the first
    data point of ``data``."""
    model, guide = as_pair(pair)
    args = devices.move(rows(data, 1), devices.place(model, guide))
    Pair(model, guide, args, model_kwargs, data_plate)  # checks the pair, with messages
    with torch.no_grad(), seeded(0), poutine.block():
        model_trace, guide_trace = trace_pair(model, guide, args, dict(model_kwargs or {}))
    guided = {name for name, site in scored_sites(guide_trace) if not site["is_observed"]}
    return [name for name, site in scored_sites(model_trace) if name in guided]


def encode(
    pair,
    data,
    *,
    sites: Iterable[str] | None = None,
    num_particles: int = 1,
    batch_size: int = 500,
    data_plate: str | None = None,
    model_kwargs: dict | None = None,
    seed: int | None = 0,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    r"""The guide's posterior means :math:`\mathbb{E}_q[z \mid x]` of every latent site (or of
    ``sites``) for every data point of ``data``: ``{site: (N, *shape)}`` on the CPU.

    A site whose guide distribution depends on other latents is averaged over ``num_particles``
    draws of those (Rao-Blackwellized: the mean of each draw's distribution, not the draw).

    :param pair: a model/guide pair (see the module docstring).
    :param data: the data rows.
    :param int batch_size: data points per chunk.
    :param int seed: the seed each chunk's draws are seeded from, with the chunk's first data point
        (:meth:`~pyrovae.infer.Sweep.map`); ``None`` leaves the random state alone.
    :param device: where to compute (default: the model's device); the results are on the CPU.
    """
    model, guide = as_pair(pair)
    check_options(("seed",), num_particles=num_particles, batch_size=batch_size, seed=seed)
    placement = dict(device=device, model_kwargs=model_kwargs, data_plate=data_plate)
    sweep, probe = sweep_pair(model, guide, data, batch_size, seed=seed, desc="encode", **placement)
    kwargs = probe.kwargs
    with torch.no_grad(), seeded(0), poutine.block():
        _, guide_trace = probe.traces(sweep.args(0, 1), kwargs, 1)
    latent = [name for name, site in scored_sites(guide_trace) if not site["is_observed"]]
    wanted = set(latent if sites is None else sites)
    if wanted - set(latent):
        raise ConfigError(
            f"no latent site named {', '.join(sorted(wanted - set(latent)))} in the guide; "
            f"its latent sites are: {', '.join(latent) or 'none'}"
        )
    names = [name for name in latent if name in wanted]

    def means(chunk: Chunk) -> tuple[torch.Tensor, ...]:
        _, trace = probe.traces(chunk.args, kwargs, num_particles)
        nodes = [trace.nodes[name] for name in names]
        return tuple(per_datapoint(site_mean(s), s, probe.particle_dim, probe.data_plate) for s in nodes)

    return dict(zip(names, sweep.map(means), strict=True)) if names else {}


class DecodeMessenger(Messenger):
    """Fix the latent sites of a model: those in ``values`` at their values, every other site named
    in ``latent`` at its distribution's mean (or a draw from it with ``fill="sample"``)."""

    def __init__(self, values: dict[str, torch.Tensor], latent: Iterable[str], fill: str = "mean"):
        super().__init__()
        self.values, self.latent, self.fill = values, set(latent), fill

    def _pyro_sample(self, msg):
        name = msg["name"]
        if name in self.values:
            value = self.values[name]
        elif name in self.latent and self.fill == "mean":
            try:
                value = msg["fn"].mean
            except NotImplementedError:
                return
        else:
            return
        msg["value"] = value.expand(msg["fn"].batch_shape + msg["fn"].event_shape)
        msg["is_observed"] = True


def decode(
    pair,
    values: dict[str, torch.Tensor],
    data,
    *,
    site: str | None = None,
    fill: str = "mean",
    draw: bool = False,
    model_kwargs: dict | None = None,
    seed: int | None = 0,
) -> torch.Tensor:
    r"""The mean of the model's observed distribution :math:`p(x \mid z)` (or a draw from it with
    ``draw``) at the latent ``values`` ``{site: (B, *shape)}``, one row per data row of ``data``.

    Latent sites not in ``values`` take their conditional mean given the sites drawn before them
    (``fill="mean"``) or a draw from it (``fill="sample"``): :math:`z_1 = \mathbb{E}[z_1 \mid z_2]` in an HVAE
    decoded at :math:`z_2`. ``data`` gives the model's arguments for ``B`` data points (conditions such as a
    CVAE's labels are read from them; the observed values are not). ``site`` names the observed site (default:
    the one with the most elements per data point). Computed on the model's device; the result is on the CPU.
    """
    if fill not in ("mean", "sample"):
        raise ConfigError(f"fill must be 'mean' or 'sample', got {fill!r}")
    model, guide = as_pair(pair)
    dev = devices.place(model, guide)
    args = devices.move(rows(data), dev)
    kwargs = dict(model_kwargs or {})
    latent = latent_sites((model, guide), args, model_kwargs=kwargs)
    unknown = set(values) - set(latent)
    if unknown:
        raise ConfigError(
            f"no latent site named {', '.join(sorted(unknown))}; "
            f"the pair's latent sites are: {', '.join(latent)}"
        )
    values = {name: v.to(dev) for name, v in values.items()}
    with torch.no_grad(), seeded(seed), poutine.block(), pyro.validation_enabled(False):
        with DecodeMessenger(values, latent, fill):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        observed = {name: s for name, s in scored_sites(trace) if name not in latent}
        if not observed:
            raise ConfigError("the model has no observed site to decode")
        if site is None:
            site = max(observed, key=lambda n: observed[n]["fn"].shape().numel())
        elif site not in observed:
            raise ConfigError(f"no observed site named {site!r}; the model's are: {', '.join(observed)}")
        fn = observed[site]["fn"]
        # drawn after the latents, from the same stream: the same seed gives the same latents
        out = fn.sample() if draw else fn.mean
    return out.cpu()


def interpolation(a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "linear") -> torch.Tensor:
    r"""``steps`` points from ``a`` to ``b`` (tensors of one shape), stacked on a new first dim:
    linear, :math:`(1 - t) a + t b`, or spherical (Shoemake's slerp, for codes under an isotropic
    Gaussian prior, whose norms concentrate), :math:`\frac{\sin((1 - t)\omega)}{\sin \omega} a +
    \frac{\sin(t \omega)}{\sin \omega} b` with :math:`\cos \omega = \hat a \cdot \hat b`."""
    if method not in ("linear", "spherical"):
        raise ConfigError(f"method must be 'linear' or 'spherical', got {method!r}")
    if not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps must be an integer of at least 2, got {steps!r}")
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).reshape((steps,) + (1,) * a.dim())
    if method == "spherical":
        fa, fb = a.flatten().double(), b.flatten().double()
        norms = float(fa.norm() * fb.norm())
        if norms == 0.0:
            raise ConfigError("spherical interpolation needs two non-zero codes; use method='linear'")
        omega = math.acos(max(-1.0, min(1.0, float(fa @ fb) / norms)))
        if math.pi - omega < 1e-3:
            raise ConfigError(
                "spherical interpolation between opposite codes is undefined (every great circle joins "
                "them); use method='linear' or other inputs"
            )
        if omega >= 1e-6:  # else the same direction, where slerp is linear
            return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / math.sin(omega)
    return (1 - t) * a + t * b
