"""Real file systems that fail: a full disk and a read-only mount, where this machine lets the tests mount
one (as root, with the right to mount: a ``tmpfs``); skipped elsewhere, where ``tests/test_catalogue.py``'s
simulated faults (section 6 of docs/reliability.md) still run."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from pyrovae import cli
from pyrovae.runs.outputs import MANIFEST

TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--latent-dim",
    "2",
    "--hidden",
    "8",
    "--no-progress",
]
EVALUATE = ["--limit", "3", "--num-samples", "10", "--bounds", "1,10", "--no-progress"]


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A ``tmpfs`` of ``size`` mounted at ``path``, or a skip where mounting is not allowed."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def main(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = cli.main([str(arg) for arg in argv])
    return status, err.getvalue()


def fill(directory: Path, leave: int) -> None:
    """Fill the file system of ``directory`` but ``leave`` bytes."""
    free = shutil.disk_usage(directory).free
    with open(directory / "filler", "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave))


def test_outputs_on_a_full_disk_leave_the_previous_set_and_no_temporary(cli_run, tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        run = disk / "run"
        shutil.copytree(cli_run, run)
        assert main("evaluate", run, *EVALUATE)[0] == 0
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
        fill(disk, 16 * 2**10)  # too little for the evaluation's files
        status, err = main("evaluate", run, *EVALUATE, "--overwrite", "--seed", "1")
        assert status == 1 and "No space left on device (is the disk full?)" in err, err
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
        assert after == before  # the previous set, its manifest, and not one temporary


def test_training_on_a_full_disk_is_refused_before_it_starts(tmp_path):
    with tmpfs(tmp_path / "disk", "512k") as disk:
        status, err = main(*TRAIN, "--run-dir", disk / "run")
        assert status == 2 and "MiB for its checkpoints; free some space" in err, err
        assert not (disk / "run").exists()


def test_a_read_only_run_directory_is_read_but_never_written(cli_run, tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        run = disk / "run"
        shutil.copytree(cli_run, run)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        status, err = main("evaluate", run, *EVALUATE)
        assert status == 2 and "Read-only file system; choose a directory you can write to" in err, err
        status, err = main("sample", run, "--out", tmp_path / "s.png", "--num", "4")
        assert status == 0 and (tmp_path / "s.png").is_file(), err  # read without its lock, written elsewhere
        status, err = main(*TRAIN, "--run-dir", disk / "new")
        assert status == 2 and "Read-only file system" in err, err
        assert (run / MANIFEST).is_file() and not (disk / "new").exists()
