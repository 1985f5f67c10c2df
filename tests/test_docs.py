"""The worked example of docs/extending.md runs: its Python blocks are executed in order."""

from __future__ import annotations

import re
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(path: Path) -> list[str]:
    """The fenced ```python blocks of a markdown file."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def test_extending_example_runs():
    blocks = python_blocks(DOCS / "extending.md")
    assert len(blocks) >= 4
    torch.set_num_threads(2)
    namespace: dict = {"__name__": "extending"}
    for block in blocks:
        exec(compile(block, str(DOCS / "extending.md"), "exec"), namespace)
    assert namespace["ll"].log_px.shape == (50,)
    assert torch.isfinite(namespace["ll"].log_px).all()
