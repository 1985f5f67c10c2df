"""What pyrovae wrote in a run directory, and the sets of files a command commits as one.

``manifest.json`` in a run directory records

- every file pyrovae writes there, recorded *before* it is written, so that ``overwrite`` removes those
  files and nothing else a user keeps in the directory;
- for each **output set** (the files one command writes together, such as ``evaluation-test.json``, ``.csv``,
  ``.nc`` and ``bounds-test.png``), the command, the checkpoint its results came from (which parameters,
  their epoch and the SHA-256 of their values) and its settings, so that :func:`~pyrovae.load_run` says when a
  set came from other parameters than the run's current ones.

An output set is committed as one, as a database commits a transaction with a write-ahead record:

1. each file is written to a temporary beside it (:func:`~pyrovae.storage.atomic_path` hands it to the
   set instead of moving it into place);
2. the manifest is rewritten, atomically, naming the set's temporaries and their files as *pending*: this
   is the commit;
3. each temporary is renamed onto its file, the files of the set's previous version that the new one
   lacks are removed, and the manifest is rewritten with the set recorded and nothing pending.

A process killed before step 2 leaves the previous set as it was, and temporaries; killed after it, the
set is committed but not yet in place. The next command that opens the directory (holding its lock,
:class:`~pyrovae.runs.lock.RunLock`) first finishes a pending set and removes the temporaries that belong to
none, and names both, so every command sees the previous complete set or the new complete set.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyrovae import storage
from pyrovae.errors import RunDirError

__all__ = ["MANIFEST", "Outputs", "output_set", "set_files", "stale_sets", "writing"]

MANIFEST = "manifest.json"
FORMAT = "pyrovae-manifest"
#: what a training run writes under fixed names: what ``overwrite`` removes from a run directory written by a
#: pyrovae that kept no manifest (nothing else there can be told from a user's files)
LEGACY = ("checkpoint.pt", "best.pt", "config.json", "history.csv", "results.json")


def _read(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        return {"format": FORMAT, "version": 1, "files": [], "sets": {}, "pending": None}
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError("no 'format' marker")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise RunDirError(
            f"{path} is damaged ({e}): it records which files of {directory} pyrovae wrote. Restore it from "
            "a copy, or move the run's files into a new directory and remove it"
        ) from None
    return manifest


def set_files(directory: str | os.PathLike, name: str) -> list[Path]:
    """The files of the output set ``name`` committed in the run directory ``directory`` (none if it has no
    such set)."""
    directory = Path(directory)
    files = _read(directory)["sets"].get(name, {}).get("files", [])
    return [directory / file for file in files]


def stale_sets(directory: str | os.PathLike, digests: dict[str, str]) -> list[str]:
    """The output sets of ``directory`` whose results came from other parameters than ``digests`` (the
    SHA-256 of the run's ``best`` and ``last`` parameters), each described in a sentence."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        return []
    manifest, stale = _read(directory), []
    if manifest["pending"]:
        pending = manifest["pending"]
        stale.append(
            f"the output set {pending['set']} of {directory} was committed by a command killed before it "
            "moved every file into place, so its files may be a mix of the old and the new set: any "
            f"pyrovae command on the run finishes it (or `{pending['record']['command']}` again)"
        )
    for name, record in sorted(manifest["sets"].items()):
        used = record.get("checkpoint")
        if used and used["sha256"] != digests.get(used["which"]):
            stale.append(
                f"{name} ({', '.join(record['files'])}) came from the {used['which']} parameters of epoch "
                f"{used['epoch']}, which the run no longer holds; run `{record['command']}` again to bring "
                "it up to date"
            )
    return stale


class Outputs:
    """The manifest of the run directory this process writes to (rank 0 of a distributed run), entered while
    holding the directory's lock: every :func:`~pyrovae.storage.atomic_path` within the context is recorded
    in it, or staged into the open :meth:`output_set`. Entering it finishes what a killed command left."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory)
        self.manifest = _read(self.path)
        self._staged: list[tuple[Path, Path]] | None = None
        self._handled = contextlib.ExitStack()

    def __enter__(self) -> Outputs:
        notes = self.recover()
        if notes:
            warnings.warn(" ".join(notes), stacklevel=2)
        self._handled.enter_context(storage.writes_handled_by(self))
        return self

    def __exit__(self, *exc) -> None:
        self._handled.close()

    # -- the manifest ----------------------------------------------------------------------------

    def _name(self, path: Path) -> str:
        """``path`` as the manifest names it: relative to the run directory when inside it."""
        path = Path(os.path.realpath(path))
        base = Path(os.path.realpath(self.path))
        return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

    def _file(self, name: str) -> Path:
        return self.path / name  # an absolute name stays absolute

    def _save(self) -> None:
        with storage.writes_handled_by(None):
            storage.write_json(self.path / MANIFEST, self.manifest)

    def stage(self, tmp: Path, path: Path) -> bool:
        """Called by :func:`~pyrovae.storage.atomic_path` with a written temporary: staged into the open
        output set (``True``), or recorded as pyrovae's before it is moved into place (``False``)."""
        if self._staged is not None:
            self._staged.append((tmp, path))
            return True
        name, sets = self._name(path), self.manifest["sets"]
        owned = Path(name).is_absolute() or name in self.manifest["files"]
        if not owned or any(name in record["files"] for record in sets.values()):
            if not owned:
                self.manifest["files"] = sorted({*self.manifest["files"], name})
            self._release({name})  # rewritten by another than its set's command: no longer that set's
            self._save()
        return False

    def _release(self, names: set[str]) -> None:
        """Take ``names`` out of every recorded set, and drop the sets left empty."""
        for record in self.manifest["sets"].values():
            record["files"] = [f for f in record["files"] if f not in names]
        self.manifest["sets"] = {k: v for k, v in self.manifest["sets"].items() if v["files"]}

    def recover(self) -> list[str]:
        """Finish the output set a killed command committed but did not put in place, and remove the
        temporaries of a command killed before its commit; say what was done."""
        notes = []
        pending = self.manifest.get("pending")
        if pending:
            self._apply(pending)
            record = pending["record"]
            notes.append(
                f"finished committing the output set {pending['set']} ({', '.join(record['files'])}) in "
                f"{self.path}, which a killed `{record['command']}` had left half moved."
            )
        stray = storage.remove_temporaries(self.path)
        if stray:
            notes.append(
                f"removed {len(stray)} temporary file(s) a killed command left in {self.path} "
                f"({', '.join(p.name for p in stray)}); its outputs were never committed."
            )
        return notes

    def _apply(self, pending: dict) -> None:
        for tmp, final in pending["moves"]:
            if self._file(tmp).exists():
                storage.pause_point(f"replace {Path(final).name}")
                os.replace(self._file(tmp), self._file(final))
        for name in pending["drop"]:
            self._file(name).unlink(missing_ok=True)
        record = pending["record"]
        self._release(set(record["files"]))  # a file belongs to one set: the latest to write it
        self.manifest["sets"][pending["set"]] = record
        inside = {f for f in record["files"] if not Path(f).is_absolute()}
        self.manifest["files"] = sorted({*self.manifest["files"], *inside} - set(pending["drop"]))
        self.manifest["pending"] = None
        self._save()

    @contextlib.contextmanager
    def output_set(self, name: str, command: str, checkpoint: dict | None, settings: dict) -> Iterator[None]:
        """Commit every file written within the context as the output set ``name`` (replacing its previous
        version), with the ``command`` that writes it (a command line, such as ``pyrovae evaluate RUN_DIR``),
        the ``checkpoint`` and the ``settings`` it came from; on an error, nothing."""
        if self._staged is not None:
            raise RuntimeError("output sets do not nest")
        self._staged = staged = []
        try:
            yield
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        finally:
            self._staged = None
        files = [self._name(final) for _, final in staged]
        previous = self.manifest["sets"].get(name, {}).get("files", [])
        record = {
            "command": command,
            "files": files,
            "checkpoint": checkpoint,
            "settings": settings,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        moves = [[self._name(tmp), self._name(final)] for tmp, final in staged]
        self.manifest["pending"] = {
            "set": name,
            "moves": moves,
            "drop": [f for f in previous if f not in files and not Path(f).is_absolute()],  # never elsewhere
            "record": record,
        }
        storage.pause_point("commit outputs")
        try:
            self._save()  # the commit
        except BaseException:
            self.manifest["pending"] = None
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        self._apply(self.manifest["pending"])

    def remove_all(self) -> list[str]:
        """Remove every file pyrovae recorded here (and, in a directory of a pyrovae that kept no manifest,
        the :data:`LEGACY` files); return the files of pyrovae's kind left in place as perhaps a user's."""
        for name in self.manifest["files"]:
            self._file(name).unlink(missing_ok=True)
        left = []
        if any((self.path / name).is_file() for name in LEGACY[:3]):  # still there: recorded by no manifest
            for name in LEGACY:  # a run no manifest recorded: an older pyrovae's
                (self.path / name).unlink(missing_ok=True)
            patterns = ("*.png", "evaluation-*", "scores-*", "detect-*", "latents-*", "compare.*")
            left = sorted({p.name for pattern in patterns for p in self.path.glob(pattern)})
        self.manifest.update(files=[], sets={}, pending=None)
        self._save()
        return left


@contextlib.contextmanager
def writing(directory: str | os.PathLike) -> Iterator[Outputs]:
    """Hold the lock of the run directory ``directory`` and record what is written there, as every pyrovae
    command does: for outputs of one's own, written from Python within :func:`output_set`."""
    from pyrovae.runs.lock import RunLock

    with RunLock(directory), Outputs(directory) as outputs:
        yield outputs


def output_set(name: str, command: str, checkpoint: dict | None = None, settings: Any = None):
    """The context of :meth:`Outputs.output_set` in the run directory this process writes to, or a context
    that does nothing where there is none (a run directory that is only read)."""
    handler = storage.current_handler()
    if handler is None:
        return contextlib.nullcontext()
    if settings is not None and not isinstance(settings, dict):  # an argparse.Namespace
        settings = {k: v for k, v in vars(settings).items() if isinstance(v, str | int | float | bool | list)}
    return handler.output_set(name, command, checkpoint, settings or {})
