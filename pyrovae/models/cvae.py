r"""The conditional VAE (Sohn, Lee & Yan 2015): a VAE of :math:`x` given an observed condition :math:`c`.

.. math:: p_\theta(x, z \mid c) = p(z)\, p_\theta(x \mid z, c), \qquad
          q_\phi(z \mid x, c) = \mathcal{N}\big(z;\ \mu_\phi(x, c),
          \operatorname{diag}\sigma^2_\phi(x, c)\big),

with :math:`p(z) = \mathcal{N}(0, I)`. The condition is data, not a latent: a class label
(one-hot encoded), or any observed vector, e.g. the top half of an image when :math:`x` is its
bottom half. Its model and guide take ``(x, c)``, so :func:`~pyrovae.fit` trains it on a data
set whose ``batch`` returns ``(x, c)`` (:func:`~pyrovae.data.datasets.with_labels` for labels) and
:func:`~pyrovae.log_likelihood` estimates :math:`\log p(x \mid c)` from the tuple ``(x, c)``.

Reference: K. Sohn, H. Lee and X. Yan (2015), "Learning Structured Output Representation using
Deep Conditional Generative Models", NeurIPS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.errors import ConfigError, DataError
from pyrovae.handlers import DATA_PLATE
from pyrovae.models.likelihoods import Likelihood
from pyrovae.models.nn import ConditionalMLPDecoder, ConditionalMLPEncoder
from pyrovae.models.vae import LatentModel

__all__ = ["CVAE"]


class CVAE(LatentModel):
    """A VAE of ``x`` conditioned on ``c`` in both the decoder and the encoder.

    :param event_shape: shape of one data point ``x``.
    :param condition_shape: shape of one condition ``c``, or, with ``categorical=True``, the
        number of classes of a label ``c`` (a LongTensor of shape ``(B,)``, one-hot encoded).
    :param categorical: whether ``c`` is a class label.
    :param latent_dim: dimension of :math:`z`.
    :param hidden: hidden layer sizes of the encoder (the decoder uses them reversed).
    :param activation: nonlinearity between layers.
    :param likelihood: a name from :data:`pyrovae.models.likelihoods.LIKELIHOODS` or a likelihood module.
    """

    def __init__(
        self,
        event_shape: int | Sequence[int],
        condition_shape: int | Sequence[int],
        *,
        categorical: bool = False,
        latent_dim: int = 20,
        hidden: Sequence[int] = (400,),
        activation: str = "softplus",
        likelihood: str | Likelihood = "bernoulli",
    ):
        super().__init__(event_shape, likelihood)
        shape = [condition_shape] if isinstance(condition_shape, int) else condition_shape
        self.condition_shape = torch.Size(shape)
        self.categorical = categorical
        if categorical and len(self.condition_shape) != 1:
            raise ConfigError(
                f"with categorical=True, condition_shape is the number of classes; got {condition_shape}"
            )
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be positive; got {latent_dim}")
        self.latent_dim = latent_dim
        cond_dim = math.prod(self.condition_shape)
        self.encoder = ConditionalMLPEncoder(self.event_shape, cond_dim, latent_dim, hidden, activation)
        self.decoder = ConditionalMLPDecoder(self.event_shape, cond_dim, latent_dim, hidden, activation)

    def condition(self, c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The condition as a ``(B, cond_dim)`` vector in the dtype of ``like``: one-hot for labels.

        :param torch.Tensor c: a batch of conditions, of shape ``(B, *condition_shape)``, or with
            ``categorical=True`` labels, a LongTensor of shape ``(B,)`` with values in
            ``0..condition_shape - 1``.
        :param torch.Tensor like: a tensor whose dtype the result takes (the data, say).
        """
        if self.categorical:
            (classes,) = self.condition_shape
            if c.dim() != 1 or c.dtype != torch.long or ((c < 0) | (c >= classes)).any():
                raise DataError(
                    f"the condition must be labels, a LongTensor of shape (B,) with values in "
                    f"0..{classes - 1}"
                )
            return F.one_hot(c, classes).to(like.dtype)
        if c.dim() != len(self.condition_shape) + 1 or c.shape[1:] != self.condition_shape:
            raise DataError(
                f"a condition of shape {tuple(c.shape)} does not match the CVAE: expected (batch, "
                f"{', '.join(map(str, self.condition_shape))})"
            )
        return c.flatten(1).to(like.dtype)

    def model(self, x: torch.Tensor, c: torch.Tensor) -> None:
        """:math:`z_n \\sim p(z)`, :math:`x_n \\sim p_\\theta(x \\mid z_n, c_n)`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``, observed at site ``"x"``.
        :param torch.Tensor c: their conditions, as :meth:`condition` takes them.
        """
        n = self._plate_size(x, None)
        c = self.condition(c, x)
        with pyro.plate(DATA_PLATE, n):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([n, self.latent_dim]).to_event(1))
            self._observe(self.decoder(z, c), x)

    def guide(self, x: torch.Tensor, c: torch.Tensor) -> None:
        """:math:`z_n \\sim q_\\phi(z \\mid x_n, c_n)`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        :param torch.Tensor c: their conditions, as :meth:`condition` takes them.
        """
        n = self._plate_size(x, None)
        c = self.condition(c, x)
        with pyro.plate(DATA_PLATE, n):
            pyro.sample("z", dist.Normal(*self.encoder(x, c)).to_event(1))

    @torch.no_grad()
    def sample(self, c: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Likelihood means of ``num_samples`` draws :math:`z \\sim p(z)` for each condition in the
        batch ``c``: shape ``(num_samples, B, *event_shape)``.

        :param torch.Tensor c: a batch of :math:`B` conditions, as :meth:`condition` takes them.
        :param int num_samples: the number of draws per condition.
        """
        like = self._reference(self.decoder)  # drawn on the decoder's device, in its dtype
        c = self.condition(c.to(like.device), like)
        z = torch.randn(num_samples, len(c), self.latent_dim, device=like.device, dtype=like.dtype)
        return self.likelihood.mean(self.decoder(z, c))
