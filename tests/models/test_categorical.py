"""The categorical VAE: sites in both modes, the exact log p(x) of the discrete model by
enumeration against the importance-sampled estimate, the Concrete densities against the paper's
formula, training in both modes, and the discrete model of relaxed-trained parameters."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from toy_models import binary_pixels

import pyrovae
from pyrovae import CategoricalVAE
from pyrovae.errors import ConfigError
from pyrovae.infer.pair import trace_pair
from pyrovae.models.categorical import ExpRelaxedCategorical

PIXELS, M, C = 6, 2, 3


def tiny(seed: int = 0, **kwargs) -> CategoricalVAE:
    """A 6-pixel model of 2 latents of 3 categories in float64: a spread decoder, a small encoder."""
    torch.manual_seed(seed)
    vae = CategoricalVAE(PIXELS, num_latents=M, num_categories=C, hidden=(5,), **kwargs).double()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if not name.startswith("baseline"):
                p.normal_(0.0, 0.3 if name.startswith("encoder") else 1.0)
    return vae


def binary(n: int, seed: int = 1) -> torch.Tensor:
    return binary_pixels(n, PIXELS, seed)


def exact_log_px(vae: CategoricalVAE, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(x_n) = \log \sum_z C^{-M} p(x_n \mid z)` over all :math:`C^M` one-hot codes."""
    eye = torch.eye(C, dtype=torch.float64)
    terms = []
    for cats in itertools.product(range(C), repeat=M):
        code = eye[list(cats)]  # (M, C)
        logits = vae.decoder(code.flatten())
        terms.append(dist.Bernoulli(logits=logits).log_prob(x).sum(-1) - M * math.log(C))
    return torch.stack(terms).logsumexp(0)


def concrete_log_density(z: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Maddison et al.'s Concrete density on the simplex, written out,
    :math:`(n-1)!\, \lambda^{n-1} \prod_k \frac{\alpha_k z_k^{-\lambda-1}}{\sum_i \alpha_i z_i^{-\lambda}}`
    (the last coordinate determined by the others)."""
    n = z.shape[-1]
    log_alpha = logits.log_softmax(-1)
    return (
        math.lgamma(n)
        + (n - 1) * math.log(temperature)
        + (log_alpha - (temperature + 1) * z.log()).sum(-1)
        - n * (log_alpha - temperature * z.log()).logsumexp(-1)
    )


@pytest.mark.parametrize("relaxed", [None, 0.5])
def test_sites_shapes_and_plates(relaxed):
    vae, x = tiny(relaxed=relaxed), binary(5)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    for trace in (model_trace, guide_trace):
        site = trace.nodes["z"]
        assert site["value"].shape == (5, M, C) and site["fn"].event_shape == (M, C)
        assert [f.name for f in site["cond_indep_stack"]] == ["data"]
        assert site["fn"].has_rsample == (relaxed is not None)
    z = guide_trace.nodes["z"]["value"]
    if relaxed is None:
        assert set(z.unique().tolist()) == {0.0, 1.0} and (z.sum(-1) == 1).all()
    else:  # log of a point of the simplex
        torch.testing.assert_close(z.logsumexp(-1), torch.zeros(5, M, dtype=torch.float64))
    model_trace, guide_trace = trace_pair(vae.model, vae.guide, (x,), {}, num_particles=4, particle_dim=-2)
    assert guide_trace.nodes["z"]["value"].shape == (4, 5, M, C)
    assert model_trace.nodes["x"]["fn"].batch_shape == (4, 5)


@pytest.mark.parametrize("seed", [0, 1])
def test_discrete_log_likelihood_matches_enumeration(seed):
    """The estimate of every data point lies within 4 of its standard errors of the exact log p(x)
    (the sampled one-hot latents weigh by both categorical log-probabilities), in chunks of data
    and particles."""
    vae, x = tiny(seed), binary(5)
    exact = exact_log_px(vae, x)
    ll = pyrovae.log_likelihood(
        vae.model,
        vae.guide,
        x,
        num_samples=2000,
        seed=0,
        batch_size=2,
        particle_batch_size=700,
        progress=False,
    )
    assert ((ll.log_px - exact).abs() < 4 * ll.log_px_se).all(), (ll.log_px, exact, ll.log_px_se)
    assert (ll.log_px_se < 0.1).all()  # 4 se: under 0.4 nats (k-hat: too few distinct weights to fit)


def test_concrete_densities():
    """The sites' ExpConcrete densities are the Concrete densities of the paper up to the Jacobian of
    y = log z, which cancels from every log-weight: the relaxed model's weights are the Concrete ones."""
    torch.manual_seed(0)
    logits_q, logits_p = torch.randn(7, C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    q = ExpRelaxedCategorical(torch.tensor(0.5, dtype=torch.float64), logits=logits_q)
    p = ExpRelaxedCategorical(torch.tensor(0.7, dtype=torch.float64), logits=logits_p)
    y = q.rsample()
    z = y.exp()
    jacobian = y.sum(-1)  # log |dz/dy| on the simplex's free coordinates
    torch.testing.assert_close(q.log_prob(y) - jacobian, concrete_log_density(z, logits_q, 0.5))
    torch.testing.assert_close(p.log_prob(y) - jacobian, concrete_log_density(z, logits_p, 0.7))
    torch.testing.assert_close(
        p.log_prob(y) - q.log_prob(y),
        concrete_log_density(z, logits_p, 0.7) - concrete_log_density(z, logits_q, 0.5),
    )
    assert q.expand((2, 7)).batch_shape == (2, 7) and q.to_event(1).event_shape == (7, C)  # a Pyro one


def test_relaxed_attribute_and_discrete_copy():
    vae, x = tiny(relaxed=0.5, prior_temperature=0.7), binary(4)
    assert vae.relaxed == 0.5 and vae.prior_temperature == 0.7
    discrete = vae.discrete()
    assert discrete.relaxed is None and discrete.prior_temperature is None and vae.relaxed == 0.5
    for a, b in zip(vae.parameters(), discrete.parameters(), strict=True):
        assert torch.equal(a, b) and a is not b
    ll = pyrovae.log_likelihood(discrete.model, discrete.guide, x, num_samples=50, seed=0, progress=False)
    vae.relaxed = None  # in place: the same discrete model
    same = pyrovae.log_likelihood(vae.model, vae.guide, x, num_samples=50, seed=0, progress=False)
    torch.testing.assert_close(ll.log_px, same.log_px)
    vae.relaxed = 0.25
    assert vae.prior_temperature == 0.7
    relaxed = pyrovae.log_likelihood(vae.model, vae.guide, x, num_samples=50, seed=0, progress=False)
    assert not torch.allclose(relaxed.log_px, ll.log_px)  # another model: a continuous density
    with pytest.raises(ConfigError, match="relaxed"):
        vae.relaxed = 0.0


def test_fit_on_digits():
    torch.manual_seed(0)
    train = pyrovae.load("digits", "train")
    for relaxed, spec in ((0.5, "elbo"), (0.5, "iwae:k=2"), (None, "tracegraph"), (None, "elbo")):
        vae = CategoricalVAE((1, 8, 8), num_latents=4, num_categories=3, hidden=(16,), relaxed=relaxed)
        result = pyrovae.fit(vae, train, epochs=1, estimator=spec, batch_size=200, progress=False)
        assert math.isfinite(result.history["train_loss"].iloc[-1]), (relaxed, spec)
    with pytest.raises(ConfigError, match="reparameterized"):
        pyrovae.fit(vae, train, epochs=1, estimator="iwae:k=2", batch_size=200, progress=False)


def test_bounds_compare_sample_reconstruct():
    vae, x = tiny(), binary(6)
    ladder = pyrovae.bounds(vae.model, vae.guide, x, ks=(1, 10), seed=0, progress=False)
    assert list(ladder.mean.index) == [
        "ELBO (analytic KL)",
        "ELBO",
        "IWAE-10",
    ]  # categorical KL in closed form
    vae.relaxed = 0.5
    relaxed = pyrovae.bounds(vae.model, vae.guide, x, ks=(1, 10), seed=0, progress=False)
    assert list(relaxed.mean.index) == ["ELBO", "IWAE-10"]  # no closed-form Concrete KL
    vae.relaxed = None
    comparison = pyrovae.compare(
        vae.model, vae.guide, x, ["elbo", "tracegraph"], num_repeats=3, progress=False
    )
    assert comparison.table["bound"].map(math.isfinite).all()
    for relaxed in (None, 0.5):
        vae.relaxed = relaxed
        for images in (vae.sample(3), vae.reconstruct(x)):
            assert images.shape[1:] == (PIXELS,) and ((images >= 0) & (images <= 1)).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_latents": 0}, "num_latents"),
        ({"num_categories": 1}, "num_categories"),
        ({"num_categories": 2.5}, "num_categories"),
        ({"relaxed": 0}, "relaxed"),
        ({"relaxed": -0.5}, "relaxed"),
        ({"relaxed": True}, "relaxed"),
        ({"relaxed": float("inf")}, "relaxed"),
        ({"prior_temperature": 0.5}, "pass relaxed="),
        ({"relaxed": 0.5, "prior_temperature": 0}, "prior_temperature"),
        ({"hidden": (0,)}, "hidden"),
        ({"baseline": 1}, "baseline"),
    ],
)
def test_option_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CategoricalVAE(PIXELS, **kwargs)
