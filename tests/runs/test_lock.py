"""The run directory's lock: one writer at a time, the holder named, released however it ends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyrovae.errors import RunDirError
from pyrovae.runs.lock import RunLock


def test_the_run_lock_admits_one_holder(tmp_path):
    with RunLock(tmp_path):
        assert (tmp_path / RunLock.NAME).read_text() == str(os.getpid())
        with pytest.raises(RunDirError, match=f"another process \\(pid {os.getpid()}\\) is writing"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):
        pass


def test_a_lock_held_by_another_process_is_refused_and_freed_when_that_process_is_killed(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pyrovae.runs.lock import RunLock; lock = RunLock({str(tmp_path)!r}).__enter__()\n"
            "print(flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder.stdout.readline()  # the lock is held
        with pytest.raises(RunDirError, match=f"another process \\(pid {holder.pid}\\) is writing"):
            RunLock(tmp_path).__enter__()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the operating system released it
        pass
