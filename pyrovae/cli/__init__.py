"""The ``pyrovae`` command line: ``train``, ``sample``, ``reconstruct``, ``evaluate``, ``compare``, ``score``,
``detect``, ``latents`` and ``export``, one module per command (its parser, ``add_parser``, and its work,
``run``) or pair of commands (:mod:`~pyrovae.cli.pictures`, :mod:`~pyrovae.cli.scoring`), the flags they share
defined once in :mod:`pyrovae.cli.flags`.

Usage errors (unknown names, bad options, missing data, a run directory or an output file that
would be overwritten) print one message naming the problem and its fix and exit with status 2; a
run that fails (a NaN loss) exits with status 1. No traceback is shown for either.

Every command that takes a run directory takes a model folder of ``export`` too
(:mod:`pyrovae.runs.model_folder`); it writes its files into ``FOLDER-outputs`` beside the folder, which it
leaves as it is (:func:`~pyrovae.cli.flags.output_dir`).

``sample``, ``reconstruct``, ``evaluate`` and ``compare`` never replace an existing file unless
given ``--overwrite``, whether it is their default file in the run directory or an ``--out``; every
output path is checked before anything is computed. ``python -m pyrovae`` runs the same command line.

Every command runs under ``torchrun --nproc_per_node N`` too (see :mod:`pyrovae.distributed`): ``train``
trains data-parallel and ``evaluate`` shards the data points; rank 0 alone prints and writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path

from pyrovae import __version__, devices
from pyrovae.cli import compare, evaluate, export, latents, pictures, scoring, train
from pyrovae.cli.flags import HelpFormatter
from pyrovae.errors import PyroVAEError, RunDirError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyrovae",
        description="Variational autoencoders the Pyro way: train, sample, evaluate.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version and exit"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (train, pictures, evaluate, compare, scoring, latents, export):
        command.add_parser(sub)
    return p


#: each command's function, ``run(args) -> exit status``
COMMANDS = {
    "train": train.run,
    "sample": pictures.sample,
    "reconstruct": pictures.reconstruct,
    "evaluate": evaluate.run,
    "compare": compare.run,
    "score": scoring.score,
    "detect": scoring.detect,
    "latents": latents.run,
    "export": export.run,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught, _rank_zero_stdout(args):
            warnings.simplefilter("default")
            try:
                with devices.using_threads(args.threads):
                    return COMMANDS[args.command](args)
            finally:
                for w in caught:
                    print(f"pyrovae {args.command}: warning: {w.message}", file=sys.stderr)
    except PyroVAEError as e:
        print(f"pyrovae {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # an I/O failure nothing above foresaw: one line, never a traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"pyrovae {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pyrovae {args.command}: interrupted{_after_interrupt(args)}", file=sys.stderr)
        return 130


def _after_interrupt(args: argparse.Namespace) -> str:
    """What an interrupted ``train`` left, and how to continue it."""
    from pyrovae.runs.directory import CHECKPOINT

    if args.command != "train" or not args.run_dir:
        return ""
    run_dir = Path(args.run_dir)
    if (run_dir / CHECKPOINT).is_file():
        return (
            f"; {run_dir / CHECKPOINT} holds the last completed epoch: continue with "
            f"pyrovae train --run-dir {run_dir} --resume"
        )
    return f"; no epoch was completed: start again in place with pyrovae train --run-dir {run_dir} --resume"


@contextlib.contextmanager
def _rank_zero_stdout(args: argparse.Namespace):
    """Start the process group under torchrun; only rank 0 prints to stdout (errors go to stderr)."""
    from pyrovae import distributed

    distributed.init(getattr(args, "backend", None))
    if distributed.is_main():
        with _run_lock(args):
            yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


@contextlib.contextmanager
def _run_lock(args: argparse.Namespace):
    """The run directory's lock and its record of outputs (:class:`~pyrovae.runs.outputs.Outputs`), held by
    every command but ``train`` (whose run directory takes them itself) while it works, so that a second
    writer is refused at once rather than mixing its outputs with this one's, and what a killed command
    left is cleaned first. A run directory where no lock file can be created (read-only) is only read."""
    from pyrovae.cli.flags import output_dir
    from pyrovae.runs.lock import RunLock
    from pyrovae.runs.outputs import Outputs

    run_dir = output_dir(args) if args.command != "train" else None
    if run_dir is not None and run_dir != Path(args.run_dir) and Path(args.run_dir).is_dir():
        run_dir.mkdir(exist_ok=True)  # a model folder's outputs, locked and recorded from the first command
    if run_dir is None or not run_dir.is_dir():
        yield
        return
    lock = RunLock(run_dir)
    try:
        lock.__enter__()
    except OSError as e:
        if os.access(run_dir, os.W_OK):  # a lock that cannot be taken where files could be written
            raise RunDirError(
                f"cannot take the lock of {run_dir} ({e.strerror or e}); if no pyrovae process works on the "
                f"run, remove {lock.path}"
            ) from None
        yield  # a read-only directory: only read, as nobody can write there either
        return
    try:
        with Outputs(run_dir):
            yield
    finally:
        lock.__exit__(None, None, None)
