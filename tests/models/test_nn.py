"""Networks: activations by name are torch's own modules; the gated layers, clamped Gaussian heads
and He initialization of the VampPrior paper's networks."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.errors import ConfigError
from pyrovae.models.nn import (
    ACTIVATIONS,
    LOG_VAR_RANGE,
    ClampedGaussianHead,
    ConditionalGatedDecoder,
    ConditionalGatedEncoder,
    GatedDecoder,
    GatedDense,
    GatedEncoder,
    activation,
    networks,
)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_are_torch_modules(name):
    module = activation(name)
    assert type(module) is ACTIVATIONS[name] and type(module).__module__.startswith("torch.nn")
    assert module.state_dict() == {}


def test_unknown_activation_names_the_choices():
    with pytest.raises(ConfigError, match="unknown activation 'swish'; choose one of: elu, gelu"):
        activation("swish")


def test_gated_dense_is_a_linear_map_times_a_sigmoid_gate():
    torch.manual_seed(0)
    layer = GatedDense(5, 3)
    x = torch.randn(4, 2, 5)  # leading batch dimensions pass through
    h = x @ layer.h.weight.T + layer.h.bias
    g = 1 / (1 + torch.exp(-(x @ layer.g.weight.T + layer.g.bias)))
    torch.testing.assert_close(layer(x), h * g)
    # two linear maps: 2 * (5 * 3 + 3) parameters
    assert sum(p.numel() for p in layer.parameters()) == 2 * (5 * 3 + 3)


def test_clamped_gaussian_head_keeps_the_log_variance_in_range_and_passes_no_gradient_beyond():
    low, high = LOG_VAR_RANGE
    assert (low, high) == (-6.0, 2.0)  # Hardtanh(min_val=-6, max_val=2) of the VampPrior code
    head = ClampedGaussianHead(1, 3)
    with torch.no_grad():  # log-variances -10, 0 and 5 at h = 1
        head.log_var.weight.copy_(torch.tensor([[-10.0], [0.0], [5.0]]))
        head.log_var.bias.zero_()
    h = torch.ones(2, 1, requires_grad=True)
    loc, scale = head(h)
    assert loc.shape == scale.shape == (2, 3)
    # sigma = exp(log_var / 2), with log_var clamped to [-6, 2]: sigma from e^-3 to e
    torch.testing.assert_close(scale[0], torch.exp(0.5 * torch.tensor([-6.0, 0.0, 2.0])))
    scale.sum().backward()
    grad = head.log_var.weight.grad.flatten()
    assert grad[0] == 0 and grad[2] == 0 and grad[1] != 0  # only the unclamped unit learns


def test_gated_networks_have_he_initialized_weights_and_the_expected_shapes():
    torch.manual_seed(0)
    encoder, decoder = networks("gated", (1, 28, 28), 40, (300, 300), "softplus")
    assert isinstance(encoder, GatedEncoder) and isinstance(decoder, GatedDecoder)
    first = encoder.body[0].h.weight.detach()  # 300 x 784 draws from N(0, 2 / 784)
    assert abs(float(first.std()) - math.sqrt(2 / 784)) < 0.02 * math.sqrt(2 / 784)
    assert abs(float(decoder.out.weight.detach().std()) - math.sqrt(2 / 300)) < 0.02 * math.sqrt(2 / 300)
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    loc, scale = encoder(x)
    assert loc.shape == scale.shape == (3, 40) and (scale > 0).all()
    assert decoder(torch.randn(5, 3, 40)).shape == (5, 3, 1, 28, 28)


def gated_sizes(*layers: GatedDense) -> list[tuple[int, int]]:
    return [(layer.h.in_features, layer.h.out_features) for layer in layers]


def test_conditional_gated_networks_join_two_branches_and_broadcast_particles_against_data():
    torch.manual_seed(0)
    encoder = ConditionalGatedEncoder((1, 4, 4), 2, 3, (8, 6))
    decoder = ConditionalGatedDecoder((1, 4, 4), 2, 3, (8, 6))
    # q(z1 | x, z2): x -> 8 and z2 -> 8 gated, then [8; 8] -> 6 gated; p(x | z1, z2): z1 -> 6 and
    # z2 -> 6 gated, then [6; 6] -> 8 gated, then 8 -> 16 linear
    assert gated_sizes(encoder.x_branch, encoder.c_branch, *encoder.joint) == [(16, 8), (2, 8), (16, 6)]
    assert gated_sizes(decoder.z_branch, decoder.c_branch, *decoder.joint) == [(3, 6), (2, 6), (12, 8)]
    assert (decoder.out.in_features, decoder.out.out_features) == (8, 16)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.3))
    c = torch.randn(7, 5, 2)  # 7 particles of each of 5 data points
    loc, scale = encoder(x, c)
    assert loc.shape == scale.shape == (7, 5, 3)
    one_by_one = torch.stack([encoder(x, c[k])[0] for k in range(7)])
    torch.testing.assert_close(loc, one_by_one)
    h = torch.cat([encoder.x_branch(x.flatten(-3)), encoder.c_branch(c[0])], -1)  # the concatenation
    torch.testing.assert_close(loc[0], encoder.head(encoder.joint(h))[0])
    assert decoder(torch.randn(7, 5, 3), c).shape == (7, 5, 1, 4, 4)
    with pytest.raises(ConfigError, match="at least one hidden layer"):
        ConditionalGatedEncoder((1, 4, 4), 2, 3, ())
