"""Kill ``pyrovae train`` anywhere, resume, and get the uninterrupted run bit for bit; kill any command
that writes outputs anywhere, and find the previous complete set of outputs or the new one.

Every case runs ``python -m pyrovae`` as a process, stops it (SIGKILL, SIGTERM or SIGINT) either at a
random instant or paused at a named point between two writes (the test-only hook
:func:`pyrovae.storage.pause_point`: ``PYROVAE_PAUSE_AT=NAME#N`` waits the ``N``-th time the point is
reached). A training is resumed with ``--resume`` and its checkpoint compared with that of a run that was
never interrupted: parameters, best parameters, optimizer state and history, exactly. The output set of
another command (:mod:`pyrovae.runs.outputs`) must be, after each kill, wholly the previous one (every file
older than the killed process) or wholly the killed process's (committed: every file written by it, in place
or still to be moved there by the next command), and the next command must run without a complaint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from pyrovae.runs.directory import CHECKPOINT, CONFIG, RESULTS
from pyrovae.runs.lock import RunLock
from pyrovae.runs.outputs import MANIFEST
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
def trained(tmp_path_factory) -> Path:
    """The run directory of the run that was never interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    done = run(tmp, command(tmp / "run"))
    assert done.returncode == 0, done.stderr
    return tmp / "run"


@pytest.fixture(scope="module")
def reference(trained) -> dict:
    """The checkpoint of the run that was never interrupted."""
    return comparable(load_checkpoint(trained / CHECKPOINT))


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


def test_a_captured_run_killed_and_resumed_is_the_eager_run(tmp_path, reference):
    # the reference trained eagerly (compile auto runs a CPU's first 100 steps of a shape eagerly); this one
    # replays recorded steps from its second (pyrovae.train.capture), is killed between two epochs' commits
    # and resumed, recording again: the same parameters, optimizer state and history, bit for bit
    run_dir = tmp_path / "run"
    proc = start(tmp_path, command(run_dir, "--compile", "graph"), pause="commit#2")
    wait_paused(tmp_path, proc, "commit#2")
    stop(proc, signal.SIGKILL)
    done = run(tmp_path, command(run_dir, "--resume", "--compile", "graph"))
    assert done.returncode == 0, done.stderr
    assert_identical(comparable(load_checkpoint(run_dir / CHECKPOINT)), reference)


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


# ---------------------------------------------------------------------------------------------------------
# every command that writes outputs

#: each command that writes an output set into the run directory, with options for a quick run
WRITERS = {
    "evaluate": ["--limit", "20", "--num-samples", "20", "--bounds", "1,20", "--ais-steps", "3",
                 "--ais-chains", "2", "--bdmc", "2", "--bdmc-steps", "3", "--leapfrog-steps", "2"],
    "score": ["--limit", "20", "--num-samples", "10"],
    "detect": ["--out", "digits", "--split", "valid", "--methods", "nll,elbo", "--limit", "20",
               "--num-samples", "10"],
    "latents": ["--limit", "20", "--num-particles", "3"],
    "compare": ["--estimators", "elbo,iwae:k=2", "--num-repeats", "2", "--batch-size", "5"],
    "sample": ["--num", "16"],
    "reconstruct": ["--num", "8"],
}  # fmt: skip
KILLS = 20  # random instants per command


def writer(run_dir: Path, name: str, seed: int, overwrite: bool = True) -> list[str]:
    """``pyrovae NAME RUN_DIR`` with its quick options (``sample`` to a file training does not write)."""
    quiet = ["--out", str(run_dir / "grid.png")] if name == "sample" else []
    quiet += [] if name in ("sample", "reconstruct") else ["--no-progress"]
    argv = [
        name,
        str(run_dir),
        *WRITERS[name],
        *quiet,
        *(["--overwrite"] if overwrite else []),
        "--seed",
        str(seed),
    ]
    return [sys.executable, "-m", "pyrovae", *argv]


def one_set(run_dir: Path, name: str, started: int) -> str:
    """Check that the output set ``name`` of ``run_dir`` is the one there before the process started at
    ``started`` (nanoseconds; ``"old"``) or wholly that process's (``"new"``), and say which."""
    manifest = json.loads((run_dir / MANIFEST).read_text())
    pending = manifest["pending"]
    if pending is not None:  # committed: each file is in place already, or its temporary is complete
        assert pending["set"] == name, pending
        for tmp, final in pending["moves"]:
            assert (run_dir / tmp).is_file() or (run_dir / final).stat().st_mtime_ns >= started, final
        return "new"
    if name not in manifest["sets"]:  # none committed yet: the next run must not need --overwrite
        return "none"
    files = manifest["sets"][name]["files"]
    new = [(run_dir / file).stat().st_mtime_ns >= started for file in files]
    assert all(new) or not any(new), f"a mixed set: {dict(zip(files, new, strict=True))}"
    return "new" if all(new) else "old"


def set_name(run_dir: Path, command: str) -> str:
    """The name of the output set that ``pyrovae COMMAND`` wrote in ``run_dir``."""
    sets = json.loads((run_dir / MANIFEST).read_text())["sets"]
    (name,) = [name for name, record in sets.items() if record["command"].split()[1] == command]
    return name


def kill_at_random_instants(tmp_path: Path, trained: Path, command: str) -> dict[str, int]:
    """Run ``pyrovae COMMAND`` on a copy of the run once, then :data:`KILLS` times killed at a random instant
    of as long a run, checking the output set after each kill, then once more to the end; how often the set
    was found the previous one and the new one."""
    tmp_path = tmp_path / command
    measured, run_dir = tmp_path / "measured", tmp_path / "run"
    shutil.copytree(trained, measured)
    shutil.copytree(trained, run_dir)
    began = time.monotonic()
    done = run(tmp_path, writer(measured, command, 0))  # how long a run takes, and the name of its set
    duration = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    name, seen = set_name(measured, command), {"none": 0, "old": 0, "new": 0}
    draw = random.Random(command)  # the instants are random, and the same in every test run
    state = "none"
    for seed in range(1, KILLS + 1):
        started = time.time_ns()
        # --overwrite only once a set was committed: what a killed run left must not need it
        proc = start(tmp_path, writer(run_dir, command, seed, overwrite=state != "none"))
        time.sleep(draw.uniform(0, duration))
        code, err = stop(proc, signal.SIGKILL)
        assert code in (0, -signal.SIGKILL) and "error:" not in err, err  # never a complaint about leftovers
        state = one_set(run_dir, name, started) if (run_dir / MANIFEST).is_file() else "none"
        seen[state] += 1
    done = run(tmp_path, writer(run_dir, command, KILLS + 1, overwrite=state != "none"))  # to the end
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads((run_dir / MANIFEST).read_text())["pending"] is None and not list(
        run_dir.glob(".*.tmp")
    )
    return seen


def test_every_writing_command_killed_at_random_instants_leaves_the_previous_or_the_new_set(
    tmp_path, trained
):
    # the commands' runs two at a time (each its own run directory): minutes of processes, halved
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            command: pool.submit(kill_at_random_instants, tmp_path, trained, command) for command in WRITERS
        }
        seen = {command: future.result() for command, future in futures.items()}
    assert all(sum(counts.values()) == KILLS for counts in seen.values()), seen


# the steps of an evaluation's commit: its temporaries written, the manifest naming them about to be
# replaced (the commit), a file moved into place, and the manifest about to record the set as done
COMMIT_POINTS = {
    "commit outputs": "old",
    "replace manifest.json#1": "old",
    "replace evaluation-test.csv": "new",
    "replace manifest.json#2": "new",
}


@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_an_evaluation_killed_at_each_step_of_its_commit_leaves_one_set(tmp_path, trained, point):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    assert run(tmp_path, writer(run_dir, "evaluate", 0)).returncode == 0
    started = time.time_ns()
    proc = start(tmp_path, writer(run_dir, "evaluate", 1), pause=point)
    wait_paused(tmp_path, proc, point)
    stop(proc, signal.SIGKILL)
    assert one_set(run_dir, "evaluation-test", started) == COMMIT_POINTS[point]
    done = run(tmp_path, writer(run_dir, "evaluate", 2))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    said = "finished committing" if COMMIT_POINTS[point] == "new" else "removed"
    assert f"warning: {said}" in done.stderr, done.stderr
    assert one_set(run_dir, "evaluation-test", started) == "new" and not list(run_dir.glob(".*.tmp"))
