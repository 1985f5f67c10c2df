r"""Input-dependent baselines for the score-function gradients of discrete latents (Mnih & Gregor 2014).

For a latent site :math:`h_l` sampled (not reparameterized) from :math:`q_\phi(h_l \mid \cdot)`,
Pyro's :class:`~pyro.infer.TraceGraph_ELBO` estimates the guide's gradient with the score function
times the *downstream cost* of the site, the terms of :math:`\log p(x, h) - \log q(h \mid x)` that
depend on :math:`h_l` (Schulman et al. 2015):

.. math:: \nabla_\phi \mathcal L \approx \big(c_l(x, h) - b_l(x)\big)\,
          \nabla_\phi \log q_\phi(h_l \mid \cdot),

where subtracting a baseline :math:`b_l(x)` that does not depend on :math:`h_l` leaves the estimator unbiased
and, the closer :math:`b_l(x)` is to :math:`\mathbb E[c_l \mid x]`, reduces its variance.
:class:`InputBaseline` is NVIL's *input-dependent* baseline: a small network of :math:`x` alone, one output
per latent site, fitted by Pyro to the downstream costs by least squares, :math:`\sum_n (c_{l,n} -
b_l(x_n))^2` added to the surrogate loss (the baseline's parameters get no other gradient, and the model's and
guide's none from it). A guide samples its latents inside ``with baseline.attach(x):``, which sets each site's
Pyro option ``infer["baseline"]["baseline_value"]``; every estimator but ``"tracegraph"`` ignores it.

The downstream costs are Pyro's, scaled like every log-density in the trace: under :func:`~pyrovae.fit`,
:math:`N/B` times the per-datapoint costs (the minibatch scale). The baseline is therefore multiplied by the
site's scale where it is attached (:class:`BaselineMessenger`), so that the network itself predicts
per-datapoint costs, in nats, whatever the batch size. Its output starts at zero and learns the costs' level
at the pace of the optimizer (for Adam at ``lr=1e-3``, some hundreds of steps for costs of some tens of nats);
until then it reduces the variance less, and it never biases the gradient. Mnih & Gregor's running centering
and variance normalization of the learning signal are not applied. Pyro's decaying-average baseline
(``use_decaying_avg_baseline``) is not used: it keeps one average per *position in the minibatch*, in the
global parameter store, which fails as soon as the batch size changes (the last batch of an epoch, an
evaluation). Under KL annealing the latent sites' scale includes :math:`\beta` and the baseline with it, a
little off the likelihood's part of the cost. The baseline's squared-error gradient is large, which matters
for a global gradient-norm clip (``clip_norm``) only.

References:

- A. Mnih and K. Gregor (2014), "Neural Variational Inference and Learning in Belief Networks", ICML (the
  input-dependent baseline; in its experiments, a network with one hidden layer of 100 tanh units).
- J. Schulman, N. Heess, T. Weber and P. Abbeel (2015), "Gradient Estimation Using Stochastic
  Computation Graphs", NeurIPS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from pyro.poutine.messenger import Messenger
from torch import nn

from pyrovae.models.nn import mlp

__all__ = ["BaselineMessenger", "InputBaseline"]


class BaselineMessenger(Messenger):
    """Give each sample site named in ``sites`` the baseline ``values[..., sites[name]]``, one per
    data point, times the site's scale, in the shape of the site's downstream cost (the site's
    batch shape, plates included, leading 1s dropped, as Pyro's
    :class:`~pyro.infer.TraceGraph_ELBO` sums it); so it serves vectorized particles too.

    It acts after the site is sampled, when every enclosing handler (the minibatch scale, the
    plates) has acted on it, and sets ``infer["baseline"]["baseline_value"]`` in the site's
    ``infer`` dict, which the trace shares.
    """

    def __init__(self, values: torch.Tensor, sites: Mapping[str, int]):
        super().__init__()
        self.values = values
        self.sites = dict(sites)

    def _pyro_post_sample(self, msg) -> None:
        index = self.sites.get(msg["name"])
        if index is None or msg["is_observed"]:
            return
        shape = list(msg["fn"].batch_shape)
        summed = shape[next((i for i, size in enumerate(shape) if size != 1), len(shape)) :]
        value = (msg["scale"] * self.values[..., index]).expand(shape).reshape(summed)
        msg["infer"]["baseline"] = {"baseline_value": value}


class InputBaseline(nn.Module):
    r"""The baselines :math:`b_s(x)` of the latent sites ``sites``, by one network
    :math:`x \mapsto \mathbb R^S` with hidden layers ``hidden`` (default: NVIL's single layer of 100
    tanh units) and a linear output, whose weights start at zero (every baseline 0 at first).

    :param event_shape: shape of one data point.
    :param sites: the names of the latent sites (one output each).
    :param hidden: hidden layer sizes.
    :param activation: their nonlinearity (see :data:`pyrovae.models.nn.ACTIVATIONS`).
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        sites: Sequence[str],
        hidden: Sequence[int] = (100,),
        activation: str = "tanh",
    ):
        super().__init__()
        self.event_dim = len(event_shape)
        self.sites = {name: i for i, name in enumerate(sites)}
        self.net = mlp([math.prod(event_shape), *hidden, len(self.sites)], activation)
        for parameter in self.net[-1].parameters():
            nn.init.zeros_(parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., S)`` baselines, per data point, of the data ``(..., *event_shape)`` (detached)."""
        return self.net(x.detach().flatten(-self.event_dim))

    def attach(self, x: torch.Tensor) -> BaselineMessenger:
        """A handler that gives the sites sampled inside it their baselines at the data ``x``:
        ``with baseline.attach(x): ...`` around a guide's sample statements."""
        return BaselineMessenger(self(x), self.sites)
