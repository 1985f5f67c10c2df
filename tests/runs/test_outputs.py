"""What pyrovae wrote in a run directory (the manifest), and output sets committed as one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import pyrovae
from pyrovae.errors import RunDirError
from pyrovae.runs.directory import RunDirectory
from pyrovae.runs.outputs import MANIFEST, Outputs, output_set, stale_sets
from pyrovae.storage import write_text


def manifest(directory) -> dict:
    return json.loads((directory / MANIFEST).read_text())


def test_an_output_set_is_recorded_with_its_checkpoint_and_settings(tmp_path):
    used = {"which": "best", "epoch": 3, "sha256": "abc"}
    with Outputs(tmp_path), output_set("evaluation-test", "evaluate", used, {"seed": 1}):
        write_text(tmp_path / "evaluation-test.json", "{}")
        write_text(tmp_path / "evaluation-test.csv", "a\n")
        assert not (tmp_path / "evaluation-test.json").exists()  # staged until the set is committed
    record = manifest(tmp_path)
    assert record["files"] == ["evaluation-test.csv", "evaluation-test.json"] and record["pending"] is None
    written = record["sets"]["evaluation-test"]
    assert (
        written["command"] == "evaluate"
        and written["checkpoint"] == used
        and written["settings"] == {"seed": 1}
    )
    assert written["files"] == ["evaluation-test.json", "evaluation-test.csv"]


def test_a_new_version_of_a_set_drops_the_files_the_old_one_had_and_it_has_not(tmp_path):
    with Outputs(tmp_path):
        with output_set("evaluation-test", "evaluate"):
            write_text(tmp_path / "evaluation-test.json", "old")
            write_text(tmp_path / "evaluation-test-bdmc.csv", "old")
        with output_set("evaluation-test", "evaluate"):
            write_text(tmp_path / "evaluation-test.json", "new")
    assert not (tmp_path / "evaluation-test-bdmc.csv").exists()
    assert (tmp_path / "evaluation-test.json").read_text() == "new"
    assert manifest(tmp_path)["files"] == ["evaluation-test.json"]


def test_a_set_that_fails_leaves_the_previous_set_and_no_temporary(tmp_path):
    with Outputs(tmp_path):
        with output_set("scores", "score"):
            write_text(tmp_path / "scores.csv", "old")
        with pytest.raises(ZeroDivisionError), output_set("scores", "score"):
            write_text(tmp_path / "scores.csv", "new")
            raise ZeroDivisionError
    assert (tmp_path / "scores.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "scores.csv"]


def test_a_set_committed_but_not_moved_into_place_is_finished_by_the_next_opener(tmp_path, monkeypatch):
    with Outputs(tmp_path), output_set("latents-test", "latents"):
        write_text(tmp_path / "latents-test.csv", "old")
    # killed after the commit (the manifest names the set pending), before its files were moved into place
    monkeypatch.setattr("pyrovae.runs.outputs.Outputs._apply", lambda self, pending: None)
    with Outputs(tmp_path), output_set("latents-test", "latents"):
        write_text(tmp_path / "latents-test.csv", "new")
        write_text(tmp_path / "latents-test.json", "new")
    monkeypatch.undo()
    assert manifest(tmp_path)["pending"]["set"] == "latents-test"
    assert (tmp_path / "latents-test.csv").read_text() == "old"
    with (
        pytest.warns(UserWarning, match="finished committing the output set latents-test"),
        Outputs(tmp_path),
    ):
        pass
    assert [(tmp_path / f).read_text() for f in ("latents-test.csv", "latents-test.json")] == ["new", "new"]
    assert manifest(tmp_path)["pending"] is None and not list(tmp_path.glob(".*.tmp"))


def test_temporaries_of_a_set_never_committed_are_removed_and_named(tmp_path):
    (tmp_path / ".scores.csv.x1.tmp").write_text("partial")
    with pytest.warns(UserWarning, match=r"removed 1 temporary file\(s\) .* \(\.scores\.csv\.x1\.tmp\)"):
        with Outputs(tmp_path):
            pass
    assert not (tmp_path / ".scores.csv.x1.tmp").exists()


def test_files_outside_the_run_directory_join_the_set_but_are_never_owned(tmp_path):
    run_dir, elsewhere = tmp_path / "run", tmp_path / "figures" / "s.png"
    run_dir.mkdir()
    with Outputs(run_dir), output_set("s", "sample"):
        write_text(elsewhere, "png")
    assert elsewhere.read_text() == "png"
    record = manifest(run_dir)
    assert record["files"] == [] and record["sets"]["s"]["files"] == [str(elsewhere)]
    with Outputs(run_dir) as outputs, output_set("s", "sample"):  # the same set, written elsewhere
        write_text(tmp_path / "other" / "s.png", "png")
    with Outputs(run_dir) as outputs:
        outputs.remove_all()
    assert elsewhere.exists() and (tmp_path / "other" / "s.png").exists()


def test_overwrite_removes_what_pyrovae_wrote_and_nothing_else(tmp_path):
    x = torch.bernoulli(torch.full((64, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,))
    pyrovae.fit(vae, x, epochs=1, batch_size=32, run_dir=tmp_path, progress=False)
    (tmp_path / "diagram.png").write_text("the project's own figure")
    (tmp_path / "evaluation-notes.json").write_text("{}")
    with Outputs(tmp_path), output_set("evaluation-test", "evaluate"):
        write_text(tmp_path / "evaluation-test.json", "{}")
    pyrovae.fit(vae, x, epochs=1, batch_size=32, run_dir=tmp_path, overwrite=True, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"diagram.png", "evaluation-notes.json", "checkpoint.pt"} <= names
    assert "evaluation-test.json" not in names and manifest(tmp_path)["sets"] == {}


def test_overwrite_of_a_directory_without_a_manifest_removes_the_run_and_names_what_it_leaves(tmp_path):
    for name in ("checkpoint.pt", "config.json", "history.csv", "evaluation-test.json", "mine.png"):
        (tmp_path / name).write_text("old")
    with pytest.warns(UserWarning, match=r"left in .*: evaluation-test\.json, mine\.png, which an older"):
        with RunDirectory(tmp_path, resume=False, overwrite=True):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock",
        "evaluation-test.json",
        MANIFEST,
        "mine.png",
    ]


def test_outputs_of_other_parameters_are_reported_by_load_run(cli_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cli_run, run_dir)
    run = pyrovae.load_run(run_dir)
    assert run.checkpoint["which"] == "best" and run.checkpoint["epoch"] == run.epoch
    with Outputs(run_dir), output_set("evaluation-test", "evaluate", run.checkpoint):
        write_text(run_dir / "evaluation-test.json", "{}")
    assert stale_sets(run_dir, {"best": run.checkpoint["sha256"]}) == []
    stale = {**run.checkpoint, "sha256": "0" * 64}
    with Outputs(run_dir), output_set("evaluation-test", "evaluate", stale):
        write_text(run_dir / "evaluation-test.json", "{}")
    with pytest.warns(
        UserWarning, match=r"evaluation-test \(evaluation-test\.json\) came from the best parameters"
    ):
        pyrovae.load_run(run_dir)


def test_a_damaged_manifest_is_named(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(RunDirError, match="manifest.json is damaged"):
        Outputs(tmp_path)


def test_pause_points_of_a_commit_are_reached_in_order(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("pyrovae.storage.pause_point", seen.append)
    with Outputs(tmp_path), output_set("compare", "compare"):
        write_text(tmp_path / "compare.csv", "a")
    assert seen == ["commit outputs", "replace manifest.json", "replace compare.csv", "replace manifest.json"]


def test_a_run_no_manifest_recorded_is_removed_by_overwrite_even_after_a_command_started_one(tmp_path):
    for name in ("checkpoint.pt", "config.json", "results.json"):  # an older pyrovae's run
        (tmp_path / name).write_text("old")
    with Outputs(tmp_path), output_set("scores", "pyrovae score"):  # a newer command: a manifest now
        write_text(tmp_path / "scores.csv", "new")
    with RunDirectory(tmp_path, resume=False, overwrite=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", MANIFEST]


def test_a_file_rewritten_outside_its_set_leaves_the_set(tmp_path):
    with Outputs(tmp_path):
        with output_set("samples.png", "pyrovae sample", {"which": "best", "epoch": 1, "sha256": "a"}):
            write_text(tmp_path / "samples.png", "sampled")
        write_text(tmp_path / "samples.png", "trained")  # as training's export rewrites it
    assert manifest(tmp_path)["sets"] == {} and stale_sets(tmp_path, {"best": "b"}) == []
    assert "samples.png" in manifest(tmp_path)["files"]


def test_a_commit_that_cannot_be_written_leaves_the_previous_set_and_no_temporary(tmp_path, monkeypatch):
    with Outputs(tmp_path):
        with output_set("compare", "pyrovae compare"):
            write_text(tmp_path / "compare.csv", "old")
        full = OSError(28, "No space left on device")
        monkeypatch.setattr(Outputs, "_save", lambda self: (_ for _ in ()).throw(full))
        with pytest.raises(OSError), output_set("compare", "pyrovae compare"):
            write_text(tmp_path / "compare.csv", "new")
        monkeypatch.undo()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.csv", MANIFEST]
        write_text(tmp_path / "notes.csv", "a later write")  # saves the manifest: with nothing pending
    assert manifest(tmp_path)["pending"] is None and (tmp_path / "compare.csv").read_text() == "old"


def test_a_picture_elsewhere_never_removes_the_one_in_the_run_directory(cli_run, tmp_path):
    from pyrovae import cli

    run_dir = tmp_path / "run"
    shutil.copytree(cli_run, run_dir)
    assert cli.main(["sample", str(run_dir), "--num", "4", "--overwrite"]) == 0
    assert cli.main(["sample", str(run_dir), "--num", "4", "--out", str(tmp_path / "samples.png")]) == 0
    assert (run_dir / "samples.png").is_file() and (tmp_path / "samples.png").is_file()
