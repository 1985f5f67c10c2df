"""What every experiment tracker does with a run (:class:`Tracker`), and the run directory's record of its
trackers (``tracking.json``), through which later commands log into the same tracker run
(:func:`log_results`).

A tracker is a :class:`~pyrovae.train.callbacks.Callback`. Given to :func:`~pyrovae.fit`, it logs

- at the start, the run's configuration as hyperparameters (its options, or :func:`~pyrovae.fit`'s for a
  module that cannot describe itself);
- after every epoch, the history's row (``train_loss``, ``valid_loss``, ``beta``, ``lr``, ``seconds``) at step
  ``epoch``, under the names of ``history.csv``; with ``per_step``, every step's loss as ``step/train_loss``
  at the step's number since the run began;
- at the end, the run directory's figures (learning curves, samples, reconstructions) as images.

With a run directory it records itself in ``tracking.json`` there. A resumed run logs on into the same
tracker run, and every command that analyses the run (``pyrovae train``'s final evaluation, ``evaluate``,
``latents``, ``score``, ``detect``, ``compare``, ``sample``, ``reconstruct``) logs its results there too, at
the step of the epoch its parameters come from: each number of its JSON summary as ``NAME/key`` (``NAME``
the output set, such as ``evaluation-test``; nested keys joined by dots), its words (a verdict) as text, and
its figures as images.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import warnings
from pathlib import Path

from pyrovae.errors import ConfigError
from pyrovae.results import scalars
from pyrovae.storage import write_json
from pyrovae.train.callbacks import Callback, FitState

__all__ = ["RECORD", "FIGURES", "Tracker", "log_results", "read_record", "require"]

#: the file of a run directory that records its trackers: ``{kind: record}``
RECORD = "tracking.json"
#: the figures :func:`~pyrovae.fit` draws in a run directory, logged at the end of training
FIGURES = ("learning_curves.png", "samples.png", "reconstructions.png")
#: where trackers write, under a run directory, unless told otherwise
DEFAULT_LOG_DIR = "logs"


def require(module: str, extra: str) -> None:
    """Refuse a tracker whose package is missing, naming the pip command that installs it."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"logging to {extra} needs the {module} package, which is not installed: "
            f"pip install 'pyrovae[{extra}]'"
        )


def read_record(run_dir: str | os.PathLike | None) -> dict:
    """The trackers recorded in ``run_dir`` (``{kind: record}``; empty without a record)."""
    if run_dir is None:
        return {}
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path} is damaged ({e}); remove it to stop logging this run to its trackers"
        ) from None
    return record if isinstance(record, dict) else {}


def _numbers(values: dict) -> dict[str, float]:
    """The finite numbers among ``values`` (booleans and words left out)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def tracked_name(key: str) -> str:
    """``key`` as every tracker takes a name: parentheses dropped, and any character but letters, digits
    and ``_-. :/`` replaced by ``_`` (``ELBO (analytic KL).mean`` gives ``ELBO analytic KL.mean``)."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("(", "").replace(")", ""))


def _words(values: dict) -> dict[str, str]:
    return {k: v for k, v in values.items() if isinstance(v, str)}


def _stored(path: Path, run_dir: Path | None) -> str:
    """``path`` as ``tracking.json`` keeps it: relative to the run directory where it lies inside it, so that
    a run directory moved with its logs still finds them."""
    path = path.resolve()
    if run_dir is not None and path.is_relative_to(run_dir.resolve()):
        return str(path.relative_to(run_dir.resolve()))
    return str(path)


def _found(stored: str, run_dir: Path | None) -> Path:
    """The path ``tracking.json`` keeps as ``stored`` (see :func:`_stored`)."""
    path = Path(stored)
    return path if path.is_absolute() or run_dir is None else run_dir / path


class Tracker(Callback):
    """A :class:`~pyrovae.train.callbacks.Callback` that logs a run to an experiment tracker (see the
    module); :class:`~pyrovae.tracking.TensorBoardLogger` and :class:`~pyrovae.tracking.MLflowLogger` define
    how.

    A tracker that cannot be opened stops :func:`~pyrovae.fit` before the first epoch, with a message. One
    that fails later (a server gone) is left out from then on, with a warning: training goes on, and the run
    directory keeps every figure it would have logged.

    :param log_dir: where it writes (default: ``logs`` in the run directory; a resumed run's own).
    :param bool per_step: log every step's loss too.
    """

    #: the name of the tracker: its key in ``tracking.json`` and in ``pyrovae train --log``
    kind = ""
    #: the module it needs, and the extra of pyrovae that installs it
    module = ""

    def __init__(self, log_dir: str | os.PathLike | None = None, *, per_step: bool = False):
        require(self.module, self.kind)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._per_step = bool(per_step)
        self._failed = False
        self._opened = False  # between on_fit_start and on_fit_end

    @property
    def per_step(self) -> bool:
        return self._per_step

    # what a tracker defines: where it writes, and how it writes each kind of value

    def _open(self, name: str, log_dir: Path, previous: dict | None) -> dict:
        """Start logging the run ``name`` into ``log_dir`` (or carry on the tracker run of ``previous``, its
        record in ``tracking.json``); return what, besides ``log_dir`` and ``name``, reopens it (JSON, no
        path of ``log_dir``'s)."""
        raise NotImplementedError

    def _log_params(self, params: dict[str, str | int | float | bool]) -> None:
        """Log the run's configuration, once."""
        raise NotImplementedError

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log finite numbers by name at ``step``."""
        raise NotImplementedError

    def _log_text(self, tag: str, text: str, step: int) -> None:
        """Log words (a verdict) by name."""
        raise NotImplementedError

    def _log_image(self, tag: str, path: Path, step: int) -> None:
        """Log the PNG file ``path`` by name."""
        raise NotImplementedError

    def close(self, failed: bool = False) -> None:
        """Flush and end the tracker run.

        :param bool failed: whether training ended with an error.
        """

    def check(self) -> None:
        """Refuse the tracker's options before anything is written (:mod:`pyrovae.train.callbacks`)."""

    @classmethod
    def reopen(cls, record: dict, run_dir: str | os.PathLike) -> Tracker:
        """The tracker of a record, open on its tracker run.

        :param dict record: its entry in a run directory's ``tracking.json`` (:func:`read_record`).
        :param run_dir: the run directory.
        """
        log_dir = _found(record["log_dir"], Path(run_dir))
        tracker = cls(log_dir)
        tracker._open(record["name"], log_dir.resolve(), record)
        return tracker

    def _safely(self, log, *args) -> None:
        """``log(*args)``, unless the tracker has failed; a failure leaves it out from then on."""
        if self._failed:
            return
        try:
            log(*args)
        except Exception as e:
            self._failed = True
            warnings.warn(
                f"logging to {self.kind} failed ({type(e).__name__}: {e}); training goes on without it, and "
                "the run directory keeps every figure",
                stacklevel=2,
            )

    # the callback

    def on_fit_start(self, state: FitState) -> None:
        """Open the tracker run (that of the run directory's record when resuming), record it in
        ``tracking.json`` and log the configuration of a new run.

        :param state: the run so far.
        """
        run_dir = state.run_dir
        previous = read_record(run_dir).get(self.kind)
        if previous is not None:
            log_dir = _found(previous["log_dir"], run_dir)
            if self.log_dir is not None and self.log_dir.resolve() != log_dir.resolve():
                raise ConfigError(
                    f"the run logs to {self.kind} in {log_dir}; resume it with that log directory "
                    "(--log-dir), or with none"
                )
        elif self.log_dir is not None or run_dir is not None:
            log_dir = self.log_dir or run_dir / DEFAULT_LOG_DIR
        else:
            raise ConfigError(
                f"{type(self).__name__} needs a log_dir when fit() has no run_dir; pass one of them"
            )
        name = run_dir.name if run_dir is not None else log_dir.name
        self._failed = False
        try:
            record = self._open(name, log_dir.resolve(), previous)
            self._opened = True
        except Exception as e:
            raise ConfigError(
                f"{self.kind} cannot log into {log_dir} ({type(e).__name__}: {e}); check its options "
                "(--log-dir, --tracking-uri)"
            ) from None
        if run_dir is not None:
            record = {**record, "log_dir": _stored(log_dir, run_dir), "name": name, "per_step": self.per_step}
            write_json(run_dir / RECORD, {**read_record(run_dir), self.kind: record})
        if previous is None:
            params = state.config or state.settings  # a list or None as config.json writes it: in JSON
            plain = (int, float, str, bool)
            self._safely(
                self._log_params, {k: v if isinstance(v, plain) else json.dumps(v) for k, v in params.items()}
            )

    def on_step_end(self, state: FitState, loss: float) -> None:
        """Log ``step/train_loss`` (with ``per_step``).

        :param state: the run so far.
        :param float loss: the step's loss.
        """
        self._safely(self._log_metrics, _numbers({"step/train_loss": loss}), state.step)

    def on_epoch_end(self, state: FitState, row: dict) -> None:
        """Log the history's row at step ``epoch``.

        :param state: the run so far.
        :param dict row: the epoch's row.
        """
        self._safely(
            self._log_metrics, _numbers({k: v for k, v in row.items() if k != "epoch"}), row["epoch"]
        )

    def on_fit_end(self, state: FitState, result) -> None:
        """Log the run directory's figures (:data:`FIGURES`, drawn with the parameters the result holds) at
        their epoch, and close.

        :param state: the run.
        :param result: the :class:`~pyrovae.train.loop.FitResult`, or ``None`` when training failed.
        """
        if not self._opened:
            return
        if result is not None and state.run_dir is not None and state.history:
            step = result.best_epoch or state.history[-1]["epoch"]
            for name in FIGURES:
                if (state.run_dir / name).is_file():
                    self._safely(self._log_image, Path(name).stem, state.run_dir / name, step)
        self._failed, self._opened = False, False  # close it whatever happened
        self._safely(self.close, result is None)

    def log_results(self, name: str, results: dict, figures=(), step: int = 0) -> None:
        """Log the results of an analysis: the numbers and words of ``results`` (nested keys joined by dots)
        as ``name/key`` (:func:`tracked_name`), and the image files ``figures``, at ``step``.

        :param str name: the analysis (its output set).
        :param dict results: its JSON summary.
        :param figures: its PNG files.
        :param int step: the epoch of the parameters analysed.
        """
        flat = {tracked_name(f"{name}/{k}"): v for k, v in scalars(results).items()}
        self._log_metrics(_numbers(flat), step)
        for tag, text in _words(flat).items():
            self._log_text(tag, text, step)
        for path in figures:
            self._log_image(tracked_name(f"{name}/{Path(path).stem}"), Path(path), step)


def log_results(run_dir: str | os.PathLike, name: str, results: dict, figures=(), step: int = 0) -> None:
    """Log an analysis's results into every tracker recorded in ``run_dir`` (see the module); nothing
    without one. A tracker that cannot be reopened (its package gone, a damaged record) or fails is skipped
    with a warning: the command's files are written all the same.

    :param run_dir: the run directory.
    :param str name: the analysis (its output set; only its file name counts), the prefix of every name
        logged.
    :param dict results: its JSON summary.
    :param figures: its image files (those but PNG files are left out).
    :param int step: the epoch of the parameters analysed.
    """
    from pyrovae.tracking import TRACKERS

    try:
        records = read_record(run_dir)
    except ConfigError as e:
        warnings.warn(f"{e}; {name} was not logged", stacklevel=2)
        return
    for kind, record in records.items():
        if kind not in TRACKERS:
            continue
        try:
            tracker = TRACKERS[kind].reopen(record, run_dir)
            tracker.log_results(
                Path(name).name, results, [p for p in figures if Path(p).suffix == ".png"], step
            )
            tracker.close()
        except Exception as e:  # a tracker's failure (a server gone, say) leaves the command's files alone
            warnings.warn(f"{name} could not be logged to {kind}: {type(e).__name__}: {e}", stacklevel=2)
