"""Seeded computations that leave the caller's random stream untouched."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pyro
import torch

from pyrovae.options import check_option

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int | None):
    """Seed Pyro's generators (torch, CUDA, random, numpy) for the duration, then restore the
    caller's state, so that a seeded evaluation leaves the surrounding random stream untouched.
    A seed outside [0, 2^32) is refused with a :class:`~pyrovae.errors.ConfigError`."""
    if seed is None:
        yield
        return
    check_option("seed", seed)
    state = pyro.util.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        _seed_all(seed)
        yield
    finally:
        pyro.util.set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _seed_all(seed: int) -> None:
    """What :func:`pyro.set_rng_seed` does, for the devices pyrovae computes on: the CPU, CUDA where torch has
    it (lazily, where it is not initialized yet), MPS. ``torch.manual_seed`` also queues a seed for XPU and
    MTIA, formatting the caller's whole stack (and reading each frame's source file) for each, and for CUDA
    where it is not initialized: a sweep, which seeds every chunk, paid about half a millisecond a chunk for
    that on a CPU-only machine, more in the deeper stack of a notebook."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)  # now, or when CUDA is initialized
    if torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
