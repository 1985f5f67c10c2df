"""The estimators of Rainforth et al. (2018): MIWAE, PIWAE and CIWAE, against IWAE, the ELBO and
each other on the same draws."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from test_estimators import loss_and_grads
from toy_models import LearnablePPCA

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.estimators import CIWAE, IWAE, MIWAE, PIWAE, KLAnnealed, Renyi
from pyrovae.handlers import scale_data, scale_latents

MODEL_PARAMS, GUIDE_PARAMS = ("W", "b"), ("gain", "offset", "tril")


@pytest.fixture(scope="module")
def ppca_data(make_ppca):
    return make_ppca(20)


@pytest.fixture
def module(ppca_data):
    return LearnablePPCA(ppca_data[0], shift=0.5)


@pytest.fixture(scope="module")
def digits():
    return pyrovae.load("digits", "train").batch(torch.arange(40), generator=torch.Generator().manual_seed(0))


def assert_equal(ours, theirs, names=None):
    """Two ``loss_and_grads`` results are bit-for-bit equal (the gradients of ``names``, or all)."""
    (our_loss, our_grads), (their_loss, their_grads) = ours, theirs
    assert torch.equal(our_loss, their_loss), (our_loss.item(), their_loss.item())
    for name in names or our_grads:
        assert torch.equal(our_grads[name], their_grads[name]), name


def assert_close(ours, theirs, names):
    for name in names:
        assert torch.allclose(ours[name], theirs[name], rtol=1e-10, atol=1e-12), name


class Recorder:
    """A guide that remembers the trace of its last run."""

    def __init__(self, guide):
        self.guide, self.trace = guide, None

    def __call__(self, *args, **kwargs):
        self.trace = poutine.trace(self.guide).get_trace(*args, **kwargs)


def test_by_name_spec_and_class():
    miwae = pyrovae.estimator("miwae:k=3:m=4")
    assert type(miwae) is MIWAE and (miwae.k, miwae.m, miwae.num_particles) == (3, 4, 12)
    piwae = pyrovae.estimator("piwae", k=2, m=5)
    assert type(piwae) is PIWAE and (piwae.k, piwae.m, piwae.num_particles) == (2, 5, 10)
    ciwae = pyrovae.estimator("ciwae:k=7:mix=0.25")
    assert type(ciwae) is CIWAE and (ciwae.k, ciwae.mix) == (7, 0.25)
    # the defaults: Rainforth et al.'s MIWAE(8, 8), PIWAE(8, 8), CIWAE with 64 particles and 0.05
    assert (MIWAE().k, MIWAE().m, PIWAE().k, PIWAE().m) == (8, 8, 8, 8)
    assert (CIWAE().k, CIWAE().mix) == (64, 0.05)
    annealed = pyrovae.estimator("ciwae:k=3:mix=0.5:beta=0.3")
    assert type(annealed) is KLAnnealed and annealed.beta == 0.3 and annealed.base.mix == 0.5
    assert pyrovae.MIWAE is MIWAE and pyrovae.PIWAE is PIWAE and pyrovae.CIWAE is CIWAE


@pytest.mark.parametrize(
    "spec, match",
    [
        (
            "ciwae:mix=2",
            r"mix, the weight of the ELBO in 'ciwae', must be a number with 0 <= mix <= 1; got 2",
        ),
        ("ciwae:mix=-0.5", r"0 <= mix <= 1; got -0.5"),
        ("ciwae:mix=nan", r"0 <= mix <= 1; got nan"),
        ("ciwae:mix=true", r"0 <= mix <= 1; got True"),
        ("ciwae:k=0", r"k, the number of particles of 'ciwae', must be a positive integer; got 0"),
        ("miwae:m=0", r"m, the number of groups of 'miwae', must be a positive integer; got 0"),
        ("piwae:m=2.5", r"m, the number of groups of 'piwae', must be a positive integer; got 2.5"),
        ("miwae:k=0", r"k, the number of particles per group of 'miwae', must be a positive integer"),
        ("miwae:alpha=1", r"estimator 'miwae' takes no option alpha; it accepts: k, m, beta"),
        ("ciwae:beta=0.5:m=2", r"estimator 'ciwae' takes no option m; it accepts: k, mix, beta"),
    ],
)
def test_bad_options_are_config_errors_naming_them(spec, match):
    with pytest.raises(ConfigError, match=match):
        pyrovae.estimator(spec)


def test_miwae_with_one_group_is_iwae(ppca_data, module):
    x = ppca_data[1]
    assert_equal(loss_and_grads(MIWAE(k=5, m=1), module, x), loss_and_grads(IWAE(k=5), module, x))
    pyro.set_rng_seed(1)
    value = MIWAE(k=5, m=1).loss(module.model, module.guide, x)
    pyro.set_rng_seed(1)
    assert value == IWAE(k=5).loss(module.model, module.guide, x)


def test_miwae_with_one_particle_per_group_is_the_elbo_of_m_particles(ppca_data, module):
    # Renyi at alpha = 1 is the mean of the log-weights: the ELBO estimated with its k draws
    x = ppca_data[1]
    assert_equal(loss_and_grads(MIWAE(k=1, m=6), module, x), loss_and_grads(Renyi(alpha=1.0, k=6), module, x))


def test_miwae_is_the_mean_over_groups_of_their_iwae_bounds(ppca_data, module):
    x = ppca_data[1]
    recorded = Recorder(module.guide)
    pyro.set_rng_seed(0)
    value = MIWAE(k=3, m=4).loss(module.model, recorded, x)
    z = recorded.trace.nodes["z"]["value"]  # (m k, B, d), particle (m - 1) k + j in group m
    log_w = module.log_likelihood_term(x, z) + dist.Normal(torch.zeros_like(z), 1.0).log_prob(z).sum(-1)
    log_w = (log_w - recorded.trace.nodes["z"]["fn"].log_prob(z)).reshape(4, 3, len(x))
    expected = (torch.logsumexp(log_w, 1) - math.log(3)).mean(0).sum()
    assert value == pytest.approx(-expected.item(), rel=1e-12)
    # in expectation the IWAE-3 bound: below IWAE-12's and above the ELBO's, on these draws too
    iwae = torch.logsumexp(log_w.flatten(0, 1), 0) - math.log(12)
    elbo = log_w.mean((0, 1))
    assert elbo.sum() < expected < iwae.sum()


def test_ciwae_at_mix_one_is_the_elbo_and_at_zero_iwae(ppca_data, module):
    x = ppca_data[1]
    elbo, iwae = loss_and_grads(Renyi(alpha=1.0, k=4), module, x), loss_and_grads(IWAE(k=4), module, x)
    assert_equal(loss_and_grads(CIWAE(k=4, mix=1), module, x), elbo)
    assert_equal(loss_and_grads(CIWAE(k=4, mix=0), module, x), iwae)
    # in between: the mixture of the two, bound and gradient, on the same draws
    loss, grads = loss_and_grads(CIWAE(k=4, mix=0.3), module, x)
    assert loss.item() == pytest.approx(0.3 * elbo[0].item() + 0.7 * iwae[0].item(), rel=1e-12)
    assert_close(grads, {n: 0.3 * elbo[1][n] + 0.7 * iwae[1][n] for n in grads}, list(grads))


@pytest.mark.parametrize(
    "handlers",
    [(), (scale_data(scale=7.5), scale_latents(beta=0.3))],
    ids=["plain", "minibatch-scale-and-beta"],
)
def test_piwae_trains_the_model_on_iwae_mk_and_the_guide_on_miwae(ppca_data, module, handlers):
    x = ppca_data[1]
    piwae = loss_and_grads(PIWAE(k=3, m=4), module, x, handlers=handlers)
    iwae = loss_and_grads(IWAE(k=12), module, x, handlers=handlers)  # the same 12 draws
    miwae = loss_and_grads(MIWAE(k=3, m=4), module, x, handlers=handlers)
    # its loss is the negative IWAE-12 bound
    assert torch.equal(piwae[0], iwae[0])
    assert_close(piwae[1], iwae[1], MODEL_PARAMS)
    assert_close(piwae[1], miwae[1], GUIDE_PARAMS)
    # and the two estimators' gradients differ, for both groups of parameters
    for name in (*MODEL_PARAMS, *GUIDE_PARAMS):
        assert not torch.allclose(iwae[1][name], miwae[1][name], rtol=1e-3), name
    pyro.set_rng_seed(2)
    value = PIWAE(k=3, m=4).loss(module.model, module.guide, x)
    pyro.set_rng_seed(2)
    assert value == IWAE(k=12).loss(module.model, module.guide, x)


@pytest.mark.parametrize("spec", ["miwae:k=2:m=3", "piwae:k=2:m=3", "ciwae:k=4:mix=0.3"])
def test_the_minibatch_scale_multiplies_the_bound_and_beta_enters_the_weights(ppca_data, module, spec):
    x = ppca_data[1]
    loss, grads = loss_and_grads(pyrovae.estimator(spec), module, x)
    scaled, scaled_grads = loss_and_grads(
        pyrovae.estimator(spec), module, x, handlers=(scale_data(scale=7.5),)
    )
    assert scaled.item() == pytest.approx(7.5 * loss.item(), rel=1e-12)
    assert_close(scaled_grads, {n: 7.5 * g for n, g in grads.items()}, list(grads))
    beta, _ = loss_and_grads(pyrovae.estimator(spec, beta=0.3), module, x)
    both, _ = loss_and_grads(
        pyrovae.estimator(spec), module, x, handlers=(scale_data(scale=7.5), scale_latents(beta=0.3))
    )
    assert both.item() == pytest.approx(7.5 * beta.item(), rel=1e-12)
    assert beta.item() != pytest.approx(loss.item(), rel=1e-3)


@pytest.mark.parametrize(
    "spec", ["miwae:k=2:m=2", "piwae:k=2:m=2", "ciwae:k=3:mix=0.5", "piwae:k=2:m=2:beta=0.5"]
)
def test_each_trains_the_vae(digits, spec):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=4, hidden=(32,))
    before = [p.detach().clone() for p in vae.parameters()]
    result = pyrovae.fit(vae, digits, epochs=3, batch_size=10, estimator=spec, progress=False)
    losses = result.history["train_loss"].to_numpy()
    assert len(losses) == 3 and all(map(math.isfinite, losses))
    assert losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.parameters(), strict=True))


def test_compare_on_the_same_draws(ppca_data, module):
    x = ppca_data[1]
    specs = ["iwae:k=4", "miwae:k=2:m=2", "piwae:k=2:m=2", "ciwae:k=3:mix=0.5"]
    table = pyrovae.compare(module.model, module.guide, x, specs, num_repeats=3, progress=False).table
    assert list(table.index) == specs and table.notna().all().all()
    # each estimator draws with the same seed: PIWAE's bound is IWAE-4's, its model gradient
    # IWAE-4's and its guide gradient MIWAE's
    assert table.loc["piwae:k=2:m=2", "bound"] == table.loc["iwae:k=4", "bound"]
    assert table.loc["piwae:k=2:m=2", "model_grad_var"] == pytest.approx(
        table.loc["iwae:k=4", "model_grad_var"], rel=1e-8
    )
    assert table.loc["piwae:k=2:m=2", "guide_grad_var"] == pytest.approx(
        table.loc["miwae:k=2:m=2", "guide_grad_var"], rel=1e-8
    )
    assert table.loc["miwae:k=2:m=2", "bound"] < table.loc["iwae:k=4", "bound"]


@pytest.mark.parametrize("kind", [pyrovae.VAE, pyrovae.HVAE], ids=["vae", "hvae"])
def test_piwae_splits_the_gradient_of_a_vae_between_decoder_and_encoder(digits, kind):
    # the HVAE's guide q(z2 | x) q(z1 | x, z2) has a second latent that depends on the first draw
    torch.manual_seed(0)
    vae = kind((1, 8, 8), latent_dim=4, hidden=(16,)).double()
    x = digits[:12].double()
    with pyro.validation_enabled(False):
        piwae = loss_and_grads(PIWAE(k=2, m=3), vae, x)
        iwae = loss_and_grads(IWAE(k=6), vae, x)
        miwae = loss_and_grads(MIWAE(k=2, m=3), vae, x)
    assert torch.equal(piwae[0], iwae[0])
    model = [n for n in piwae[1] if not n.startswith("encoder")]
    guide = [n for n in piwae[1] if n.startswith("encoder")]
    assert model and guide and len(model) + len(guide) == len(list(vae.parameters()))
    assert_close(piwae[1], iwae[1], model)
    assert_close(piwae[1], miwae[1], guide)


@pytest.mark.parametrize("name", ["miwae", "piwae", "ciwae"])
def test_a_discrete_latent_is_refused_naming_it(name):
    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.4))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(0.5))

    with pytest.raises(ConfigError, match=rf"'{name}' estimator needs reparameterized latents.*site 'c'"):
        pyrovae.estimator(name).differentiable_loss(model, guide, torch.zeros(3))
