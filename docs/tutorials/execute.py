"""Execute the tutorials at their full size and store them, outputs included, beside their sources.

The tutorials' sources are the MyST-Markdown notebooks ``docs/tutorials/NN-*.md``: plain text that diffs
well, which Jupyter opens with jupytext. This runs each in a Jupyter kernel at its full size (without
``CI`` in the environment) and writes ``docs/tutorials/NN-*.ipynb``, its outputs included, so that a reader
sees the figures and tables without running anything: in the repository, and on the site, which renders
these stored notebooks (``docs/conf.py`` leaves the sources out of it and executes nothing).
``tests/test_tutorials.py`` fails when a source's code is not its stored notebook's: run this again after
editing a tutorial.

Executed in a kernel, ``tqdm.auto``'s progress bars are notebook widgets, which a page can show only with
the widget library's JavaScript, fetched from a CDN. Each bar is stored instead as the text of its final
state (``epoch 10/10: 100%|██████████| 120/120 [00:03<00:00, 37.9step/s]``), which needs no network.

Run from the repository root, with the ``dev`` extra installed::

    python docs/tutorials/execute.py          # every tutorial (about 45 minutes on two CPU cores)
    python docs/tutorials/execute.py 03 05    # those whose names start so
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: seconds one cell may run at full size
CELL_TIMEOUT = 3600
#: characters of a stored progress bar's bar
BAR_WIDTH = 10


def sources(prefixes: list[str]) -> list[Path]:
    """The tutorials' sources whose names start with one of ``prefixes`` (all of them if none)."""
    found = sorted(TUTORIALS.glob("[0-9]*.md"))
    return [p for p in found if not prefixes or any(p.name.startswith(x) for x in prefixes)]


def code_cells(nb) -> list[str]:
    """The sources of the code cells of ``nb``: what the stored notebook must share with its source."""
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def execute(source: Path, out: Path = TUTORIALS, smoke: bool = False) -> Path:
    """Run ``source`` in a kernel, at full size (at its smoke size if ``smoke``), and write its notebook into
    ``out``, progress bars as text."""
    nb = jupytext.read(source)
    environment = {k: v for k, v in os.environ.items() if k != "CI"}  # the full size, not the smoke size
    if smoke:
        environment["CI"] = "true"
    environment.pop("MPLBACKEND", None)  # the kernel's inline backend shows the figures
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(TUTORIALS)}},
        store_widget_state=True,
    )
    previous = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(previous)
    states = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [_as_text(output, states) for output in cell.outputs]
    target = out / source.with_suffix(".ipynb").name
    nbformat.write(nb, target)
    return target


def _as_text(output, states: dict):
    """A progress bar's widget output as a text output of its final state; any other output as it is."""
    view = output.get("data", {}).get(WIDGET_VIEW)
    if view is None:
        return output
    line = _bar_text(view["model_id"], states)
    return nbformat.v4.new_output("stream", name="stderr", text=line + "\n")


def _bar_text(model_id: str, states: dict) -> str:
    """The text of the tqdm bar whose container widget is ``model_id``: left label, bar, right label."""
    children = [states[child.removeprefix("IPY_MODEL_")]["state"] for child in _children(model_id, states)]
    texts = [
        html.unescape(re.sub(r"<[^>]*>", "", c.get("value", ""))).replace(
            "\u2007", " "
        )  # tqdm's figure spaces
        for c in children
        if "max" not in c
    ]
    progress = next((c for c in children if "max" in c), None)
    bar = ""
    if progress is not None and progress.get("max"):
        filled = round(BAR_WIDTH * min(1.0, progress.get("value", 0) / progress["max"]))
        bar = "|" + "█" * filled + " " * (BAR_WIDTH - filled) + "|"
    left, right = (texts + ["", ""])[:2]
    return f"{left.strip()}{bar}{right.rstrip()}"


def _children(model_id: str, states: dict) -> list[str]:
    state = states.get(model_id, {}).get("state", {})
    return list(state.get("children", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="the tutorials to run, by the start of their names")
    parser.add_argument("--smoke", action="store_true", help="at the smoke size, to check this script")
    parser.add_argument("--out", type=Path, default=TUTORIALS, help="where to write the notebooks")
    args = parser.parse_args()
    chosen = sources(args.names)
    if not chosen:
        sys.exit(f"no tutorial in {TUTORIALS} starts with {' or '.join(args.names)}")
    for source in chosen:
        start = time.perf_counter()
        target = execute(source, args.out, args.smoke)
        print(f"{target}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
