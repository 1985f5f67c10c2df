"""Errors raised for a user's mistake.

Every error here carries a message that names the mistake and the fix. The CLI catches :class:`PyroVAEError`
and prints its message without a traceback (exit status 2 for usage errors, 1 for a failed run).
"""

from __future__ import annotations


class PyroVAEError(Exception):
    """Base class of the errors pyrovae raises for something the user can fix."""

    #: exit status the CLI uses for this error
    exit_code: int = 2


class ConfigError(PyroVAEError, ValueError):
    """An unknown name or an invalid combination of options."""


class DataError(PyroVAEError, ValueError):
    """Data that cannot be used as given: wrong values, wrong shape, missing or damaged files."""


class CheckpointError(PyroVAEError):
    """A checkpoint that is missing, damaged or carries a pickled payload."""


class ModelFolderError(CheckpointError):
    """A model folder (:func:`~pyrovae.save_model`) that is missing, damaged, altered or written by a newer
    pyrovae, names a class that cannot be rebuilt, or would be overwritten."""


class RunDirError(PyroVAEError):
    """A run directory that would be overwritten, or is not a pyrovae run directory."""


class StorageError(PyroVAEError, OSError):
    """A file could not be written (a full disk, a read-only file system); nothing was damaged."""

    exit_code = 1


class TrainingError(PyroVAEError, RuntimeError):
    """Training stopped because the loss, a gradient, a parameter or the validation bound became
    NaN or infinite."""

    exit_code = 1


class RankError(PyroVAEError, RuntimeError):
    """Another rank of a distributed run failed; the message names the rank and its error."""

    exit_code = 1


def unknown_name(kind: str, name: str, valid) -> ConfigError:
    """The error for an unknown ``kind`` called ``name``, listing the ``valid`` names."""
    choices = ", ".join(sorted(valid))
    return ConfigError(f"unknown {kind} {name!r}; choose one of: {choices}")
