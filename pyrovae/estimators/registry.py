"""Estimators by name and options: the one place :func:`pyrovae.fit`, ``compare`` and the command
line read them from."""

from __future__ import annotations

from collections.abc import Callable

from pyro.infer import ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from pyrovae.errors import ConfigError, unknown_name
from pyrovae.estimators.annealed import KLAnnealed
from pyrovae.estimators.elbos import TailAdaptiveELBO, TraceELBO, TraceGraphELBO
from pyrovae.estimators.iwae import CIWAE, IWAE, MIWAE, PIWAE, STL, DReG, Renyi
from pyrovae.estimators.rws import RWS
from pyrovae.estimators.vimco import VIMCO
from pyrovae.options import check_options, parse_spec

__all__ = ["ESTIMATORS", "estimator", "parse_spec"]


#: name -> (factory, the keyword arguments it accepts); every name also accepts ``beta``
#:
#: :meta hide-value:
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


#: the options of Pyro's estimators, checked against :data:`pyrovae.options.DOMAINS`
PYRO_OPTIONS = ("num_particles", "vectorize_particles", "max_plate_nesting", "tail_adaptive_beta")


def estimator(name: str | ELBO, **kwargs) -> ELBO:
    """Build the estimator called ``name`` (see :data:`ESTIMATORS`) with ``kwargs``.

    ``name`` may carry options itself, ``"iwae:k=5"`` (see :func:`parse_spec`). The option ``beta``,
    accepted by every name, wraps the estimator in :class:`KLAnnealed`. An
    :class:`~pyro.infer.ELBO` instance is returned unchanged.

    :param name: a name of :data:`ESTIMATORS`, with or without options (``"iwae:k=5"``), or an
        :class:`~pyro.infer.ELBO` instance.
    :param kwargs: the estimator's options, those :data:`ESTIMATORS` lists for ``name`` and ``beta``
        (none with an instance); an option may not be given both here and in ``name``.
    """
    if isinstance(name, ELBO):
        if kwargs:
            raise ConfigError(
                "options were given together with an estimator instance; set them on the instance"
            )
        return name
    if not isinstance(name, str):
        raise ConfigError(
            f"the estimator must be a name such as 'elbo' or 'iwae:k=5' (one of {', '.join(ESTIMATORS)}), "
            f"or a pyro.infer.ELBO instance; got {name!r}"
        )
    name, options = parse_spec(name)
    if twice := sorted(set(options) & set(kwargs)):
        raise ConfigError(f"estimator option {', '.join(twice)} is given both in the name and as keyword")
    kwargs = {**options, **kwargs}
    if name not in ESTIMATORS:
        raise unknown_name("estimator", name, ESTIMATORS)
    factory, accepted = ESTIMATORS[name]
    accepted = (*accepted, "beta")
    if unknown := sorted(set(kwargs) - set(accepted)):
        raise ConfigError(
            f"estimator {name!r} takes no option {', '.join(unknown)}; it accepts: {', '.join(accepted)}"
        )
    # the options of Pyro's own estimators, against the domains Pyro documents (pyrovae's estimators
    # check theirs with messages that name the estimator)
    kwargs.update(check_options(**{k: v for k, v in kwargs.items() if k in PYRO_OPTIONS}))
    beta = kwargs.pop("beta", None)
    elbo = factory(**kwargs)
    return elbo if beta is None else KLAnnealed(elbo, beta)
