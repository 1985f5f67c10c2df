r"""Optimizers beyond torch's that published recipes use.

:class:`AdamNormGrad` is the optimizer of the VampPrior authors' code (Tomczak & Welling 2018,
``utils/optimizer.py`` of their ``vae_vampprior`` repository): Adam (Kingma & Ba 2015) applied to
each parameter tensor's gradient divided by its Euclidean norm,

.. math:: \tilde g = g / (\lVert g \rVert_2 + 10^{-7}),

before weight decay and the moment estimates. The step size then no longer depends on the scale
of the loss (a sum over the data set or a mean over a batch give the same steps), only on the
gradient's direction per tensor.

References:

- D. P. Kingma and J. Ba (2015), "Adam: A Method for Stochastic Optimization", ICLR.
- J. M. Tomczak and M. Welling (2018), "VAE with a VampPrior", AISTATS.
"""

from __future__ import annotations

import torch

__all__ = ["AdamNormGrad"]

#: added to the gradient's norm, as in the authors' code
NORM_EPS = 1e-7


class AdamNormGrad(torch.optim.Adam):
    """:class:`torch.optim.Adam` on per-tensor normalized gradients (see the module docstring);
    the same arguments as Adam."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(torch.linalg.vector_norm(p.grad) + NORM_EPS)
        super().step()
        return loss
