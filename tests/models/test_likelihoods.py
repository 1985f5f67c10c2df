"""Likelihoods: densities against torch.distributions, support checks, and training with each."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td

import pyrovae
from pyrovae.errors import ConfigError, DataError
from pyrovae.models.likelihoods import LIKELIHOODS, Likelihood, likelihood

EVENT = (1, 4, 4)
SCALE = 0.7
LEVELS = 17
#: every likelihood by name, with the options it needs
SPECS = [f"binomial:levels={LEVELS}" if name == "binomial" else name for name in LIKELIHOODS]


@pytest.fixture
def params() -> torch.Tensor:
    return torch.randn(6, *EVENT, generator=torch.Generator().manual_seed(0))


def data_for(name: str, shape=(6, *EVENT), seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "bernoulli":
        return torch.bernoulli(torch.full(shape, 0.5), generator=g)
    if name.startswith("binomial"):
        return torch.randint(0, LEVELS, shape, generator=g) / (LEVELS - 1)
    if name == "continuous-bernoulli":
        return torch.rand(shape, generator=g)
    return torch.randn(shape, generator=g) * 3


def reference(name: str, params: torch.Tensor) -> td.Distribution:
    if name == "bernoulli":
        return td.Bernoulli(logits=params)
    if name.startswith("binomial"):
        return td.Binomial(LEVELS - 1, logits=params)
    if name == "continuous-bernoulli":
        return td.ContinuousBernoulli(logits=params)
    return td.Normal(params, torch.full_like(params, SCALE))


@pytest.mark.parametrize("name", SPECS)
def test_log_prob_and_mean_match_torch_distributions(name, params):
    lik = likelihood(name, EVENT, SCALE)
    assert isinstance(lik, Likelihood) and lik.name in name
    x = data_for(name)
    d = lik(params)
    assert d.batch_shape == params.shape
    ref = reference(name, params)
    counts = LEVELS - 1 if name.startswith("binomial") else 1  # the binomial counts grey levels
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x * counts), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lik.mean(params), ref.mean / counts, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(d.mean, ref.mean / counts, rtol=1e-6, atol=1e-6)


def test_gaussian_fixed_scale_is_a_buffer_and_learned_scale_a_parameter():
    fixed = likelihood("gaussian", EVENT, SCALE)
    assert list(fixed.parameters()) == []
    assert "log_scale" in dict(fixed.named_buffers())
    learned = likelihood("gaussian-learned", EVENT, SCALE)
    (name, log_scale), *rest = learned.named_parameters()
    assert name == "log_scale" and not rest
    assert log_scale.shape == EVENT  # one scale per data dimension
    torch.testing.assert_close(log_scale.detach(), torch.full(EVENT, math.log(SCALE)))


def test_learned_gaussian_scale_receives_gradient_in_a_vae():
    torch.manual_seed(0)
    vae = pyrovae.VAE(
        EVENT, latent_dim=2, hidden=(32,), likelihood="gaussian-learned", likelihood_scale=SCALE
    )
    log_scale = vae.likelihood.log_scale
    trainer = pyrovae.Trainer(vae, num_data=6)
    assert any(p is log_scale for p in trainer.params)
    before = log_scale.detach().clone()
    trainer.step(data_for("gaussian"))
    assert log_scale.grad is not None and log_scale.grad.abs().sum() > 0
    assert not torch.equal(log_scale.detach(), before)
    # the density under the learned scale is Normal(params, exp(log_scale))
    p = torch.randn(2, *EVENT)
    x = data_for("gaussian", (2, *EVENT))
    expected = td.Normal(p, log_scale.exp()).log_prob(x)
    torch.testing.assert_close(vae.likelihood(p).log_prob(x), expected)


def test_unknown_likelihood_lists_the_valid_names():
    with pytest.raises(ConfigError) as err:
        likelihood("poisson")
    for name in LIKELIHOODS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", SPECS)
def test_check_accepts_data_in_the_support(name):
    likelihood(name, EVENT).check(data_for(name))


def test_bernoulli_check_rejects_non_binary_data_and_names_the_fix():
    x = data_for("bernoulli")
    x[0, 0, 0, 0] = 0.5
    with pytest.raises(DataError) as err:
        likelihood("bernoulli").check(x, "the training data")
    message = str(err.value)
    assert "the training data" in message and "not binary" in message
    assert "binarize" in message and "continuous-bernoulli" in message


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_continuous_bernoulli_check_rejects_values_outside_the_unit_interval(value):
    x = data_for("continuous-bernoulli")
    x[1, 0, 2, 3] = value
    with pytest.raises(DataError) as err:
        likelihood("continuous-bernoulli").check(x)
    message = str(err.value)
    assert "[0, 1]" in message and "Rescale" in message and "gaussian" in message


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_likelihood_rejects_nan_and_inf(name, bad):
    x = data_for(name)
    x[2, 0, 1, 1] = bad
    with pytest.raises(DataError) as err:
        likelihood(name, EVENT).check(x, "the validation data")
    message = str(err.value)
    assert "the validation data" in message and "1 NaN or infinite" in message
    assert "nan_to_num" in message


@pytest.fixture(scope="module")
def digits(load_digits):
    # grey levels in [0, 1] for the continuous likelihoods; dynamically binarized for Bernoulli
    return {"grey": load_digits("train", binarize=None), "binary": load_digits("train")}


@pytest.mark.parametrize("name", SPECS)
def test_a_vae_with_each_likelihood_trains(name, digits):
    data = digits["binary" if name == "bernoulli" else "grey"]  # the digits have 17 grey levels
    torch.manual_seed(0)
    vae = pyrovae.VAE(data.event_shape, latent_dim=2, hidden=(32,), likelihood=name, likelihood_scale=0.5)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    result = pyrovae.fit(vae, data, epochs=3, batch_size=200, lr=3e-3, seed=0, progress=False)
    losses = result.history["train_loss"]
    assert losses.notna().all() and torch.isfinite(torch.tensor(losses.to_numpy())).all()
    assert losses.iloc[-1] < losses.iloc[0]
    changed = [k for k, v in vae.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder") for k in changed) and any(k.startswith("decoder") for k in changed)
    assert ("likelihood.log_scale" in changed) == (name == "gaussian-learned")


def test_binomial_is_a_distribution_on_the_grey_levels():
    lik = likelihood(f"binomial:levels={LEVELS}")
    params = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    grid = torch.arange(LEVELS).view(-1, 1, 1) / (LEVELS - 1)
    d = lik(params)
    # the probabilities of the L levels sum to one at every pixel: a pmf, not a density
    torch.testing.assert_close(d.log_prob(grid).exp().sum(0), torch.ones(3, 5), rtol=1e-6, atol=1e-6)
    torch.manual_seed(0)
    draws = d.sample((4000,))
    assert draws.shape == (4000, 3, 5)
    lik.check(draws)  # every draw is on the grid
    # the draws' mean is the distribution's mean, within 4 standard errors (fixed seed)
    se = (d.variance / len(draws)).sqrt()
    assert ((draws.mean(0) - d.mean).abs() < 4 * se).all()
    squares = (draws - d.mean) ** 2  # the variance likewise, with the squares' standard error
    assert ((squares.mean(0) - d.variance).abs() < 4 * squares.std(0) / len(draws) ** 0.5).all()
    # with two levels it is the Bernoulli
    x = torch.bernoulli(torch.full((3, 5), 0.5), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        likelihood("binomial:levels=2")(params).log_prob(x), td.Bernoulli(logits=params).log_prob(x)
    )


def test_clamped_bernoulli_is_the_vampprior_authors_log_bernoulli():
    # their utils/distributions.py: x log p + (1 - x) log(1 - p), p = clamp(sigmoid(logits), eps, 1 - eps)
    eps = 1e-5
    logits = torch.linspace(-30, 30, 121, dtype=torch.float64, requires_grad=True)
    x = (torch.arange(121) % 2).double()
    lik = likelihood(f"bernoulli:clamp={eps}")
    p = torch.sigmoid(logits).clamp(eps, 1 - eps)
    torch.testing.assert_close(lik(logits).log_prob(x), x * p.log() + (1 - x) * (1 - p).log())
    torch.testing.assert_close(lik.mean(logits), p)
    # a pixel costs at most -log(eps) nats, and a logit beyond the clamp gets no gradient, as theirs
    assert lik(logits).log_prob(1 - (logits > 0).double()).min() >= math.log(eps) - 1e-9
    (grad,) = torch.autograd.grad(lik(logits).log_prob(x).sum(), logits)
    beyond = logits.detach().abs() > math.log((1 - eps) / eps)
    assert beyond.sum() > 0 and (grad[beyond] == 0).all() and (grad[~beyond] != 0).all()
    # clamp 0 is the plain Bernoulli, and so is the default
    assert likelihood("bernoulli:clamp=0").max_logit == math.inf and likelihood("bernoulli").clamp == 0
    assert "clamp=1e-05" in repr(lik)
    # in float32, as models train: the same bound on every pixel's cost, no gradient beyond the clamp
    logits32 = logits.detach().float().requires_grad_()
    log_p = lik(logits32).log_prob(x.float())
    torch.testing.assert_close(log_p.double(), lik(logits.detach()).log_prob(x), rtol=0, atol=2e-5)
    (grad32,) = torch.autograd.grad(log_p.sum(), logits32)
    assert (grad32[beyond] == 0).all() and (grad32[~beyond] != 0).all()


@pytest.mark.parametrize("value", [-1 / 16, 0.5 / 16, 17 / 16])
def test_binomial_check_rejects_data_off_its_grid_and_names_the_levels(value):
    x = data_for("binomial")
    x[0, 0, 1, 2] = value
    with pytest.raises(DataError) as err:
        likelihood("binomial:levels=17").check(x, "the training data")
    message = str(err.value)
    assert "the training data" in message and "17 grey levels" in message and "levels=L" in message


@pytest.mark.parametrize(
    "spec, words",
    [
        ("binomial", ["binomial:levels=17", "digits"]),
        ("binomial:levels=1", ["levels must be an integer >= 2"]),
        ("binomial:levels=17:scale=2", ["takes one option"]),
        ("bernoulli:levels=3", ["takes one option", "clamp", "levels"]),
        ("bernoulli:clamp=0.5", ["clamp must be a number >= 0 and < 0.5", "0.5"]),
        ("bernoulli:clamp=-1e-5", ["clamp must be"]),
        ("gaussian:clamp=1e-5", ["takes no options", "clamp"]),
        ("binomial:levels", ["OPTION=VALUE", "binomial:levels=17"]),
    ],
)
def test_bad_likelihood_specs_are_config_errors_that_name_the_fix(spec, words):
    with pytest.raises(ConfigError) as err:
        likelihood(spec)
    for word in words:
        assert word in str(err.value)
