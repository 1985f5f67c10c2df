"""One domain per numeric option, the same for the API, the command line and config.json."""

from __future__ import annotations

import math

import pytest

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
        assert domain.describe().startswith(("an integer", "a number", "True or False")), name
