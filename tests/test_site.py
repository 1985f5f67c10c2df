"""The documentation site's API reference (docs/api) covers every public name of pyrovae, and every
member of each module it documents.

Read from the sources of the reference, without building it: each ``automodule``, ``autoclass``,
``autofunction``, ``autodata`` or ``autoexception`` directive documents its target, and an
``automodule`` with ``:members:`` the members autodoc lists: the module's ``__all__`` (or the names
given to ``:members:``), else its public names defined there; without ``:undoc-members:``, only
those with a docstring (of a constant, a ``#:`` comment, which this test does not read).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pyrovae

API = Path(__file__).resolve().parents[1] / "docs" / "api"
# reST ".. autoclass:: target" or MyST "```{autoclass} target", then the option lines ":name: value"
DIRECTIVE = re.compile(
    r"^(?:\.\. |```\{)(auto(?:module|class|function|data|exception))(?:::|\})[ \t]+(\S+)[ \t]*\n"
    r"((?:[ \t]*:[\w-]+:.*\n)*)",
    re.M,
)


def _load_conf():
    """docs/conf.py as a module: its ``lookup`` resolves dotted names as the site's links do."""
    spec = importlib.util.spec_from_file_location("pyrovae_docs_conf", API.parent / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONF = _load_conf()


def lookup(dotted: str):
    """The object called ``dotted`` (the longest importable module prefix, then attributes)."""
    obj = CONF.lookup(dotted)
    if obj is None:
        raise ImportError(f"{dotted} names nothing importable")
    return obj


def directives() -> list[tuple[str, str, dict[str, str], str]]:
    """``(directive, target, options, file)`` of every autodoc directive of the API reference."""
    found = []
    for path in sorted([*API.glob("*.rst"), *API.glob("*.md")]):
        for kind, target, block in DIRECTIVE.findall(path.read_text()):
            options = dict(re.findall(r"^[ \t]*:([\w-]+):[ \t]*(.*?)[ \t]*$", block, flags=re.M))
            found.append((kind, target, options, path.name))
    return found


def documented_members(module, options: dict[str, str]) -> list:
    """The members ``automodule`` documents with ``options``."""
    if options.get("members"):
        names = [name.strip() for name in options["members"].split(",")]
    elif hasattr(module, "__all__"):
        names = list(module.__all__)
    else:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
        ]
    members = [getattr(module, name) for name in names if hasattr(module, name)]
    if "undoc-members" not in options:  # autodoc skips a class or function without a docstring
        members = [obj for obj in members if not (isinstance(obj, type) or callable(obj)) or obj.__doc__]
    return members


def covered() -> tuple[set[str], set[int]]:
    """The modules the reference documents, by name, and the other objects, by ``id``."""
    modules: set[str] = set()
    objects: set[int] = set()
    for kind, target, options, _ in directives():
        if kind == "automodule":
            module = importlib.import_module(target)
            modules.add(module.__name__)
            if "members" in options:
                objects.update(id(obj) for obj in documented_members(module, options))
        else:
            objects.add(id(lookup(target)))
    return modules, objects


def test_api_reference_targets_exist():
    assert directives(), f"no autodoc directive found in {API}"
    missing = []
    for kind, target, _, file in directives():
        try:
            importlib.import_module(target) if kind == "automodule" else lookup(target)
        except (ImportError, AttributeError):
            missing.append(f"{file}: {kind} {target}")
    assert not missing, "API reference directives whose target does not exist: " + ", ".join(missing)


def test_every_public_name_is_in_the_api_reference():
    modules, objects = covered()
    missing = []
    for name in pyrovae.__all__:
        obj = getattr(pyrovae, name)
        if isinstance(obj, type(pyrovae)):
            ok = obj.__name__ in modules
        else:
            ok = id(obj) in objects
        if not ok:
            missing.append(name)
    assert not missing, (
        "names of pyrovae.__all__ missing from the API reference (docs/api): add an automodule with "
        ":members: of the module that defines them (or an autoclass/autofunction), and a docstring: "
        + ", ".join(sorted(missing))
    )


def test_every_member_of_a_documented_module_is_in_the_api_reference():
    """A page that lists a module's members one by one, to show the public names before the helpers,
    lists all those ``automodule`` with ``:members:`` would document."""
    modules, objects = covered()
    missing = []
    for name in sorted(modules):
        module = importlib.import_module(name)
        for obj in documented_members(module, {}):
            if id(obj) not in objects:
                missing += [f"{name}.{attr}" for attr, value in vars(module).items() if value is obj]
    assert not missing, (
        "members of modules the API reference documents that it leaves out (docs/api): add an "
        "autofunction, autoclass or autodata for each: " + ", ".join(missing)
    )
