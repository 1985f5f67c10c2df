"""Image data sets for VAEs, loaded into memory as float tensors with values in ``[0, 1]``.

Four named data sets are available through :func:`load`:

- ``"binarized-mnist"``: the statically binarized MNIST of Larochelle & Murray (2011), the
  standard benchmark for log-likelihoods of binary-image VAEs (50,000 / 10,000 / 10,000 images).
- ``"mnist"`` and ``"fashion-mnist"``: grey-scale intensities, by default *dynamically*
  binarized as in Burda et al. (2015): every time a training image is seen its pixels are
  resampled as Bernoulli draws with the pixel intensities as probabilities.
- ``"digits"``: scikit-learn's bundled 8x8 digits, which need no download; small enough for
  examples and tests.

Any tensor or :class:`torch.utils.data.Dataset` can be used instead through :func:`as_dataset`.

References:

- H. Larochelle and I. Murray (2011), "The Neural Autoregressive Distribution Estimator", AISTATS.
- Y. Burda, R. Grosse and R. Salakhutdinov (2015), "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from pyrovae.data import as_model_input
from pyrovae.errors import DataError, unknown_name

__all__ = [
    "BINARIZED_MNIST_URL",
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
#: the splits of every data set
SPLITS = ("train", "valid", "test")
BINARIZE_MODES = ("dynamic", "threshold", "none")

#: where Larochelle & Murray's ``binarized_mnist_{split}.amat`` files are published; the
#: environment variable ``PYROVAE_BINARIZED_MNIST_URL`` overrides it (e.g. with a mirror).
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
#: canonical number of rows of each binarized-MNIST split
BINARIZED_MNIST_ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000}
#: where Debian's ``dataset-fashion-mnist`` package installs the Fashion-MNIST idx files
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: seed of the one-off Bernoulli draw that binarizes "valid"/"test" splits under "dynamic"
EVAL_BINARIZE_SEED = 0
#: seed of the permutation that splits scikit-learn's digits
DIGITS_SPLIT_SEED = 0
DIGITS_SPLIT_SIZES = {"train": 1197, "valid": 300, "test": 300}
#: the last this-many images of the MNIST/Fashion-MNIST training file form the "valid" split
MNIST_VALID_SIZE = 10_000

#: the number of grey levels of each data set's stored intensities ``k / (levels - 1)``, which the
#: ``"binomial"`` likelihood models
GREY_LEVELS = {"binarized-mnist": 2, "mnist": 256, "fashion-mnist": 256, "digits": 17}
#: the likelihood ``pyrovae train`` uses on each data set unless told otherwise: the Bernoulli on
#: (binarized) MNIST, as the literature compares them; the binomial on the digits' 17 grey levels
DEFAULT_LIKELIHOOD = {"binarized-mnist": "bernoulli", "mnist": "bernoulli", "fashion-mnist": "bernoulli",
                      "digits": "binomial"}  # fmt: skip

#: the binarization ``binarize="default"`` means for each data set
DEFAULT_BINARIZE = {
    "binarized-mnist": None,
    "mnist": "dynamic",
    "fashion-mnist": "dynamic",
    "digits": "dynamic",
}
_PIXELS = 28 * 28
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: torchvision's class for each idx data set; it keeps the raw files in <root>/<class name>/raw
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_unwritable_warned: set[Path] = set()


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`~pyrovae.errors.DataError` if ``x`` holds NaN or infinite entries.

    ``what`` names the tensor in the message (e.g. ``"the training data"``).
    """
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
    """Raise :class:`~pyrovae.errors.DataError` if ``x`` holds values other than 0 and 1.

    A Bernoulli likelihood is only a density for binary data; grey-scale intensities must be
    binarized first or modelled with another likelihood.
    """
    bad = (x != 0) & (x != 1)
    num_bad = int(bad.sum())
    if num_bad:
        example = float(x[bad][0])
        raise DataError(
            f"{what} has {num_bad} values out of {x.numel()} that are neither 0 nor 1 (e.g. {example:g}), "
            "but the Bernoulli likelihood needs binary data; pass binarize='dynamic' or 'threshold' "
            "(--binarize), or use likelihood='gaussian' or 'continuous-bernoulli'"
        )


def _check_binarize(binarize: str | None) -> str | None:
    """Normalize a ``binarize`` option: ``"none"`` becomes ``None``; unknown modes raise."""
    if binarize is None or binarize == "none":
        return None
    if binarize not in BINARIZE_MODES:
        raise unknown_name("binarize mode", str(binarize), BINARIZE_MODES)
    return binarize


class VAEDataset(Dataset):
    """An in-memory image data set, binarized on access as the model needs.

    ``binarize`` says how :meth:`__getitem__` and :meth:`batch` turn the stored intensities
    into what the model sees:

    - ``"dynamic"`` (Burda et al. 2015): pixels are Bernoulli draws with the intensities as
      probabilities. On the ``"train"`` split every access draws afresh, which acts as a
      regularizer and uses all the information in grey-scale data. On ``"valid"`` and
      ``"test"`` the draw is made *once*, when the data set is built, from a CPU generator
      seeded with :data:`EVAL_BINARIZE_SEED`, so that evaluation and log-likelihood estimates are
      deterministic and comparable between runs and devices.
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
        binarize = _check_binarize(binarize)
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
        # the one-off draw used for evaluation splits under dynamic binarization
        self._fixed: torch.Tensor | None = None
        if binarize == "dynamic" and split != "train":
            # drawn on the CPU: the same bits wherever the data are held
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
        """The data points at ``index`` as the model sees them, binarized in one vectorized call.

        This is the fast path trainers use instead of collating single items. Under dynamic
        binarization of the training split, one :func:`torch.bernoulli` call draws the whole
        batch, from ``generator`` if given (on the generator's device, the result moved to the
        data's: a CPU generator gives the bits of a run on the CPU wherever the data are held).
        """
        if self._fixed is not None:
            return self._fixed[index].to(self.data.dtype)
        x = self.data[index]
        if self.binarize == "dynamic":
            if generator is not None and generator.device != x.device:
                return torch.bernoulli(x.to(generator.device), generator=generator).to(x.device)
            return torch.bernoulli(x, generator=generator)
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

    Labels equal to :data:`UNLABELLED` mark data points whose label is hidden, for
    semi-supervised models such as :class:`~pyrovae.SSVAE`; a batch may mix both kinds, so that
    every data point is one term of the objective and the data plate's minibatch scale
    :math:`N/B` stays that of the whole data set.

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
    """``data`` with its labels (``data.targets``), all of them or ``num_labels`` of them.

    With ``num_labels`` the same number of labels is kept in each class (as in Kingma et al.
    2014), chosen at random with ``seed``; the others become :data:`UNLABELLED`.
    """
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
    """The data set ``fit`` trains on, from a tensor or a data set.

    A tensor of shape ``(N, *event_shape)`` becomes a :class:`VAEDataset` with
    ``binarize=None`` (boolean and ``uint8`` tensors cast to the default float dtype, other dtypes
    kept; not copied), after checking that it holds no NaN or infinite values. A
    :class:`VAEDataset` or any other :class:`torch.utils.data.Dataset` is returned unchanged.
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
    :param str split: one of :data:`SPLITS`. MNIST and Fashion-MNIST use the first 50,000
        training images for ``"train"``, the last 10,000 for ``"valid"`` and the official
        10,000 test images for ``"test"``; the digits are split 1197/300/300 by a permutation
        with a fixed seed.
    :param root: directory holding the data files (they may also sit in a subdirectory named
        after the data set, or in torchvision's ``<root>/MNIST/raw`` layout). If ``None``, the
        directory in the environment variable ``PYROVAE_DATA`` is searched instead, then (for
        Fashion-MNIST) Debian's ``/usr/share/datasets/fashion-mnist``. The cache directory is
        searched last in every case, since downloads go there. Ignored for digits.
    :param bool download: fetch missing files into the cache directory (binarized-MNIST from
        :data:`BINARIZED_MNIST_URL`, MNIST and Fashion-MNIST with torchvision).
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
    cache = _cache_dir(cache_dir)
    targets = None
    if key == "binarized-mnist":
        data = _load_binarized_mnist(split, root, download, cache)
    elif key == "digits":
        data, targets = _load_digits(split)
    else:
        data, targets = _load_mnist_like(key, split, root, download, cache)
    return VAEDataset(data, targets, name=key, split=split, binarize=binarize)


# ---------------------------------------------------------------------------------------------
# locations


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get("PYROVAE_CACHE") or Path.home() / ".cache" / "pyrovae"
    return Path(cache_dir).expanduser()


def _search_dirs(root: str | os.PathLike | None, cache: Path, extra: Iterable[Path] = ()) -> list[Path]:
    """Directories to search, in order: ``root``, else ``$PYROVAE_DATA`` and ``extra``; then the cache."""
    if root is not None:
        dirs = [Path(root).expanduser()]
    else:
        env = os.environ.get("PYROVAE_DATA")
        dirs = ([Path(env).expanduser()] if env else []) + list(extra)
    return dirs + [cache]


def _describe(paths: Iterable[Path]) -> str:
    return "; ".join(f"{p}" if p.is_dir() else f"{p} (no such directory)" for p in paths)


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create the cache directory {path} ({err}); pass cache_dir= or set PYROVAE_CACHE "
            "to a writable directory"
        ) from None


# ---------------------------------------------------------------------------------------------
# binarized MNIST (Larochelle & Murray 2011)


def _binarized_mnist_url(split: str) -> str:
    base = os.environ.get("PYROVAE_BINARIZED_MNIST_URL") or BINARIZED_MNIST_URL
    return f"{base.rstrip('/')}/binarized_mnist_{split}.amat"


def _load_binarized_mnist(
    split: str, root: str | os.PathLike | None, download: bool, cache: Path
) -> torch.Tensor:
    filename = f"binarized_mnist_{split}.amat"
    dirs = [d for base in _search_dirs(root, cache) for d in (base, base / "binarized_mnist")]
    path = next((d / f for d in dirs for f in (filename, filename + ".gz") if (d / f).is_file()), None)
    if path is None:
        if not download:
            raise DataError(
                f"binarized-MNIST file {filename} (or {filename}.gz) not found; "
                f"looked in: {_describe(dirs)}. Pass root= (--data-root) pointing at the directory with "
                f"the .amat files, or download=True (--download) to fetch them into {cache}"
            )
        _ensure_dir(cache)
        path = cache / filename
        _download(_binarized_mnist_url(split), path)
    bits = _read_amat_cached(path, cache, expected_rows=BINARIZED_MNIST_ROWS[split])
    return torch.from_numpy(bits).view(-1, 1, 28, 28).to(torch.float32)


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` to ``dest`` atomically: into a temporary file beside it, then renamed."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, dest)
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise DataError(
            f"could not download {url} to {dest} ({err}); check the network connection or set "
            "PYROVAE_BINARIZED_MNIST_URL to a mirror, or fetch the file by hand and pass root= "
            "(--data-root) pointing at its directory"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _refetch_hint(path: Path) -> str:
    return f"the file is damaged or incomplete: delete {path} and fetch it again (download=True / --download)"


def _parse_amat(path: Path, expected_rows: int | None = None) -> np.ndarray:
    """Parse a binarized-MNIST ``.amat`` file (plain or ``.gz``) into a ``uint8`` array ``(N, 784)``.

    Each non-blank line must hold 784 space-separated ``0``/``1`` values; if ``expected_rows``
    is given the file must hold exactly that many lines of data.
    """
    rows: list[bytes] = []
    lineno = 0
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                tokens = line.split()
                if not tokens:
                    continue
                if len(tokens) != _PIXELS:
                    raise DataError(
                        f"{path}, line {lineno}: expected {_PIXELS} space-separated 0/1 values, found "
                        f"{len(tokens)}; {_refetch_hint(path)}"
                    )
                row = b"".join(tokens)
                if len(row) != _PIXELS or row.translate(None, b"01"):
                    bad = next(t for t in tokens if t not in (b"0", b"1")).decode(errors="replace")
                    raise DataError(
                        f"{path}, line {lineno}: value {bad!r} is not 0 or 1; {_refetch_hint(path)}"
                    )
                rows.append(row)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        where = f" after line {lineno}" if lineno else ""
        raise DataError(f"{path} ends early or is corrupt{where} ({err}); {_refetch_hint(path)}") from None
    if expected_rows is not None and len(rows) != expected_rows:
        raise DataError(
            f"{path} holds {len(rows)} images where {expected_rows} were expected; {_refetch_hint(path)}"
        )
    if not rows:
        raise DataError(f"{path} holds no images; {_refetch_hint(path)}")
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, _PIXELS) - ord("0")


def _read_amat_cached(path: Path, cache: Path, expected_rows: int | None = None) -> np.ndarray:
    """:func:`_parse_amat`, through a bit-packed copy in ``cache`` keyed by the file's path, size and mtime.

    The copy is about 16x smaller than the text and loads in a fraction of the time of parsing.
    If ``cache`` cannot be written, the file is parsed every time (with one warning).
    """
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache / f"{path.name.split('.')[0]}-{key}.npy"
    if cached.is_file():
        try:
            packed = np.load(cached)
        except (OSError, ValueError, EOFError):
            packed = None  # a damaged copy is parsed again and overwritten below
        if (
            packed is not None
            and packed.dtype == np.uint8
            and packed.shape[1:] == (_PIXELS // 8,)
            and expected_rows in (None, len(packed))
        ):
            return np.unpackbits(packed, axis=1, count=_PIXELS)
    bits = _parse_amat(path, expected_rows)
    try:
        _save_atomic(cached, np.packbits(bits, axis=1))
    except OSError as err:
        if cache not in _unwritable_warned:
            _unwritable_warned.add(cache)
            warnings.warn(
                f"cannot write the parsed-data cache in {cache} ({err}); parsing the text files on every "
                "load instead. Pass cache_dir= or set PYROVAE_CACHE to a writable directory to speed this up",
                stacklevel=4,
            )
    return bits


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file beside ``path``, then rename it, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (idx files, read by torchvision)


def _find_idx_pair(part: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    """The (images, labels) idx files of ``part`` in the first directory holding both, plain or ``.gz``."""
    for d in dirs:
        found = [
            next((d / (f + ext) for ext in ("", ".gz") if (d / (f + ext)).is_file()), None)
            for f in _IDX_FILES[part]
        ]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    return None


def _read_idx(path: Path, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Read an idx file with torchvision's ``reader``, decompressing a ``.gz`` file to a temporary copy."""
    try:
        if path.suffix != ".gz":
            return reader(str(path))
        with tempfile.TemporaryDirectory() as tmp, gzip.open(path, "rb") as src:
            plain = Path(tmp) / path.stem
            with open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            return reader(str(plain))
    except (AssertionError, TypeError, ValueError, RuntimeError, EOFError, zlib.error, OSError) as err:
        raise DataError(
            f"{path} is not a readable idx file ({str(err) or type(err).__name__}); {_refetch_hint(path)}"
        ) from None


def _load_mnist_like(
    name: str, split: str, root: str | os.PathLike | None, download: bool, cache: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision.datasets as tvd
    from torchvision.datasets.mnist import read_image_file, read_label_file

    cls_name = _TORCHVISION_CLASS[name]
    extra = [DEBIAN_FASHION_MNIST] if name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir() else []
    # a directory itself, a per-data-set subdirectory, or torchvision's own layout <root>/<Class>/raw
    dirs = [
        d for base in _search_dirs(root, cache, extra) for d in (base, base / name, base / cls_name / "raw")
    ]
    part = "test" if split == "test" else "train"
    found = _find_idx_pair(part, dirs)
    if found is None and download:
        _ensure_dir(cache)
        try:
            getattr(tvd, cls_name)(str(cache), train=part == "train", download=True)
        except (RuntimeError, OSError) as err:
            raise DataError(
                f"could not download {name} with torchvision ({err}); check the network connection, or "
                "fetch the idx files by hand and pass root= (--data-root) pointing at their directory"
            ) from None
        found = _find_idx_pair(part, dirs)
    if found is None:
        hint = " (on Debian/Ubuntu: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
        files = " and ".join(f"{f}[.gz]" for f in _IDX_FILES[part])
        raise DataError(
            f"{name} files {files} not found together; looked in: {_describe(dirs)}. Pass root= "
            "(--data-root) pointing at the directory holding them, or download=True (--download) to fetch "
            f"them into {cache}{hint}"
        )
    images_path, labels_path = found
    images = _read_idx(images_path, read_image_file)
    labels = _read_idx(labels_path, read_label_file)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            f"{_refetch_hint(images_path)}"
        )
    if part == "train":
        if len(images) <= MNIST_VALID_SIZE:
            raise DataError(
                f"{images_path} holds {len(images)} images, too few to hold out {MNIST_VALID_SIZE} for the "
                f"'valid' split; {_refetch_hint(images_path)}"
            )
        keep = slice(None, -MNIST_VALID_SIZE) if split == "train" else slice(-MNIST_VALID_SIZE, None)
        images, labels = images[keep], labels[keep]
    return images.unsqueeze(1).to(torch.float32).div_(255), labels


# ---------------------------------------------------------------------------------------------
# scikit-learn's digits


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 digits of scikit-learn scaled to ``[0, 1]``, split by a permutation with a fixed seed.

    ``numpy.random.RandomState`` is used because its stream is frozen across numpy versions, so
    the split is the same everywhere.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(digits.target))
    start = sum(DIGITS_SPLIT_SIZES[s] for s in SPLITS[: SPLITS.index(split)])
    index = order[start : start + DIGITS_SPLIT_SIZES[split]]
    data = torch.from_numpy(digits.data[index] / 16.0).to(torch.float32).view(-1, 1, 8, 8)
    return data, torch.from_numpy(digits.target[index]).long()
