"""A training run as a directory: its configuration, and how to rebuild its model and data.

A run directory holds ``config.json`` (the full :class:`RunConfig`), ``checkpoint.pt`` (every
epoch), ``best.pt`` (best validation bound), ``history.csv`` and figures. :func:`load_run`
rebuilds the trained :class:`~pyrovae.VAE` from it, which is what ``pyrovae sample``,
``reconstruct`` and ``evaluate`` do.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pyro.infer import ELBO

from . import datasets, devices
from .errors import ConfigError, RunDirError, unknown_name
from .estimators import estimator
from .hvae import HVAE
from .io import load_checkpoint, write_json
from .training import BEST, CHECKPOINT
from .vae import VAE

#: the model families ``pyrovae train --model`` builds
MODELS = ("vae", "hvae")

CONFIG = "config.json"


@dataclass
class RunConfig:
    """Everything that defines a ``pyrovae train`` run; stored as ``config.json`` in its directory."""

    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    binarize: str | None = "default"
    likelihood: str = "bernoulli"
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

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "the configuration") -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"{source} has unknown keys {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
            )
        return cls(**values)

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunConfig:
        """Read a JSON configuration file (as written into every run directory)."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"configuration file {path} is not valid JSON: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"configuration file {path} must hold a JSON object of option: value")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    def load_data(self, split: str) -> datasets.VAEDataset:
        return datasets.load(
            self.dataset, split, root=self.data_root, download=self.download, binarize=self.binarize
        )

    def build_estimator(self) -> ELBO:
        """The estimator ``estimator`` with the options ``k``, ``alpha`` and ``beta`` that are set."""
        options = {name: getattr(self, name) for name in ("k", "alpha", "beta")}
        return estimator(self.estimator, **{name: v for name, v in options.items() if v is not None})

    def build_vae(self, event_shape) -> VAE | HVAE:
        """The untrained model: a :class:`~pyrovae.VAE`, or an :class:`~pyrovae.HVAE` for
        ``model="hvae"`` (whose top latent has ``latent_dim2`` dimensions)."""
        if self.model not in MODELS:
            raise unknown_name("model", self.model, MODELS)
        if self.model == "vae" and self.latent_dim2 is not None:
            raise ConfigError(
                "latent_dim2 (--latent-dim2) is the top layer of model 'hvae'; drop it or use --model hvae"
            )
        common = dict(
            event_shape=event_shape,
            latent_dim=self.latent_dim,
            hidden=tuple(self.hidden),
            activation=self.activation,
            likelihood=self.likelihood,
            prior=self.prior,
            prior_components=self.prior_components,
            likelihood_scale=self.likelihood_scale,
        )
        if self.model == "hvae":
            if self.network != "mlp":
                raise ConfigError("model 'hvae' is built of fully connected networks: use --network mlp")
            return HVAE(latent_dim2=self.latent_dim2, **common)
        return VAE(network=self.network, **common)


@dataclass
class Run:
    """A trained run loaded from its directory."""

    path: Path
    config: RunConfig
    vae: VAE | HVAE
    epoch: int

    @property
    def vae_device(self) -> torch.device:
        """The device the model's parameters are on."""
        return devices.of_model(self.vae) or torch.device("cpu")

    def load_data(self, split: str) -> datasets.VAEDataset:
        return self.config.load_data(split)


def load_run(path: str | os.PathLike, checkpoint: str = "best", device: str | torch.device = "cpu") -> Run:
    """Rebuild the model of the run in ``path`` with its ``best`` (or ``last``) parameters, on
    ``device`` (see :mod:`pyrovae.devices`; a checkpoint written on a GPU loads on the CPU)."""
    path = Path(path)
    dev = devices.resolve(device)
    if not (path / CONFIG).is_file():
        raise RunDirError(
            f"{path} is not a pyrovae run directory (no {CONFIG}); "
            "pass the --run-dir of a `pyrovae train` run"
        )
    config = RunConfig.read(path / CONFIG)
    names = {"best": BEST, "last": CHECKPOINT}
    if checkpoint not in names:
        raise ConfigError(f"checkpoint must be 'best' or 'last', not {checkpoint!r}")
    file = path / names[checkpoint]
    if checkpoint == "best" and not file.is_file():
        file = path / CHECKPOINT  # runs without validation data keep only the last checkpoint
    state = load_checkpoint(file)
    event_shape = state["config"].get("event_shape") or config.load_data("test").event_shape
    vae = config.build_vae(event_shape)
    vae.load_state_dict(state["model"])
    vae.to(dev).eval()
    return Run(path, config, vae, state["epoch"])
