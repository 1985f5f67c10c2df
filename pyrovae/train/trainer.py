"""One step of minibatch stochastic variational inference on a model/guide pair (:class:`Trainer`):
the step :mod:`pyrovae.train.loop` describes (and runs epoch after epoch) on a minibatch it is
given, with one of the torch optimizers :data:`OPTIMIZERS`.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.elbo import ELBOModule
from pyro.infer.util import is_validation_enabled
from torch import nn

from pyrovae import devices, distributed
from pyrovae.errors import ConfigError, TrainingError, unknown_name
from pyrovae.estimators import estimator as make_estimator
from pyrovae.graphs import check_mode
from pyrovae.handlers import scale_data, scale_latents
from pyrovae.infer import Chunk, Sweep
from pyrovae.infer.checks import dtype_error
from pyrovae.infer.pair import trace_pair
from pyrovae.infer.sites import find_data_plate
from pyrovae.options import check_options
from pyrovae.precision import check_precision, using_precision
from pyrovae.train.capture import StepCapture
from pyrovae.train.optim import AdamNormGrad

__all__ = ["OPTIMIZERS", "Trainer", "as_args", "elbo_module"]

#: the optimizers of :class:`Trainer` and :func:`~pyrovae.train.loop.fit`, by name
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adam-normgrad": AdamNormGrad,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


class _Method(nn.Module):
    """A bound method of ``owner`` as a module, so ``ELBO(model, guide)`` sees ``owner``'s parameters."""

    def __init__(self, owner: nn.Module, name: str):
        super().__init__()
        self.owner, self.name = owner, name

    def forward(self, *args, **kwargs):
        return getattr(self.owner, self.name)(*args, **kwargs)


def elbo_module(vae: nn.Module, elbo: ELBO) -> ELBOModule:
    """``elbo(model, guide)`` for a module with ``model`` and ``guide`` methods."""
    for name in ("model", "guide"):
        if not callable(getattr(vae, name, None)):
            raise ConfigError(
                f"{type(vae).__name__} has no {name}() method; fit() trains a module with model() and "
                "guide() methods whose per-datapoint sites live in pyro.plate('data', N), like pyrovae.VAE"
            )
    return elbo(_Method(vae, "model"), _Method(vae, "guide"))


class Trainer:
    """One SVI step at a time: the loop body of :func:`fit`, exposed for benchmarks and custom loops.

    :param vae: a module with ``model(x)`` and ``guide(x)`` methods.
    :param num_data: size :math:`N` of the full data set, for the minibatch scale :math:`N/B`.
    :param estimator: an estimator name or :class:`~pyro.infer.ELBO`.
    :param str optimizer: the name of a torch optimizer of :data:`OPTIMIZERS` (``"adam"``,
        ``"adam-normgrad"``, ``"adamw"`` or ``"sgd"``), built on the trainable parameters with ``lr``
        and torch's defaults otherwise.
    :param lr: learning rate of the torch ``optimizer``.
    :param clip_norm: clip the gradient's global norm to this value (no clipping if ``None``).
    :param device: where to train (see :mod:`pyrovae.devices`): ``vae`` is moved there, and every
        batch (default ``"auto"``: CUDA where available, else the CPU; under ``torchrun`` with
        CUDA, ``cuda:LOCAL_RANK``).
    :param str compile: how the steps after the first are run (:mod:`pyrovae.train.capture`): ``"auto"``,
        ``"graph"`` (the loss and gradient captured as a graph of tensor operations and replayed, on CUDA as a
        CUDA graph), ``"inductor"`` (that graph compiled by :func:`torch.compile`) or ``"off"`` (eagerly). A
        pair whose structure changes between steps trains eagerly, with a warning that says why.
    :param str precision: the arithmetic of the loss and its gradient, and of :meth:`evaluate`
        (:mod:`pyrovae.precision`): ``"highest"`` (the default: full float32), ``"tf32"`` (the float32
        matrix products and convolutions in TensorFloat-32 on a GPU that has it) or ``"bf16"`` (those of
        float32 tensors in bfloat16, everything else, the log-densities included, in float32). The
        parameters and the optimizer's state stay float32.

    The minibatch scale :math:`N/B` applies to the data plate, the plate every observed site
    shares (:func:`~pyrovae.infer.pair.find_data_plate`), found on the first step. In a
    distributed run (:func:`pyrovae.distributed.init` has started a process group) the
    ``ELBO(model, guide)`` module is wrapped in DistributedDataParallel and every step is collective.
    """

    def __init__(
        self,
        vae: nn.Module,
        num_data: int,
        *,
        estimator: str | ELBO = "elbo",
        optimizer: str = "adam",
        lr: float = 1e-3,
        clip_norm: float | None = None,
        device: str | torch.device | None = "auto",
        compile: str = "auto",
        precision: str = "highest",
    ):
        if optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", optimizer, OPTIMIZERS)
        check_options(lr=lr, clip_norm=clip_norm)
        self.device = devices.resolve(device)
        self.precision = check_precision(precision, self.device)
        self.vae = vae.to(self.device)
        self.num_data = num_data
        self.data_plate: str | None = None
        self.elbo = make_estimator(estimator)
        self.loss_module = elbo_module(vae, self.elbo)
        self.params = [p for p in self.loss_module.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"{type(vae).__name__} has no trainable parameters")
        self._forward = distributed.wrap(self.loss_module)
        # the multi-tensor implementation on every device (torch takes it by default on CUDA alone): one call
        # per operation for all the parameters, where a loop over them pays Python for each
        self.optimizer = OPTIMIZERS[optimizer](self.params, lr=lr, foreach=True)
        self.clip_norm = clip_norm
        self._validated = False
        self._unchecked = 0  # steps with sync=False since the last check()
        self.checked_steps = 0
        self.compile = check_mode(compile)
        self.capture = None
        if compile != "off":
            self.capture = StepCapture(self.loss_module, self.params, compile, self.device)

    def step(
        self,
        x: torch.Tensor | tuple[torch.Tensor, ...],
        beta: float = 1.0,
        batch_size: int | None = None,
        *,
        sync: bool = True,
    ) -> float | torch.Tensor:
        r"""One gradient step on the minibatch ``x``; returns its loss in nats per data point.

        In a distributed run ``x`` is this rank's share of a global minibatch of ``batch_size``
        data points (default: the share's size times the number of ranks :math:`W`); the data
        plate is scaled by :math:`W N / B` (see :mod:`pyrovae.distributed`) and the loss returned
        is the global minibatch's, averaged over the ranks, the same on every rank.

        The first step runs under Pyro's validation (as the user has set it), so that a model
        error is reported with Pyro's own message; later steps skip the per-step checks.

        :param x: a tensor, or a tuple of tensors sharing their leading (data point) dimension, such
            as data and labels, passed to the model and guide positionally (on the trainer's device).
        :param float beta: the weight :math:`\beta` of every latent site's log-density
            (:func:`~pyrovae.handlers.scale_latents`): 1 for the estimator's own bound, below 1 during
            a KL warm-up.
        :param int batch_size: the size :math:`B` of the global minibatch of a distributed run (see
            above).
        :param bool sync: check the step's loss, gradient and parameters at once, which waits for the device,
            and return the loss as a float, raising :class:`~pyrovae.errors.TrainingError` for a non-finite
            one. ``False`` (in one process) waits for nothing: the loss comes back as a tensor on the device,
            and a step whose loss, gradient or updated parameters are not finite leaves the parameters as
            they were, as does every later one until :meth:`check` says which it was.
        """
        args = devices.move(as_args(x), self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with using_precision(self.precision, self.device):
            captured = self._captured(args, beta, batch_size)
            if captured is None:
                loss = self._eager_loss(args, beta, batch_size)
                loss.backward()
            else:
                loss, grads = captured
                for p, g in zip(self.params, grads, strict=True):
                    p.grad = g
        if self.clip_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if not sync:
            return self._deferred(loss.detach(), grad_norm)
        # one host sync for the loss and both checks; a non-finite step is never applied
        param_norm = torch.nn.utils.get_total_norm([p.detach() for p in self.params])
        value = distributed.all_reduce_mean(loss)
        # with no gradient at all, torch's norm is a 0 on the CPU
        finite = torch.stack([grad_norm.to(param_norm.device), param_norm]).isfinite().tolist()
        for what, ok in zip(("loss", "gradient", "parameters"), (math.isfinite(value), *finite), strict=True):
            if not ok:
                raise TrainingError(f"the {what} became non-finite ({value:.6g} nats for the loss)")
        self.optimizer.step()
        return value / self.num_data

    def _deferred(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """The update of ``step(sync=False)``: applied, then undone on the device where the step (or one
        before it since the last :meth:`check`) was not finite."""
        if distributed.active():
            raise ConfigError("step(sync=False) is for one process: a data-parallel step synchronizes anyway")
        if self._unchecked == 0:
            self._all_finite = torch.ones((), dtype=torch.bool, device=loss.device)
            self._first_bad = torch.zeros((), dtype=torch.long, device=loss.device)
        self._unchecked += 1
        # what the update changes: the parameters and the optimizer's state on the device (a non-finite
        # gradient makes Adam's moments non-finite), put back below where the step is not finite (Adam's step
        # count on the host goes on: waiting for the device is what this path avoids)
        changed = self.params + [t for state in self.optimizer.state.values() for t in state.values()]
        changed = [t for t in changed if torch.is_tensor(t) and t.device == loss.device]
        before = [t.detach().clone() for t in changed]
        existing = {id(t) for t in changed}
        self.optimizer.step()
        # the state the step created (a first step's moments): zeroed where it was not finite
        created = [t for state in self.optimizer.state.values() for t in state.values()]
        created = [t for t in created if id(t) not in existing and torch.is_tensor(t)]
        created = [t for t in created if t.device == loss.device]
        params = torch.nn.utils.get_total_norm([p.detach() for p in self.params])
        finite = loss.isfinite() & grad_norm.to(loss.device).isfinite() & params.isfinite()
        # the first step that was not finite, counted from the last check
        self._first_bad = torch.where(self._all_finite & ~finite, self._unchecked, self._first_bad)
        self._all_finite = self._all_finite & finite
        with torch.no_grad():
            for t, old in zip(changed, before, strict=True):
                t.copy_(torch.where(self._all_finite, t, old))
            for t in created:
                t.copy_(torch.where(self._all_finite, t, torch.zeros_like(t)))
        return loss.to(devices.wide_dtype(loss.device)) / self.num_data

    def check(self) -> int | None:
        """Which of the steps run with ``sync=False`` since the last check was the first whose loss, gradient
        or parameters were not finite (1 for the first of them), or ``None`` if all were finite; a host sync.
        From that step on, none was applied. :attr:`checked_steps` is then the number of steps it checked."""
        self.checked_steps, self._unchecked = self._unchecked, 0
        if self.checked_steps == 0:
            return None
        first = int(self._first_bad)
        return first or None

    def _captured(self, args: tuple, beta: float, batch_size: int | None):
        """The loss and gradients of a captured step, or ``None`` for an eager one: the first (validated)
        step, and every step of a pair that cannot be captured."""
        if not self._validated or self.capture is None or not self.capture.active:
            return None
        return self.capture.step(args, beta, self.num_data / (batch_size or len(args[0])), self.data_plate)

    def _eager_loss(self, args: tuple, beta: float, batch_size: int | None) -> torch.Tensor:
        """The minibatch's loss by the eager path, the first step's under Pyro's validation."""
        try:
            loss = self._loss(args, beta, batch_size)
        except ValueError as e:  # Pyro's validation of the first step
            if "found invalid values" not in str(e):
                raise
            raise ConfigError(
                f"the first training step failed Pyro's validation ({str(e).splitlines()[0].rstrip(':')}). "
                "Either the model or guide gives that distribution invalid parameters (check the site's "
                "inputs), or the module's parameters diverged in an earlier training: create it afresh, or "
                "load a checkpoint"
            ) from None
        self._validated = True
        return loss

    def _loss(self, args: tuple, beta: float, batch_size: int | None) -> torch.Tensor:
        """The minibatch's loss, the first step under Pyro's validation (as the user has set it)."""
        if self.data_plate is None:
            self.data_plate = self._find_data_plate(args)
        with pyro.validation_enabled(is_validation_enabled() and not self._validated):
            world = distributed.world_size()
            scale = world * self.num_data / (batch_size or world * len(args[0]))
            with scale_data(scale=scale, plate=self.data_plate), scale_latents(beta=beta):
                return self._forward(*args)

    def set_lr(self, lr: float) -> None:
        """Use the learning rate ``lr`` from the next step on.

        :param float lr: the new learning rate (> 0), for every parameter group.
        """
        check_options(lr=lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _find_data_plate(self, args: tuple[torch.Tensor, ...]) -> str:
        """The data plate of the pair, from one run on the first batch (the random state restored)."""
        state = pyro.util.get_rng_state()
        cuda = [self.device] if self.device.type == "cuda" else []  # its generator restored too
        try:
            with poutine.block(), torch.no_grad(), torch.random.fork_rng(devices=cuda):
                model_trace, _ = trace_pair(self.loss_module.model, self.loss_module.guide, args, {})
        except (RuntimeError, TypeError) as e:
            error = dtype_error(self.loss_module.model, self.loss_module.guide, args, e)
            if error is not None:
                raise error from None
            if len(args) == 1 or not isinstance(e, TypeError):
                raise
            shapes = ", ".join(str(tuple(a.shape)) for a in args)
            raise ConfigError(
                f"each batch has {len(args)} columns ({shapes}), all passed to {type(self.vae).__name__}'s "
                f"model and guide positionally, which refused them ({e}); pass only the columns the "
                "model takes (e.g. the images, not their labels), or a model that takes them all"
            ) from None
        finally:
            pyro.util.set_rng_state(state)
        return find_data_plate(model_trace, len(args[0]))

    @torch.no_grad()
    def evaluate(self, data, *, seed: int | None = None, chunk_size: int = 1000) -> float:
        """The estimator's negative bound on a data set, in nats per data point (β = 1), summed
        over chunks of ``chunk_size`` data points, each seeded from ``(seed, first data point)``.

        In a distributed run the chunks are sharded across the ranks and the value is the same
        on every rank (:class:`~pyrovae.infer.Sweep`).

        :param data: the data, as :class:`~pyrovae.data.DataSource` reads them (a tensor, a tuple of
            tensors or a data set).
        :param int seed: the seed each chunk's is derived from; ``None`` leaves the random state alone.
        :param int chunk_size: data points per chunk (≥ 1), evaluated at once.
        """
        sweep = Sweep(data, chunk_size, device=self.device, seed=seed, precision=self.precision)

        def loss(chunk: Chunk) -> torch.Tensor:
            value = self.elbo.loss(self.loss_module.model, self.loss_module.guide, *chunk.args)
            # the chunk's bound, shared out equally among its data points
            return torch.full((chunk.size,), value / chunk.size, dtype=torch.float64)

        return float(sweep.map(loss).sum()) / sweep.num_data


def as_args(batch: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A minibatch as the positional arguments of the model and guide: one tensor, or a tuple
    (data and labels, say)."""
    return tuple(batch) if isinstance(batch, tuple | list) else (batch,)
