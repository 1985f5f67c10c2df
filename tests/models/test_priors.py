"""Priors: shapes and parameters, the mixtures' log-density against a direct computation, and the
importance-sampled log p(x) of a VAE with a mixture prior against the exact marginal."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.models.priors import DEFAULT_COMPONENTS, PRIORS, DiagonalNormalMixture, VampPrior, prior
from pyrovae.train.trainer import Trainer

LATENT, IMAGE = 3, (1, 4, 4)


def explicit_mixture_log_prob(logits, loc, scale, z):
    """log sum_k pi_k prod_d N(z_d; loc_kd, scale_kd^2), written out with one logsumexp."""
    z = z.unsqueeze(-2)  # (..., 1, D) against (K, D)
    log_normal = -0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(torch.log_softmax(logits, -1) + log_normal.sum(-1), -1)


def test_diagonal_normal_mixture_log_prob_is_the_explicit_logsumexp_over_components():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, generator=g, dtype=torch.float64)
    loc = 2 * torch.randn(7, LATENT, generator=g, dtype=torch.float64)
    scale = 0.1 + torch.rand(7, LATENT, generator=g, dtype=torch.float64)
    mixture = DiagonalNormalMixture(logits, loc, scale, (5,))
    assert mixture.batch_shape == (5,) and mixture.event_shape == (LATENT,)
    z = 3 * torch.randn(4, 5, LATENT, generator=g, dtype=torch.float64)  # particles x data points
    expected = explicit_mixture_log_prob(logits, loc, scale, z)
    assert mixture.log_prob(z).shape == (4, 5)
    torch.testing.assert_close(mixture.log_prob(z), expected, rtol=1e-12, atol=1e-10)
    # and against Pyro's own MixtureSameFamily (elementwise over components)
    reference = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1))
    torch.testing.assert_close(mixture.log_prob(z), reference.log_prob(z), rtol=1e-12, atol=1e-10)
    # float32 values are scored in float64 and returned in float32
    z32 = z.float()
    assert mixture.log_prob(z32).dtype == torch.float32
    torch.testing.assert_close(
        mixture.log_prob(z32).double(), explicit_mixture_log_prob(logits, loc, scale, z32.double())
    )
    expanded = mixture.expand((2, 5))
    assert isinstance(expanded, DiagonalNormalMixture) and expanded.batch_shape == (2, 5)
    assert expanded.sample((3,)).shape == (3, 2, 5, LATENT)


def make_vae(name: str, **kwargs) -> pyrovae.VAE:
    torch.manual_seed(0)
    return pyrovae.VAE(IMAGE, latent_dim=LATENT, hidden=(16,), prior=name, **kwargs)


@pytest.mark.parametrize("name", PRIORS)
def test_each_prior_has_the_batch_and_event_shape_asked_for(name):
    p = make_vae(name).prior
    d = p((6,))
    assert d.batch_shape == (6,) and d.event_shape == (LATENT,)
    z = d.sample()
    assert z.shape == (6, LATENT) and d.log_prob(z).shape == (6,)
    assert d.log_prob(z.expand(2, 6, LATENT)).shape == (2, 6)  # vectorized particles broadcast
    learned = [n for n, q in p.named_parameters() if q.requires_grad]
    assert bool(learned) == (name != "normal")


def test_mixture_prior_components_and_learned_parameters():
    p = make_vae("mixture", prior_components=4).prior
    assert {n: tuple(q.shape) for n, q in p.named_parameters()} == {
        "logits": (4,),
        "loc": (4, LATENT),
        "log_scale": (4, LATENT),
    }
    assert DEFAULT_COMPONENTS["mixture"] == len(make_vae("mixture").prior.logits)


def test_vamp_prior_is_the_mixture_of_the_encoders_posteriors_at_clipped_pseudo_inputs():
    vae = make_vae("vamp", prior_components=5)
    p = vae.prior
    assert isinstance(p, VampPrior) and p.encoder is vae.encoder  # shared, not a copy
    assert p.pseudo_inputs.shape == (5, *IMAGE) and DEFAULT_COMPONENTS["vamp"] == 500
    with torch.no_grad():
        p.pseudo_inputs[0] = 3.0  # outside [0, 1]: clipped by the hardtanh for Bernoulli data
    u = p.inputs()
    assert u.min() >= 0 and u.max() <= 1 and torch.all(u[0] == 1)
    z = torch.randn(8, LATENT)
    # 1/K sum_k q(z | u_k), one pseudo-input at a time
    per_input = torch.stack(
        [dist.Normal(*vae.encoder(u[k : k + 1])).to_event(1).log_prob(z) for k in range(5)]
    )
    expected = torch.logsumexp(per_input, 0) - math.log(5)
    torch.testing.assert_close(p((8,)).log_prob(z), expected, rtol=1e-5, atol=1e-5)
    # the prior's gradient reaches the pseudo-inputs (where not clipped) and the shared encoder
    p((8,)).log_prob(z).sum().backward()
    assert p.pseudo_inputs.grad[1:].abs().sum() > 0 and torch.all(p.pseudo_inputs.grad[0] == 0)
    assert vae.encoder.head.loc.weight.grad.abs().sum() > 0


def test_vamp_pseudo_inputs_are_unconstrained_for_unbounded_data():
    vae = make_vae("vamp", prior_components=3, likelihood="gaussian")
    assert vae.prior.bounds is None
    with torch.no_grad():
        vae.prior.pseudo_inputs[0] = 3.0
    assert vae.prior.inputs().max() == 3.0


def test_prior_names_and_options_are_checked():
    with pytest.raises(ConfigError, match="unknown prior 'flow'; choose one of: learnable-normal, mixture"):
        prior("flow", LATENT)
    with pytest.raises(ConfigError, match="no components"):
        make_vae("normal", prior_components=3)
    with pytest.raises(ConfigError, match="at least one component"):
        prior("mixture", LATENT, num_components=0)
    with pytest.raises(ConfigError, match=r"prior_components \(--prior-components\) must be an integer >= 1"):
        make_vae("mixture", prior_components=0)
    with pytest.raises(ConfigError, match="needs the model's encoder"):
        prior("vamp", LATENT)
    with pytest.raises(ConfigError, match="prior given by name"):
        pyrovae.VAE(IMAGE, latent_dim=LATENT, prior=prior("mixture", LATENT), prior_components=3)


@pytest.mark.parametrize("name", ["learnable-normal", "mixture", "vamp"])
def test_learned_priors_train_and_round_trip_through_the_state_dict(name):
    vae = make_vae(name, prior_components=4 if name != "learnable-normal" else None)
    x = torch.bernoulli(torch.full((20, *IMAGE), 0.3), generator=torch.Generator().manual_seed(0))
    before = {n: q.detach().clone() for n, q in vae.prior.named_parameters()}
    trainer = Trainer(vae, 20, lr=1e-2)
    pyro.set_rng_seed(0)
    losses = [trainer.step(x) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(before[n], q) for n, q in vae.prior.named_parameters())
    copy = make_vae(name, prior_components=4 if name != "learnable-normal" else None)
    copy.load_state_dict(vae.state_dict())
    z = torch.randn(5, LATENT)
    torch.testing.assert_close(copy.prior((5,)).log_prob(z), vae.prior((5,)).log_prob(z))


class LinearGaussianEncoder(nn.Module):
    """``x -> (A x + c, s)``: a linear Gaussian encoder, the VampPrior's components below."""

    def __init__(self, data_dim: int, latent_dim: int, scale: float):
        super().__init__()
        self.linear = nn.Linear(data_dim, latent_dim)
        self.scale = scale

    def forward(self, x):
        loc = self.linear(x)
        return loc, torch.full_like(loc, self.scale)


@pytest.mark.parametrize("name", ["mixture", "vamp"])
def test_log_likelihood_of_a_linear_gaussian_decoder_with_a_mixture_prior_is_the_exact_marginal(name):
    r"""With :math:`z \sim \sum_k \pi_k \mathcal N(\mu_k, S_k)`, :math:`S_k` diagonal, and
    :math:`x \mid z \sim \mathcal N(Wz + b, \sigma^2 I)`, the marginal is the Gaussian mixture
    :math:`\sum_k \pi_k \mathcal N(x; W\mu_k + b, C_k)`, :math:`C_k = W S_k W^\top + \sigma^2 I`, and
    the posterior the mixture :math:`\sum_k \pi_k(x)\, \mathcal N(z; m_k(x), P_k^{-1})` with
    :math:`P_k = S_k^{-1} + W^\top W / \sigma^2`,
    :math:`m_k = P_k^{-1}(S_k^{-1}\mu_k + W^\top(x - b)/\sigma^2)` and
    :math:`\pi_k(x) \propto \pi_k \mathcal N(x; W\mu_k + b, C_k)`. With that exact posterior as the
    guide every importance weight is :math:`p(x)`: the estimate must be exact."""
    data_dim, latent_dim, sigma = 4, 2, 0.5
    torch.manual_seed(1)
    if name == "mixture":
        p = prior("mixture", latent_dim, num_components=3)
    else:
        p = VampPrior(LinearGaussianEncoder(data_dim, latent_dim, scale=0.8), (data_dim,), 3, None)
    with torch.no_grad():
        for param in p.parameters():
            param.normal_()
    vae = pyrovae.VAE(
        data_dim, latent_dim=latent_dim, hidden=(), likelihood="gaussian", likelihood_scale=sigma, prior=p
    )
    (decoder,) = vae.decoder.net  # with no hidden layers, the linear map z -> W z + b
    x = torch.randn(6, data_dim)

    with torch.no_grad():
        mixture = p(())
        W, b = decoder.weight.double(), decoder.bias.double()
        mu, var = mixture.loc.double(), mixture.scale.double() ** 2  # (K, d)
        log_pi = torch.log_softmax(mixture.logits.double(), -1)
    cov = W @ torch.diag_embed(var) @ W.T + sigma**2 * torch.eye(data_dim, dtype=torch.float64)
    evidence = dist.MultivariateNormal(mu @ W.T + b, covariance_matrix=cov)  # (K,) components
    post_cov = torch.linalg.inv(torch.diag_embed(1 / var) + W.T @ W / sigma**2)  # (K, d, d)

    def exact_guide(x):
        x = x.double()
        rhs = (mu / var) + ((x - b) @ W / sigma**2).unsqueeze(-2)  # (N, K, d)
        post_loc = (post_cov @ rhs.unsqueeze(-1)).squeeze(-1)
        post_logits = log_pi + evidence.log_prob(x.unsqueeze(-2))  # (N, K)
        components = dist.MultivariateNormal(post_loc.float(), covariance_matrix=post_cov.float())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MixtureSameFamily(dist.Categorical(logits=post_logits.float()), components))

    exact = torch.logsumexp(log_pi + evidence.log_prob(x.double().unsqueeze(-2)), -1)
    ll = pyrovae.log_likelihood(vae.model, exact_guide, x, 200, seed=0, progress=False)
    # float32 log-weights of magnitude ~10: exact to rounding
    torch.testing.assert_close(torch.as_tensor(ll.log_px, dtype=torch.float64), exact, rtol=0, atol=2e-4)
    assert float(torch.as_tensor(ll.log_px_se).max()) < 1e-3  # every weight is p(x)
