r"""How a model uses its latents: active units, KL per dimension, and the ELBO decomposed.

For any model/guide pair, :func:`latent_stats` reports, per latent site and per dimension
(the elements of the site's value for one data point, flattened):

- **Activity** (Burda et al. 2015, "Importance weighted autoencoders", §5.2): the covariance
  over the data of the posterior mean, :math:`A_u = \mathrm{Cov}_x\big(\mathbb{E}_{q(z \mid
  x)}[z_u]\big)`; unit :math:`u` is *active* when :math:`A_u` exceeds a threshold (0.01).
- **KL per dimension**, :math:`\mathbb{E}_x \mathrm{KL}\big(q(z_u \mid x) \,\|\, p(z_u)\big)`, where the guide
  and the prior of the site factorize over dimensions (a conditional prior such as an HVAE's :math:`p(z_1 \mid
  z_2)` at the guide's draws of its parents); analytic where ``torch.distributions.kl_divergence`` knows the
  pair, else Monte Carlo over the particles. The dimensions' KLs sum to the site's KL; a prior that does not
  factorize (the VampPrior's mixture) has no per-dimension KL, only the site's.
- **The ELBO decomposed** (Hoffman & Johnson 2016, "ELBO surgery"):

  .. math::
     \mathrm{ELBO} = \underbrace{\mathbb{E}_x\mathbb{E}_q[\log p(x \mid z)]}_{\text{reconstruction}}
     - \sum_{\text{sites}} \overline{\mathrm{KL}}, \qquad
     \overline{\mathrm{KL}} = \mathbb{E}_x \mathrm{KL}(q(z \mid x) \,\|\, p(z))
     = \underbrace{I_q(x; z)}_{\text{index-code MI}} + \underbrace{\mathrm{KL}(q(z) \,\|\,
     p(z))}_{\text{marginal KL}},

  with :math:`q(z) = \frac1N \sum_n q(z \mid x_n)` the aggregate posterior of the data set. Both terms are
  estimated with one draw :math:`z_n \sim q(z \mid x_n)` per data point and the exact mixture density
  :math:`\log q(z_n) = \operatorname{logsumexp}_m \log q(z_n \mid x_m) - \log N` over all :math:`N` data
  points (:math:`N^2` density evaluations, chunked): :math:`I = \mathbb{E}_n[\log q(z_n \mid x_n) - \log
  q(z_n)]` and :math:`\mathrm{KL}(q(z)\|p(z)) = \mathbb{E}_n[\log q(z_n) - \log p(z_n)]`. These are unbiased
  for the aggregate posterior *of the data passed*, which is what Hoffman & Johnson define; as estimates for
  the population they are biased: :math:`I \le \log N` (each :math:`z_n` is most probable under its own
  :math:`x_n`), so the MI is underestimated where it approaches :math:`\log N` and the marginal KL is
  overestimated by the finite mixture's roughness. Use all the data you can. The decomposition needs a site
  whose guide depends on :math:`x` alone and whose prior on no other latent (an HVAE's top layer, not its
  bottom one) and whose guide distribution's only batch dim is the data plate.
- **Posterior collapse**: a dimension has collapsed when it is inactive and (where defined) its
  KL is below 0.01 nats; a site has collapsed when all its dimensions have.
"""

from __future__ import annotations

import math
import time
from collections import namedtuple
from dataclasses import dataclass

import pandas as pd
import pyro
import pyro.poutine as poutine
import torch

from pyrovae import distributed
from pyrovae.analysis.latent_kl import aggregate_terms, elementwise_kl, site_kl
from pyrovae.analysis.latent_space import per_datapoint, site_mean
from pyrovae.errors import ConfigError
from pyrovae.infer import Chunk
from pyrovae.infer.importance import LogWeights
from pyrovae.infer.pair import site_log_density
from pyrovae.infer.sites import scored_sites
from pyrovae.options import check_options
from pyrovae.results import Result, column, mean_stderr, table
from pyrovae.seeds import seeded

__all__ = ["ACTIVITY_THRESHOLD", "COLLAPSE_KL", "LatentStats", "latent_stats"]

#: Burda et al.'s threshold on the activity :math:`\mathrm{Cov}_x(\mathbb{E}_q[z_u])`
ACTIVITY_THRESHOLD = 0.01
#: KL (nats) below which an inactive dimension counts as collapsed
COLLAPSE_KL = 0.01


@dataclass(repr=False)
class LatentStats(Result):
    r"""Latent usage of a model/guide pair on a data set, from :func:`latent_stats`.

    :ivar pandas.DataFrame dims: one row per latent dimension: ``site``, ``dim``, ``activity``
        (:math:`\mathrm{Cov}_x(\mathbb{E}_q[z_u])`), ``active``, ``kl`` and ``kl_stderr`` (nats,
        mean over the data; NaN where the prior does not factorize), ``collapsed``.
    :ivar pandas.DataFrame sites: one row per latent site: ``dims``, ``active_units``, ``kl``, ``kl_stderr``,
        ``kl_method`` (``"analytic"`` or ``"monte carlo"``), ``mutual_information``, ``marginal_kl`` (with
        ``_stderr``; NaN where the decomposition does not apply, see ``note``), ``collapsed``, ``note``.
    :ivar torch.Tensor reconstruction: ``(N,)`` :math:`\mathbb{E}_q[\log p(x \mid z)]` per data point.
    :ivar torch.Tensor kl: ``(N,)`` the KL of all sites per data point.
    :ivar int num_particles: draws per data point.
    :ivar float threshold: the activity threshold.
    :ivar float elapsed: wall time in seconds.
    """

    dims: pd.DataFrame = table("latent", prefix="latent_")
    sites: pd.DataFrame = table("site", prefix="site_")
    reconstruction: torch.Tensor = column()
    kl: torch.Tensor = column()
    num_particles: int
    threshold: float = ACTIVITY_THRESHOLD
    elapsed: float = 0.0

    @property
    def elbo(self) -> torch.Tensor:
        """``(N,)`` ELBO per data point, reconstruction minus KL."""
        return self.reconstruction - self.kl

    @property
    def active_units(self) -> int:
        """Active dimensions over all sites."""
        return int(self.dims["active"].sum())

    @property
    def posterior_collapse(self) -> bool:
        """Whether every latent site has collapsed: the latents carry nothing about x."""
        return bool(self.sites["collapsed"].all())

    def summary(self) -> str:
        """A readable summary: the ELBO decomposed, then one line per site."""
        r, k, e = self.reconstruction, self.kl, self.elbo
        lines = [
            f"latent usage: N = {self.num_data} data points, {self.num_particles} draws each, "
            f"{self.active_units} of {len(self.dims)} dimensions active (Cov_x E_q[z] > {self.threshold:g})",
            f"  ELBO {float(e.mean()):.3f} ± {mean_stderr(e):.3f} = reconstruction "
            f"{float(r.mean()):.3f} ± {mean_stderr(r):.3f} - KL "
            f"{float(k.mean()):.3f} ± {mean_stderr(k):.3f} nats",
        ]
        for name, row in self.sites.iterrows():
            line = (
                f"  {name}: {row.active_units} of {row.dims} active, KL {row.kl:.3f} ± {row.kl_stderr:.3f} "
                f"({row.kl_method})"
            )
            if not math.isnan(row.mutual_information):
                line += (
                    f" = I(x; z) {row.mutual_information:.3f} ± {row.mutual_information_stderr:.3f}"
                    f" + marginal KL {row.marginal_kl:.3f} ± {row.marginal_kl_stderr:.3f}"
                    f" (I <= log N = {math.log(self.num_data):.2f})"
                )
            if row.collapsed:
                line += "  POSTERIOR COLLAPSE"
            lines.append(line)
            if row.note:
                lines.append(f"    {row.note}")
        lines.append(f"  elapsed {self.elapsed:.1f} s")
        return "\n".join(lines)

    def summary_table(self) -> pd.DataFrame:
        """The per-site table, shown in Jupyter."""
        return self.sites.drop(columns="note")

    def figures(self) -> dict:
        """The decomposition of the ELBO with standard errors, active units, and the table per site."""
        out = {
            "active_units": self.active_units,
            "num_dims": len(self.dims),
            "posterior_collapse": self.posterior_collapse,
        }
        for name in ("elbo", "reconstruction", "kl"):
            out.update(_mean_stderr(name, getattr(self, name)))
        return {**out, "sites": self.sites.to_dict("index")}

    def plot(self, path=None):
        """KL (where defined) and activity per dimension, each site's dimensions sorted by KL (else
        by activity), the activity threshold drawn: a figure, saved when ``path`` is given
        (:func:`pyrovae.plots.results.latent_usage`).

        :param path: where to save the figure, in the format its suffix names (PNG without one; see
            :func:`pyrovae.plots.save`); ``None`` only returns it.
        """
        from pyrovae.plots.results import latent_usage

        return latent_usage(self, path)


def _decomposition_note(first, second, name: str, pdim: int) -> str:
    """Why site ``name`` has no MI / marginal-KL decomposition, or ``""`` where it has one, from two
    ``(model, guide)`` traces ``first`` and ``second`` with different draws of the latents."""

    def depends_only_on_data(i: int) -> bool:  # the same distribution of the site in both traces
        a, b = first[i].nodes[name], second[i].nodes[name]
        value = a["value"]
        return bool(torch.allclose(a["fn"].log_prob(value), b["fn"].log_prob(value), rtol=1e-5, atol=1e-6))

    fn = first[1].nodes[name]["fn"]
    if not depends_only_on_data(1):
        why = "its guide depends on other latents"
    elif not depends_only_on_data(0):
        why = "its prior depends on other latents"
    elif len(fn.batch_shape) != -pdim or fn.batch_shape[pdim] != 2:
        why = "its guide has batch dims besides the data plate"
    else:
        return ""
    return f"{why}: no MI / marginal-KL decomposition"


#: what the probe tells of one latent site, the same on every rank (``kl_method``: ``"analytic"`` or
#: ``"monte carlo"``)
_Site = namedtuple("_Site", "name kl_method decomposable note")


#: the per-datapoint rows of one site in the main pass: kl, kl_dims, mean, z, lq, lp
SITE_ROWS = 6


def _probe(weights: LogWeights, seed: int | None, decompose: bool) -> list[_Site]:
    """The latent sites of the pair in the model's order, from two traces of two data points with
    two particles (every rank makes them, whatever its share of the data)."""
    pair, kwargs = weights.pair, weights.model_kwargs
    pdim, plate = pair.particle_dim, pair.data_plate
    with torch.no_grad(), pyro.validation_enabled(False), seeded(seed), poutine.block():
        args = weights.sweep.args(0, min(2, weights.sweep.num_data))
        first = pair.traces(args, kwargs, 2)
        second = pair.traces(args, kwargs, 2)
        names = [
            n for n, s in scored_sites(first[1]) if not s["is_observed"] and not s["infer"].get("enumerate")
        ]
        names.sort(key=list(first[0].nodes).index)
        sites = []
        for name in names:
            g, m = first[1].nodes[name], first[0].nodes[name]
            _, kl_method = site_kl(g, m, pdim, plate, (2, args[0].shape[0]))
            why = _decomposition_note(first, second, name, pdim) if decompose else ""
            notes = [why] if why else []
            if elementwise_kl(g["fn"], m["fn"], g["value"])[1] is None:
                notes.append("its prior or guide does not factorize over dimensions: KL per site only")
            sites.append(_Site(name, kl_method, decompose and not why, "; ".join(notes)))
    return sites


def _site_rows(g: dict, m: dict, decomposable: bool, pdim: int, plate: str, shape: tuple[int, int]) -> tuple:
    """The :data:`SITE_ROWS` per-datapoint rows of one site of a chunk's traces (guide site ``g``,
    model site ``m``): its KL, its KL per dimension (``None`` where it does not factorize), its
    posterior mean, and for a decomposable site the first particle's draw :math:`z_n` with
    :math:`\\log q(z_n \\mid x_n)` and :math:`\\log p(z_n)` (else ``None``)."""
    num = shape[1]
    kl, _ = site_kl(g, m, pdim, plate, shape)
    per_dim, _ = elementwise_kl(g["fn"], m["fn"], g["value"])
    if per_dim is not None:
        per_dim = per_datapoint(per_dim.expand(g["value"].shape), g, pdim, plate).reshape(num, -1).double()
    mean = per_datapoint(site_mean(g), g, pdim, plate).reshape(num, -1).double()
    draw = (None, None, None)
    if decomposable:
        draw = (
            g["value"].select(pdim - g["fn"].event_dim, 0),
            site_log_density(g, pdim, plate, shape)[0].double(),
            site_log_density(m, pdim, plate, shape, value=g["value"])[0].double(),
        )
    return kl.mean(0).double(), per_dim, mean, *draw


def _chunk_rows(weights: LogWeights, sites: list[_Site]):
    """The per-chunk function of the main pass: the reconstruction term, then the
    :data:`SITE_ROWS` rows of every site, of each data point of the chunk."""
    pair, kwargs, num_particles = weights.pair, weights.model_kwargs, weights.num_samples
    pdim, plate = pair.particle_dim, pair.data_plate

    def rows(chunk: Chunk) -> tuple:
        model_trace, guide_trace = pair.traces(chunk.args, kwargs, num_particles)
        shape = (num_particles, chunk.size)
        r = torch.zeros(())
        for name, site in scored_sites(model_trace):
            if name not in guide_trace.nodes and site["is_observed"]:
                r = r + site_log_density(site, pdim, plate, shape)
        out = [r.expand(shape).mean(0).double()]
        for site in sites:
            g, m = guide_trace.nodes[site.name], model_trace.nodes[site.name]
            out += _site_rows(g, m, site.decomposable, pdim, plate, shape)
        return tuple(out)

    return rows


def _site_stats(site: _Site, kl, kl_dims, means, threshold: float, decomposition) -> tuple[list, dict]:
    """The rows of :attr:`LatentStats.dims` and of :attr:`LatentStats.sites` of one site, from its
    per-datapoint KLs (and per dimension, or ``None``), posterior means and MI / marginal-KL terms
    (or ``None``)."""
    activity = means.var(0) if means.shape[0] > 1 else torch.full(means.shape[1:], math.nan)
    active = activity > threshold
    if kl_dims is not None:
        kl_d, kl_d_se = kl_dims.mean(0), kl_dims.std(0) / math.sqrt(kl_dims.shape[0])
    else:
        kl_d = kl_d_se = torch.full(activity.shape, math.nan, dtype=torch.float64)
    collapsed = ~active & (torch.isnan(kl_d) | (kl_d < COLLAPSE_KL))
    columns = dict(activity=activity, active=active, kl=kl_d, kl_stderr=kl_d_se, collapsed=collapsed)
    dims = [
        {"site": site.name, "dim": d, **{k: v[d].item() for k, v in columns.items()}}
        for d in range(activity.shape[0])
    ]
    mi, mk = decomposition or (None, None)
    row = {
        "site": site.name,
        "dims": int(activity.shape[0]),
        "active_units": int(active.sum()),
        **_mean_stderr("kl", kl),
        "kl_method": site.kl_method,
        **_mean_stderr("mutual_information", mi),
        **_mean_stderr("marginal_kl", mk),
        "collapsed": bool(collapsed.all()),
        "note": site.note,
    }
    return dims, row


def _mean_stderr(name: str, values: torch.Tensor | None) -> dict:
    """``name`` and ``name_stderr``: the mean of the per-datapoint ``values`` and its standard error
    (NaN for ``None``)."""
    if values is None:
        return {name: math.nan, f"{name}_stderr": math.nan}
    return {name: float(values.mean()), f"{name}_stderr": mean_stderr(values)}


def latent_stats(
    model,
    guide,
    data,
    num_particles: int = 10,
    *,
    threshold: float = ACTIVITY_THRESHOLD,
    decompose: bool = True,
    data_plate: str | None = None,
    batch_size: int | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    seed: int | None = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> LatentStats:
    r"""Active units, KL per dimension and the ELBO decomposition of a model/guide pair on ``data``
    (see the module docstring for the estimators).

    One pass over the data (:meth:`~pyrovae.infer.Sweep.map`, its chunks seeded from ``seed`` and
    their first data point) draws the particles and reduces them to per-datapoint rows; one more
    pass per decomposable site sums the aggregate posterior's density over every data chunk.
    Launched by ``torchrun`` (see :mod:`pyrovae.distributed`), both passes are split across the
    workers and every worker gets the one-process result.

    :param model: the model, as for :func:`~pyrovae.log_likelihood`.
    :param guide: the guide; its latent sites are the ones reported.
    :param data: the data (all of it enters the aggregate posterior).
    :param int num_particles: draws from the guide per data point for the KLs, the
        reconstruction and the posterior means of sites that depend on other latents.
    :param float threshold: activity above which a dimension is active (Burda et al.: 0.01).
    :param bool decompose: estimate the mutual information and the marginal KL
        (:math:`N^2` density evaluations).
    :param str data_plate: name of the data plate (default: found, see
        :func:`~pyrovae.infer.pair.find_data_plate`).
    :param int batch_size: data points per chunk (default: derived from the memory the chunk's
        particles take, as by :func:`~pyrovae.log_likelihood`).
    :param tuple model_args: extra positional arguments of the model and guide after the data.
    :param dict model_kwargs: their keyword arguments.
    :param int seed: seed for the draws; the caller's random state is restored afterwards. ``None``
        draws from the caller's random state.
    :param bool progress: show a progress bar.
    :param device: where to compute (see :mod:`pyrovae.devices`); default: the model's device.
    :rtype: LatentStats
    """
    options = dict(num_particles=num_particles, threshold=threshold, batch_size=batch_size, seed=seed)
    check_options(("batch_size", "seed"), **options)
    start = time.perf_counter()
    distributed.init()
    with seeded(seed):
        placement = dict(
            device=device, model_kwargs=model_kwargs, data_plate=data_plate, model_args=model_args
        )
        sizes = dict(batch_size=batch_size, particle_batch_size=num_particles)
        bar = dict(progress=progress, desc="latent stats", name="num_particles")
        weights = LogWeights(model, guide, data, num_particles, seed=seed, **placement, **sizes, **bar)
        enumerated = weights.pair.enumerated
        if enumerated:
            raise ConfigError(
                f"latent_stats reports sampled latents; the pair enumerates {', '.join(enumerated)}. "
                "Evaluate it with the enumerated sites sampled instead (e.g. infer={'enumerate': None})"
            )
        sites = _probe(weights, seed, decompose)
        rows = weights.sweep.map(_chunk_rows(weights, sites))
        reconstruction = rows[0]
        kl_total = torch.zeros_like(reconstruction)
        dim_rows, site_rows = [], []
        for i, site in enumerate(sites):
            kl, kl_dims, means, z, lq, lp = rows[1 + SITE_ROWS * i : 1 + SITE_ROWS * (i + 1)]
            kl_total = kl_total + kl
            decomposition = aggregate_terms(weights, site.name, z, lq, lp) if site.decomposable else None
            dims, row = _site_stats(site, kl, kl_dims, means, threshold, decomposition)
            dim_rows += dims
            site_rows.append(row)
    tables = pd.DataFrame(dim_rows).rename_axis("latent"), pd.DataFrame(site_rows).set_index("site")
    elapsed = time.perf_counter() - start
    return LatentStats(*tables, reconstruction, kl_total, num_particles, float(threshold), elapsed)
