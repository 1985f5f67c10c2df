"""Data-parallel training and sharded evaluation: two CPU workers (Gloo) under ``torchrun`` against
one process.

One ``torchrun --nproc_per_node 2`` launch runs tests/distributed_worker.py, which trains, draws
gradients, evaluates and runs the command line; the tests compare its outputs with the same
functions run here, in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import distributed_worker as worker
import pandas as pd
import pytest
import torch
import xarray as xr

import pyrovae
from pyrovae import cli, distributed
from pyrovae.errors import ConfigError
from pyrovae.storage import load_checkpoint

LAUNCH_TIMEOUT = 240  # seconds; a hung collective must fail the test, not the CI job


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    """The outputs of one 2-worker launch of tests/distributed_worker.py."""
    out = tmp_path_factory.mktemp("distributed")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
        "PYROVAE_CACHE": str(out / "cache"),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # --standalone: a rendezvous on a free local port; a new session, so a timeout kills every worker
    proc = subprocess.Popen(
        [*command, str(Path(worker.__file__)), str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"the 2-worker launch did not finish within {LAUNCH_TIMEOUT} s:\n{log[-5000:]}")
    assert proc.returncode == 0, log[-5000:]
    return out


@pytest.fixture(scope="module")
def results(launched) -> dict:
    return torch.load(launched / "results.pt")


def test_the_workers_ran_as_two_ranks(results):
    assert int(results["world_size"]) == 2
    assert distributed.world_size() == 1 and distributed.is_main()  # and this process runs alone


def test_every_estimator_trains_to_the_one_process_parameters(results):
    # the MAP autoencoder's loss has no noise: two workers, each on its share of every global batch
    # of 25 (the last batch of 11 split 6 + 5), follow the one-process trajectory to rounding
    reference = worker.train_estimators()
    for spec in worker.ESTIMATOR_SPECS:
        for name, value in reference[spec].items():
            torch.testing.assert_close(results["estimators"][spec][name], value, rtol=1e-9, atol=1e-12)


def test_sampled_gradients_agree_in_expectation(results):
    # the sampled VAE draws its noise per worker, so the gradients agree in distribution only:
    # compare the mean of 100 draws of each gradient element with the one-process mean. With
    # sd/sqrt(100) standard errors, z = diff / se is standard normal per element; over ~270
    # elements P(max |z| > 5) is about 270 * 5.7e-7 = 2e-4 (fixed seeds make the test deterministic)
    distributed_draws, reference = results["gradients"], worker.gradient_draws()
    assert distributed_draws.shape == reference.shape
    n = reference.shape[0]
    se = ((distributed_draws.var(0) + reference.var(0)) / n).sqrt()
    z = (distributed_draws.mean(0) - reference.mean(0)) / se.clamp(min=1e-12)
    assert z.abs().max() < 5, z.abs().max()
    # and the draws are noisy: the workers' noises do not cancel or coincide
    assert (distributed_draws.var(0) > 0).all()


@pytest.mark.parametrize("key", ["evaluations", "one data point"])
def test_every_sweep_returns_the_one_process_values_on_every_rank(results, key):
    # log_likelihood, bounds, ais, bdmc, latent_stats (both passes), every anomaly score,
    # encode/decode and the trainer's validation pass, in sequence; with one data point the second
    # rank has no shard. Seeded: every chunk draws what it draws in one process
    reference = worker.evaluations(worker.data() if key == "evaluations" else worker.data()[:1])
    assert results[key].keys() == reference.keys()
    for name, value in reference.items():
        assert torch.allclose(results[key][name], value, rtol=0, atol=1e-9, equal_nan=True), name


def test_an_error_on_one_rank_ends_the_sweep_on_both(launched):
    ours = (launched / "failure-1.txt").read_text()
    assert ours.startswith("DataError: observed site 'x' holds values outside the support"), ours
    theirs = (launched / "failure-0.txt").read_text()
    assert theirs.startswith("RankError: rank 1 of the distributed run failed in log p(x): DataError"), theirs


def test_a_callback_stops_every_rank_where_it_stops_one_process(launched):
    """The example callback, called on rank 0 alone, stops both workers after the epoch the one-process run
    stops after (the 3rd; the MAP autoencoder is deterministic)."""
    callback = worker.StopAtTarget(worker.TARGET)
    alone = worker.stopped_by_callback(callback)
    assert len(alone.history) == 3 and callback.calls == ["start", 1, 2, 3, "end"]
    assert alone.stop_reason == f"the validation bound reached {worker.TARGET}"
    for given in range(2):  # the callback given to every rank, then to rank 0 alone
        ranks = [json.loads((launched / f"callbacks-{rank}.json").read_text())[given] for rank in (0, 1)]
        assert [r["epochs"] for r in ranks] == [3, 3]
        assert [r["stop_reason"] for r in ranks] == [alone.stop_reason] * 2
        assert ranks[0]["calls"] == callback.calls and ranks[1]["calls"] == []


def test_a_callback_that_fails_on_rank_0_stops_every_rank(launched):
    """Rank 0 raises its callback's error; rank 1, which has no callback, raises a RankError naming it at the
    same epoch's end, instead of waiting for rank 0 in the next collective."""
    errors = [(launched / f"callback-error-{rank}.txt").read_text() for rank in (0, 1)]
    assert errors[0] == "ValueError: a bug in a callback at epoch 2"
    told = "a callback of rank 0 of the distributed run failed: ValueError: a bug in a callback at epoch 2"
    assert errors[1] == f"RankError: {told}"


def test_cli_latents_writes_the_one_process_table(launched, tmp_path):
    alone, straight = tmp_path / "run", launched / "straight"
    shutil.copytree(straight, alone, ignore=shutil.ignore_patterns("latents-*"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: float32 sums may differ in the last bits with the count
    try:
        assert cli.main(["latents", str(alone), *worker.LATENTS]) == 0
    finally:
        torch.set_num_threads(threads)
    ours, theirs = (pd.read_csv(d / "latents-test.csv") for d in (alone, straight))
    pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=0, atol=1e-9)


@pytest.mark.parametrize("num, units, world", [(10, 1, 2), (61, 4, 2), (7, 3, 4), (3, 1, 5), (100, 7, 3)])
def test_shards_partition_the_data_in_order(monkeypatch, num, units, world):
    spans = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        spans.append(distributed.shard(num, units))
    assert spans[0][0] == 0 and spans[-1][1] == num
    assert all(a[1] == b[0] for a, b in zip(spans[:-1], spans[1:], strict=True))  # contiguous, in order
    assert all(lo % units == 0 or lo == num for lo, _ in spans)  # cut at multiples of units
    blocks = [-(-(hi - lo) // units) for lo, hi in spans]
    assert max(blocks) - min(blocks) <= 1


def test_one_process_is_left_alone(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.init("gloo")  # outside torchrun a backend is ignored
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_gather_object(x)[0] is x and distributed.broadcast_object("a") == "a"
    assert distributed.shard(5, 2) == (0, 5)


@pytest.mark.parametrize("batch_size", [1, 30])
def test_a_global_batch_that_leaves_a_worker_without_data_is_refused(monkeypatch, batch_size):
    # 61 data points on 2 workers: a batch of 1, or a last batch of 61 - 60 = 1, leaves one idle
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="workers without data"):
        pyrovae.fit(worker.vae(), pyrovae.VAEDataset(worker.data()), batch_size=batch_size, progress=False)


def _params(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_cli_train_writes_one_run_and_resumes_exactly(launched):
    straight, resumed = launched / "straight", launched / "resumed"
    for run in (straight, resumed):
        history = pd.read_csv(run / "history.csv")
        assert history["epoch"].tolist() == [1, 2]
        assert json.loads((run / "results.json").read_text())["epochs"] == 2
        assert not list(run.glob("*.tmp*"))
    a, b = _params(straight / "checkpoint.pt"), _params(resumed / "checkpoint.pt")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (
        pd.read_csv(straight / "history.csv")
        .drop(columns="seconds")
        .equals(pd.read_csv(resumed / "history.csv").drop(columns="seconds"))
    )


def test_cli_evaluate_writes_the_one_process_outputs(launched, tmp_path, capsys):
    alone, straight = tmp_path / "run", launched / "straight"
    shutil.copytree(straight, alone, ignore=shutil.ignore_patterns("evaluation-*", "bounds-*"))
    assert cli.main(["evaluate", str(alone), *worker.EVALUATE]) == 0
    stem = "evaluation-test"
    assert (alone / f"{stem}.csv").read_text() == (straight / f"{stem}.csv").read_text()
    ours, theirs = (json.loads((d / f"{stem}.json").read_text()) for d in (alone, straight))
    for summary in (ours, theirs):
        summary["log_likelihood"].pop("elapsed"), summary["bounds"].pop("elapsed")  # wall times
    assert ours == theirs
    with xr.open_dataset(alone / f"{stem}.nc") as ours, xr.open_dataset(straight / f"{stem}.nc") as theirs:
        xr.testing.assert_identical(ours.drop_attrs(), theirs.drop_attrs())
    assert (straight / "bounds-test.png").is_file()
