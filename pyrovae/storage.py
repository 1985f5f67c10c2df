"""Atomic file writes and checksummed checkpoints that hold tensors only.

Nothing a user wrote is left half-written: every file is written to a temporary file in the same directory and
moved into place with :func:`os.replace`, which is atomic on POSIX; a temporary left by a killed process is
removed by :func:`remove_temporaries` when its directory is next opened. A failed write (a full disk, say)
raises :class:`~pyrovae.errors.StorageError` and leaves the file it would have replaced as it was.

Checkpoints are loaded with ``torch.load(..., weights_only=True)``, which refuses pickled
objects, so a checkpoint from an untrusted source cannot run code; each carries the SHA-256 of its
contents (:func:`digest`), verified on load.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import CheckpointError, RunDirError, StorageError

#: the environment variable naming a :func:`pause_point` for tests, and the file it then creates
PAUSE_AT, PAUSE_FILE = "PYROVAE_PAUSE_AT", "PYROVAE_PAUSE_FILE"
TEMPORARY = (".", ".tmp")  # prefix and suffix of the temporaries of atomic_path


_passes: dict[str, int] = {}

#: the handler told of every write (:class:`pyrovae.runs.outputs.Outputs`, the run directory this process
#: writes to): ``handler.stage(tmp, path)`` returns ``True`` where it moves the temporary into place itself
_HANDLER: ContextVar = ContextVar("pyrovae_write_handler", default=None)


def current_handler():
    """The handler of :func:`writes_handled_by` in force, or ``None``."""
    return _HANDLER.get()


@contextlib.contextmanager
def writes_handled_by(handler) -> Iterator[None]:
    """Within this context, :func:`atomic_path` hands each written temporary to ``handler`` (or to nobody,
    for ``None``) before moving it into place."""
    token = _HANDLER.set(handler)
    try:
        yield
    finally:
        _HANDLER.reset(token)


def pause_point(name: str) -> None:
    """A test-only hook: if ``$PYROVAE_PAUSE_AT`` is ``name`` (or ``name#N``: the ``N``-th time this point is
    reached), create ``$PYROVAE_PAUSE_FILE`` and wait forever (to be killed there). Does nothing otherwise."""
    wanted = os.environ.get(PAUSE_AT)
    if wanted is None or not wanted.startswith(name):
        return
    _passes[name] = _passes.get(name, 0) + 1
    if wanted not in (name, f"{name}#{_passes[name]}"):
        return
    Path(os.environ[PAUSE_FILE]).write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporaries :func:`atomic_path` left in ``directory`` when a process was killed
    mid-write; returns them."""
    prefix, suffix = TEMPORARY
    stray = [p for p in Path(directory).glob(f"{prefix}*{suffix}") if p.is_file()]
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def umasked(mode: int) -> int:
    """``mode`` less the process's umask: the mode ``open()`` or ``mkdir()`` gives a new file or directory
    (the umask is read by setting it, and set back at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` (or hand it to the
    handler of :func:`writes_handled_by`), else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = TEMPORARY
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{path.name}.", suffix=suffix)
    except OSError as e:
        raise StorageError(_cannot_write(path, e)) from None
    os.close(fd)
    os.chmod(tmp, umasked(0o666))  # mkstemp makes 0600; give the file the mode open() would
    try:
        try:
            yield Path(tmp)
        except OSError as e:
            raise StorageError(_cannot_write(path, e)) from None
        except RuntimeError as e:  # torch.save reports a failed write (a full disk) as a RuntimeError
            if "write" not in str(e) and "enforce fail" not in str(e):
                raise
            raise StorageError(_cannot_write(path, e)) from None
        handler = _HANDLER.get()
        if handler is not None and handler.stage(Path(tmp), path):
            tmp = None  # the handler's now: moved into place with the rest of its output set
            return
        pause_point(f"replace {path.name}")
        os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _cannot_write(path: Path, error: Exception) -> str:
    reason = os.strerror(error.errno) if isinstance(error, OSError) and error.errno else str(error)
    if isinstance(error, RuntimeError) or getattr(error, "errno", None) == errno.ENOSPC:
        reason = f"{reason.splitlines()[0]} (is the disk full?)"
    kept = "; the file that was there is unchanged" if path.exists() else ""
    return f"cannot write {path}: {reason}{kept}. Free some space or choose another directory."


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_netcdf(path: str | os.PathLike, dataset) -> None:
    """Write the :class:`xarray.Dataset` ``dataset`` as a netCDF-4 file (h5netcdf engine), atomically. The
    file is made in memory first: the HDF5 library, given a disk that fills up under it, can crash the
    process when the file is closed, where Python's own write reports the full disk."""
    data = dataset.to_netcdf(engine="h5netcdf")
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(data))


def digest(state: Any) -> str:
    """The SHA-256 of a checkpoint's contents (tensors, numbers, strings, lists and dicts), in a
    canonical order: equal for equal contents, whatever the file's byte layout."""
    h = hashlib.sha256()

    def feed(obj: Any) -> None:
        if torch.is_tensor(obj):
            t = obj.detach().cpu().contiguous()
            h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            h.update(b"dict")
            for key in sorted(obj, key=repr):
                feed(key)
                feed(obj[key])
        elif isinstance(obj, list | tuple):
            h.update(f"list{len(obj)}".encode())
            for item in obj:
                feed(item)
        elif isinstance(obj, float) and math.isnan(obj):
            h.update(b"nan")
        else:
            h.update(f"{type(obj).__name__}:{obj!r}".encode())

    feed(state)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) atomically, with its
    :func:`digest` under ``"sha256"``."""
    state = {**state, "sha256": digest(state)}
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
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({reason}): the file is damaged or not a checkpoint. "
            "Restore it from a copy, or start the run again (pyrovae train --overwrite)."
        ) from None
    if not isinstance(state, dict) or state.get("format") != "pyrovae-checkpoint":
        raise CheckpointError(f"{path} is not a pyrovae checkpoint (no 'format' marker)")
    stored = state.pop("sha256", None)
    if stored is None and state.get("version", 1) >= 2:
        raise CheckpointError(f"{path} carries no checksum; it was not written by pyrovae, or was altered")
    if stored is not None and stored != digest(state):
        raise CheckpointError(
            f"{path} does not match its checksum: its contents were altered or damaged after it was "
            "written. Restore it from a copy, or train again."
        )
    return state


def check_writable(directory: str | os.PathLike, need_bytes: int = 0) -> None:
    """Raise :class:`~pyrovae.errors.RunDirError` unless files can be created in ``directory`` (or
    in the directory it would be created under) and ``need_bytes`` are free there."""
    directory = Path(directory)
    existing = next(path for path in (directory, *directory.parents) if path.exists())
    if not existing.is_dir():
        where = "is a file" if existing == directory else f"lies under {existing}, a file"
        raise RunDirError(f"{directory} {where}, not a directory; choose another directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise RunDirError(
            f"cannot write to {existing}: {os.strerror(e.errno) if e.errno else e}; choose a directory "
            "you can write to"
        ) from None
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise RunDirError(
            f"{existing} has {free / 2**20:.1f} MiB free, and this run needs about "
            f"{need_bytes / 2**20:.1f} MiB for its checkpoints; free some space or choose another directory"
        )
