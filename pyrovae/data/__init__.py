"""Data: one source for every entry point (:mod:`~pyrovae.data.source`: tensors, tuples of tensors,
any ``Dataset``, every column) and the named data sets (:mod:`~pyrovae.data.datasets`: digits,
MNIST, binarized MNIST, Fashion-MNIST). Nothing here imports a model or an evaluator."""

from pyrovae.data.source import DataSource, as_model_input

__all__ = ["DataSource", "as_model_input"]
