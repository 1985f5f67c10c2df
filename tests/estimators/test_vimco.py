"""VIMCO against the exact gradient of the expected IWAE bound of a model whose latent states can
be enumerated; the detached-latent estimators (VIMCO, RWS) by name, with site scales, on discrete
latents in ``compare`` and ``log_likelihood``, and training."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from toy_models import PPCA, LearnablePPCA, TwoLayer

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.estimators import IWAE, RWS, VIMCO, DetachedIWAE
from pyrovae.handlers import scale_data, scale_latents

DTYPE = torch.float64
#: the 2^3 states of three binary latents, (8, 3)
STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=DTYPE)


class Bits(torch.nn.Module):
    r"""Three Bernoulli latents per data point and a linear-Gaussian observation:
    :math:`z \sim \prod_j \mathrm{Bernoulli}(\sigma(a_j))`, :math:`x \mid z \sim \mathcal N(Wz + b,
    \sigma^2 I_2)`, and a logistic guide :math:`q(z \mid x) = \prod_j \mathrm{Bernoulli}(\sigma(Ax +
    c)_j)`. With ``num_rows``, the guide has its own :math:`A, c` for every data point (all equal
    at the start): the rows of their gradient are then independent draws of one gradient."""

    def __init__(self, num_rows: int | None = None, sigma: float = 0.8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.sigma = sigma
        self.prior_logits = torch.nn.Parameter(torch.tensor([-0.5, 0.3, 0.8], dtype=DTYPE))
        self.W = torch.nn.Parameter(1.5 * torch.randn(2, 3, generator=g, dtype=DTYPE))
        self.b = torch.nn.Parameter(torch.randn(2, generator=g, dtype=DTYPE))
        A = 0.5 * torch.randn(3, 2, generator=g, dtype=DTYPE)
        c = torch.tensor([0.4, -0.6, 0.2], dtype=DTYPE)
        if num_rows is not None:
            A, c = A.expand(num_rows, 3, 2), c.expand(num_rows, 3)
        self.A, self.c = torch.nn.Parameter(A.clone()), torch.nn.Parameter(c.clone())

    def sample(self, num_data: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            z = torch.bernoulli(torch.sigmoid(self.prior_logits).expand(num_data, 3), generator=g)
            return z @ self.W.T + self.b + self.sigma * torch.randn(num_data, 2, generator=g, dtype=DTYPE)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x, z)`, broadcasting ``x (..., 2)`` against ``z (..., 3)``."""
        log_prior = dist.Bernoulli(logits=self.prior_logits).log_prob(z).sum(-1)
        return log_prior + dist.Normal(z @ self.W.T + self.b, self.sigma).log_prob(x).sum(-1)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exactly, by enumerating the 8 states."""
        return torch.logsumexp(self.log_joint(x.unsqueeze(-2), STATES), -1)

    def guide_logits(self, x: torch.Tensor) -> torch.Tensor:
        return (self.A @ x.unsqueeze(-1)).squeeze(-1) + self.c

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=self.prior_logits).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=self.guide_logits(x)).to_event(1))


def expected_iwae_bound(module: Bits, x: torch.Tensor, k: int) -> torch.Tensor:
    r""":math:`\mathbb E_{z_{1..k} \sim q}[\log \frac1k \sum_i w_i]` at one data point ``x (2,)`` and the
    guide's first row, exactly: a sum over the :math:`8^k` joint states."""
    logits = module.guide_logits(x)
    logits = logits if logits.dim() == 1 else logits[0]
    log_q = dist.Bernoulli(logits=logits).log_prob(STATES).sum(-1)  # (8,)
    log_w = module.log_joint(x, STATES) - log_q
    index = torch.tensor(list(itertools.product(range(8), repeat=k)))  # (8^k, k)
    bound = torch.logsumexp(log_w[index], -1) - math.log(k)
    return (log_q[index].sum(-1).exp() * bound).sum()


class PlainScoreFunction(VIMCO):
    """VIMCO without baselines: the learning signal of every particle is the bound itself."""

    name = "plain-score-function"

    @staticmethod
    def baselines(log_w):
        return torch.zeros_like(log_w)


def guide_gradient_rows(elbo, module: Bits, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The gradient of the bound (minus the loss's) w.r.t. each row's guide parameters, ``(N, 9)``."""
    module.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    elbo.differentiable_loss(module.model, module.guide, x).backward()
    return -torch.cat([module.A.grad.flatten(1), module.c.grad], 1)


def test_vimco_guide_gradient_is_unbiased_with_lower_variance_than_the_plain_score_function():
    # 4000 independent draws (one per data point, each with its own guide parameters, all data
    # points equal) against the exact gradient of the expected IWAE-3 bound, a sum over the 8^3
    # joint states. Unbiased: each of the 9 coordinates' mean is within 4 standard errors (sd /
    # sqrt(4000)) of the exact value (about 6e-5 per coordinate by chance, so ~6e-4 for all 9;
    # the seed is fixed, so the test is deterministic).
    num_draws, k = 4000, 3
    module = Bits(num_draws)
    x0 = module.sample(1)[0]
    x = x0.expand(num_draws, 2)
    exact = torch.autograd.grad(expected_iwae_bound(module, x0, k), [module.A, module.c])
    exact = torch.cat([exact[0][0].flatten(), exact[1][0]])
    vimco = guide_gradient_rows(VIMCO(k), module, x, seed=1)
    plain = guide_gradient_rows(PlainScoreFunction(k), module, x, seed=2)
    for draws in (vimco, plain):
        se = draws.std(0) / math.sqrt(num_draws)
        assert ((draws.mean(0) - exact).abs() < 4 * se).all(), (draws.mean(0), exact, se)
    # the leave-one-out baselines cut the summed variance several times over (here 3.6x),
    # far beyond the few percent the variance estimates of 4000 draws are uncertain by
    ratio = vimco.var(0).sum() / plain.var(0).sum()
    assert ratio < 0.5, ratio


class PerPoint(torch.nn.Module):
    r"""A continuous, reparameterizable guide with its own parameters for every data point, all data
    points equal: for :class:`~toy_models.PPCA` a diagonal :math:`q(z \mid x)`; for
    :class:`~toy_models.TwoLayer` (``hierarchical``) :math:`q(z_1)\,q(z_2 \mid z_1)`, the second factor's
    mean depending on the first latent."""

    def __init__(self, num_data: int, hierarchical: bool = False, shift: float = 0.3, widen: float = 1.3):
        super().__init__()
        self.hierarchical = hierarchical
        if hierarchical:
            self.pair = two = TwoLayer()
            x = two.sample(1)
            sd1, sd2 = two.z1_cov.diagonal().sqrt(), two.z2_cov.diagonal().sqrt()
            loc1 = two._z1_prior_term + (x - two.b) @ two._z1_gain.T + shift * sd1
            self.gain2 = two._z2_gain
            loc2, sd = -two._z2_gain @ two.a + shift * sd2, torch.cat([sd1, sd2])
            loc = torch.cat([loc1[0], loc2])
        else:
            self.pair = ppca = PPCA()
            x = ppca.sample(1)
            sd = ppca.post_cov.diagonal().sqrt()
            loc = (ppca.posterior_loc(x) + shift * sd)[0]
        self.x = x.expand(num_data, -1)
        self.loc = torch.nn.Parameter(loc.expand(num_data, -1).clone())
        self.log_scale = torch.nn.Parameter((widen * sd).log().expand(num_data, -1).clone())

    def model(self, x):
        self.pair.model(x)

    def guide(self, x):
        scale = self.log_scale.exp()
        with pyro.plate("data", x.shape[0]):
            if not self.hierarchical:
                pyro.sample("z", dist.Normal(self.loc, scale).to_event(1))
                return
            d = self.pair.dim1
            z1 = pyro.sample("z1", dist.Normal(self.loc[:, :d], scale[:, :d]).to_event(1))
            loc2 = z1 @ self.gain2.T + self.loc[:, d:]
            pyro.sample("z2", dist.Normal(loc2, scale[:, d:]).to_event(1))


@pytest.mark.parametrize("hierarchical", [False, True], ids=["one-latent", "two-latents"])
def test_vimco_guide_gradient_is_unbiased_for_reparameterizable_latents_too(hierarchical):
    # the latents are detached: VIMCO's score-function gradient and IWAE's reparameterized one
    # estimate the same gradient. 4000 independent draws of each (one per data point); every
    # coordinate's means differ by less than 4 standard errors of the difference (fixed seed)
    num_data = 4000
    module = PerPoint(num_data, hierarchical)
    draws = []
    for seed, elbo in enumerate((IWAE(k=3), VIMCO(k=3))):
        module.zero_grad(set_to_none=True)
        pyro.set_rng_seed(seed)
        elbo.differentiable_loss(module.model, module.guide, module.x).backward()
        draws.append(torch.cat([module.loc.grad, module.log_scale.grad], -1))
    iwae, vimco = draws
    se = ((iwae.var(0) + vimco.var(0)) / num_data).sqrt()
    assert ((iwae.mean(0) - vimco.mean(0)).abs() < 4 * se).all(), (iwae.mean(0), vimco.mean(0), se)


def test_leave_one_out_baselines():
    g = torch.Generator().manual_seed(0)
    log_w = torch.randn(4, 3, generator=g, dtype=DTYPE)
    baselines = VIMCO.baselines(log_w)
    for i in range(4):
        replaced = log_w.clone()
        replaced[i] = torch.cat([log_w[:i], log_w[i + 1 :]]).mean(0)
        torch.testing.assert_close(baselines[i], torch.logsumexp(replaced, 0) - math.log(4))
    # a zero weight: its own baseline stays finite, and in the others' the mean is -inf (exp -> 0)
    log_w[0, 0] = -math.inf
    baselines = VIMCO.baselines(log_w)
    assert torch.isfinite(baselines).all()
    others = log_w[1:, 0]
    expected = torch.logsumexp(torch.cat([others, others.mean().unsqueeze(0)]), 0) - math.log(4)
    torch.testing.assert_close(baselines[0, 0], expected)
    for i in range(1, 4):  # w_0 = 0 and the geometric mean of the others, with w_0 among them, too
        rest = torch.cat([log_w[1:i, 0], log_w[i + 1 :, 0]])
        torch.testing.assert_close(baselines[i, 0], torch.logsumexp(rest, 0) - math.log(4))


@pytest.mark.parametrize("cls", [VIMCO, RWS])
def test_value_and_model_gradient_are_iwaes_on_the_same_draws(cls):
    # the draws do not depend on how they are differentiated: same seed, same z; the model's
    # gradient sum_i w_i grad log p(x, z_i) is IWAE's, the guide's is not
    ppca = PPCA()
    x = ppca.sample(20)
    module = LearnablePPCA(ppca, shift=0.5)
    grads = {}
    for elbo in (IWAE(k=4), cls(k=4)):
        module.zero_grad(set_to_none=True)
        pyro.set_rng_seed(0)
        loss = elbo.differentiable_loss(module.model, module.guide, x)
        loss.backward()
        pyro.set_rng_seed(0)
        assert elbo.loss(module.model, module.guide, x) == pytest.approx(loss.item(), rel=1e-12)
        grads[type(elbo)] = {n: p.grad.clone() for n, p in module.named_parameters()}
    for name in ("W", "b"):
        torch.testing.assert_close(grads[cls][name], grads[IWAE][name], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(grads[cls]["gain"], grads[IWAE]["gain"])


@pytest.mark.parametrize("spec", ["vimco:k=4", "rws:k=4"])
def test_the_minibatch_scale_multiplies_the_bound_and_beta_acts_inside_the_weights(spec):
    module, x = Bits(), Bits().sample(12)

    def run(handlers=(), **options):
        module.zero_grad(set_to_none=True)
        pyro.set_rng_seed(0)
        fn = pyrovae.estimator(spec, **options).differentiable_loss
        for handler in handlers:
            fn = handler(fn)
        loss = fn(module.model, module.guide, x)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}

    loss, grads = run()
    scaled, scaled_grads = run((scale_data(scale=7.5),))
    assert scaled.item() == pytest.approx(7.5 * loss.item(), rel=1e-12)
    for name in grads:
        torch.testing.assert_close(scaled_grads[name], 7.5 * grads[name], rtol=1e-10, atol=1e-12)
    beta, beta_grads = run(beta=0.3)
    both, both_grads = run((scale_data(scale=7.5), scale_latents(beta=0.3)))
    assert both.item() == pytest.approx(7.5 * beta.item(), rel=1e-12)
    for name in grads:
        torch.testing.assert_close(both_grads[name], 7.5 * beta_grads[name], rtol=1e-10, atol=1e-12)
    assert beta.item() != pytest.approx(loss.item(), rel=1e-3)
    # at beta = 0 the guide still learns: its score terms use the unscaled log q
    _, zero_grads = run(beta=0.0)
    assert zero_grads["c"].abs().max() > 0


def test_by_name_and_bad_options():
    assert type(pyrovae.estimator("vimco")) is VIMCO and pyrovae.estimator("vimco:k=7").k == 7
    assert type(pyrovae.estimator("rws", k=3)) is RWS
    assert isinstance(pyrovae.VIMCO(), DetachedIWAE) and isinstance(pyrovae.RWS(), IWAE)
    for spec in ("vimco:k=1", "rws:k=1"):
        with pytest.raises(ConfigError, match="at least 2 particles"):
            pyrovae.estimator(spec)
    with pytest.raises(ConfigError, match="positive integer"):
        pyrovae.estimator("vimco:k=0")
    with pytest.raises(NotImplementedError):
        DetachedIWAE(3).differentiable_loss(Bits().model, Bits().guide, Bits().sample(2))


def test_an_enumerated_site_is_refused_naming_it():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(torch.tensor(0.3, dtype=DTYPE)))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(torch.tensor(0.5, dtype=DTYPE)), infer={"enumerate": "parallel"})

    for cls in (VIMCO, RWS):
        with pytest.raises(ConfigError, match=r"site 'c' is marked.*'enum'"):
            cls(3).loss(model, guide, torch.zeros(4, dtype=DTYPE))


def test_compare_gives_finite_guide_snrs_for_a_discrete_latent():
    module = Bits()
    x = module.sample(16)
    result = pyrovae.compare(
        module.model, module.guide, x, ["vimco:k=5", "rws:k=5", "tracegraph"], num_repeats=5, progress=False
    )
    assert result.num_guide_params == 9 and result.num_model_params == 11
    table = result.to_dataframe()
    assert list(table.index) == ["vimco:k=5", "rws:k=5", "tracegraph"]
    for column in ("guide_snr", "model_snr", "guide_grad_var", "bound"):
        assert table[column].map(math.isfinite).all(), table
    assert (table["guide_grad_var"] > 0).all()


def test_log_likelihood_and_bounds_of_a_sampled_discrete_latent_converge_to_the_exact_value():
    # the log-weights include the Bernoulli sites' log q; the estimate is within 4 of its own
    # delta-method standard errors of the exact log p(x) (8 states enumerated by hand)
    module = Bits()
    x = module.sample(10)
    with torch.no_grad():
        exact = module.log_px(x)
    result = pyrovae.log_likelihood(module.model, module.guide, x, 2000, seed=0, progress=False)
    z = (result.log_px - exact) / result.log_px_se
    assert (z.abs() < 4).all(), z
    ladder = pyrovae.bounds(module.model, module.guide, x, ks=(1, 10), seed=0, progress=False)
    elbo, iwae = ladder.values["ELBO"], ladder.values["IWAE-10"]
    assert (elbo.mean() < iwae.mean()) and (iwae.mean() < exact.mean())


@pytest.fixture(scope="module")
def digits():
    return pyrovae.load("digits", "train").batch(torch.arange(40), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spec", ["vimco:k=3", "rws:k=3"])
def test_the_multi_sample_score_function_estimators_train_the_sigmoid_belief_network(digits, spec):
    torch.manual_seed(0)
    sbn = pyrovae.SBN((1, 8, 8), latent_sizes=(8, 4))
    before = {n: p.detach().clone() for n, p in sbn.named_parameters()}
    result = pyrovae.fit(sbn, digits, epochs=1, batch_size=10, estimator=spec, progress=False)
    assert result.history["train_loss"].map(math.isfinite).all()
    # every generative and recognition parameter learns (NVIL's baselines serve only 'tracegraph')
    for name, p in sbn.named_parameters():
        assert name.startswith("baseline") or not torch.equal(before[name], p), name
