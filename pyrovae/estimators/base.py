"""What every estimator of pyrovae shares: the gradient is that of ``differentiable_loss``."""

from __future__ import annotations

from pyro.infer import ELBO
from pyro.infer.util import torch_item

__all__ = ["DifferentiableELBO"]


class DifferentiableELBO(ELBO):
    """An ELBO whose gradient is that of its ``differentiable_loss``."""

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Backpropagate ``differentiable_loss`` (the gradients accumulate in the parameters'
        ``.grad``) and return its value, a float.

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return torch_item(loss)
