"""The figure every plot of pyrovae draws on (:class:`Figure`, shown inline in a notebook, made without
pyplot), its atomic saving in the format its file name says, and the basic pictures: image grids,
reconstructions, learning curves."""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path

from pyrovae.errors import ConfigError

try:
    import matplotlib
except ValueError as e:  # matplotlib reads MPLBACKEND when it is imported, and refuses an unknown one
    raise ConfigError(
        f"matplotlib refuses the environment's MPLBACKEND={os.environ.get('MPLBACKEND')!r} ({e}); unset "
        "MPLBACKEND, or set it to a backend matplotlib knows, such as agg"
    ) from None
import matplotlib.figure
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.backend_bases import FigureCanvasBase

from pyrovae.devices import check_memory
from pyrovae.storage import atomic_path

__all__ = [
    "SAMPLES_TITLE",
    "Figure",
    "as_images",
    "check_grid",
    "figure",
    "file_format",
    "image_grid",
    "learning_curves",
    "reconstructions",
    "save",
    "show_image",
]


class Figure(matplotlib.figure.Figure):
    """A :class:`matplotlib.figure.Figure` that Jupyter shows inline whatever the backend. The inline backend
    of a notebook draws the figures of pyplot only; a figure made without pyplot, as every figure of pyrovae
    is, would be shown as the text ``<Figure size ...>``. This one renders itself as a PNG (``_repr_png_``)
    when it is the value of a cell or passed to ``display``."""

    def __init__(self, *args, **kwargs):  # documented here: matplotlib's own docstring is not valid reST
        """Arguments as for :class:`matplotlib.figure.Figure`."""
        super().__init__(*args, **kwargs)

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def figure(**kwargs) -> Figure:
    """A new :class:`Figure`, outside pyplot (``kwargs`` as for :class:`~matplotlib.figure.Figure`)."""
    return Figure(**kwargs)


def file_format(path: str | os.PathLike) -> str:
    """The format a figure saved at ``path`` is written in, named by its suffix (PNG without one):
    ``.png``, ``.pdf``, ``.svg``, ``.jpg``... any that matplotlib writes; another suffix is refused."""
    suffix = Path(path).suffix.lstrip(".").lower() or "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        raise ConfigError(
            f"cannot save a figure as {path}: matplotlib writes no .{suffix} files; end the name with one "
            f"of {', '.join('.' + f for f in sorted(formats))}"
        )
    return suffix


def save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Save ``fig`` at ``path`` (atomically) when a path is given, in the format its suffix names
    (:func:`file_format`); return it."""
    if path is not None:
        fmt = file_format(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
    return fig


def as_images(x: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` data as ``(N, H, W)`` grey-level or ``(N, H, W, 3)`` colour images, if it can be."""
    x = x.detach().float().cpu()
    if x.dim() == 4 and x.shape[1] in (1, 3):
        return x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    flat = x.reshape(x.shape[0], -1)
    side = math.isqrt(flat.shape[1])
    if side * side != flat.shape[1]:
        raise ValueError(f"cannot show data of shape {tuple(x.shape[1:])} as images")
    return flat.reshape(-1, side, side)


#: about what matplotlib takes for each image of a grid (measured: 320 KiB, drawn and saved), with a margin
IMAGE_BYTES = 400 * 2**10


def check_grid(name: str, value: int, num_images: int, event_shape) -> None:
    """Refuse, before the work, option ``name`` = ``value`` asking for a picture of ``num_images`` images of
    ``event_shape`` (with the model's work to make them) that would not fit in memory."""
    need = num_images * (IMAGE_BYTES + 16 * math.prod(event_shape))
    check_memory(name, value, need, torch.device("cpu"), f"a picture of {num_images} images")


#: the title of a grid of the model's samples (:meth:`pyrovae.VAE.sample`): what is drawn
SAMPLES_TITLE = "samples: the means of p(x | z), z drawn from p(z)"


def image_grid(
    images: torch.Tensor,
    path=None,
    *,
    ncols: int = 10,
    title: str | None = None,
    row_labels: Sequence[str] = (),
) -> Figure:
    """A grid of images (values in [0, 1]), ``ncols`` to a row, each row labelled on its left by the
    next of ``row_labels`` (cycled; none if empty)."""
    images = as_images(images)
    nrows = max(1, math.ceil(len(images) / ncols))
    fig = figure(figsize=(ncols * 0.9 + (0.6 if row_labels else 0), nrows * 0.9 + (0.4 if title else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images, strict=False):
        show_image(ax, img)
    for ax, label in zip(axes[:, 0], itertools.cycle(row_labels) if row_labels else (), strict=False):
        ax.text(-0.08, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def reconstructions(x: torch.Tensor, recon: torch.Tensor, path=None, *, ncols: int = 10) -> Figure:
    """Data (odd rows) above their reconstructions (even rows): the model's means at the code the guide gives
    each (for :class:`~pyrovae.VAE`, its mean)."""
    n = min(len(x), len(recon))
    rows = [part[i : min(i + ncols, n)] for i in range(0, n, ncols) for part in (x, recon)]
    title = "data and their reconstructions: the means of p(x | z), z the guide's code for x"
    return image_grid(torch.cat(rows), path, ncols=ncols, title=title, row_labels=("data", "recon."))


#: learning curves mark each epoch up to this many epochs (beyond, the markers would hide the line)
MARKED_EPOCHS = 30


def learning_curves(history: pd.DataFrame, path=None) -> Figure:
    """Training objective and validation bound per epoch, in nats per data point, with the best validation
    epoch marked. The vertical axis spans the epochs after the first tenth of the run (the second on, at
    least): the first epochs, often hundreds of nats above the rest, would flatten the convergence the figure
    is read for; a note gives the value of the first epoch when it lies off the scale."""
    fig = figure(figsize=(6, 4))
    ax = fig.subplots()
    columns = {"train_loss": ("train (objective)", "o")}
    if "valid_loss" in history and history["valid_loss"].notna().any():
        columns["valid_loss"] = ("validation", "s")
    marked = len(history) <= MARKED_EPOCHS
    for name, (label, marker) in columns.items():
        ax.plot(history["epoch"], history[name], marker=marker if marked else None, markersize=4, label=label)
    if "valid_loss" in columns:
        best = history["epoch"][history["valid_loss"].idxmin()]
        ax.axvline(best, color="0.5", linestyle=":", label=f"best validation (epoch {best})")
    later = history[list(columns)].to_numpy(dtype=float)[max(1, len(history) // 10) :]
    if np.isfinite(later).sum() >= 2:
        low, high = np.nanmin(later), np.nanmax(later)
        pad = 0.05 * (high - low) or 1.0
        first = float(history["train_loss"].iloc[0])
        ax.set_ylim(low - pad, high + pad)
        if first > high + pad:
            ax.set_title(f"the first epochs lie above the scale (epoch 1: {first:.1f} nats)", fontsize=9)
    ax.set(xlabel="epoch", ylabel="negative bound (nats per data point)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return save(fig, path)


def show_image(ax: Axes, image: torch.Tensor) -> None:
    """Draw one image (values clamped to [0, 1]) on ``ax``, without ticks."""
    ax.imshow(image.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set(xticks=[], yticks=[])
