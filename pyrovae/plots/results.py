"""Figures of results: the ladder of bounds, out-of-distribution detection, the gradient figures of
an estimator comparison, and latent usage. Each is what the result's ``plot`` method draws."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from pyrovae.options import check_option
from pyrovae.plots.figures import Figure, figure, save
from pyrovae.results import mean_stderr

__all__ = ["detection", "gradients", "ladder", "latent_usage"]

# the most histogram bins :func:`detection` draws by default
MAX_BINS = 80


def ladder(bounds, path: str | os.PathLike | None = None) -> Figure:
    """The ladder of a :class:`~pyrovae.infer.ladder.Bounds`: mean IWAE-:math:`k` bound against
    :math:`k` (log axis) with standard-error bars, other rows (analytic ELBO, AIS) as horizontal
    lines with bands; with BDMC, a second panel shows its lower and upper bounds on the simulated
    data points. Saved as PNG when ``path`` is given."""
    b = bounds
    fig = figure(figsize=(6 if b.bdmc is None else 10, 4), layout="constrained")
    ax, *right = fig.subplots(1, 1 if b.bdmc is None else 2, squeeze=False)[0]
    mean, stderr = b.mean, b.stderr
    ks = list(b.ks.values())
    label = "IWAE-k (k = 1: ELBO)"
    ax.errorbar(ks, mean[list(b.ks)], yerr=stderr[list(b.ks)], marker="o", capsize=3, label=label)
    for i, name in enumerate(n for n in b.values if n not in b.ks):
        color = f"C{i + 1}"
        ax.axhline(mean[name], color=color, linestyle="--", label=name)
        if math.isfinite(stderr[name]):
            ax.axhspan(
                mean[name] - stderr[name], mean[name] + stderr[name], color=color, alpha=0.15, linewidth=0
            )
    ax.set(xscale="log", xlabel="k (importance samples per estimate)", ylabel="mean bound on log p(x) (nats)")
    ax.set_title(f"log p(x) bounds, N = {b.num_data}, K = {b.num_samples}")
    ax.legend(loc="best")
    if right:
        _sandwich(right[0], b.bdmc)
    return save(fig, path)


def _sandwich(ax, b) -> None:
    """BDMC's lower and upper bound of each simulated data point, joined, with their means."""
    stderr = [mean_stderr(v) for v in (b.lower, b.upper)]
    means = [float(b.lower.mean()), float(b.upper.mean())]
    ax.errorbar([0, 1], means, yerr=stderr, fmt="o", capsize=4, color="C3")
    for lo, hi in zip(b.lower.tolist(), b.upper.tolist(), strict=True):
        ax.plot([0, 1], [lo, hi], color="0.6", alpha=0.3, linewidth=0.8)
    ax.set_xticks([0, 1], ["forward AIS\n(lower)", "reverse AIS\n(upper)"])
    ax.set(xlim=(-0.5, 1.5), ylabel="log p(x) of simulated data (nats)")
    ax.set_title(
        f"BDMC, {b.num_data} simulated points, T = {b.forward.num_steps}: gap {float(b.gap.mean()):.3f} nats"
    )


def detection(result, path: str | os.PathLike | None = None, *, bins: int | None = None) -> Figure:
    """Two panels of a :class:`~pyrovae.analysis.detection.Detection`: histograms of both sets'
    scores (the same bins, as densities; infinite scores are counted in the title, not drawn) and
    the ROC curve with the chance diagonal and the FPR95 point. Saved as PNG when ``path`` is
    given. ``bins``: number of histogram bins; by default numpy's ``"auto"`` choice, at most 80."""
    from pyrovae.analysis.detection import TPR_LEVEL

    check_option("bins", bins)
    fig = figure(figsize=(11, 4.2), layout="constrained")
    hist_ax, roc_ax = fig.subplots(1, 2)
    finite = [s[torch.isfinite(s)].numpy() for s in (result.in_scores, result.out_scores)]
    both = np.concatenate(finite)
    if both.size:
        edges = np.histogram_bin_edges(both, bins="auto" if bins is None else bins)
        if bins is None and len(edges) > MAX_BINS + 1:
            edges = np.histogram_bin_edges(both, bins=MAX_BINS)
        labels = ("in-distribution", "out-of-distribution")
        for values, label, color in zip(finite, labels, ("C0", "C3"), strict=True):
            if values.size:
                hist_ax.hist(values, bins=edges, density=True, alpha=0.5, color=color, label=label)
        hist_ax.legend()
    num_inf = result.num_data - both.size
    hist_ax.set_title(
        "scores (higher = more anomalous)" + (f"; {num_inf} infinite not shown" if num_inf else "")
    )
    hist_ax.set(xlabel="score" if result.name is None else f"{result.name} score", ylabel="density")
    hist_ax.grid(alpha=0.3)

    fpr, tpr = result.roc_curve()
    roc_ax.plot(fpr, tpr, color="C0", label=f"ROC (AUROC = {result.auroc:.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    point = f"FPR95 = {result.fpr95:.3f}"
    roc_ax.plot([result.fpr95], [TPR_LEVEL], marker="o", color="C3", linestyle="", label=point)
    roc_ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal", title="ROC curve")
    roc_ax.set_xlabel("false-positive rate (in-distribution flagged)")
    roc_ax.set_ylabel("true-positive rate (OOD flagged)")
    roc_ax.grid(alpha=0.3)
    roc_ax.legend(loc="lower right")
    if result.name is not None:
        fig.suptitle(result.name)
    return save(fig, path)


def gradients(comparison, path: str | os.PathLike | None = None) -> Figure:
    """Bar charts of a :class:`~pyrovae.analysis.comparison.Comparison`: the guide's and the model's
    gradient SNR and variance by estimator, on log scales. Saved as PNG when ``path`` is given."""
    fig = figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("snr", "median gradient SNR"), ("grad_var", "mean gradient variance"))
    for ax, (what, label) in zip(axes, panels, strict=True):
        names = {f"guide_{what}": "guide (encoder)", f"model_{what}": "model (decoder)"}
        comparison.table[list(names)].rename(columns=names).plot.bar(ax=ax, logy=True, rot=30)
        ax.set(ylabel=label, xlabel="")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{comparison.num_repeats} gradient draws on one batch of {comparison.batch_size} data points"
    )
    return save(fig, path)


def latent_usage(stats, path=None) -> Figure:
    """KL (where defined) and activity per dimension of ``stats``, a
    :class:`~pyrovae.analysis.latent_usage.LatentStats`, each site's dimensions sorted by KL (else by
    activity), the activity threshold drawn: a figure, saved as PNG when ``path`` is given."""
    sites = list(stats.sites.index)
    fig = figure(figsize=(max(6.0, 0.12 * len(stats.dims) + 2.5 * len(sites)), 5.0))
    axes = fig.subplots(2, len(sites), squeeze=False, sharex="col")
    for j, name in enumerate(sites):
        rows = stats.dims[stats.dims["site"] == name]
        key = "kl" if rows["kl"].notna().any() else "activity"
        rows = rows.sort_values(key, ascending=False)
        x = np.arange(len(rows))
        top, bottom = axes[0, j], axes[1, j]
        colours = np.where(rows["active"], "tab:blue", "tab:grey")
        top.bar(x, rows["kl"].fillna(0).to_numpy(), color=colours)
        row = stats.sites.loc[name]
        top.set(ylabel="KL (nats)", title=f"{name}: {row.active_units} of {row.dims} active, KL {row.kl:.2f}")
        if rows["kl"].isna().all():
            top.set_yticks([])
            centred = dict(ha="center", va="center", transform=top.transAxes)
            top.text(0.5, 0.5, "prior does not factorize:\nno KL per dimension", **centred)
        bottom.bar(x, rows["activity"].to_numpy(), color=colours)
        bottom.set(yscale="log", ylabel="activity Cov_x(E_q[z])")
        bottom.axhline(
            stats.threshold,
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=f"threshold {stats.threshold:g}",
        )
        bottom.set_xlabel(f"dimension (sorted by {'KL' if key == 'kl' else 'activity'})")
        bottom.set_xticks(x, [str(d) for d in rows["dim"]], fontsize=6, rotation=90)
        bottom.legend(fontsize=7, loc="upper right")
    fig.suptitle("Latent usage per dimension (blue: active, grey: inactive)")
    fig.tight_layout()
    return save(fig, path)
