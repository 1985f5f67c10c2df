r"""The variational autoencoder as a Pyro model/guide pair (Kingma & Welling 2014; Rezende et al. 2014).

Generative model and amortized guide, for data points :math:`x_n` in the plate ``"data"``:

.. math:: p_\theta(x, z) = \prod_n p(z_n)\, p_\theta(x_n \mid z_n), \qquad
          q_\phi(z \mid x) = \prod_n \mathcal{N}\big(z_n;\ \mu_\phi(x_n),
          \operatorname{diag}\sigma_\phi^2(x_n)\big).

Prior, likelihood and networks are arguments, not subclasses. Each per-datapoint site lives in
``pyro.plate("data", N)``, so trainers, estimators and evaluators work on this class and on any
user-written pair alike.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from pyrovae.errors import ConfigError, DataError
from pyrovae.handlers import DATA_PLATE
from pyrovae.models.likelihoods import Likelihood
from pyrovae.models.likelihoods import likelihood as _likelihood
from pyrovae.models.nn import networks
from pyrovae.models.priors import prior as make_prior
from pyrovae.options import check_options


class LatentModel(PyroModule):
    """What the models of pyrovae share: the shape of one data point, the likelihood, the prior of the top
    latent, and the checks of data against the model. Its parameters are those of :class:`VAE`."""

    def __init__(
        self,
        event_shape: int | Sequence[int],
        likelihood: str | Likelihood = "bernoulli",
        likelihood_scale: float = 1.0,
    ):
        super().__init__()
        #: the options that rebuild this model by name (see :meth:`run_options`), if it has them
        self._options: dict | None = None
        self.event_shape = torch.Size([event_shape] if isinstance(event_shape, int) else event_shape)
        if math.prod(self.event_shape) < 1:
            raise ConfigError(f"event_shape must be positive; got {event_shape}")
        if not isinstance(likelihood, Likelihood):
            likelihood = _likelihood(likelihood, self.event_shape, likelihood_scale)
        self.likelihood = likelihood

    def build_prior(
        self, prior: str | nn.Module, latent_dim: int, num_components: int | None, encoder: nn.Module
    ) -> nn.Module:
        """``prior`` itself if a module, else the named prior over ``latent_dim``-vectors; a
        VampPrior pushes its pseudo-inputs through ``encoder``, clipped to the likelihood's range.

        :param prior: a name from :data:`pyrovae.models.priors.PRIORS` or a prior module, returned as
            it is.
        :param int latent_dim: the dimension of the latent the named prior is over.
        :param int num_components: the number of components of a ``"mixture"`` prior or of
            pseudo-inputs of a ``"vamp"`` prior (default :data:`pyrovae.models.priors.DEFAULT_COMPONENTS`);
            ``None`` with a prior module.
        :param torch.nn.Module encoder: the guide's encoder of the latent the prior is over,
            ``x -> (loc, scale)``, through which a VampPrior maps its pseudo-inputs (the other priors
            do not use it).
        """
        if not isinstance(prior, str):
            if num_components is not None:
                raise ConfigError("prior_components applies to a prior given by name, not to a prior module")
            return prior
        return make_prior(
            prior,
            latent_dim,
            num_components=num_components,
            encoder=encoder,
            event_shape=self.event_shape,
            bounds=self.likelihood.bounds,
        )

    def run_options(self) -> dict | None:
        """The options of :class:`~pyrovae.runs.run.RunConfig` that rebuild this model (what
        :func:`~pyrovae.fit` stores in a run directory for :func:`~pyrovae.load_run`), or ``None``
        if a part of it was given as a module rather than by name."""
        return None if self._options is None else dict(self._options)

    def _named(self, likelihood, prior, **options) -> None:
        """Record ``options`` for :meth:`run_options` if the likelihood and prior were given by name."""
        if isinstance(likelihood, str) and isinstance(prior, str):
            self._options = {"likelihood": likelihood, "prior": prior, **options}

    def _plate_size(self, x: torch.Tensor | None, batch_size: int | None) -> int:
        if x is None:
            if batch_size is None:
                raise ConfigError(
                    f"{type(self).__name__}.model needs data x, or batch_size to sample without data"
                )
            return batch_size
        if x.shape[-len(self.event_shape) :] != self.event_shape or x.dim() != len(self.event_shape) + 1:
            raise DataError(
                f"data of shape {tuple(x.shape)} does not match the {type(self).__name__}: expected (batch, "
                f"{', '.join(map(str, self.event_shape))}). Reshape the data, or build the "
                f"{type(self).__name__} with event_shape={tuple(x.shape[1:])}."
            )
        return x.shape[0]

    def _observe(self, params: torch.Tensor, x: torch.Tensor | None) -> None:
        """Observe ``x``, events of ``event_shape``, under the likelihood at the decoder's ``params``."""
        pyro.sample("x", self.likelihood(params).to_event(len(self.event_shape)), obs=x)

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Check shape and support of ``x`` against this model, with a message that says how to fix it.

        :param torch.Tensor x: data, of shape ``(N, *event_shape)``; a
            :class:`~pyrovae.errors.DataError` if its shape or values do not fit the model (e.g.
            non-binary data under a Bernoulli likelihood).
        :param str what: what the data are, for the message (e.g. ``"the training data"``).
        """
        self._plate_size(x, None)
        self.likelihood.check(x, what)

    def _reference(self, module: nn.Module | None = None) -> torch.Tensor:
        """A tensor of ``module`` (this model by default) whose device and dtype its computations
        use: its first floating-point parameter, else buffer; a float on the CPU if it has none."""
        module = self if module is None else module
        tensors = itertools.chain(module.parameters(), module.buffers())
        return next((t for t in tensors if t.is_floating_point()), torch.zeros(()))


class VAE(LatentModel):
    """A VAE with swappable prior, likelihood and encoder/decoder networks.

    :param event_shape: shape of one data point, e.g. ``(1, 28, 28)`` or ``784``.
    :param latent_dim: dimension of :math:`z`.
    :param hidden: hidden layer sizes of the encoder (the decoder uses them reversed).
    :param activation: nonlinearity between layers (see :data:`pyrovae.models.nn.ACTIVATIONS`); checked but
        not used by ``network="gated"``, whose gates are the nonlinearity.
    :param likelihood: a name from :data:`pyrovae.models.likelihoods.LIKELIHOODS` or a
        :class:`~pyrovae.models.likelihoods.Likelihood`.
    :param prior: a name from :data:`pyrovae.models.priors.PRIORS` or a prior module (see
        :mod:`pyrovae.models.priors`); the ``"vamp"`` prior uses this VAE's encoder.
    :param prior_components: the number of components of a ``"mixture"`` prior or of
        pseudo-inputs of a ``"vamp"`` prior (default :data:`pyrovae.models.priors.DEFAULT_COMPONENTS`).
    :param network: ``"mlp"``, ``"conv"`` (image-shaped data) or ``"gated"`` (the VampPrior paper's
        gated dense layers, with ``hidden=(300, 300)`` and ``latent_dim=40`` there; see
        :mod:`pyrovae.models.nn`), ignored when ``encoder`` and ``decoder`` are given.
    :param encoder: a module mapping ``x -> (loc, scale)`` of :math:`q(z\\mid x)`.
    :param decoder: a module mapping ``z -> likelihood parameters`` of shape ``event_shape``.
    :param likelihood_scale: standard deviation of a Gaussian likelihood (initial value if learned).
    """

    def __init__(
        self,
        event_shape: int | Sequence[int] = (1, 28, 28),
        latent_dim: int = 50,
        hidden: Sequence[int] = (400,),
        activation: str = "softplus",
        likelihood: str | Likelihood = "bernoulli",
        prior: str | nn.Module = "normal",
        network: str = "mlp",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        likelihood_scale: float = 1.0,
        prior_components: int | None = None,
    ):
        check_options(
            latent_dim=latent_dim,
            hidden=list(hidden),
            prior_components=prior_components,
            likelihood_scale=likelihood_scale,
        )  # all at once, before anything is built
        super().__init__(event_shape, likelihood, likelihood_scale)
        self.latent_dim = latent_dim
        if (encoder is None) != (decoder is None):
            raise ConfigError("pass both encoder and decoder, or neither (to build them from network=...)")
        built = encoder is None
        if built:
            encoder, decoder = networks(network, self.event_shape, latent_dim, hidden, activation)
        self.encoder, self.decoder = encoder, decoder
        self.prior = self.build_prior(prior, latent_dim, prior_components, encoder)
        if built:
            options = dict(network=network, latent_dim=latent_dim, latent_dim2=None, hidden=list(hidden))
            options.update(
                activation=activation, likelihood_scale=likelihood_scale, prior_components=prior_components
            )
            self._named(likelihood, prior, model="vae", **options)

    def model(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> None:
        """:math:`z_n \\sim p(z)`, :math:`x_n \\sim p_\\theta(x \\mid z_n)`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``, observed at site
            ``"x"``; ``None`` to draw ``batch_size`` data points from the model.
        :param int batch_size: the number :math:`B` of data points drawn without ``x`` (ignored
            with ``x``).
        """
        n = self._plate_size(x, batch_size)
        with pyro.plate(DATA_PLATE, n):
            z = pyro.sample("z", self.prior((n,)))
            self._observe(self.decoder(z), x)

    def guide(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> torch.Tensor:
        """:math:`z_n \\sim q_\\phi(z \\mid x_n)`, a diagonal Gaussian from the encoder.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        :param int batch_size: the model's argument, which the guide takes too; the guide needs ``x``.
        """
        with pyro.plate(DATA_PLATE, self._plate_size(x, batch_size)):
            return pyro.sample("z", pyro.distributions.Normal(*self.encoder(x)).to_event(1))

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """The likelihood means of ``num_samples`` draws :math:`z \\sim p(z)`: images to look at.

        :param int num_samples: the number of draws: the result has shape
            ``(num_samples, *event_shape)``.
        """
        z = self.prior((num_samples,)).sample()
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood mean at the guide's mean code, :math:`\\mathbb{E}[x \\mid z = \\mu_\\phi(x)]`
        (``x`` moved to the model's device).

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        """
        self._plate_size(x, None)
        loc, _ = self.encoder(x.to(self._reference().device))
        return self.likelihood.mean(self.decoder(loc))
