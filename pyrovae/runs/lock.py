"""The lock of a run directory: one writer at a time, on every operating system."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import filelock

from pyrovae.errors import RunDirError

__all__ = ["RunLock"]


class RunLock:
    """An exclusive advisory lock on a run directory (:class:`filelock.FileLock`: ``flock`` on
    POSIX, ``LockFileEx`` on Windows), held while a process writes to it: a second writer fails at
    once with :class:`~pyrovae.errors.RunDirError`, naming the holder's process id. The operating
    system releases it when the process ends, however it ends."""

    NAME = ".lock"

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / self.NAME
        self._lock = filelock.FileLock(self.path, timeout=0)

    def __enter__(self) -> RunLock:
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = self.path.read_text().strip() if self.path.is_file() else ""
            raise RunDirError(
                f"another process (pid {holder or 'unknown'}) is writing to {self.path.parent}; wait for "
                "it to finish, or choose another run directory"
            ) from None
        with contextlib.suppress(OSError):  # a lock file that only its handle may write (Windows): no holder
            self.path.write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
