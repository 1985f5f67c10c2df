"""The inference engine: tracing a pair into (K, B) particle log-weights, and the one pass over a
data set that every evaluation makes; the evaluators built on them.

:mod:`~pyrovae.infer.pair` traces a model/guide pair in a particle plate, checks it and reduces it to one
log-weight per particle and data point: no other module builds a particle plate. :mod:`~pyrovae.infer.sweep`
chunks a data set, seeds each chunk from ``(seed, first index)``, moves it to the device, shards the chunks
across the ranks of a distributed run, shows one progress bar and gathers the per-datapoint rows in input
order on every rank. An error on one rank ends the sweep with that error on every rank. A new evaluation
method gives the sweep a per-chunk function; it never loops over data chunks, seeds or shards itself.

This package may import the plain modules of :mod:`pyrovae` (data, devices, distributed,
seeds, errors); nothing here imports a model, an estimator or a trainer.
"""

from pyrovae.infer.sweep import Chunk, Sweep

__all__ = ["Chunk", "Sweep"]
