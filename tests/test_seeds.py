"""Tests of pyrovae.seeds."""

from __future__ import annotations

import random

import numpy as np
import pyro
import pytest
import torch

from pyrovae.errors import ConfigError
from pyrovae.seeds import seeded


def draws() -> tuple:
    return torch.rand(3), random.random(), np.random.rand()


def test_a_seeded_block_draws_what_pyro_seeds_and_gives_the_caller_its_stream_back():
    pyro.set_rng_seed(5)
    expected = draws()
    pyro.set_rng_seed(1)
    draws()
    after = draws()
    pyro.set_rng_seed(1)
    draws()
    with seeded(5):
        inside = draws()
    assert torch.equal(inside[0], expected[0]) and inside[1:] == expected[1:]
    outside = draws()
    assert torch.equal(outside[0], after[0]) and outside[1:] == after[1:]


def test_a_seed_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="seed"), seeded(-1):
        pass
