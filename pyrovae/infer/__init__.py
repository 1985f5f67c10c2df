"""The inference engine: the one pass over a data set that every evaluation makes.

:mod:`pyrovae.infer.sweep` chunks a data set, seeds each chunk from ``(seed, first index)``,
moves it to the device, shards the chunks across the ranks of a distributed run, shows one
progress bar and gathers the per-datapoint rows in input order on every rank. An error on one
rank ends the sweep with that error on every rank. A new evaluation method gives the sweep a
per-chunk function; it never loops over data chunks, seeds or shards itself.

This package may import the plain modules of :mod:`pyrovae` (data, devices, distributed,
seeds, errors); nothing here imports a model, an estimator or a trainer.
"""

from .sweep import Chunk, Sweep

__all__ = ["Chunk", "Sweep"]
