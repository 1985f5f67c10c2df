r"""Callbacks: code of the user's that :func:`~pyrovae.fit` calls as it trains.

A callback is an object with any of four methods, each given the :class:`FitState` of the run:

- ``on_fit_start(state)``: once, before the first epoch of this call (after a resumed run's state is loaded);
- ``on_step_end(state, loss)``: after every optimizer step, with the minibatch's loss in nats per data point;
- ``on_epoch_end(state, row)``: after every epoch, once it is committed to the run directory, with its row of
  the history (``epoch``, ``train_loss``, ``valid_loss``, ``beta``, ``lr``, ``seconds``);
- ``on_fit_end(state, result)``: once, with the :class:`~pyrovae.train.loop.FitResult` about to be returned.

Subclass :class:`Callback`, whose methods do nothing, and define those you need. A callback stops training by
calling :meth:`FitState.stop`: the epoch under way finishes and is committed, and training ends there, with
the reason in :attr:`~pyrovae.train.loop.FitResult.stop_reason` and in the checkpoint (a resumed run that a
callback stopped is returned as it is, as one stopped early is).

Under ``torchrun`` the callbacks are called on rank 0 alone; a stop it asks for reaches every rank at the
epoch's end (one collective per epoch). Only a callback that defines ``on_step_end`` (or whose ``per_step``
is true) is called after every step: the others add nothing to a step, so no host synchronization either.

Example: stop once the validation bound is within ``gap`` nats of a target::

    class StopAtTarget(pyrovae.Callback):
        def __init__(self, target: float):
            self.target = target

        def on_epoch_end(self, state, row):
            if row["valid_loss"] <= self.target:
                state.stop(f"the validation bound reached {self.target}")

    pyrovae.fit(vae, train, valid, epochs=100, callbacks=[StopAtTarget(100.0)])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from pyrovae import distributed
from pyrovae.errors import ConfigError

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
    """The callbacks of a run, called on rank 0 alone (see the module).

    :param callbacks: objects with any of the hooks :data:`HOOKS`.
    """

    def __init__(self, callbacks: Iterable | None):
        self.callbacks = list(callbacks or ())
        for callback in self.callbacks:
            hooks = any(callable(getattr(callback, hook, None)) for hook in HOOKS)
            if isinstance(callback, type) or not hooks:
                raise ConfigError(
                    f"callback {callback!r} has none of the methods {', '.join(HOOKS)}; pass instances of "
                    "pyrovae.Callback subclasses (an instance, not the class)"
                )
        main = distributed.is_main()
        self._every = [c for c in self.callbacks if main and _per_step(c)]
        self._main = self.callbacks if main else []

    @property
    def per_step(self) -> bool:
        """Whether a callback asks for every step's loss."""
        return bool(self._every)

    def _call(self, hook: str, callbacks: list, *args) -> None:
        for callback in callbacks:
            method = getattr(callback, hook, None)
            if callable(method):
                method(*args)

    def fit_start(self, state: FitState) -> None:
        self._call("on_fit_start", self._main, state)

    def step_end(self, state: FitState, loss: float) -> None:
        self._call("on_step_end", self._every, state, loss)

    def epoch_end(self, state: FitState, row: dict) -> None:
        """Call the hooks, then share rank 0's decision to stop (if any) with every rank."""
        self._call("on_epoch_end", self._main, state, row)
        if self.callbacks:
            state.stop_reason = distributed.broadcast_object(state.stop_reason)

    def fit_end(self, state: FitState, result) -> None:
        self._call("on_fit_end", self._main, state, result)
