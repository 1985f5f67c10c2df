"""Networks: activations by name are torch's own modules."""

from __future__ import annotations

import pytest

from pyrovae.errors import ConfigError
from pyrovae.nn import ACTIVATIONS, activation


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_are_torch_modules(name):
    module = activation(name)
    assert type(module) is ACTIVATIONS[name] and type(module).__module__.startswith("torch.nn")
    assert module.state_dict() == {}


def test_unknown_activation_names_the_choices():
    with pytest.raises(ConfigError, match="unknown activation 'swish'; choose one of: elu, gelu"):
        activation("swish")
