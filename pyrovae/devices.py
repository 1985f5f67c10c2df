"""Devices: resolving a name to a :class:`torch.device`, finding the device a model lives on, and
moving a module and its data there.

Every function of pyrovae that computes takes ``device=``: ``"auto"`` (CUDA where available, else the CPU),
``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`. Results come back on the CPU.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping

import pyro
import torch
from torch import nn

from pyrovae import distributed
from pyrovae.errors import ConfigError
from pyrovae.options import flag_of

__all__ = [
    "available",
    "check_memory",
    "device_memory",
    "module_of",
    "move",
    "move_kwargs",
    "of_model",
    "place",
    "resolve",
]


def available() -> list[str]:
    """The devices torch can use here, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve(device: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` called ``device`` (``"auto"`` or ``None``: CUDA if available, else
    the CPU); a device that does not exist here is a :class:`~pyrovae.errors.ConfigError` naming
    those that do. Under ``torchrun``, ``"cuda"`` without an index is ``cuda:LOCAL_RANK``."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and distributed.launched():
        device = f"cuda:{distributed.local_rank()}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' "
            f"(here: {', '.join(available())})"
        ) from None
    here = available()  # a CUDA device is here by its index (cuda is cuda:0)
    if (f"cuda:{dev.index or 0}" if dev.type == "cuda" else dev.type) not in here:
        raise ConfigError(
            f"device {str(dev)!r} is not available on this machine; the devices here are: {', '.join(here)} "
            "(use device='auto' to take a GPU where there is one)"
        )
    return dev


def module_of(fn) -> nn.Module | None:
    """The module behind ``fn``: ``fn`` itself, or the owner of a bound method (``vae.model``)."""
    owner = getattr(fn, "__self__", fn)
    return owner if isinstance(owner, nn.Module) else None


def of_model(*fns) -> torch.device | None:
    """The device of the parameters (else buffers) of the modules behind ``fns``, or of Pyro's
    param store; ``None`` when there are none."""
    modules = [module for module in map(module_of, fns) if module is not None]
    tensors = [itertools.chain(module.parameters(), module.buffers()) for module in modules]
    t = next(itertools.chain(*tensors, pyro.get_param_store().values()), None)
    return None if t is None else t.device


def place(*fns, device: str | torch.device | None = None) -> torch.device:
    """The device a computation on ``fns`` (a model and guide) runs on: ``device`` if given, with
    the modules behind ``fns`` moved there; else the device of their parameters; else the CPU."""
    if device is None:
        return of_model(*fns) or torch.device("cpu")
    dev = resolve(device)
    for module in map(module_of, fns):
        if module is not None:
            module.to(dev)
    return dev


def move(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """``tensors`` on ``device`` (asynchronously from pinned memory)."""
    return tuple(t.to(device, non_blocking=True) if torch.is_tensor(t) else t for t in tensors)


def move_kwargs(kwargs: Mapping | None, device: torch.device) -> dict:
    """A copy of the keyword arguments ``kwargs``, their tensor values on ``device`` (as :func:`move`)."""
    kwargs = kwargs or {}
    return dict(zip(kwargs, move(tuple(kwargs.values()), device), strict=True))


def device_memory(device: torch.device) -> float:
    """The memory of ``device`` in bytes: a GPU's, or the machine's physical memory (infinite where the
    operating system does not say)."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return math.inf


def check_memory(name: str, value: int, need: float, device: torch.device, what: str) -> None:
    """Refuse, before the work, an option ``name`` whose ``value`` makes ``what``, which cannot be split
    into chunks, take ``need`` bytes: more than ``device`` has."""
    have = device_memory(device)
    if need > have:
        raise ConfigError(
            f"{name} ({flag_of(name)}) = {value} needs {need / 2**30:.3g} GiB for {what}, more than the "
            f"{have / 2**30:.3g} GiB of memory of the {device.type.upper()}; lower {name}"
        )
