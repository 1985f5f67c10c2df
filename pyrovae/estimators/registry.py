"""Estimators by name and options: the one place :func:`pyrovae.fit`, ``compare`` and the command
line read them from."""

from __future__ import annotations

from collections.abc import Callable

from pyro.infer import ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ..errors import ConfigError, unknown_name
from .annealed import KLAnnealed
from .elbos import TailAdaptiveELBO, TraceELBO, TraceGraphELBO
from .iwae import CIWAE, IWAE, MIWAE, PIWAE, STL, DReG, Renyi
from .rws import RWS
from .vimco import VIMCO

__all__ = ["ESTIMATORS", "estimator", "parse_spec"]


#: name -> (factory, the keyword arguments it accepts); every name also accepts ``beta``
ESTIMATORS: dict[str, tuple[Callable[..., ELBO], tuple[str, ...]]] = {
    "elbo": (TraceELBO, ("num_particles", "vectorize_particles")),
    "elbo-analytic-kl": (TraceMeanField_ELBO, ("num_particles", "vectorize_particles")),
    "enum": (TraceEnum_ELBO, ("num_particles", "vectorize_particles", "max_plate_nesting")),
    "tracegraph": (TraceGraphELBO, ("num_particles", "vectorize_particles")),
    "tail-adaptive": (TailAdaptiveELBO, ("num_particles", "tail_adaptive_beta")),
    "iwae": (IWAE, ("k",)),
    "renyi": (Renyi, ("alpha", "k")),
    "stl": (STL, ("k",)),
    "dreg": (DReG, ("k",)),
    "miwae": (MIWAE, ("k", "m")),
    "piwae": (PIWAE, ("k", "m")),
    "ciwae": (CIWAE, ("k", "mix")),
    "vimco": (VIMCO, ("k",)),
    "rws": (RWS, ("k",)),
}


def parse_spec(spec: str) -> tuple[str, dict[str, int | float | bool]]:
    """Split an estimator spec ``"NAME[:OPTION=VALUE]..."``, e.g. ``"iwae:k=5:beta=0.5"``, into its
    name and options; values are read as integers, numbers or ``true``/``false``."""
    name, *options = spec.split(":")
    kwargs: dict[str, int | float | bool] = {}
    for option in options:
        key, sep, text = (part.strip() for part in option.partition("="))
        if not (key and sep and text):
            raise ConfigError(f"estimator option {option!r} of {spec!r} is not OPTION=VALUE, as in iwae:k=5")
        key = key.replace("-", "_")
        if key in kwargs:
            raise ConfigError(f"estimator option {key!r} is given twice in {spec!r}")
        kwargs[key] = _parse_value(text)
    return name.strip(), kwargs


def _parse_value(text: str) -> int | float | bool:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ConfigError(f"estimator option value {text!r} is not a number, true or false")


def estimator(name: str | ELBO, **kwargs) -> ELBO:
    """Build the estimator called ``name`` (see :data:`ESTIMATORS`) with ``kwargs``.

    ``name`` may carry options itself, ``"iwae:k=5"`` (see :func:`parse_spec`). The option ``beta``,
    accepted by every name, wraps the estimator in :class:`KLAnnealed`. An
    :class:`~pyro.infer.ELBO` instance is returned unchanged.
    """
    if isinstance(name, ELBO):
        if kwargs:
            raise ConfigError(
                "options were given together with an estimator instance; set them on the instance"
            )
        return name
    name, options = parse_spec(name)
    twice = sorted(set(options) & set(kwargs))
    if twice:
        raise ConfigError(f"estimator option {', '.join(twice)} is given both in the name and as keyword")
    kwargs = {**options, **kwargs}
    if name not in ESTIMATORS:
        raise unknown_name("estimator", name, ESTIMATORS)
    factory, accepted = ESTIMATORS[name]
    accepted = (*accepted, "beta")
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"estimator {name!r} takes no option {', '.join(unknown)}; it accepts: {', '.join(accepted)}"
        )
    beta = kwargs.pop("beta", None)
    elbo = factory(**kwargs)
    return elbo if beta is None else KLAnnealed(elbo, beta)
