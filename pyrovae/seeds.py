"""Seeded computations that leave the caller's random stream untouched."""

from __future__ import annotations

import contextlib

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
        pyro.set_rng_seed(seed)
        yield
    finally:
        pyro.util.set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
