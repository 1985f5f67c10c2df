"""The domain of every numeric option, in one place for the API, the command line and ``config.json``.

:func:`check_options` is what :func:`~pyrovae.fit`, :class:`~pyrovae.Trainer`, the built-in models,
:class:`~pyrovae.runs.run.RunConfig` and the ``pyrovae`` command check their numbers with: the same rule
and the same message (naming the option as both the API and the command line spell it) wherever a
value comes from. Booleans and strings are refused where a number is meant (``lr="0.1"``), and so
are fractional counts (``epochs=2.5``), NaN and infinities.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from pyrovae.errors import ConfigError

__all__ = [
    "DOMAINS",
    "Domain",
    "check_keywords",
    "check_option",
    "check_options",
    "check_schedule",
    "flag_of",
    "parse_spec",
]


@dataclass(frozen=True)
class Domain:
    """Integers or reals at least (or, ``strict``, above) ``low`` and at most (``high_strict``:
    below) ``high``; ``None`` allowed if ``optional``; with ``boolean``, ``True`` or ``False``; with
    ``choices``, one of those strings instead; the strings of ``also`` besides the numbers.
    ``flag``: the option is also a command-line flag, named in messages."""

    integer: bool
    low: float | None = None
    strict: bool = False
    optional: bool = False
    high: float | None = None
    high_strict: bool = False
    boolean: bool = False
    flag: bool = True
    choices: tuple[str, ...] = ()
    also: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return f"one of {', '.join(map(repr, self.choices))}"
        if self.boolean:
            return "True or False" + (", or None" if self.optional else "")
        kind = "an integer" if self.integer else "a number"
        bound = "" if self.low is None else f" {'>' if self.strict else '>='} {self.low:g}"
        if self.high is not None:
            high = int(self.high) if self.integer else f"{self.high:g}"
            bound += f" and {'<' if self.high_strict else '<='} {high}"
        words = "".join(f", {word!r}" for word in self.also)
        return kind + bound + words + (", or None" if self.optional else "")

    def admits(self, value: Any) -> bool:
        if self.choices or (self.also and isinstance(value, str)):
            return isinstance(value, str) and value in self.choices + self.also
        if value is None:
            return self.optional
        if self.boolean or isinstance(value, bool):
            return self.boolean and isinstance(value, bool)
        if not isinstance(value, numbers.Real):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if not math.isfinite(value):
            return False
        if self.high is not None and (value >= self.high if self.high_strict else value > self.high):
            return False
        if self.low is None:
            return True
        return value > self.low if self.strict else value >= self.low


COUNT, POSITIVE_COUNT, POSITIVE = Domain(True, 0), Domain(True, 1), Domain(False, 0, strict=True)
#: the same, for arguments of the Python API alone (no command-line flag to name)
API_COUNT, API_POSITIVE = Domain(True, 1, flag=False), Domain(False, 0, strict=True, flag=False)
API_OPTIONAL_COUNT = Domain(True, 1, optional=True, flag=False)
#: the most units a layer or latent may have: far beyond any network that fits in memory, small
#: enough that a mistyped size is refused rather than attempted
UNITS = Domain(True, 1, high=2**24)

#: the domain of every numeric option, by its API name (the command line's is ``--name-with-dashes``)
DOMAINS: dict[str, Domain] = {
    "epochs": POSITIVE_COUNT,
    "batch_size": POSITIVE_COUNT,
    "lr": POSITIVE,
    "kl_warmup": COUNT,
    "clip_norm": Domain(False, 0, strict=True, optional=True),
    "patience": Domain(True, 1, optional=True),
    "seed": Domain(True, 0, high=2**32 - 1),  # what every generator (numpy's too) accepts
    "latent_dim": UNITS,
    "latent_dim2": Domain(True, 1, optional=True, high=2**24),
    "prior_components": Domain(True, 1, optional=True),
    "likelihood_scale": POSITIVE,
    "clamp": Domain(False, 0, high=0.5, high_strict=True, flag=False),  # "bernoulli:clamp=1e-5"
    "k": Domain(True, 1, optional=True),
    "alpha": Domain(False, optional=True),
    "m": Domain(True, 1, optional=True),
    "mix": Domain(False, 0, optional=True, high=1),
    "beta": Domain(False, 0, optional=True),
    "test_samples": COUNT,
    "hidden_size": UNITS,
    "max_memory": POSITIVE,
    "threads": Domain(True, 1, optional=True, also=("auto",)),
    "precision": Domain(False, choices=("highest", "tf32", "bf16")),
    # evaluation: importance sampling, AIS, latent statistics, anomaly scores
    "num_samples": POSITIVE_COUNT,
    "num_particles": POSITIVE_COUNT,
    "particle_batch_size": API_OPTIONAL_COUNT,
    "chunk_size": API_COUNT,
    "num_steps": API_COUNT,
    "num_chains": API_COUNT,
    "num_data": API_COUNT,
    "leapfrog_steps": POSITIVE_COUNT,
    "step_size": API_POSITIVE,
    "target_accept": Domain(False, 0, strict=True, high=1, high_strict=True, flag=False),
    "step_size_jitter": Domain(False, 0, high=1, high_strict=True, flag=False),
    "ais_chains": POSITIVE_COUNT,
    "bdmc_data": COUNT,
    "bdmc_steps": Domain(True, 1, optional=True),
    "threshold": API_POSITIVE,
    "steps": POSITIVE_COUNT,
    "group_size": POSITIVE_COUNT,
    "bins": API_OPTIONAL_COUNT,
    # options of Pyro's own estimators, as Pyro documents their domains
    "vectorize_particles": Domain(False, boolean=True, flag=False),
    "max_plate_nesting": Domain(True, 0, flag=False),
    "tail_adaptive_beta": Domain(False, -1, high=0, high_strict=True, flag=False),
    "start": Domain(False, choices=("guide", "prior"), flag=False),
}


#: the command-line flags whose names differ from their option's
FLAGS = {"num_chains": "--ais-chains", "num_data": "--bdmc", "bdmc_data": "--bdmc", "hidden_size": "--hidden"}


def flag_of(name: str) -> str:
    """The command-line flag of option ``name``: ``--name-with-dashes``, or as :data:`FLAGS` says."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _problem(name: str, value: Any, allow_none: bool = False) -> str | None:
    domain = DOMAINS[name]
    if domain.admits(value) or (value is None and allow_none):
        return None
    named = f"{name} ({flag_of(name)})" if domain.flag else name
    return f"{named} must be {domain.describe()}; got {value!r}"


def check_option(name: str, value: Any):
    """``value`` if it lies in the domain of option ``name`` (an ``int`` for integer options),
    else raise :class:`~pyrovae.errors.ConfigError` naming the option and its domain."""
    problem = _problem(name, value)
    if problem:
        raise ConfigError(problem)
    return _converted(name, value)


def _converted(name: str, value: Any):
    """An admitted ``value`` of option ``name``: an ``int`` where the option counts, else as given."""
    return (
        int(value) if isinstance(value, numbers.Real) and name in DOMAINS and DOMAINS[name].integer else value
    )


def check_options(allow_none: tuple[str, ...] = (), **values: Any) -> dict[str, Any]:
    """:func:`check_option` for each option, with one error listing every value out of its domain.

    ``hidden`` (a sequence of layer sizes) is checked size by size; the options named in
    ``allow_none`` may also be ``None`` (an unseeded ``seed``, say)."""
    problems = []
    for name, value in values.items():
        if name == "hidden":
            sizes = value if isinstance(value, list | tuple) else [value]
            bad = [size for size in sizes if not DOMAINS["hidden_size"].admits(size)]
            if bad or not isinstance(value, list | tuple):
                problems.append(
                    f"hidden (--hidden) must be a list of sizes from 1 to {int(UNITS.high)}; got {value!r}"
                )
        else:
            problems.append(_problem(name, value, name in allow_none))
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("; ".join(problems))
    return {name: _converted(name, v) for name, v in values.items()}


def check_keywords(what: str, given, accepted) -> None:
    """Refuse keyword options of ``what`` (e.g. ``"ais_options"``) outside ``accepted``, naming them
    and listing the accepted ones."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{what}: unknown option(s) {', '.join(unknown)}; choose from: {', '.join(sorted(accepted))}"
        )


def check_schedule(name: str, values) -> None:
    """Refuse an annealing schedule that is not a finite, non-decreasing sequence from 0 to 1."""
    import torch

    betas = torch.as_tensor(values, dtype=torch.float64).flatten()
    if (
        betas.numel() < 2
        or not bool(torch.isfinite(betas).all())
        or float(betas[0]) != 0.0
        or float(betas[-1]) != 1.0
        or bool((betas[1:] < betas[:-1]).any())
    ):
        shown = [round(float(b), 6) for b in betas[:6]] + (["..."] if betas.numel() > 6 else [])
        raise ConfigError(
            f"{name} must be a finite, non-decreasing sequence of at least two inverse temperatures "
            f"from 0 to 1, or a schedule's name; got {shown}"
        )


def parse_spec(spec: str, what: str = "estimator") -> tuple[str, dict[str, int | float | bool]]:
    """Split a spec ``"NAME[:OPTION=VALUE]..."`` of an estimator (``"iwae:k=5:beta=0.5"``) or a
    likelihood (``"binomial:levels=17"``; ``what`` names the kind in messages) into its name and
    options; values are read as integers, numbers or ``true``/``false``."""
    name, *options = spec.split(":")
    example = "binomial:levels=17" if what == "likelihood" else "iwae:k=5"
    kwargs: dict[str, int | float | bool] = {}
    for option in options:
        key, sep, text = (part.strip() for part in option.partition("="))
        if not (key and sep and text):
            raise ConfigError(f"{what} option {option!r} of {spec!r} is not OPTION=VALUE, as in {example}")
        key = key.replace("-", "_")
        if key in kwargs:
            raise ConfigError(f"{what} option {key!r} is given twice in {spec!r}")
        kwargs[key] = _parse_value(text, what)
    return name.strip(), kwargs


def _parse_value(text: str, what: str) -> int | float | bool:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ConfigError(f"{what} option value {text!r} is not a number, true or false")
