"""Every tutorial notebook (``docs/tutorials/NN-*.md``, MyST Markdown) runs top to bottom at smoke size.

Each is read with jupytext and executed by nbclient in a Jupyter kernel, the way a researcher's
notebook runs, with ``CI`` set in the kernel's environment so that the notebook's first cell picks
its smoke size (``smoke_test = "CI" in os.environ``, Pyro's convention). A cell that raises fails
the test with the cell and its traceback. Then the saved outputs are read back to check what the
reader of the site sees:

- a figure shown inline (an ``image/png`` output): pyrovae's figures, made without pyplot, render
  themselves as PNG (:class:`pyrovae.plots.Figure`);
- a result rendered as a table (a ``text/html`` output holding a ``<table``): ``_repr_html_`` of
  pyrovae's results, or a pandas DataFrame;
- a notebook progress bar (an ipywidgets output, ``application/vnd.jupyter.widget-view+json``):
  pyrovae's bars are ``tqdm.auto``'s, which are widgets when ipywidgets is installed, and plain text
  with a ``TqdmWarning`` otherwise.

Every tutorial must show all three, so each is written to: one with nothing to show as a table or
figure would be a page of code without results.

What the site shows is each tutorial's notebook executed at full size, stored beside its source
(``docs/tutorials/execute.py``); a test checks that it holds its source's code.

The kernel is the ``python3`` kernel of the interpreter running the tests (jupyter_client starts
``sys.executable -m ipykernel_launcher``), so no kernel needs registering.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9]*.md"))
#: seconds one cell may run at smoke size before the test fails (the whole notebook should take well
#: under a minute on one busy core; this bounds a notebook that hangs or forgot its smoke size)
CELL_TIMEOUT = 600

WIDGET = "application/vnd.jupyter.widget-view+json"


def outputs(nb) -> list[dict]:
    """Every output of every code cell of the executed notebook ``nb``."""
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def shown(nb, mime: str, contains: str | None = None) -> int:
    """How many rich outputs (display data and cell values) of ``nb`` have ``mime``, whose text holds
    ``contains`` if given."""
    count = 0
    for out in outputs(nb):
        data = out.get("data", {})
        if mime in data and (contains is None or contains in "".join(data[mime])):
            count += 1
    return count


def test_each_tutorial_is_stored_executed_with_its_sources_code():
    """Each source has its executed notebook (docs/tutorials/execute.py), which the site shows: the same code,
    with figures, tables, and progress bars as text (a widget would need JavaScript from a CDN)."""
    import jupytext
    import nbformat

    for source in NOTEBOOKS:
        stored = source.with_suffix(".ipynb")
        run = f"run python docs/tutorials/execute.py {source.name[:2]}"
        assert stored.is_file(), f"{stored.name} is missing: {run}"
        nb = nbformat.read(stored, as_version=4)
        code = [cell.source for cell in jupytext.read(source).cells if cell.cell_type == "code"]
        assert [cell.source for cell in nb.cells if cell.cell_type == "code"] == code, (
            f"{source.name} changed since {stored.name} was executed: {run}"
        )
        assert shown(nb, "image/png") and shown(nb, "text/html", "<table"), f"{stored.name} shows no results"
        assert not shown(nb, WIDGET) and "widgets" not in nb.metadata, f"{stored.name} holds widgets: {run}"
        assert not any(out.get("output_type") == "error" for out in outputs(nb)), f"{stored.name} failed"


def test_tutorials_found():
    """The glob finds the tutorials, so an empty parametrization cannot pass silently."""
    assert len(NOTEBOOKS) >= 3, f"expected tutorials in {TUTORIALS}"


def test_tutorials_in_the_site():
    """Every tutorial is listed in the toctree of docs/tutorials/index.md (Sphinx warns, and the -W
    build fails, on a page in no toctree; this names it before the build)."""
    index = (TUTORIALS / "index.md").read_text()
    missing = [p.stem for p in NOTEBOOKS if p.stem not in index]
    assert not missing, f"not in docs/tutorials/index.md's toctree: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_runs(path: Path, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "the jupytext header names the kernel"
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    assert code and 'smoke_test = "CI" in os.environ' in code[0], (
        'the first code cell sets smoke_test = "CI" in os.environ and every size from it'
    )

    monkeypatch.setenv("CI", "true")  # the kernel inherits this process's environment
    # as in a researcher's Jupyter: the kernel picks its own (inline) backend; conftest's Agg would
    # hide a figure that only the inline backend could show
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models: threads only add overhead on a busy machine
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    seconds = time.perf_counter() - start

    errors = [out for out in outputs(nb) if out.get("output_type") == "error"]
    assert not errors, errors
    assert shown(nb, "image/png"), f"{path.name}: no figure shown inline (no image/png output)"
    assert shown(nb, "text/html", "<table"), f"{path.name}: no result shown as an HTML table"
    assert shown(nb, WIDGET), (
        f"{path.name}: no notebook progress bar (ipywidgets output); call something with progress=True"
    )
    print(f"{path.name}: executed at smoke size in {seconds:.1f} s")
