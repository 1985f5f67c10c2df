r"""Callbacks: code of the user's that :func:`~pyrovae.fit` calls as it trains.

A callback is an object with any of four methods, each given the :class:`FitState` of the run:

- ``on_fit_start(state)``: once, before the first epoch of this call (after a resumed run's state is loaded);
- ``on_step_end(state, loss)``: after every optimizer step, with the minibatch's loss in nats per data point;
- ``on_epoch_end(state, row)``: after every epoch, with its row of the history (``epoch``, ``train_loss``,
  ``valid_loss``, ``beta``, ``lr``, ``seconds``), just before the epoch is committed to the run directory
  (so that a stop it asks for is committed with the epoch);
- ``on_fit_end(state, result)``: once, with the :class:`~pyrovae.train.loop.FitResult` about to be returned,
  or with ``None`` when training ends with an error (which is raised after it).

Subclass :class:`Callback`, whose methods do nothing, and define those you need; a method ``check()``, if it
has one, is called when :func:`~pyrovae.fit` is, before anything is written, to refuse its options. A
callback stops training by calling :meth:`FitState.stop`: the epoch under way finishes and is committed, and
training ends there, with the reason in :attr:`~pyrovae.train.loop.FitResult.stop_reason` and in the
checkpoint (a resumed run that a callback stopped is returned as it is, as one stopped early is; a stop asked
for at the last epoch is no early stop, and is not recorded).

Under ``torchrun`` the callbacks are called on rank 0 alone, whatever the other ranks were given. Every rank
ends the start, each epoch and the end in one collective, through which rank 0's stop, or the error one of
its callbacks raised, reaches every rank (the others raise a :class:`~pyrovae.errors.RankError`). Only a
callback that defines ``on_step_end`` (or whose ``per_step`` is true) is called after every step, with the
step's loss as a Python number; the others add nothing to a step.

Example: stop once the validation bound reaches a target::

    class StopAtTarget(pyrovae.Callback):
        def __init__(self, target: float):
            self.target = target

        def on_epoch_end(self, state, row):
            if row["valid_loss"] <= self.target:
                state.stop(f"the validation bound reached {self.target}")

    pyrovae.fit(vae, train, valid, epochs=100, callbacks=[StopAtTarget(100.0)])
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from pyrovae import distributed
from pyrovae.errors import ConfigError, RankError

__all__ = ["Callback", "FitState", "Callbacks"]

HOOKS = ("on_fit_start", "on_step_end", "on_epoch_end", "on_fit_end")


class Callback:
    """A callback whose hooks do nothing: subclass it and define the hooks you need (see the module)."""

    @property
    def per_step(self) -> bool:
        """Whether :func:`~pyrovae.fit` calls :meth:`on_step_end` after every step: by default, whether the
        subclass defines it."""
        return type(self).on_step_end is not Callback.on_step_end

    def on_fit_start(self, state: FitState) -> None:
        """Called once, before this call's first epoch.

        :param FitState state: the run so far.
        """

    def on_step_end(self, state: FitState, loss: float) -> None:
        """Called after every optimizer step (:attr:`FitState.step` counts them).

        :param FitState state: the run so far.
        :param float loss: the step's loss, in nats per data point.
        """

    def on_epoch_end(self, state: FitState, row: dict) -> None:
        """Called after every committed epoch.

        :param FitState state: the run so far.
        :param dict row: the epoch's row of the history.
        """

    def on_fit_end(self, state: FitState, result) -> None:
        """Called once, at the end.

        :param FitState state: the run.
        :param result: the :class:`~pyrovae.train.loop.FitResult` that :func:`~pyrovae.fit` returns.
        """


@dataclass
class FitState:
    """What a callback sees of a run of :func:`~pyrovae.fit`, and how it stops it.

    :ivar torch.nn.Module vae: the module being trained.
    :ivar dict settings: the options of :func:`~pyrovae.fit` (``estimator``, ``epochs``, ``batch_size``,
        ``lr``, ``kl_warmup``, ``clip_norm``, ``patience``, ``seed``, ``optimizer``).
    :ivar dict config: the run's configuration (``config.json``; empty for a module that cannot describe
        itself).
    :ivar Path run_dir: the run directory, or ``None``.
    :ivar list history: the rows of the epochs committed so far (those of a resumed run's earlier calls too).
    :ivar int num_data: the training data points :math:`N`.
    :ivar int steps_per_epoch: optimizer steps in an epoch.
    :ivar int step: optimizer steps taken since the run began (a resumed run's earlier epochs counted).
    :ivar str stop_reason: why a callback stopped training, once one has.
    """

    vae: nn.Module
    settings: dict
    config: dict
    run_dir: Path | None
    history: list[dict]
    num_data: int
    steps_per_epoch: int
    step: int = 0
    stop_reason: str | None = field(default=None)

    @property
    def epoch(self) -> int:
        """The epochs committed so far."""
        return len(self.history)

    def stop(self, reason: str) -> None:
        """Stop training at the end of the epoch under way (after it is committed).

        :param str reason: why, in words: the result's summary and the checkpoint record it.
        """
        if not isinstance(reason, str) or not reason:
            raise ConfigError("FitState.stop(reason) takes the reason, a non-empty string")
        self.stop_reason = reason


def _per_step(callback) -> bool:
    """Whether ``callback`` asks for every step's loss: its ``per_step``, else whether it has one."""
    return bool(getattr(callback, "per_step", callable(getattr(callback, "on_step_end", None))))


class Callbacks:
    """The callbacks of a run, called on rank 0 alone (see the module), each checked when given.

    Under ``torchrun`` every rank ends each phase (the start, every epoch, the end) in one collective,
    whatever its own list holds: rank 0's stop, or the error one of its callbacks raised, reaches every rank,
    which stops with it (the other ranks with a :class:`~pyrovae.errors.RankError`) instead of waiting.

    :param callbacks: a list of objects with any of the hooks :data:`HOOKS`; a callback's optional
        ``check()`` method, called here, refuses its options before anything is written.
    """

    def __init__(self, callbacks: Iterable | None):
        if callbacks is None:
            callbacks = []
        if not isinstance(callbacks, Iterable) or isinstance(callbacks, str | bytes | Callback):
            raise ConfigError(
                f"callbacks takes a list of callbacks, such as callbacks=[MyCallback()]; got {callbacks!r}"
            )
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            hooks = any(callable(getattr(callback, hook, None)) for hook in HOOKS)
            if isinstance(callback, type) or not hooks:
                raise ConfigError(
                    f"callback {callback!r} has none of the methods {', '.join(HOOKS)}; pass instances of "
                    "pyrovae.Callback subclasses (an instance, not the class)"
                )
            check = getattr(callback, "check", None)
            if callable(check):
                check()
        self._error: Exception | None = None  # what a step's hook raised, settled at the epoch's end

    @property
    def per_step(self) -> bool:
        """Whether a callback on this rank asks for every step's loss (none after one has failed)."""
        return distributed.is_main() and self._error is None and any(_per_step(c) for c in self.callbacks)

    def _call(self, hook: str, *args) -> Exception | None:
        """Call ``hook`` of every callback, on rank 0; the error one raised, if any."""
        if not distributed.is_main():
            return None
        callbacks = [c for c in self.callbacks if hook != "on_step_end" or _per_step(c)]
        try:
            for callback in callbacks:
                method = getattr(callback, hook, None)
                if callable(method):
                    method(*args)
        except Exception as e:
            return e
        return None

    def _settle(self, state: FitState, error: Exception | None) -> None:
        """End a phase: share rank 0's stop and error with every rank, and raise the error."""
        if distributed.active():
            told = None if error is None else f"{type(error).__name__}: {error}"
            state.stop_reason, told = distributed.broadcast_object((state.stop_reason, told))
            if error is None and told is not None:
                raise RankError(f"a callback of rank 0 of the distributed run failed: {told}")
        if error is not None:
            raise error

    def fit_start(self, state: FitState) -> None:
        """Call ``on_fit_start`` (rank 0), then settle."""
        self._settle(state, self._call("on_fit_start", state))

    def step_end(self, state: FitState, loss: float) -> None:
        """Call ``on_step_end`` of those that ask for it (rank 0); an error waits for the epoch's end."""
        self._error = self._call("on_step_end", state, loss)

    def epoch_end(self, state: FitState, row: dict) -> None:
        """Call ``on_epoch_end`` (rank 0), unless a step's hook failed, then settle."""
        error, self._error = self._error or self._call("on_epoch_end", state, row), None
        self._settle(state, error)

    def fit_end(self, state: FitState, result) -> None:
        """Call ``on_fit_end`` (rank 0), then settle; ``result`` is the
        :class:`~pyrovae.train.loop.FitResult`, or ``None`` where training stopped with an error, which goes
        on being raised whatever a hook does, with no collective (another rank may be gone)."""
        if result is None:
            error = self._call("on_fit_end", state, None)
            if error is not None:
                warnings.warn(f"a callback's on_fit_end failed after training failed: {error}", stacklevel=3)
            return
        self._settle(state, self._call("on_fit_end", state, result))
