r"""Data parallelism with PyTorch's own engine: ``torchrun``, DistributedDataParallel, NCCL and Gloo.

A script that calls :func:`pyrovae.fit`, :func:`pyrovae.log_likelihood` or :func:`pyrovae.bounds` (and the
``pyrovae`` command line) runs unchanged under ``torchrun --nproc_per_node N``: those functions call
:func:`init`, which sees the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and starts the default process group; without them everything runs in one
process, as before. What is split across the :math:`W` workers (ranks):

- **training**: every rank draws the same global minibatch of :math:`B` data points (the same
  per-epoch shuffling generator on every rank: a distributed sampler whose ``set_epoch`` is the
  epoch's seed) and takes its contiguous share :math:`\mathcal B_r` (:func:`shard`); the
  ``ELBO(model, guide)`` module is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`
  (:func:`wrap`), which averages the gradients over the ranks;
- **evaluation**: the data points, in whole chunks of a sweep (:class:`pyrovae.infer.Sweep`), are
  split into contiguous shards, one per rank (:func:`shard`), and the per-datapoint results
  gathered in order on every rank (:func:`all_gather_object`).

The data-plate scale that keeps the objective in nats of the full data set on every worker: with per-datapoint
bounds :math:`\mathcal L_n`, rank :math:`r` descends :math:`L_r = s \sum_{n \in \mathcal B_r} (-\mathcal L_n)`
and DDP applies the mean gradient :math:`\frac1W \sum_r \nabla L_r`. That equals the gradient of the
one-process minibatch loss :math:`\frac{N}{B} \sum_{n \in \mathcal B} (-\mathcal L_n)` exactly when

.. math:: s = \frac{W N}{B},

which is :math:`N / |\mathcal B_r|` when the :math:`W` shares are equal, and stays right for the
shorter last batch of an epoch, whose shares may differ by one. See ``docs/distributed.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import math
import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pyrovae.errors import ConfigError

__all__ = [
    "active",
    "alone",
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "derived_seed",
    "device",
    "init",
    "is_main",
    "launched",
    "local_rank",
    "rank",
    "shard",
    "teardown",
    "world_size",
    "wrap",
]

#: the variables ``torchrun`` (and ``torch.distributed.run``) sets in every worker
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("gloo", "nccl", "cpu:gloo,cuda:nccl")


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (its variables are all set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


#: set inside :func:`alone`
_alone = False


def active() -> bool:
    """Whether a default process group is running (and this rank is not computing :func:`alone`)."""
    return not _alone and dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def alone():
    """Compute on this rank alone, as if no process group ran: inside, :func:`active` is false,
    so sweeps neither shard nor gather. For the work one rank does by itself (rank 0's figures),
    which must not wait in a collective for ranks that are not there."""
    global _alone
    previous, _alone = _alone, True
    try:
        yield
    finally:
        _alone = previous


def rank() -> int:
    """This worker's global rank, 0 without a process group."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of workers :math:`W`, 1 without a process group."""
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    """This worker's rank on its node (``LOCAL_RANK``), 0 when not launched by ``torchrun``."""
    return int(os.environ.get("LOCAL_RANK", 0)) if launched() else 0


def is_main() -> bool:
    """Whether this worker is rank 0, the one that writes files and shows progress."""
    return rank() == 0


def device() -> torch.device:
    """The device this worker should use: ``cuda:LOCAL_RANK`` where CUDA is available, else the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def init(backend: str | None = None, timeout: float | None = None) -> bool:
    """Start the default process group if this process was launched by ``torchrun``.

    Does nothing without ``torchrun``'s variables (a script runs in one process as ever, whatever
    ``backend`` says) or when a group is already running (started by the caller with its own
    options). The group is torn down at exit (:func:`teardown`).

    :param backend: ``"gloo"`` (CPU tensors), ``"nccl"`` (CUDA tensors) or ``"cpu:gloo,cuda:nccl"`` (each
        collective by its tensors' device); default the last where CUDA is available, else ``"gloo"``. With
        CUDA the worker's current device is set to ``cuda:LOCAL_RANK``.
    :param timeout: seconds a collective may wait for the other workers (PyTorch's default if ``None``).
    :returns: whether a process group runs now.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown distributed backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not launched() or active():
        return active()
    cuda = torch.cuda.is_available()
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    if "nccl" in backend and not cuda:
        raise ConfigError(f"backend {backend!r} needs CUDA, which this machine lacks; use backend='gloo'")
    if cuda:
        torch.cuda.set_device(local_rank())
    kwargs = {} if timeout is None else {"timeout": timedelta(seconds=timeout)}
    dist.init_process_group(backend=backend, **kwargs)
    atexit.register(teardown)
    return True


def teardown() -> None:
    """Destroy the default process group, if one runs, once every worker has reached this point:
    a worker that tears down while a peer still talks to it can abort the peer (Gloo)."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


def shard(num: int, units: int = 1) -> tuple[int, int]:
    """This rank's contiguous share ``[lo, hi)`` of ``range(num)``, cut at multiples of ``units``.

    The ``ceil(num / units)`` blocks are dealt out in order, the first ``blocks % W`` ranks taking
    one more; so shares differ by at most one block and rank ``r``'s precedes rank ``r + 1``'s.
    """
    blocks = math.ceil(num / units)
    per, extra = divmod(blocks, world_size())
    r = rank()
    first = r * per + min(r, extra)
    last = first + per + (r < extra)
    return min(first * units, num), min(last * units, num)


def wrap(module: nn.Module) -> nn.Module:
    """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` when a group runs, else itself.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts from rank 0's
    initialization, and averages the gradients in the backward pass. Buffers (a prior's fixed location and
    scale) are not broadcast again at every step: a module that updates buffers in its forward pass keeps each
    rank's own. Parameters that the loss leaves unused (a guide that ignores part of an encoder) are allowed,
    as in one process, provided the same ones are unused at every step: the module is declared a static graph,
    whose unused parameters DDP finds in the first step.
    """
    if not active():
        return module
    param = next(module.parameters())
    ids = [param.device] if param.device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # buffers synced at construction only: forward_sync_buffers in newer torch, broadcast_buffers before
    sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else None
    return ddp(module, device_ids=ids, static_graph=True, **{sync or "broadcast_buffers": False})


def all_reduce_mean(value: torch.Tensor) -> float:
    """The mean of a scalar over the ranks (its value without a group), as a Python float."""
    if not active():
        return value.item()
    where = device() if dist.get_backend() == "nccl" else torch.device("cpu")
    t = value.detach().to(where, torch.float64).reshape(1)
    dist.all_reduce(t)
    return t.item() / world_size()


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` without a group)."""
    if not active():
        return [obj]
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, obj)
    return parts


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (``obj`` without a group)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (nothing without a group)."""
    if active():
        dist.barrier()


def derived_seed(*keys: int) -> int:
    """A 32-bit seed determined by the integers ``keys`` alone (NumPy's :class:`~numpy.random.SeedSequence`
    hashing): e.g. a seed per data chunk from ``(seed, first data point)``, whichever rank draws it."""
    return int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1)[0])
