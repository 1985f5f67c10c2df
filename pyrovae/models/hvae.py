r"""A VAE with two stochastic layers: the HVAE of Tomczak & Welling (2018), section 3.

Top-down generative model and bottom-up inference network, for data points :math:`x_n` in the
plate ``"data"``:

.. math:: p_\theta(x, z_1, z_2) = p_\lambda(z_2)\, p_\theta(z_1 \mid z_2)\, p_\theta(x \mid z_1, z_2),
          \qquad q_\phi(z_1, z_2 \mid x) = q_\phi(z_2 \mid x)\, q_\phi(z_1 \mid x, z_2),

with diagonal Gaussian conditionals :math:`p_\theta(z_1 \mid z_2)`, :math:`q_\phi(z_2 \mid x)`,
:math:`q_\phi(z_1 \mid x, z_2)`. The prior :math:`p_\lambda(z_2)` is on the top layer and may be any prior of
:mod:`pyrovae.models.priors`; with the VampPrior it is :math:`\frac1K\sum_k q_\phi(z_2 \mid u_k)`, which is
why the top layer is inferred from :math:`x` alone (the VampPrior paper's choice; Burda et al.'s two-layer
IWAE instead infers :math:`q(z_1 \mid x)\, q(z_2 \mid z_1)` and decodes from :math:`z_1` only).

Two families of networks (``network=``): ``"mlp"``, fully connected layers with ``activation``
between them, where :math:`q(z_1 \mid x, z_2)`'s first layer and :math:`p(x \mid z_1, z_2)`'s read
the concatenations :math:`[x; z_2]` and :math:`[z_1; z_2]`; and ``"gated"``, the networks of the
paper's code (``models/HVAE_2level.py`` of ``github.com/jmtomczak/vae_vampprior``): gated dense
layers everywhere (:class:`~pyrovae.models.nn.GatedDense`), every Gaussian's log-variance clamped to
:math:`[-6, 2]` (:math:`q(z_2 \mid x)`, :math:`q(z_1 \mid x, z_2)` and :math:`p(z_1 \mid z_2)`
alike), and the two inputs of :math:`q(z_1 \mid x, z_2)` and of :math:`p(x \mid z_1, z_2)` each
through a gated layer of its own before a gated layer reads their concatenation
(:class:`~pyrovae.models.nn.ConditionalGatedEncoder`, :class:`~pyrovae.models.nn.ConditionalGatedDecoder`).

The model and guide are a plain Pyro pair with sites ``"z2"``, ``"z1"`` and ``"x"`` in ``pyro.plate("data",
N)``: every trainer, estimator and evaluator of pyrovae works on it as on :class:`~pyrovae.VAE`.

Reference: J. M. Tomczak and M. Welling (2018), "VAE with a VampPrior", AISTATS.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.errors import ConfigError, unknown_name
from pyrovae.handlers import DATA_PLATE
from pyrovae.models import nn as nets
from pyrovae.models.likelihoods import Likelihood
from pyrovae.models.vae import LatentModel
from pyrovae.options import check_options

#: the network families an :class:`HVAE` is built of (see :data:`pyrovae.models.nn.NETWORKS`)
NETWORKS = ("mlp", "gated")


class HVAE(LatentModel):
    r"""A VAE of two stochastic layers (see the module's description), of fully connected (``"mlp"``) or
    gated (``"gated"``, the paper's) networks.

    :param event_shape: shape of one data point, e.g. ``(1, 28, 28)`` or ``784``.
    :param latent_dim: dimension of the bottom latent :math:`z_1`.
    :param latent_dim2: dimension of the top latent :math:`z_2` (default: ``latent_dim``).
    :param hidden: hidden layer sizes of every network (the paper: ``(300, 300)``).
    :param activation: nonlinearity between layers (see :data:`pyrovae.models.nn.ACTIVATIONS`) of
        ``"mlp"`` networks; checked but not used by ``"gated"`` ones, whose gates are the nonlinearity.
    :param likelihood: a name from :data:`pyrovae.models.likelihoods.LIKELIHOODS` or a
        :class:`~pyrovae.models.likelihoods.Likelihood`.
    :param prior: the prior of :math:`z_2`, a name from :data:`pyrovae.models.priors.PRIORS` or a prior
        module; the ``"vamp"`` prior uses the encoder of :math:`q(z_2 \mid x)`.
    :param prior_components: components of a ``"mixture"`` prior or pseudo-inputs of ``"vamp"``.
    :param likelihood_scale: standard deviation of a Gaussian likelihood (initial value if learned).
    :param network: ``"mlp"`` or ``"gated"`` (see the module's description and :data:`NETWORKS`).
    """

    def __init__(
        self,
        event_shape: int | Sequence[int] = (1, 28, 28),
        latent_dim: int = 40,
        latent_dim2: int | None = None,
        hidden: Sequence[int] = (300, 300),
        activation: str = "softplus",
        likelihood: str | Likelihood = "bernoulli",
        prior: str | nn.Module = "normal",
        prior_components: int | None = None,
        likelihood_scale: float = 1.0,
        network: str = "mlp",
    ):
        check_options(
            latent_dim=latent_dim,
            latent_dim2=latent_dim2,
            prior_components=prior_components,
            likelihood_scale=likelihood_scale,
            hidden=list(hidden),
        )  # all at once, before anything is built
        super().__init__(event_shape, likelihood, likelihood_scale)
        given_dim2, latent_dim2 = latent_dim2, latent_dim if latent_dim2 is None else latent_dim2
        if not hidden:
            raise ConfigError(
                "an HVAE needs at least one hidden layer (hidden=(300, 300) in the VampPrior paper)"
            )
        nets.activation(activation)
        if network not in NETWORKS:
            raise unknown_name("HVAE network", network, NETWORKS)
        self.latent_dim, self.latent_dim2 = latent_dim, latent_dim2
        if network == "mlp":
            #: q(z2 | x)
            self.encoder = nets.MLPEncoder(self.event_shape, latent_dim2, hidden, activation)
            #: q(z1 | x, z2)
            self.encoder1 = nets.ConditionalMLPEncoder(
                self.event_shape, latent_dim2, latent_dim, hidden, activation
            )
            #: p(z1 | z2): an "encoder" of the vector z2
            self.transition = nets.MLPEncoder((latent_dim2,), latent_dim, hidden, activation)
            #: p(x | z1, z2), on the concatenation [z1, z2] (see _decode)
            self.decoder = nets.MLPDecoder(self.event_shape, latent_dim + latent_dim2, hidden, activation)
        else:
            self.encoder = nets.GatedEncoder(self.event_shape, latent_dim2, hidden)
            self.encoder1 = nets.ConditionalGatedEncoder(self.event_shape, latent_dim2, latent_dim, hidden)
            self.transition = nets.GatedEncoder((latent_dim2,), latent_dim, hidden)
            #: p(x | z1, z2), on z1 and z2 in branches of their own
            self.decoder = nets.ConditionalGatedDecoder(self.event_shape, latent_dim2, latent_dim, hidden)
        self.prior = self.build_prior(prior, latent_dim2, prior_components, self.encoder)
        options = dict(network=network, latent_dim=latent_dim, latent_dim2=given_dim2, hidden=list(hidden))
        options.update(
            activation=activation, likelihood_scale=likelihood_scale, prior_components=prior_components
        )
        self._named(likelihood, prior, model="hvae", **options)

    def _decode(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The parameters of :math:`p(x \\mid z_1, z_2)`: the MLP decoder reads :math:`[z_1; z_2]`,
        the gated one :math:`z_1` and :math:`z_2` apart."""
        if isinstance(self.decoder, nets.MLPDecoder):
            return self.decoder(torch.cat([z1, z2], -1))
        return self.decoder(z1, z2)

    def model(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> None:
        """:math:`z_2 \\sim p(z_2)`, :math:`z_1 \\sim p(z_1 \\mid z_2)`,
        :math:`x \\sim p(x \\mid z_1, z_2)`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``, observed at site
            ``"x"``; ``None`` to draw ``batch_size`` data points from the model.
        :param int batch_size: the number :math:`B` of data points drawn without ``x`` (ignored
            with ``x``).
        """
        n = self._plate_size(x, batch_size)
        with pyro.plate(DATA_PLATE, n):
            z2 = pyro.sample("z2", self.prior((n,)))
            z1 = pyro.sample("z1", dist.Normal(*self.transition(z2)).to_event(1))
            self._observe(self._decode(z1, z2), x)

    def guide(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> torch.Tensor:
        """:math:`z_2 \\sim q(z_2 \\mid x)`, then :math:`z_1 \\sim q(z_1 \\mid x, z_2)`; returns
        :math:`z_1`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        :param int batch_size: the model's argument, which the guide takes too; the guide needs ``x``.
        """
        with pyro.plate(DATA_PLATE, self._plate_size(x, batch_size)):
            z2 = pyro.sample("z2", dist.Normal(*self.encoder(x)).to_event(1))
            return pyro.sample("z1", dist.Normal(*self.encoder1(x, z2)).to_event(1))

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """The likelihood means of ``num_samples`` ancestral draws :math:`z_2, z_1`: images to look at.

        :param int num_samples: the number of draws: the result has shape
            ``(num_samples, *event_shape)``.
        """
        z2 = self.prior((num_samples,)).sample()
        z1 = dist.Normal(*self.transition(z2)).sample()
        return self.likelihood.mean(self._decode(z1, z2))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood mean at the guide's mean codes :math:`z_2 = \\mu(x)`,
        :math:`z_1 = \\mu(x, z_2)` (``x`` moved to the model's device).

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        """
        self._plate_size(x, None)
        x = x.to(self._reference().device)
        z2, _ = self.encoder(x)
        z1, _ = self.encoder1(x, z2)
        return self.likelihood.mean(self._decode(z1, z2))


__all__ = ["HVAE", "NETWORKS"]
