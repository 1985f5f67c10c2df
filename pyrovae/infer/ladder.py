r"""A ladder of stochastic lower bounds on :math:`\log p(x)`, per data point.

From :math:`K` importance log-weights :math:`\log w_k = \log p(x, z_k) - \log q(z_k \mid x)`,
:math:`z_k \sim q(\cdot \mid x)`, the IWAE-:math:`k` bound (Burda, Grosse & Salakhutdinov 2015)

.. math:: \mathcal{L}_k(x) = \mathbb{E}\Big[\log \frac1k \sum_{i=1}^k w_i\Big]

is estimated for each :math:`k` in a list by averaging :math:`\log \frac1k \sum_i w_i` over the :math:`\lfloor
K/k \rfloor` disjoint groups of :math:`k` draws. :math:`\mathcal L_1` is the ELBO, and in expectation

.. math:: \mathrm{ELBO} = \mathcal{L}_1 \le \mathcal{L}_k \le \mathcal{L}_{k+1} \le \log p(x).

Where every latent site has a closed-form KL divergence, the ELBO is also estimated as
:math:`\mathbb{E}_q[\log p(x \mid z)] - \mathrm{KL}(q \,\|\, p)`, as Pyro's
:class:`~pyro.infer.TraceMeanField_ELBO` does.

The result keeps its rows in an ordered mapping, so that other estimators can add theirs: on
request, annealed importance sampling adds an "AIS-T" row per number of annealing steps
:math:`T` (a tighter stochastic lower bound, see :mod:`pyrovae.infer.annealing`), and bidirectional Monte
Carlo sandwiches :math:`\log p(x)` on data points simulated from the model (a different set of
data points, so kept beside the rows, see :mod:`pyrovae.infer.bidirectional`).

References:

- Y. Burda, R. Grosse and R. Salakhutdinov (2015), "Importance Weighted Autoencoders", ICLR 2016.
- D. P. Kingma and M. Welling (2014), "Auto-Encoding Variational Bayes", ICLR.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from pyrovae import distributed
from pyrovae.errors import ConfigError
from pyrovae.infer.annealing import AIS, ais
from pyrovae.infer.bidirectional import BDMC, bdmc, check_simulation
from pyrovae.infer.importance import LogLikelihood, LogWeights
from pyrovae.options import DOMAINS, check_keywords, check_options
from pyrovae.results import Result, columns, live, mean_stderr, nested, prefixed, unprefixed
from pyrovae.seeds import seeded

__all__ = ["Bounds", "bounds", "iwae_bounds"]

#: name of the row holding the analytic-KL ELBO
ANALYTIC_ELBO = "ELBO (analytic KL)"
#: the options of the importance-sampling sweep (:class:`~pyrovae.infer.importance.LogWeights`)
_SWEEP_OPTIONS = {
    "data_plate",
    "device",
    "batch_size",
    "particle_batch_size",
    "max_memory",
    "model_args",
    "model_kwargs",
    "precision",
}


# options of the importance-sampling sweep that AIS shares
_AIS_OPTIONS = {"data_plate", "device", "model_args", "model_kwargs", "precision"}
# what ais_options may hold: the options of ais (and of bdmc's simulation) that bounds does not set
_AIS_KEYWORDS = {"schedule", "leapfrog_steps", "step_size", "target_accept", "adapt_step_size", "start"}
_AIS_KEYWORDS |= {"batch_size"} | _AIS_OPTIONS
_BDMC_KEYWORDS = {"data_sites", "simulate_args", "simulate_kwargs"}


def _counts(name: str, value, example: str, *, empty: bool = False) -> list[int]:
    """``value``, a sequence of positive integers (or, with ``empty``, an integer or no integer),
    as a sorted list of distinct ints; else a :class:`~pyrovae.errors.ConfigError` naming ``name``."""
    values = [value] if empty and isinstance(value, int) else value
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence | set)
        or not (values or empty)
        or not all(DOMAINS["num_steps"].admits(v) for v in values)
    ):
        raise ConfigError(
            f"{name} must be a sequence of positive integers, e.g. {name}={example}; got {value!r}"
        )
    return sorted({int(v) for v in values})


def _row_name(k: int) -> str:
    return "ELBO" if k == 1 else f"IWAE-{k}"


def iwae_bounds(log_weights: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    r"""Estimates of the IWAE-:math:`k` bounds from a ``(B, K)`` block of log-weights.

    For each :math:`k` the first :math:`g k` draws, :math:`g = \lfloor K/k \rfloor`, are split into :math:`g`
    disjoint groups and the estimate is the mean over groups of :math:`\log \frac1k \sum_{i \in \text{group}}
    w_i`. When each :math:`k` divides the next and :math:`K`, the groups are nested and, by Jensen's
    inequality group by group, the estimates are nondecreasing in :math:`k` for every data point, not only in
    expectation. Returns a float64 ``(B, len(ks))`` tensor.
    """
    lw = log_weights.detach().to(device="cpu", dtype=torch.float64)
    batch, num_samples = lw.shape
    columns = []
    for k in ks:
        groups = num_samples // k
        grouped = lw[:, : groups * k].reshape(batch, groups, k)
        columns.append((torch.logsumexp(grouped, -1) - math.log(k)).mean(-1))
    return torch.stack(columns, -1)


#: nats below which the last rung of the IWAE ladder (ten times the samples of the one before) is said to
#: have levelled off: its bounds rise for every data point, so the gain is never significantly negative,
#: and the question is whether it is still large
LEVELLED = 0.1


@dataclass(repr=False)
class Bounds(Result):
    r"""Per-datapoint bounds on :math:`\log p(x)`, in nats, from :func:`bounds`.

    :ivar dict values: ordered mapping of bound name to an ``(N,)`` float64 tensor.
    :ivar dict ks: for the IWAE rows (the ELBO included), bound name to :math:`k`.
    :ivar int num_samples: :math:`K`, the importance samples drawn per data point.
    :ivar list notes: remarks for the summary, e.g. why a row was omitted.
    :ivar LogLikelihood log_likelihood: the IWAE-:math:`K` estimate with its diagnostics.
    :ivar float elapsed: wall time in seconds.
    :ivar dict ais: row name to the :class:`~pyrovae.AIS` result behind an "AIS-T" row.
    :ivar BDMC bdmc: the BDMC sandwich on simulated data points, or ``None``.
    """

    values: dict[str, torch.Tensor] = columns()
    ks: dict[str, int] = field(default_factory=dict)
    num_samples: int = 0
    notes: list[str] = field(default_factory=list)
    log_likelihood: LogLikelihood | None = live(None)
    elapsed: float = 0.0
    ais: dict[str, AIS] = live({})
    bdmc: BDMC | None = nested(BDMC, None, same_rows=False)

    def add_ais(self, result: AIS) -> None:
        r"""Add the row of an :func:`~pyrovae.ais` result (named ``result.name``, e.g. "AIS-1000").

        :param AIS result: an AIS run on the ladder's data points, in the same order; kept in
            :attr:`ais`, its :math:`\log p(x_n)` estimates as the row.
        """
        self.add(result.name, result.log_px)
        self.ais[result.name] = result

    def add(self, name: str, values: torch.Tensor, note: str | None = None) -> None:
        """Add a row ``name`` of ``(N,)`` per-datapoint values (e.g. from AIS), with an optional note;
        the row is kept in float64 on the CPU.

        :param str name: the row's name; an existing row of that name is replaced.
        :param values: one value per data point in nats, :math:`N` in all (a tensor or a sequence of
            floats, flattened).
        :param str note: a line added to the ladder's notes (shown by :meth:`summary`).
        """
        if not torch.is_tensor(values):
            values = torch.as_tensor(values, dtype=torch.float64)  # Python floats kept exactly
        values = values.detach().to("cpu", torch.float64).flatten()
        if values.shape != (self.num_data,):
            raise ConfigError(f"row {name!r} has {values.numel()} values for {self.num_data} data points")
        self.values[name] = values
        if note:
            self.notes.append(note)

    @property
    def names(self) -> list[str]:
        """Row names, in order."""
        return list(self.values)

    @property
    def num_data(self) -> int:
        """Number of data points :math:`N`."""
        return next(iter(self.values.values())).shape[0]

    @property
    def iwae(self) -> torch.Tensor:
        """``(N, len(ks))`` per-datapoint IWAE-:math:`k` estimates, in the order of :attr:`ks`."""
        return torch.stack([self.values[name] for name in self.ks], -1)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[name]

    @property
    def mean(self) -> pd.Series:
        """Mean of each row over the data points, by bound name (``ladder.mean["ELBO"]``)."""
        return pd.Series({n: float(v.mean()) for n, v in self.values.items()}, name="mean", dtype=float)

    @property
    def stderr(self) -> pd.Series:
        r"""Standard error of :attr:`mean` across data points, by bound name
        (:func:`~pyrovae.results.mean_stderr`)."""
        return pd.Series({n: mean_stderr(v) for n, v in self.values.items()}, name="stderr", dtype=float)

    def summary_table(self) -> pd.DataFrame:
        """The ladder: mean and standard error of each bound, in nats."""
        frame = pd.concat([self.mean, self.stderr], axis=1)
        frame.index.name = "bound"
        return frame

    def summary(self) -> str:
        """The ladder as a readable table: bound, mean and standard error in nats."""
        width = max(len(name) for name in self.values)
        lines = [
            f"bounds on log p(x), nats: N = {self.num_data} data points, K = {self.num_samples} "
            "draws per data point",
            f"  {'bound':<{width}}  {'mean':>12}  {'± se':>8}",
        ]
        mean, stderr = self.mean, self.stderr
        for name in self.values:
            lines.append(f"  {name:<{width}}  {mean[name]:12.3f}  {stderr[name]:8.3f}")
        lines += [f"  note: {note}" for note in self.notes]
        for name, result in self.ais.items():
            lines.append(
                f"  {name}: {result.num_chains} chains, {result.leapfrog_steps} leapfrog steps, mean "
                f"acceptance {float(result.acceptance.nanmean()):.2f}, {result.elapsed:.1f} s"
            )
        if self.bdmc is not None:
            lines += ["  " + line for line in self.bdmc.summary().splitlines()]
        if self.log_likelihood is not None:
            lines += self.log_likelihood.diagnostics()[:-1]  # its verdict is the first of the ladder's
        lines += [f"  {line}" for line in self.verdict().splitlines()]
        lines.append(f"  elapsed {self.elapsed:.1f} s")
        return "\n".join(lines)

    def verdict(self) -> str:
        r"""Whether to trust the ladder's estimate of :math:`\log p(x)`: the verdict of its importance-sampled
        estimate (:meth:`LogLikelihood.verdict`), the paired gain between its last two IWAE rungs (still
        climbing when above :data:`LEVELLED` and two standard errors: :math:`\log p(x)` lies higher still),
        and each AIS row's paired gain over the last rung."""
        lines = [] if self.log_likelihood is None else self.log_likelihood.verdict().splitlines()
        rungs = sorted((k, name) for name, k in self.ks.items() if k > 1)
        if len(rungs) >= 2:
            (_, below), (_, top) = rungs[-2:]
            gain, se = self._gain(top, below)
            climbing = gain > max(2 * se, LEVELLED)
            state = (
                "still climbing: log p(x) lies higher" if climbing else f"levelled off (< {LEVELLED} nats)"
            )
            lines.append(f"the ladder: {below} -> {top} {gain:+.2f} ± {se:.2f} nats, {state}")
        if rungs:
            for name in self.ais:
                gain, se = self._gain(name, rungs[-1][1])
                lines.append(f"{name} lies {gain:+.2f} ± {se:.2f} nats above {rungs[-1][1]} (paired)")
        return "\n".join(lines)

    def _gain(self, upper: str, lower: str) -> tuple[float, float]:
        difference = self.values[upper] - self.values[lower]
        return float(difference.mean()), mean_stderr(difference)

    def to_xarray(self):
        """An :class:`xarray.Dataset` with a ``(bound, datapoint)`` variable ``log_px_bound``;
        the coordinate ``k`` is :math:`k` for IWAE rows and 0 for the others; the AIS rows' standard
        errors, acceptance and step sizes along ``"ais"``, and the BDMC result prefixed ``bdmc_``."""
        import xarray as xr

        names = self.names
        data_vars = {
            "log_px_bound": (("bound", "datapoint"), torch.stack(list(self.values.values())).numpy())
        }
        for name in ("log_px_se", "acceptance", "step_size") if self.ais else ():
            stacked = torch.stack([getattr(r, name).cpu() for r in self.ais.values()]).numpy()
            data_vars[f"ais_{name}"] = (("ais", "datapoint"), stacked)
        coords = {
            "bound": names,
            "datapoint": np.arange(self.num_data),
            "k": ("bound", [self.ks.get(n, 0) for n in names]),
        }
        if self.ais:
            coords["ais"] = list(self.ais)
        ds = xr.Dataset(data_vars, coords=coords, attrs=self.attributes())
        if self.bdmc is not None:
            ds = xr.merge([ds, prefixed(self.bdmc.to_xarray(), "bdmc_")], combine_attrs="no_conflicts")
        return ds

    @classmethod
    def from_xarray(cls, ds) -> Bounds:
        """The ladder of a dataset written by :meth:`to_xarray`: its rows, :math:`k`, notes and BDMC
        result (the AIS details and the diagnostics of :attr:`log_likelihood` are not restored).

        :param xarray.Dataset ds: a dataset of :meth:`to_xarray`, as it is or read back from a file.
        """
        names = [str(n) for n in ds["bound"].values]
        values = {n: torch.as_tensor(ds["log_px_bound"].sel(bound=n).values) for n in names}
        ks = {n: int(k) for n, k in zip(names, ds["k"].values, strict=True) if k > 0}
        bdmc = unprefixed(ds, "bdmc_")
        bdmc = BDMC.from_xarray(bdmc) if bdmc.data_vars else None
        notes = [line for line in str(ds.attrs.get("notes", "")).split("\n") if line]
        return cls(
            values, ks, int(ds.attrs["num_samples"]), notes, elapsed=float(ds.attrs["elapsed"]), bdmc=bdmc
        )

    def figures(self) -> dict:
        """Means and standard errors of every row, the AIS summaries and the :meth:`verdict`."""
        out = {
            "bounds": {n: {"mean": self.mean[n], "stderr": self.stderr[n]} for n in self.values},
            "verdict": self.verdict(),
        }
        if self.ais:
            out["ais"] = {name: result.to_json_dict() for name, result in self.ais.items()}
        return out

    def plot(self, path: str | os.PathLike | None = None):
        """Plot the ladder (:func:`pyrovae.plots.results.ladder`): mean IWAE-:math:`k` bound
        against :math:`k`, the other rows as lines, and the BDMC sandwich when there is one; saved
        when ``path`` is given. Returns the figure.

        :param path: where to save the figure, in the format its suffix names (PNG without one; see
            :func:`pyrovae.plots.save`); ``None`` only returns it.
        """
        from pyrovae.plots.results import ladder

        return ladder(self, path)


def _importance_ladder(model, guide, data, ks: list[int], keep: bool, options: dict) -> Bounds:
    r"""The ELBO (analytic KL) and IWAE-:math:`k` rows of :func:`bounds`, from one sweep of
    :math:`K = \max(ks)` log-weights per data point."""
    start, num_samples = time.perf_counter(), ks[-1]
    distributed.init()
    with seeded(options["seed"]):
        weights = LogWeights(model, guide, data, num_samples, desc="bounds", **options)

        def rows(log_w, elbo_terms):
            elbo = None if elbo_terms is None else elbo_terms.to(torch.float64).mean(-1)
            return iwae_bounds(log_w, ks), elbo

        rows = weights.estimate(rows, keep)
    elapsed = time.perf_counter() - start
    loglik = LogLikelihood.from_rows(rows[:5], num_samples, elapsed, weights.sweep.precision)
    table, elbo = rows[5:]
    values, notes = {}, []
    if options["analytic_kl"]:
        if weights.analytic_kl:
            values[ANALYTIC_ELBO] = elbo
        else:
            notes.append(weights.pair.kl_note)
    names = [_row_name(k) for k in ks]
    values.update({name: table[:, i] for i, name in enumerate(names)})
    if any(num_samples % k for k in ks):
        notes.append(f"rows with k not dividing K = {num_samples} use floor(K/k) disjoint groups of k draws")
    return Bounds(values, dict(zip(names, ks, strict=True)), num_samples, notes, log_likelihood=loglik)


def bounds(
    model,
    guide,
    data,
    ks: Sequence[int] = (1, 10, 100, 1000, 5000),
    *,
    analytic_kl: bool = True,
    ais_steps: int | Sequence[int] = (),
    ais_chains: int = 16,
    bdmc_data: int = 0,
    bdmc_steps: int | None = None,
    ais_options: dict | None = None,
    seed: int | None = None,
    progress: bool = True,
    **log_likelihood_kwargs,
) -> Bounds:
    r"""Estimate the ladder ELBO :math:`\le` IWAE-:math:`k` :math:`\le \log p(x)` per data point.

    :math:`K = \max(ks)` log-weights are drawn once per data point, exactly as in
    :func:`~pyrovae.infer.importance.log_likelihood`, and each data chunk is reduced right away to the
    IWAE-:math:`k` estimates of :func:`iwae_bounds` (so the ``(N, K)`` matrix is never held
    whole), the analytic-KL ELBO when ``analytic_kl`` and available, and the diagnostics of the
    IWAE-:math:`K` estimate (kept as :attr:`Bounds.log_likelihood`).

    The analytic-KL row averages :math:`\log p(x \mid z_k) - \sum_{\text{latents}} \mathrm{KL}(q \,\|\, p)`
    over the same :math:`K` draws, with KLs from :func:`torch.distributions.kl_divergence`. As for Pyro's
    :class:`~pyro.infer.TraceMeanField_ELBO`, it is correct when the guide is mean-field with respect to the
    model (checked as Pyro does, by the order of the latent sites); when that check fails or some latent has
    no registered KL, the row is omitted with a note.

    :param model: the model, as for :func:`~pyrovae.infer.importance.log_likelihood`.
    :param guide: the guide.
    :param data: the data, as for :func:`~pyrovae.infer.importance.log_likelihood`.
    :param ks: the :math:`k` of the IWAE rows, positive integers.
    :param bool analytic_kl: add the analytic-KL ELBO row where possible.
    :param ais_steps: for each :math:`T`, add a row "AIS-T" from :func:`~pyrovae.ais` with
        :math:`T` annealing steps (results kept in :attr:`Bounds.ais`).
    :param int ais_chains: chains per data point of the AIS rows and of BDMC.
    :param int bdmc_data: if positive, run :func:`~pyrovae.bdmc` on this many data points
        simulated from the model (kept in :attr:`Bounds.bdmc`, not a row: other data points).
    :param int bdmc_steps: annealing steps of BDMC (default the largest of ``ais_steps``, else 1000).
    :param dict ais_options: further options of :func:`~pyrovae.ais` and :func:`~pyrovae.bdmc`
        (``schedule``, ``leapfrog_steps``, ``start``, ``step_size``, ``data_sites``, ...).
    :param int seed: seed for the draws; the caller's random state is restored afterwards.
    :param bool progress: show a progress bar.
    :param log_likelihood_kwargs: ``data_plate``, ``batch_size``, ``particle_batch_size``,
        ``max_memory``, ``model_args``, ``model_kwargs``, ``device``, ``precision`` and ``return_log_weights``
        (kept in :attr:`Bounds.log_likelihood`), as for :func:`~pyrovae.infer.importance.log_likelihood`;
        ``data_plate``, ``model_args``, ``model_kwargs``, ``device`` and ``precision`` apply to AIS and BDMC
        too.
    :rtype: Bounds (under ``torchrun``: the one-process values, on every rank)
    """
    ks = _counts("ks", ks, "(1, 10, 100)")
    ais_steps = _counts("ais_steps", ais_steps, "(100, 1000)", empty=True)
    check_options(("seed",), ais_chains=ais_chains, bdmc_data=bdmc_data, bdmc_steps=bdmc_steps, seed=seed)
    ais_options = dict(ais_options or {})
    check_keywords("ais_options", ais_options, _AIS_KEYWORDS | _BDMC_KEYWORDS)
    num_samples = ks[-1]
    given = log_likelihood_kwargs.pop("num_samples", num_samples)
    if given != num_samples:
        raise ConfigError(
            f"bounds draws max(ks) = {num_samples} samples; do not also pass num_samples={given}"
        )
    keep = log_likelihood_kwargs.pop("return_log_weights", False)
    check_keywords("bounds", log_likelihood_kwargs, _SWEEP_OPTIONS)
    options = {k: v for k, v in log_likelihood_kwargs.items() if k in _AIS_OPTIONS}
    options.update(ais_options, num_chains=ais_chains, seed=seed, progress=progress)
    simulation = {k: options.pop(k) for k in _BDMC_KEYWORDS if k in options}
    if bdmc_data and "simulate_kwargs" not in simulation:  # refused before the work if it cannot fit
        sites, simulated = simulation.get("data_sites", ("x",)), simulation.get("simulate_args", ())
        check_simulation(model, bdmc_data, sites, simulated, seed, options.get("device"))
    start = time.perf_counter()
    sweep = dict(log_likelihood_kwargs, analytic_kl=analytic_kl, seed=seed, progress=progress)
    ladder = _importance_ladder(model, guide, data, ks, keep, sweep)
    for steps in ais_steps:
        ladder.add_ais(ais(model, guide, data, num_steps=steps, **options))
    if bdmc_data:
        steps = bdmc_steps or max(ais_steps, default=1000)
        ladder.bdmc = bdmc(model, guide, bdmc_data, num_steps=steps, **options, **simulation)
    ladder.elapsed = time.perf_counter() - start
    return ladder
