"""Reading a traced model/guide pair: its scored sites, latents and plates, and the data plate.

The sites whose densities enter a weight are those of Pyro's ELBOs (:func:`scored_sites`); the
*data plate* is the plate every observed site shares, whose size is the number of data points passed
in (:func:`find_data_plate`). :mod:`pyrovae.infer.pair` traces pairs and reduces them to
log-weights with these; :mod:`pyrovae.infer.checks` checks them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pyro.poutine.util import site_is_subsample

from pyrovae.errors import ConfigError
from pyrovae.handlers import DATA_PLATE

__all__ = ["data_frame", "find_data_plate", "latents", "plate_nesting", "scored_sites"]


def scored_sites(trace) -> Iterator[tuple[str, dict]]:
    """The sample sites of ``trace`` whose densities enter a weight, as in Pyro's ELBOs (plates'
    subsample sites and sites marked not to be scored left out)."""
    for name, site in trace.nodes.items():
        if (
            site["type"] == "sample"
            and not site_is_subsample(site)
            and not site["infer"].get("_do_not_score", False)
            and not site["infer"].get("_deterministic", False)
        ):
            yield name, site


def latents(trace) -> dict[str, torch.Tensor]:
    """The values of a trace's latent (unobserved) sites, by name."""
    return {name: site["value"] for name, site in scored_sites(trace) if not site["is_observed"]}


def plate_nesting(*traces) -> int:
    """The number of vectorized plate dims the sites of ``traces`` use (Pyro's ``max_plate_nesting``)."""
    dims = [
        frame.dim
        for trace in traces
        for _, site in scored_sites(trace)
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims, default=0)


def data_frame(site: dict, data_plate: str):
    """The frame of the plate ``data_plate`` in ``site``'s plate stack, or ``None``."""
    return next((f for f in site["cond_indep_stack"] if f.name == data_plate), None)


def find_data_plate(model_trace, num_data: int, data_plate: str | None = None) -> str:
    """The name of the data plate: ``data_plate`` if given; else ``"data"`` where every observed
    site lies in it; else the one plate every observed site shares whose size is ``num_data``
    (the outermost, where several are). Raises :class:`~pyrovae.errors.ConfigError` otherwise."""
    if data_plate is not None:
        return data_plate
    observed = [site for _, site in scored_sites(model_trace) if site["is_observed"]]
    shared: list[str] = []
    if observed:
        shared = [f.name for f in observed[0]["cond_indep_stack"] if f.vectorized]
        for site in observed[1:]:
            names = {f.name for f in site["cond_indep_stack"]}
            shared = [name for name in shared if name in names]
    if DATA_PLATE in shared:
        return DATA_PLATE
    sizes = {f.name: f.size for f in (observed[0]["cond_indep_stack"] if observed else ())}
    matching = [name for name in shared if sizes[name] == num_data]
    if matching:
        return matching[0]
    raise ConfigError(
        f"no sample site of the model or guide lies in a plate named {DATA_PLATE!r}, and no other plate "
        f"that every observed site shares has the size {num_data} of the data passed in: a per-datapoint "
        f"objective needs every per-datapoint site inside pyro.plate({DATA_PLATE!r}, N), with N = the "
        "number of data points passed in (or pass data_plate= the name of your data plate)"
    )
