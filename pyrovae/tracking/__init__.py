"""Experiment trackers: training runs and their analyses logged to TensorBoard and MLflow, which set many
runs side by side (a sweep of β, ten estimators), each an optional extra of pyrovae
(``pip install 'pyrovae[tensorboard]'``, ``'pyrovae[mlflow]'``).

A tracker is a :class:`~pyrovae.train.callbacks.Callback` of :func:`~pyrovae.fit`
(:class:`~pyrovae.tracking.tracker.Tracker` says what it logs and when); ``pyrovae train --log
tensorboard,mlflow`` gives it the command line's. It imports nothing above :mod:`pyrovae.train`.
"""

from pyrovae.tracking.mlflow import MLflowLogger
from pyrovae.tracking.tensorboard import TensorBoardLogger
from pyrovae.tracking.tracker import RECORD, Tracker, log_results, read_record

#: the trackers by name, as ``pyrovae train --log`` takes them
TRACKERS = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}

__all__ = ["MLflowLogger", "RECORD", "TRACKERS", "TensorBoardLogger", "Tracker", "log_results", "read_record"]
