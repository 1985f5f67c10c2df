r"""Minibatch stochastic variational inference (Hoffman et al. 2013; Kingma & Welling 2014).

:func:`fit` maximizes an ELBO-type bound of any model/guide pair whose per-datapoint sites live in the
``"data"`` plate. One step draws a minibatch :math:`\mathcal{B}` of the :math:`N` data points and descends

.. math:: -\frac{N}{|\mathcal{B}|}\sum_{n \in \mathcal{B}} \mathcal{L}_n(\theta, \phi),

an unbiased estimate of the negative bound of the whole data set, with the gradient taken by
``estimator.differentiable_loss`` inside an ``ELBO(model, guide)`` module and applied by a torch
optimizer. Reported figures are divided by :math:`N`: nats per data point.

Launched by ``torchrun``, :func:`fit` trains data-parallel: each of the :math:`W` workers takes its
share of every global minibatch and scales the data plate so that the averaged gradient is exactly
that of the one-process loss above (see :mod:`pyrovae.distributed`). ``batch_size`` and ``lr`` keep
their meaning: the global batch and the step size applied to its gradient.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import torch
from pyro.infer import ELBO
from torch import nn
from tqdm.auto import tqdm

from pyrovae import devices, distributed
from pyrovae.data.source import DataSource
from pyrovae.errors import CheckpointError, ConfigError, TrainingError
from pyrovae.options import check_options
from pyrovae.results import Result, live, table
from pyrovae.runs.directory import CONFIG, HISTORY, RunDirectory, checkpoint_bytes
from pyrovae.storage import pause_point, write_json, write_text
from pyrovae.train.callbacks import Callback, Callbacks, FitState
from pyrovae.train.trainer import Trainer

#: options of :func:`fit` a resumed run must keep (changing them would make another run), and those
#: it may change (applied from the resumed epoch on, and recorded in the checkpoint)
FIXED_SETTINGS = ("estimator", "batch_size", "optimizer", "kl_warmup", "seed")
MUTABLE_SETTINGS = ("epochs", "lr", "clip_norm", "patience", "compile", "precision")
CHECKPOINT_VERSION = 2
#: devices whose steps are checked every SYNC_EVERY steps (and at the end of an epoch) rather than at each,
#: so that the host does not wait for the device at every step (:meth:`Trainer.step`'s ``sync``)
DEFERRED_DEVICES, SYNC_EVERY = ("cuda",), 100
#: the columns of the history, one row per epoch
COLUMNS = ("epoch", "train_loss", "valid_loss", "beta", "lr", "seconds")


def check_data(vae: nn.Module, data: DataSource, what: str) -> None:
    """Check shape and support of ``data`` against ``vae`` (when it knows how) before any training."""
    check = getattr(vae, "check_data", None)
    if check is None:
        return
    dataset = data.dataset
    if dataset is None:  # tensors: the first column, whole
        check(data.chunk(0, len(data))[0], what)
    elif getattr(dataset, "binarize", None) is None and torch.is_tensor(getattr(dataset, "data", None)):
        check(dataset.data, what)
    else:
        check(next(data.batches(min(len(data), 1000)))[0], what)


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for ``epoch`` of a run seeded with ``seed``: runs are reproducible epoch by epoch, so training 4
    epochs straight and 2 epochs + resume for 2 more gives identical parameters. Rank ``rank`` of a
    distributed run draws its estimator's noise from its own seed, so that the workers' draws are
    independent; rank 0's is the one-process run's."""
    if rank:
        return distributed.derived_seed(seed, epoch, rank)
    return (seed * 1_000_003 + epoch) % 2**32


#: the most epochs :meth:`FitResult.summary_table` (the table Jupyter shows) lists
SHOWN_EPOCHS = 10


@dataclass(repr=False)
class FitResult(Result):
    """What :func:`fit` returns: the trained module, its history and where its files are.

    :ivar vae: the trained module (``None`` when read back from a file).
    :ivar pandas.DataFrame history: one row per epoch: ``epoch``, ``train_loss``, ``valid_loss``,
        ``beta``, ``lr``, ``seconds``.
    :ivar Path run_dir: the run directory, or ``None`` for a run without one.
    :ivar int best_epoch: the epoch of the best validation bound, whose parameters ``vae`` holds;
        ``None`` without validation data.
    :ivar bool stopped_early: whether training stopped before ``epochs``: for want of a better validation
        bound within the patience, or because a callback stopped it.
    :ivar str stop_reason: why it stopped early, in words (``None`` if it did not).
    :ivar list notes: remarks for the summary (a resumed run, the best epoch's parameters restored).
    :ivar int num_data: training data points :math:`N`.
    :ivar int cpu_threads: the CPU threads torch computed with (:func:`~pyrovae.devices.cpu_threads`).
    """

    vae: nn.Module | None = live()
    history: pd.DataFrame = table("epoch", index="epoch")
    run_dir: Path | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    stop_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    num_data: int = 0
    cpu_threads: int | None = None

    @property
    def final_loss(self) -> float:
        """The validation bound of the best epoch (else the last training objective), in nats; NaN if no
        epoch was trained."""
        if self.history.empty:
            return math.nan
        col = "valid_loss" if self.history["valid_loss"].notna().any() else "train_loss"
        return float(self.history[col].iloc[-1 if self.best_epoch is None else self.best_epoch - 1])

    def summary_table(self) -> pd.DataFrame:
        """The history by epoch, without columns that are empty (no validation data): every epoch of
        a run of at most :data:`SHOWN_EPOCHS`, else that many evenly spaced from the first to the
        last, and the best (:attr:`history` has them all)."""
        empty = [c for c in self.history if c != "epoch" and self.history[c].isna().all()]
        table = self.history.drop(columns=empty)
        if len(table) > SHOWN_EPOCHS:
            rows = set(np.linspace(0, len(table) - 1, SHOWN_EPOCHS).round().astype(int).tolist())
            if self.best_epoch is not None:
                rows |= set(np.flatnonzero(table["epoch"].to_numpy() == self.best_epoch).tolist())
            table = table.iloc[sorted(rows)]
        return table.set_index("epoch")

    def figures(self) -> dict:
        """The number of epochs and the final loss."""
        return {"epochs": len(self.history), "final_loss": self.final_loss}

    def summary(self) -> str:
        h = self.history
        name = "model" if self.vae is None else type(self.vae).__name__
        threads = (
            ""
            if self.cpu_threads is None
            else f", {self.cpu_threads} CPU thread{'s' * (self.cpu_threads > 1)}"
        )
        lines = [f"{name} trained for {len(h)} epochs on {self.num_data} data points{threads}"]
        if len(h):
            lines.append(f"  final train objective: {h['train_loss'].iloc[-1]:.3f} nats per data point")
        if len(h) and h["valid_loss"].notna().any():
            best = h["valid_loss"].idxmin()
            lines.append(
                f"  best validation bound: {h['valid_loss'][best]:.3f} nats (epoch {int(h['epoch'][best])})"
            )
        if self.stopped_early:
            lines.append(f"  stopped early: {self.stop_reason}")
        if self.run_dir is not None:
            lines.append(f"  run directory: {self.run_dir}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _load_state(module: nn.Module, state: dict, what: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"the {what} in the checkpoint do not fit this {type(module).__name__}: "
            f"{str(e).splitlines()[0]} Resume with the model the run was trained with."
        ) from None


def _resumed_settings(state: dict, settings: dict) -> dict:
    """Refuse a change of a fixed setting; return the mutable ones that changed, as ``(old, new)``."""
    saved = state.get("settings", {})
    fixed = [k for k in FIXED_SETTINGS if k in saved and saved[k] != settings[k]]
    if fixed:
        was = ", ".join(f"{k}={saved[k]!r} (now {settings[k]!r})" for k in fixed)
        raise ConfigError(
            f"the run was trained with {was}; a resumed run must keep them (they define its model, "
            "data or objective). Resume with the run's values, or start a new run elsewhere."
        )
    return {k: [saved[k], settings[k]] for k in MUTABLE_SETTINGS if k in saved and saved[k] != settings[k]}


def fit(
    vae: nn.Module,
    train,
    valid=None,
    *,
    estimator: str | ELBO = "elbo",
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    optimizer: str = "adam",
    kl_warmup: int = 0,
    clip_norm: float | None = None,
    patience: int | None = None,
    seed: int = 0,
    run_dir: str | os.PathLike | RunDirectory | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    plots_every_epoch: bool = False,
    config: dict | None = None,
    backend: str | None = None,
    device: str | torch.device | None = "auto",
    threads: int | str | None = "auto",
    callbacks: Sequence[Callback] | None = None,
    compile: str = "auto",
    precision: str = "highest",
) -> FitResult:
    """Train ``vae`` (any module with ``model``/``guide`` methods) by minibatch SVI.

    :param torch.nn.Module vae: the module to train, in place: a built-in model such as
        :class:`~pyrovae.VAE`, or any module whose ``model`` and ``guide`` methods take a batch's
        columns; its parameters are updated and, at the end, are the best validation epoch's (or the
        last epoch's, without ``valid``).
    :param train: a tensor, a tuple of tensors, a :class:`~pyrovae.data.datasets.VAEDataset` or any
        torch ``Dataset`` (see :class:`~pyrovae.data.DataSource`). Every column of a batch, such as
        :func:`~pyrovae.data.datasets.with_labels`'s ``(x, y)`` or a ``TensorDataset(x, c)``, is passed to
        the model and guide positionally, dtypes kept; the data plate is scaled by :math:`N/B`.
    :param valid: optional validation data, whose bound after every epoch drives early stopping and
        picks the best parameters, restored at the end.
    :param estimator: estimator name (see :data:`pyrovae.estimators.ESTIMATORS`) or an ELBO.
    :param int epochs: passes over the training data (≥ 1). A resumed run counts the epochs it has
        already committed: it trains until it has ``epochs`` in all.
    :param int batch_size: data points :math:`B` per minibatch (≥ 1), the global batch in a
        distributed run; an epoch's last minibatch is smaller where :math:`B` does not divide :math:`N`.
    :param float lr: learning rate (> 0): the step size of ``optimizer``.
    :param str optimizer: ``"adam"`` (the default), ``"adam-normgrad"``
        (:class:`~pyrovae.train.optim.AdamNormGrad`), ``"adamw"`` or ``"sgd"``
        (see :data:`~pyrovae.train.trainer.OPTIMIZERS`), with torch's defaults besides ``lr``.
    :param kl_warmup: number of epochs over which the KL weight β rises linearly to 1
        (β = epoch / kl_warmup; Sønderby et al. 2016); 0 for no warm-up.
    :param clip_norm: gradient clipping by global norm (> 0).
    :param patience: stop after this many (≥ 1) epochs without a better validation bound.
    :param seed: makes the run reproducible (shuffling, binarization and the estimator's draws).
    :param run_dir: where the run's state is committed after every epoch, with ``config.json``,
        ``history.csv`` and figures (see :mod:`pyrovae.runs.directory`); a path, or a
        :class:`~pyrovae.runs.directory.RunDirectory` the caller holds open.
    :param resume: continue the run in ``run_dir`` from its last committed epoch (from the first if
        none was committed). ``estimator``, ``batch_size``, ``optimizer``, ``kl_warmup`` and
        ``seed`` must be the run's; ``epochs``, ``lr``, ``clip_norm`` and ``patience`` may change
        (the history's ``lr`` column and the checkpoint's ``resumes`` record it). A run that has
        finished (``epochs`` reached, or stopped early) is returned as it is.
    :param overwrite: start a new run in a non-empty ``run_dir``, removing the earlier run's outputs.
    :param bool progress: show a progress bar over the training steps, with the loss (rank 0's alone
        in a distributed run).
    :param bool plots_every_epoch: with ``run_dir``, redraw its figures (learning curves, samples and
        reconstructions) after every epoch; by default they are drawn once, at the end, and only
        ``history.csv`` is rewritten after every epoch. Without ``run_dir``, nothing is drawn.
    :param config: a JSON-able description of the run, stored in every checkpoint and as
        ``config.json`` (default: the options of a built-in model and of this call, from which
        :func:`pyrovae.load_run` and the command line rebuild the model).
    :param device: where to train (see :mod:`pyrovae.devices`): ``vae`` is moved there and stays
        there, and each batch is moved there. Checkpoints load on a machine without a GPU.
    :param backend: the ``torch.distributed`` backend under ``torchrun`` (see
        :func:`pyrovae.distributed.init`), which trains data-parallel as the module docstring says;
        rank 0 alone writes ``run_dir`` (on a file system every rank reads) and shows progress.
    :param threads: the CPU threads to compute with, during the call (:func:`pyrovae.devices.cpu_threads`):
        ``"auto"``, the cores other processes leave idle less one, unless the user set a count
        (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``torch.set_num_threads``); a number; or ``None``, torch's
        setting. On a 2-core machine beside another job, the Quickstart's command took 85 s with torch's
        two threads and 31 s with one.
    :param callbacks: objects called as training goes (:mod:`pyrovae.train.callbacks`): instances of
        :class:`~pyrovae.train.callbacks.Callback` subclasses, such as the trackers of :mod:`pyrovae.tracking`
        or one of the user's that stops training on its own criterion; called on rank 0 alone, whatever
        the other ranks of a distributed run are given.
    :param str compile: how the steps are run (:mod:`pyrovae.train.capture`): ``"auto"`` (the default) or
        ``"graph"``, the loss and gradient of a step captured as a graph of tensor operations after the first
        step and replayed (on CUDA as a CUDA graph), the same losses and parameters as eagerly;
        ``"inductor"``, that graph compiled by :func:`torch.compile`; ``"off"``, eagerly. A pair whose
        structure changes from step to step, or that the recording cannot hold, trains eagerly with a
        warning that says why. It may change when a run is resumed.
    :param str precision: the arithmetic of the steps and of the validation bound
        (:mod:`pyrovae.precision`): ``"highest"`` (the default), full float32; ``"tf32"``, the float32
        matrix products and convolutions in TensorFloat-32 on a GPU that has it; ``"bf16"``, those of the
        networks in bfloat16 and everything else, the log-densities included, in float32. The parameters
        and the optimizer's state stay float32. It is recorded with the run, and may change when a run is
        resumed.

    Every option is checked before anything is written (:mod:`pyrovae.options`). A step whose loss,
    gradient or parameters are not finite is not applied, and an epoch whose validation bound is not
    finite is not committed: training stops with :class:`~pyrovae.errors.TrainingError` naming the
    epoch and step, and the run directory keeps the last finite state.
    """
    options = dict(epochs=epochs, batch_size=batch_size, lr=lr, kl_warmup=kl_warmup, clip_norm=clip_norm)
    options = check_options(**options, patience=patience, seed=seed)
    if options["patience"] is not None and valid is None:
        raise ConfigError("early stopping (patience) needs validation data: pass valid=")
    callbacks = Callbacks(callbacks)
    distributed.init(backend)
    train, valid = _sources(vae, train, valid, options["batch_size"])
    trainer = Trainer(
        vae,
        len(train),
        estimator=estimator,
        optimizer=optimizer,
        lr=lr,
        clip_norm=clip_norm,
        device=device,
        compile=compile,
        precision=precision,
    )
    name = estimator if isinstance(estimator, str) else type(estimator).__name__
    # what a checkpoint records
    settings = {"estimator": name, **options, "optimizer": optimizer}
    settings.update(compile=compile, precision=precision)
    config = default_config(vae, settings, trainer.device) if config is None else config
    with devices.using_threads(threads) as cpu_threads, contextlib.ExitStack() as stack:
        if run_dir is not None and not isinstance(run_dir, RunDirectory):
            need = checkpoint_bytes(vae)
            run_dir = stack.enter_context(
                RunDirectory(run_dir, resume=resume, overwrite=overwrite, need_bytes=need)
            )
        result = _fit(
            trainer, train, valid, settings, config, run_dir, progress, plots_every_epoch, callbacks
        )
        result.cpu_threads = cpu_threads
        return result


def _sources(vae: nn.Module, train, valid, batch_size: int) -> tuple[DataSource, DataSource | None]:
    """The training and validation data, checked against ``vae`` and against the workers of a
    distributed run, each of which must get a share of every batch."""
    train = DataSource(train, "the training data")
    world, last = distributed.world_size(), len(train) % batch_size
    if batch_size < world or 0 < last < world:
        raise ConfigError(
            f"a global batch of {batch_size} of the {len(train)} training data points leaves some of the "
            f"{world} workers without data (the last batch of an epoch has {last or batch_size}); choose "
            f"a batch size of at least {world} that divides {len(train)} or leaves a remainder of at "
            f"least {world}"
        )
    valid = DataSource(valid, "the validation data") if valid is not None else None
    check_data(vae, train, "the training data")
    if valid is not None:
        check_data(vae, valid, "the validation data")
    return train, valid


def default_config(vae: nn.Module, settings: dict, device: torch.device) -> dict:
    """The configuration :func:`fit` stores for a model that can describe itself (the built-in
    ones, through ``run_options()``): its options and the training's, with no data set."""
    describe = getattr(vae, "run_options", None)
    model = describe() if callable(describe) else None
    if model is None:
        return {}
    return {"dataset": None, **model, **settings, "device": str(device)}


def _resume(trainer: Trainer, directory: RunDirectory | None, run: dict) -> list[str]:
    """Load a resumed run's committed state into ``trainer`` and ``run``; the notes that say so."""
    state = directory.state() if directory is not None else None
    if state is None:
        first = "nothing was committed in the run directory: training started from the first epoch"
        return [first] if directory is not None and directory.resume else []
    settings = run["settings"]
    changed = _resumed_settings(state, settings)
    if state["epoch"] > settings["epochs"]:
        raise ConfigError(
            f"the run in {directory.path} has already trained {state['epoch']} epochs; pass epochs "
            f"(--epochs) of at least that to resume it"
        )
    _load_state(trainer.vae, state["model"], "parameters")
    _load_state(trainer.optimizer, state["optimizer"], "optimizer state")
    trainer.set_lr(settings["lr"])
    run.update({k: state[k] for k in ("history", "best", "best_epoch", "bad_epochs")})
    run.update(
        best_model=state.get("best_model"), resumes=state.get("resumes", []), stopped=state.get("stopped")
    )
    if not changed:
        return []
    run["resumes"].append({"epoch": state["epoch"], "changed": changed})
    listed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
    return [f"resumed after epoch {state['epoch']} with {listed}"]


def _fit(
    trainer: Trainer,
    train: DataSource,
    valid: DataSource | None,
    settings: dict,
    config: dict,
    directory: RunDirectory | None,
    progress: bool,
    plots_every_epoch: bool,
    callbacks: Callbacks,
) -> FitResult:
    vae, epochs, patience = trainer.vae, settings["epochs"], settings["patience"]
    # what a checkpoint holds besides the epoch, the parameters and the optimizer's state; "stopped" is the
    # reason a callback gave for stopping the run
    run = {"history": [], "best": math.inf, "best_epoch": None, "bad_epochs": 0, "best_model": None}
    run.update(settings=settings, resumes=[], config=config, event_shape=list(train.chunk(0, 1)[0].shape[1:]))
    run["stopped"] = None
    notes = _resume(trainer, directory, run)
    if directory is not None and distributed.is_main():
        write_json(directory.path / CONFIG, config)
    history, data = run["history"], valid if valid is not None else train
    steps = math.ceil(len(train) / settings["batch_size"])
    run_path = None if directory is None else directory.path
    state = FitState(vae, settings, config, run_path, history, len(train), steps, steps * len(history))
    state.stop_reason = run["stopped"]
    if run["stopped"] is not None:
        notes.append(
            f"a callback stopped the run after epoch {len(history)} ({run['stopped']}): it is as it was"
        )

    def patience_spent() -> bool:
        return patience is not None and run["bad_epochs"] >= patience

    def finished() -> bool:
        return len(history) >= epochs or patience_spent() or run["stopped"] is not None

    def stop_asked() -> None:  # an early stop: one asked for at the last epoch is none
        if state.stop_reason is not None and len(history) < epochs:
            run["stopped"] = state.stop_reason

    try:
        callbacks.fit_start(state)
        stop_asked()
        total = 0 if finished() else (epochs - len(history)) * steps
        disable = not (progress and distributed.is_main())
        with tqdm(total=total, disable=disable, unit="step", dynamic_ncols=True) as bar:
            while not finished():
                before = {k: v.detach().clone() for k, v in vae.state_dict().items()}  # the epoch's start
                try:
                    row = _epoch(trainer, train, valid, settings, bar, directory, state, callbacks)
                except TrainingError as e:
                    # a non-finite step is never applied: finite parameters are those of the last good step
                    floats = [t for t in vae.state_dict().values() if t.is_floating_point()]
                    if all(bool(t.isfinite().all()) for t in floats):
                        kept = "from just before the step that failed"
                    else:
                        vae.load_state_dict(before)
                        kept = f"from before epoch {len(history) + 1} (the last finite ones it can give back)"
                    raise TrainingError(f"{e} The module holds its parameters {kept}.") from None
                _record(trainer, run, row)
                callbacks.epoch_end(state, row)
                stop_asked()
                _save(trainer, run, directory)
                if directory is not None and distributed.is_main():
                    pause_point("history")
                    _export(vae, history, directory.path, data, plots_every_epoch)
    except BaseException:
        callbacks.fit_end(state, None)
        raise
    best_epoch = run["best_epoch"]
    if best_epoch is not None and best_epoch != history[-1]["epoch"]:
        vae.load_state_dict(run["best_model"])
        notes.append(f"restored the parameters of the best validation epoch ({best_epoch})")
    if directory is not None and distributed.is_main() and history:
        _export(vae, history, directory.path, data, figures=True)
    reason = run["stopped"]
    if reason is None and patience_spent():
        reason = f"no better validation bound in {patience} epochs"
    result = FitResult(
        vae,
        pd.DataFrame(history, columns=list(COLUMNS)),
        run_path,
        best_epoch,
        reason is not None,
        reason,
        notes,
        len(train),
    )
    callbacks.fit_end(state, result)
    return result


def _epoch(
    trainer: Trainer, train, valid, settings: dict, bar, directory, state: FitState, callbacks: Callbacks
) -> dict:
    """The next epoch: its steps on the minibatches of a seeded shuffle (each counted in ``state`` and
    handed to the callbacks that ask for every step), then its validation bound and the check that the
    parameters are finite; its row of the history."""
    history = state.history
    epoch, seed, kl_warmup = len(history) + 1, settings["seed"], settings["kl_warmup"]
    pyro.set_rng_seed(_epoch_seed(seed, epoch, distributed.rank()))
    # the same shuffling (and binarization) on every rank: each takes its share of it
    generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    beta = min(1.0, epoch / kl_warmup) if kl_warmup > 0 else 1.0
    bar.set_description(f"epoch {epoch}/{settings['epochs']}")
    # on a GPU the steps are checked every SYNC_EVERY steps, not at each (Trainer.step's sync)
    deferred = trainer.device.type in DEFERRED_DEVICES and not distributed.active() and not callbacks.per_step
    total, seen, t0 = 0.0, 0, time.perf_counter()
    for step, args in enumerate(train.batches(settings["batch_size"], generator), 1):
        lo, hi = distributed.shard(len(args[0]))
        share = tuple(a[lo:hi] for a in args)
        try:
            loss = trainer.step(share, beta, batch_size=len(args[0]), sync=not deferred)
        except TrainingError as e:
            raise TrainingError(_stopped(f"{e} at epoch {epoch}, step {step}", directory, history)) from None
        total += loss * len(args[0])
        seen += len(args[0])
        state.step += 1
        if callbacks.per_step:
            callbacks.step_end(state, loss)
        bar.update()
        if deferred and step % SYNC_EVERY == 0:
            _check_deferred(trainer, epoch, step, directory, history)
            bar.set_postfix(loss=f"{float(total) / seen:.2f}", refresh=False)
        elif not deferred:
            bar.set_postfix(loss=f"{loss:.2f}", refresh=False)
    if deferred:
        _check_deferred(trainer, epoch, step, directory, history)
        total = float(total)
    row = dict(epoch=epoch, train_loss=total / seen, valid_loss=math.nan, beta=beta, lr=settings["lr"])
    if valid is not None:
        row["valid_loss"] = trainer.evaluate(valid, seed=_epoch_seed(seed, -epoch))
        if not math.isfinite(row["valid_loss"]):
            message = f"the validation bound became {row['valid_loss']} after epoch {epoch}"
            raise TrainingError(_stopped(message, directory, history))
        bar.set_postfix(loss=f"{row['train_loss']:.2f}", valid=f"{row['valid_loss']:.2f}")
    row["seconds"] = time.perf_counter() - t0
    params = torch.nn.utils.get_total_norm([p.detach() for p in trainer.params])
    if not bool(params.isfinite()):  # the epoch's last step is checked here, before the commit
        message = f"the parameters became non-finite at epoch {epoch}, step {step}"
        raise TrainingError(_stopped(message, directory, history))
    return row


def _check_deferred(trainer: Trainer, epoch: int, step: int, directory, history: list[dict]) -> None:
    """Raise the error of the first non-finite step among those run since the last check (at ``step``)."""
    first = trainer.check()
    if first is not None:
        at = step - trainer.checked_steps + first
        message = f"the loss, gradient or parameters became non-finite at epoch {epoch}, step {at}"
        raise TrainingError(_stopped(message, directory, history))


def _record(trainer: Trainer, run: dict, row: dict) -> None:
    """Add an epoch's ``row`` to the history, and keep the best validation bound (and its parameters) or
    count the epoch towards early stopping."""
    run["history"].append(row)
    if row["valid_loss"] < run["best"]:  # NaN without validation data
        run.update(best=row["valid_loss"], best_epoch=row["epoch"], bad_epochs=0)
        state = trainer.vae.state_dict()
        run["best_model"] = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    elif not math.isnan(row["valid_loss"]):
        run["bad_epochs"] += 1


def _save(trainer: Trainer, run: dict, directory: RunDirectory | None) -> None:
    """Commit the run's state after its last epoch (rank 0 writes)."""
    if directory is not None:
        pause_point("commit")
        model, optimizer = trainer.vae.state_dict(), trainer.optimizer.state_dict()
        epoch = run["history"][-1]["epoch"]
        state = {"format": "pyrovae-checkpoint", "version": CHECKPOINT_VERSION, "epoch": epoch}
        directory.commit({**state, "model": model, "optimizer": optimizer, **run})


def _export(vae: nn.Module, history: list[dict], run_dir: Path, data, figures: bool) -> None:
    """Rewrite ``history.csv`` in ``run_dir`` and, with ``figures``, the learning curves, and samples
    and reconstructions when ``vae`` has ``sample``/``reconstruct`` (rank 0's work)."""
    frame = pd.DataFrame(history)
    write_text(run_dir / HISTORY, frame.to_csv(index=False))
    if not figures:
        return
    from pyrovae import plots  # matplotlib, imported where it draws

    with distributed.alone():
        plots.learning_curves(frame, run_dir / "learning_curves.png")
        if hasattr(vae, "sample") and hasattr(vae, "reconstruct"):
            with torch.random.fork_rng():
                torch.manual_seed(0)
                x = DataSource(data).sample(20)[0]
                x = x.to(devices.of_model(vae) or x.device)
                try:
                    plots.image_grid(vae.sample(50), run_dir / "samples.png", title=plots.SAMPLES_TITLE)
                    plots.reconstructions(x, vae.reconstruct(x), run_dir / "reconstructions.png")
                except ValueError:  # data that cannot be shown as images
                    pass


def _stopped(what: str, directory: RunDirectory | None, history: list[dict]) -> str:
    """The message of a run stopped by a non-finite value, naming the checkpoint only if there is one."""
    kept = ""
    if directory is not None and history:
        kept = f"; {directory.checkpoint} keeps the last finite state (epoch {history[-1]['epoch']})"
    elif directory is not None:
        kept = "; no epoch was completed, so there is no checkpoint"
    return (
        f"{what}; training stopped{kept}. Lower the learning rate (--lr), clip gradients (--clip-norm) "
        "or check the data for extreme values."
    )
