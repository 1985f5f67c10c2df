"""Atomic file writes and checkpoints that hold tensors only.

Nothing a user wrote is left half-written: every file is written to a temporary file in the
same directory and moved into place with :func:`os.replace`, which is atomic on POSIX.
Checkpoints are loaded with ``torch.load(..., weights_only=True)``, which refuses pickled
objects, so a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything but plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first (pyrovae train) or check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it carries a pickled Python object, which could run code when "
            "loaded (or it is not a checkpoint at all). pyrovae checkpoints hold tensors and plain data "
            "only; re-create the checkpoint with pyrovae, or load it yourself only if you trust its "
            f"source. ({str(e).splitlines()[0]})"
        ) from None
    except Exception as e:  # a damaged file raises RuntimeError, EOFError, KeyError, ...
        raise CheckpointError(
            f"cannot read checkpoint {path}: {e}. The file is damaged or not a checkpoint; "
            "delete it and resume from an earlier one, or train again."
        ) from None
    if not isinstance(state, dict) or state.get("format") != "pyrovae-checkpoint":
        raise CheckpointError(f"{path} is not a pyrovae checkpoint (no 'format' marker)")
    return state
