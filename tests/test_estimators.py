"""Estimators by name, and TraceELBO's lean path against Pyro's Trace_ELBO, draw for draw."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.estimators import ESTIMATORS, TraceELBO
from pyrovae.handlers import scale_data, scale_latents

SEEDS = range(6)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return pyrovae.VAE((1, 8, 8), latent_dim=4, hidden=(32,))


@pytest.fixture(scope="module")
def x():
    return pyrovae.load("digits", "train").batch(torch.arange(40), generator=torch.Generator().manual_seed(0))


class Discrete(torch.nn.Module):
    """A model/guide pair whose guide has a Bernoulli site (no reparameterization) and a Normal one."""

    def __init__(self):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(-0.2))
        self.loc = torch.nn.Parameter(torch.tensor(0.3))
        self.shift = torch.nn.Parameter(torch.tensor(1.5))

    def model(self, x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.4))
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + self.shift * c, 0.5), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(logits=self.logit + 0.1 * x))
            pyro.sample("z", dist.Normal(self.loc + 0.5 * x, 0.8))


class Spy:
    """Counts calls of Pyro's trace generator, which only Pyro's own path uses."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = Trace_ELBO._get_traces

        def counted(elbo, *args, **kwargs):
            self.calls += 1
            yield from original(elbo, *args, **kwargs)

        monkeypatch.setattr(Trace_ELBO, "_get_traces", counted)


def loss_and_grads(elbo, module, x, seed, handlers=()):
    module.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    fn = elbo.differentiable_loss
    for handler in handlers:
        fn = handler(fn)
    loss = fn(module.model, module.guide, x)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in module.named_parameters()}


def test_estimator_by_name():
    assert type(pyrovae.estimator("elbo")) is TraceELBO
    assert isinstance(pyrovae.estimator("elbo"), Trace_ELBO)
    assert type(pyrovae.estimator("elbo-analytic-kl")) is TraceMeanField_ELBO
    elbo = pyrovae.estimator("elbo", num_particles=3, vectorize_particles=True)
    assert elbo.num_particles == 3 and elbo.vectorize_particles
    instance = Trace_ELBO()
    assert pyrovae.estimator(instance) is instance


def test_unknown_estimator_and_option_are_config_errors_listing_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        pyrovae.estimator("iwae")
    assert "'iwae'" in str(err.value)
    for name in ESTIMATORS:
        assert name in str(err.value)
    with pytest.raises(ConfigError) as err:
        pyrovae.estimator("elbo", particles=3)
    assert "particles" in str(err.value)
    assert "num_particles, vectorize_particles" in str(err.value)
    with pytest.raises(ConfigError, match="instance"):
        pyrovae.estimator(Trace_ELBO(), num_particles=2)


@pytest.mark.parametrize("validation", [False, True], ids=["lean", "pyro"])
def test_vae_loss_and_gradients_equal_pyros_trace_elbo(vae, x, validation, monkeypatch):
    spy = Spy(monkeypatch)
    for seed in SEEDS:
        with pyro.validation_enabled(validation):
            before = spy.calls
            ours, our_grads = loss_and_grads(TraceELBO(), vae, x, seed)
            # the lean path never calls Pyro's trace generator; Pyro's path always does
            assert spy.calls - before == (1 if validation else 0)
            theirs, their_grads = loss_and_grads(Trace_ELBO(), vae, x, seed)
        assert torch.equal(ours, theirs), (seed, ours.item(), theirs.item())
        for name in our_grads:
            assert torch.equal(our_grads[name], their_grads[name]), (seed, name)


def test_vae_loss_equals_pyros_under_the_training_handlers(vae, x, monkeypatch):
    """What Trainer.step computes: minibatch scale N/B and a KL weight beta."""
    handlers = (scale_data(scale=1197 / len(x)), scale_latents(beta=0.3))
    for seed in SEEDS:
        with pyro.validation_enabled(False):
            ours, our_grads = loss_and_grads(TraceELBO(), vae, x, seed, handlers)
            theirs, their_grads = loss_and_grads(Trace_ELBO(), vae, x, seed, handlers)
        assert torch.equal(ours, theirs)
        for name in our_grads:
            assert torch.equal(our_grads[name], their_grads[name])


@pytest.mark.parametrize("validation", [False, True], ids=["lean", "pyro"])
def test_vae_non_differentiable_loss_equals_pyros(vae, x, validation):
    for seed in SEEDS:
        with pyro.validation_enabled(validation):
            pyro.set_rng_seed(seed)
            ours = TraceELBO().loss(vae.model, vae.guide, x)
            pyro.set_rng_seed(seed)
            theirs = Trace_ELBO().loss(vae.model, vae.guide, x)
        assert isinstance(ours, float) and ours == theirs


@pytest.mark.parametrize("validation", [False, True], ids=["fallback", "pyro"])
def test_non_reparameterized_guide_gets_pyros_surrogate(validation, monkeypatch):
    torch.manual_seed(0)
    module = Discrete()
    x = torch.randn(30, generator=torch.Generator().manual_seed(3))
    spy = Spy(monkeypatch)
    for seed in SEEDS:
        with pyro.validation_enabled(validation):
            before = spy.calls
            ours, our_grads = loss_and_grads(TraceELBO(), module, x, seed)
            assert spy.calls - before == (1 if validation else 0)
            theirs, their_grads = loss_and_grads(Trace_ELBO(), module, x, seed)
        assert torch.equal(ours, theirs), (seed, ours.item(), theirs.item())
        for name in our_grads:
            assert torch.equal(our_grads[name], their_grads[name]), (seed, name)
        # the score-function term reaches the Bernoulli's parameter
        assert our_grads["logit"] != 0


def test_several_particles_are_pyros_code(vae, x):
    for vectorize in (False, True):
        ours = TraceELBO(num_particles=3, vectorize_particles=vectorize)
        theirs = Trace_ELBO(num_particles=3, vectorize_particles=vectorize)
        with pyro.validation_enabled(False):
            a, grads_a = loss_and_grads(ours, vae, x, 0)
            b, grads_b = loss_and_grads(theirs, vae, x, 0)
        assert torch.equal(a, b)
        for name in grads_a:
            assert torch.equal(grads_a[name], grads_b[name])


def test_estimators_are_pyro_elbos_usable_as_modules(vae, x):
    for name in ESTIMATORS:
        elbo = pyrovae.estimator(name)
        assert isinstance(elbo, ELBO)
        pyro.set_rng_seed(0)
        with pyro.validation_enabled(False):
            loss = elbo(vae.model, vae.guide)(x)
        assert loss.requires_grad and torch.isfinite(loss)
