r"""Figures: samples, reconstructions, learning curves, pictures of the latent space, and the
figures of results (a ladder of bounds, out-of-distribution detection, gradient figures of
estimators, latent usage), which their ``plot`` methods draw.

Every function returns a :class:`Figure` (a :class:`matplotlib.figure.Figure`), which a notebook
shows inline, and saves it as a PNG, atomically, only when given ``path``. Figures are made without
pyplot, so importing pyrovae leaves matplotlib's backend and pyplot's list of open figures alone.

The pictures of the latent space (:func:`interpolate`, :func:`traverse`, :func:`embedding`,
:func:`prior_samples`) take any model/guide *pair*: a :class:`~pyrovae.VAE`, :class:`~pyrovae.HVAE`,
:class:`~pyrovae.CVAE`, an object of your own with ``model`` and ``guide`` methods, or a ``(model, guide)``
tuple. They compute on the model's device through :mod:`pyrovae.analysis.latent_space`: encodings are the
guide's posterior means :math:`\mathbb{E}_q[z \mid x]`, and images are the means of the likelihood
:math:`p(x \mid z)`. A *data row* passed to them is the model's arguments for one data point: a tensor, or a
tuple such as ``(x, c)`` for a CVAE.
"""

from pyrovae.plots.figures import (
    SAMPLES_TITLE,
    Figure,
    as_images,
    figure,
    image_grid,
    learning_curves,
    reconstructions,
    save,
)
from pyrovae.plots.latent_space import (
    EMBEDDINGS,
    INTERPOLATIONS,
    embedding,
    interpolate,
    prior_samples,
    traverse,
)
from pyrovae.plots.results import detection, gradients, ladder, latent_usage

__all__ = [
    "EMBEDDINGS",
    "INTERPOLATIONS",
    "SAMPLES_TITLE",
    "Figure",
    "as_images",
    "detection",
    "embedding",
    "figure",
    "gradients",
    "image_grid",
    "interpolate",
    "ladder",
    "latent_usage",
    "learning_curves",
    "prior_samples",
    "reconstructions",
    "save",
    "traverse",
]
