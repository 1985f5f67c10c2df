"""Callbacks of fit (pyrovae.train.callbacks): when each hook is called, a stop asked for by one, and what a
resumed run keeps of it."""

from __future__ import annotations

import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError

EPOCHS, N, BATCH = 4, 60, 20  # 3 steps an epoch


def data() -> torch.Tensor:
    return (torch.rand(N, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def small_vae() -> pyrovae.VAE:
    torch.manual_seed(0)
    return pyrovae.VAE(6, latent_dim=2, hidden=(8,))


def train(**options) -> pyrovae.FitResult:
    """A new small VAE trained on :func:`data` with ``options``."""
    return pyrovae.fit(small_vae(), data(), **{"batch_size": BATCH, "progress": False, **options})


class Recorder(pyrovae.Callback):
    """Every call, as (hook, epochs committed, step, value)."""

    def __init__(self, per_step: bool = True):
        self.calls = []
        self._per_step = per_step

    @property
    def per_step(self) -> bool:
        return self._per_step

    def on_fit_start(self, state):
        self.calls.append(("start", state.epoch, state.step, None))

    def on_step_end(self, state, loss):
        self.calls.append(("step", state.epoch, state.step, loss))

    def on_epoch_end(self, state, row):
        self.calls.append(("epoch", state.epoch, state.step, row["train_loss"]))

    def on_fit_end(self, state, result):
        self.calls.append(("end", state.epoch, state.step, result))


class StopAfter(pyrovae.Callback):
    """Stops in the given epoch, from a step's hook or the epoch's."""

    def __init__(self, epoch: int, in_step: bool = False):
        self.epoch, self.in_step = epoch, in_step

    @property
    def per_step(self) -> bool:
        return self.in_step

    def on_step_end(self, state, loss):
        if state.epoch + 1 == self.epoch:  # the epoch under way
            state.stop(f"asked for in a step of epoch {self.epoch}")

    def on_epoch_end(self, state, row):
        if not self.in_step and row["epoch"] == self.epoch:
            state.stop(f"asked for after epoch {self.epoch}")


def test_every_hook_is_called_in_order_with_the_run_so_far():
    recorder = Recorder()
    result = train(epochs=2, callbacks=[recorder])
    kinds = [c[0] for c in recorder.calls]
    assert kinds == ["start", *["step"] * 3, "epoch", *["step"] * 3, "epoch", "end"]
    assert [c[2] for c in recorder.calls if c[0] == "step"] == [1, 2, 3, 4, 5, 6]
    epochs = [c for c in recorder.calls if c[0] == "epoch"]
    assert [c[1] for c in epochs] == [1, 2]  # called once the epoch is committed
    assert [c[3] for c in epochs] == result.history["train_loss"].tolist()
    assert recorder.calls[-1][3] is result


def test_a_callback_that_does_not_ask_for_steps_is_not_called_at_every_step():
    recorder = Recorder(per_step=False)
    train(epochs=1, callbacks=[recorder])
    assert [c[0] for c in recorder.calls] == ["start", "epoch", "end"]
    assert pyrovae.Callback().per_step is False and StopAfter(1, in_step=True).per_step


@pytest.mark.parametrize("in_step", [False, True])
def test_a_stop_ends_training_after_the_epoch_it_is_asked_in(tmp_path, in_step):
    stop = StopAfter(2, in_step)
    result = train(epochs=EPOCHS, run_dir=tmp_path, callbacks=[stop])
    assert result.history["epoch"].tolist() == [1, 2]
    assert result.stopped_early and result.stop_reason.startswith("asked for")
    assert f"stopped early: {result.stop_reason}" in result.summary()
    # the run directory's checkpoint holds the epoch and the stop: a resumed run is returned as it is
    recorder = Recorder()
    resumed = train(epochs=EPOCHS, run_dir=tmp_path, resume=True, callbacks=[recorder])
    assert resumed.history["epoch"].tolist() == [1, 2] and resumed.stop_reason == result.stop_reason
    assert [c[0] for c in recorder.calls] == ["start", "end"]
    assert recorder.calls[0][1:3] == (2, 6)  # the resumed state counts the run's epochs and steps


def test_a_resumed_run_counts_its_steps_from_the_start_and_trains_as_one_run(tmp_path):
    straight = Recorder()
    whole = train(epochs=3, callbacks=[straight])
    train(epochs=1, run_dir=tmp_path)
    later = Recorder()
    resumed = train(epochs=3, run_dir=tmp_path, resume=True, callbacks=[later])
    assert [c[2] for c in later.calls if c[0] == "step"] == list(range(4, 10))
    assert resumed.history["train_loss"].tolist() == whole.history["train_loss"].tolist()


def test_a_callback_with_no_hook_is_refused():
    with pytest.raises(ConfigError, match="has none of the methods on_fit_start"):
        train(epochs=1, callbacks=[object()])


class StopAtStart(pyrovae.Callback):
    def on_fit_start(self, state):
        state.stop("nothing to train")


class Raising(Recorder):
    """Records its calls, and raises at the end of epoch 2."""

    def on_epoch_end(self, state, row):
        super().on_epoch_end(state, row)
        if row["epoch"] == 2:
            raise ValueError("a bug in the callback")


def test_a_stop_at_the_last_epoch_is_no_early_stop(tmp_path):
    result = train(epochs=2, run_dir=tmp_path, callbacks=[StopAfter(2)])
    assert len(result.history) == 2 and not result.stopped_early and result.stop_reason is None
    more = train(epochs=3, run_dir=tmp_path, resume=True)  # nothing recorded: the run goes on
    assert len(more.history) == 3


def test_a_stop_before_the_first_epoch_trains_nothing():
    result = train(epochs=2, callbacks=[StopAtStart()])
    assert result.history.empty and result.stop_reason == "nothing to train"
    summary = result.summary()
    assert "trained for 0 epochs" in summary and "stopped early: nothing to train" in summary
    assert "<table" in result._repr_html_()


def test_a_failing_callback_ends_training_and_the_callbacks_hear_of_it(tmp_path):
    recorder = Raising()
    with pytest.raises(ValueError, match="a bug in the callback"):
        train(epochs=4, run_dir=tmp_path, callbacks=[recorder])
    assert [c[0] for c in recorder.calls if c[0] != "step"] == ["start", "epoch", "epoch", "end"]
    assert recorder.calls[-1][3] is None  # on_fit_end with no result
    # the epoch whose hook failed was not committed: a resumed run starts after epoch 1
    assert len(train(epochs=1, run_dir=tmp_path, resume=True).history) == 1


def test_callbacks_that_are_not_a_list_are_refused():
    with pytest.raises(
        ConfigError, match=r"callbacks takes a list of callbacks, such as callbacks=\[MyCallback\(\)\]"
    ):
        train(epochs=1, callbacks=Recorder())
