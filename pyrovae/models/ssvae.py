r"""The semi-supervised VAE M2 of Kingma, Rezende, Mohamed & Welling (2014).

The label :math:`y` of a data point is a discrete latent variable, observed for the labelled
data points and summed out exactly for the others:

.. math:: p_\theta(x, y, z) = p(y)\, p(z)\, p_\theta(x \mid y, z), \qquad
          p(y) = \mathrm{Cat}(1/C), \quad p(z) = \mathcal{N}(0, I),

.. math:: q_\phi(y, z \mid x) = q_\phi(y \mid x)\, q_\phi(z \mid x, y), \qquad
          q_\phi(y \mid x) = \mathrm{Cat}(\pi_\phi(x)).

For a labelled pair the bound is :math:`-\mathcal{L}(x, y) = \mathbb{E}_{q(z\mid x,y)}[\log p(x, y, z) - \log
q(z \mid x, y)]`; for an unlabelled point, :math:`-\mathcal{U}(x) = \sum_y q(y \mid x)\,(-\mathcal{L}(x, y)) +
\mathcal{H}[q(y \mid x)]`, the sum over :math:`y` done by Pyro's parallel enumeration
(:class:`~pyro.infer.TraceEnum_ELBO`, estimator ``"enum"``). Since the classifier :math:`q(y \mid x)` enters
only :math:`\mathcal{U}`, Kingma et al. add a classification term, minimizing

.. math:: \mathcal{J}^\alpha = \sum_{(x, y)\ \text{labelled}} \big(\mathcal{L}(x, y)
          - \alpha \log q_\phi(y \mid x)\big) + \sum_{x\ \text{unlabelled}} \mathcal{U}(x).

One batch may mix labelled and unlabelled points (labels :data:`~pyrovae.data.datasets.UNLABELLED`
for the latter, as :func:`~pyrovae.data.datasets.with_labels` gives them): for a labelled point the
guide's :math:`q(y \mid x)` is the point mass at its label, so that the enumerated sum reduces
to :math:`\mathcal{L}(x, y)`, and every site stays in the data plate with its minibatch scale.

References:

- D. P. Kingma, D. J. Rezende, S. Mohamed and M. Welling (2014), "Semi-supervised Learning with
  Deep Generative Models", NeurIPS.
- Pyro's tutorial "The Semi-Supervised VAE" (examples/vae/ss_vae_M2.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine

from pyrovae.data.datasets import UNLABELLED
from pyrovae.errors import ConfigError, DataError
from pyrovae.handlers import DATA_PLATE
from pyrovae.infer import Sweep
from pyrovae.models.likelihoods import Likelihood
from pyrovae.models.nn import ConditionalMLPDecoder, ConditionalMLPEncoder, mlp
from pyrovae.models.vae import LatentModel

__all__ = ["SSVAE"]

# logit of the labels other than the observed one in the guide's point mass: exp(-1e4) is 0 in
# every float type, while the log stays finite, so the enumerated sum adds no 0 * inf
_EXCLUDED = -1e4


class SSVAE(LatentModel):
    r"""The M2 model of Kingma et al. (2014): a VAE whose label is a discrete latent variable.

    ``model(x, y=None)`` and ``guide(x, y=None)`` take a batch of data and, optionally, labels
    (a LongTensor, :data:`~pyrovae.data.datasets.UNLABELLED` where unknown); the guide enumerates the
    unknown labels in parallel, so train with the ``"enum"`` estimator::

        train = pyrovae.data.datasets.with_labels(pyrovae.load("mnist"), num_labels=100) ssvae =
        pyrovae.SSVAE((1, 28, 28), num_classes=10) pyrovae.fit(ssvae, train, estimator="enum")

    :func:`~pyrovae.log_likelihood` and :func:`~pyrovae.bounds` of ``(model, guide)`` on data
    without labels marginalize the label. With labels, the model also holds the
    classification term :math:`\alpha \log q(y \mid x)` of the training objective.

    :param event_shape: shape of one data point.
    :param num_classes: the number :math:`C` of labels.
    :param latent_dim: dimension of :math:`z`.
    :param hidden: hidden layer sizes of the encoder and classifier (the decoder uses them reversed).
    :param activation: nonlinearity between layers.
    :param likelihood: a name from :data:`pyrovae.models.likelihoods.LIKELIHOODS` or a likelihood module.
    :param alpha: weight :math:`\alpha` of the classification term of each labelled data point.
        Kingma et al. set :math:`\alpha = 0.1 N` for the mean over the :math:`N_l` labelled points,
        i.e. :math:`0.1 N / N_l` each (50 for 100 labels of 50,000); Pyro's tutorial uses 46.
    """

    def __init__(
        self,
        event_shape: int | Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        latent_dim: int = 50,
        hidden: Sequence[int] = (500,),
        activation: str = "softplus",
        likelihood: str | Likelihood = "bernoulli",
        alpha: float = 50.0,
    ):
        super().__init__(event_shape, likelihood)
        if num_classes < 2 or latent_dim < 1 or not hidden:
            raise ConfigError(
                f"SSVAE needs num_classes >= 2, latent_dim >= 1 and at least one hidden layer; got "
                f"{num_classes}, {latent_dim} and hidden={tuple(hidden)}"
            )
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"alpha, the weight of the classification term, must be >= 0; got {alpha!r}")
        self.num_classes, self.latent_dim, self.alpha = num_classes, latent_dim, float(alpha)
        self.classifier = mlp([math.prod(self.event_shape), *hidden, num_classes], activation)
        self.encoder = ConditionalMLPEncoder(self.event_shape, num_classes, latent_dim, hidden, activation)
        self.decoder = ConditionalMLPDecoder(self.event_shape, num_classes, latent_dim, hidden, activation)
        self.register_buffer("y_logits", torch.zeros(num_classes))

    def _labels(self, y: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The labels (unknown ones set to 0) and the mask of the known ones, or ``None``."""
        if y is None:
            return None
        if y.shape != (n,) or y.dtype != torch.long:
            raise DataError(
                f"labels must be a LongTensor of shape ({n},), one per data point; got {y.dtype} of "
                f"shape {tuple(y.shape)}"
            )
        known = y != UNLABELLED
        if ((y[known] < 0) | (y[known] >= self.num_classes)).any():
            raise DataError(f"labels must lie in 0..{self.num_classes - 1}, or be {UNLABELLED} where unknown")
        return y.clamp(min=0), known

    def _one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).to(like.dtype)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits of :math:`q(y \\mid x)`, shape ``(B, C)``.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        """
        return self.classifier(x.flatten(-len(self.event_shape)))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """:math:`y_n \\sim p(y)`, :math:`z_n \\sim p(z)`, :math:`x_n \\sim p_\\theta(x \\mid y_n, z_n)`,
        and the classification term for the labelled points.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``, observed at site ``"x"``.
        :param torch.Tensor y: their labels, a LongTensor of shape ``(B,)`` with values in
            ``0..num_classes - 1``, :data:`~pyrovae.data.datasets.UNLABELLED` where unknown; ``None``
            for a batch without labels.
        """
        n = self._plate_size(x, None)
        labels = self._labels(y, n)
        with pyro.plate(DATA_PLATE, n):
            y_n = pyro.sample("y", dist.Categorical(logits=self.y_logits).expand([n]))
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).expand([n, self.latent_dim]).to_event(1))
            self._observe(self.decoder(z, self._one_hot(y_n, z)), x)
            if labels is not None and self.alpha > 0:
                with poutine.mask(mask=labels[1]), poutine.scale(scale=self.alpha):
                    pyro.sample("y_aux", dist.Categorical(logits=self.logits(x)), obs=labels[0])

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """:math:`y_n \\sim q_\\phi(y \\mid x_n)` (the point mass at a known label), enumerated in
        parallel, and :math:`z_n \\sim q_\\phi(z \\mid x_n, y_n)`.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        :param torch.Tensor y: their labels, as the model takes them.
        """
        n = self._plate_size(x, None)
        labels = self._labels(y, n)
        with pyro.plate(DATA_PLATE, n):
            logits = self.logits(x)
            if labels is not None:
                point_mass = torch.where(self._one_hot(labels[0], logits) > 0, 0.0, _EXCLUDED)
                logits = torch.where(labels[1].unsqueeze(-1), point_mass, logits)
            y_n = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            pyro.sample("z", dist.Normal(*self.encoder(x, self._one_hot(y_n, x))).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable label under :math:`q(y \\mid x)`, a LongTensor of shape ``(B,)``.

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        """
        self._plate_size(x, None)
        return self.logits(x).argmax(-1)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 1000) -> float:
        """The fraction of the data points ``x`` whose label ``y`` :meth:`classify` predicts (``x`` classified
        on the model's device, ``chunk`` data points at a time: a :class:`~pyrovae.infer.Sweep`).

        :param torch.Tensor x: data, of shape ``(N, *event_shape)``.
        :param torch.Tensor y: their true labels, a LongTensor of shape ``(N,)``.
        :param int chunk: the number of data points classified at a time.
        """
        if y.shape != x.shape[:1]:
            raise DataError(f"pass one label per data point: {len(x)} data points, labels {tuple(y.shape)}")
        sweep = Sweep((x, y), chunk, device=self._reference().device, desc="accuracy")
        return float(sweep.map(lambda c: self.classify(c.args[0]) == c.args[1]).double().mean())

    @torch.no_grad()
    def sample(self, num_samples: int, y: torch.Tensor | int | None = None) -> torch.Tensor:
        """Likelihood means of ``num_samples`` draws :math:`z \\sim p(z)`, with label ``y`` (a
        label or one per sample), or labels drawn from :math:`p(y)` if ``None``.

        :param int num_samples: the number of draws: the result has shape ``(num_samples, *event_shape)``.
        :param y: a label (an ``int``), a LongTensor of ``num_samples`` labels, or ``None`` for labels
            drawn from :math:`p(y)`.
        """
        like = self._reference(self.decoder)  # drawn on the decoder's device, in its dtype
        if y is None:
            y = dist.Categorical(logits=self.y_logits).sample((num_samples,))
        y = torch.as_tensor(y, dtype=torch.long, device=like.device).expand(num_samples)
        z = torch.randn(num_samples, self.latent_dim, device=like.device, dtype=like.dtype)
        return self.likelihood.mean(self.decoder(z, self._one_hot(y, z)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood mean at the guide's mean code given the predicted label (``x`` moved to
        the model's device).

        :param torch.Tensor x: a batch of data, of shape ``(B, *event_shape)``.
        """
        x = x.to(self._reference().device)
        y = self._one_hot(self.classify(x), x)
        loc, _ = self.encoder(x, y)
        return self.likelihood.mean(self.decoder(loc, y))
