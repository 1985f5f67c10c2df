"""Reweighted wake-sleep on probabilistic PCA, whose posterior is Gaussian in closed form: the
wake-φ update vanishes in expectation at the exact posterior and lowers the inclusive KL elsewhere;
and RWS trains the VAE (and the sigmoid belief network)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence
from toy_models import PPCA, LearnablePPCA

from pyrovae.estimators import RWS

GUIDE = ("gain", "offset", "tril")


def guide_gradient(module: LearnablePPCA, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """The gradient of RWS's loss w.r.t. the guide's parameters, flattened."""
    module.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    RWS(k).differentiable_loss(module.model, module.guide, x).backward()
    return torch.cat([getattr(module, name).grad.flatten() for name in GUIDE])


def inclusive_kl(module: LearnablePPCA, ppca: PPCA, x: torch.Tensor) -> torch.Tensor:
    r"""The mean over ``x`` of :math:`\mathrm{KL}(p(z \mid x) \,\|\, q(z \mid x))`, in closed form."""
    posterior = dist.MultivariateNormal(ppca.posterior_loc(x), scale_tril=ppca.post_scale_tril)
    q = dist.MultivariateNormal(x @ module.gain.T + module.offset, scale_tril=module.tril.tril())
    return kl_divergence(posterior, q).mean()


@pytest.fixture(scope="module")
def ppca_data(make_ppca):
    return make_ppca(20)


def test_wake_phi_vanishes_in_expectation_at_the_exact_posterior(ppca_data):
    ppca, x = ppca_data
    module = LearnablePPCA(ppca)
    # every weight is p(x): the normalized weights are exactly 1/k ...
    rws = RWS(5)
    log_w = rws.weight_terms(module.model, module.guide, (x,), {}).log_w.detach()
    torch.testing.assert_close(log_w, ppca.log_px(x).expand(5, -1), atol=1e-10, rtol=0)
    # ... so the guide's update is the mean score (1/k) sum_i grad log q(z_i | x), not zero in any
    # one draw but zero in expectation (E_q[grad log q] = 0): the mean of 300 draws lies within
    # 4 standard errors (sd / sqrt(300)) of 0 in every coordinate (fixed seeds)
    draws = torch.stack([guide_gradient(module, x, 5, seed) for seed in range(300)])
    nonzero = draws.std(0) > 0  # the strict upper part of the Cholesky factor is not used
    assert nonzero.sum() == 12 + 2 + 3
    assert draws[:, nonzero].abs().max() > 0.1  # single draws are far from zero
    se = draws[:, nonzero].std(0) / math.sqrt(len(draws))
    assert (draws[:, nonzero].mean(0).abs() < 4 * se).all(), (draws[:, nonzero].mean(0), se)


def test_a_step_along_wake_phi_lowers_the_inclusive_kl(ppca_data):
    ppca, x = ppca_data
    module = LearnablePPCA(ppca, shift=1.0)
    with torch.no_grad():
        module.tril.mul_(1.3)  # a guide too wide, and shifted by a posterior sd
    before = inclusive_kl(module, ppca, x)
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(before, [getattr(module, n) for n in GUIDE])])
    # the loss's gradient estimates N times the gradient of the mean inclusive KL (self-normalized
    # importance sampling: biased, consistent in k); with k = 50 and 10 draws it points the same way
    # (cosine 0.9996 here)
    g = torch.stack([guide_gradient(module, x, 50, seed) for seed in range(10)]).mean(0) / len(x)
    cosine = torch.dot(g, exact) / (g.norm() * exact.norm())
    assert cosine > 0.9, cosine
    # a small step (of length 0.05) as an optimizer minimizing the loss takes it: along minus the
    # gradient
    step = 0.05 * g / g.norm()
    with torch.no_grad():
        offset = 0
        for name in GUIDE:
            p = getattr(module, name)
            p -= step[offset : offset + p.numel()].reshape(p.shape)
            offset += p.numel()
    after = inclusive_kl(module, ppca, x)
    assert after < 0.8 * before, (before, after)  # 0.74 -> 0.46 nats here


# training the VAE and the SBN with "rws" is tested with "vimco" in tests/estimators/test_vimco.py
