"""Sphinx configuration of the pyrovae documentation.

Build it, warnings as errors, with ``sphinx-build -W -b html docs docs/_build/html``
(``pip install -e '.[docs]'`` installs what it needs).

Sphinx, as Pyro's own documentation: the API reference comes from the docstrings (autodoc), whose
``:math:`` roles and ``.. math::`` blocks MathJax renders. The pages are MyST Markdown, read by
myst-nb, so that the tutorials (docs/tutorials) are MyST-Markdown notebooks: plain text that diffs
well, rendered and executed by the same build.
"""

from __future__ import annotations

import importlib
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # the checkout's pyrovae, installed or not

import pyrovae  # noqa: E402

project = "pyrovae"
author = "the pyrovae developers"
copyright = "the pyrovae developers"
version = pyrovae.__version__
release = pyrovae.__version__

extensions = [
    "myst_nb",  # MyST Markdown pages and MyST-Markdown notebooks (it includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    # MathJax 3 copied into the site (_static/mathjax), so that the maths renders offline too: on a
    # cluster node, or from a build opened as files, where MathJax's CDN cannot be reached
    "sphinx-mathjax-offline",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
# the tutorials' sources (MyST Markdown): the site shows their executed notebooks, stored beside them
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "tutorials/[0-9]*.md"]

# -- MyST ------------------------------------------------------------------------------------------
# $...$ and $$...$$ in the Markdown pages; \begin{align}... environments as display maths
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# -- notebooks (docs/tutorials) --------------------------------------------------------------------
# The tutorials are MyST-Markdown notebooks, executed at their full size by docs/tutorials/execute.py,
# which stores each, outputs included, as an .ipynb beside its source: the site shows those outputs and
# executes nothing (tests/test_tutorials.py runs every source at its smoke size, and checks that each
# stored notebook holds its source's code).
nb_execution_mode = "off"

# -- autodoc ---------------------------------------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
# only pyrovae's own docstrings: an override without one is not listed with the docstring of the
# torch or Pyro method it overrides (written for their documentation, not this one)
autodoc_inherit_docstrings = False
autoclass_content = "both"  # the class docstring, then that of __init__ where it has one
add_module_names = False  # short names in signatures; the page headings give the module

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "sphinx_rtd_theme"
html_title = f"pyrovae {release}"
html_theme_options = {"navigation_depth": 3}
html_static_path = ["_static"]
html_css_files = ["pyrovae.css"]


# -- links to re-exported names --------------------------------------------------------------------
# Each object is documented once, in the module that defines it (``pyrovae.models.vae.VAE``), but the
# docstrings also name it as the user imports it: ``pyrovae.VAE``, ``pyrovae.estimators.IWAE``,
# or ``IWAE`` from a sibling module. Such a reference, which the Python domain cannot find,
# is resolved here to the documented object it denotes (unresolved references stay plain text).


def lookup(dotted: str):
    """The object called ``dotted``, importing modules along the way, or None."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return getattr(obj, "__func__", obj)  # a classmethod as the function it wraps
    return None


def _identifiable(obj) -> bool:
    """Whether ``obj`` is one object only one name denotes (not a small int, a string, ``()``...)."""
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return False
    return not (isinstance(obj, tuple) and not obj)


_documented: dict[int, tuple[int, dict[int, str]]] = {}


def _documented_names(py) -> dict[int, str]:
    """The documented name of each object the Python domain describes, by ``id``."""
    cached = _documented.get(id(py))
    if cached is None or cached[0] != len(py.objects):
        by_id: dict[int, str] = {}
        for name in py.objects:
            obj = lookup(name) if name.startswith("pyrovae") else None
            if _identifiable(obj):
                by_id.setdefault(id(obj), name)
        cached = _documented[id(py)] = (len(py.objects), by_id)
    return cached[1]


def _candidates(node, target: str):
    """The objects a Python reference to ``target`` may denote, as the user imports them or as the
    Python domain looks names up: in the docstring's class, its module or its package; a method
    that a class inherits, or overrides without a docstring, as the base class's."""
    module, cls = node.get("py:module") or "", node.get("py:class") or ""
    if target.startswith("pyrovae."):
        scopes = [""]
    elif module.startswith("pyrovae"):
        scopes = [f"{module}.{cls}."] if cls else []
        scopes += [f"{module}.", f"{module.rpartition('.')[0]}."]
    else:
        return
    for scope in scopes:
        holder, _, name = (scope + target).rpartition(".")
        klass = lookup(holder)
        if isinstance(klass, type):
            for base in klass.__mro__:
                if name in vars(base):
                    attr = vars(base)[name]
                    yield getattr(attr, "__func__", attr)
        else:
            yield lookup(scope + target)


def _resolve_reexport(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target or target.startswith("."):
        return None
    py = env.domains["py"]
    for obj in _candidates(node, target):
        name = _documented_names(py).get(id(obj)) if _identifiable(obj) else None
        if name is not None and name != target:
            return py.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], name, node, contnode)
    return None


def _skip_matplotlib_members(app, what, name, obj, skip, options):
    """Leave out the members matplotlib writes into a class of pyrovae: it gives every subclass of its
    ``Artist`` (:class:`pyrovae.plots.Figure`) a generated ``set`` method, whose docstring is
    matplotlib's and uses its own roles."""
    if what == "class" and (getattr(obj, "__module__", None) or "").startswith("matplotlib"):
        return True
    return None


def setup(app):
    app.connect("missing-reference", _resolve_reexport)
    app.connect("autodoc-skip-member", _skip_matplotlib_members)
