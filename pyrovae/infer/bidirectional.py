r"""Bidirectional Monte Carlo: a sandwich of :math:`\log p(x)` on data simulated from the model.

For :math:`(z, x) \sim p(z)\,p(x \mid z)`, :math:`z` is an exact draw from the posterior :math:`p(z \mid x)`.
Forward AIS from :math:`f_0` to the posterior gives weights with :math:`\mathbb E[w] = p(x)`, hence a
stochastic lower bound :math:`\log\frac1K\sum_k w_k`; reverse AIS, started at the simulated :math:`z` and
annealed back to :math:`f_0`, gives weights with :math:`\mathbb E[w] = 1/p(x)`, hence a stochastic upper bound
:math:`-\log\frac1K\sum_k w_k` (Grosse, Ghahramani & Adams 2015). Both tighten as the number of annealing
steps grows; the gap between them bounds the error of either, and so of forward AIS on real data with the same
settings (Wu et al. 2017), as far as the simulated data resemble the real data.

References:

- R. B. Grosse, Z. Ghahramani and R. P. Adams (2015), "Sandwiching the marginal likelihood using
  bidirectional Monte Carlo", arXiv:1511.02543.
- Y. Wu, Y. Burda, R. Salakhutdinov and R. Grosse (2017), "On the Quantitative Analysis of
  Decoder-Based Generative Models", ICLR.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyro.poutine as poutine
import torch

from pyrovae import devices
from pyrovae.distributed import derived_seed
from pyrovae.errors import ConfigError
from pyrovae.infer.annealing import AIS, ais
from pyrovae.infer.sites import scored_sites
from pyrovae.options import check_keywords, check_options
from pyrovae.results import Result, live, mean_stderr, nested
from pyrovae.seeds import seeded

__all__ = ["BDMC", "bdmc", "check_simulation"]

#: what simulating a data point takes, in copies of its values and latents (the model's activations, both
#: directions' results)
SIMULATION_COPIES = 8
#: the keyword options of :func:`~pyrovae.ais` that :func:`bdmc` passes on
_AIS_KEYWORDS = set(inspect.signature(ais).parameters) - {"model", "guide", "data"}


@dataclass(repr=False)
class BDMC(Result):
    r"""Lower and upper bounds on :math:`\log p(x)` of simulated data points, from :func:`bdmc`.

    :ivar AIS forward: forward AIS, the stochastic lower bounds.
    :ivar AIS reverse: reverse AIS from the simulated latents, the stochastic upper bounds.
    :ivar tuple data: the simulated data on the CPU, one tensor per data site (empty when read back
        from a file).
    :ivar float elapsed: wall time in seconds, simulation included.
    """

    forward: AIS = nested(AIS)
    reverse: AIS = nested(AIS)
    data: tuple[torch.Tensor, ...] = live(())
    elapsed: float = 0.0

    rows = "simulated"

    @property
    def lower(self) -> torch.Tensor:
        """``(N,)`` forward-AIS lower bounds."""
        return self.forward.log_px

    @property
    def upper(self) -> torch.Tensor:
        """``(N,)`` reverse-AIS upper bounds."""
        return self.reverse.log_px

    @property
    def gap(self) -> torch.Tensor:
        """``(N,)`` upper minus lower bound, in nats."""
        return self.upper - self.lower

    @property
    def num_data(self) -> int:
        """Number of simulated data points."""
        return self.lower.shape[0]

    @property
    def mean(self) -> pd.Series:
        """Means of the lower and upper bounds and of the gap over the simulated data points."""
        return pd.Series({n: float(getattr(self, n).mean()) for n in ("lower", "upper", "gap")}, name="mean")

    @property
    def stderr(self) -> pd.Series:
        """Standard errors of :attr:`mean` across the simulated data points."""
        return pd.Series({n: mean_stderr(getattr(self, n)) for n in ("lower", "upper", "gap")}, name="stderr")

    def summary_table(self) -> pd.DataFrame:
        """Lower bound, upper bound and gap: mean and standard error, in nats."""
        return pd.concat([self.mean, self.stderr], axis=1)

    def summary(self) -> str:
        """A readable multi-line summary."""
        f, mean, stderr = self.forward, self.mean, self.stderr
        labels = {"lower": "lower bound (forward AIS)", "upper": "upper bound (reverse AIS)", "gap": "gap"}
        lines = [
            f"BDMC on {self.num_data} simulated data points: K = {f.num_chains} chains, "
            f"T = {f.num_steps} {f.schedule} steps from the {f.start}, {f.leapfrog_steps} leapfrog steps"
        ]
        lines += [f"  {label:<26} {mean[n]:10.3f} ± {stderr[n]:.3f}" for n, label in labels.items()]
        lines[-1] += f" nats   (max {float(self.gap.max()):.3f})"
        lines += [
            f"  acceptance: forward {float(f.acceptance.nanmean()):.2f}, "
            f"reverse {float(self.reverse.acceptance.nanmean()):.2f}",
            f"  elapsed {self.elapsed:.1f} s",
        ]
        return "\n".join(lines)

    def to_dataframe(self):
        """A :class:`pandas.DataFrame`, one row per simulated data point: lower, upper, gap,
        and the standard errors and acceptance rates of both directions."""
        f, r = self.forward, self.reverse
        columns = dict(
            lower=self.lower, upper=self.upper, gap=self.gap, lower_se=f.log_px_se, upper_se=r.log_px_se
        )
        columns.update(forward_acceptance=f.acceptance, reverse_acceptance=r.acceptance)
        return pd.DataFrame({name: v.numpy() for name, v in columns.items()}).rename_axis(self.rows)

    def to_xarray(self):
        """Both directions' AIS results (prefixed ``forward_`` and ``reverse_``), with the lower
        and upper bounds and the gap per simulated data point."""
        ds = super().to_xarray()
        return ds.assign(
            {name: (self.rows, getattr(self, name).numpy()) for name in ("lower", "upper", "gap")}
        )

    def figures(self) -> dict:
        """Means and standard errors of the bounds and of the gap, and the largest gap."""
        stderr = self.stderr.add_suffix("_stderr")
        return {**self.mean.to_dict(), **stderr.to_dict(), "gap_max": float(self.gap.max())}


def simulate(model, data_sites: Sequence[str], *args, **kwargs) -> tuple[tuple[torch.Tensor, ...], dict]:
    """Run ``model(*args, **kwargs)`` without data; return the values of ``data_sites`` and of
    every other sample site (the latents, an exact posterior draw given the data)."""
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    sites = dict(scored_sites(trace))
    missing = [name for name in data_sites if name not in sites]
    if missing:
        raise ConfigError(
            f"the simulated trace has no sample site {', '.join(map(repr, missing))} (its sites: "
            f"{', '.join(map(repr, sites))}); pass data_sites=, the sites that hold the data, in the "
            "order the model takes them as arguments"
        )
    observed = [name for name, site in sites.items() if site["is_observed"]]
    if observed:
        raise ConfigError(
            f"site(s) {', '.join(map(repr, observed))} are observed when simulating: call the model "
            "without data (simulate_args / simulate_kwargs, e.g. the VAE's batch_size=N) so that "
            "every variable is drawn from the model"
        )
    data = tuple(sites[name]["value"] for name in data_sites)
    latents = {name: site["value"] for name, site in sites.items() if name not in data_sites}
    return data, latents


def check_simulation(
    model, num_data: int, data_sites=("x",), simulate_args=(), seed=None, device=None
) -> None:
    """Refuse, before the work, ``num_data`` data points simulated at once by ``model(*simulate_args,
    batch_size=num_data)`` that would not fit in the memory of the device, judged by one simulated point."""
    dev = devices.place(model, device=device)
    with seeded(seed):
        values, latents = simulate(model, data_sites, *devices.move(tuple(simulate_args), dev), batch_size=1)
    size = sum(t.numel() * t.element_size() for t in (*values, *latents.values()))
    what = "simulating the data points at once (with the model's activations and both directions' results)"
    devices.check_memory("num_data", num_data, SIMULATION_COPIES * size * num_data, dev, what)


def bdmc(
    model,
    guide,
    num_data: int = 100,
    *,
    data_sites: Sequence[str] = ("x",),
    simulate_args: tuple = (),
    simulate_kwargs: dict | None = None,
    seed: int | None = None,
    progress: bool = True,
    **ais_kwargs,
) -> BDMC:
    r"""Sandwich :math:`\log p(x)` of ``num_data`` data points simulated from the model between
    forward and reverse AIS (Grosse et al. 2015; see :mod:`pyrovae.infer.bidirectional`).

    The model is run once without data, as ``model(*simulate_args, **simulate_kwargs)``, by
    default ``model(batch_size=num_data)`` (how :class:`~pyrovae.VAE` samples; a model of your own
    must draw its observed sites when given no data, in the data plate of size ``num_data``). The
    values of ``data_sites`` are the data, passed to the model and guide positionally in that
    order; every other sample site is a latent, and its simulated value an exact posterior draw.

    :param model: the model.
    :param guide: the guide (starting distribution of forward AIS, end of reverse AIS).
    :param int num_data: number of data points to simulate.
    :param data_sites: names of the sites that hold the data (``("x",)`` for the VAE).
    :param tuple simulate_args: positional arguments of the simulating call.
    :param dict simulate_kwargs: keyword arguments of the simulating call
        (default ``{"batch_size": num_data}``).
    :param int seed: seed of the simulation, and of the forward and reverse AIS chains (each from a
        stream derived from it, seeded per data chunk as in :func:`~pyrovae.ais`); the caller's random
        state is restored afterwards.
    :param bool progress: show progress bars.
    :param ais_kwargs: options of :func:`~pyrovae.ais`: ``num_steps``, ``num_chains``, ``schedule``,
        ``leapfrog_steps``, ``start``, ``model_args``, ``model_kwargs``, ...; ``device`` is where the data are
        simulated too (default: the model's device). The simulated data come back on the CPU.
    :rtype: BDMC
    """
    check_options(("seed",), num_data=num_data, seed=seed)
    check_keywords("bdmc", ais_kwargs, _AIS_KEYWORDS)
    if "reverse_from" in ais_kwargs:
        raise ConfigError("bdmc sets reverse_from itself, from the simulated latents")
    kwargs = {"batch_size": num_data} if simulate_kwargs is None else simulate_kwargs
    start = time.perf_counter()
    dev = devices.place(model, guide, device=ais_kwargs.get("device"))  # simulated where AIS runs
    args, kwargs = devices.move(tuple(simulate_args), dev), devices.move_kwargs(kwargs, dev)
    if simulate_kwargs is None:
        check_simulation(model, num_data, data_sites, args, seed, dev)
    with seeded(seed):
        data, latents = simulate(model, data_sites, *args, **kwargs)
        # each direction's chunks seeded from a stream of its own, so that every rank draws for a
        # data point what one process draws
        seeds = (None, None) if seed is None else (derived_seed(seed, 1), derived_seed(seed, 2))
        forward = ais(model, guide, data, seed=seeds[0], progress=progress, **ais_kwargs)
        reverse = ais(
            model, guide, data, reverse_from=latents, seed=seeds[1], progress=progress, **ais_kwargs
        )
    return BDMC(forward, reverse, tuple(d.cpu() for d in data), elapsed=time.perf_counter() - start)
