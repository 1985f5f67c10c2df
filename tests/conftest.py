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


@pytest.fixture(scope="session")
def load_digits(tmp_path_factory):
    """``load_digits(split, **options)``: ``pyrovae.load("digits", split, **options)``, each split and
    set of options loaded once per session, into a cache of the session's own."""
    import pyrovae

    cache, loaded = tmp_path_factory.mktemp("digits-cache"), {}

    def load(split: str = "train", **options):
        key = (split, tuple(sorted(options.items())))
        if key not in loaded:
            loaded[key] = pyrovae.load("digits", split, cache_dir=cache, **options)
        return loaded[key]

    return load


#: the `pyrovae train` run that the CLI tests and the catalogue share: 2 epochs of a small VAE
CLI_TRAIN = ["train", "--dataset", "digits", "--epochs", "2", "--latent-dim", "4", "--hidden", "32"]
CLI_TRAIN += ["--likelihood", "bernoulli", "--batch-size", "400", "--no-progress", "--test-samples", "0"]


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """The run directory of one `pyrovae train` (:data:`CLI_TRAIN`), shared by the tests that read it;
    a test that writes copies it."""
    import contextlib
    import io

    from pyrovae import cli

    base = tmp_path_factory.mktemp("cli-run")
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.setenv("PYROVAE_CACHE", str(base / "cache"))
        assert cli.main([*CLI_TRAIN, "--run-dir", str(base / "run")]) == 0
    return base / "run"


@pytest.fixture(scope="session")
def make_ppca():
    """``make_ppca(n)``: the probabilistic PCA of ``toy_models.py`` (exact log p(x) and posterior) and
    ``n`` data points drawn from it; both are deterministic, so each size is made once per session."""
    from toy_models import PPCA

    made = {}

    def make(n: int):
        if n not in made:
            model = PPCA()
            made[n] = model, model.sample(n)
        return made[n]

    return make
