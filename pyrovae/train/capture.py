r"""Captured training steps: the loss and gradient of an SVI step recorded as a graph of tensor operations and
replayed (:mod:`pyrovae.graphs`).

:class:`StepCapture` records, per batch shape,

.. math:: (\theta, x, \beta) \mapsto \big(\hat{\mathcal L}(\theta; x, \beta),\
          \nabla_\theta \hat{\mathcal L}(\theta; x, \beta)\big),

the estimator's surrogate loss under the trainer's handlers (the data plate scaled by :math:`N/B`, the latent
sites by :math:`\beta`, an input of the graph, so that a KL warm-up needs no new recording) and its gradient
by :func:`torch.autograd.grad`: the module's parameters and buffers are the graph's persistent inputs
(:func:`torch.func.functional_call`), the batch and :math:`\beta` its varying ones. The first step of a
trainer runs eagerly under Pyro's validation; the next two of each batch shape are recorded (each is a real
step) and, when they agree, every later one replays the graph, bit for bit the eager step's loss and gradient
on the CPU. With ``compile="auto"`` on a CPU, the first :data:`CPU_EAGER_STEPS` steps of each batch shape
run eagerly before it is recorded. Each batch shape has its graph (an epoch's last short batch its own).

The optimizer's update, the gradient clipping and the finite checks stay outside the graph, in the trainer
(:mod:`pyrovae.train.trainer`). A data-parallel run (``torchrun``) steps eagerly, as
DistributedDataParallel's gradient hooks are not part of the graph.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch
from torch import nn

from pyrovae import distributed
from pyrovae.devices import wide_dtype
from pyrovae.graphs import RecordedGraphs
from pyrovae.handlers import scale_data, scale_latents

__all__ = ["CPU_EAGER_STEPS", "StepCapture"]

#: steps of each batch shape that ``compile="auto"`` runs eagerly on a CPU before it records one: two
#: recordings of the 784-400-50 VAE cost about 1 s, which its replayed steps win back in a few hundred steps
CPU_EAGER_STEPS = 100


class StepCapture(RecordedGraphs):
    """The loss and gradient of a trainer's steps, recorded per batch shape (module docstring).

    :param loss_module: the ``ELBO(model, guide)`` module, whose forward is the surrogate loss.
    :param params: its trainable parameters, in the order the gradients are returned.
    :param str mode: one of :data:`~pyrovae.graphs.COMPILE_MODES` other than ``"off"``.
    :param torch.device device: where the steps run.
    """

    def __init__(self, loss_module: nn.Module, params: list[torch.Tensor], mode: str, device: torch.device):
        # "auto" on a CPU records a batch shape after CPU_EAGER_STEPS eager steps of it: short fits (tests,
        # tutorials) are better off without the recordings, each a few steps' time
        after = CPU_EAGER_STEPS if mode == "auto" and device.type != "cuda" else 0
        super().__init__(mode, device, "training eagerly", after=after)
        self.module = loss_module
        trainable = {id(p) for p in params}
        named = dict(loss_module.named_parameters())
        buffers = dict(loss_module.named_buffers())
        self.names = [name for name, p in named.items() if id(p) in trainable]
        self.fixed_names = [name for name, p in named.items() if id(p) not in trainable] + list(buffers)
        # the graphs' persistent inputs, the tensors the optimizer updates in place
        self.trainable = [named[n] for n in self.names]
        self.fixed = [{**named, **buffers}[n] for n in self.fixed_names]
        self.buffers = list(buffers.values())
        if distributed.active():
            self.reason = "a data-parallel run steps eagerly"

    def step(
        self, args: tuple[torch.Tensor, ...], beta: float, scale: float, plate: str
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]] | None:
        """The loss and the gradients of the trainable parameters at ``args``, from the batch shape's graph,
        recording it where it has none; ``None`` where this step must run eagerly (then :attr:`reason` says
        why: capture has ended).

        :param tuple args: the batch's columns, on the device.
        :param float beta: the latent sites' weight.
        :param float scale: the data plate's scale :math:`N/B`.
        :param str plate: the data plate's name.
        """
        # what the graph depends on besides its inputs: the batch's shapes, the scale, the modules' training
        # flags (dropout, batch normalization) and the estimator's settings
        modes = tuple(m.training for m in self.module.modules())
        numbers = ((k, v) for k, v in vars(self.module.elbo).items() if isinstance(v, int | float))
        settings = tuple(sorted(numbers))
        key = (tuple((a.shape, a.dtype) for a in args), float(scale), plate, modes, settings)
        # β as Python multiplies it into the scales, in double precision (not on MPS, which has none); made by
        # a fill, not copied from the host (which would wait for the device)
        beta = torch.full((), beta, dtype=wide_dtype(self.device), device=self.device)
        out = self(
            key,
            self._loss_and_grads(scale, plate),
            [self.trainable, self.fixed],
            [list(args), beta],
            module=self.module,
            buffers=self.buffers,
        )
        return None if out is None else (out[0], list(out[1]))

    def _loss_and_grads(self, scale: float, plate: str) -> Callable:
        """The function recorded: the surrogate loss and its gradient in the trainable parameters."""

        def step(persistent, varying):
            (trainable, fixed), (args, beta) = persistent, varying
            # differentiated in the parameters' values, outside the user's autograd graph
            leaves = [p.detach().requires_grad_() for p in trainable]
            tensors = dict(zip(self.names + self.fixed_names, leaves + fixed, strict=True))
            with torch.enable_grad(), pyro.validation_enabled(False), scale_data(scale=scale, plate=plate):
                with scale_latents(beta=beta):
                    loss = torch.func.functional_call(self.module, tensors, tuple(args))
                grads = _owned(torch.autograd.grad(loss, leaves, allow_unused=True))
            return loss.detach(), grads

        return step


def _owned(grads) -> list[torch.Tensor | None]:
    """The gradients, each in memory of its own, as ``backward`` would store them: autograd may give one
    tensor for two parameters (the gradient of a sum passes through unchanged) or an expanded view, and
    clipping or an optimizer that scales ``p.grad`` in place would then scale it twice, or fail."""
    out, seen = [], set()
    for g in grads:
        if g is not None and (g.untyped_storage().data_ptr() in seen or not g.is_contiguous()):
            g = g.clone(memory_format=torch.contiguous_format)
        if g is not None:
            seen.add(g.untyped_storage().data_ptr())
        out.append(g)
    return out
