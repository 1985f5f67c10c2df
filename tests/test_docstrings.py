"""Every public callable's docstring documents every parameter of its signature, and no other.

Public: each function of ``pyrovae.__all__``; for each class there, its constructor and its public
methods (not starting with ``_``) that take parameters. Each is one test case, named by what a user
calls (``fit``, ``VAE.__init__``, ``VAE.model``) or, for a method a class inherits, by the class
that defines it (``Result.to_netcdf``), once however many exported classes share it.

Documented: a Sphinx field ``:param [type] name:``, Pyro's style. A constructor is documented in the
class docstring or in that of ``__init__`` (autodoc shows both). The constructor of a dataclass
stores each argument as the field of the same name, and the result classes document their fields as
attributes, so there ``:ivar [type] name:`` documents the argument as well.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

import pyrovae

# ":param name:", ":param type name:" (a type may hold spaces: "str | None"), ":param \*\*kwargs:"
FIELD = re.compile(r"^[ \t]*:(param|type|ivar)[ \t]+([^:\n]+):", re.M)
# ``*args`` and ``**kwargs`` pass their values on (to Pyro's model and guide, to an estimator's
# constructor) and are documented by the callable that receives them: they need no entry, but an entry
# naming one must match the signature as any other
FORWARDED = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def defined_here(function) -> bool:
    """Whether ``function`` is pyrovae's: a constructor or method inherited from Python, torch or Pyro
    (an exception's ``__init__``, ``Trace_ELBO``'s) is documented there."""
    return inspect.isfunction(function) and function.__module__.split(".")[0] == "pyrovae"


def parameters(function) -> dict[str, inspect.Parameter]:
    """The parameters of ``function`` but ``self`` and ``cls``, by name."""
    signature = inspect.signature(function).parameters
    return {name: p for name, p in signature.items() if name not in ("self", "cls")}


def public_methods(cls: type):
    """The public methods of ``cls`` that pyrovae defines, its own and those it inherits, as functions
    (a classmethod's or staticmethod's unwrapped); properties have no parameters."""
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name)
        function = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
        if not name.startswith("_") and defined_here(function) and parameters(function):
            yield function


def callables() -> dict[str, tuple]:
    """``{test id: (function, docstring, field kinds that document a parameter)}``."""
    found: dict[str, tuple] = {}
    seen: set[int] = set()
    for name in pyrovae.__all__:
        obj = getattr(pyrovae, name)
        if inspect.ismodule(obj):
            continue
        if not inspect.isclass(obj):
            found[name] = (obj, obj.__doc__, ("param",))
            continue
        init = obj.__init__
        if defined_here(init):
            kinds = ("param", "ivar") if dataclasses.is_dataclass(obj) else ("param",)
            found[f"{name}.__init__"] = (init, f"{obj.__doc__ or ''}\n{init.__doc__ or ''}", kinds)
        for method in public_methods(obj):
            if id(method) not in seen:
                seen.add(id(method))
                found[method.__qualname__] = (method, method.__doc__, ("param",))
    return found


CALLABLES = callables()


def fields(doc: str | None) -> list[tuple[str, str]]:
    """``(kind, parameter name)`` of each ``:param``, ``:type`` and ``:ivar`` field of ``doc``."""
    return [(kind, spec.split()[-1].lstrip("\\*")) for kind, spec in FIELD.findall(doc or "")]


def test_the_cases_cover_the_public_api():
    for name in (
        "fit",
        "log_likelihood",
        "VAE.__init__",
        "VAE.model",
        "FitResult.__init__",
        "Result.to_netcdf",
    ):
        assert name in CALLABLES, f"{name} is not among the callables checked"


@pytest.mark.parametrize("name", sorted(CALLABLES))
def test_every_parameter_is_documented(name):
    function, doc, kinds = CALLABLES[name]
    signature, entries = parameters(function), fields(doc)
    documented = {param for kind, param in entries if kind in kinds}
    missing = [p for p, param in signature.items() if param.kind not in FORWARDED and p not in documented]
    stale = sorted({p for kind, p in entries if kind in ("param", "type") and p not in signature})
    problems = []
    if missing:
        problems.append(f"parameters without a ':param' entry: {', '.join(missing)}")
    if stale:
        problems.append(f"entries for parameters it does not have (stale): {', '.join(stale)}")
    assert not problems, f"the docstring of {name}: " + "; ".join(problems)
