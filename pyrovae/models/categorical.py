r"""A VAE with categorical latents, sampled or relaxed by the Concrete (Gumbel-softmax) distribution.

The latent code is :math:`M` independent categorical variables of :math:`C` categories each, one-hot vectors
:math:`z_m \in \{e_1, \dots, e_C\}`, for data points :math:`x_n` in the plate ``"data"``:

.. math:: p(z) = \prod_{m=1}^M \mathrm{Cat}(z_m;\ \tfrac1C \mathbf 1), \qquad
          p_\theta(x \mid z) = \text{likelihood}(f_\theta(z_1, \dots, z_M)), \qquad
          q_\phi(z \mid x) = \prod_m \mathrm{Cat}(z_m;\ \operatorname{softmax}(\alpha_\phi(x)_m)),

a uniform prior, an MLP decoder :math:`f_\theta` of the concatenated one-hot vectors and an MLP encoder
:math:`\alpha_\phi` of logits. The guide *samples* :math:`z` (``OneHotCategorical``): the importance weights
:math:`\log p(x, z) - \log q(z \mid x)` include both categorical log-probabilities, and the pair is trained by
the score-function estimators (``"tracegraph"``, ``"elbo"``, ``"vimco"``, ``"rws"``). With ``baseline=True``
the site carries NVIL's input-dependent baseline for ``"tracegraph"`` (:mod:`pyrovae.models.baselines`).

**The relaxed model** (``relaxed=λ``, a temperature :math:`\lambda > 0`) replaces each one-hot :math:`z_m` by
a point of the simplex, Concrete-distributed (Maddison, Mnih & Teh 2017; the Gumbel-softmax of Jang, Gu &
Poole 2017): in the guide :math:`z_m = \operatorname{softmax}((\alpha_m + g_m)/\lambda)` with Gumbel noise
:math:`g_m`, a reparameterized draw, and in the model the Concrete prior of uniform logits at temperature
:math:`\lambda_p` (``prior_temperature``, default :math:`\lambda`; Maddison et al. allow the two temperatures
to differ). As in Maddison et al.'s relaxed variational objective, *both* terms use the Concrete densities,

.. math:: \tilde{\mathcal L}(x) = \mathbb E_{z \sim q_{\alpha, \lambda}(\cdot \mid x)}
          \big[\log p_\theta(x \mid z) + \log p_{\lambda_p}(z) - \log q_{\alpha, \lambda}(z \mid x)\big],

a true ELBO of the relaxed (continuous) model. They are computed in log space, on :math:`y_m = \log z_m`,
where the densities are ExpConcrete's (:class:`ExpRelaxedCategorical`) and the decoder reads
:math:`z_m = e^{y_m}`: the log-density ratio, hence every bound and importance weight, is the Concrete one
(the change of variables :math:`y = \log z` is common to :math:`p` and :math:`q` and cancels), without the
underflow of :math:`\log z_m` at low temperatures, which is why Maddison et al. work with ExpConcrete
variables. Jang et al. keep the *categorical* KL term instead, :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z))`,
and use the relaxed sample only in the decoder; that objective is not this one. In the relaxed model, site
``"z"`` holds :math:`y = \log z`.

**Evaluation.** The relaxed model is a different model, of a continuous latent: its
:func:`~pyrovae.log_likelihood` and :func:`~pyrovae.bounds` estimate the density :math:`\int p_\theta(x \mid
z)\, p_{\lambda_p}(z)\, dz`, not the discrete model's :math:`\sum_z p_\theta(x \mid z)\, p(z)`. The discrete
model with the relaxed-trained parameters (decoder and encoder) is what a study of discrete latents evaluates:
:meth:`CategoricalVAE.discrete` returns it (a copy with ``relaxed=None``), or set ``vae.relaxed = None`` to
switch the model in place (and back to a temperature to train on: annealing the temperature is setting it
between calls of :func:`~pyrovae.fit`, or between the steps of a :class:`~pyrovae.Trainer`).

Sites ``"z"`` (event shape ``(M, C)``) and ``"x"`` lie in ``pyro.plate("data", N)``; everything
is indexed from the right, so the evaluators' particle plates broadcast.

References:

- C. J. Maddison, A. Mnih and Y. W. Teh (2017), "The Concrete Distribution: A Continuous
  Relaxation of Discrete Random Variables", ICLR.
- E. Jang, S. Gu and B. Poole (2017), "Categorical Reparameterization with Gumbel-Softmax", ICLR.
- A. Mnih and K. Gregor (2014), "Neural Variational Inference and Learning in Belief Networks", ICML.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import nn
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical as _ExpRelaxedCategorical

from pyrovae.errors import ConfigError
from pyrovae.handlers import DATA_PLATE
from pyrovae.models.baselines import InputBaseline
from pyrovae.models.likelihoods import Likelihood
from pyrovae.models.nn import MLPDecoder, mlp
from pyrovae.models.nn import activation as check_activation
from pyrovae.models.vae import LatentModel
from pyrovae.options import UNITS, check_options

__all__ = ["CategoricalVAE", "ExpRelaxedCategorical"]


class ExpRelaxedCategorical(_ExpRelaxedCategorical, TorchDistributionMixin):
    r"""The ExpConcrete distribution of Maddison et al. (2017), torch's
    :class:`~torch.distributions.relaxed_categorical.ExpRelaxedCategorical` as a Pyro
    distribution: the logarithm :math:`y = \log z` of a Concrete draw :math:`z`, with density

    .. math:: \log p_{\alpha,\lambda}(y) = \log (C-1)! + (C-1)\log\lambda
              + \sum_{k=1}^C (\log\alpha_k - \lambda y_k)
              - C \operatorname{logsumexp}_k(\log\alpha_k - \lambda y_k),

    reparameterized: :math:`y = \operatorname{log\,softmax}((\log\alpha + g)/\lambda)`, :math:`g`
    standard Gumbel."""


def _temperature(name: str, value: float | None) -> float | None:
    """``value`` as a float if it is a positive finite number, or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(
            f"{name} must be a positive temperature, or None for the discrete model, such as 0.5 or 2/3; "
            f"got {value!r}"
        )
    return float(value)


class CategoricalVAE(LatentModel):
    r"""A VAE of ``num_latents`` categorical latents of ``num_categories`` categories, sampled
    (``relaxed=None``) or Concrete-relaxed at temperature ``relaxed`` (see the module's description).

    :param event_shape: shape of one data point, e.g. ``(1, 28, 28)`` or ``784``.
    :param num_latents: :math:`M`, the number of categorical latents.
    :param num_categories: :math:`C`, the categories of each (at least 2).
    :param hidden: hidden layer sizes of the encoder (the decoder uses them reversed).
    :param activation: nonlinearity between layers (see :data:`pyrovae.models.nn.ACTIVATIONS`).
    :param likelihood: a name from :data:`pyrovae.models.likelihoods.LIKELIHOODS` or a
        :class:`~pyrovae.models.likelihoods.Likelihood`.
    :param relaxed: ``None`` for the discrete model, or the Concrete temperature :math:`\lambda` of
        the guide for the relaxed one (settable later: :attr:`relaxed`).
    :param prior_temperature: the Concrete temperature :math:`\lambda_p` of the relaxed prior
        (default: :math:`\lambda`); only with ``relaxed``.
    :param baseline: give the site NVIL's input-dependent baseline for ``"tracegraph"`` in the
        discrete model (see :mod:`pyrovae.models.baselines`).
    :param likelihood_scale: standard deviation of a Gaussian likelihood (initial value if learned).
    """

    def __init__(
        self,
        event_shape: int | Sequence[int] = (1, 28, 28),
        num_latents: int = 20,
        num_categories: int = 10,
        hidden: Sequence[int] = (400,),
        activation: str = "softplus",
        likelihood: str | Likelihood = "bernoulli",
        relaxed: float | None = None,
        prior_temperature: float | None = None,
        baseline: bool = True,
        likelihood_scale: float = 1.0,
    ):
        check_options(hidden=list(hidden), likelihood_scale=likelihood_scale)
        for name, value, low in (("num_latents", num_latents, 1), ("num_categories", num_categories, 2)):
            if not UNITS.admits(value) or value < low:
                why = " (a latent of one category is a constant)" if name == "num_categories" else ""
                raise ConfigError(
                    f"{name} must be an integer from {low} to {int(UNITS.high)}{why}; got {value!r}"
                )
        check_activation(activation)
        if not isinstance(baseline, bool):
            raise ConfigError(f"baseline must be True or False; got {baseline!r}")
        relaxed = _temperature("relaxed", relaxed)
        if prior_temperature is not None and relaxed is None:
            raise ConfigError(
                "prior_temperature is the temperature of the relaxed model's Concrete prior: pass relaxed= "
                "(the guide's temperature) too, or drop prior_temperature for the discrete model"
            )
        self._prior_temperature = _temperature("prior_temperature", prior_temperature)
        super().__init__(event_shape, likelihood, likelihood_scale)
        self.num_latents, self.num_categories = int(num_latents), int(num_categories)
        self._relaxed = relaxed
        codes = self.num_latents * self.num_categories
        #: alpha_phi: x -> logits of q(z | x), (..., M * C)
        self.encoder = mlp([math.prod(self.event_shape), *hidden, codes], activation)
        #: f_theta: the concatenated one-hot (or relaxed) vectors -> likelihood parameters
        self.decoder = MLPDecoder(self.event_shape, codes, hidden, activation)
        self.register_buffer("prior_logits", torch.zeros(self.num_latents, self.num_categories))
        #: NVIL's input-dependent baseline of the site "z", or None
        self.baseline = InputBaseline(self.event_shape, ["z"]) if baseline else None

    @property
    def relaxed(self) -> float | None:
        """The guide's Concrete temperature :math:`\\lambda`, or ``None`` for the discrete model;
        set it to switch between the two with the same parameters (``None`` to evaluate)."""
        return self._relaxed

    @relaxed.setter
    def relaxed(self, value: float | None) -> None:
        self._relaxed = _temperature("relaxed", value)

    @property
    def prior_temperature(self) -> float | None:
        """The Concrete temperature :math:`\\lambda_p` of the relaxed prior (``None`` in the discrete
        model): the one given, else :attr:`relaxed`."""
        if self._relaxed is None:
            return None
        return self._relaxed if self._prior_temperature is None else self._prior_temperature

    def discrete(self) -> CategoricalVAE:
        """A copy of this model with the same parameters and ``relaxed=None``: the discrete model
        to evaluate after relaxed training."""
        copied = copy.deepcopy(self)
        copied.relaxed = None
        return copied

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., M, C)`` logits of :math:`q(z \\mid x)`."""
        logits = self.encoder(x.flatten(-len(self.event_shape)))
        return logits.unflatten(-1, (self.num_latents, self.num_categories))

    def _decode(self, code: torch.Tensor) -> torch.Tensor:
        """The likelihood parameters at one-hot or relaxed codes ``(..., M, C)``."""
        return self.decoder(code.flatten(-2))

    def _distribution(self, logits: torch.Tensor, temperature: float | None) -> dist.TorchDistribution:
        """The one-hot categorical of ``logits`` ``(..., M, C)``, or with a ``temperature`` its
        ExpConcrete relaxation."""
        if temperature is None:
            return dist.OneHotCategorical(logits=logits)
        t = torch.tensor(temperature, dtype=self.prior_logits.dtype, device=self.prior_logits.device)
        return ExpRelaxedCategorical(t, logits=logits)

    def model(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> None:
        """:math:`z \\sim p(z)` (uniform categorical, or its Concrete relaxation in log space),
        :math:`x \\sim p_\\theta(x \\mid z)`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``, observed at site
            ``"x"``; ``None`` to draw ``batch_size`` data points from the model.
        :param int batch_size: the number :math:`B` of data points drawn without ``x`` (ignored
            with ``x``).
        """
        with pyro.plate(DATA_PLATE, self._plate_size(x, batch_size)):
            code = pyro.sample("z", self._distribution(self.prior_logits, self.prior_temperature).to_event(1))
            self._observe(self._decode(code if self.relaxed is None else code.exp()), x)

    def guide(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> torch.Tensor:
        """:math:`z \\sim q_\\phi(z \\mid x)`, one-hot (sampled, with the baseline if any) or
        Concrete in log space (reparameterized); returns the site's value.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        :param int batch_size: the model's argument, which the guide takes too; the guide needs ``x``.
        """
        if x is None:
            raise ConfigError("CategoricalVAE.guide needs the data x: the encoder q(z | x) reads it")
        n = self._plate_size(x, batch_size)
        logits = self._logits(x)
        discrete = self.relaxed is None and self.baseline is not None
        baselines = self.baseline.attach(x) if discrete else contextlib.nullcontext()
        with pyro.plate(DATA_PLATE, n), baselines:
            return pyro.sample("z", self._distribution(logits, self.relaxed).to_event(1))

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """The likelihood means at ``num_samples`` draws from the prior, one-hot in the discrete
        model, relaxed in the relaxed one: images to look at.

        :param int num_samples: the number of draws: the result has shape
            ``(num_samples, *event_shape)``.
        """
        logits = self.prior_logits.expand(num_samples, -1, -1)
        code = self._distribution(logits, self.prior_temperature).sample()
        return self.likelihood.mean(self._decode(code if self.relaxed is None else code.exp()))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood mean at the guide's noise-free code: the most probable category of each
        latent (one-hot) in the discrete model, :math:`\\operatorname{softmax}(\\alpha/\\lambda)` in
        the relaxed one (``x`` moved to the model's device).

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        """
        self._plate_size(x, None)
        logits = self._logits(x.to(self._reference().device))
        if self.relaxed is None:
            code = nn.functional.one_hot(logits.argmax(-1), self.num_categories).to(logits.dtype)
        else:
            code = (logits / self.relaxed).softmax(-1)
        return self.likelihood.mean(self._decode(code))
