r"""VIMCO: score-function gradients of the IWAE bound with leave-one-out baselines.

Reference:

- A. Mnih and D. J. Rezende (2016), "Variational Inference for Monte Carlo Objectives", ICML.
"""

from __future__ import annotations

import math

import torch

from pyrovae.estimators.detached import DetachedIWAE

__all__ = ["VIMCO"]


class VIMCO(DetachedIWAE):
    r"""Variational inference for Monte Carlo objectives (Mnih & Rezende 2016), one bound per data point.

    For each data point :math:`x`, :math:`k \ge 2` draws :math:`z_1, \dots, z_k \sim q_\phi(\cdot
    \mid x)`, log-weights :math:`\log w_i = \log p_\theta(x, z_i) - \log q_\phi(z_i \mid x)` and the
    IWAE-:math:`k` bound :math:`\hat{\mathcal L} = \log \frac1k \sum_i w_i` of :class:`IWAE`. Its
    gradient, with the samples held fixed (no reparameterization),

    .. math:: \nabla \mathbb{E}_q[\hat{\mathcal L}]
              = \mathbb{E}_q\Big[\sum_{i=1}^k \big(\hat{\mathcal L} - \hat{\mathcal L}_{-i}\big)\,
                \nabla \log q_\phi(z_i \mid x) + \sum_{i=1}^k \tilde w_i\, \nabla \log w_i\Big],
              \qquad \tilde w_i = \frac{w_i}{\sum_j w_j},

    is estimated by the bracket at the draws. The baseline of particle :math:`i` is the bound with
    its log-weight replaced by the mean of the others' (the geometric mean of their weights),

    .. math:: \hat{\mathcal L}_{-i} = \log \frac1k \Big(\sum_{j \ne i} w_j + \exp\Big(\frac{1}{k-1}
              \sum_{j \ne i} \log w_j\Big)\Big),

    which does not depend on :math:`z_i`, so subtracting it leaves the estimator unbiased
    (:math:`\mathbb{E}_{z_i}[\nabla \log q(z_i \mid x)] = 0`), while the learning signal
    :math:`\hat{\mathcal L} - \hat{\mathcal L}_{-i}` of each particle is its own contribution to the
    bound: far smaller in variance than the plain score-function estimator's :math:`\hat{\mathcal L}`.

    One backward pass of ``differentiable_loss`` gives this gradient: per data point the surrogate

    .. math:: -\Big[\hat{\mathcal L} + \sum_i \mathrm{sg}\big(\hat{\mathcal L} - \hat{\mathcal L}_{-i}\big)
              \big(\log q_\phi(z_i \mid x) - \mathrm{sg}(\log q_\phi(z_i \mid x))\big)\Big]

    (:math:`\mathrm{sg}` the stop-gradient, the latents detached throughout), times the data scale :math:`s`,
    whose value is the negative bound :math:`-s \sum_n \hat{\mathcal L}(x_n)` (also ``loss``). The model's
    gradient :math:`\sum_i \tilde w_i \nabla_\theta \log p_\theta(x, z_i)` is :class:`IWAE`'s.

    Latents and site scales are as in :class:`DetachedIWAE`: a reparameterizable latent too is differentiated
    through its score only (Mnih & Rezende's estimator), not pathwise as by :class:`IWAE` or :class:`DReG`,
    whose gradients have lower variance. The baselines take :math:`O(k^2)` memory per data point.

    :param int k: the number of particles per data point, at least 2 (a leave-one-out baseline
        needs another particle).
    :param str data_plate: the name of the data plate.
    """

    name = "vimco"
    min_particles = 2

    @staticmethod
    def baselines(log_w: torch.Tensor) -> torch.Tensor:
        r"""The leave-one-out baselines :math:`\hat{\mathcal L}_{-i}` of the ``(k, B)`` log-weights:
        the bound with :math:`\log w_i` replaced by the mean of the other log-weights.

        :param torch.Tensor log_w: the log-weights, particles along the first dimension
            (:math:`k \ge 2`), of shape ``(k, B)``; returns the ``(k, B)`` baselines.
        """
        k = log_w.shape[0]
        eye = torch.eye(k, dtype=torch.bool, device=log_w.device).reshape((k, k) + (1,) * (log_w.dim() - 1))
        others = log_w.unsqueeze(0)  # others[i, j] = log w_j
        mean_others = torch.where(eye, 0.0, others).sum(1) / (k - 1)  # a -inf log w_i spares its row
        replaced = torch.where(eye, mean_others.unsqueeze(1), others)
        return torch.logsumexp(replaced, 1) - math.log(k)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative bound, with VIMCO's gradient (see the class docstring).

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        terms = self.weight_terms(model, guide, args, kwargs)
        log_w = terms.log_w
        bound = self._bound(log_w)
        with torch.no_grad():
            signal = bound.unsqueeze(0) - self.baselines(log_w)
        score = terms.log_q_sampled
        surrogate = bound + (signal * (score - score.detach())).sum(0)
        return -terms.scale * surrogate.sum()
