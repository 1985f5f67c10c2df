"""Shared test setup: nothing a test does may read or write outside its own temporary directory."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point pyrovae's cache (and data search path) into the test's ``tmp_path``."""
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PYROVAE_DATA", raising=False)
    monkeypatch.delenv("PYROVAE_BINARIZED_MNIST_URL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def single_threaded_torch():
    """Run torch on one thread: the test models are tiny, so intra-op threads only add overhead (on a
    busy two-core machine, spinning threads make a training step ten times slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
