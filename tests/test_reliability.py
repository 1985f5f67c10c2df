"""Kill ``pyrovae train`` anywhere, resume, and get the uninterrupted run bit for bit.

Every case runs ``python -m pyrovae train`` as a process, stops it (SIGKILL, SIGTERM or SIGINT)
either at a random instant or paused at a named point between two writes (the test-only hook
:func:`pyrovae.storage.pause_point`: ``PYROVAE_PAUSE_AT=NAME#N`` waits the ``N``-th time the point is
reached), resumes it with ``--resume`` and compares the checkpoint with that of a run that was never
interrupted: parameters, best parameters, optimizer state and history, exactly.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyrovae.runs.directory import CHECKPOINT, CONFIG, RESULTS
from pyrovae.runs.lock import RunLock
from pyrovae.storage import PAUSE_AT, PAUSE_FILE, load_checkpoint

# killed and interrupted processes: minutes of subprocesses, in the full suite (CI) only
pytestmark = pytest.mark.slow

EPOCHS = 3
TRAIN = [
    "train", "--dataset", "digits", "--latent-dim", "4", "--hidden", "16", "--batch-size", "300",
    "--lr", "1e-2", "--test-samples", "10", "--no-progress", "--seed", "0",
]  # fmt: skip
TIMEOUT = 120  # seconds for one process


def command(run_dir: Path, *extra: str, epochs: int = EPOCHS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pyrovae",
        *TRAIN,
        "--epochs",
        str(epochs),
        "--run-dir",
        str(run_dir),
        *extra,
    ]


def environment(tmp_path: Path, pause: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYROVAE_CACHE": str(tmp_path / "cache"),
    }
    env.pop(PAUSE_AT, None)
    if pause is not None:
        env.update({PAUSE_AT: pause, PAUSE_FILE: str(tmp_path / f"paused-{abs(hash(pause))}")})
    return env


def run(tmp_path: Path, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        env=environment(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def default_sigint() -> None:
    """SIGINT as a terminal delivers it: a test suite started in the background (``cmd &`` without
    job control, as CI scripts may run) hands its children SIGINT ignored, which Python keeps."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path: Path, argv: list[str], pause: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        env=environment(tmp_path, pause),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )


def wait_paused(tmp_path: Path, proc: subprocess.Popen, pause: str) -> None:
    marker = Path(environment(tmp_path, pause)[PAUSE_FILE])
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before pausing at {pause!r}:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run never paused at {pause!r}")
        time.sleep(0.05)
    marker.unlink()


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, err


def comparable(state: dict) -> dict:
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in state["history"]]
    return {**{k: state[k] for k in ("epoch", "model", "optimizer", "best", "best_epoch", "bad_epochs")},
            "best_model": state["best_model"], "history": history}  # fmt: skip


def assert_identical(a, b, where: str = "state") -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The checkpoint of the run that was never interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    done = run(tmp, command(tmp / "run"))
    assert done.returncode == 0, done.stderr
    return comparable(load_checkpoint(tmp / "run" / CHECKPOINT))


def resume_and_compare(tmp_path: Path, run_dir: Path, reference: dict) -> None:
    done = run(tmp_path, command(run_dir, "--resume"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert_identical(comparable(load_checkpoint(run_dir / CHECKPOINT)), reference)
    assert (run_dir / RESULTS).is_file() and not list(run_dir.glob(".*.tmp"))


# the points between two writes of a run: config.json before the first epoch; for each epoch the
# commit (before the checkpoint's temporary is written, and between writing and renaming it), the
# history export, and the final results
POINTS = [
    "replace config.json#1",
    "commit#1",
    "replace checkpoint.pt#1",
    "history#1",
    "commit#2",
    "replace checkpoint.pt#2",
    "history#2",
    "replace history.csv#2",
    "replace checkpoint.pt#3",
    "history#3",
    "replace results.json#1",
]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_between_any_two_writes_resumes_to_the_identical_run(tmp_path, reference, point):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, command(run_dir), pause=point)
    wait_paused(tmp_path, proc, point)
    stop(proc, signal.SIGKILL)
    resume_and_compare(tmp_path, run_dir, reference)


def test_repeated_sigkills_at_random_instants_resume_to_the_identical_run(tmp_path, reference):
    run_dir = tmp_path / "run"
    draw = random.Random(0)  # the instants are random, and the same in every test run
    proc = start(tmp_path, command(run_dir))
    for _ in range(3):
        time.sleep(draw.uniform(1.0, 6.0))
        if proc.poll() is not None:
            break
        stop(proc, signal.SIGKILL)
        proc = start(tmp_path, command(run_dir, "--resume"))
    proc.communicate(timeout=TIMEOUT)
    resume_and_compare(tmp_path, run_dir, reference)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_sigint_and_sigterm_leave_a_resumable_directory(tmp_path, reference, sig, status):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, command(run_dir), pause="commit#2")
    wait_paused(tmp_path, proc, "commit#2")
    code, err = stop(proc, sig)
    assert code == status and "Traceback" not in err
    if sig == signal.SIGINT:
        assert f"continue with pyrovae train --run-dir {run_dir} --resume" in err
    resume_and_compare(tmp_path, run_dir, reference)


def test_killed_before_its_first_epoch_a_run_starts_again_in_place(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, command(run_dir), pause="commit#1")
    wait_paused(tmp_path, proc, "commit#1")
    stop(proc, signal.SIGKILL)
    assert (run_dir / CONFIG).is_file() and not (run_dir / CHECKPOINT).exists()
    again = run(tmp_path, command(run_dir))
    assert (
        again.returncode == 2
        and "stopped before its first epoch was saved; pass resume=True (--resume)" in (again.stderr)
    )
    resume_and_compare(tmp_path, run_dir, reference)


def test_a_second_writer_is_refused_at_once(tmp_path):
    run_dir = tmp_path / "run"
    first = start(tmp_path, command(run_dir), pause="commit#2")
    wait_paused(tmp_path, first, "commit#2")
    try:
        second = run(tmp_path, command(run_dir, "--resume"))
        assert second.returncode == 2
        assert f"another process (pid {first.pid}) is writing to {run_dir}" in second.stderr
        with pytest.raises(Exception, match="another process"):
            RunLock(run_dir).__enter__()
        overwrite = run(tmp_path, command(run_dir, "--overwrite"))
        assert overwrite.returncode == 2 and (run_dir / CONFIG).is_file()
    finally:
        stop(first, signal.SIGKILL)
    with RunLock(run_dir):  # the lock died with its process
        pass
