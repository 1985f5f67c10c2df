r"""Reweighted wake-sleep: the IWAE gradient for the model, the inclusive KL for the guide.

References:

- J. Bornschein and Y. Bengio (2015), "Reweighted Wake-Sleep", ICLR.
- T. A. Le, A. R. Kosiorek, N. Siddharth, Y. W. Teh and F. Wood (2019), "Revisiting Reweighted
  Wake-Sleep for Models with Stochastic Control Flow", UAI.
"""

from __future__ import annotations

import torch

from pyrovae.estimators.detached import DetachedIWAE

__all__ = ["RWS"]


class RWS(DetachedIWAE):
    r"""Reweighted wake-sleep (Bornschein & Bengio 2015; Le, Kosiorek, Siddharth, Teh & Wood 2019),
    one bound per data point, both updates in one backward pass.

    For each data point :math:`x`, :math:`k` draws :math:`z_1, \dots, z_k \sim q_\phi(\cdot \mid x)`,
    held fixed (detached), log-weights :math:`\log w_i = \log p_\theta(x, z_i) - \log q_\phi(z_i
    \mid x)` and normalized weights :math:`\tilde w_i = w_i / \sum_j w_j` give

    - **wake-θ**, the model's gradient of the IWAE-:math:`k` bound,
      :math:`\nabla_\theta \hat{\mathcal L}_k = \sum_i \tilde w_i\, \nabla_\theta \log p_\theta(x, z_i)`;
    - **wake-φ**, the guide's update :math:`\sum_i \tilde w_i\, \nabla_\phi \log q_\phi(z_i \mid x)`,
      a self-normalized importance-sampling estimate of

      .. math:: \mathbb{E}_{p(z \mid x)}\big[\nabla_\phi \log q_\phi(z \mid x)\big]
                = -\nabla_\phi\, \mathrm{KL}\big(p_\theta(z \mid x) \,\|\, q_\phi(z \mid x)\big),

      the gradient of the *inclusive* KL divergence (mass-covering, unlike the ELBO's exclusive
      :math:`\mathrm{KL}(q \| p)`), biased for finite :math:`k` and consistent as :math:`k \to \infty`.
      At :math:`q = p(z \mid x)` every :math:`\tilde w_i = 1/k` and the update is the mean score,
      zero in expectation. Le et al. found wake-φ without the sleep-φ phase (which Pyro's
      ``insomnia < 1`` adds) the better guide update; it is the one here.

    ``differentiable_loss`` is, per data point, the surrogate

    .. math:: -\sum_{i=1}^k \mathrm{sg}(\tilde w_i)\, \big(\log p_\theta(x, \bar z_i)
              + \log q_\phi(\bar z_i \mid x)\big)

    (:math:`\mathrm{sg}` the stop-gradient, :math:`\bar z_i` the detached latents) times the data scale
    :math:`s`: :math:`\theta` appears only in :math:`\log p`, :math:`\phi` only in :math:`\log q`, so one
    backward pass gives both gradients (a parameter in both, such as the encoder behind a VampPrior, gets
    their sum). Minimizing it moves :math:`\theta` up the IWAE bound and :math:`\phi` down the inclusive KL:
    it raises the guide's weighted log-likelihood at the posterior's (reweighted) draws, moving :math:`q`
    toward the posterior. The value of ``differentiable_loss`` and ``loss`` is the negative IWAE-:math:`k`
    bound :math:`-s \sum_n \hat{\mathcal L}_k(x_n)` on the same draws (the surrogate's own value means
    nothing), so training curves compare with :class:`IWAE`'s.

    Site scales act as in :class:`DetachedIWAE`: wake-θ is the gradient of the β-weighted bound, and
    wake-φ weighs the unscaled :math:`\log q` by the β-weights.

    Pyro's :class:`~pyro.infer.ReweightedWakeSleep` (whose latents are detached too) returns two losses, θ's
    and φ's, from ``loss`` and ``loss_and_grads`` and has no ``differentiable_loss``, so no
    ``ELBO(model, guide)`` module, data-parallel wrapper or :func:`~pyrovae.fit` can use it; and it sums the
    log-weights over the whole batch before normalizing them (one weight per particle for the minibatch,
    without minibatch scaling).

    :param int k: the number of particles per data point, at least 2 (with one, every weight is 1
        and the guide's update has expectation zero).
    :param str data_plate: the name of the data plate.
    """

    name = "rws"
    min_particles = 2

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative IWAE bound, with the wake-θ and wake-φ gradients (see the class docstring).

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        terms = self.weight_terms(model, guide, args, kwargs)
        log_w = terms.log_w.detach()
        weights = torch.softmax(log_w, 0)
        log_p, log_q = terms.log_p, terms.log_q_sampled
        wake = (weights * ((log_p - log_p.detach()) + (log_q - log_q.detach()))).sum(0)
        return -terms.scale * (self._bound(log_w) + wake).sum()
