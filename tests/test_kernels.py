"""Native kernels: agreement with float64 references, special values, layouts, threads, fallback.

Tolerances: each kernel evaluates in float32 (unit roundoff u = 2^-24). A softplus is allowed
4u relative to max(1, |y|) (the polynomials are accurate to about 2u); a row sum of n terms is
allowed n u times the sum of the terms' magnitudes (the worst-case bound of a float32 sum of n
terms, Higham 2002, eq. 4.4) plus n u for the terms below u that 1 + e^-|v| rounds away; for the
Bernoulli log-density, the terms are those of its two sums, x l and log(1 + e^l).
"""

from __future__ import annotations

import math
import os

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyrovae import kernels
from pyrovae.importance import _log1p_exp_sum

U = 2.0**-24

pytestmark = pytest.mark.skipif(not kernels.available(), reason="pyrovae._kernels is not built here")


def test_the_kernels_are_built_in_ci():
    # CI installs pyrovae from source with a C compiler: the fast path must be the one tested
    if os.environ.get("CI"):
        assert kernels._kernels is not None


def _close_sum(got, terms, magnitude=None):
    """``got`` within n u (magnitude + 1) of the float64 sum of ``terms`` over the last dim;
    ``magnitude`` defaults to the sum of the terms' magnitudes."""
    n = terms.shape[-1]
    magnitude = terms.abs().sum(-1) if magnitude is None else magnitude
    error = (got.double() - terms.sum(-1)).abs()
    bound = n * U * (magnitude + 1)
    assert (error <= bound).all(), float((error / bound).max())


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 40_000])  # partial vectors; one thread and several
def test_softplus_matches_float64_within_4_ulps(n):
    g = torch.Generator().manual_seed(n)
    x = torch.cat([torch.linspace(-120, 120, 200_001), 30 * torch.randn(n, generator=g)])[-max(n, 200_001) :]
    y = kernels.softplus(x)
    ref = F.softplus(x.double())
    assert ((y.double() - ref).abs() <= 4 * U * ref.clamp(min=1)).all()


def test_softplus_special_values_and_in_place():
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.0, 1e4, math.inf, -math.inf, math.nan, -90.0, 3.0])
    y = kernels.softplus(x)
    assert y.data_ptr() != x.data_ptr()
    torch.testing.assert_close(y[:8], F.softplus(x[:8]))
    assert math.isnan(y[8]) and 0 <= float(y[9]) < 1e-38
    assert abs(float(y[10]) - math.log1p(math.exp(3))) < 1e-6
    same = x.clone()
    assert kernels.softplus(same, out=same) is same
    torch.testing.assert_close(same, y, equal_nan=True, rtol=0, atol=0)


def test_kernels_decline_what_they_do_not_handle():
    x = torch.randn(4, 6)
    assert kernels.softplus(x.double()) is None
    assert kernels.softplus(x.t()) is None  # not contiguous
    assert kernels.softplus(x, out=torch.empty(6, 4).t()) is None
    assert kernels.log1p_exp_sum(x.double()) is None
    with torch.enable_grad():
        assert kernels.log1p_exp_sum(x.requires_grad_()) is None
    x = x.detach()
    assert kernels.bernoulli_log_prob(x, torch.ones(3, 6)) is None  # 3 rows against 4: no layout
    assert kernels.bernoulli_log_prob(x[0], torch.ones(2, 6)) is None  # value larger than logits
    assert kernels.bernoulli_log_prob(x, torch.ones(6, 4)) is None
    # a strided matrix with unit stride along rows is read in place; others are copied first
    wide = torch.randn(4, 30)
    torch.testing.assert_close(kernels.log1p_exp_sum(wide[:, :6]), kernels.log1p_exp_sum(wide[:, :6].clone()))
    torch.testing.assert_close(kernels.log1p_exp_sum(wide.t()), kernels.log1p_exp_sum(wide.t().contiguous()))


@pytest.mark.parametrize("cols", [1, 16, 37, 784])
@pytest.mark.parametrize("rows", [3, 700])  # one thread, and rows shared among threads
def test_log1p_exp_sum_matches_float64(rows, cols):
    g = torch.Generator().manual_seed(rows * cols)
    for scale, shift in [(6.0, -2.0), (3.0, -15.0), (30.0, 0.0), (0.1, 0.0)]:
        x = scale * torch.randn(rows, 2, cols, generator=g) + shift
        got = kernels.log1p_exp_sum(x)
        assert got.shape == (rows, 2)
        _close_sum(got, F.softplus(x.double()))


def test_log1p_exp_sum_special_values():
    x = torch.zeros(4, 600)
    x[0, 5] = math.nan
    x[1, 599] = math.inf
    x[2, :] = -math.inf
    x[3, 100] = 1e30
    got = kernels.log1p_exp_sum(x)
    assert math.isnan(got[0]) and got[1] == math.inf and got[2] == 0
    assert float(got[3]) == pytest.approx(1e30, rel=1e-6)


@pytest.mark.parametrize("cols", [5, 784])
@pytest.mark.parametrize("data", [1, 6])
def test_bernoulli_log_prob_matches_pyro(data, cols):
    g = torch.Generator().manual_seed(data + cols)
    logits = 5 * torch.randn(500, data, cols, generator=g) - 2
    for rows in (data, 1):  # one row of data per data point, or one for all
        x = (torch.rand(rows, cols, generator=g) < 0.4).float()
        got = kernels.bernoulli_log_prob(logits, x)
        assert got.shape == (500, data)
        _close_sum(got, *_bernoulli_terms(logits, x))
    # one data point: a 1-d value against a single row of logits, and an integer-valued value
    _close_sum(kernels.bernoulli_log_prob(logits[0, 0], x[0].long()), *_bernoulli_terms(logits[0, 0], x[0]))


def _bernoulli_terms(logits, x):
    """Pyro's log-density terms in float64, and the magnitude of the kernel's two sums."""
    logits, x = logits.double(), x.double()
    magnitude = (x * logits).abs().sum(-1) + F.softplus(logits).sum(-1)
    return dist.Bernoulli(logits=logits).log_prob(x), magnitude


def test_results_do_not_depend_on_the_number_of_threads():
    g = torch.Generator().manual_seed(3)
    logits = 4 * torch.randn(2000, 3, 784, generator=g)
    x = (torch.rand(3, 784, generator=g) < 0.5).float()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.bernoulli_log_prob(logits, x), kernels.log1p_exp_sum(logits), kernels.softplus(logits)
        torch.set_num_threads(max(2, threads))
        many = kernels.bernoulli_log_prob(logits, x), kernels.log1p_exp_sum(logits), kernels.softplus(logits)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many, strict=True):
        assert torch.equal(a, b)


def test_disabled_kernels_fall_back_to_torch(monkeypatch):
    x = 4 * torch.randn(50, 784)
    fast = _log1p_exp_sum(x)
    monkeypatch.setenv("PYROVAE_KERNELS", "0")
    assert not kernels.available() and kernels.log1p_exp_sum(x) is None and kernels.softplus(x) is None
    _close_sum(_log1p_exp_sum(x), F.softplus(x.double()))
    _close_sum(fast, F.softplus(x.double()))


needs_mkl = pytest.mark.skipif(
    not (kernels.available() and kernels._kernels.blas_ready()), reason="torch was built without MKL"
)


def _mlp(sizes, act=torch.nn.Softplus, bias=True):
    g = torch.Generator().manual_seed(sum(sizes))
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = torch.nn.Linear(a, b, bias=bias)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(b, a, generator=g) / math.sqrt(a))
            if bias:
                linear.bias.copy_(torch.randn(b, generator=g))
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(act())
    return torch.nn.Sequential(*layers)


def _mlp_terms(mlp, z, x):
    """Pyro's log-density terms in float64 of the float32 MLP's logits, and their magnitude."""
    with torch.no_grad():
        logits = mlp.double()(z.double())
        mlp.float()
    return _bernoulli_terms(logits, x)


@needs_mkl
@pytest.mark.parametrize(
    "sizes, act, bias",
    [
        ((50, 400, 784), torch.nn.Softplus, True),  # the binarized-MNIST decoder
        ((8, 20, 30, 37), torch.nn.ReLU, True),  # two hidden layers; 37 is not a multiple of 16
        ((5, 16), torch.nn.Softplus, False),  # one layer, no bias
    ],
)
@pytest.mark.parametrize("particles", [1, 7, 300])  # a partial tile only; full tiles and a partial one
def test_mlp_bernoulli_matches_the_mlp_and_pyro(sizes, act, bias, particles):
    mlp = _mlp(sizes, act, bias)
    g = torch.Generator().manual_seed(particles)
    z = torch.randn(particles, 3, sizes[0], generator=g)
    for rows in (3, 1):
        x = (torch.rand(rows, sizes[-1], generator=g) < 0.4).float()
        with torch.no_grad():
            got = kernels.mlp_bernoulli_log_prob(mlp, z, x)
        assert got.shape == (particles, 3)
        terms, magnitude = _mlp_terms(mlp, z, x)
        # the float32 product of the last layer moves each logit by up to n u (|h| @ |W|^T)
        # (Higham 2002, eq. 3.5; the dominant error), and a term by |x - sigmoid(l)| times that
        n = sizes[-2]
        with torch.no_grad():
            h = mlp[:-1](z)
            logit_error = n * U * (h.abs() @ mlp[-1].weight.abs().t())
            slack = ((x.abs() + torch.sigmoid(mlp(z))) * logit_error).sum(-1).double()
        _close_sum(got, terms, magnitude + slack / (sizes[-1] * U))


@needs_mkl
def test_mlp_bernoulli_declines_what_it_does_not_handle():
    mlp, z, x = _mlp((4, 6, 5)), torch.randn(10, 4), torch.ones(5)
    with torch.no_grad():
        assert kernels.mlp_bernoulli_log_prob(mlp, z, x) is not None
        assert kernels.mlp_bernoulli_log_prob(mlp, z.double(), x) is None
        assert kernels.mlp_bernoulli_log_prob(mlp, torch.randn(10, 3), x) is None  # wrong width
        assert kernels.mlp_bernoulli_log_prob(mlp, z, torch.ones(4)) is None  # wrong event size
        nn = torch.nn
        for other in [
            _mlp((4, 6, 5), nn.Tanh),
            nn.Sequential(nn.Linear(4, 6), nn.Softplus(beta=2.0), nn.Linear(6, 5)),
            nn.Sequential(nn.Linear(4, 5), nn.Softplus()),  # an activation after the last layer
            nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.ReLU(), nn.Linear(6, 5)),
            nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(7, 5)),  # sizes that do not chain
            _mlp((4, 6, 5)).double(),
            torch.nn.Linear(4, 5),
        ]:
            assert kernels.mlp_bernoulli_log_prob(other, z, x) is None
    assert kernels.mlp_bernoulli_log_prob(mlp, z, x) is None  # autograd on: the parameters need it


@needs_mkl
def test_mlp_bernoulli_does_not_depend_on_the_number_of_threads():
    mlp = _mlp((50, 400, 784))
    z = torch.randn(1000, 2, 50, generator=torch.Generator().manual_seed(0))
    x = (torch.rand(2, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = kernels.mlp_bernoulli_log_prob(mlp, z, x)
            torch.set_num_threads(max(2, threads))
            many = kernels.mlp_bernoulli_log_prob(mlp, z, x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
