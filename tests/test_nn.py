"""Networks: the fast softplus agrees with torch's, and trains as torch's does."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pyrovae.nn import ACTIVATIONS, Softplus, activation

# with the native kernel (where built) and with torch's exp, add_, log_
kernel_or_torch = pytest.mark.parametrize("kernels", ["1", "0"])


@kernel_or_torch
def test_softplus_without_autograd_matches_torch_to_a_few_ulps(kernels, monkeypatch):
    monkeypatch.setenv("PYROVAE_KERNELS", kernels)
    x = torch.cat([torch.linspace(-120, 120, 200_001), torch.tensor([0.0, -0.0, 1e-30, -1e-30])])
    with torch.no_grad():
        fast, ref = Softplus()(x), F.softplus(x)
    # |error| within 8 ulps of max(1, softplus(x)): float32's eps is 2^-23
    assert ((fast - ref).abs() <= 8 * 2**-23 * ref.clamp(min=1)).all()


@kernel_or_torch
def test_softplus_overflow_gives_x_and_nan_stays_nan(kernels, monkeypatch):
    monkeypatch.setenv("PYROVAE_KERNELS", kernels)
    x = torch.tensor([88.0, 89.0, 1e4, math.inf, -math.inf, math.nan, 3.0])
    with torch.no_grad():
        y = Softplus()(x)
    torch.testing.assert_close(y[:5], F.softplus(x[:5]))
    assert math.isnan(y[5]) and abs(float(y[6]) - math.log1p(math.exp(3.0))) < 1e-6


def test_softplus_with_autograd_is_torch_softplus_and_its_gradient():
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    y = Softplus()(x)
    torch.testing.assert_close(y, F.softplus(x), rtol=0, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.sigmoid(x.detach()))


def test_softplus_with_beta_is_torch_softplus():
    x = torch.linspace(-5, 5, 101)
    with torch.no_grad():
        torch.testing.assert_close(Softplus(beta=2.0)(x), F.softplus(x, beta=2.0), rtol=0, atol=0)


def test_the_softplus_activation_is_the_fast_one_and_keeps_state_dict_keys():
    assert ACTIVATIONS["softplus"] is Softplus and isinstance(activation("softplus"), torch.nn.Softplus)
    assert Softplus().state_dict() == torch.nn.Softplus().state_dict() == {}
