"""TensorBoard and MLflow (pyrovae.tracking): what `pyrovae train --log tensorboard,mlflow` and the commands
after it log, read back offline with each tool's own reader and compared with the run directory's files."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import pyrovae
from pyrovae import cli
from pyrovae.errors import ConfigError

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TRAIN = ["train", "--dataset", "digits", "--latent-dim", "4", "--hidden", "32", "--batch-size", "400"]
TRAIN += ["--no-progress", "--test-samples", "20", "--log", "tensorboard,mlflow"]
EPOCH_COLUMNS = ["train_loss", "valid_loss", "beta", "lr", "seconds"]


def run_cli(*argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main([str(a) for a in argv]) == 0
    return out.getvalue()


def record(run_dir, kind: str) -> tuple[dict, object]:
    """The run's record of the tracker ``kind`` and its log directory (kept relative to the run directory)."""
    entry = json.loads((run_dir / "tracking.json").read_text())[kind]
    return entry, run_dir / entry["log_dir"]


def tensorboard(run_dir) -> EventAccumulator:
    entry, log_dir = record(run_dir, "tensorboard")
    folder = log_dir / "tensorboard" / entry["folder"]
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def mlflow(run_dir):
    entry, log_dir = record(run_dir, "mlflow")
    assert (
        entry["tracking_uri"] is None and entry["log_dir"] == "logs"
    )  # the local store, in the run directory
    client = MlflowClient(f"sqlite:///{log_dir / 'mlflow.db'}")
    return client, client.get_run(entry["run_id"])


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A 2-epoch run logged to both trackers, resumed to 3 epochs, then evaluated."""
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    run_cli(*TRAIN, "--epochs", "2", "--run-dir", run_dir)
    first = json.loads((run_dir / "tracking.json").read_text())
    run_cli(
        "train", "--run-dir", run_dir, "--resume", "--epochs", "3", "--no-progress", "--test-samples", "20"
    )
    run_cli("evaluate", run_dir, "--limit", "10", "--num-samples", "5", "--bounds", "1,5", "--no-progress")
    return run_dir, first


def test_tensorboard_holds_the_history_and_the_results(tracked):
    run_dir, _ = tracked
    events, history = tensorboard(run_dir), pd.read_csv(run_dir / "history.csv")
    assert len(history) == 3
    for column in EPOCH_COLUMNS:  # TensorBoard keeps 32-bit floats: the history's values, so rounded
        logged = {e.step: e.value for e in events.Scalars(column)}
        expected = dict(zip(history["epoch"], history[column].astype(np.float32).tolist(), strict=True))
        assert logged == expected, column
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("test_negative_elbo", "test_nll_is20", "test_nll_is20_stderr"):
        [event] = [e for e in events.Scalars(f"test/{key}") if e.step == 3]
        assert event.value == np.float32(results[key])
    evaluation = json.loads((run_dir / "evaluation-test.json").read_text())
    [event] = events.Scalars("evaluation-test/log_likelihood.mean_log_px")
    assert event.value == np.float32(evaluation["log_likelihood"]["mean_log_px"]) and event.step == 3
    images = events.Tags()["images"]
    assert {
        "learning_curves",
        "samples",
        "reconstructions",
        "test/embedding",
        "evaluation-test/bounds-test",
    } <= set(images)
    assert "config/text_summary" in events.Tags()["tensors"]


def test_mlflow_holds_the_history_the_results_and_the_configuration(tracked):
    run_dir, first = tracked
    client, run = mlflow(run_dir)
    assert run.info.run_id == first["mlflow"]["run_id"] and run.info.status == "FINISHED"  # resumed into it
    history = pd.read_csv(run_dir / "history.csv")
    for column in EPOCH_COLUMNS:
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, column)}
        assert logged == dict(zip(history["epoch"], history[column], strict=True)), column
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("test_negative_elbo", "test_nll_is20", "test_nll_is20_stderr"):
        assert run.data.metrics[f"test/{key}"] == results[key]
    assert (
        run.data.metrics["test/test_log_likelihood.khat_above_0_7"]
        == results["test_log_likelihood"]["khat_above_0_7"]
    )
    assert run.data.tags["test/test_log_likelihood.verdict"] == results["test_log_likelihood"]["verdict"]
    config = json.loads((run_dir / "config.json").read_text())
    assert run.data.params["latent_dim"] == "4" and run.data.params["hidden"] == json.dumps(config["hidden"])
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/learning_curves.png", "figures/samples.png", "figures/evaluation-test"} <= figures


def test_a_run_without_trackers_records_none(cli_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cli_run, run_dir)
    run_cli("evaluate", run_dir, "--limit", "4", "--num-samples", "5", "--bounds", "1,5", "--no-progress")
    assert not (run_dir / "tracking.json").exists() and not (run_dir / "logs").exists()


def test_fit_logs_per_step_into_a_shared_log_dir_without_mixing_runs(tmp_path):
    x = (torch.rand(60, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    logs = tmp_path / "logs"
    for run in ("a", "a"):  # the second run of the same name gets a folder of its own
        vae = pyrovae.VAE(6, latent_dim=2, hidden=(8,))
        logger = pyrovae.TensorBoardLogger(logs, per_step=True)
        pyrovae.fit(
            vae,
            x,
            epochs=2,
            batch_size=20,
            progress=False,
            run_dir=tmp_path / run,
            overwrite=True,
            callbacks=[logger],
        )
    folders = sorted(p.name for p in (logs / "tensorboard").iterdir())
    assert folders == ["a", "a-2"]
    events = EventAccumulator(str(logs / "tensorboard" / "a-2"))
    events.Reload()
    assert [e.step for e in events.Scalars("step/train_loss")] == list(range(1, 7))


def test_a_tracker_without_a_place_to_write_is_refused():
    x = torch.zeros(10, 6)
    with pytest.raises(ConfigError, match="needs a log_dir when fit"):
        pyrovae.fit(
            pyrovae.VAE(6, latent_dim=2, hidden=(8,)),
            x,
            epochs=1,
            progress=False,
            callbacks=[pyrovae.MLflowLogger()],
        )


def small_fit(run_dir, **options) -> pyrovae.FitResult:
    x = (torch.rand(60, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    vae = pyrovae.VAE(6, latent_dim=2, hidden=(8,))
    return pyrovae.fit(vae, x, epochs=2, batch_size=20, progress=False, run_dir=run_dir, **options)


def test_one_tracker_given_to_two_runs_logs_each_into_its_own(tmp_path):
    logger = pyrovae.MLflowLogger(tmp_path / "logs")
    for run in ("a", "b"):
        small_fit(tmp_path / run, callbacks=[logger])
    ids = {run: record(tmp_path / run, "mlflow")[0]["run_id"] for run in ("a", "b")}
    assert ids["a"] != ids["b"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}")
    assert [client.get_run(ids[run]).info.run_name for run in ("a", "b")] == ["a", "b"]


class Broken(pyrovae.TensorBoardLogger):
    """A TensorBoard logger whose writes fail from the second epoch on (a full disk, say)."""

    def _log_metrics(self, metrics, step):
        if step > 1:
            raise OSError("no space left on device")
        super()._log_metrics(metrics, step)


def test_a_tracker_that_fails_during_training_is_left_out_and_training_goes_on(tmp_path):
    with pytest.warns(
        UserWarning, match=r"logging to tensorboard failed \(OSError: no space left on device\)"
    ):
        result = small_fit(tmp_path / "run", callbacks=[Broken()])
    assert len(result.history) == 2


class Failing(pyrovae.Callback):
    def on_epoch_end(self, state, row):
        raise ValueError("a bug in a callback")


def test_a_run_that_fails_ends_its_mlflow_run_as_failed(tmp_path):
    with pytest.raises(ValueError, match="a bug in a callback"):
        small_fit(tmp_path / "run", callbacks=[pyrovae.MLflowLogger(), Failing()])
    client, run = mlflow(tmp_path / "run")
    assert run.info.status == "FAILED"


def test_a_run_directory_moved_with_its_logs_logs_on_where_it_is(tmp_path):
    """(MLflow's store keeps its artifacts' folder as it was made: figures logged later go there.)"""
    small_fit(tmp_path / "before", callbacks=[pyrovae.TensorBoardLogger(), pyrovae.MLflowLogger()])
    shutil.move(tmp_path / "before", tmp_path / "after")
    run_dir = tmp_path / "after"
    x = (torch.rand(60, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    trackers = [pyrovae.TensorBoardLogger(), pyrovae.MLflowLogger()]
    pyrovae.fit(
        pyrovae.VAE(6, latent_dim=2, hidden=(8,)),
        x,
        epochs=3,
        batch_size=20,
        progress=False,
        run_dir=run_dir,
        resume=True,
        callbacks=trackers,
    )
    assert [e.step for e in tensorboard(run_dir).Scalars("train_loss")] == [1, 2, 3]
    client, run = mlflow(run_dir)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
