"""Estimators by name, and TraceELBO's lean path against Pyro's Trace_ELBO, draw for draw."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, TraceTailAdaptive_ELBO
from toy_models import PPCA, LearnablePPCA, Mixture, TwoLayer, global_latent_guide, global_latent_model

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.estimators import (
    ESTIMATORS,
    IWAE,
    STL,
    DReG,
    KLAnnealed,
    Renyi,
    TailAdaptiveELBO,
    TraceELBO,
    TraceGraphELBO,
)
from pyrovae.handlers import scale_data, scale_latents
from pyrovae.infer.importance import log_likelihood

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


def loss_and_grads(elbo, module, x, seed=0, handlers=()):
    module.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    fn = elbo.differentiable_loss
    for handler in handlers:
        fn = handler(fn)
    loss = fn(module.model, module.guide, x)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_same_loss_and_grads(ours, theirs, seed):
    """Two ``loss_and_grads`` results are bit-for-bit equal."""
    (our_loss, our_grads), (their_loss, their_grads) = ours, theirs
    assert torch.equal(our_loss, their_loss), (seed, our_loss.item(), their_loss.item())
    for name in our_grads:
        assert torch.equal(our_grads[name], their_grads[name]), (seed, name)


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
        pyrovae.estimator("no-such-estimator")
    assert "'no-such-estimator'" in str(err.value)
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
            ours = loss_and_grads(TraceELBO(), vae, x, seed)
            # the lean path never calls Pyro's trace generator; Pyro's path always does
            assert spy.calls - before == (1 if validation else 0)
            theirs = loss_and_grads(Trace_ELBO(), vae, x, seed)
        assert_same_loss_and_grads(ours, theirs, seed)


def test_vae_loss_equals_pyros_under_the_training_handlers(vae, x, monkeypatch):
    """What Trainer.step computes: minibatch scale N/B and a KL weight beta."""
    handlers = (scale_data(scale=1197 / len(x)), scale_latents(beta=0.3))
    for seed in SEEDS:
        with pyro.validation_enabled(False):
            ours = loss_and_grads(TraceELBO(), vae, x, seed, handlers)
            theirs = loss_and_grads(Trace_ELBO(), vae, x, seed, handlers)
        assert_same_loss_and_grads(ours, theirs, seed)


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
            ours = loss_and_grads(TraceELBO(), module, x, seed)
            assert spy.calls - before == (1 if validation else 0)
            theirs = loss_and_grads(Trace_ELBO(), module, x, seed)
        assert_same_loss_and_grads(ours, theirs, seed)
        # the score-function term reaches the Bernoulli's parameter
        assert ours[1]["logit"] != 0


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


# ---------------------------------------------------------------------------------------------
# IWAE, Rényi, STL, DReG, the β wrapper, and Pyro's TraceGraph and tail-adaptive ELBOs


class Recorder:
    """A guide that remembers the trace of its last run, to replay the same draws elsewhere."""

    def __init__(self, guide):
        self.guide, self.trace = guide, None

    def __call__(self, *args, **kwargs):
        self.trace = poutine.trace(self.guide).get_trace(*args, **kwargs)


class PerPoint(torch.nn.Module):
    """PPCA with a non-amortized diagonal guide, its own parameters for every data point, all data
    points equal: the rows of a parameter's gradient are independent draws of one gradient."""

    def __init__(self, num_data: int, shift: float = 0.3, widen: float = 1.3):
        super().__init__()
        self.ppca = PPCA()
        x = self.ppca.sample(1)
        self.x = x.expand(num_data, -1)
        sd = self.ppca.post_cov.diagonal().sqrt()
        self.loc = torch.nn.Parameter((self.ppca.posterior_loc(x) + shift * sd).expand(num_data, -1).clone())
        self.log_scale = torch.nn.Parameter((widen * sd).log().expand(num_data, -1).clone())

    def model(self, x):
        self.ppca.model(x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))


class Hierarchical(torch.nn.Module):
    r""":class:`~tests.models.TwoLayer` with the guide :math:`q(z_1 \mid x)\,q(z_2 \mid z_1)`, whose
    second factor depends on the first latent: at the exact posterior factors (``per_point=False``,
    amortized, full covariances), or with diagonal factors and parameters for every data point."""

    def __init__(self, num_data: int = 1, per_point: bool = False, shift: float = 0.3, widen: float = 1.3):
        super().__init__()
        self.two = two = TwoLayer()
        self.x = two.sample(1).expand(num_data, -1)
        self.per_point = per_point
        self.gain1 = torch.nn.Parameter(two._z1_gain.clone())
        self.offset1 = torch.nn.Parameter(two._z1_prior_term - two._z1_gain @ two.b)
        self.tril1 = torch.nn.Parameter(torch.linalg.cholesky(two.z1_cov))
        self.gain2 = torch.nn.Parameter(two._z2_gain.clone())
        self.offset2 = torch.nn.Parameter(-two._z2_gain @ two.a)
        self.tril2 = torch.nn.Parameter(torch.linalg.cholesky(two.z2_cov))
        if per_point:
            sd1, sd2 = two.z1_cov.diagonal().sqrt(), two.z2_cov.diagonal().sqrt()
            loc1 = self.x[:1] @ two._z1_gain.T + self.offset1.detach() + shift * sd1
            self.loc1 = torch.nn.Parameter(loc1.expand(num_data, -1).clone())
            self.log_scale1 = torch.nn.Parameter((widen * sd1).log().expand(num_data, -1).clone())
            self.loc2 = torch.nn.Parameter((self.offset2.detach() + shift * sd2).expand(num_data, -1).clone())
            self.log_scale2 = torch.nn.Parameter((widen * sd2).log().expand(num_data, -1).clone())

    def model(self, x):
        self.two.model(x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            if self.per_point:
                z1 = pyro.sample("z1", dist.Normal(self.loc1, self.log_scale1.exp()).to_event(1))
                loc2 = z1 @ self.gain2.detach().T + self.loc2
                pyro.sample("z2", dist.Normal(loc2, self.log_scale2.exp()).to_event(1))
            else:
                loc1 = x @ self.gain1.T + self.offset1
                z1 = pyro.sample("z1", dist.MultivariateNormal(loc1, scale_tril=self.tril1.tril()))
                loc2 = z1 @ self.gain2.T + self.offset2
                pyro.sample("z2", dist.MultivariateNormal(loc2, scale_tril=self.tril2.tril()))


@pytest.fixture(scope="module")
def ppca_data(make_ppca):
    return make_ppca(20)


def test_estimators_by_name_spec_and_class():
    assert type(pyrovae.estimator("iwae", k=7)) is IWAE and pyrovae.estimator("iwae", k=7).k == 7
    renyi = pyrovae.estimator("renyi:alpha=0.25:k=3")
    assert type(renyi) is Renyi and (renyi.alpha, renyi.k) == (0.25, 3)
    assert pyrovae.estimator("stl").k == 1 and type(pyrovae.estimator("dreg")) is DReG
    assert type(pyrovae.estimator("tracegraph")) is TraceGraphELBO
    assert type(pyrovae.estimator("tail-adaptive", num_particles=4)) is TailAdaptiveELBO
    annealed = pyrovae.estimator("iwae", k=5, beta=0.5)
    assert type(annealed) is KLAnnealed and annealed.beta == 0.5 and type(annealed.base) is IWAE
    assert pyrovae.estimator("elbo:num_particles=2:vectorize_particles=true").vectorize_particles
    for name in ESTIMATORS:
        assert isinstance(pyrovae.estimator(name, beta=0.3), KLAnnealed)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("iwae:alpha=0.5", "takes no option alpha; it accepts: k, beta"),
        ("dreg:k=0", "positive integer"),
        ("iwae:k=2.5", "positive integer"),
        ("iwae:k", "OPTION=VALUE"),
        ("iwae:k=2:k=3", "twice"),
        ("renyi:alpha=nan", "finite"),
        ("elbo:beta=-1", "beta"),
        ("iwae:k=five", "not a number"),
    ],
)
def test_bad_estimator_options_are_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        pyrovae.estimator(spec)


def test_iwae_loss_is_the_iwae_bound_of_log_likelihoods_weights_on_the_same_draws(ppca_data):
    ppca, x = ppca_data
    guide = Recorder(ppca.diagonal_guide())
    ll = log_likelihood(
        ppca.model,
        guide,
        x,
        8,
        batch_size=len(x),
        particle_batch_size=8,
        return_log_weights=True,
        progress=False,
    )
    bound = (torch.logsumexp(ll.log_weights, -1) - math.log(8)).sum()
    replayed = poutine.replay(guide.guide, trace=guide.trace)
    iwae = IWAE(k=8)
    assert iwae.loss(ppca.model, replayed, x) == pytest.approx(-bound.item(), rel=1e-12)
    assert iwae.differentiable_loss(ppca.model, replayed, x).item() == pytest.approx(-bound.item(), rel=1e-12)
    # and the bound lies below the exact log p(x)
    assert -iwae.loss(ppca.model, ppca.diagonal_guide(), x) < ppca.log_px(x).sum()


def test_renyi_at_alpha_zero_is_iwae_and_at_one_the_elbo(ppca_data):
    ppca, x = ppca_data
    module = LearnablePPCA(ppca, shift=0.5)
    loss, grads = loss_and_grads(IWAE(k=6), module, x)
    renyi_loss, renyi_grads = loss_and_grads(Renyi(alpha=0.0, k=6), module, x)
    assert torch.equal(loss, renyi_loss)
    for name in grads:
        assert torch.equal(grads[name], renyi_grads[name])
    recorded = Recorder(module.guide)
    pyro.set_rng_seed(0)
    value = Renyi(alpha=1.0, k=6).loss(module.model, recorded, x)
    z = recorded.trace.nodes["z"]["value"]
    zeros = torch.zeros(2, dtype=z.dtype)
    log_w = module.log_likelihood_term(x, z) + dist.Normal(zeros, 1.0).log_prob(z).sum(-1)
    log_w = log_w - recorded.trace.nodes["z"]["fn"].log_prob(z)
    assert value == pytest.approx(-log_w.mean(0).sum().item(), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_on_one_data_point_loss_and_gradients_equal_pyros_renyi_elbo(ppca_data, alpha):
    """Pyro's RenyiELBO sums log-weights over the batch: with one data point the bounds agree."""
    ppca, x = ppca_data
    module = LearnablePPCA(ppca, shift=0.5)

    def model(x):
        pyro.module("ppca", module)
        module.model(x)

    pyro.clear_param_store()
    ours, our_grads = loss_and_grads(Renyi(alpha=alpha, k=5), module, x[:1])
    module.zero_grad(set_to_none=True)
    pyro.set_rng_seed(0)
    theirs = pyro.infer.RenyiELBO(alpha, num_particles=5, max_plate_nesting=1, vectorize_particles=True)
    value = theirs.loss_and_grads(model, module.guide, x[:1])
    pyro.clear_param_store()
    assert ours.item() == pytest.approx(value, rel=1e-12)
    for name, p in module.named_parameters():
        assert torch.allclose(our_grads[name], p.grad, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("spec", ["iwae:k=4", "dreg:k=4", "stl:k=4", "renyi:k=4"])
def test_the_minibatch_scale_multiplies_the_bound_not_the_log_weights(ppca_data, spec):
    ppca, x = ppca_data
    module = LearnablePPCA(ppca, shift=0.5)
    loss, grads = loss_and_grads(pyrovae.estimator(spec), module, x)
    scaled, scaled_grads = loss_and_grads(
        pyrovae.estimator(spec), module, x, handlers=(scale_data(scale=7.5),)
    )
    assert scaled.item() == pytest.approx(7.5 * loss.item(), rel=1e-12)
    for name in grads:
        assert torch.allclose(scaled_grads[name], 7.5 * grads[name], rtol=1e-10, atol=1e-12)
    # the KL weight acts inside the weights, the minibatch scale outside
    beta, _ = loss_and_grads(pyrovae.estimator(spec, beta=0.3), module, x)
    both, _ = loss_and_grads(
        pyrovae.estimator(spec), module, x, handlers=(scale_data(scale=7.5), scale_latents(beta=0.3))
    )
    assert both.item() == pytest.approx(7.5 * beta.item(), rel=1e-12)
    assert beta.item() != pytest.approx(loss.item(), rel=1e-3)


def test_the_first_call_draws_what_later_calls_draw(ppca_data):
    """Finding the plate nesting on the first call leaves the random state untouched."""
    ppca, x = ppca_data
    iwae = IWAE(k=4)
    pyro.set_rng_seed(3)
    first = iwae.loss(ppca.model, ppca.diagonal_guide(), x)
    pyro.set_rng_seed(3)
    assert iwae.loss(ppca.model, ppca.diagonal_guide(), x) == first


@pytest.mark.parametrize("hierarchical", [False, True], ids=["one-latent", "two-latents"])
def test_dreg_guide_gradient_is_unbiased_for_iwaes_with_lower_variance(hierarchical):
    # 4000 independent draws of each guide gradient (one per data point, each with its own
    # parameters), fixed seed. Unbiased: each coordinate's means differ by less than 4 standard
    # errors of the difference (about 1 in 16,000 per coordinate if the draws were fresh).
    num_data = 4000
    module = Hierarchical(num_data, per_point=True) if hierarchical else PerPoint(num_data)
    names = ["loc1", "log_scale1", "loc2", "log_scale2"] if hierarchical else ["loc", "log_scale"]
    _, iwae = loss_and_grads(IWAE(k=5), module, module.x, seed=1)
    _, dreg = loss_and_grads(DReG(k=5), module, module.x, seed=2)
    iwae, dreg = (torch.cat([g[n] for n in names], -1) for g in (iwae, dreg))
    se = ((iwae.var(0) + dreg.var(0)) / num_data).sqrt()
    assert ((iwae.mean(0) - dreg.mean(0)).abs() < 4 * se).all(), (iwae.mean(0), dreg.mean(0), se)
    # lower variance everywhere: about 100 times lower with one latent, 1.3 to 8 times with two
    assert (dreg.var(0) < iwae.var(0)).all(), (dreg.var(0), iwae.var(0))


def test_dreg_and_stl_keep_iwaes_model_gradient(ppca_data):
    ppca, x = ppca_data
    module = LearnablePPCA(ppca, shift=0.5)
    _, iwae = loss_and_grads(IWAE(k=5), module, x)
    for other in (DReG(k=5), STL(k=5)):
        _, grads = loss_and_grads(other, module, x)
        for name in ("W", "b"):
            assert torch.allclose(grads[name], iwae[name], rtol=1e-10, atol=1e-12)
        assert not torch.allclose(grads["gain"], iwae["gain"])
    # with one particle DReG is STL
    _, stl = loss_and_grads(STL(k=1), module, x)
    _, dreg = loss_and_grads(DReG(k=1), module, x)
    for name in stl:
        assert torch.allclose(stl[name], dreg[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hierarchical", [False, True], ids=["ppca", "two-layer"])
def test_stl_guide_gradient_vanishes_at_the_exact_posterior(ppca_data, hierarchical):
    if hierarchical:
        module = Hierarchical()
        x = module.two.sample(10)
    else:
        module = LearnablePPCA(ppca_data[0])
        x = ppca_data[1]
    guide_params = [n for n in dict(module.named_parameters()) if n not in ("W", "b")]
    for spec in ("stl", "stl:k=5", "dreg:k=5"):
        _, grads = loss_and_grads(pyrovae.estimator(spec), module, x)
        for name in guide_params:
            assert grads[name].abs().max() < 1e-6, (spec, name)
    for spec in ("elbo", "iwae:k=5"):
        _, grads = loss_and_grads(pyrovae.estimator(spec), module, x)
        assert max(grads[name].abs().max() for name in guide_params) > 1e-2, spec


@pytest.mark.parametrize(
    "spec, k", [("elbo", None), ("elbo-analytic-kl", None), ("iwae:k=5", 5), ("dreg:k=5", 5)]
)
def test_kl_annealing_at_beta_one_is_the_estimator_and_at_zero_leaves_the_likelihood(ppca_data, spec, k):
    ppca, x = ppca_data
    module = LearnablePPCA(ppca, shift=0.5)
    with pyro.validation_enabled(False):
        plain, plain_grads = loss_and_grads(pyrovae.estimator(spec), module, x)
        one, one_grads = loss_and_grads(pyrovae.estimator(spec, beta=1.0), module, x)
        assert torch.equal(plain, one)
        for name in plain_grads:
            assert torch.equal(plain_grads[name], one_grads[name])
        recorded = Recorder(module.guide)
        pyro.set_rng_seed(0)
        zero = pyrovae.estimator(spec, beta=0.0).differentiable_loss(module.model, recorded, x)
    log_lik = module.log_likelihood_term(x, recorded.trace.nodes["z"]["value"])
    expected = -log_lik.sum() if k is None else -(torch.logsumexp(log_lik, 0) - math.log(k)).sum()
    assert zero.item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("name", ["iwae", "renyi", "stl", "dreg"])
def test_reparameterized_estimators_refuse_a_discrete_latent_naming_it(name):
    module = Discrete()
    with pytest.raises(ConfigError, match=r"site 'c' of the guide is Bernoulli.*'elbo' or 'tracegraph'"):
        pyrovae.estimator(name).differentiable_loss(module.model, module.guide, torch.zeros(3))


def test_per_datapoint_estimators_refuse_a_global_latent():
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ConfigError, match="'mu' of the model lies outside the data plate"):
        IWAE(k=2).loss(global_latent_model, global_latent_guide, x)


def test_tracegraph_gradients_are_pyros(x, vae):
    module = Discrete()
    data = torch.randn(30, generator=torch.Generator().manual_seed(3))
    for seed in SEEDS[:3]:
        ours, grads = loss_and_grads(TraceGraphELBO(), module, data, seed)
        module.zero_grad(set_to_none=True)
        pyro.set_rng_seed(seed)
        value = TraceGraph_ELBO().loss_and_grads(module.model, module.guide, data)
        assert ours.item() == pytest.approx(value, rel=1e-6)
        for name, p in module.named_parameters():
            assert torch.allclose(grads[name], p.grad), name


def test_tail_adaptive_has_a_value_and_wang_et_als_gradient(vae, x):
    ours, theirs = (
        TailAdaptiveELBO(num_particles=5),
        TraceTailAdaptive_ELBO(num_particles=5, vectorize_particles=True),
    )
    ours.max_plate_nesting = theirs.max_plate_nesting = 2
    with pyro.validation_enabled(False):
        loss, grads = loss_and_grads(ours, vae, x)
        _, pyro_grads = loss_and_grads(theirs, vae, x)
        pyro.set_rng_seed(0)
        elbo = Trace_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=1).loss(
            vae.model, vae.guide, x
        )
    assert loss.item() == pytest.approx(elbo, rel=1e-5)
    for name in grads:
        assert torch.allclose(grads[name], 5 * pyro_grads[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize(
    "spec",
    [
        "elbo",
        "elbo-analytic-kl",
        "tracegraph",
        "tail-adaptive",
        "iwae:k=3",
        "renyi:k=3",
        "stl",
        "stl:k=3",
        "dreg:k=3",
        "iwae:k=3:beta=0.5",
        "vimco:k=3",  # the encoder learns through the score terms alone
        "rws:k=3",
    ],
)
def test_every_estimator_trains_the_vae(x, spec):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=4, hidden=(32,))
    before = [p.detach().clone() for p in vae.parameters()]
    result = pyrovae.fit(vae, x, epochs=2, batch_size=10, estimator=spec, progress=False)
    assert result.history["train_loss"].map(math.isfinite).all()
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.parameters(), strict=True))


def test_enum_estimator_sums_out_an_enumerated_label():
    # TraceEnum_ELBO with exact q(z | x, c) and q(c | x) = p(c | x): the bound is log p(x) exactly
    m = Mixture()
    x = m.sample(6)
    elbo = pyrovae.estimator("enum")
    loss = elbo.loss(m.model, m.guide(mix=0.0, widen=1.0, enumerate=True), x)
    assert loss == pytest.approx(-float(m.log_px(x).sum()), abs=1e-8)
    assert elbo.max_plate_nesting == 1  # found by Pyro from a first run
