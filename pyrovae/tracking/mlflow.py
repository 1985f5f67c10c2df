"""MLflow (:class:`MLflowLogger`): a tracker run per training run, in any MLflow tracking store.

The store is the one named by ``tracking_uri``, else by ``MLFLOW_TRACKING_URI``, else a local one:
``sqlite:///LOG_DIR/mlflow.db`` with the figures under ``LOG_DIR/mlartifacts`` (MLflow 3 refuses the older
``./mlruns`` file store), which ``mlflow ui --backend-store-uri sqlite:///LOG_DIR/mlflow.db`` serves. The
client is MLflow's :class:`~mlflow.MlflowClient`, which sets nothing process-wide (no active run, no global
tracking URI). The configuration goes in as parameters, words (a verdict) as tags, and figures as artifacts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from pathlib import Path

from pyrovae.errors import ConfigError
from pyrovae.tracking.tracker import Tracker

__all__ = ["MLflowLogger"]


class MLflowLogger(Tracker):
    """Log a run to MLflow (see the module and :class:`~pyrovae.tracking.tracker.Tracker`). Needs
    ``pip install 'pyrovae[mlflow]'``.

    :param log_dir: where the local store goes when no tracking URI is set (default: ``logs`` in the run
        directory).
    :param str tracking_uri: the tracking store (a server's URL, ``sqlite:///...``, ``databricks``...).
    :param str experiment: the MLflow experiment, created if it does not exist.
    :param bool per_step: log every step's loss too.
    """

    kind = "mlflow"
    module = "mlflow"

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        *,
        tracking_uri: str | None = None,
        experiment: str = "pyrovae",
        per_step: bool = False,
    ):
        super().__init__(log_dir, per_step=per_step)
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.experiment = experiment

    def check(self) -> None:
        """Refuse an empty experiment name, and a tracking store given by URI that cannot be reached."""
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise ConfigError(f"the MLflow experiment (--experiment) must be a name; got {self.experiment!r}")
        if self.tracking_uri is None:
            return  # the local store, made where it goes
        from mlflow import MlflowClient

        try:
            with _quiet():
                MlflowClient(self.tracking_uri).search_experiments(max_results=1)
        except Exception as e:
            raise ConfigError(
                f"the MLflow tracking store {self.tracking_uri!r} cannot be used ({type(e).__name__}: "
                f"{str(e).splitlines()[0]}); check --tracking-uri (tracking_uri=) or MLFLOW_TRACKING_URI"
            ) from None

    def _open(self, name: str, log_dir: Path, previous: dict | None) -> dict:
        with _quiet():
            return self._start(name, log_dir, previous)

    def _start(self, name: str, log_dir: Path, previous: dict | None) -> dict:
        from mlflow import MlflowClient

        if previous is not None:
            self.client = MlflowClient(previous["tracking_uri"] or _local_store(log_dir))
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return {"tracking_uri": previous["tracking_uri"], "run_id": self.run_id}
        uri = self.tracking_uri or _local_store(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            local = None if self.tracking_uri else (log_dir / "mlartifacts").as_uri()
            experiment_id = self.client.create_experiment(self.experiment, artifact_location=local)
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        # the local store is found again from the log directory
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id}

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def _log_text(self, tag: str, text: str, step: int) -> None:
        self.client.set_tag(self.run_id, tag, text)

    def _log_image(self, tag: str, path: Path, step: int) -> None:
        folder = str(Path("figures", tag).parent)
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def close(self, failed: bool = False) -> None:
        """End the MLflow run, ``FINISHED`` or ``FAILED``.

        :param bool failed: whether training ended with an error.
        """
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _local_store(log_dir: Path) -> str:
    """The URI of the local store in ``log_dir``."""
    return f"sqlite:///{log_dir / 'mlflow.db'}"


@contextlib.contextmanager
def _quiet():
    """MLflow without its own use of SQLAlchemy's deprecated API and its notes on creating a store's tables,
    which are not the user's business (its logger's level is restored after)."""
    import mlflow  # noqa: F401 (which sets up its loggers when first imported)

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)
