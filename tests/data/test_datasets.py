from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae.data import datasets, files
from pyrovae.data.datasets import VAEDataset, as_dataset, check_binary, check_finite, load
from pyrovae.errors import ConfigError, DataError

SHARED_BINARIZED_MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "binarized_mnist"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Point every location pyrovae reads from the environment into ``tmp_path``."""
    monkeypatch.delenv("PYROVAE_DATA", raising=False)
    monkeypatch.delenv("PYROVAE_BINARIZED_MNIST_URL", raising=False)
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path / "cache"))


def amat_bytes(bits: np.ndarray) -> bytes:
    """The ``.amat`` text of a 0/1 array ``(N, 784)``: one line per row, values separated by spaces."""
    n, d = bits.shape
    text = np.full((n, 2 * d), ord(" "), dtype=np.uint8)
    text[:, 0::2] = bits + ord("0")
    text[:, -1] = ord("\n")
    return text.tobytes()


def write_amat(path: Path, bits: np.ndarray) -> Path:
    data = amat_bytes(bits)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return path


def random_bits(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 784)) < 0.2).astype(np.uint8)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def canonical_test_split(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A plain ``binarized_mnist_test.amat`` with the canonical 10,000 rows, and its bits."""
    bits = random_bits(files.BINARIZED_MNIST_ROWS["test"], seed=1)
    directory = tmp_path_factory.mktemp("amat_source")
    return write_amat(directory / "binarized_mnist_test.amat", bits), bits


# ---------------------------------------------------------------------------------------------
# .amat parsing and caching


@pytest.mark.parametrize("suffix", [".amat", ".amat.gz"])
def test_parse_amat(tmp_path, suffix):
    bits = random_bits(7)
    path = write_amat(tmp_path / f"binarized_mnist_train{suffix}", bits)
    np.testing.assert_array_equal(files.parse_amat(path), bits)
    np.testing.assert_array_equal(files.parse_amat(path, expected_rows=7), bits)
    with pytest.raises(DataError, match="holds 7 images where 8 were expected") as info:
        files.parse_amat(path, expected_rows=8)
    assert str(path) in str(info.value)


def test_parse_amat_tolerates_crlf_and_trailing_blank_lines(tmp_path):
    bits = random_bits(3)
    path = tmp_path / "binarized_mnist_valid.amat"
    path.write_bytes(amat_bytes(bits).replace(b"\n", b"\r\n") + b"\n\n")
    np.testing.assert_array_equal(files.parse_amat(path), bits)


@pytest.mark.parametrize("suffix", [".amat", ".amat.gz"])
def test_amat_cache(tmp_path, monkeypatch, suffix):
    bits = random_bits(9)
    path = write_amat(tmp_path / f"binarized_mnist_test{suffix}", bits)
    digest = sha256(path)
    cache = tmp_path / "cache"
    np.testing.assert_array_equal(files.read_amat_cached(path, cache), bits)
    cached = list(cache.iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npz"  # one packed copy, no temporary files left

    def no_parsing(*args, **kwargs):
        raise AssertionError("the cached copy should have been read")

    with monkeypatch.context() as m:
        m.setattr(files, "parse_amat", no_parsing)
        np.testing.assert_array_equal(files.read_amat_cached(path, cache), bits)
    assert sha256(path) == digest  # the source is never written

    # a changed source file (new size and mtime) is parsed again
    new_bits = random_bits(4, seed=2)
    write_amat(path, new_bits)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    np.testing.assert_array_equal(files.read_amat_cached(path, cache), new_bits)


def test_damaged_cache_is_parsed_again(tmp_path):
    bits = random_bits(5)
    path = write_amat(tmp_path / "binarized_mnist_test.amat", bits)
    cache = tmp_path / "cache"
    files.read_amat_cached(path, cache)
    (cached,) = cache.iterdir()
    cached.write_bytes(b"not an npz file")
    np.testing.assert_array_equal(files.read_amat_cached(path, cache), bits)
    assert np.load(cached)["packed"].shape == (5, 98)


@pytest.mark.parametrize("how", ["npy", "npz"])
def test_a_rewritten_cached_copy_is_parsed_again(tmp_path, how):
    # the copy re-saved with the same shape and its rows reversed (as a bare array, or with the old
    # checksum): it no longer matches its SHA-256, so the source is parsed again
    bits = random_bits(5)
    path = write_amat(tmp_path / "binarized_mnist_test.amat", bits)
    cache = tmp_path / "cache"
    files.read_amat_cached(path, cache)
    (cached,) = cache.iterdir()
    with np.load(cached) as stored:
        packed, digest = stored["packed"][::-1], stored["sha256"]
    with open(cached, "wb") as f:
        np.save(f, packed) if how == "npy" else np.savez(f, packed=packed, sha256=digest)
    np.testing.assert_array_equal(files.read_amat_cached(path, cache), bits)


def test_unwritable_cache_warns_once_and_parses(tmp_path):
    bits = random_bits(3)
    path = write_amat(tmp_path / "binarized_mnist_test.amat", bits)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.warns(UserWarning, match="cannot write the parsed-data cache") as record:
        for _ in range(2):
            np.testing.assert_array_equal(files.read_amat_cached(path, not_a_dir), bits)
    assert len(record) == 1


def test_truncated_gz(tmp_path):
    path = write_amat(tmp_path / "binarized_mnist_test.amat.gz", random_bits(200))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as info:
        files.parse_amat(path)
    message = str(info.value)
    assert str(path) in message and "delete" in message and "download=True" in message


def test_not_gzip(tmp_path):
    path = tmp_path / "binarized_mnist_test.amat.gz"
    path.write_bytes(amat_bytes(random_bits(2)))
    with pytest.raises(DataError, match="corrupt") as info:
        files.parse_amat(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "line, problem",
    [(b"0 1 0\n", "expected 784 space-separated 0/1 values, found 3"), (b"0 " * 783 + b"2\n", "value '2'")],
)
def test_bad_line(tmp_path, line, problem):
    path = tmp_path / "binarized_mnist_test.amat"
    path.write_bytes(amat_bytes(random_bits(2)) + line)
    with pytest.raises(DataError, match=problem) as info:
        files.parse_amat(path)
    assert f"{path}, line 3" in str(info.value)


# ---------------------------------------------------------------------------------------------
# locating and downloading binarized MNIST


def test_missing_without_download_names_where_it_looked(tmp_path):
    root, cache = tmp_path / "nowhere", tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load("binarized-mnist", "test", root=root, cache_dir=cache)
    message = str(info.value)
    assert "binarized_mnist_test.amat" in message
    assert str(root) in message and str(cache) in message
    assert "root=" in message and "--data-root" in message and "download=True" in message


def test_data_env_var(tmp_path, monkeypatch, canonical_test_split):
    source, bits = canonical_test_split
    data_dir = tmp_path / "data" / "binarized_mnist"
    data_dir.mkdir(parents=True)
    write_amat(data_dir / "binarized_mnist_test.amat.gz", bits)
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path / "data"))
    ds = load("binarized_mnist", "test")  # the cache dir comes from PYROVAE_CACHE
    assert ds.name == "binarized-mnist" and ds.binarize is None and ds.targets is None
    np.testing.assert_array_equal(ds.data.view(-1, 784).numpy(), bits)
    assert list((tmp_path / "cache").glob("binarized_mnist_test-*.npz"))


def test_canonical_row_count_is_enforced(tmp_path):
    write_amat(tmp_path / "binarized_mnist_valid.amat", random_bits(3))
    with pytest.raises(DataError, match="holds 3 images where 10000 were expected"):
        load("binarized-mnist", "valid", root=tmp_path)


def test_download_from_file_url(tmp_path, monkeypatch, canonical_test_split):
    source, bits = canonical_test_split
    monkeypatch.setenv("PYROVAE_BINARIZED_MNIST_URL", source.parent.as_uri())
    cache = tmp_path / "cache"
    renames = []
    real_replace = os.replace

    def spy_replace(src, dst):
        renames.append((Path(src), Path(dst), Path(dst).exists()))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", spy_replace)
    ds = load("binarized-mnist", "test", root=tmp_path / "empty", download=True, cache_dir=cache)
    np.testing.assert_array_equal(ds.data.view(-1, 784).numpy(), bits)
    downloaded = cache / "binarized_mnist_test.amat"
    assert downloaded.read_bytes() == source.read_bytes()
    # written under a temporary name beside the target, then renamed over it in one step
    src, dst, existed = renames[0]
    assert dst == downloaded and src.parent == cache and not existed
    assert not list(cache.glob("*.part"))
    # later loads find the downloaded copy without download=True
    assert len(load("binarized-mnist", "test", root=tmp_path / "empty", cache_dir=cache)) == 10_000


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "mirror").mkdir()
    monkeypatch.setenv("PYROVAE_BINARIZED_MNIST_URL", (tmp_path / "mirror").as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="could not download file://") as info:
        load("binarized-mnist", "test", download=True, cache_dir=cache)
    assert "PYROVAE_BINARIZED_MNIST_URL" in str(info.value)
    assert list(cache.iterdir()) == []


@pytest.mark.skipif(not SHARED_BINARIZED_MNIST.is_dir(), reason="no local copy of binarized MNIST")
def test_real_binarized_mnist_test_split(tmp_path):
    ds = load("binarized-mnist", "test", root=SHARED_BINARIZED_MNIST, cache_dir=tmp_path)
    assert ds.data.shape == (10_000, 1, 28, 28) and ds.data.dtype == torch.float32
    assert ds.event_shape == (1, 28, 28)
    check_binary(ds.data, "binarized MNIST")
    assert 0.1 < ds.data.mean() < 0.2  # about 13% of the pixels are on


# ---------------------------------------------------------------------------------------------
# binarization


def test_dynamic_binarization_resamples_training_data():
    torch.manual_seed(0)
    probs = torch.linspace(0.05, 0.95, 16).view(1, 1, 4, 4).expand(3, 1, 4, 4).contiguous()
    ds = VAEDataset(probs, split="train", binarize="dynamic")
    index = torch.tensor([0, 2])
    generator = torch.Generator().manual_seed(0)
    first, second = ds.batch(index, generator), ds.batch(index, generator)
    check_binary(first, "a batch")
    assert not torch.equal(first, second)
    assert not torch.equal(ds[1], ds[1])  # __getitem__ draws afresh too
    # the mean of K independent draws of a pixel with intensity p has standard error
    # sqrt(p (1 - p) / K); with a fixed seed every pixel must lie within 5 standard errors
    draws = 4000
    mean = torch.stack([ds.batch(index, generator) for _ in range(draws)]).mean(0)
    stderr = (probs[index] * (1 - probs[index]) / draws).sqrt()
    assert ((mean - probs[index]).abs() < 5 * stderr).all()


@pytest.mark.parametrize("split", ["valid", "test"])
def test_dynamic_binarization_is_fixed_for_evaluation(split):
    probs = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ds = VAEDataset(probs, split=split, binarize="dynamic")
    index = torch.arange(50)
    fixed = ds.batch(index)
    check_binary(fixed, "an evaluation batch")
    assert fixed.dtype == torch.float32
    assert torch.equal(fixed, ds.batch(index, torch.Generator().manual_seed(5)))
    assert torch.equal(ds[3], fixed[3])
    assert torch.equal(fixed, VAEDataset(probs, split=split, binarize="dynamic").batch(index))
    assert ((fixed == 1) == (fixed > 0.5)).all() and 0 < fixed.mean() < 1


@pytest.mark.parametrize(
    "dtype, ones, weighted", [(torch.float32, 397, 158558), (torch.float64, 375, 144405)]
)
def test_the_fixed_binarization_keeps_its_bits(dtype, ones, weighted):
    # the bits of the evaluation splits as they were before the draw moved to a CPU generator for
    # data held on any device: a checksum of them, taken from the earlier code
    probs = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=dtype)
    bits = VAEDataset(probs, split="test", binarize="dynamic").batch(slice(None))
    position = torch.arange(bits.numel(), dtype=torch.float64).view(bits.shape)
    assert (int(bits.sum()), float((bits.double() * position).sum())) == (ones, weighted)


def test_threshold_and_no_binarization():
    data = torch.tensor([[0.0, 0.2, 0.5, 0.51, 1.0]])
    assert VAEDataset(data, binarize="threshold")[0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert torch.equal(VAEDataset(data, binarize="none").batch(torch.tensor([0])), data)
    assert VAEDataset(data, binarize="none").binarize is None


def test_vaedataset_rejects_bad_input():
    with pytest.raises(DataError, match=r"values in \[0, 2\].*x / 255"):
        VAEDataset(torch.tensor([[0.0, 2.0]]), binarize="dynamic")
    with pytest.raises(DataError, match=r"one label per data point, shape \(2,\)"):
        VAEDataset(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError, match="N >= 1"):
        VAEDataset(torch.zeros(0, 3))
    with pytest.raises(ConfigError, match="choose one of: dynamic, none, threshold"):
        VAEDataset(torch.zeros(2, 3), binarize="bernoulli")


def test_repr():
    ds = VAEDataset(torch.zeros(4, 1, 8, 8), name="digits", split="valid", binarize="threshold")
    assert repr(ds) == (
        "VAEDataset(name='digits', split='valid', N=4, event_shape=(1, 8, 8), binarize='threshold')"
    )


# ---------------------------------------------------------------------------------------------
# checks and as_dataset


def test_check_binary():
    check_binary(torch.tensor([0.0, 1.0, 1.0]), "x")
    with pytest.raises(DataError, match="x has 1 values out of 3 that are neither 0 nor 1") as info:
        check_binary(torch.tensor([0.0, 0.5, 1.0]), "x")
    message = str(info.value)
    assert "binarize='dynamic' or 'threshold'" in message and "likelihood='gaussian'" in message
    assert "'continuous-bernoulli'" in message


def test_check_finite():
    check_finite(torch.tensor([0.0, 1.0]), "x")
    check_finite(torch.full((3,), 3e38), "x")  # the sum overflows but every entry is finite
    check_finite(torch.tensor([1, 2]), "x")
    with pytest.raises(DataError, match=r"x has 2 NaN or infinite entries out of 4 .*index \(0, 1\)") as info:
        check_finite(torch.tensor([[0.0, math.nan], [math.inf, 1.0]]), "x")
    assert "torch.nan_to_num" in str(info.value)


def test_as_dataset():
    x = torch.rand(5, 2, 3)
    ds = as_dataset(x, name="mine")
    assert isinstance(ds, VAEDataset) and ds.binarize is None and ds.name == "mine"
    assert ds.data is x and ds.event_shape == (2, 3) and len(ds) == 5
    assert torch.equal(ds.batch(torch.tensor([1, 4])), x[[1, 4]])
    assert as_dataset(torch.ones(3, 2, dtype=torch.uint8)).data.dtype == torch.float32
    assert as_dataset(ds) is ds
    other = torch.utils.data.TensorDataset(x)
    assert as_dataset(other) is other
    with pytest.raises(DataError, match="1 NaN or infinite entries"):
        as_dataset(torch.tensor([[0.0, math.inf]]))
    with pytest.raises(DataError, match="torch.as_tensor"):
        as_dataset(np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST idx files


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the idx format of LeCun's MNIST files (plain or ``.gz``)."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)


@pytest.fixture
def mnist_root(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """torchvision's layout ``<root>/MNIST/raw`` with a small training file (plain) and test file (.gz)."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train = rng.integers(0, 256, (files.MNIST_VALID_SIZE + 6, 2, 2), dtype=np.uint8)
    test = rng.integers(0, 256, (4, 2, 2), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(len(train)) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", test)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1]))
    return tmp_path / "root", train, test


def test_mnist_splits(mnist_root):
    root, train, test = mnist_root
    ds = {split: load("mnist", split, root=root) for split in datasets.SPLITS}
    assert {s: len(d) for s, d in ds.items()} == {"train": 6, "valid": files.MNIST_VALID_SIZE, "test": 4}
    assert ds["train"].binarize == "dynamic" and ds["train"].event_shape == (1, 2, 2)
    np.testing.assert_allclose(ds["train"].data.squeeze(1).numpy(), train[:6] / 255, rtol=1e-6)
    np.testing.assert_allclose(ds["valid"].data.squeeze(1).numpy(), train[6:] / 255, rtol=1e-6)
    np.testing.assert_allclose(ds["test"].data.squeeze(1).numpy(), test / 255, rtol=1e-6)
    assert ds["valid"].targets[:3].tolist() == [6, 7, 8] and ds["test"].targets.tolist() == [3, 1, 4, 1]
    assert ds["test"].targets.dtype == torch.long


def test_mnist_missing_files(tmp_path):
    with pytest.raises(DataError) as info:
        load("mnist", "test", root=tmp_path / "nowhere")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]" in message
    assert str(tmp_path / "nowhere") in message and "download=True" in message and "root=" in message


def test_mnist_download_uses_torchvision(tmp_path, monkeypatch, mnist_root):
    import torchvision.datasets

    source, _, test = mnist_root
    calls = []

    class FakeMNIST:
        """Stands in for torchvision's MNIST: "downloads" by copying into <root>/MNIST/raw."""

        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True)
            for f in (source / "MNIST" / "raw").iterdir():
                (raw / f.name).write_bytes(f.read_bytes())

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    cache = tmp_path / "cache"
    ds = load("mnist", "test", root=tmp_path / "empty", download=True)
    assert calls == [(str(cache), False, True)]
    np.testing.assert_allclose(ds.data.squeeze(1).numpy(), test / 255, rtol=1e-6)


def test_mnist_damaged_file(mnist_root):
    root, _, _ = mnist_root
    images = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-20])
    with pytest.raises(DataError, match="not a readable idx file") as info:
        load("mnist", "test", root=root)
    assert str(images) in str(info.value)


@pytest.mark.skipif(
    not files.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_debian_package():
    ds = load("fashion-mnist", "test")
    assert ds.data.shape == (10_000, 1, 28, 28) and ds.targets.shape == (10_000,)
    assert ds.data.min() == 0 and ds.data.max() == 1 and set(ds.targets.tolist()) == set(range(10))


# ---------------------------------------------------------------------------------------------
# digits and names


def test_digits():
    from sklearn.datasets import load_digits

    ds = {split: load("digits", split) for split in datasets.SPLITS}
    assert {s: len(d) for s, d in ds.items()} == {"train": 1197, "valid": 300, "test": 300}
    for d in ds.values():
        assert d.event_shape == (1, 8, 8) and d.data.dtype == torch.float32 and d.binarize == "dynamic"
        assert d.data.min() >= 0 and d.data.max() <= 1
    # together the splits hold every image exactly once (as a multiset, since some images repeat)
    full = load_digits()
    rows = Counter(
        (tuple(x), int(y))
        for d in ds.values()
        for x, y in zip(d.data.view(-1, 64).mul(16).round().tolist(), d.targets, strict=True)
    )
    assert rows == Counter((tuple(x), int(y)) for x, y in zip(full.data.tolist(), full.target, strict=True))
    # the split is fixed
    assert torch.equal(load("digits", "test", binarize=None).data, ds["test"].data)


@pytest.mark.parametrize(
    "kwargs, listed",
    [
        ({"name": "cifar10"}, "binarized-mnist, digits, fashion-mnist, mnist"),
        ({"name": "digits", "split": "validation"}, "test, train, valid"),
        ({"name": "digits", "binarize": "stochastic"}, "default, dynamic, none, threshold"),
    ],
)
def test_unknown_names(kwargs, listed):
    with pytest.raises(ConfigError, match=f"choose one of: {listed}"):
        load(**kwargs)
