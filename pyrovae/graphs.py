r"""Recorded graphs: a function of tensors recorded as a graph of tensor operations, then replayed without the
Python that produced it.

A Pyro model pays Python for every site: the effect-handler stack, the trace, the distributions' argument
handling, then one kernel launch per operation. For a pair whose structure is *static* -- the same sites,
shapes, plates and constants every time -- that Python computes the same tensor operations at each call, on
new data and new draws. :class:`RecordedGraphs` runs a function ``fn(persistent, varying)`` of two lists of
tensors (those that stay the same tensors from call to call, such as parameters, and those that change, such
as a batch) under :func:`~torch.fx.experimental.proxy_tensor.make_fx`, which keeps every operation the
dispatcher sees -- a backward pass's included -- as a :class:`torch.fx.GraphModule` of ATen operations. Random
draws stay random operations of the graph: replayed, they take the global generator's next numbers, the very
ones the eager call would have taken, so replayed calls give the eager calls' values.

A graph is kept only when the structure is seen to be static: ``fn`` is recorded on two calls with the same
key (the caller's: the shapes of its inputs, say), and the two graphs must have the same code and the same
constants (tensors made from Python values). A function whose operations or constants depend on its draws or
its data (Python control flow on sampled values, a data-dependent number of sites, a baseline kept outside the
inputs) gives two different graphs and runs eagerly from then on, with one warning that says why; so does one
whose recording fails, such as one that reads a tensor's value in Python (``.item()``, as Pyro's
``TraceMeanField_ELBO``, ``TraceTailAdaptive_ELBO`` and ``TraceEnum_ELBO`` do), and one whose module has
forward or backward hooks, which a replayed graph would not call. A recording runs the call it records, on the
real tensors: its outputs are the call's. One that fails puts the random state and the given buffers back
before the caller runs the call eagerly (what else the Python did, it did twice). Python state the function
reads besides its inputs is read when it is recorded.

The graph is run by the ``mode`` (:data:`COMPILE_MODES`):

- ``"graph"``: replayed as it is, op by op, and on CUDA as a CUDA graph (the varying inputs copied into
  static buffers; the generator's graph-safe offsets), one launch for the whole function;
- ``"inductor"``: compiled by :func:`torch.compile` (fused kernels; a first call that takes seconds to
  minutes);
- ``"auto"``: ``"graph"``;
- ``"off"``: no recording, every call eager.

:mod:`pyrovae.train.capture` records a training step's loss and gradient this way;
:class:`~pyrovae.infer.importance.LogWeights` the log-weights of an evaluation's chunks.
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from pyrovae.errors import PyroVAEError, unknown_name

__all__ = ["COMPILE_MODES", "RecordedGraphs", "check_mode"]

#: how a recorded function is run: replayed (``"graph"``), compiled (``"inductor"``), ``"auto"``
#: (``"graph"``), or not recorded at all (``"off"``)
COMPILE_MODES = ("auto", "off", "graph", "inductor")
# frames of torch and of this module, passed over when a failed recording names where it failed
_SKIPPED = (str(Path(torch.__file__).parent), __file__)
aten = torch.ops.aten
# operations that only reshape, through which a negation is moved after a sum (_simplify)
_VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)
# operations that make a new tensor, which a draw in place then fills
_NEW = (aten.empty.memory_format, aten.empty_like.default, aten.empty_strided.default)
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


class RecordedGraphs:
    """Calls of functions of tensors, recorded per key and replayed once two recordings agree (module
    docstring).

    :param str mode: one of :data:`COMPILE_MODES` other than ``"off"``.
    :param torch.device device: where the calls run.
    :param str eager: what the warning says happens once recording has ended, e.g. ``"training eagerly"``.
    :param int after: calls of each key left to the caller, eager, before the first recording (a recording
        costs a few eager calls: where a call's Python is cheap, short runs are better off without).
    """

    def __init__(self, mode: str, device: torch.device, eager: str, after: int = 0):
        self.mode = "graph" if check_mode(mode) == "auto" else mode
        self.device, self.eager, self.after = device, eager, after
        self.reason: str | None = None
        self._calls: dict[Hashable, int] = {}
        self._replayed: set[Hashable] = set()  # keys whose graph has run once without an error
        self._pool = None
        self._recorded: dict[Hashable, torch.fx.GraphModule] = {}
        self._graphs: dict[Hashable, Callable] = {}

    @property
    def graphs(self) -> int:
        """The number of keys whose calls are confirmed static and run by their graph."""
        return len(self._graphs)

    @property
    def active(self) -> bool:
        """Whether calls may still be recorded (no fallback to eager so far)."""
        return self.reason is None

    def __call__(
        self,
        key: Hashable,
        fn: Callable,
        persistent: list,
        varying: list,
        *,
        module: nn.Module | None = None,
        buffers: Sequence[torch.Tensor] = (),
    ):
        """``fn(persistent, varying)`` by the key's graph, recording it where it has none; ``None`` where the
        call must be made eagerly, by the caller: one of the first ``after`` calls of the key, or any once
        recording has ended (then :attr:`reason` says why).

        :param key: what the graph is kept under: calls with the same key must have the same structure.
        :param fn: a function of two lists of tensors, returning tensors (in tuples and lists, or ``None``).
        :param list persistent: inputs that are the same tensors at every call (parameters, buffers).
        :param list varying: inputs whose values change from call to call (a batch).
        :param module: the module whose parameters ``fn`` uses: checked for hooks, and its tensors put back
            after a recording (:func:`torch.func.functional_call` stand-ins a failure can leave).
        :param buffers: tensors ``fn`` updates in place, put back when a recording fails.
        """
        run = self._graphs.get(key)
        if run is not None and key in self._replayed:
            if not isinstance(run, _CudaGraph) or run.valid(persistent):
                with torch.no_grad():
                    return run(persistent, varying)
            # the parameters moved in memory (vae.to(...), p.data = ...): record again, from scratch
            del self._graphs[key]
            self._recorded.pop(key, None)
            self._replayed.discard(key)
        elif run is not None:  # the first replay: where it fails (a compilation, say), the call is eager
            with _undone_on_error(buffers, self.device) as failed, torch.no_grad():
                out = run(persistent, varying)
            if not failed:
                self._replayed.add(key)
                return out
            self.stop(_failure(failed[0], "replaying"))
            return None
        self._calls[key] = calls = self._calls.get(key, 0) + 1
        if calls <= self.after:
            return None
        hooked = None if module is None else _hooked(module)
        if hooked is not None:
            self.stop(f"{hooked} has hooks, which torch calls in eager steps alone")
            return None
        outputs = []  # the real outputs of the call the recording runs

        def recorded(persistent, varying):
            out = fn(persistent, varying)
            outputs.append(out)
            return out

        kept = contextlib.nullcontext() if module is None else _tensors_kept(module)
        with _undone_on_error(buffers, self.device) as failed, kept:
            graph = make_fx(recorded)(persistent, varying)
        if failed:
            self.stop(_failure(failed[0]))
            return None
        _simplify(graph.graph)
        graph.recompile()
        # work on the host inside a recording on CUDA (copies of CPU tensors, CPU draws) a CUDA graph would
        # run once, at its capture, and then replay frozen: such a graph is replayed as it is
        host = self.device.type == "cuda" and any(_on_host(node) for node in graph.graph.nodes)
        for node in graph.graph.nodes:  # the recording's values of every operation, which nothing reads
            node.meta.clear()
        previous = self._recorded.get(key)
        self._recorded[key] = graph
        difference = previous is not None and _difference(previous, graph)
        if difference:
            self.stop(f"the pair's {difference} changed from one call to the next")
        elif previous is not None:
            with _undone_on_error(buffers, self.device) as failed:
                self._graphs[key] = self._runner(graph, persistent, varying, buffers, host)
            if failed:
                self.stop(_failure(failed[0], "capturing a CUDA graph"))
        return outputs[0]

    def _runner(self, graph: torch.fx.GraphModule, persistent, varying, buffers, host: bool) -> Callable:
        """How a confirmed graph is run: compiled, or as a CUDA graph, or as it is."""
        if self.mode == "inductor":
            return torch.compile(graph, backend="inductor", dynamic=False)
        if self.device.type == "cuda" and not host:
            if self._pool is None:  # one memory pool for all the graphs, replayed one after another
                self._pool = torch.cuda.graph_pool_handle()
            return _CudaGraph(graph, persistent, varying, buffers, self.device, self._pool)
        return graph

    def stop(self, reason: str) -> None:
        """End recording: every later call is eager; warn, once, with ``reason``.

        :param str reason: why, in words.
        """
        self.reason = reason
        self._graphs.clear()
        self._recorded.clear()
        self._replayed.clear()
        warnings.warn(f"compile: {reason}; {self.eager} from here on", stacklevel=3)


def _hooked(module: nn.Module) -> str | None:
    """The name of the first submodule of ``module`` with forward or backward hooks (whose Python a replayed
    graph would skip), or ``None``. nn.Module has no public way to list them: its own attributes are read."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    for name, sub in module.named_modules():
        if any(getattr(sub, kind, None) for kind in kinds):
            return f"module {_short(name) or 'the model'}"
    for name, p in module.named_parameters():  # hooks on the tensors themselves (Tensor.register_hook)
        if getattr(p, "_backward_hooks", None) or getattr(p, "_post_accumulate_grad_hooks", None):
            return f"parameter {_short(name)}"
    return None


def _short(name: str) -> str:
    """A parameter's or module's name in the user's module, not in the ELBO module around it."""
    return name.removeprefix("model.owner.").removeprefix("guide.owner.")


def _simplify(graph: torch.fx.Graph) -> None:
    """Rewrites of a recording, made while its nodes still hold the recording's values:

    - operations whose results nothing reads (copies of constants, a distribution's unused statistics) go;
      random draws count as read, so that replays keep taking the eager calls' numbers;
    - a negation whose only use is a sum (through views) moves after the sum: torch's ``Bernoulli.log_prob``
      negates a cross-entropy as large as the data times the particles, which a log-density then sums over
      the data's dimensions. Only where the negated tensor is floating-point and contiguous (the sum then
      reads the same numbers in the same order) and the graph writes to no tensor in place (which could
      change it between the two reads). Rounding to nearest is symmetric, so the sum of the negated terms is
      the negated sum, bit for bit, but for a sum of exactly zero, which may come back as -0.0 where it was
      +0.0; one pass over the largest tensor of an evaluation is saved.
    """
    graph.eliminate_dead_code()
    if any(_writes(node) for node in graph.nodes):
        return
    for node in list(graph.nodes):
        if node.target is not aten.sum.dim_IntList:
            continue
        views, source = [], node.args[0]
        while source.target in _VIEWS and len(source.users) == 1:
            views.append(source)
            source = source.args[0]
        negation = source.target is aten.neg.default and len(source.users) == 1
        if not negation or not _dense_float(source.args[0]):
            continue
        (views[-1] if views else node).replace_input_with(source, source.args[0])
        graph.erase_node(source)
        users = list(node.users)
        with graph.inserting_after(node):
            negated = graph.call_function(aten.neg.default, (node,))
        for user in users:
            user.replace_input_with(node, negated)


def _writes(node: torch.fx.Node) -> bool:
    """Whether ``node`` writes to a tensor in place, other than a draw into a new one (``normal_`` of
    ``empty``)."""
    if node.op != "call_function" or not node.is_impure(impure_random=False):
        return False
    seeded = torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ())
    target = node.args[0] if node.args else None
    return not (seeded and isinstance(target, torch.fx.Node) and target.target in _NEW)


def _dense_float(node) -> bool:
    """Whether the recording's value of ``node`` is a contiguous floating-point tensor."""
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return torch.is_tensor(value) and value.is_floating_point() and value.is_contiguous()


def _on_host(node: torch.fx.Node) -> bool:
    """Whether an operation of a recording made a CPU tensor of more than one element."""
    value = node.meta.get("val")
    return torch.is_tensor(value) and value.device.type == "cpu" and value.numel() > 1


def _failure(error: Exception, what: str = "recording") -> str:
    """Why a recording (or ``what`` else) failed, at the last two lines of the pair's (or Pyro's) code it
    reached."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(_SKIPPED)]
    last_two = frames[:-3:-1]
    at = ", called from ".join(
        f"{frame.name} ({'/'.join(Path(frame.filename).parts[-3:])}:{frame.lineno})" for frame in last_two
    )
    at = f" in {at}" if at else ""
    if "_local_scalar_dense" in str(error) or "data-dependent" in str(error):
        return f"the pair reads a tensor's value in Python{at} (.item(), float() or a branch on a tensor)"
    return f"{what} failed{at} ({type(error).__name__}: {str(error).splitlines()[0][:200]})"


def _constants(graph: torch.fx.GraphModule) -> list[torch.Tensor]:
    return [getattr(graph, node.target) for node in graph.graph.nodes if node.op == "get_attr"]


def _difference(a: torch.fx.GraphModule, b: torch.fx.GraphModule) -> str | None:
    """What differs between two recordings: ``"operations"``, ``"constants"`` or nothing."""
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
    """A recorded call replayed as one CUDA graph: the varying inputs copied into static buffers, then one
    launch; the outputs are the graph's static outputs, valid until the next replay."""

    def __init__(self, graph: torch.fx.GraphModule, persistent, varying, buffers, device: torch.device, pool):
        self.varying = [t.clone() for t in varying]
        # where the persistent inputs live: the graph reads them there
        self.addresses = _addresses(persistent)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), torch.no_grad(), _kept(buffers):
            with torch.random.fork_rng(devices=[device]):
                for _ in range(_CUDA_WARMUP):
                    graph(persistent, self.varying)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.cuda_graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), _kept(buffers), torch.cuda.graph(self.cuda_graph, pool=pool):
            self.outputs = graph(persistent, self.varying)

    def valid(self, persistent) -> bool:
        """Whether the persistent inputs are still where the graph reads them."""
        return _addresses(persistent) == self.addresses

    def __call__(self, persistent, varying):
        for static, t in zip(self.varying, varying, strict=True):
            static.copy_(t, non_blocking=True)
        self.cuda_graph.replay()
        return self.outputs


def _addresses(tensors) -> list[int]:
    """The data pointers of the tensors in lists of tensors (and lists of them)."""
    if torch.is_tensor(tensors):
        return [tensors.data_ptr()]
    return [a for t in tensors for a in _addresses(t)]


@contextlib.contextmanager
def _undone_on_error(buffers: Sequence[torch.Tensor], device: torch.device):
    """Catch an error of the block into the list it gives, and then put the random state and ``buffers`` back
    as they were: the call is then made eagerly, as if it had never been tried."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    saved = [t.detach().clone() for t in buffers]
    failed: list[Exception] = []
    try:
        yield failed
    except Exception as e:  # noqa: BLE001 -- whatever stops the recording, the call is made eagerly
        failed.append(e)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        with torch.no_grad():
            for t, s in zip(buffers, saved, strict=True):
                t.copy_(s)
        if isinstance(e, PyroVAEError | torch.OutOfMemoryError):
            raise  # the user's mistake, or no memory: the eager call would fail alike, and says why


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
def _kept(tensors: Sequence[torch.Tensor]):
    """Put ``tensors`` (buffers) back as they were: warm-up and capture runs are not calls."""
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, s in zip(tensors, saved, strict=True):
                t.copy_(s)
