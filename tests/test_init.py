"""The public API: everything the README and the docs call is importable from ``pyrovae``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyrovae

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", pyrovae.__all__)
def test_all_names_exist(name):
    assert hasattr(pyrovae, name)


def test_documented_calls_exist():
    """Every ``pyrovae.NAME(`` written in the README or docs/ is part of the public API."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    called = {m for path in texts for m in re.findall(r"\bpyrovae\.(\w+)\(", path.read_text())}
    missing = sorted(name for name in called if name not in pyrovae.__all__)
    assert not missing, f"documented but not exported from pyrovae: {missing}"


def test_import_needs_no_posix_only_module():
    # Windows has no fcntl: pyrovae imports without it (the run lock is filelock's)
    code = (
        "import builtins\n"
        "real = builtins.__import__\n"
        "def guarded(name, *args, **kwargs):\n"
        "    if name == 'fcntl':\n"
        "        raise ImportError('No module named fcntl')\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = guarded\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "import pyrovae, pyrovae.cli\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
