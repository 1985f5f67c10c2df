"""A run directory: what it holds, and how one process opens it for writing.

A run directory holds

- ``checkpoint.pt``: the run's whole state after its last completed epoch, committed by one
  atomic rename (:func:`~pyrovae.storage.save_checkpoint`): the parameters, the optimizer's state, the
  history, the best validation bound with its epoch and parameters, the early-stopping counter,
  the options of :func:`~pyrovae.fit` and the run's configuration, with a checksum. A process killed
  at any instant leaves either the previous epoch's state or the new one, never a mixture, and
  resuming from it gives the bit-identical result of an uninterrupted run (every epoch's random
  draws are seeded from the run's seed and the epoch alone);
- ``config.json``: the run's configuration, readable (a copy of the checkpoint's);
- ``history.csv``, ``results.json`` and figures: exports of the above, rewritten after each commit
  (a kill between the commit and an export leaves an export one epoch behind, rewritten on resume);
- ``manifest.json``: the files pyrovae wrote there, and the output sets of the commands run on it
  (:mod:`pyrovae.runs.outputs`);
- ``.lock``: the advisory lock of the process writing to it (:class:`~pyrovae.runs.lock.RunLock`),
  which :class:`RunDirectory` takes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from pyrovae import distributed, storage
from pyrovae.errors import CheckpointError, ConfigError, RunDirError
from pyrovae.runs.lock import RunLock
from pyrovae.runs.outputs import MANIFEST, Outputs

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
CONFIG = "config.json"
RESULTS = "results.json"


def checkpoint_bytes(module: nn.Module) -> int:
    """About what a run of ``module`` needs on disk: its checkpoint (the parameters, the best ones
    and an optimizer's two moments) and the temporary copy of the next one, with a margin."""
    params = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return 2 * 4 * params + 2**20


#: what a checkpoint of :func:`~pyrovae.fit` must hold to be resumed
STATE_KEYS = ("epoch", "model", "optimizer", "history", "best", "best_epoch", "bad_epochs")


def read_state(path: Path, keys=STATE_KEYS) -> dict:
    """The checkpoint at ``path`` (see :func:`~pyrovae.storage.load_checkpoint`), refused with a
    :class:`~pyrovae.errors.CheckpointError` naming what it lacks of ``keys``, or the parameters that
    are not finite."""
    state = storage.load_checkpoint(path)
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(repr(k) for k in missing)}: it is not a complete checkpoint of a run. "
            "Restore it from a copy, or start the run again with --overwrite (overwrite=True)."
        )
    for key in ("model", "best_model"):
        weights = state.get(key) or {}
        bad = [n for n, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise CheckpointError(
                f"{path} holds NaN or infinite values in its parameters ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}): a model saved from diverged training cannot be "
                "evaluated or resumed. Restore it from a copy, or train again (--overwrite, overwrite=True)."
            )
    return state


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds anything but a lock, a manifest and temporaries."""
    prefix, suffix = storage.TEMPORARY
    return path.is_dir() and any(
        p.name not in (RunLock.NAME, MANIFEST) and not (p.name.startswith(prefix) and p.name.endswith(suffix))
        for p in path.iterdir()
    )


class RunDirectory:
    """A run directory to be written by this process (rank 0 of a distributed run).

    Constructing it checks everything and writes nothing: ``resume`` and ``overwrite`` together, a path that
    is or lies under a file, a directory this process cannot write to or without ``need_bytes`` free, and a
    directory that holds another run (unless ``resume`` or ``overwrite``). Entering it creates the directory,
    takes its lock, opens its :class:`~pyrovae.runs.outputs.Outputs` (which finishes or removes what a killed
    command left, and records each file written) and, with ``overwrite``, removes the files pyrovae wrote
    there before, and nothing else.

    With ``resume``, a directory without a checkpoint (a run killed before its first epoch ended,
    or a new directory) starts from the first epoch.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool, overwrite: bool, need_bytes: int = 0):
        self.path = Path(path)
        if resume and overwrite:
            raise ConfigError("choose one of resume and overwrite (--resume, --overwrite), not both")
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"the run directory {self.path} exists and is a file; choose another path")
        storage.check_writable(self.path, need_bytes)
        if self.checkpoint.exists() and not self.checkpoint.is_file():
            raise RunDirError(f"{self.checkpoint} is not a file; move it, or choose another run directory")
        if holds_run(self.path) and not (resume or overwrite):
            if (self.path / CONFIG).is_file() and not (self.path / CHECKPOINT).is_file():
                raise RunDirError(
                    f"the run in {self.path} stopped before its first epoch was saved; pass resume=True "
                    "(--resume) to start it again in place with its config.json, or overwrite=True "
                    "(--overwrite) to start another run there"
                )
            raise RunDirError(
                f"the run directory {self.path} is not empty; pass resume=True (--resume) to continue its "
                "run, overwrite=True (--overwrite) to start afresh there, or choose another directory"
            )
        self.resume, self.overwrite = resume, overwrite
        self._lock: RunLock | None = None
        self._outputs: Outputs | None = None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def __enter__(self) -> RunDirectory:
        try:
            if distributed.is_main():
                self.path.mkdir(parents=True, exist_ok=True)
                self._lock = RunLock(self.path).__enter__()
                self._outputs = Outputs(self.path).__enter__()
                left = self._outputs.remove_all() if self.overwrite else []
                if left:
                    warnings.warn(
                        f"left in {self.path}: {', '.join(left)}, which an older pyrovae may have written "
                        "but did not record (it kept no manifest); remove them if they are not yours",
                        stacklevel=2,
                    )
            distributed.barrier()  # rank 0 has prepared the directory
        except BaseException:
            self.__exit__(None, None, None)  # the lock and the record of writes, released at once
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._outputs is not None:
            self._outputs.__exit__(*exc)
            self._outputs = None
        if self._lock is not None:
            self._lock.__exit__(*exc)
            self._lock = None

    def state(self) -> dict | None:
        """The committed state when resuming and there is one, else ``None``."""
        if self.resume and self.checkpoint.is_file():
            return read_state(self.checkpoint)
        return None

    def commit(self, state: dict) -> None:
        """Make ``state`` the run's state, atomically (rank 0 writes)."""
        if distributed.is_main():
            storage.save_checkpoint(self.checkpoint, state)
