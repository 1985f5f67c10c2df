r"""Captured training steps: the loss and gradient of one SVI step recorded as a graph of tensor operations,
then replayed without the Python that produced them.

A step of a Pyro pair pays Python for every site: the effect-handler stack, the trace, the distributions'
argument handling, then one kernel launch per operation. For a pair whose structure is *static* -- the same
sites, shapes, plates and constants at every step -- that Python computes the same tensor operations each
time, on new data and new draws. :class:`StepCapture` records them once: it runs

.. math:: (\theta, x, \beta) \mapsto \big(\hat{\mathcal L}(\theta; x, \beta),\
          \nabla_\theta \hat{\mathcal L}(\theta; x, \beta)\big),

the estimator's surrogate loss under the trainer's handlers (the data plate scaled by :math:`N/B`, the latent
sites by :math:`\beta`) and its gradient by :func:`torch.autograd.grad`, under
:func:`~torch.fx.experimental.proxy_tensor.make_fx`, which keeps every operation the dispatcher sees -- the
backward pass's included -- as a :class:`torch.fx.GraphModule` of ATen operations whose inputs are the
module's parameters and buffers, the batch and :math:`\beta`. Random draws stay random operations of the
graph: replayed, they take the global generator's next numbers, the very ones the eager step would have taken,
so a captured run gives the eager run's losses and parameters.

A graph is kept only when the structure is seen to be static: the pair is recorded on two consecutive steps
with the same batch shapes, and the two graphs must have the same code and the same constants (tensors the
pair made from Python values). A pair whose sites, shapes or constants depend on its draws or its data (Python
control flow on sampled values, a data-dependent number of sites, a baseline kept outside the parameters)
gives two different graphs and trains eagerly from then on, with one line that says why; so does a pair whose
recording fails, such as one that reads a tensor's value in Python (``.item()``, as Pyro's
``TraceMeanField_ELBO``, ``TraceTailAdaptive_ELBO`` and ``TraceEnum_ELBO`` do). A recording runs the step it
records, on the real tensors: its loss and gradient are the step's. One that fails puts the random state and
the buffers back before the step is run eagerly (what else the pair's Python did, it did twice). A module with
forward or backward hooks trains eagerly, as a replayed graph would not call them. Each batch shape has its
graph (an epoch's last short batch its own). Python state the pair reads besides its parameters, buffers and
the batch is read when it is recorded.

The graph is run by the ``mode`` (:data:`COMPILE_MODES`):

- ``"graph"``: replayed as it is, op by op, and on CUDA as a CUDA graph (static input buffers; the
  generator's graph-safe offsets), one launch for the whole loss and gradient;
- ``"inductor"``: compiled by :func:`torch.compile` (fused kernels; a first call that takes seconds to
  minutes);
- ``"auto"``: ``"graph"``;
- ``"off"``: no capture, every step eager.

The optimizer's update, the gradient clipping and the finite checks stay outside the graph, in the trainer
(:mod:`pyrovae.train.trainer`). A data-parallel run (``torchrun``) steps eagerly, as
DistributedDataParallel's gradient hooks are not part of the graph.
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from pyrovae import distributed
from pyrovae.devices import wide_dtype
from pyrovae.errors import unknown_name
from pyrovae.handlers import scale_data, scale_latents

__all__ = ["COMPILE_MODES", "StepCapture", "check_mode"]

#: how a training step is run: captured and replayed (``"graph"``), captured and compiled (``"inductor"``),
#: ``"auto"`` (``"graph"``), or eagerly (``"off"``)
COMPILE_MODES = ("auto", "off", "graph", "inductor")
# frames of torch and of this module, passed over when a failed recording names where it failed
_SKIPPED = (str(Path(torch.__file__).parent), __file__)
# warm-up runs of a CUDA graph's work on a side stream before it is captured, as torch's documentation asks
_CUDA_WARMUP = 3


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`COMPILE_MODES`, else a :class:`~pyrovae.errors.ConfigError` naming
    them.

    :param str mode: the mode asked for.
    """
    if mode not in COMPILE_MODES:
        raise unknown_name("compile", mode, COMPILE_MODES)
    return mode


class StepCapture:
    """The loss and gradient of a trainer's steps, captured per batch shape (module docstring).

    :param loss_module: the ``ELBO(model, guide)`` module, whose forward is the surrogate loss.
    :param params: its trainable parameters, in the order the gradients are returned.
    :param str mode: one of :data:`COMPILE_MODES` other than ``"off"``.
    :param torch.device device: where the steps run.
    """

    def __init__(self, loss_module: nn.Module, params: list[torch.Tensor], mode: str, device: torch.device):
        self.module, self.device = loss_module, device
        self.mode = "graph" if check_mode(mode) == "auto" else mode
        self._trainable = {id(p) for p in params}
        named = dict(loss_module.named_parameters())
        self.names = [name for name, p in named.items() if id(p) in self._trainable]
        self.others = [name for name, p in named.items() if id(p) not in self._trainable]
        self.buffer_names = [name for name, _ in loss_module.named_buffers()]
        # the tensors of the graphs' inputs, those the optimizer updates in place
        self._trainable_tensors = [named[n] for n in self.names]
        buffers = dict(loss_module.named_buffers())
        self._fixed_tensors = [named[n] for n in self.others] + [buffers[n] for n in self.buffer_names]
        self.reason: str | None = "a data-parallel run steps eagerly" if distributed.active() else None
        self._recorded: dict[tuple, torch.fx.GraphModule] = {}
        self._graphs: dict[tuple, Callable] = {}

    @property
    def graphs(self) -> int:
        """The number of batch shapes whose step is confirmed static and runs by its graph."""
        return len(self._graphs)

    @property
    def active(self) -> bool:
        """Whether steps may still be captured (no fallback to eager so far)."""
        return self.reason is None

    def __call__(
        self, args: tuple[torch.Tensor, ...], beta: float, scale: float, plate: str
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]] | None:
        """The loss and the gradients of the trainable parameters at ``args``, from the batch shape's graph,
        recording it first where it has none; ``None`` where this step must run eagerly (and then
        :attr:`reason` says why, when capture has ended for good).

        :param tuple args: the batch's columns, on the device.
        :param float beta: the latent sites' weight.
        :param float scale: the data plate's scale :math:`N/B`.
        :param str plate: the data plate's name.
        """
        key = (tuple((a.shape, a.dtype) for a in args), float(scale), plate)
        # β as Python multiplies it into the scales, in double precision (not on MPS, which has none)
        beta_t = torch.tensor(beta, dtype=wide_dtype(self.device), device=self.device)
        inputs = self._inputs(args, beta_t)
        run = self._graphs.get(key)
        if run is not None:
            with torch.no_grad():
                loss, grads = run(*inputs)
            return loss, list(grads)
        recorded = self._record(key, inputs, scale, plate)
        if recorded is None:
            return None
        graph, confirmed, outputs = recorded
        if confirmed:
            self._graphs[key] = self._runner(graph, inputs)
        return outputs

    def _inputs(self, args: tuple[torch.Tensor, ...], beta: torch.Tensor) -> tuple:
        return self._trainable_tensors, self._fixed_tensors, list(args), beta

    def _loss_and_grads(self, scale: float, plate: str, outputs: list) -> Callable:
        """The function recorded: the surrogate loss and its gradient in the trainable parameters, which it
        also appends to ``outputs`` (the values of the step the recording runs)."""
        fixed_names = self.others + self.buffer_names

        def step(trainable, fixed, args, beta):
            tensors = dict(zip(self.names + fixed_names, trainable + fixed, strict=True))
            with pyro.validation_enabled(False), scale_data(scale=scale, plate=plate):
                with scale_latents(beta=beta):
                    loss = torch.func.functional_call(self.module, tensors, tuple(args))
            grads = list(torch.autograd.grad(loss, trainable, allow_unused=True))
            outputs.append((loss.detach(), grads))
            return loss.detach(), grads

        return step

    def _record(self, key: tuple, inputs: tuple, scale: float, plate: str) -> tuple | None:
        """Run the step at ``inputs`` and record it: the graph, whether it confirms the previous recording of
        ``key``, and the step's loss and gradients. ``None`` where the recording failed (the random state and
        the buffers are then put back, for the eager step) or differs from the previous one; capture has then
        ended."""
        hooked = _hooked(self.module)
        if hooked is not None:
            self._stop(f"{hooked} has hooks, which torch calls in eager steps alone")
            return None
        trainable, fixed, args, beta = inputs
        # the leaves the recording differentiates: the parameters' values, outside the user's autograd graph
        leaves = [p.detach().requires_grad_(p.requires_grad) for p in trainable]
        outputs = []  # the real loss and gradients of the step the recording ran
        step = self._loss_and_grads(scale, plate, outputs)
        with _undone_on_error(fixed, self.device) as failed, torch.enable_grad(), _tensors_kept(self.module):
            graph = make_fx(step)(leaves, fixed, args, beta)
        if failed:
            self._stop(_failure(failed[0]))
            return None
        previous = self._recorded.get(key)
        self._recorded[key] = graph
        difference = previous is not None and _difference(previous, graph)
        if difference:
            self._stop(f"the pair's {difference} changed from one step to the next")
        loss, grads = outputs[0]
        return graph, previous is not None and not difference, (loss, grads)

    def _runner(self, graph: torch.fx.GraphModule, inputs: tuple) -> Callable:
        """How a confirmed graph is run: compiled, or as a CUDA graph, or as it is."""
        if self.mode == "inductor":
            return torch.compile(graph, backend="inductor", dynamic=False)
        if self.device.type == "cuda":
            return _CudaGraph(graph, inputs, self.device)
        return graph

    def _stop(self, reason: str) -> None:
        self.reason = reason
        self._graphs.clear()
        self._recorded.clear()
        warnings.warn(f"compile: {reason}; training eagerly from here on", stacklevel=4)


def _hooked(module: nn.Module) -> str | None:
    """The name of the first submodule of ``module`` with forward or backward hooks (whose Python a replayed
    graph would skip), or ``None``. nn.Module has no public way to list them: its own attributes are read."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    for name, sub in module.named_modules():
        if any(getattr(sub, kind, None) for kind in kinds):
            return f"module {name.removeprefix('model.owner.').removeprefix('guide.owner.') or 'the model'}"
    return None


def _failure(error: Exception) -> str:
    """Why a recording failed, at the last two lines of the pair's (or Pyro's) code it reached."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_SKIPPED)]
    last_two = frames[:-3:-1]
    at = ", called from ".join(
        f"{frame.name} ({'/'.join(Path(frame.filename).parts[-3:])}:{frame.lineno})" for frame in last_two
    )
    at = f" in {at}" if at else ""
    if "_local_scalar_dense" in str(error) or "data-dependent" in str(error):
        return f"the pair reads a tensor's value in Python{at} (.item(), float() or a branch on a tensor)"
    return f"recording the step failed{at} ({type(error).__name__}: {str(error).splitlines()[0][:200]})"


def _constants(graph: torch.fx.GraphModule) -> list[torch.Tensor]:
    return [getattr(graph, node.target) for node in graph.graph.nodes if node.op == "get_attr"]


def _difference(a: torch.fx.GraphModule, b: torch.fx.GraphModule) -> str | None:
    """What differs between two recordings of a step: ``"operations"``, ``"constants"`` or nothing."""
    if a.code != b.code:
        return "operations"
    for x, y in zip(_constants(a), _constants(b), strict=True):
        if not torch.is_tensor(x) or not torch.is_tensor(y):
            if x is not y:
                return "constants"
        elif x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
            return "constants"
    return None


class _CudaGraph:
    """A recorded step replayed as one CUDA graph: the batch and β copied into static buffers, then one
    launch; the loss and gradients are the graph's static outputs, valid until the next replay."""

    def __init__(self, graph: torch.fx.GraphModule, inputs: tuple, device: torch.device):
        trainable, fixed, args, beta = inputs
        self.args = [a.clone() for a in args]
        self.beta = beta.clone()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), torch.no_grad(), _kept(fixed):
            with torch.random.fork_rng(devices=[device]):
                for _ in range(_CUDA_WARMUP):
                    graph(trainable, fixed, self.args, self.beta)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.cuda_graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), _kept(fixed), torch.cuda.graph(self.cuda_graph):
            self.outputs = graph(trainable, fixed, self.args, self.beta)

    def __call__(self, trainable, fixed, args, beta):
        for static, a in zip(self.args, args, strict=True):
            static.copy_(a, non_blocking=True)
        self.beta.copy_(beta, non_blocking=True)
        self.cuda_graph.replay()
        return self.outputs


@contextlib.contextmanager
def _undone_on_error(buffers: list[torch.Tensor], device: torch.device):
    """Catch an error of the block into the list it gives, and then put the random state and ``buffers`` back
    as they were: the step is then run eagerly, as if it had never been tried."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    saved = [t.detach().clone() for t in buffers]
    failed: list[Exception] = []
    try:
        yield failed
    except Exception as e:  # noqa: BLE001 -- whatever stops the recording, the step runs eagerly
        failed.append(e)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        with torch.no_grad():
            for t, s in zip(buffers, saved, strict=True):
                t.copy_(s)


@contextlib.contextmanager
def _tensors_kept(module: nn.Module):
    """Give every parameter and buffer of ``module`` back to it after the block: a recording that fails
    part-way can leave :func:`torch.func.functional_call`'s stand-ins in their place."""
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    try:
        yield
    finally:
        for name, tensor in named:
            owner_name, _, attribute = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            if getattr(owner, attribute) is not tensor:
                setattr(owner, attribute, tensor)


@contextlib.contextmanager
def _kept(tensors: list[torch.Tensor]):
    """Put ``tensors`` (buffers) back as they were: warm-up and capture runs are not steps."""
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, s in zip(tensors, saved, strict=True):
                t.copy_(s)
