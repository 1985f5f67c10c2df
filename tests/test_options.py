"""One domain per numeric option, the same for the API, the command line and config.json."""

from __future__ import annotations

import math

import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.options import DOMAINS, check_option, check_options


@pytest.mark.parametrize(
    "name, value, domain",
    [
        ("epochs", 2.5, "an integer >= 1"),
        ("epochs", 0, "an integer >= 1"),
        ("epochs", True, "an integer >= 1"),
        ("lr", "0.1", "a number > 0"),
        ("lr", 0.0, "a number > 0"),
        ("lr", math.nan, "a number > 0"),
        ("lr", math.inf, "a number > 0"),
        ("clip_norm", -1, "a number > 0, or None"),
        ("patience", 0, "an integer >= 1, or None"),
        ("kl_warmup", -1, "an integer >= 0"),
        ("test_samples", -5, "an integer >= 0"),
        ("likelihood_scale", 0, "a number > 0"),
        ("seed", -1, "an integer >= 0 and <= 4294967295"),
        ("seed", 2**32, "an integer >= 0 and <= 4294967295"),
        ("latent_dim", 2**24 + 1, "an integer >= 1 and <= 16777216"),
    ],
)
def test_values_outside_their_domain_are_refused_naming_the_option_both_ways(name, value, domain):
    flag = "--" + name.replace("_", "-")
    with pytest.raises(
        ConfigError, match=rf"^{name} \({flag}\) must be {domain}; got {value!r}$".replace(".", r"\.")
    ):
        check_option(name, value)


def test_values_inside_their_domain_come_back_as_the_right_type():
    assert check_option("epochs", 3.0) == 3 and isinstance(check_option("epochs", 3.0), int)
    assert check_option("lr", 1) == 1 and check_option("clip_norm", None) is None
    assert check_option("alpha", -0.5) == -0.5  # Renyi's alpha may be negative
    assert check_options(batch_size=10, hidden=[3, 4]) == {"batch_size": 10, "hidden": [3, 4]}
    # a word admitted beside the numbers comes back as it is, one way or the other
    assert check_option("threads", "auto") == "auto" and check_options(threads="auto", epochs=2.0) == {
        "threads": "auto",
        "epochs": 2,
    }


def test_every_problem_is_named_in_one_error():
    with pytest.raises(ConfigError) as err:
        check_options(epochs=0, lr=-1, hidden=[400, 0], seed=1)
    message = str(err.value)
    assert "epochs (--epochs)" in message and "lr (--lr)" in message and "hidden (--hidden)" in message
    assert "seed" not in message
    with pytest.raises(ConfigError, match="hidden"):
        check_options(hidden=None)


def test_every_domain_describes_itself():
    for name, domain in DOMAINS.items():
        assert domain.describe().startswith(("an integer", "a number", "True or False", "one of")), name
    with pytest.raises(ConfigError, match="start must be one of 'guide', 'prior'; got 'posterior'"):
        check_option("start", "posterior")


# every public function that computes refuses each numeric argument outside its domain, by name,
# before any work: the calls below are valid as written, and each bad value replaces one argument
def _pair():
    vae = pyrovae.VAE((1, 4, 4), latent_dim=2, hidden=(4,))
    return vae, vae.model, vae.guide


def _x():
    return (torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()


CALLS = {
    "log_likelihood": (lambda **o: pyrovae.log_likelihood(*_pair()[1:], _x(), **o), {"num_samples": 2}),
    "bounds": (lambda **o: pyrovae.bounds(*_pair()[1:], _x(), ks=(1, 2), **o), {}),
    "ais": (lambda **o: pyrovae.ais(*_pair()[1:], _x(), **o), {"num_steps": 2, "num_chains": 2}),
    "bdmc": (lambda **o: pyrovae.bdmc(*_pair()[1:], **o), {"num_data": 2, "num_steps": 2, "num_chains": 2}),
    "latent_stats": (lambda **o: pyrovae.latent_stats(*_pair()[1:], _x(), **o), {"num_particles": 2}),
    "anomaly_scores": (lambda **o: pyrovae.anomaly_scores(*_pair()[1:], _x(), **o), {"num_samples": 2}),
    "likelihood-regret": (
        lambda **o: pyrovae.anomaly_scores(*_pair()[1:], _x(), "likelihood-regret", **o),
        {"num_samples": 2, "steps": 1},
    ),
    "compare": (lambda **o: pyrovae.compare(*_pair()[1:], _x(), ["elbo"], **o), {"num_repeats": 2}),
    "encode": (lambda **o: pyrovae.analysis.latent_space.encode(_pair()[0], _x(), **o), {}),
    "fit": (lambda **o: pyrovae.fit(_pair()[0], _x(), **o), {"epochs": 1}),
}
BAD = {"integer": [0, -1, 2.5, True, "2", float("nan")], "number": [0, -1.0, float("nan"), float("inf"), "1"]}


def _arguments(call) -> list[str]:
    import inspect

    target = {
        "likelihood-regret": pyrovae.anomaly_scores,
        "encode": pyrovae.analysis.latent_space.encode,
    }.get(call, getattr(pyrovae, call, None))
    return [name for name in inspect.signature(target).parameters if name in DOMAINS]


@pytest.mark.parametrize("call", CALLS)
def test_every_public_function_refuses_each_argument_outside_its_domain(call):
    fn, valid = CALLS[call]
    if call != "encode":
        valid = {**valid, "progress": False}
    accepted, tried = [], 0
    for name in _arguments(call):
        domain = DOMAINS[name]
        values = BAD["integer" if domain.integer else "number"]
        for value in values:
            if domain.admits(value) or (domain.low is not None and domain.low < 0 and value in (-1, -1.0)):
                continue
            tried += 1
            try:
                fn(**{**valid, name: value})
            except pyrovae.PyroVAEError as e:
                assert name in str(e), (call, name, value, str(e))
            except Exception as e:  # noqa: BLE001 -- the test's point: anything else is a failure
                accepted.append(f"{name}={value!r}: {type(e).__name__}: {e}")
            else:
                accepted.append(f"{name}={value!r}: accepted")
    assert tried and not accepted, f"{call}: " + "; ".join(accepted)
