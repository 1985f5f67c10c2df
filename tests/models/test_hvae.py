"""The two-layer HVAE: sites, shapes and plates, training, and its importance-sampled log p(x)
against the same estimator written out by hand."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

import pyrovae
from pyrovae import HVAE
from pyrovae.errors import ConfigError, DataError
from pyrovae.models.nn import ConditionalGatedDecoder, ConditionalGatedEncoder, GatedEncoder, MLPDecoder
from pyrovae.models.priors import PRIORS, VampPrior

B, Z1, Z2, IMAGE = 5, 3, 2, (1, 4, 4)


def make_hvae(**kwargs) -> HVAE:
    torch.manual_seed(0)
    kwargs.setdefault("hidden", (16, 16))
    return HVAE(IMAGE, latent_dim=Z1, latent_dim2=Z2, **kwargs)


def binary(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *IMAGE), 0.3), generator=torch.Generator().manual_seed(seed))


def plates(site) -> dict[str, tuple[int, int]]:
    return {frame.name: (frame.dim, frame.size) for frame in site["cond_indep_stack"]}


@pytest.mark.parametrize("prior", PRIORS)
def test_sites_shapes_and_plates_of_model_and_guide(prior):
    hvae = make_hvae(prior=prior, prior_components=4 if prior in ("mixture", "vamp") else None)
    x = binary(B)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(hvae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(hvae.model, trace=guide_trace)).get_trace(x)
    assert [n for n, s in guide_trace.nodes.items() if s["type"] == "sample"] == ["data", "z2", "z1"]
    assert [n for n, s in model_trace.nodes.items() if s["type"] == "sample"] == ["data", "z2", "z1", "x"]
    for trace in (model_trace, guide_trace):
        for name, dim in (("z1", Z1), ("z2", Z2)):
            site = trace.nodes[name]
            assert site["value"].shape == (B, dim) and not site["is_observed"]
            assert site["fn"].batch_shape == (B,) and site["fn"].event_shape == (dim,)
            assert plates(site) == {"data": (-1, B)}
    obs = model_trace.nodes["x"]
    assert obs["is_observed"] and torch.equal(obs["value"], x)
    assert (
        obs["fn"].batch_shape == (B,) and obs["fn"].event_shape == IMAGE and plates(obs) == {"data": (-1, B)}
    )
    # the prior is on the top layer
    top = model_trace.nodes["z2"]["fn"]
    assert top.log_prob(top.sample()).shape == (B,)
    assert hvae.sample(3).shape == (3, *IMAGE) and hvae.reconstruct(x).shape == (B, *IMAGE)
    without_data = poutine.trace(hvae.model).get_trace(batch_size=2)
    assert without_data.nodes["x"]["value"].shape == (2, *IMAGE)


def test_the_vamp_prior_of_an_hvae_uses_the_top_layers_encoder():
    hvae = make_hvae(prior="vamp", prior_components=4)
    assert isinstance(hvae.prior, VampPrior) and hvae.prior.encoder is hvae.encoder
    loc, _ = hvae.prior.encoder(hvae.prior.inputs())
    assert loc.shape == (4, Z2)


def test_hvae_trains_a_few_steps_with_fit_and_keeps_its_sites_vectorizable():
    hvae = make_hvae(prior="vamp", prior_components=4)
    x = binary(40)
    before = hvae.prior.pseudo_inputs.detach().clone()
    result = pyrovae.fit(hvae, x, epochs=2, batch_size=20, lr=1e-2, kl_warmup=2, progress=False)
    assert len(result.history) == 2 and result.history["train_loss"].map(math.isfinite).all()
    assert not torch.equal(before, hvae.prior.pseudo_inputs)
    ladder = pyrovae.bounds(hvae.model, hvae.guide, x[:4], ks=[1, 10, 100], seed=0, progress=False)
    means = [ladder.mean[name] for name in ladder.ks]
    assert all(math.isfinite(m) for m in means)
    assert means[0] <= means[-1]  # ELBO <= IWAE-100 (a 10-nats margin is not needed here)


def decode(hvae: HVAE, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """p(x | z1, z2)'s logits: the MLP decoder reads [z1; z2], the gated one z1 and z2 apart."""
    if isinstance(hvae.decoder, MLPDecoder):
        return hvae.decoder(torch.cat([z1, z2], -1))
    return hvae.decoder(z1, z2)


def hand_written_log_px(hvae: HVAE, x: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """log (1/K) sum_k p(x, z1_k, z2_k) / q(z1_k, z2_k | x), the networks called directly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        loc2, scale2 = hvae.encoder(x)
        z2 = loc2 + scale2 * torch.randn(num_samples, *loc2.shape, generator=g)
        loc1, scale1 = hvae.encoder1(x, z2)
        z1 = loc1 + scale1 * torch.randn(loc1.shape, generator=g)
        log_q = dist.Normal(loc2, scale2).log_prob(z2).sum(-1) + dist.Normal(loc1, scale1).log_prob(z1).sum(
            -1
        )
        log_p = (
            dist.Normal(0.0, 1.0).log_prob(z2).sum(-1)
            + dist.Normal(*hvae.transition(z2)).log_prob(z1).sum(-1)
            + dist.Bernoulli(logits=decode(hvae, z1, z2)).log_prob(x).sum((-3, -2, -1))
        )
        return torch.logsumexp(log_p - log_q, 0) - math.log(num_samples)


@pytest.mark.parametrize("network", ["mlp", "gated"])
def test_log_likelihood_of_an_hvae_agrees_with_the_estimator_written_by_hand(network):
    hvae = make_hvae(network=network)
    x = binary(B, seed=3)
    ll = pyrovae.log_likelihood(hvae.model, hvae.guide, x, 4000, seed=0, progress=False)
    by_hand = hand_written_log_px(hvae, x, 4000, seed=1)
    se = torch.as_tensor(ll.log_px_se)
    # Two independent IWAE-4000 estimates of the same log p(x): their difference has standard
    # error about sqrt(2) * se per data point (delta method); allow 4 of those (fixed seeds).
    assert torch.all((torch.as_tensor(ll.log_px) - by_hand).abs() < 4 * math.sqrt(2) * se), (
        ll.log_px,
        by_hand,
        se,
    )
    assert float(se.max()) < 0.3  # a random network on 16 pixels: tame weights, a sharp test


def test_the_gated_hvae_is_built_of_the_papers_networks_and_records_them():
    hvae = make_hvae(network="gated", prior="vamp", prior_components=4)
    assert isinstance(hvae.encoder, GatedEncoder) and isinstance(hvae.transition, GatedEncoder)
    assert isinstance(hvae.encoder1, ConditionalGatedEncoder)
    assert isinstance(hvae.decoder, ConditionalGatedDecoder)
    assert hvae.prior.encoder is hvae.encoder
    assert hvae.run_options()["network"] == "gated"
    x = binary(B)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(hvae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(hvae.model, trace=guide_trace)).get_trace(x)
    assert model_trace.nodes["x"]["fn"].batch_shape == (B,)
    assert guide_trace.nodes["z1"]["value"].shape == (B, Z1)
    assert hvae.sample(3).shape == (3, *IMAGE) and hvae.reconstruct(x).shape == (B, *IMAGE)


def test_bad_configurations_and_data_are_refused():
    with pytest.raises(ConfigError, match="choose one of: gated, mlp"):
        HVAE(IMAGE, network="conv")
    with pytest.raises(ConfigError, match="at least one hidden layer"):
        HVAE(IMAGE, hidden=())
    with pytest.raises(ConfigError, match="latent_dim"):
        HVAE(IMAGE, latent_dim=2, latent_dim2=0)
    with pytest.raises(ConfigError, match="unknown activation"):
        HVAE(IMAGE, activation="swish")
    with pytest.raises(DataError, match=r"HVAE with event_shape=\(1, 8, 8\)"):
        make_hvae().model(torch.zeros(2, 1, 8, 8))
    with pytest.raises(DataError, match="not binary"):
        make_hvae().check_data(torch.full((2, *IMAGE), 0.5))
