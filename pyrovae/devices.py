"""Devices: resolving a name to a :class:`torch.device`, finding the device a model lives on, moving a
module and its data there, and the CPU's threads.

Every function of pyrovae that computes takes ``device=``: ``"auto"`` (CUDA where available, else the CPU),
``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`. Results come back on the CPU.

On the CPU, torch starts one thread per core, whatever else the machine runs; a thread that waits for a core
another process holds stalls the others at every operation. :func:`fit` and the ``pyrovae`` command (its
``--threads``) run with :func:`cpu_threads`: the cores that the other processes leave idle, less one, unless
the user chose (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``torch.set_num_threads`` or a number).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections.abc import Iterator, Mapping

import pyro
import torch
from torch import nn

from pyrovae import distributed
from pyrovae.errors import ConfigError
from pyrovae.options import check_option, flag_of

__all__ = [
    "THREAD_VARIABLES",
    "available",
    "busy_cores",
    "check_memory",
    "cpu_threads",
    "device_memory",
    "module_of",
    "move",
    "move_kwargs",
    "of_model",
    "place",
    "resolve",
    "using_threads",
    "wide_dtype",
]

#: the environment variables by which a user sets the CPU threads (with one set, "auto" keeps torch's count)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# torch's count when pyrovae was imported: another one later is the user's (torch.set_num_threads)
_TORCH_THREADS = torch.get_num_threads()


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


def wide_dtype(device: torch.device) -> torch.dtype:
    """The dtype sums are accumulated in on ``device``: float64, or float32 on MPS, which has no float64.

    :param torch.device device: the device.
    """
    return torch.float32 if device.type == "mps" else torch.float64


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


def cpu_threads(threads: int | str | None = "auto") -> int | None:
    """The CPU threads to compute with: ``threads`` when it is a number; ``None`` (torch's count kept) when
    it is ``None``, or ``"auto"`` and the user chose (the environment sets one of :data:`THREAD_VARIABLES`,
    or ``torch.set_num_threads`` changed torch's count since pyrovae was imported); else, with
    ``"auto"``, the cores this process may run on (its CPU affinity) less those that other processes keep
    busy (:func:`busy_cores`), rounded, less one left to the rest of the machine, at least 1 and at most
    torch's count.

    :param threads: ``"auto"``, a number of threads, or ``None``.
    :rtype: int or None
    """
    threads = check_option("threads", threads)
    if threads != "auto":
        return threads
    if any(os.environ.get(name) for name in THREAD_VARIABLES) or torch.get_num_threads() != _TORCH_THREADS:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # one core is left to the rest of the machine: two processes that start at the same moment each see the
    # other's cores idle, and a thread more than the cores stalls every operation (two notebooks, each with
    # two threads on two cores, trained 20 times slower than with one)
    return max(1, min(torch.get_num_threads(), round(cores - busy_cores()) - 1))


def busy_cores(window: float = 0.25) -> float:
    """The cores this process may run on that other processes of normal or higher priority keep busy:
    their CPU time over ``window`` seconds, from the kernel's counters of those cores (``/proc/stat``; in a
    container, the host's cores in its CPU set), less this process's own time; niced processes, which
    yield their cores, are not counted. Where there are no such counters, the load average of the last
    minute (every process counted), or 0.

    :param float window: seconds to measure over.
    :rtype: float
    """
    try:
        start = _cpu_seconds()
    except OSError:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    time.sleep(window)
    end = _cpu_seconds()
    own = 0.0 if os.nice(0) > 0 else end[2] - start[2]  # a niced process's time is not in the busy count
    return max(0.0, (end[1] - start[1] - own) / (end[0] - start[0]))


def _cpu_seconds() -> tuple[float, float, float]:
    """Now, the CPU seconds the cores this process may run on spent busy at normal priority, and this
    process's own."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *counts = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit()):
                continue
            if cores is None or int(name[3:]) in cores:
                user, _nice, system, _idle, _iowait, irq, softirq, steal = map(int, counts[:8])
                busy += user + system + irq + softirq + steal
    own = os.times()
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


@contextlib.contextmanager
def using_threads(threads: int | str | None = "auto") -> Iterator[int]:
    """Compute with :func:`cpu_threads` ``(threads)`` CPU threads inside the block (torch's count is a
    setting of the process: it is restored afterwards); yields the number in use.

    :param threads: ``"auto"``, a number of threads, or ``None`` (torch's count kept).
    """
    before, chosen = torch.get_num_threads(), cpu_threads(threads)
    if chosen is not None and chosen != before:
        torch.set_num_threads(chosen)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
