"""TensorBoard (:class:`TensorBoardLogger`): event files that ``tensorboard --logdir`` shows.

Each run writes into its own folder, ``LOG_DIR/tensorboard/NAME`` (``NAME`` the run directory's name, with
``-2``, ``-3``... if another run has it), so that a sweep whose runs share ``--log-dir`` shows as one
TensorBoard of many runs: ``tensorboard --logdir LOG_DIR/tensorboard``. The configuration goes in as
hyperparameters (the HPARAMS tab, which sets the runs side by side) and as text. Scalars are stored by
TensorBoard as 32-bit floats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pyrovae.tracking.tracker import Tracker

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(Tracker):
    """Log a run to TensorBoard with :class:`torch.utils.tensorboard.SummaryWriter` (see the module and
    :class:`~pyrovae.tracking.tracker.Tracker`). Needs ``pip install 'pyrovae[tensorboard]'``.

    :param log_dir: the folder of the event files' folders (default: ``logs`` in the run directory).
    :param bool per_step: log every step's loss too.
    """

    kind = "tensorboard"
    module = "tensorboard"

    def _open(self, name: str, log_dir: Path, previous: dict | None) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        if previous is not None:
            folder = log_dir / "tensorboard" / previous["folder"]
        else:
            base = log_dir / "tensorboard" / name
            folder, n = base, 1
            while folder.exists() and any(folder.iterdir()):  # another run's: never mixed with it
                n += 1
                folder = base.with_name(f"{name}-{n}")
        self.writer = SummaryWriter(log_dir=str(folder))
        return {"folder": folder.name}

    def _log_params(self, params: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = {"valid_loss": float("nan"), "train_loss": float("nan")}  # the columns of the HPARAMS tab
        for summary in hparams(params, metrics):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", f"```\n{json.dumps(params, indent=1)}\n```", 0)

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def _log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def _log_image(self, tag: str, path: Path, step: int) -> None:
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def close(self, failed: bool = False) -> None:
        """Flush the event file and close it.

        :param bool failed: whether training ended with an error (TensorBoard records no status).
        """
        self.writer.close()
