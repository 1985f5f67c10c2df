"""Effect handlers that let trainers and estimators work on any model/guide pair.

pyrovae asks one thing of a model/guide pair: every per-datapoint sample site lives inside a
plate named ``"data"`` (the *data plate*), whose size is the number of data points passed in.
The handlers here act on sites by their plate membership, so they apply unchanged to the
built-in :class:`~pyrovae.VAE` and to any user-written pair.
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

DATA_PLATE = "data"


def in_plate(msg: dict, name: str) -> bool:
    """Whether the site ``msg`` lies inside the plate called ``name``."""
    return any(frame.name == name for frame in msg["cond_indep_stack"])


class DataScaleMessenger(Messenger):
    r"""Scale every site inside the data plate by ``num_data / batch_size``.

    A minibatch of :math:`B` of the :math:`N` data points then gives an unbiased estimate of
    the full-data objective, :math:`\sum_{n=1}^N \mathcal{L}_n \approx \frac{N}{B}\sum_{b=1}^B
    \mathcal{L}_b`, exactly as Pyro's own plate subsampling does (Hoffman et al. 2013), while
    the indices of the minibatch are chosen by a data loader (or a distributed sampler) rather
    than by the plate. Sites outside the data plate (global latents) are left unscaled.
    """

    def __init__(self, scale: float, plate: str = DATA_PLATE):
        super().__init__()
        self.scale = float(scale)
        self.plate = plate

    def _process_message(self, msg):
        if msg["type"] == "sample" and in_plate(msg, self.plate):
            msg["scale"] = self.scale * msg["scale"]


class LatentScaleMessenger(Messenger):
    r"""Scale the log-density of every *latent* (unobserved) sample site by ``beta``.

    Applied to both model and guide this turns the ELBO into

    .. math:: \mathbb{E}_q[\log p(x\mid z)] + \beta\,\mathbb{E}_q[\log p(z) - \log q(z\mid x)]
              = \mathbb{E}_q[\log p(x\mid z)] - \beta\,\mathrm{KL}(q\,\|\,p),

    the β-VAE objective (Higgins et al. 2017) and KL warm-up (Bowman et al. 2016; Sønderby et al. 2016) when
    ``beta`` is annealed from 0 to 1. The likelihood terms (observed sites) keep their scale.
    """

    def __init__(self, beta: float | torch.Tensor):
        super().__init__()
        # a tensor (a captured step's input, :mod:`pyrovae.train.capture`) always scales, whatever its value
        self.beta = beta if torch.is_tensor(beta) else float(beta)

    def _process_message(self, msg):
        scaled = torch.is_tensor(self.beta) or self.beta != 1.0
        if msg["type"] == "sample" and not msg["is_observed"] and scaled:
            msg["scale"] = self.beta * msg["scale"]


def scale_data(fn=None, *, scale: float, plate: str = DATA_PLATE):
    """Handler form of :class:`DataScaleMessenger` (usable as a decorator)."""
    msngr = DataScaleMessenger(scale, plate)
    return msngr(fn) if fn is not None else msngr


def scale_latents(fn=None, *, beta: float | torch.Tensor):
    """Handler form of :class:`LatentScaleMessenger` (usable as a decorator)."""
    msngr = LatentScaleMessenger(beta)
    return msngr(fn) if fn is not None else msngr
