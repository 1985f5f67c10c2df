"""Image data sets for VAEs, loaded into memory as float tensors with values in ``[0, 1]``.

Four named data sets are available through :func:`load`:

- ``"binarized-mnist"``: the statically binarized MNIST of Larochelle & Murray (2011), the
  standard benchmark for log-likelihoods of binary-image VAEs (50,000 / 10,000 / 10,000 images).
- ``"mnist"`` and ``"fashion-mnist"``: grey-scale intensities, by default *dynamically* binarized as in
  Burda et al. (2015) (see :class:`VAEDataset`).
- ``"digits"``: scikit-learn's bundled 8x8 digits, which need no download; small enough for
  examples and tests.

Any tensor or :class:`torch.utils.data.Dataset` can be used instead through :func:`as_dataset`.

References:

- H. Larochelle and I. Murray (2011), "The Neural Autoregressive Distribution Estimator", AISTATS.
- Y. Burda, R. Grosse and R. Salakhutdinov (2015), "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from pyrovae.data import as_model_input
from pyrovae.data.files import SPLITS, cache_dir_of, read_binarized_mnist, read_digits, read_mnist_like
from pyrovae.errors import DataError, unknown_name

__all__ = [
    "DEFAULT_BINARIZE",
    "DEFAULT_LIKELIHOOD",
    "GREY_LEVELS",
    "NAMES",
    "SPLITS",
    "UNLABELLED",
    "LabelledDataset",
    "VAEDataset",
    "as_dataset",
    "check_binary",
    "check_finite",
    "load",
    "with_labels",
]

#: the data sets :func:`load` reads
NAMES = ("binarized-mnist", "mnist", "fashion-mnist", "digits")
BINARIZE_MODES = ("dynamic", "threshold", "none")

#: seed of the one-off Bernoulli draw that binarizes "valid"/"test" splits under "dynamic"
EVAL_BINARIZE_SEED = 0
#: the number of grey levels of each data set's stored intensities ``k / (levels - 1)``, which the
#: ``"binomial"`` likelihood models
GREY_LEVELS = {"binarized-mnist": 2, "mnist": 256, "fashion-mnist": 256, "digits": 17}
#: the likelihood ``pyrovae train`` uses on each data set unless told otherwise: the Bernoulli on
#: (binarized) MNIST, as the literature compares them; the binomial on the digits' 17 grey levels
DEFAULT_LIKELIHOOD = {name: "bernoulli" for name in NAMES} | {"digits": "binomial"}
#: the binarization ``binarize="default"`` means for each data set: dynamic, but for binarized MNIST
DEFAULT_BINARIZE = {name: "dynamic" for name in NAMES} | {"binarized-mnist": None}


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`~pyrovae.errors.DataError` if ``x`` holds NaN or infinite entries; ``what`` names the
    tensor in the message (e.g. ``"the training data"``)."""
    # a NaN or infinite entry makes the sum NaN or infinite, so a finite sum (one fast reduction)
    # proves every entry finite; only otherwise are the bad entries counted
    if not x.is_floating_point() or torch.isfinite(x.sum()):
        return
    bad = ~torch.isfinite(x)
    num_bad = int(bad.sum())
    if num_bad:
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise DataError(
            f"{what} has {num_bad} NaN or infinite entries out of {x.numel()} (the first at index {first}); "
            "remove those data points or replace the values, e.g. with torch.nan_to_num(x), before fitting"
        )


def check_binary(x: torch.Tensor, what: str) -> None:
    """Raise :class:`~pyrovae.errors.DataError` if ``x`` holds values other than 0 and 1: a Bernoulli
    likelihood is only a density for binary data; grey-scale intensities must be binarized first or modelled
    with another likelihood."""
    bad = (x != 0) & (x != 1)
    num_bad = int(bad.sum())
    if num_bad:
        example = float(x[bad][0])
        raise DataError(
            f"{what} has {num_bad} values out of {x.numel()} that are neither 0 nor 1 (e.g. {example:g}), "
            "but the Bernoulli likelihood needs binary data; pass binarize='dynamic' or 'threshold' "
            "(--binarize), or use likelihood='gaussian' or 'continuous-bernoulli'"
        )


class VAEDataset(Dataset):
    """An in-memory image data set, binarized on access as the model needs; ``binarize`` says how
    :meth:`__getitem__` and :meth:`batch` turn the stored intensities into what the model sees:

    - ``"dynamic"`` (Burda et al. 2015): pixels are Bernoulli draws with the intensities as probabilities. On
      the ``"train"`` split every access draws afresh, which acts as a regularizer and uses all the
      information in grey-scale data. On ``"valid"`` and ``"test"`` the draw is made *once*, when the data set
      is built, from a CPU generator seeded with :data:`EVAL_BINARIZE_SEED`, so that evaluation and
      log-likelihood estimates are deterministic and comparable between runs and devices.
    - ``"threshold"``: a pixel is 1 where its intensity exceeds 0.5, else 0.
    - ``None`` (or ``"none"``): the stored values, unchanged.

    :param torch.Tensor data: float tensor of shape ``(N, *event_shape)``; values must lie in
        ``[0, 1]`` unless ``binarize`` is ``None``. Stored as given (not copied).
    :param torch.Tensor targets: optional class labels, a LongTensor of shape ``(N,)``.
    :param str name: name of the data set, for messages and ``repr``.
    :param str split: one of :data:`SPLITS`.
    :param str binarize: ``"dynamic"``, ``"threshold"`` or ``None``.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        name: str = "tensor",
        split: str = "train",
        binarize: str | None = None,
    ):
        if split not in SPLITS:
            raise unknown_name("split", split, SPLITS)
        if binarize is not None and binarize not in BINARIZE_MODES:
            raise unknown_name("binarize mode", str(binarize), BINARIZE_MODES)
        binarize = None if binarize == "none" else binarize
        if data.dim() == 0 or len(data) == 0:
            raise DataError(
                f"the {name!r} data has shape {tuple(data.shape)}, but a data set needs at least one data "
                "point along the first dimension; pass a tensor of shape (N, *event_shape) with N >= 1"
            )
        check_finite(data, f"the {name!r} data")
        if binarize is not None:
            low, high = torch.aminmax(data)
            if low < 0 or high > 1:
                raise DataError(
                    f"the {name!r} data has values in [{float(low):g}, {float(high):g}], but "
                    f"binarize={binarize!r} reads them as pixel intensities in [0, 1]; rescale the data "
                    "(e.g. x / 255) or pass binarize=None"
                )
        if targets is not None and targets.shape != data.shape[:1]:
            raise DataError(
                f"the {name!r} targets have shape {tuple(targets.shape)} but the data has {len(data)} "
                f"data points; pass one label per data point, shape ({len(data)},)"
            )
        self.data = data
        self.targets = targets
        self.name = name
        self.split = split
        self.binarize = binarize
        self._fixed: torch.Tensor | None = None
        if binarize == "dynamic" and split != "train":
            generator = torch.Generator().manual_seed(EVAL_BINARIZE_SEED)
            self._fixed = torch.bernoulli(data.cpu(), generator=generator).bool().to(data.device)

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one data point, e.g. ``(1, 28, 28)`` for MNIST."""
        return self.data.shape[1:]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i) -> torch.Tensor:
        return self.batch(i)

    def batch(self, index, generator: torch.Generator | None = None) -> torch.Tensor:
        """The data points at ``index`` as the model sees them, binarized in one vectorized call: the fast
        path trainers use instead of collating single items. The training split's dynamic binarization draws
        from ``generator`` if given, on its device, and moves the result to the data's (a CPU generator gives
        the bits of a run on the CPU wherever the data are held).

        :param index: the data points: an ``int``, a slice or a LongTensor of indices.
        :param torch.Generator generator: the generator of the training split's dynamic binarization
            (default: torch's global one); nothing else draws.
        """
        if self._fixed is not None:
            return self._fixed[index].to(self.data.dtype)
        x = self.data[index]
        if self.binarize == "dynamic":
            device = x.device if generator is None else generator.device
            return torch.bernoulli(x.to(device), generator=generator).to(x.device)
        if self.binarize == "threshold":
            return (x > 0.5).to(x.dtype)
        return x

    def __repr__(self) -> str:
        return (
            f"VAEDataset(name={self.name!r}, split={self.split!r}, N={len(self)}, "
            f"event_shape={tuple(self.event_shape)}, binarize={self.binarize!r})"
        )


#: the label of a data point whose label is hidden (semi-supervised learning)
UNLABELLED = -1


class LabelledDataset(Dataset):
    """Data points with their labels: :meth:`batch` returns ``(x, y)``, which :func:`~pyrovae.fit`
    and :func:`~pyrovae.log_likelihood` pass to the model and guide as two positional arguments.

    Labels equal to :data:`UNLABELLED` mark data points whose label is hidden, for semi-supervised models such
    as :class:`~pyrovae.SSVAE`; a batch may mix both kinds, so that every data point is one term of the
    objective and the data plate's minibatch scale :math:`N/B` stays that of the whole data set.

    :param VAEDataset data: the data points, as :meth:`VAEDataset.batch` gives them.
    :param torch.Tensor labels: a LongTensor of shape ``(N,)``.
    """

    def __init__(self, data: VAEDataset, labels: torch.Tensor):
        if labels.shape != (len(data),) or labels.dtype != torch.long:
            raise DataError(
                f"labels must be a LongTensor of shape ({len(data)},), one per data point; got "
                f"{labels.dtype} of shape {tuple(labels.shape)}"
            )
        self.data = data
        self.labels = labels

    @property
    def event_shape(self) -> torch.Size:
        return self.data.event_shape

    @property
    def num_labelled(self) -> int:
        """How many data points carry their label."""
        return int((self.labels != UNLABELLED).sum())

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(i)

    def batch(self, index, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The data points at ``index`` (see :meth:`VAEDataset.batch`) and their labels."""
        return self.data.batch(index, generator=generator), self.labels[index]

    def __repr__(self) -> str:
        return f"LabelledDataset({self.data!r}, labelled={self.num_labelled})"


def with_labels(data: VAEDataset, num_labels: int | None = None, *, seed: int = 0) -> LabelledDataset:
    """``data`` with its labels (``data.targets``), all of them or ``num_labels`` of them: the same number in
    each class (as in Kingma et al. 2014), chosen at random with ``seed``, the others :data:`UNLABELLED`."""
    targets = getattr(data, "targets", None)
    if targets is None:
        raise DataError(
            f"{data!r} has no labels; load a labelled data set (mnist, fashion-mnist or digits; "
            "binarized-mnist has none) or build a VAEDataset with targets="
        )
    if num_labels is None:
        return LabelledDataset(data, targets)
    classes = torch.unique(targets)
    per_class, extra = divmod(num_labels, len(classes))
    if num_labels < 1 or extra or per_class > torch.bincount(targets).min():
        raise DataError(
            f"num_labels={num_labels} cannot be split evenly over the {len(classes)} classes of {data!r} "
            f"(at most {int(torch.bincount(targets).min())} each); choose a multiple of {len(classes)}"
        )
    generator = torch.Generator().manual_seed(seed)
    labels = torch.full_like(targets, UNLABELLED)
    for c in classes:
        members = torch.nonzero(targets == c).flatten()
        keep = members[torch.randperm(len(members), generator=generator)[:per_class]]
        labels[keep] = c
    return LabelledDataset(data, labels)


def as_dataset(data: torch.Tensor | Dataset, *, name: str = "tensor") -> Dataset:
    """The data set ``fit`` trains on, from a tensor or a data set. A tensor of shape ``(N, *event_shape)``
    becomes a :class:`VAEDataset` with ``binarize=None`` (boolean and ``uint8`` tensors cast to the default
    float dtype, other dtypes kept; not copied), after checking that it holds no NaN or infinite values. A
    :class:`VAEDataset` or any other :class:`torch.utils.data.Dataset` is returned unchanged.

    :param data: a tensor of shape ``(N, *event_shape)`` or a :class:`torch.utils.data.Dataset`.
    :param str name: the name of the :class:`VAEDataset` made from a tensor, for messages and ``repr``
        (unused for a data set).
    """
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, torch.Tensor):
        raise DataError(
            f"the data must be a torch.Tensor of shape (N, *event_shape) or a torch.utils.data.Dataset, "
            f"got {type(data).__name__}; convert it with torch.as_tensor(data)"
        )
    return VAEDataset(as_model_input(data), name=name, binarize=None)


def load(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    *,
    binarize: str | None = "default",
    cache_dir: str | os.PathLike | None = None,
) -> VAEDataset:
    """Load split ``split`` of the data set ``name`` into memory.

    :param str name: one of :data:`NAMES`.
    :param str split: one of :data:`SPLITS`. MNIST and Fashion-MNIST use the first 50,000 training images for
        ``"train"``, the last 10,000 for ``"valid"`` and the official 10,000 test images for ``"test"``; the
        digits are split 1197/300/300 by a permutation with a fixed seed.
    :param root: directory holding the data files (they may also sit in a subdirectory named
        after the data set, or in torchvision's ``<root>/MNIST/raw`` layout). If ``None``, the
        directory in the environment variable ``PYROVAE_DATA`` is searched instead, then (for
        Fashion-MNIST) Debian's ``/usr/share/datasets/fashion-mnist``. The cache directory is
        searched last in every case, since downloads go there. Ignored for digits.
    :param bool download: fetch missing files into the cache directory (binarized-MNIST from
        :data:`~pyrovae.data.files.BINARIZED_MNIST_URL`, MNIST and Fashion-MNIST with torchvision).
    :param str binarize: ``"dynamic"``, ``"threshold"``, ``None``/``"none"`` (see
        :class:`VAEDataset`) or ``"default"``: ``None`` for binarized-MNIST, which is already
        binary, and ``"dynamic"`` for the others (Burda et al. 2015).
    :param cache_dir: where downloads and parsed copies are kept; default: the environment
        variable ``PYROVAE_CACHE``, else ``~/.cache/pyrovae``.
    """
    key = name.lower().replace("_", "-")
    if key not in NAMES:
        raise unknown_name("data set", name, NAMES)
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS)
    if binarize == "default":
        binarize = DEFAULT_BINARIZE[key]
    elif binarize is not None and binarize not in BINARIZE_MODES:
        raise unknown_name("binarize mode", str(binarize), ("default",) + BINARIZE_MODES)
    cache = cache_dir_of(cache_dir)
    targets = None
    if key == "binarized-mnist":
        data = read_binarized_mnist(split, root, download, cache)
    elif key == "digits":
        data, targets = read_digits(split)
    else:
        data, targets = read_mnist_like(key, split, root, download, cache)
    return VAEDataset(data, targets, name=key, split=split, binarize=binarize)
