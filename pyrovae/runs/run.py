"""A training run's configuration (:class:`RunConfig`, kept in the checkpoint and, for people to
read, as ``config.json``), and the run rebuilt from its directory (:func:`load_run`), which
``pyrovae sample``, ``reconstruct``, ``evaluate``, ``compare`` and ``train --resume`` use, for runs
trained by the command line or by :func:`~pyrovae.fit` from Python.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pyro.infer import ELBO

from pyrovae import devices, storage
from pyrovae.data import datasets
from pyrovae.errors import CheckpointError, ConfigError, RunDirError, unknown_name
from pyrovae.estimators import estimator
from pyrovae.models.hvae import HVAE
from pyrovae.models.hvae import NETWORKS as HVAE_NETWORKS
from pyrovae.models.vae import VAE
from pyrovae.options import DOMAINS, check_options, parse_spec
from pyrovae.runs.directory import CHECKPOINT, CONFIG, RESULTS, read_state
from pyrovae.runs.outputs import stale_sets

#: the model families ``pyrovae train --model`` builds
MODELS = ("vae", "hvae")
#: options a resumed run may change; every other one defines the run's model, data or objective
MUTABLE = ("epochs", "patience", "lr", "clip_norm", "device", "compile", "precision", "data_root", "download")


@dataclass
class RunConfig:
    r"""Everything that defines a ``pyrovae train`` run; stored as ``config.json`` in its directory.

    Each field is the option of ``pyrovae train`` spelt ``--name-with-dashes``; the numbers are checked
    by :func:`~pyrovae.options.check_options` (:meth:`from_dict`).

    :ivar str dataset: the data set, one of :data:`~pyrovae.data.datasets.NAMES`; ``None`` for a
        run that :func:`~pyrovae.fit` trained from Python on data of its own.
    :ivar str data_root: the directory with the data files (``None``: the data set's own).
    :ivar bool download: download missing data files.
    :ivar str binarize: ``"dynamic"``, ``"threshold"``, ``"none"`` (or ``None``), or ``"default"``:
        the data set's own binarization under a Bernoulli likelihood, none under the others
        (:meth:`binarize_mode`).
    :ivar str likelihood: the observation model :math:`p(x \mid z)`, a name of
        :data:`~pyrovae.models.likelihoods.LIKELIHOODS` (``"binomial:levels=L"`` names the grey
        levels, ``"bernoulli:clamp=C"`` clamps the probabilities to [C, 1 - C]), or ``"default"``:
        the data set's own (:meth:`likelihood_spec`).
    :ivar float likelihood_scale: the (initial) standard deviation of a Gaussian likelihood (> 0).
    :ivar str model: ``"vae"`` (:class:`~pyrovae.VAE`) or ``"hvae"`` (:class:`~pyrovae.HVAE`, two
        stochastic layers :math:`z_2 \to z_1 \to x`).
    :ivar str prior: the prior of the (top) latent, one of :data:`~pyrovae.models.priors.PRIORS`.
    :ivar int prior_components: the number of components of the ``"mixture"`` prior or of
        pseudo-inputs of the ``"vamp"`` prior (``None``: :data:`~pyrovae.models.priors.DEFAULT_COMPONENTS`).
    :ivar str network: the encoder and decoder family, one of :data:`~pyrovae.models.nn.NETWORKS`
        (``"mlp"`` or ``"gated"`` for an HVAE).
    :ivar int latent_dim: the dimension of :math:`z` (of the bottom layer :math:`z_1` of an HVAE).
    :ivar int latent_dim2: the dimension of the top layer :math:`z_2` of an HVAE (``None``:
        ``latent_dim``); only for ``model="hvae"``.
    :ivar list hidden: the hidden layer sizes of the networks (those of a VAE's encoder, which its
        decoder uses reversed; every network's of an HVAE).
    :ivar str activation: the nonlinearity between layers, one of
        :data:`~pyrovae.models.nn.ACTIVATIONS`.
    :ivar str estimator: the bound SVI maximizes, a name of :data:`~pyrovae.estimators.ESTIMATORS`.
    :ivar int k: the particles per data point of the multi-sample estimators (per group for
        ``"miwae"`` and ``"piwae"``); ``None``: the estimator's default.
    :ivar float alpha: the order of the ``"renyi"`` bound (``None``: the estimator's default).
    :ivar int m: the number of groups of ``k`` particles of ``"miwae"`` and ``"piwae"`` (``None``: the
        estimator's default).
    :ivar float mix: the weight of the ELBO in ``"ciwae"``'s mix with IWAE-:math:`k`, in
        :math:`[0, 1]` (``None``: the estimator's default).
    :ivar float beta: the weight :math:`\beta \ge 0` of the latent (KL) part of any estimator
        (:class:`~pyrovae.KLAnnealed`; ``None``: 1, the estimator as it is).
    :ivar int epochs: epochs to train, in all (counting those of a resumed run).
    :ivar int batch_size: data points per step.
    :ivar float lr: the learning rate (> 0).
    :ivar str optimizer: the optimizer, one of :data:`~pyrovae.train.trainer.OPTIMIZERS`.
    :ivar int kl_warmup: epochs of linear KL warm-up, 0 for none.
    :ivar float clip_norm: clip the gradient to this global norm (> 0); ``None`` for no clipping.
    :ivar int patience: early stopping patience in epochs (≥ 1); ``None`` for no early stopping.
    :ivar int seed: the seed of the initial parameters, the shuffling and the draws.
    :ivar str device: where to compute: ``"auto"`` (CUDA where there is a GPU, else the CPU),
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (see :mod:`pyrovae.devices`).
    :ivar str compile: how the training steps run, one of :data:`~pyrovae.graphs.COMPILE_MODES`
        (``"auto"``: captured and replayed; ``"off"``: eagerly; see :mod:`pyrovae.train.capture`).
    :ivar str precision: the arithmetic of training, one of :data:`~pyrovae.precision.PRECISIONS`
        (``"highest"``: full float32; ``"tf32"``, ``"bf16"``: see :mod:`pyrovae.precision`).
    """

    dataset: str | None = "digits"
    data_root: str | None = None
    download: bool = False
    binarize: str | None = "default"
    likelihood: str = "default"
    likelihood_scale: float = 1.0
    model: str = "vae"
    prior: str = "normal"
    prior_components: int | None = None
    network: str = "mlp"
    latent_dim: int = 50
    latent_dim2: int | None = None
    hidden: list[int] = field(default_factory=lambda: [400])
    activation: str = "softplus"
    estimator: str = "elbo"
    k: int | None = None
    alpha: float | None = None
    m: int | None = None
    mix: float | None = None
    beta: float | None = None
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"
    kl_warmup: int = 0
    clip_norm: float | None = None
    patience: int | None = None
    seed: int = 0
    device: str = "auto"
    compile: str = "auto"
    precision: str = "highest"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None) -> RunConfig:
        """The configuration ``values``, each checked against its type and domain: one error names
        every unknown or bad key (of ``source``, named in the message if given).

        :param dict values: option name to value, as in ``config.json``; options it leaves out keep
            their defaults.
        :param str source: where ``values`` come from (a file, say), for the message.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        problems = []
        unknown = sorted(set(values) - set(fields))
        if unknown:
            problems.append(f"unknown keys {', '.join(unknown)} (valid keys: {', '.join(sorted(fields))})")
        known = {k: v for k, v in values.items() if k in fields}
        problems += [p for name, v in known.items() if (p := _type_problem(fields[name], v))]
        numeric = {k: v for k, v in known.items() if k in DOMAINS or k == "hidden"}
        try:
            numeric = check_options(**numeric)
        except ConfigError as e:
            problems.append(str(e))
        if problems:
            raise ConfigError((f"{source}: " if source else "") + "; ".join(problems))
        return cls(**{**known, **numeric})

    def differences(self, other: RunConfig, keys=None) -> dict[str, tuple[Any, Any]]:
        """The keys (of ``keys``, default all) whose values differ, with ``(self's, other's)``.

        :param RunConfig other: the configuration compared with this one.
        :param keys: the names of the options compared (default: every one).
        """
        names = keys or [f.name for f in dataclasses.fields(self)]
        return {
            k: (getattr(self, k), getattr(other, k)) for k in names if getattr(self, k) != getattr(other, k)
        }

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunConfig:
        """Read a JSON configuration file (as written into every run directory).

        :param path: the file, a JSON object of option: value (see :meth:`from_dict`).
        """
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"configuration file {path} is not valid JSON: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise ConfigError(f"cannot read configuration file {path}: {reason}; pass a JSON file") from None
        if not isinstance(values, dict):
            raise ConfigError(f"configuration file {path} must hold a JSON object of option: value")
        return cls.from_dict(values, source=str(path))

    @classmethod
    def of_state(cls, state: dict, source: str | None = None) -> RunConfig | None:
        """The configuration a run's checkpoint ``state`` was saved with (checked as in
        :meth:`from_dict`); ``None`` where it has none (a model trained from Python, which pyrovae cannot
        rebuild).

        :param dict state: a checkpoint, as :func:`~pyrovae.runs.directory.read_state` returns it.
        :param str source: where ``state`` comes from, for the message.
        """
        stored = state.get("config") or {}
        stored = {k: v for k, v in stored.items() if k != "event_shape"}  # where version 1 kept it
        return cls.from_dict(stored, source) if stored else None

    @classmethod
    def of_run(cls, run_dir: str | os.PathLike) -> RunConfig | None:
        """The configuration of the run in ``run_dir``: its checkpoint's (:meth:`of_state`), or before its
        first epoch its ``config.json``'s; ``None`` where there is no run, or its checkpoint has no
        configuration.

        :param run_dir: the run directory.
        """
        run_dir = Path(run_dir)
        if (run_dir / CHECKPOINT).is_file():
            state = read_state(run_dir / CHECKPOINT)  # a checkpoint that is not a whole run's is refused
            return cls.of_state(state, f"the configuration in {run_dir / CHECKPOINT}")
        return cls.read(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | os.PathLike) -> None:
        """Write the configuration as a JSON file, as ``config.json`` of a run directory.

        :param path: the file, replaced if it exists.
        """
        storage.write_json(path, self.to_dict())

    def load_data(self, split: str) -> datasets.VAEDataset:
        """A split of the configured data set, with its ``data_root``, ``download`` and binarization
        (:meth:`binarize_mode`); a :class:`~pyrovae.ConfigError` if the run has no data set.

        :param str split: one of :data:`~pyrovae.data.datasets.SPLITS`.
        """
        if self.dataset is None:
            raise ConfigError(
                "this run was trained from Python on data of its own (its configuration names no data "
                "set); evaluate it from Python: run = pyrovae.load_run(RUN_DIR), then "
                "pyrovae.log_likelihood(run.vae.model, run.vae.guide, data)"
            )
        return datasets.load(
            self.dataset, split, root=self.data_root, download=self.download, binarize=self.binarize_mode()
        )

    def likelihood_spec(self) -> str:
        """``likelihood`` with its options: ``"default"`` is the data set's own
        (:data:`~pyrovae.data.datasets.DEFAULT_LIKELIHOOD`; the Bernoulli without a data set), and the
        binomial gets the data set's number of grey levels (:data:`~pyrovae.data.datasets.GREY_LEVELS`)
        unless it names them (``"binomial:levels=L"``)."""
        spec = self.likelihood
        if spec == "default":
            spec = datasets.DEFAULT_LIKELIHOOD.get(self.dataset, "bernoulli")
        if spec == "binomial" and self.dataset in datasets.GREY_LEVELS:
            spec = f"binomial:levels={datasets.GREY_LEVELS[self.dataset]}"
        return spec

    def binarize_mode(self) -> str | None:
        """``binarize``, where ``"default"`` is the data set's own binarization
        (:data:`~pyrovae.data.datasets.DEFAULT_BINARIZE`) under a Bernoulli likelihood, and none under
        any other: the other likelihoods model the grey levels themselves."""
        if self.binarize != "default":
            return self.binarize
        if parse_spec(self.likelihood_spec(), "likelihood")[0] != "bernoulli":
            return None
        return datasets.DEFAULT_BINARIZE.get(self.dataset)

    def build_estimator(self) -> ELBO:
        """The estimator ``estimator`` with the options ``k``, ``alpha``, ``m``, ``mix`` and ``beta``
        that are set."""
        options = {name: getattr(self, name) for name in ("k", "alpha", "m", "mix", "beta")}
        return estimator(self.estimator, **{name: v for name, v in options.items() if v is not None})

    def fit_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~pyrovae.fit` this configuration sets: the estimator
        (built) and the training options."""
        names = ("epochs", "batch_size", "lr", "optimizer", "kl_warmup", "clip_norm", "patience", "seed")
        names += ("compile", "precision")
        return {"estimator": self.build_estimator(), **{name: getattr(self, name) for name in names}}

    def build_vae(self, event_shape) -> VAE | HVAE:
        """The untrained model: a :class:`~pyrovae.VAE`, or an :class:`~pyrovae.HVAE` for
        ``model="hvae"`` (whose top latent has ``latent_dim2`` dimensions).

        :param event_shape: the shape of one data point, e.g. ``(1, 28, 28)``.
        """
        if self.model not in MODELS:
            raise unknown_name("model", self.model, MODELS)
        if self.model == "vae" and self.latent_dim2 is not None:
            raise ConfigError(
                "latent_dim2 (--latent-dim2) is the top layer of model 'hvae'; drop it or use --model hvae"
            )
        names = ("latent_dim", "activation", "prior", "prior_components", "likelihood_scale")
        common = {name: getattr(self, name) for name in names}
        common.update(event_shape=event_shape, hidden=tuple(self.hidden), likelihood=self.likelihood_spec())
        if self.model == "hvae":
            if self.network not in HVAE_NETWORKS:
                raise ConfigError(
                    "model 'hvae' is built of fully connected networks: use --network mlp or --network gated"
                )
            return HVAE(latent_dim2=self.latent_dim2, network=self.network, **common)
        return VAE(network=self.network, **common)


def _type_problem(f: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with ``value`` for the string, boolean or list field ``f`` (numbers are checked
    against their domains by :func:`~pyrovae.options.check_options`)."""
    kind = str(f.type)
    if f.name in DOMAINS or f.name == "hidden" or (value is None and "None" in kind):
        return None
    if kind.startswith("str") and not isinstance(value, str):
        return f"{f.name} must be a string{' or null' if 'None' in kind else ''}; got {value!r}"
    if kind == "bool" and not isinstance(value, bool):
        return f"{f.name} must be true or false; got {value!r}"
    return None


@dataclass
class Run:
    """A trained run loaded from its directory by :func:`load_run`.

    :ivar Path path: the run directory (or the model folder it was loaded from).
    :ivar RunConfig config: the configuration the checkpoint was trained with.
    :ivar vae: the model, with the chosen parameters, in evaluation mode.
    :ivar int epoch: the epoch of those parameters (``None`` for a model folder saved from Python).
    :ivar pandas.DataFrame history: one row per epoch trained.
    :ivar dict results: ``results.json`` (the final test figures of ``pyrovae train``), or ``None``.
    :ivar dict checkpoint: which parameters these are (``best`` or ``last``), their epoch and the SHA-256 of
        their values: what the outputs of a command on the run record (:mod:`pyrovae.runs.outputs`).
    """

    path: Path
    config: RunConfig
    vae: VAE | HVAE
    epoch: int | None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    results: dict | None = None
    checkpoint: dict | None = None

    @property
    def vae_device(self) -> torch.device:
        """The device the model's parameters are on."""
        return devices.of_model(self.vae) or torch.device("cpu")

    def load_data(self, split: str) -> datasets.VAEDataset:
        """A split of the run's data set, as it was trained on (:meth:`RunConfig.load_data`).

        :param str split: one of :data:`~pyrovae.data.datasets.SPLITS`.
        """
        return self.config.load_data(split)


def load_run(path: str | os.PathLike, checkpoint: str = "best", device: str | torch.device = "cpu") -> Run:
    """The run in ``path``, trained by ``pyrovae train`` or by :func:`~pyrovae.fit` on a built-in
    model: its model rebuilt from the checkpoint's configuration with the ``best`` parameters (of
    the best validation epoch; the last where there was no validation data) or the ``last`` ones,
    on ``device`` (see :mod:`pyrovae.devices`; a checkpoint written on a GPU loads on the CPU), with
    its history and final results.

    A ``config.json`` that disagrees with the checkpoint's configuration on the model or its data
    is reported (a warning naming the keys); the checkpoint's is used. So are the outputs of commands
    (evaluations, scores, ...) that came from other parameters than the run holds now (a run trained on
    after them; see :mod:`pyrovae.runs.outputs`).

    ``path`` may be a model folder (:func:`~pyrovae.save_model`, ``pyrovae export``) of a VAE or an HVAE:
    the run is then the one it was exported from, with the parameters it holds (``checkpoint`` chooses
    none), its epoch and test figures, and no history (see :func:`pyrovae.runs.model_folder.folder_run`).

    :param path: the run directory, or a model folder.
    :param str checkpoint: ``"best"`` or ``"last"``: which parameters the model gets.
    :param device: where the model goes (default the CPU): ``"auto"``, ``"cpu"``, ``"cuda"``,
        ``"cuda:N"``, ``"mps"`` or a :class:`torch.device` (see :func:`pyrovae.devices.resolve`).
    """
    from pyrovae.runs import model_folder  # which builds on this module

    path = Path(path)
    dev = devices.resolve(device)
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', not {checkpoint!r}")
    if model_folder.is_model_folder(path):
        return model_folder.folder_run(path, dev)
    if not (path / CHECKPOINT).is_file():
        what = "a run that has not finished an epoch yet" if (path / CONFIG).is_file() else "not a run"
        raise RunDirError(
            f"{path} holds no {CHECKPOINT} ({what}); pass the directory of a run that has trained at "
            "least one epoch"
        )
    state = read_state(path / CHECKPOINT, ("epoch", "model"))
    config = RunConfig.of_state(state, f"the configuration in {path / CHECKPOINT}")
    if config is None:
        raise RunDirError(
            f"the run in {path} was trained from Python on a model pyrovae cannot rebuild (it has no "
            "configuration); rebuild the model yourself and load state['model'] from "
            f"pyrovae.storage.load_checkpoint('{path / CHECKPOINT}')"
        )
    if (path / CONFIG).is_file():
        _report_config_json(path, config)
    event_shape = state.get("event_shape") or state["config"].get("event_shape")
    event_shape = event_shape or config.load_data("test").event_shape
    vae = config.build_vae(event_shape)
    weights = state.get("best_model") if checkpoint == "best" else None
    if checkpoint == "best" and "best_model" not in state and (path / "best.pt").is_file():
        best = read_state(path / "best.pt", ("epoch", "model"))  # a run written before version 2
        weights, state = best["model"], {**state, "best_epoch": best["epoch"]}
    try:
        vae.load_state_dict(weights if weights is not None else state["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"the parameters in {path / CHECKPOINT} do not fit the model of its configuration: "
            f"{str(e).splitlines()[0]}"
        ) from None
    vae.to(dev).eval()
    epoch = state["best_epoch"] if weights is not None else state["epoch"]
    results = None
    if (path / RESULTS).is_file():
        try:
            results = json.loads((path / RESULTS).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            warnings.warn(f"{path / RESULTS} is not valid JSON; the run's results are left out", stacklevel=2)
    best = weights if checkpoint == "best" else state.get("best_model")
    digests = {"last": storage.digest(state["model"]), "best": None if best is None else storage.digest(best)}
    for note in stale_sets(path, digests):
        warnings.warn(note, stacklevel=2)
    which = "best" if weights is not None else "last"
    used = {"which": which, "epoch": epoch, "sha256": digests[which]}
    return Run(path, config, vae, epoch, pd.DataFrame(state.get("history", [])), results, used)


def _report_config_json(path: Path, config: RunConfig) -> None:
    """Warn if the run's ``config.json`` cannot be read or disagrees with ``config`` on a key that
    defines the model or its data."""
    fix = (
        f"the checkpoint's configuration is used (rewrite {CONFIG} from it with: "
        f"pyrovae train --run-dir {path} --resume)"
    )
    try:
        on_disk = RunConfig.read(path / CONFIG)
    except ConfigError as e:
        warnings.warn(f"{e}; {fix}", stacklevel=3)
        return
    keys = [f.name for f in dataclasses.fields(RunConfig) if f.name not in MUTABLE]
    differ = config.differences(on_disk, keys)
    if differ:
        listed = ", ".join(
            f"{k} ({a!r} in the checkpoint, {b!r} in {CONFIG})" for k, (a, b) in differ.items()
        )
        warnings.warn(f"{path / CONFIG} disagrees with the checkpoint on {listed}; {fix}", stacklevel=3)
