"""The files of the named data sets (binarized MNIST's ``.amat`` text, MNIST's and Fashion-MNIST's idx files,
scikit-learn's digits): where they are looked for, how they are downloaded, parsed and cached. What they hold
becomes a :class:`~pyrovae.data.datasets.VAEDataset` in :func:`~pyrovae.data.datasets.load`."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from pyrovae.errors import DataError

__all__ = [
    "BINARIZED_MNIST_ROWS",
    "BINARIZED_MNIST_URL",
    "DEBIAN_FASHION_MNIST",
    "SPLITS",
    "cache_dir_of",
    "parse_amat",
    "read_amat_cached",
    "read_binarized_mnist",
    "read_digits",
    "read_mnist_like",
]

#: the splits of every data set, in the order the digits are cut into them
SPLITS = ("train", "valid", "test")
#: where Larochelle & Murray's ``binarized_mnist_{split}.amat`` files are published; the
#: environment variable ``PYROVAE_BINARIZED_MNIST_URL`` overrides it (e.g. with a mirror).
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
#: canonical number of rows of each binarized-MNIST split
BINARIZED_MNIST_ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000}
#: where Debian's ``dataset-fashion-mnist`` package installs the Fashion-MNIST idx files
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: seed of the permutation that splits scikit-learn's digits
DIGITS_SPLIT_SEED = 0
DIGITS_SPLIT_SIZES = {"train": 1197, "valid": 300, "test": 300}
#: the last this-many images of the MNIST/Fashion-MNIST training file form the "valid" split
MNIST_VALID_SIZE = 10_000

_PIXELS = 28 * 28
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: torchvision's class for each idx data set; it keeps the raw files in <root>/<class name>/raw
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_unwritable_warned: set[Path] = set()


def cache_dir_of(cache_dir: str | os.PathLike | None) -> Path:
    """The cache directory: ``cache_dir``, else ``$PYROVAE_CACHE``, else ``~/.cache/pyrovae``."""
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


def read_binarized_mnist(
    split: str, root: str | os.PathLike | None, download: bool, cache: Path
) -> torch.Tensor:
    """Split ``split`` of Larochelle & Murray's (2011) binarized MNIST, ``(N, 1, 28, 28)`` float32."""
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
        base = os.environ.get("PYROVAE_BINARIZED_MNIST_URL") or BINARIZED_MNIST_URL
        _download(f"{base.rstrip('/')}/{filename}", path)
    bits = read_amat_cached(path, cache, expected_rows=BINARIZED_MNIST_ROWS[split])
    return torch.from_numpy(bits).view(-1, 1, 28, 28).to(torch.float32)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A file open for writing beside ``path``, renamed onto it when the block succeeds (else
    removed), so that readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` to ``dest`` atomically."""
    try:
        with _replacing(dest) as out, urllib.request.urlopen(url) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise DataError(
            f"could not download {url} to {dest} ({err}); check the network connection or set "
            "PYROVAE_BINARIZED_MNIST_URL to a mirror, or fetch the file by hand and pass root= "
            "(--data-root) pointing at its directory"
        ) from None


def _refetch_hint(path: Path) -> str:
    return f"the file is damaged or incomplete: delete {path} and fetch it again (download=True / --download)"


def parse_amat(path: Path, expected_rows: int | None = None) -> np.ndarray:
    """Parse a binarized-MNIST ``.amat`` file (plain or ``.gz``) into a ``uint8`` array ``(N, 784)``. Each
    non-blank line must hold 784 space-separated ``0``/``1`` values; if ``expected_rows`` is given the file
    must hold exactly that many lines of data."""
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


def read_amat_cached(path: Path, cache: Path, expected_rows: int | None = None) -> np.ndarray:
    """:func:`parse_amat`, through a bit-packed copy in ``cache`` keyed by the file's path, size and mtime,
    with a SHA-256 of the key and the packed rows: a copy that does not match it (damaged, or rewritten) is
    parsed again. The copy is about 16x smaller than the text and loads in a fraction of the time of parsing.
    If ``cache`` cannot be written, the file is parsed every time (with one warning)."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache / f"{path.name.split('.')[0]}-{key}.npz"
    try:
        with np.load(cached) as stored:
            packed, digest = stored["packed"], str(stored["sha256"])
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile):
        packed = None  # no copy, or a damaged one: the file is parsed and the copy (re)written below
    if (
        packed is not None
        and packed.dtype == np.uint8
        and packed.shape[1:] == (_PIXELS // 8,)
        and expected_rows in (None, len(packed))
        and digest == _packed_digest(key, packed)
    ):
        return np.unpackbits(packed, axis=1, count=_PIXELS)
    bits = parse_amat(path, expected_rows)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        packed = np.packbits(bits, axis=1)
        with _replacing(cached) as f:
            np.savez(f, packed=packed, sha256=np.array(_packed_digest(key, packed)))
    except OSError as err:
        if cache not in _unwritable_warned:
            _unwritable_warned.add(cache)
            warnings.warn(
                f"cannot write the parsed-data cache in {cache} ({err}); parsing the text files on every "
                "load instead. Pass cache_dir= or set PYROVAE_CACHE to a writable directory to speed this up",
                stacklevel=4,
            )
    return bits


def _packed_digest(key: str, packed: np.ndarray) -> str:
    """The SHA-256 of a cached copy's key and rows."""
    return hashlib.sha256(key.encode() + np.ascontiguousarray(packed).tobytes()).hexdigest()


def _find_idx_pair(part: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    """The (images, labels) idx files of ``part`` in the first directory holding both, plain or ``.gz``."""
    for d in dirs:
        found = [
            next((d / (f + ext) for ext in ("", ".gz") if (d / (f + ext)).is_file()), None)
            for f in _IDX_FILES[part]
        ]
        if None not in found:
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


def read_mnist_like(
    name: str, split: str, root: str | os.PathLike | None, download: bool, cache: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 28, 28)`` in ``[0, 1]`` and labels of a split of MNIST or Fashion-MNIST (idx files)."""
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


def read_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 digits of scikit-learn scaled to ``[0, 1]``, split by a permutation with a fixed seed:
    ``numpy.random.RandomState``'s, whose stream is frozen across numpy versions, so that the split is the
    same everywhere."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(digits.target))
    start = sum(DIGITS_SPLIT_SIZES[s] for s in SPLITS[: SPLITS.index(split)])
    index = order[start : start + DIGITS_SPLIT_SIZES[split]]
    data = torch.from_numpy(digits.data[index] / 16.0).to(torch.float32).view(-1, 1, 8, 8)
    return data, torch.from_numpy(digits.target[index]).long()
