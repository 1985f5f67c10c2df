"""Every entry of docs/reliability.md, the catalogue of bad inputs and faults, run as written there.

The document's tables hold the expectations: for each row, CASES maps its id to a setup function
that produces the fault, runs the command in-process (or calls the API) and returns the exit status
and what was printed; the row's exit status and message excerpt are checked against them. The rows
of its "Known failures" table are expected to fail (strict xfail) until pyrovae is fixed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae import VAE, cli, fit, load_run
from pyrovae.runs.lock import RunLock
from pyrovae.storage import PAUSE_AT, PAUSE_FILE, load_checkpoint, save_checkpoint

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
FAST = ["--no-progress", "--test-samples", "0"]
TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "4", "--hidden", "32"]
TRAIN += ["--batch-size", "400", *FAST]
NEW = [*TRAIN, "--run-dir", "{new}"]  # a new run in a directory that does not exist yet
RESUME = ["train", "--run-dir", "{run}", "--resume", *FAST]  # continue the shared run (2 epochs)
EVALUATE = ["evaluate", "{run}", "--limit", "2", "--num-samples", "5", "--bounds", "1,5", "--no-progress"]
COMPARE = ["compare", "{run}", "--estimators", "elbo", "--num-repeats", "2", "--batch-size", "5"]
COMPARE += ["--no-progress"]


class Entry(NamedTuple):
    id: str
    case: str
    exit: int
    excerpt: str


class Outcome(NamedTuple):
    status: int
    out: str
    err: str
    from_cli: bool = True  # False: an API call, whose err is the exception's message


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The tables of a markdown text, each a list of rows of cells (the header first, no rule)."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def unquote(cell: str) -> str:
    """A cell's text without the backquotes around it (around each piece of an excerpt with `` … ``)."""
    pieces = [re.fullmatch(r"`?(.*?)`?", piece).group(1) for piece in cell.split(" … ")]
    return " … ".join(pieces)


def read_doc() -> tuple[list[Entry], dict[str, str]]:
    """The catalogue's entries, and the known failures: what each does now, by id."""
    entries, known = [], {}
    for header, *rows in markdown_tables(DOC.read_text()):
        if header == ["id", "case", "exit", "message (excerpt)"]:
            entries += [Entry(unquote(i), case, int(status), unquote(m)) for i, case, status, m in rows]
        elif header == ["id", "what happens now"]:
            known.update((unquote(i), now) for i, now in rows)
    return entries, known


ENTRIES, KNOWN_FAILURES = read_doc()


def snapshot(directory: Path) -> dict[str, bytes]:
    """The files of ``directory`` but its lock, whose content is the pid of the last process to take it."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and p.name != ".lock"}


class Env:
    """What a case works with: a temporary directory, a copy of the shared trained run (made on first
    use) and ways to run the command line and the API that report what a user would see."""

    def __init__(self, tmp: Path, trained: Path, monkeypatch: pytest.MonkeyPatch):
        self.tmp, self.trained, self.monkeypatch = tmp, trained, monkeypatch
        self.new = tmp / "new"
        self._run: Path | None = None

    @property
    def run(self) -> Path:
        if self._run is None:
            self._run = self.tmp / "run"
            shutil.copytree(self.trained, self._run)
        return self._run

    def expand(self, arg: str) -> str:
        if "{run}" in arg:
            arg = arg.replace("{run}", str(self.run))
        return arg.replace("{new}", str(self.new)).replace("{tmp}", str(self.tmp))

    def cli(self, *argv: str) -> Outcome:
        """Run ``pyrovae ARGV`` in-process; an exception that escapes is shown as the traceback a user
        would get. A refusal (status 2) must leave a new run directory uncreated and the run unchanged."""
        argv = [self.expand(arg) for arg in argv]
        before = None if self._run is None else snapshot(self._run)
        new_existed = self.new.exists()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(argv)
            except SystemExit as e:  # argparse's usage errors
                status = e.code
            except Exception:
                status = 1
                traceback.print_exc()
        if status == 2:
            assert new_existed or not self.new.exists(), f"refused, but created {self.new}: {err.getvalue()}"
            if before is not None:
                assert snapshot(self._run) == before, f"refused, but changed the run: {err.getvalue()}"
        return Outcome(status, out.getvalue(), err.getvalue())

    def process(self, *argv: str, environ: dict[str, str]) -> Outcome:
        """Run ``python -m pyrovae ARGV`` in a process of its own, with ``environ`` added to the
        environment: for what a process sets up once, such as matplotlib's backend."""
        argv = [self.expand(arg) for arg in argv]
        env = {**os.environ, "OMP_NUM_THREADS": "1", **environ}
        done = subprocess.run(
            [sys.executable, "-m", "pyrovae", *argv], env=env, capture_output=True, text=True
        )
        return Outcome(done.returncode, done.stdout, done.stderr)


def api(call: Callable[[], object]) -> Outcome:
    """Call the API: the exit status of the :class:`~pyrovae.PyroVAEError` it raises, and its message."""
    try:
        call()
    except pyrovae.PyroVAEError as e:
        return Outcome(e.exit_code, "", str(e), from_cli=False)
    except Exception:
        return Outcome(1, "", traceback.format_exc(), from_cli=False)
    return Outcome(0, "", "", from_cli=False)


def binary(n: int = 64) -> torch.Tensor:
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()


class StopSilently(pyrovae.Callback):
    """A callback that stops training without saying why."""

    def on_epoch_end(self, state, row):
        state.stop("")


def small_vae(**options) -> VAE:
    return VAE((1, 8, 8), latent_dim=2, hidden=(8,), **options)


def fails_with(error: int) -> Callable[..., None]:
    """A stand-in for a system call that fails with ``OSError(error)``."""

    def fail(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    return fail


#: each case's setup, by the id of its row in docs/reliability.md
CASES: dict[str, Callable[[Env], Outcome]] = {}


def case(id: str):
    def register(setup: Callable[[Env], Outcome]) -> Callable[[Env], Outcome]:
        assert id not in CASES, id
        CASES[id] = setup
        return setup

    return register


def command_lines(table: dict[str, list[str]]) -> None:
    """Register cases that only run a command line."""
    for id, argv in table.items():
        case(id)(lambda env, argv=argv: env.cli(*argv))


def api_calls(table: dict[str, Callable[[], object]]) -> None:
    """Register cases that only call the API."""
    for id, call in table.items():
        case(id)(lambda env, call=call: api(call))


def no_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")


# 1. Options


command_lines(
    {
        "train-epochs-zero": [*NEW, "--epochs", "0"],
        "train-epochs-fractional": [*NEW, "--epochs", "2.5"],
        "train-epochs-word": [*NEW, "--epochs", "two"],
        "train-lr-zero": [*NEW, "--lr", "0"],
        "train-lr-nan": [*NEW, "--lr", "nan"],
        "train-lr-overflow": [*NEW, "--lr", "1e400"],
        "train-clip-norm-negative": [*NEW, "--clip-norm", "-1"],
        "train-patience-zero": [*NEW, "--patience", "0"],
        "train-test-samples-negative": [*NEW, "--test-samples", "-1"],
        "train-kl-warmup-negative": [*NEW, "--kl-warmup", "-1"],
        "train-kl-warmup-fractional": [*NEW, "--kl-warmup", "2.5"],
        "train-likelihood-scale-zero": [*NEW, "--likelihood-scale", "0"],
        "train-hidden-zero": [*NEW, "--hidden", "0"],
        "train-hidden-word": [*NEW, "--hidden", "32,abc"],
        "train-hidden-huge": [*NEW, "--hidden", "99999999999999999999"],
        "train-latent-dim-zero": [*NEW, "--latent-dim", "0"],
        "train-batch-size-zero": [*NEW, "--batch-size", "0"],
        "train-seed-negative": [*NEW, "--seed", "-1"],
        "train-seed-too-large": [*NEW, "--seed", "4294967296"],
        "train-k-zero": [*NEW, "--estimator", "iwae", "--k", "0"],
        "train-k-for-elbo": [*NEW, "--k", "5"],
        "train-alpha-nan": [*NEW, "--estimator", "renyi", "--alpha", "nan"],
        "train-prior-components-normal": [*NEW, "--prior-components", "3"],
        "train-latent-dim2-vae": [*NEW, "--latent-dim2", "2"],
        "train-unknown-dataset": [*NEW, "--dataset", "cifar"],
        "train-unknown-likelihood": [*NEW, "--likelihood", "poisson"],
        "train-unknown-prior": [*NEW, "--prior", "flow"],
        "train-unknown-estimator": [*NEW, "--estimator", "sgvb"],
        "train-unknown-activation": [*NEW, "--activation", "gelu2"],
        "train-unknown-optimizer": [*NEW, "--optimizer", "rmsprop"],
        "train-unknown-binarize": [*NEW, "--binarize", "sometimes"],
        "train-resume-and-overwrite": [*NEW, "--resume", "--overwrite"],
        "train-resume-without-run-dir": [*TRAIN, "--resume"],
        "train-device-tpu": [*NEW, "--device", "tpu"],
        "sample-num-zero": ["sample", "{run}", "--num", "0"],
        "reconstruct-num-negative": ["reconstruct", "{run}", "--num", "-1", "--out", "{tmp}/r.png"],
        "evaluate-num-samples-zero": ["evaluate", "{run}", "--num-samples", "0"],
        "evaluate-bounds-zero": ["evaluate", "{run}", "--bounds", "0"],
        "evaluate-bounds-word": ["evaluate", "{run}", "--bounds", "1,x"],
        "evaluate-bounds-above-num-samples": [*EVALUATE, "--num-samples", "10", "--bounds", "1,100"],
        "evaluate-limit-zero": ["evaluate", "{run}", "--limit", "0"],
        "evaluate-ais-chains-zero": ["evaluate", "{run}", "--ais-steps", "3", "--ais-chains", "0"],
        "evaluate-max-memory-negative": [*EVALUATE, "--max-memory", "-1"],
        "evaluate-seed-negative": [*EVALUATE, "--seed", "-1"],
        "evaluate-unknown-split": ["evaluate", "{run}", "--split", "training"],
        "evaluate-device-tpu": [*EVALUATE, "--device", "tpu"],
        "compare-num-repeats-one": [*COMPARE, "--num-repeats", "1"],
        "compare-estimators-empty": [*COMPARE, "--estimators", ""],
        "compare-estimators-repeated": [*COMPARE, "--estimators", "elbo,elbo"],
        "compare-unknown-estimator": [*COMPARE, "--estimators", "elbo,sgvb"],
        "compare-unknown-estimator-option": [*COMPARE, "--estimators", "iwae:q=3"],
        "compare-estimator-k-zero": [*COMPARE, "--estimators", "iwae:k=0"],
        "compare-seed-negative": [*COMPARE, "--seed", "-1"],
        "train-log-unknown": [*NEW, "--log", "wandb"],
        "train-log-repeated": [*NEW, "--log", "mlflow,mlflow"],
        "train-log-dir-without-log": [*NEW, "--log-dir", "{tmp}/logs"],
        "train-log-tracking-uri-bogus": [*NEW, "--log", "mlflow", "--tracking-uri", "bogus://nowhere"],
        "train-log-experiment-empty": [*NEW, "--log", "mlflow", "--experiment", ""],
    }
)


@case("train-device-cuda")
def _(env):
    no_gpu()
    return env.cli(*NEW, "--device", "cuda")


@case("evaluate-device-cuda")
def _(env):
    no_gpu()
    return env.cli(*EVALUATE, "--device", "cuda")


@case("evaluate-ais-steps-zero")
def _(env):
    outcome = env.cli("evaluate", "{run}", "--ais-steps", "0")
    assert "--bounds" not in outcome.err.splitlines()[-1], "the message names another option"
    return outcome


api_calls(
    {
        "api-fit-epochs-fractional": lambda: fit(small_vae(), binary(), epochs=2.5, progress=False),
        "api-fit-epochs-bool": lambda: fit(small_vae(), binary(), epochs=True, progress=False),
        "api-fit-lr-string": lambda: fit(small_vae(), binary(), lr="0.1", progress=False),
        "api-fit-clip-norm-negative": lambda: fit(small_vae(), binary(), clip_norm=-1, progress=False),
        "api-fit-patience-zero": lambda: fit(small_vae(), binary(), patience=0, progress=False),
        "api-fit-callbacks-not-a-list": lambda: fit(
            small_vae(), binary(), callbacks=StopSilently(), progress=False
        ),
        "api-fit-callback-class": lambda: fit(
            small_vae(), binary(), callbacks=[pyrovae.Callback], progress=False
        ),
        "api-fit-stop-without-reason": lambda: fit(
            small_vae(), binary(), callbacks=[StopSilently()], progress=False
        ),
        "api-fit-batch-size-zero": lambda: fit(small_vae(), binary(), batch_size=0, progress=False),
        "api-fit-several-bad-options": lambda: fit(
            small_vae(), binary(), epochs=2.5, lr="0.1", patience=0, progress=False
        ),
        "api-fit-patience-without-validation": lambda: fit(small_vae(), binary(), patience=2, progress=False),
        "api-fit-unknown-optimizer": lambda: fit(small_vae(), binary(), optimizer="rmsprop", progress=False),
        "api-vae-hidden-zero": lambda: VAE((1, 8, 8), hidden=(0,)),
        "api-vae-unknown-activation": lambda: VAE((1, 8, 8), activation="gelu2"),
    }
)


def pair(model=None) -> tuple:
    model = model or small_vae()
    return model.model, model.guide


def with_nan() -> torch.Tensor:
    x = binary()
    x[3, 0, 0, 0] = float("nan")
    return x


# 1b. Options of the evaluation API and the estimators: one table of domains (pyrovae.options)

api_calls(
    {
        "api-log-likelihood-seed-negative": lambda: pyrovae.log_likelihood(*pair(), binary(), 5, seed=-1),
        "api-log-likelihood-num-samples-zero": lambda: pyrovae.log_likelihood(*pair(), binary(), 0),
        "api-anomaly-seed-negative": lambda: pyrovae.anomaly_scores(
            *pair(), binary(), seed=-1, progress=False
        ),
        "api-latent-stats-seed-negative": lambda: pyrovae.latent_stats(
            *pair(), binary(), seed=-1, progress=False
        ),
        "api-latent-stats-threshold-zero": lambda: pyrovae.latent_stats(*pair(), binary(), threshold=0),
        "api-ais-seed-negative": lambda: pyrovae.ais(*pair(), binary(), seed=-1, progress=False),
        "api-ais-schedule-nan": lambda: pyrovae.ais(*pair(), binary(), schedule=[0, float("nan"), 1]),
        "api-ais-target-accept-one": lambda: pyrovae.ais(*pair(), binary(), target_accept=1.0),
        "api-bdmc-unknown-option": lambda: pyrovae.bdmc(*pair(), 4, foo=1),
        "api-bounds-ks-int": lambda: pyrovae.bounds(*pair(), binary(), ks=10),
        "api-bounds-ais-options-unknown": lambda: pyrovae.bounds(*pair(), binary(), ais_options={"foo": 1}),
        "api-encode-batch-size-zero": lambda: pyrovae.analysis.latent_space.encode(
            small_vae(), binary(), batch_size=0
        ),
        "api-estimator-none": lambda: pyrovae.estimator(None),
        "api-estimator-number": lambda: pyrovae.estimator(5),
        "api-estimator-num-particles-fractional": lambda: pyrovae.estimator("elbo:num_particles=2.5"),
        "api-estimator-max-plate-nesting-negative": lambda: pyrovae.estimator("enum:max_plate_nesting=-1"),
        "api-estimator-tail-adaptive-beta": lambda: pyrovae.estimator("tail-adaptive:tail_adaptive_beta=5"),
        "api-regret-steps-zero": lambda: pyrovae.anomaly_scores(
            *pair(), binary(), "likelihood-regret", steps=0, progress=False
        ),
        "api-regret-steps-negative": lambda: pyrovae.anomaly_scores(
            *pair(), binary(), "likelihood-regret", steps=-5, progress=False
        ),
        "api-regret-lr-negative": lambda: pyrovae.anomaly_scores(
            *pair(), binary(), "likelihood-regret", lr=-1, progress=False
        ),
        "api-regret-lr-nan": lambda: pyrovae.anomaly_scores(
            *pair(), binary(), "likelihood-regret", lr=float("nan"), progress=False
        ),
    }
)


# 2. Data

api_calls(
    {
        "api-fit-data-long": lambda: fit(small_vae(), binary().long(), epochs=1, progress=False),
        "api-fit-data-double": lambda: fit(small_vae(), binary().double(), epochs=1, progress=False),
        "api-fit-data-list": lambda: fit(small_vae(), list(binary()), epochs=1, progress=False),
        "api-latent-stats-data-nan": lambda: pyrovae.latent_stats(*pair(), with_nan(), progress=False),
        "api-log-likelihood-data-nan": lambda: pyrovae.log_likelihood(*pair(), with_nan(), 5, progress=False),
        "api-reconstruction-discrete-latents": lambda: pyrovae.anomaly_scores(
            *pair(pyrovae.SBN((1, 8, 8), (3,))), binary(), "reconstruction", progress=False
        ),
    }
)


def with_value(value: float) -> torch.Tensor:
    x = binary()
    x[0, 0, 0, 0] = value
    return x


api_calls(
    {
        "api-data-nan": lambda: fit(small_vae(), with_value(float("nan")), epochs=1, progress=False),
        "api-data-inf": lambda: fit(
            small_vae(likelihood="gaussian"), with_value(float("inf")), epochs=1, progress=False
        ),
        "api-data-grey-levels": lambda: fit(small_vae(), torch.rand(64, 1, 8, 8), epochs=1, progress=False),
        "api-data-grey-validation": lambda: fit(
            small_vae(), binary(), torch.rand(10, 1, 8, 8), epochs=1, progress=False
        ),
        "api-data-outside-support": lambda: fit(
            small_vae(likelihood="continuous-bernoulli"), 2 * binary(), epochs=1, progress=False
        ),
        "api-data-wrong-shape": lambda: fit(small_vae(), binary().reshape(64, 64), epochs=1, progress=False),
        "api-unknown-split": lambda: pyrovae.load("digits", "training"),
    }
)

command_lines(
    {
        "data-grey-levels": [*NEW, "--likelihood", "bernoulli", "--binarize", "none"],
        "data-off-the-levels": [*NEW, "--likelihood", "binomial:levels=5"],
        "data-root-missing": [*NEW, "--dataset", "binarized-mnist", "--data-root", "/nonexistent"],
        "data-mnist-missing": [*NEW, "--dataset", "mnist", "--data-root", "/nonexistent"],
        "train-loss-nan": [*NEW, "--lr", "1e6", "--optimizer", "sgd"],
    }
)


@case("api-loss-nan")
def _(env):
    torch.manual_seed(0)
    vae = small_vae()
    return api(lambda: fit(vae, binary(), lr=1e30, optimizer="sgd", epochs=2, batch_size=32, progress=False))


# 3. Run directories


@case("rundir-not-empty")
def _(env):
    (env.tmp / "mine").mkdir()
    (env.tmp / "mine" / "notes.txt").write_text("mine")
    outcome = env.cli(*TRAIN, "--run-dir", "{tmp}/mine")
    assert [p.name for p in (env.tmp / "mine").iterdir()] == ["notes.txt"]
    return outcome


@case("rundir-is-file")
def _(env):
    (env.tmp / "file").write_text("mine")
    return env.cli(*TRAIN, "--run-dir", "{tmp}/file")


@case("rundir-under-file")
def _(env):
    (env.tmp / "file").write_text("mine")
    return env.cli(*TRAIN, "--run-dir", "{tmp}/file/run")


def stopped_before_first_epoch(env: Env) -> Path:
    """A run directory as left by a run killed before its first epoch was saved: config.json alone."""
    stopped = env.tmp / "stopped"
    stopped.mkdir()
    shutil.copy(env.trained / "config.json", stopped)
    return stopped


@case("rundir-stopped-before-first-epoch")
def _(env):
    stopped_before_first_epoch(env)
    return env.cli(*TRAIN, "--run-dir", "{tmp}/stopped")


@case("rundir-stopped-before-first-epoch-resumed")
def _(env):
    stopped = stopped_before_first_epoch(env)
    outcome = env.cli("train", "--run-dir", str(stopped), "--resume", "--epochs", "1", *FAST)
    assert load_checkpoint(stopped / "checkpoint.pt")["epoch"] == 1
    return outcome


@case("rundir-stray-temporaries")
def _(env):
    env.new.mkdir()
    (env.new / ".checkpoint.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    (env.new / ".lock").write_text("12345")
    outcome = env.cli(*NEW)
    assert not list(env.new.glob("*.tmp"))
    return outcome


@case("rundir-overwrite-keeps-other-files")
def _(env):
    assert env.cli(*EVALUATE).status == 0
    mine = ("notes.txt", "my-paper-figure.png", "evaluation-notes.json")  # two named as pyrovae names its own
    for name in mine:
        (env.run / name).write_text("mine")
    outcome = env.cli(*TRAIN, "--run-dir", "{run}", "--overwrite")
    assert all((env.run / name).read_text() == "mine" for name in mine)
    assert not list(env.run.glob("evaluation-test*")) and not (env.run / "bounds-test.png").exists()
    assert load_checkpoint(env.run / "checkpoint.pt")["epoch"] == 1
    return outcome


@case("api-fit-overwrite-keeps-project-files")
def _(env):
    (env.tmp / "diagram.png").write_text("the project's")
    fit(small_vae(), binary(), epochs=1, batch_size=32, run_dir=env.tmp, overwrite=True, progress=False)
    result = fit(small_vae(), binary(), epochs=1, run_dir=env.tmp, overwrite=True, progress=False)
    assert (env.tmp / "diagram.png").read_text() == "the project's"
    return Outcome(0, result.summary(), "", from_cli=False)


@case("rundir-overwrite-without-manifest")
def _(env):
    (env.run / "manifest.json").unlink()  # a run directory written by a pyrovae that kept no manifest
    (env.run / "evaluation-test.json").write_text("{}")
    outcome = env.cli(*TRAIN, "--run-dir", "{run}", "--overwrite")
    assert (env.run / "evaluation-test.json").is_file() and (env.run / "samples.png").is_file()
    return outcome


@case("outputs-of-other-parameters")
def _(env):
    assert env.cli(*EVALUATE, "--checkpoint", "last").status == 0
    assert env.cli(*RESUME, "--epochs", "3").status == 0
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("killed-command-committed-set")
def _(env):
    with env.monkeypatch.context() as patch:  # killed after its commit, before moving its files into place
        patch.setattr("pyrovae.runs.outputs.Outputs._apply", lambda self, pending: None)
        assert env.cli(*EVALUATE).status == 0
    assert not (env.run / "evaluation-test.json").exists()
    outcome = env.cli("sample", "{run}", "--out", "{tmp}/s.png")
    assert {"evaluation-test.json", "evaluation-test.csv", "bounds-test.png"} <= set(os.listdir(env.run))
    assert not list(env.run.glob(".*.tmp"))
    return outcome


@case("killed-command-temporaries")
def _(env):
    (env.run / ".evaluation-test.csv.k1ll3d.tmp").write_text("partial")
    (env.run / ".bounds-test.png.k1ll3d.tmp").write_text("partial")
    outcome = env.cli(*EVALUATE)
    assert (env.run / "evaluation-test.csv").is_file() and not list(env.run.glob(".*.tmp"))
    return outcome


def paused(env: Env, *argv: str, at: str) -> subprocess.Popen:
    """``python -m pyrovae ARGV`` in a process of its own, waiting at the pause point ``at``
    (:func:`pyrovae.storage.pause_point`) once it has reached it, holding the run's lock."""
    marker = env.tmp / "paused"
    environ = {**os.environ, "OMP_NUM_THREADS": "1", PAUSE_AT: at, PAUSE_FILE: str(marker)}
    argv = [sys.executable, "-m", "pyrovae", *(env.expand(arg) for arg in argv)]
    proc = subprocess.Popen(argv, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    return proc


@contextlib.contextmanager
def first_writer(env: Env, *argv: str, at: str = "commit outputs"):
    """A first command on the run, in a process of its own, paused at ``at`` (by default just before it
    commits its outputs) while the case runs a second; killed afterwards."""
    proc = paused(env, *argv, at=at)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@case("evaluate-during-evaluate")
def _(env):
    assert env.cli(*EVALUATE).status == 0
    before = snapshot(env.run)
    with first_writer(env, *EVALUATE, "--overwrite", "--seed", "1"):
        outcome = env.process(*EVALUATE, "--overwrite", "--seed", "2", environ={})
    after = {name: data for name, data in snapshot(env.run).items() if not name.endswith(".tmp")}
    assert (
        after == before
    )  # the first one's set was never committed (its temporaries are left); the second refused
    return outcome


@case("score-during-score")
def _(env):
    score = ("score", "{run}", "--limit", "3", "--num-samples", "10", "--no-progress")
    with first_writer(env, *score):
        return env.process(*score, "--seed", "1", environ={})


@case("train-overwrite-during-evaluate")
def _(env):
    with first_writer(env, *EVALUATE):
        outcome = env.process(*TRAIN, *FAST, "--run-dir", "{run}", "--overwrite", environ={})
    assert load_checkpoint(env.run / "checkpoint.pt")["epoch"] == 2  # the run the evaluation reads
    return outcome


@case("resume-new-directory")
def _(env):
    return env.cli(*NEW, "--resume")


command_lines(
    {
        "resume-activation-changed": [*RESUME, "--activation", "tanh"],
        "resume-hidden-changed": [*RESUME, "--hidden", "128"],
        "resume-optimizer-changed": [*RESUME, "--optimizer", "sgd"],
        "resume-latent-dim-changed": [*RESUME, "--latent-dim", "8"],
        "resume-seed-changed": [*RESUME, "--seed", "3"],
        "resume-fewer-epochs": [*RESUME, "--epochs", "1"],
    }
)


@case("resume-lr-changed")
def _(env):
    outcome = env.cli(*RESUME, "--lr", "0.01")
    assert json.loads((env.run / "config.json").read_text())["lr"] == 0.01
    return outcome


@case("resume-more-epochs")
def _(env):
    outcome = env.cli(*RESUME, "--epochs", "3")
    assert load_checkpoint(env.run / "checkpoint.pt")["epoch"] == 3
    return outcome


@case("resume-locked")
def _(env):
    with RunLock(env.run):
        return env.cli(*RESUME)


@case("evaluate-locked")
def _(env):
    with RunLock(env.run):
        return env.cli(
            "evaluate", "{run}", "--limit", "3", "--num-samples", "10", "--bounds", "1,10", *FAST[:1]
        )


@case("score-locked")
def _(env):
    with RunLock(env.run):
        return env.cli("score", "{run}", "--limit", "3", "--num-samples", "10", *FAST[:1])


@case("sample-locked")
def _(env):
    with RunLock(env.run):
        return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("score-data-root-without-dataset")
def _(env):
    return env.cli("score", "{run}", "--data-root", "{tmp}", *FAST[:1])


@case("score-binarize-without-dataset")
def _(env):
    return env.cli("score", "{run}", "--binarize", "threshold", *FAST[:1])


@case("detect-in-root-without-in")
def _(env):
    return env.cli("detect", "{run}", "--out", "digits", "--in-root", "{tmp}", *FAST[:1])


def fit_diverged(vae: VAE) -> VAE:
    """``vae`` after a ``fit`` that a learning rate of 10^6 stopped in its second epoch."""
    with contextlib.suppress(pyrovae.TrainingError):
        fit(vae, binary(), epochs=2, lr=1e6, optimizer="sgd", batch_size=64, progress=False)
    return vae


@case("api-fit-stopped-restores")
def _(env):
    return api(
        lambda: fit(small_vae(), binary(), epochs=2, lr=1e6, optimizer="sgd", batch_size=64, progress=False)
    )


@case("api-fit-after-divergence")
def _(env):
    return api(lambda: fit(fit_diverged(small_vae()), binary(), epochs=1, progress=False))


@case("evaluate-num-samples-beyond-memory")
def _(env):
    return env.cli(
        "evaluate", "{run}", "--limit", "3", "--num-samples", "100000000000", "--bounds", "1", *FAST[:1]
    )


@case("evaluate-ais-chains-beyond-memory")
def _(env):
    argv = (
        "--limit",
        "3",
        "--num-samples",
        "10",
        "--bounds",
        "1,10",
        "--ais-steps",
        "3",
        "--ais-chains",
        "10000000000",
    )
    return env.cli("evaluate", "{run}", *argv, *FAST[:1])


@case("latents-num-particles-beyond-memory")
def _(env):
    return env.cli("latents", "{run}", "--limit", "3", "--num-particles", "100000000000", *FAST[:1])


@case("score-num-samples-beyond-memory")
def _(env):
    return env.cli("score", "{run}", "--limit", "3", "--num-samples", "100000000000", *FAST[:1])


@case("sample-num-beyond-memory")
def _(env):
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png", "--num", "100000000")


@case("reconstruct-num-beyond-memory")
def _(env):
    return env.cli("reconstruct", "{run}", "--out", "{tmp}/r.png", "--num", "100000000")


@case("train-latent-dim-beyond-memory")
def _(env):
    return env.cli(*NEW, "--latent-dim", "16777216")


@case("evaluate-bdmc-beyond-memory")
def _(env):
    return env.cli(*EVALUATE, "--bdmc", "100000000000")


@case("sample-out-jpeg")
def _(env):
    outcome = env.cli("sample", "{run}", "--out", "{tmp}/s.jpg")
    assert (env.tmp / "s.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG file, as its name says
    return outcome


@case("sample-out-unknown-format")
def _(env):
    return env.cli("sample", "{run}", "--out", "{tmp}/s.xyz")


def python_run(env: Env) -> Path:
    """A run directory written by fit() from Python, on data of its own."""
    run = env.tmp / "python"
    fit(small_vae(), binary(), epochs=1, run_dir=run, progress=False)
    return run


@case("score-other-dataset-binarized")
def _(env):
    return env.cli("score", "{run}", "--dataset", "digits", "--limit", "3", "--num-samples", "5", *FAST[:1])


@case("detect-other-dataset-binarized")
def _(env):
    return env.cli("detect", "{run}", "--out", "digits", "--limit", "3", "--num-samples", "5", *FAST[:1])


@case("score-other-dataset-not-binarized")
def _(env):
    flags = ("--binarize", "none", "--limit", "3", "--num-samples", "5", *FAST[:1])
    return env.cli("score", "{run}", "--dataset", "digits", *flags)


@case("python-run-evaluate")
def _(env):
    outcome = env.cli("evaluate", str(python_run(env)), "--no-progress")
    named = re.search(r"([\w.]+)\.load_run\(RUN_DIR\)", outcome.err)
    if named:  # the function the message tells the user to call exists
        owner = pyrovae
        for part in named.group(1).split(".")[1:]:
            owner = getattr(owner, part, None)
        assert hasattr(owner, "load_run"), f"{named.group(0)} does not exist"
    return outcome


@case("python-run-resume")
def _(env):
    return env.cli("train", "--run-dir", str(python_run(env)), "--resume", *FAST)


# 4. Tampered checkpoints and configurations


def edit_checkpoint(env: Env, edit: Callable[[dict], None]) -> None:
    """Change the run's checkpoint and save it properly, so that its checksum matches."""
    state = load_checkpoint(env.run / "checkpoint.pt")
    edit(state)
    save_checkpoint(env.run / "checkpoint.pt", state)


def flip_tensor_byte(path: Path) -> None:
    """Flip a byte in the middle of a tensor's data (not in the file's zip structure)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    raw[info.header_offset + 30 + name_length + extra_length + info.file_size // 2] ^= 0xFF
    path.write_bytes(raw)


class Payload:
    """Pickled, it opens (creates) ``marker`` when unpickled: code run by loading a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@case("checkpoint-flipped-byte")
def _(env):
    flip_tensor_byte(env.run / "checkpoint.pt")
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("checkpoint-truncated")
def _(env):
    checkpoint = env.run / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    return env.cli(*RESUME)


@case("checkpoint-emptied")
def _(env):
    (env.run / "checkpoint.pt").write_bytes(b"")
    return env.cli(*EVALUATE)


@case("checkpoint-pickle")
def _(env):
    marker = env.tmp / "the-payload-ran"
    torch.save({"format": "pyrovae-checkpoint", "model": Payload(marker)}, env.run / "checkpoint.pt")
    outcome = env.cli("sample", "{run}", "--out", "{tmp}/s.png")
    assert not marker.exists(), "loading the checkpoint ran its payload"
    return outcome


@case("checkpoint-without-format")
def _(env):
    edit_checkpoint(env, lambda state: state.pop("format"))
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("checkpoint-without-checksum")
def _(env):
    torch.save(load_checkpoint(env.run / "checkpoint.pt"), env.run / "checkpoint.pt")
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("checkpoint-without-model")
def _(env):
    edit_checkpoint(env, lambda state: state.pop("model"))
    return env.cli(*RESUME, "--epochs", "3")


@case("checkpoint-without-optimizer")
def _(env):
    edit_checkpoint(env, lambda state: state.pop("optimizer"))
    return env.cli(*RESUME, "--epochs", "3")


@case("checkpoint-without-configuration")
def _(env):
    edit_checkpoint(env, lambda state: state.pop("config"))
    return env.cli(*RESUME)


def other_architecture(state: dict) -> None:
    state["model"] = state["best_model"] = VAE((1, 8, 8), latent_dim=4, hidden=(64,)).state_dict()


@case("checkpoint-other-architecture")
def _(env):
    edit_checkpoint(env, other_architecture)
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("checkpoint-other-architecture-resumed")
def _(env):
    edit_checkpoint(env, other_architecture)
    return env.cli(*RESUME, "--epochs", "3")


# 4. Model folders


def exported(env: Env) -> Path:
    """A model folder of the run, as ``pyrovae export RUN_DIR FOLDER`` writes it."""
    return pyrovae.save_model(load_run(env.run), env.tmp / "model")


def edit_model_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@case("export-existing-folder")
def _(env):
    (env.tmp / "model").mkdir()
    (env.tmp / "model" / "notes.txt").write_text("mine")
    outcome = env.cli("export", "{run}", "{tmp}/model")
    assert [p.name for p in (env.tmp / "model").iterdir()] == ["notes.txt"]
    return outcome


@case("export-overwrite-other-folder")
def _(env):
    (env.tmp / "model").mkdir()
    (env.tmp / "model" / "notes.txt").write_text("mine")
    outcome = env.cli("export", "{run}", "{tmp}/model", "--overwrite")
    assert [p.name for p in (env.tmp / "model").iterdir()] == ["notes.txt"]
    return outcome


@case("model-folder-missing-weights")
def _(env):
    (exported(env) / "model.safetensors").unlink()
    return env.cli("evaluate", "{tmp}/model", "--limit", "2", "--num-samples", "5", "--bounds", "1,5")


@case("model-folder-altered-weights")
def _(env):
    weights = exported(env) / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF  # in the last tensor's data, after the header
    weights.write_bytes(raw)
    return env.cli("sample", "{tmp}/model", "--out", "{tmp}/s.png")


@case("model-folder-truncated")
def _(env):
    weights = exported(env) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return api(lambda: pyrovae.load_model(env.tmp / "model"))


@case("model-folder-non-finite")
def _(env):
    from safetensors.torch import load_file, save_file

    folder = exported(env)
    tensors = load_file(folder / "model.safetensors")
    next(iter(tensors.values())).view(-1)[0] = math.nan
    save_file(tensors, folder / "model.safetensors")
    sha256 = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    edit_model_config(folder, sha256=sha256)
    return env.cli(*EVALUATE[:1], "{tmp}/model", *EVALUATE[2:])


@case("model-folder-unknown-class")
def _(env):
    edit_model_config(exported(env), **{"class": "pyrovae.models.vae:NoSuchVAE"})
    return api(lambda: pyrovae.load_model(env.tmp / "model"))


@case("model-folder-foreign-module")
def _(env):
    edit_model_config(exported(env), **{"class": "planted:Model"})
    marker = env.tmp / "imported"
    (env.tmp / "planted.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Model: ...\n")
    env.monkeypatch.syspath_prepend(str(env.tmp))
    outcome = api(lambda: pyrovae.load_model(env.tmp / "model"))
    assert not marker.exists() and "planted" not in sys.modules, "the folder's module was imported"
    return outcome


@case("model-folder-newer-format")
def _(env):
    edit_model_config(exported(env), format_version=2)
    return env.cli("sample", "{tmp}/model", "--out", "{tmp}/s.png")


@case("model-folder-config-not-json")
def _(env):
    (exported(env) / "config.json").write_text("{'class': 'VAE'}")
    return env.cli(*EVALUATE[:1], "{tmp}/model", *EVALUATE[2:])


@case("model-folder-other-torch")
def _(env):
    edit_model_config(exported(env), torch_version="1.0.0")
    return env.cli("sample", "{tmp}/model", "--out", "{tmp}/s.png", "--num", "4")


@case("env-bad-mplbackend")
def _(env):
    return env.process("sample", "{run}", "--out", "{tmp}/s.png", environ={"MPLBACKEND": "bogus"})


@case("env-read-only-home")
def _(env):
    argv = ("evaluate", "{run}", "--limit", "3", "--num-samples", "10", "--bounds", "1,10", "--no-progress")
    return env.process(*argv, environ={"HOME": "/proc/no-home", "XDG_CACHE_HOME": "", "MPLCONFIGDIR": ""})


def hide_mlflow(env) -> None:
    """Make the mlflow package look uninstalled."""
    find_spec = importlib.util.find_spec
    hidden = lambda name, *args: None if name == "mlflow" else find_spec(name, *args)  # noqa: E731
    env.monkeypatch.setattr(importlib.util, "find_spec", hidden)


@case("env-tracker-not-installed")
def _(env):
    hide_mlflow(env)
    return env.cli(*NEW, "--log", "mlflow")


@case("env-resume-tracker-not-installed")
def _(env):
    record = {
        "mlflow": {"log_dir": "logs", "name": "run", "tracking_uri": None, "run_id": "0", "per_step": False}
    }
    (env.run / "tracking.json").write_text(json.dumps(record))
    hide_mlflow(env)
    return env.cli(*RESUME, "--epochs", "3")


@case("env-read-only-home-train")
def _(env):
    home = {"HOME": "/proc/no-home", "XDG_CACHE_HOME": "", "MPLCONFIGDIR": ""}
    outcome = env.process(*TRAIN, "--test-samples", "5", "--run-dir", "{new}", environ=home)
    assert (env.new / "results.json").is_file()
    return outcome


def non_finite(state: dict) -> None:
    """A diverged model's parameters: NaN in the first weight of the saved and the best model."""
    for key in ("model", "best_model"):
        name = next(iter(state[key]))
        state[key][name] = torch.full_like(state[key][name], math.nan)


@case("checkpoint-non-finite")
def _(env):
    edit_checkpoint(env, non_finite)
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("checkpoint-non-finite-evaluate")
def _(env):
    edit_checkpoint(env, non_finite)
    return env.cli("evaluate", "{run}", "--limit", "3", "--num-samples", "10", "--bounds", "1,10", *FAST[:1])


@case("checkpoint-non-finite-resumed")
def _(env):
    edit_checkpoint(env, non_finite)
    return env.cli(*RESUME, "--epochs", "3")


@case("checkpoint-non-finite-api")
def _(env):
    edit_checkpoint(env, non_finite)
    return api(lambda: load_run(env.run))


@case("checkpoint-non-finite-compare")
def _(env):
    edit_checkpoint(env, non_finite)
    return env.cli(*COMPARE)


@case("data-cache-rewritten")
def _(env):
    from pyrovae.data.files import read_amat_cached

    bits = (torch.rand(6, 784, generator=torch.Generator().manual_seed(0)) > 0.5).int()
    source, cache = env.tmp / "binarized_mnist_test.amat", env.tmp / "cache"
    source.write_text("".join(" ".join(map(str, row.tolist())) + "\n" for row in bits))
    read_amat_cached(source, cache)
    (cached,) = cache.iterdir()
    with np.load(cached) as stored:
        packed, digest = stored["packed"][::-1], stored["sha256"]
    with open(cached, "wb") as f:
        np.savez(f, packed=packed, sha256=digest)
    same = np.array_equal(read_amat_cached(source, cache), bits.numpy())
    return Outcome(0, f"rows as in the source: {same}", "", from_cli=False)


@case("reproduce-report-label")
def _(env):
    spec = importlib.util.spec_from_file_location("reproduce", DOC.parents[1] / "examples" / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    run_dir = env.tmp / "runs" / "vae-vamp"
    fit(small_vae(), binary(), binary(16), epochs=1, batch_size=32, run_dir=run_dir, progress=False)
    figures = (
        "nll",
        "stderr",
        "elapsed",
        "ess_median",
        "khat_below_0_5",
        "khat_0_5_to_0_7",
        "khat_above_0_7",
    )
    summary = {"epochs": 1, "test_num_samples": 3, "test_num_data": 64, "eval_device": "cpu"}
    summary.update({f"test_{key}": 1.0 for key in figures})
    (run_dir / reproduce.SUMMARY).write_text(json.dumps(summary))
    table = reproduce.report_table(env.tmp / "runs", reproduce.run_states(env.tmp / "runs"))
    return Outcome(0, table.to_string(), "", from_cli=False)


@case("checkpoint-bad-configuration")
def _(env):
    edit_checkpoint(env, lambda state: state["config"].update(latent_dim="abc"))
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("checkpoint-is-directory")
def _(env):
    (env.run / "checkpoint.pt").unlink()
    (env.run / "checkpoint.pt").mkdir()
    return env.cli(*RESUME)


def edit_config_json(env: Env, **values) -> None:
    config = json.loads((env.run / "config.json").read_text())
    (env.run / "config.json").write_text(json.dumps({**config, **values}))


@case("config-json-other-activation")
def _(env):
    edit_config_json(env, activation="tanh")
    outcome = env.cli(*EVALUATE)
    assert (env.run / "evaluation-test.json").is_file()
    return outcome


@case("config-json-not-json")
def _(env):
    (env.run / "config.json").write_text("{not json")
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


@case("config-json-not-json-resumed")
def _(env):
    (env.run / "config.json").write_text("{not json")
    outcome = env.cli(*RESUME)
    assert json.loads((env.run / "config.json").read_text())["latent_dim"] == 4
    return outcome


@case("results-json-damaged")
def _(env):
    (env.run / "results.json").write_text("{not json")
    return env.cli("sample", "{run}", "--out", "{tmp}/s.png")


def config_file(env: Env, text: str) -> Outcome:
    """``train --config FILE`` with ``text`` in FILE."""
    (env.tmp / "config.json").write_text(text)
    return env.cli("train", "--config", "{tmp}/config.json", "--run-dir", "{new}", *FAST)


for id, values in {
    "config-file-latent-dim-word": {"latent_dim": "abc"},
    "config-file-hidden-null": {"hidden": None},
    "config-file-lr-string": {"lr": "0.1"},
    "config-file-download-string": {"download": "yes"},
    "config-file-unknown-key": {"colour": "red"},
    "config-file-unknown-activation": {"activation": "gelu2"},
    "config-file-several-bad-keys": {"latent_dim": "abc", "hidden": None, "activation": 3},
    "config-file-unknown-and-bad-keys": {"latent_dim": "abc", "hidden": None, "colour": "red"},
}.items():
    case(id)(lambda env, values=values: config_file(env, json.dumps(values)))
command_lines(
    {
        "config-file-missing": ["train", "--config", "{tmp}/missing.json", "--run-dir", "{new}", *FAST],
        "config-file-is-directory": ["train", "--config", "{tmp}", "--run-dir", "{new}", *FAST],
    }
)


@case("config-file-not-json")
def _(env):
    return config_file(env, "{'latent_dim': 4}")


@case("config-file-not-an-object")
def _(env):
    return config_file(env, "[4, 32]")


# 5. Output files


def existing(env: Env, *names: str) -> None:
    for name in names:
        (env.run / name).write_text("mine")


@case("sample-existing-output")
def _(env):
    return env.cli("sample", "{run}", "--num", "4")  # training wrote samples.png


@case("reconstruct-existing-out")
def _(env):
    (env.tmp / "r.png").write_text("mine")
    outcome = env.cli("reconstruct", "{run}", "--out", "{tmp}/r.png")
    assert (env.tmp / "r.png").read_text() == "mine"
    return outcome


@case("evaluate-existing-outputs")
def _(env):
    existing(env, "evaluation-test.json", "bounds-test.png")
    return env.cli(*EVALUATE)


@case("compare-existing-outputs")
def _(env):
    existing(env, "compare.csv", "compare.png")
    return env.cli(*COMPARE)


command_lines(
    {
        "sample-out-directory": ["sample", "{run}", "--out", "{tmp}", "--num", "4"],
        "reconstruct-out-directory": ["reconstruct", "{run}", "--out", "{tmp}", "--num", "4"],
    }
)


@case("sample-out-under-file")
def _(env):
    (env.tmp / "file").write_text("mine")
    return env.cli("sample", "{run}", "--out", "{tmp}/file/s.png", "--num", "4")


# 6. I/O faults (simulated: run as root, a read-only directory can still be written)


def read_only(env: Env) -> None:
    """Make every directory read-only as pyrovae.storage sees it: no file can be created."""
    for call in ("TemporaryFile", "mkstemp"):
        env.monkeypatch.setattr(f"pyrovae.storage.tempfile.{call}", fails_with(errno.EROFS))


def disk_full_at(env: Env, call: str) -> None:
    """Make ``call`` (``"tempfile.mkstemp"`` or ``"torch.save"``) fail in pyrovae.storage,
    as on a full disk."""
    env.monkeypatch.setattr(f"pyrovae.storage.{call}", fails_with(errno.ENOSPC))


def written(directory: Path) -> list[str]:
    """What a failed first commit left in ``directory``: anything but the files a run starts with."""
    return sorted(
        p.name for p in directory.iterdir() if p.name not in (".lock", "config.json", "manifest.json")
    )


@case("train-read-only")
def _(env):
    read_only(env)
    return env.cli(*NEW)


@case("train-disk-full-at-start")
def _(env):
    usage = shutil.disk_usage(env.tmp)._replace(free=0)
    env.monkeypatch.setattr("pyrovae.storage.shutil.disk_usage", lambda path: usage)
    return env.cli(*NEW)


@case("train-disk-full-at-commit")
def _(env):
    disk_full_at(env, "torch.save")
    outcome = env.cli(*NEW)
    assert written(env.new) == []
    return outcome


@case("train-write-fails-in-torch")
def _(env):
    def save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"the first bytes")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    env.monkeypatch.setattr("pyrovae.storage.torch.save", save)
    outcome = env.cli(*NEW)
    assert written(env.new) == []
    return outcome


@case("resume-disk-full-at-commit")
def _(env):
    before = (env.run / "checkpoint.pt").read_bytes()
    disk_full_at(env, "torch.save")
    outcome = env.cli(*RESUME, "--epochs", "3")
    assert (env.run / "checkpoint.pt").read_bytes() == before
    assert not list(env.run.glob(".*.tmp"))
    return outcome


@case("sample-disk-full")
def _(env):
    disk_full_at(env, "tempfile.mkstemp")
    outcome = env.cli("sample", "{run}", "--out", "{tmp}/s.png", "--num", "4")
    assert not (env.tmp / "s.png").exists()
    return outcome


@case("compare-disk-full")
def _(env):
    disk_full_at(env, "tempfile.mkstemp")
    outcome = env.cli(*COMPARE)
    assert not (env.run / "compare.csv").exists() and not (env.run / "compare.png").exists()
    return outcome


@case("evaluate-read-only")
def _(env):
    read_only(env)
    return env.cli(*EVALUATE)


# the catalogue, run


def contains(text: str, excerpt: str) -> bool:
    """Whether ``text`` holds ``excerpt``, whose parts separated by `` … `` appear in this order."""
    at = 0
    for part in excerpt.split(" … "):
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def params() -> list:
    """The entries as parameters, those of the known failures marked as expected to fail."""
    known = KNOWN_FAILURES.items()
    marks = {id: pytest.mark.xfail(reason=f"known failure: {now}", strict=True) for id, now in known}
    return [pytest.param(entry, id=entry.id, marks=marks.get(entry.id, ())) for entry in ENTRIES]


@pytest.mark.parametrize("entry", params())
def test_catalogue_entry(entry, cli_run, tmp_path, monkeypatch):
    status, out, err, from_cli = CASES[entry.id](Env(tmp_path, cli_run, monkeypatch))
    assert "Traceback" not in out + err, err
    assert status == entry.exit, err
    if status:
        assert contains(err, entry.excerpt), err
        assert not from_cli or re.search(r"^pyrovae \w+: error: ", err, flags=re.M), err
    else:
        assert contains(out + err, entry.excerpt), out + err


def test_the_catalogue_and_its_cases_match():
    ids = [entry.id for entry in ENTRIES]
    assert len(ids) >= 60
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    assert set(ids) == set(CASES), set(ids) ^ set(CASES)
    assert set(KNOWN_FAILURES) <= set(ids)
    assert all(entry.exit in (0, 1, 2) and entry.excerpt for entry in ENTRIES)
