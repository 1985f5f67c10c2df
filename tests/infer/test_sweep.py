"""The one pass over a data set (pyrovae.infer.Sweep), in one process; tests/test_distributed.py runs
every public function that sweeps under torchrun with two workers."""

from __future__ import annotations

import pytest
import torch

from pyrovae import distributed
from pyrovae.errors import ConfigError, DataError
from pyrovae.infer import Sweep
from pyrovae.seeds import seeded


def draws(chunk):
    """One normal draw per data point, and the data point's index."""
    return torch.randn(chunk.size), torch.arange(chunk.lo, chunk.hi)


def test_rows_come_back_in_order_each_chunk_seeded_by_its_first_data_point():
    x = torch.arange(10.0).reshape(10, 1)
    noise, index = Sweep(x, 4, seed=7).map(draws)
    assert index.tolist() == list(range(10))
    for lo in (0, 4, 8):  # a chunk's draws depend on (seed, lo) alone
        with seeded(distributed.derived_seed(7, lo)):
            expected = torch.randn(min(4, 10 - lo))
        assert torch.equal(noise[lo : lo + 4], expected)


def test_the_callers_random_state_is_left_alone():
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    Sweep(torch.zeros(5, 2), 2, seed=1).map(draws)
    assert torch.equal(torch.rand(2), expected)


def test_chunks_see_their_data_on_the_device_with_the_model_arguments_and_no_gradients():
    x, y = torch.arange(6.0).reshape(6, 1), torch.arange(6)

    def rows(chunk):
        assert not torch.is_grad_enabled() and chunk.args[2] == "extra"
        return chunk.args[0][:, 0] + chunk.args[1]

    assert Sweep((x, y), 4, model_args=("extra",)).map(rows).tolist() == [0, 2, 4, 6, 8, 10]
    assert (
        Sweep(x, 4)
        .map(lambda chunk: torch.full((chunk.size,), float(torch.is_grad_enabled())), grad=True)
        .all()
    )


def test_a_reduction_sees_blocks_of_at_least_reduce_rows():
    sizes = []

    def reduce(rows):
        sizes.append(rows[0].shape[0])
        return (rows[0] * 2,)

    out = Sweep(torch.arange(7.0), 2).map(lambda chunk: chunk.args[0], reduce=reduce, reduce_rows=3)
    assert out[0].tolist() == [2 * i for i in range(7)]
    assert sizes == [4, 3]  # two chunks of 2 (4 rows >= 3), then the rest


def test_non_finite_data_are_refused_by_name():
    x = torch.zeros(5, 3)
    x[3, 1] = float("inf")
    with pytest.raises(DataError, match="NaN or infinite values in 1 of data points 2 to 3"):
        Sweep(x, 2).map(draws)


def test_an_error_in_a_chunk_is_raised_as_it_is_and_the_chunk_size_is_checked():
    def fails(chunk):
        raise ValueError("chunk failed")

    with pytest.raises(ValueError, match="chunk failed"):
        Sweep(torch.zeros(3), 1).map(fails)
    with pytest.raises(ConfigError, match="chunk_size must be an integer >= 1; got 0"):
        Sweep(torch.zeros(3), 0)


def test_progress_counts_the_work_each_chunk_reports(monkeypatch):
    bars = []

    class Bar:
        def __init__(self, total, **options):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, units):
            self.n += units

        def close(self):
            pass

    def steps(chunk):
        chunk.advance(2)  # the rest of the chunk's work (3 units) is added when it returns
        return torch.zeros(chunk.size)

    monkeypatch.setattr("pyrovae.infer.sweep.tqdm", Bar)
    sweep = Sweep(torch.zeros(5), 2, work=lambda lo, hi: 5)
    assert sweep.chunks() == [(0, 2), (2, 4), (4, 5)]
    assert sweep.map(steps).shape == (5,)
    assert (bars[0].total, bars[0].n) == (15, 15)


def test_alone_hides_the_process_group():
    with distributed.alone():
        assert not distributed.active() and distributed.world_size() == 1
