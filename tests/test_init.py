"""The public API: everything the README and the docs call is importable from ``pyrovae``."""

import re
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
