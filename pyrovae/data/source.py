"""One data source for every entry point: training, evaluation, AIS and estimator comparisons.

:class:`DataSource` reads

- a tensor of shape ``(N, ...)``;
- a tuple of tensors sharing their leading dimension ``N``, passed to the model and guide
  positionally (data and labels, or a condition); a list is refused, since a list of tensors is as
  often one tensor per data point as one per column;
- any :class:`torch.utils.data.Dataset`: through its ``batch(index[, generator])`` method where it
  has one (:class:`~pyrovae.data.datasets.VAEDataset`), as its tensors for a
  :class:`~torch.utils.data.TensorDataset`, else item by item; an item that is a tuple gives one
  column per element, and *every* column is passed to the model and guide.

Dtypes are kept (float64 data stay float64); boolean and ``uint8`` tensors become the default
float dtype (:func:`as_model_input`), the same way everywhere. Batches are read on the device the
data live on; :func:`pyrovae.devices.move` takes them to the model's.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, TensorDataset

from pyrovae.errors import DataError

__all__ = ["DataSource", "as_model_input"]

Batch = tuple[torch.Tensor, ...]


def as_model_input(t) -> torch.Tensor:
    """``t`` as a model sees it: boolean and ``uint8`` tensors as the default float dtype (values
    unchanged), anything else as it is."""
    t = torch.as_tensor(t)
    if t.dtype in (torch.bool, torch.uint8):
        return t.to(torch.get_default_dtype())
    return t


class DataSource:
    """Batches of a tensor, a tuple of tensors or a data set (see the module docstring); ``dataset`` is the
    data set read, or ``None`` for tensors.

    :param data: the data.
    :param str name: what the data are, for messages (e.g. ``"the training data"``).
    """

    def __init__(self, data, name: str = "the data"):
        self.name = name
        self._tensors: Batch | None = None
        self.dataset = None
        if isinstance(data, DataSource):
            self._tensors, self.dataset = data._tensors, data.dataset
        elif isinstance(data, torch.Tensor):
            self._tensors = (data,)
        elif isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
            self._tensors = tuple(data)
        elif isinstance(data, list) and data and all(isinstance(t, torch.Tensor) for t in data):
            raise DataError(
                f"{name} is a list of {len(data)} tensors: pass one tensor of shape (N, ...), e.g. "
                "torch.stack(data) for one tensor per data point, or a tuple (x, y) for columns that "
                "share their leading dimension N"
            )
        elif isinstance(data, TensorDataset):
            self._tensors = tuple(data.tensors)
        elif isinstance(data, Dataset) or (
            hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes))
        ):
            self.dataset = data
        else:
            raise DataError(
                f"{name} must be a tensor of shape (N, ...), a tuple of such tensors, or a torch Dataset; "
                f"got {type(data).__name__}. Convert it with torch.as_tensor(data)"
            )
        if self._tensors is not None:
            sizes = {t.shape[0] if t.dim() else None for t in self._tensors}
            if len(sizes) != 1 or None in sizes:
                shapes = ", ".join(str(tuple(t.shape)) for t in self._tensors)
                raise DataError(
                    f"the tensors of {name} must share their leading (data point) dimension, got {shapes}"
                )
            self.num_data = sizes.pop()
        else:
            self.num_data = len(self.dataset)
        if self.num_data == 0:
            raise DataError(f"{name} holds no data points; pass at least one")
        batch = getattr(self.dataset, "batch", None)
        self._batch_takes_generator = batch is not None and "generator" in inspect.signature(batch).parameters

    def __len__(self) -> int:
        return self.num_data

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> Batch:
        """The data points at ``index``, one tensor per column.

        :param torch.Tensor index: a LongTensor of data point indices.
        :param torch.Generator generator: drives the random transformations (dynamic binarization) of a
            data set whose ``batch`` method takes a generator; without one, they draw from torch's
            global generator.
        """
        if self._tensors is not None:
            parts = tuple(t[index.to(t.device)] for t in self._tensors)
        elif hasattr(self.dataset, "batch"):
            kwargs = {"generator": generator} if self._batch_takes_generator else {}
            out = self.dataset.batch(index, **kwargs)
            parts = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        else:
            items = [self.dataset[int(i)] for i in index]
            items = [item if isinstance(item, (tuple, list)) else (item,) for item in items]
            parts = tuple(torch.stack([torch.as_tensor(v) for v in col]) for col in zip(*items, strict=True))
        return tuple(as_model_input(p) for p in parts)

    def chunk(self, lo: int, hi: int) -> Batch:
        """Data points ``lo:hi``, in order, one tensor per column.

        :param int lo: the first data point.
        :param int hi: one past the last data point.
        """
        if self._tensors is not None:
            return tuple(as_model_input(t[lo:hi]) for t in self._tensors)
        return self.batch(torch.arange(lo, hi))

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Batches in the order of a permutation drawn from ``generator``, or in order without one.

        :param int batch_size: data points per batch; the last batch holds the rest.
        :param torch.Generator generator: draws the permutation and, for a data set, its random
            transformations (dynamic binarization); ``None`` for the data points in order.
        """
        if generator is not None:
            order = torch.randperm(self.num_data, generator=generator)
            for i in range(0, self.num_data, batch_size):
                yield self.batch(order[i : i + batch_size], generator)
            return
        for i in range(0, self.num_data, batch_size):
            yield self.chunk(i, min(i + batch_size, self.num_data))

    def sample(self, num: int, seed: int = 0) -> Batch:
        """``num`` data points drawn at random without replacement with ``seed`` (all of them, in a random
        order, if there are fewer): a subset of a data set ordered by class is not its first ``num``.

        :param int num: how many data points.
        :param int seed: seeds the draw (and a data set's random transformations): the same ``seed``
            gives the same data points.
        """
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(self.num_data, generator=generator)[:num]
        return self.batch(index, generator)
