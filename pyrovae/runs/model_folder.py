"""A portable model folder: a trained model as the files another machine needs to use it, and no code:
loading one imports no module that the folder names but pyrovae's, or one the loading process has imported.

A model folder (:func:`save_model`, ``pyrovae export RUN_DIR PATH``) holds

- ``config.json``: the format (:data:`FORMAT`, :data:`FORMAT_VERSION`), the model's class as
  ``"module:QualName"``, what rebuilds it (the :class:`~pyrovae.runs.run.RunConfig` options of a built-in
  :class:`~pyrovae.VAE` or :class:`~pyrovae.HVAE`, or the constructor arguments of any other module, see
  :data:`PROTOCOL`), the shape of one data point, the versions of pyrovae and torch that wrote it, the name,
  shape and dtype of every tensor with the SHA-256 of the weights file, and, for a model exported from a run,
  the run's configuration, epoch and test figures;
- ``model.safetensors``: the parameters and buffers (`safetensors <https://huggingface.co/docs/safetensors>`_,
  which holds tensors only: no pickle), each tensor a module shares under two names (the encoder of a
  VampPrior) stored once;
- ``README.md``: the model card (:mod:`pyrovae.runs.model_card`).

This is the layout the Hugging Face Hub expects of a model repository, so
``huggingface_hub.upload_folder(folder_path=PATH, repo_id=...)`` publishes it as it is.

:func:`load_model` rebuilds the model and refuses, naming the file and the fix, a folder that is
incomplete, damaged, altered after export (its weights no longer match their SHA-256), written by a newer
pyrovae, or whose class cannot be imported or does not build the tensors the file holds; it warns where only
the versions of pyrovae or torch differ. :func:`~pyrovae.load_run` opens a model folder of a built-in model as
a run, so every command that takes a run directory takes a model folder.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pyrovae import devices, storage
from pyrovae.errors import ConfigError, ModelFolderError, PyroVAEError, StorageError
from pyrovae.models.hvae import HVAE
from pyrovae.models.vae import VAE
from pyrovae.runs.directory import CHECKPOINT
from pyrovae.runs.model_card import model_card
from pyrovae.runs.run import Run, RunConfig

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PROTOCOL",
    "check_destination",
    "folder_run",
    "is_model_folder",
    "load_model",
    "save_model",
]

#: the format of a model folder's ``config.json``
FORMAT = "pyrovae-model"
#: the version of that format this pyrovae writes; a folder of a higher version is refused
FORMAT_VERSION = 1
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
#: the method by which a module that is not a built-in VAE or HVAE says how to rebuild itself: it returns
#: the JSON-able keyword arguments of its class's constructor that build it again (with fresh parameters
#: of the same names and shapes), the class being importable by its module and name
PROTOCOL = "constructor_arguments"
#: the classes rebuilt from their :class:`~pyrovae.runs.run.RunConfig` options (``run_options()``)
BY_OPTIONS = (VAE, HVAE)


def save_model(model: nn.Module | Run, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a model folder at ``path`` (see the module's description); returns ``path``.

    Everything is checked before anything is written: the model can be rebuilt (a built-in
    :class:`~pyrovae.VAE` or :class:`~pyrovae.HVAE` given its parts by name, or a module with the method
    :data:`PROTOCOL` whose class can be imported), its parameters are finite, and ``path`` is new, an empty
    directory or, with ``overwrite``, a model folder. The folder is written into a temporary directory
    beside ``path`` and renamed into place, so a killed process leaves no half-written folder; ``overwrite``
    replaces the three files of a model folder and keeps any other file there.

    :param model: the model, or a :class:`~pyrovae.runs.run.Run` (:func:`~pyrovae.load_run`), whose
        configuration, epoch and test figures go into ``config.json`` and the model card.
    :param path: the folder to write.
    :param bool overwrite: replace the model folder at ``path``.
    """
    path = Path(path)
    run = model if isinstance(model, Run) else None
    module = run.vae if run is not None else model
    if not isinstance(module, nn.Module):
        raise ConfigError(f"save_model saves a torch.nn.Module or a pyrovae Run; got {type(module).__name__}")
    config = _describe(module, run)
    tensors, _ = _unique(module.state_dict())
    bad = _non_finite(tensors)
    if bad:
        raise ConfigError(
            f"the model holds NaN or infinite values in {bad}: a model from diverged training cannot be "
            "saved. Save a checkpoint from before it diverged (pyrovae.load_run(RUN_DIR, checkpoint='best'))"
        )
    check_destination(path, overwrite)
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    config["tensors"] = {
        name: {"shape": list(t.shape), "dtype": str(t.dtype)[6:]} for name, t in tensors.items()
    }
    with storage.writes_handled_by(None):  # a model folder is not a run directory: no manifest of it
        _write(path, tensors, config)
    return path


def check_destination(path: Path, overwrite: bool) -> None:
    """Refuse ``path`` unless :func:`save_model` may write a model folder there: a new path, an empty
    directory, or a model folder with ``overwrite``; its directory must be writable."""
    if path.exists() and not path.is_dir():
        raise ModelFolderError(f"{path} exists and is a file; choose another path for the model folder")
    storage.check_writable(path)
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ModelFolderError(
                f"{path} exists and is not empty; pass overwrite=True (--overwrite) to replace the model "
                "folder there, or choose another path"
            )
        if not is_model_folder(path):
            raise ModelFolderError(
                f"{path} holds files but no model folder, and overwrite replaces only a model folder; "
                "choose another path"
            )


def _describe(module: nn.Module, run: Run | None) -> dict[str, Any]:
    """``config.json`` but for the tensors: the class, what rebuilds it and the run it came from."""
    cls = type(module)
    name = f"{cls.__module__}:{cls.__qualname__}"
    try:
        found = None if cls.__module__ == "__main__" else _resolve(name)
    except ImportError:
        found = None
    if found is not cls:
        raise ConfigError(
            f"the class {name} cannot be imported by its name (defined in a script, a notebook or a "
            "function), so no other process could rebuild the model; define it in a module of your package"
        )
    options = module.run_options() if cls in BY_OPTIONS else None
    if options is not None:
        # the run's configuration, without where its data lay on the machine that trained it
        trained = {**run.config.to_dict(), "data_root": None} if run is not None else None
        build = {"options": trained or {"dataset": None, **options}}
    else:
        build = {"arguments": _arguments(module, name)}
    from pyrovae import __version__  # set once the package's modules, this one among them, are imported

    event_shape = getattr(module, "event_shape", None)  # a tuple, torch.Size or int where a module has one
    event_shape = [event_shape] if isinstance(event_shape, int) else event_shape
    event_shape = list(event_shape) if isinstance(event_shape, tuple | list) else None
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": name,
        **build,
        "event_shape": event_shape,
        "pyrovae_version": __version__,
        "torch_version": torch.__version__,
        "run": None
        if run is None
        else {"epoch": run.epoch, "checkpoint": run.checkpoint, "results": run.results},
    }


def _arguments(module: nn.Module, name: str) -> dict[str, Any]:
    """The constructor arguments ``module`` gives by :data:`PROTOCOL`, checked to be a JSON object."""
    describe = getattr(module, PROTOCOL, None)
    if not callable(describe):
        built = (
            " given its likelihood, prior or networks as modules" if isinstance(module, BY_OPTIONS) else ""
        )
        raise ConfigError(
            f"{name}{built} cannot be saved: pyrovae rebuilds a model from its class and the keyword "
            f"arguments its method {PROTOCOL}() returns, and it has none. Define {PROTOCOL}(self) -> dict, "
            "returning the "
            "JSON-able arguments of its constructor that build it again (see 'Save and share it' in "
            "docs/extending.md)"
        )
    arguments = describe()
    try:
        if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
            raise TypeError("not a dict of keyword arguments")
        json.dumps(arguments, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{name}.{PROTOCOL}() must return a dict of keyword arguments in JSON (numbers, strings, lists, "
            f"dicts); got {arguments!r} ({e})"
        ) from None
    return arguments


def _write(path: Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    """Write the folder into a temporary directory beside ``path`` and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = storage.TEMPORARY
    try:
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{prefix}{path.name}.", suffix=suffix))
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}; choose another directory") from None
    try:
        os.chmod(staging, storage.umasked(0o777))  # mkdtemp makes 0700; give the folder the mode mkdir would
        with storage.atomic_path(staging / WEIGHTS) as tmp:
            save_file(tensors, tmp, metadata={"format": "pt"})
        config["sha256"] = _sha256(staging / WEIGHTS)
        storage.write_text(staging / CARD, model_card(config))
        storage.write_json(staging / CONFIG, config)
        try:
            if path.is_dir() and any(path.iterdir()):  # a model folder, replaced file by file
                for name in (WEIGHTS, CARD, CONFIG):  # config.json, which names the weights' SHA-256, last
                    os.replace(staging / name, path / name)
            else:  # new, or an empty directory
                os.replace(staging, path)
        except OSError as e:
            raise StorageError(f"cannot move the model folder into {path}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _unique(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of ``state``, each that a module holds under several names (the encoder a VampPrior
    shares) once, under its first name; and the other names, each with the name it is stored under."""
    first: dict[tuple, str] = {}
    unique, tied = {}, {}
    for name, t in state.items():
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and key in first:
            tied[name] = first[key]
        else:
            first.setdefault(key, name)
            unique[name] = t
    return unique, tied


def _non_finite(tensors: dict[str, torch.Tensor]) -> str:
    """The names of the floating-point tensors that hold NaN or infinite values (the first three), or
    ``""``."""
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    return ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory that holds a model folder (or what is left of one): a weights file,
    or a ``config.json`` of :data:`FORMAT`, and no run's checkpoint."""
    path = Path(path)
    if not path.is_dir() or (path / CHECKPOINT).exists():
        return False
    if (path / WEIGHTS).exists():
        return True
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The model of the model folder ``path`` (:func:`save_model`, ``pyrovae export``), rebuilt with its
    parameters, in evaluation mode, on ``device``; refused with a
    :class:`~pyrovae.errors.ModelFolderError` that names the file and the fix where the folder is
    incomplete, damaged, altered, written by a newer pyrovae, or does not rebuild (see the module's
    description).

    The folder's ``config.json`` names the class to rebuild. Of a module of pyrovae's, it is imported; of
    any other module, only if this process has imported that module already (import it yourself if you
    trust it): a folder never chooses the code that loading it runs.

    :param path: the model folder, e.g. a local copy of a Hugging Face Hub repository
        (``huggingface_hub.snapshot_download(repo_id)``).
    :param device: where the model goes (default the CPU): ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"`` or a :class:`torch.device` (see :func:`pyrovae.devices.resolve`).
    """
    return _read(Path(path), device)[0]


def folder_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """The model folder ``path`` of a built-in VAE or HVAE as a :class:`~pyrovae.runs.run.Run` (what
    :func:`~pyrovae.load_run` returns for it): its configuration (that of the run it was exported from,
    with its data set, or the model's options alone), its model, the epoch and test figures of its run,
    and no history."""
    path = Path(path)
    module, config = _read(path, device, built_in=True)
    run_config = RunConfig.from_dict(config["options"], source=str(path / CONFIG))
    info = config.get("run") or {}
    used = info.get("checkpoint") or {"which": "saved", "epoch": None}
    used = {**used, "sha256": storage.digest(module.state_dict())}
    return Run(path, run_config, module, info.get("epoch"), pd.DataFrame(), info.get("results"), used)


def _read(path: Path, device, built_in: bool = False) -> tuple[nn.Module, dict]:
    """The model of the folder ``path`` and its ``config.json``, each check refusing with its message; with
    ``built_in``, only a built-in VAE or HVAE (refused before anything is imported)."""
    dev = devices.resolve(device)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise ModelFolderError(
            f"{path} {what}: pass a model folder, the directory that holds {CONFIG} and {WEIGHTS}"
        )
    config = _read_config(path)
    if built_in and config["class"] not in {f"{c.__module__}:{c.__qualname__}" for c in BY_OPTIONS}:
        raise ModelFolderError(
            f"{path} holds a {config['class']}, which pyrovae's commands cannot use (they take a VAE or an "
            "HVAE); load it from Python with pyrovae.load_model"
        )
    if not (path / WEIGHTS).is_file():
        raise ModelFolderError(
            f"{path} lacks {WEIGHTS}, the model's parameters: the folder is incomplete. Copy the whole "
            "folder again, or export the model again (pyrovae export RUN_DIR PATH --overwrite)"
        )
    try:
        tensors = load_file(path / WEIGHTS, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFolderError(
            f"cannot read {path / WEIGHTS} ({str(e).splitlines()[0] or type(e).__name__}): the file is "
            "damaged, "
            "truncated or not a safetensors file. Copy the folder again, or export the model again"
        ) from None
    if _sha256(path / WEIGHTS) != config["sha256"]:
        raise ModelFolderError(
            f"{path / WEIGHTS} does not match the SHA-256 that {CONFIG} records: the weights were altered or "
            "damaged after the model was exported. Copy the folder again from its source, or export it again"
        )
    module = _rebuild(path, config)
    _check_tensors(path, config, module, tensors)
    return module.to(dev).eval(), config


def _read_config(path: Path) -> dict:
    """``config.json`` of the folder ``path``, checked to be of :data:`FORMAT` and of a version this pyrovae
    reads; a warning where the versions of pyrovae or torch that wrote it differ from these."""
    from pyrovae import __version__

    file = path / CONFIG
    if not file.is_file():
        what = "a run directory, not a model folder: export it with pyrovae export RUN_DIR PATH, or pass it"
        what = what if (path / CHECKPOINT).exists() else "not a complete model folder: copy the whole folder"
        raise ModelFolderError(f"{path} holds no {CONFIG}; it is {what}")
    try:
        config = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFolderError(
            f"{file} is not valid JSON ({e}): the folder is damaged; copy it again, or export the model again"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise ModelFolderError(
            f"{file} is not the configuration of a model folder (its format is {found!r}, not {FORMAT!r})"
        )
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFolderError(
            f"{file} is of format version {version!r}, and this pyrovae {__version__} reads version "
            f"{FORMAT_VERSION}: the folder was written by a newer pyrovae ({config.get('pyrovae_version')}); "
            "upgrade pyrovae (pip install --upgrade pyrovae)"
        )
    missing = [
        k
        for k in ("class", "sha256", "pyrovae_version", "torch_version")
        if not isinstance(config.get(k), str)
    ]
    if "options" not in config and "arguments" not in config:
        missing.append("options or arguments")
    if missing:
        raise ModelFolderError(
            f"{file} lacks {', '.join(missing)}: the folder is damaged; export the model again"
        )
    written = str(config["pyrovae_version"])
    if _major(written) > _major(__version__):
        raise ModelFolderError(
            f"{file} was written by pyrovae {written}, a newer major version than this one ({__version__}); "
            "upgrade pyrovae (pip install --upgrade pyrovae)"
        )
    for what, theirs, ours in (
        ("pyrovae", written, __version__),
        ("torch", config["torch_version"], torch.__version__),
    ):
        if str(theirs) != ours:
            warnings.warn(
                f"{path} was written with {what} {theirs}, and this is {what} {ours}; loaded all the same",
                stacklevel=4,
            )
    return config


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def _resolve(name: str) -> Any:
    """What ``"module:QualName"`` names; an :class:`ImportError` saying why where it cannot be imported.
    Only pyrovae's modules, and those this process has imported already, are: importing a module runs its
    code, which a folder from elsewhere must not choose."""
    module_name, _, qualname = name.partition(":")
    if module_name.split(".")[0] != "pyrovae" and module_name not in sys.modules:
        raise ImportError(
            f"pyrovae imports no module a model folder names, and this process has not imported "
            f"{module_name!r}; if you trust it, import {module_name} yourself, then load the folder again"
        )
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        raise ImportError(str(e)) from None
    return found


def _rebuild(path: Path, config: dict) -> nn.Module:
    """The model ``config`` describes, with fresh parameters: a built-in from its options, any other module
    from its class and constructor arguments."""
    file, name = path / CONFIG, config["class"]
    try:
        cls = _resolve(name)
    except ImportError as e:
        raise ModelFolderError(f"{file} names the class {name}, which cannot be used ({e})") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelFolderError(
            f"{file} names {name}, which is not a torch.nn.Module class; the folder was altered"
        )
    by_options = cls in BY_OPTIONS
    key = "options" if by_options else "arguments"
    if not isinstance(config.get(key), dict):
        raise ModelFolderError(
            f"{file} holds no {key} (a JSON object) to rebuild its {name} from; export it again"
        )
    try:
        if by_options:
            module = RunConfig.from_dict(config[key], source=str(file)).build_vae(config.get("event_shape"))
        else:
            module = cls(**config[key])
    except PyroVAEError as e:
        raise ModelFolderError(f"{file} does not rebuild its {name}: {e}") from None
    except Exception as e:  # a user's constructor, given arguments it does not take
        raise ModelFolderError(f"{file} does not rebuild its {name}: {type(e).__name__}: {e}") from None
    built = f"{type(module).__module__}:{type(module).__qualname__}"
    if built != name:
        raise ModelFolderError(
            f"{file} names the class {name}, but its {key} build a {built}; the folder was altered"
        )
    return module


def _check_tensors(path: Path, config: dict, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load ``tensors`` into ``module``, refusing missing, unexpected, mis-shaped and non-finite ones by
    name."""
    expected, tied = _unique(module.state_dict())
    missing = [n for n in expected if n not in tensors]
    unexpected = [n for n in tensors if n not in expected]
    shapes = [
        f"{n} {tuple(tensors[n].shape)} in the file, {tuple(t.shape)} in the model"
        for n, t in expected.items()
        if n in tensors and tensors[n].shape != t.shape
    ]
    problems = [
        f"{what} {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("of another shape:", shapes))
        if names
    ]
    if problems:
        raise ModelFolderError(
            f"the tensors of {path / WEIGHTS} do not fit the {config['class']} of {CONFIG}: "
            f"{'; '.join(problems)}. Export the model again"
        )
    bad = _non_finite(tensors)
    if bad:
        raise ModelFolderError(
            f"{path / WEIGHTS} holds NaN or infinite values in {bad}: a model from diverged training cannot "
            "be "
            "used. Export it again from a checkpoint before it diverged"
        )
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module.to(dtypes.pop())  # a model saved in float64, say, is rebuilt in float32
    module.load_state_dict({**tensors, **{alias: tensors[name] for alias, name in tied.items()}})
