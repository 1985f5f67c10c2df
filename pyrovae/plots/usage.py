"""The latent usage of a pair (:class:`~pyrovae.analysis.latent_usage.LatentStats`): KL and activity per
dimension."""

from __future__ import annotations

import numpy as np

from pyrovae.plots.figures import Figure, figure, save

__all__ = ["latent_usage"]


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
        top.set_ylabel("KL (nats)")
        row = stats.sites.loc[name]
        top.set_title(f"{name}: {row.active_units} of {row.dims} active, KL {row.kl:.2f}")
        if rows["kl"].isna().all():
            top.set_yticks([])
            top.text(0.5, 0.5, "prior does not factorize:\nno KL per dimension", ha="center",
                     va="center", transform=top.transAxes)  # fmt: skip
        bottom.bar(x, rows["activity"].to_numpy(), color=colours)
        bottom.set_yscale("log")
        bottom.axhline(stats.threshold, color="tab:red", linestyle="--", linewidth=1,
                       label=f"threshold {stats.threshold:g}")  # fmt: skip
        bottom.set_ylabel("activity Cov_x(E_q[z])")
        bottom.set_xlabel(f"dimension (sorted by {'KL' if key == 'kl' else 'activity'})")
        bottom.set_xticks(x, [str(d) for d in rows["dim"]], fontsize=6, rotation=90)
        bottom.legend(fontsize=7, loc="upper right")
    fig.suptitle("Latent usage per dimension (blue: active, grey: inactive)")
    fig.tight_layout()
    return save(fig, path)
