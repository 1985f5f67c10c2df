r"""The sigmoid belief network (Neal 1992) as a Pyro model/guide pair: binary latents, sampled.

Layers of Bernoulli latents :math:`h_L \to \dots \to h_1 \to x`, each conditional
linear-logistic, for data points :math:`x_n` in the plate ``"data"``:

.. math:: p_\theta(h_L) = \mathrm{Bernoulli}(\sigma(b)), \qquad
          p_\theta(h_l \mid h_{l+1}) = \mathrm{Bernoulli}(\sigma(W_l h_{l+1} + c_l)), \qquad
          p_\theta(x \mid h_1) = \mathrm{Bernoulli}(\sigma(W_0 h_1 + c_0)),

every unit of a layer independent given the layer above, and the recognition network (guide) the
same structure bottom-up,

.. math:: q_\phi(h_1 \mid x) = \mathrm{Bernoulli}(\sigma(f_1(x))), \qquad
          q_\phi(h_{l+1} \mid h_l) = \mathrm{Bernoulli}(\sigma(f_{l+1}(h_l))),

with :math:`f_l` linear (the SBN recognition models of the NVIL, VIMCO and RWS papers) or, with ``hidden=``,
fully connected networks with hidden layers. The top bias :math:`b` is learned. The observation
:math:`x \mid h_1` may use any likelihood of :mod:`pyrovae.models.likelihoods` on the linear map
:math:`W_0 h_1 + c_0` (a Bernoulli's logits, a Gaussian's means); the papers' SBN has the Bernoulli.

The guide *samples* the latents (no enumeration: :math:`2^{200}` states), so their log-densities enter every
importance weight, :math:`\log w = \log p(x, h) - \log q(h \mid x)`: the pair is evaluated by
:func:`~pyrovae.log_likelihood`, :func:`~pyrovae.bounds` and :func:`~pyrovae.compare` as it stands, and
trained by the score-function estimators: ``"tracegraph"`` (Pyro's :class:`~pyro.infer.TraceGraph_ELBO`, each
site's learning signal its downstream cost), ``"elbo"`` (Pyro's :class:`~pyro.infer.Trace_ELBO`, whose
score-function term uses the whole minibatch's ELBO as every site's learning signal: unbiased, but of high
variance), and the multi-sample ``"vimco"`` and ``"rws"``. The reparameterized estimators (IWAE, DReG, STL)
refuse it. With ``baseline=True`` every latent site carries NVIL's input-dependent baseline
(:class:`~pyrovae.models.baselines.InputBaseline`), which ``"tracegraph"`` fits and subtracts from the site's
downstream cost, and every other estimator ignores.

Sites ``"h1"`` (next to :math:`x`) to ``"hL"`` (the top) and ``"x"`` lie in ``pyro.plate("data",
N)``, each layer one event (``.to_event(1)``); everything is indexed from the right, so the
particle plates of the evaluators broadcast.

References:

- R. M. Neal (1992), "Connectionist learning of belief networks", Artificial Intelligence 56.
- A. Mnih and K. Gregor (2014), "Neural Variational Inference and Learning in Belief Networks", ICML.
- J. Bornschein and Y. Bengio (2015), "Reweighted Wake-Sleep", ICLR.
- A. Mnih and D. J. Rezende (2016), "Variational Inference for Monte Carlo Objectives", ICML.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.errors import ConfigError
from pyrovae.handlers import DATA_PLATE
from pyrovae.models.baselines import InputBaseline
from pyrovae.models.likelihoods import Likelihood
from pyrovae.models.nn import MLPDecoder, mlp
from pyrovae.models.nn import activation as check_activation
from pyrovae.models.vae import LatentModel
from pyrovae.options import UNITS, check_options

__all__ = ["SBN", "check_sizes"]


def check_sizes(name: str, sizes: Sequence[int], what: str) -> tuple[int, ...]:
    """``sizes`` as a tuple if it is a non-empty sequence of layer sizes (integers from 1 to
    ``2**24``), else a :class:`~pyrovae.errors.ConfigError` naming ``name`` and ``what`` it means."""
    if isinstance(sizes, int) and not isinstance(sizes, bool):
        sizes = (sizes,)
    ok = isinstance(sizes, Sequence) and not isinstance(sizes, str) and len(sizes) > 0
    if not ok or not all(UNITS.admits(s) for s in sizes):
        raise ConfigError(
            f"{name} must be a non-empty sequence of layer sizes, integers from 1 to {int(UNITS.high)} "
            f"({what}); got {sizes!r}"
        )
    return tuple(int(s) for s in sizes)


class SBN(LatentModel):
    r"""A sigmoid belief network of Bernoulli latent layers with a linear-logistic recognition network
    (see the module's description).

    :param event_shape: shape of one data point, e.g. ``(1, 28, 28)`` or ``784``.
    :param latent_sizes: the numbers of units of :math:`h_1, \dots, h_L`, bottom (next to
        :math:`x`) first: ``(200,)`` is the one-layer SBN of the NVIL and VIMCO papers,
        ``(200, 200, 200)`` their three-layer one.
    :param likelihood: a name from :data:`pyrovae.models.likelihoods.LIKELIHOODS` or a
        :class:`~pyrovae.models.likelihoods.Likelihood`, on the logits (or means) :math:`W_0 h_1 + c_0`.
    :param hidden: hidden layer sizes of every recognition network :math:`f_l` (default none: the papers'
        linear-logistic recognition layers). The generative conditionals are always linear-logistic.
    :param activation: nonlinearity of those hidden layers (see :data:`pyrovae.models.nn.ACTIVATIONS`).
    :param baseline: give every latent site NVIL's input-dependent baseline for
        ``"tracegraph"`` (see :mod:`pyrovae.models.baselines`).
    :param likelihood_scale: standard deviation of a Gaussian likelihood (initial value if learned).
    """

    def __init__(
        self,
        event_shape: int | Sequence[int] = (1, 28, 28),
        latent_sizes: Sequence[int] = (200,),
        likelihood: str | Likelihood = "bernoulli",
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        baseline: bool = True,
        likelihood_scale: float = 1.0,
    ):
        sizes = check_sizes("latent_sizes", latent_sizes, "the units of h1, h2, ..., bottom first")
        check_options(hidden=list(hidden), likelihood_scale=likelihood_scale)
        check_activation(activation)
        if not isinstance(baseline, bool):
            raise ConfigError(f"baseline must be True or False; got {baseline!r}")
        super().__init__(event_shape, likelihood, likelihood_scale)
        self.latent_sizes = sizes
        #: b: logits of the top layer's prior p(h_L)
        self.top_logits = nn.Parameter(torch.zeros(sizes[-1]))
        #: W_l, c_l: h_{l+1} -> logits of p(h_l | h_{l+1}), for l = 1, ..., L-1
        self.transitions = nn.ModuleList(nn.Linear(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1))
        #: W_0, c_0: h_1 -> likelihood parameters of x
        self.decoder = MLPDecoder(self.event_shape, sizes[0], (), activation)
        #: f_1, ..., f_L: x -> logits of q(h_1 | x), h_l -> logits of q(h_{l+1} | h_l)
        inputs = (math.prod(self.event_shape), *sizes[:-1])
        self.recognition = nn.ModuleList(
            mlp([n_in, *hidden, n_out], activation) for n_in, n_out in zip(inputs, sizes, strict=True)
        )
        sites = [f"h{i}" for i in range(1, len(sizes) + 1)]
        #: NVIL's input-dependent baselines b_l(x) of the sites h1, ..., hL, or None
        self.baseline = InputBaseline(self.event_shape, sites) if baseline else None

    @property
    def num_layers(self) -> int:
        """:math:`L`, the number of latent layers."""
        return len(self.latent_sizes)

    def model(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> None:
        """:math:`h_L \\sim p(h_L)`, :math:`h_l \\sim p(h_l \\mid h_{l+1})` down to :math:`h_1`,
        :math:`x \\sim p(x \\mid h_1)`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``, observed at site
            ``"x"``; ``None`` to draw ``batch_size`` data points from the model.
        :param int batch_size: the number :math:`B` of data points drawn without ``x`` (ignored
            with ``x``).
        """
        with pyro.plate(DATA_PLATE, self._plate_size(x, batch_size)):
            h = pyro.sample(f"h{self.num_layers}", dist.Bernoulli(logits=self.top_logits).to_event(1))
            for layer in range(self.num_layers - 1, 0, -1):
                logits = self.transitions[layer - 1](h)
                h = pyro.sample(f"h{layer}", dist.Bernoulli(logits=logits).to_event(1))
            self._observe(self.decoder(h), x)

    def guide(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> torch.Tensor:
        """:math:`h_1 \\sim q(h_1 \\mid x)`, :math:`h_{l+1} \\sim q(h_{l+1} \\mid h_l)` up to
        :math:`h_L`, sampled; returns :math:`h_1`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        :param int batch_size: the model's argument, which the guide takes too; the guide needs ``x``.
        """
        if x is None:
            raise ConfigError("SBN.guide needs the data x: the recognition network q(h | x) reads it")
        n = self._plate_size(x, batch_size)
        baselines = contextlib.nullcontext() if self.baseline is None else self.baseline.attach(x)
        with pyro.plate(DATA_PLATE, n), baselines:
            h = [x.flatten(-len(self.event_shape))]  # x, h1, ..., hL
            for layer, net in enumerate(self.recognition, 1):
                h.append(pyro.sample(f"h{layer}", dist.Bernoulli(logits=net(h[-1])).to_event(1)))
            return h[1]

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """The likelihood means at ``num_samples`` ancestral draws :math:`h_L, \\dots, h_1` from
        the model: images to look at.

        :param int num_samples: the number of draws: the result has shape
            ``(num_samples, *event_shape)``.
        """
        h = dist.Bernoulli(logits=self.top_logits.expand(num_samples, -1)).sample()
        for transition in reversed(self.transitions):
            h = dist.Bernoulli(logits=transition(h)).sample()
        return self.likelihood.mean(self.decoder(h))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood mean at the most probable code of :math:`q(h_1 \\mid x)`, the units
        with :math:`q(h_{1j} = 1 \\mid x) > 1/2` (``x`` moved to the model's device).

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        """
        self._plate_size(x, None)
        x = x.to(self._reference().device).flatten(-len(self.event_shape))
        h1 = (self.recognition[0](x) > 0).to(x.dtype)
        return self.likelihood.mean(self.decoder(h1))
