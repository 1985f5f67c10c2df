"""The VAE's model and guide: sites, shapes and plates, networks, and the errors for bad input."""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyrovae import VAE
from pyrovae.errors import ConfigError, DataError
from pyrovae.models.likelihoods import LIKELIHOODS
from pyrovae.models.nn import ACTIVATIONS, NETWORKS
from pyrovae.models.priors import PRIORS

B, LATENT, K = 5, 3, 7
IMAGE = (1, 8, 8)


def make_vae(event_shape=IMAGE, **kwargs) -> VAE:
    torch.manual_seed(0)
    kwargs.setdefault("latent_dim", LATENT)
    kwargs.setdefault("hidden", (32,))
    return VAE(event_shape, **kwargs)


def binary(shape, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full(shape, 0.5), generator=torch.Generator().manual_seed(seed))


def traces(vae: VAE, x: torch.Tensor):
    """Guide trace, and the model's trace replayed on the guide's draws."""
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    return model_trace, guide_trace


def plates(site) -> dict[str, tuple[int, int]]:
    return {frame.name: (frame.dim, frame.size) for frame in site["cond_indep_stack"]}


def test_model_and_guide_sites_have_batch_shapes_inside_the_data_plate():
    vae = make_vae()
    x = binary((B, *IMAGE))
    pyro.set_rng_seed(0)
    model_trace, guide_trace = traces(vae, x)

    for trace in (model_trace, guide_trace):
        z = trace.nodes["z"]
        assert z["value"].shape == (B, LATENT)
        assert z["fn"].batch_shape == (B,) and z["fn"].event_shape == (LATENT,)
        assert not z["is_observed"]
        assert plates(z) == {"data": (-1, B)}
    assert torch.equal(model_trace.nodes["z"]["value"], guide_trace.nodes["z"]["value"])

    obs = model_trace.nodes["x"]
    assert obs["is_observed"]
    assert torch.equal(obs["value"], x)
    assert obs["value"].shape == (B, *IMAGE)
    assert obs["fn"].batch_shape == (B,) and obs["fn"].event_shape == IMAGE
    assert plates(obs) == {"data": (-1, B)}
    assert "x" not in guide_trace.nodes

    model_trace.compute_log_prob()
    assert model_trace.nodes["x"]["log_prob"].shape == (B,)
    assert model_trace.nodes["z"]["log_prob"].shape == (B,)
    assert torch.isfinite(model_trace.log_prob_sum())


def test_model_samples_data_without_observations_given_a_batch_size():
    vae = make_vae()
    pyro.set_rng_seed(0)
    trace = poutine.trace(vae.model).get_trace(batch_size=B)
    x = trace.nodes["x"]
    assert not x["is_observed"]
    assert x["value"].shape == (B, *IMAGE)
    assert ((x["value"] == 0) | (x["value"] == 1)).all()
    with pytest.raises(ConfigError, match="batch_size"):
        vae.model()


def test_vectorized_particles_add_a_dimension_on_the_left():
    vae = make_vae()
    x = binary((B, *IMAGE))
    pyro.set_rng_seed(0)
    with pyro.plate("particles", K, dim=-2):
        model_trace, guide_trace = traces(vae, x)
    for trace in (model_trace, guide_trace):
        z = trace.nodes["z"]
        assert z["value"].shape == (K, B, LATENT)
        assert plates(z) == {"particles": (-2, K), "data": (-1, B)}
    obs = model_trace.nodes["x"]
    assert obs["fn"].batch_shape == (K, B) and obs["fn"].event_shape == IMAGE
    assert plates(obs) == {"particles": (-2, K), "data": (-1, B)}
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    assert model_trace.nodes["x"]["log_prob"].shape == (K, B)
    assert guide_trace.nodes["z"]["log_prob"].shape == (K, B)
    # each particle is its own draw, scored as a one-particle trace would score it
    z = guide_trace.nodes["z"]["value"]
    assert not torch.equal(z[0], z[1])
    params = vae.decoder(z[3])
    one = vae.likelihood(params).to_event(len(IMAGE)).log_prob(x)
    torch.testing.assert_close(model_trace.nodes["x"]["log_prob"][3], one)


@pytest.mark.parametrize("likelihood", [n + ":levels=5" if n == "binomial" else n for n in LIKELIHOODS])
def test_sample_and_reconstruct_shapes_and_ranges(likelihood):
    vae = make_vae(likelihood=likelihood)
    torch.manual_seed(1)
    samples = vae.sample(6)
    assert samples.shape == (6, *IMAGE)
    x = torch.rand(B, *IMAGE)
    if likelihood == "bernoulli":
        x = x.round()
    recon = vae.reconstruct(x)
    assert recon.shape == x.shape
    for out in (samples, recon):
        assert torch.isfinite(out).all() and not out.requires_grad
        if likelihood in ("bernoulli", "binomial:levels=5", "continuous-bernoulli"):
            assert ((out >= 0) & (out <= 1)).all()
    # the reconstruction is deterministic: the likelihood mean at the guide's mean
    assert torch.equal(recon, vae.reconstruct(x))


@pytest.mark.parametrize(
    "network, event_shape",
    [
        ("mlp", (1, 8, 8)),
        ("conv", (1, 8, 8)),
        ("mlp", (1, 28, 28)),
        ("conv", (1, 28, 28)),
        ("conv", (3, 8, 12)),
        ("mlp", (784,)),
        ("mlp", 784),
        ("gated", (1, 8, 8)),
        ("gated", 784),
    ],
)
def test_networks_on_image_and_flat_shapes(network, event_shape):
    vae = make_vae(event_shape, network=network, latent_dim=4)
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    x = binary((B, *shape))
    loc, scale = vae.encoder(x)
    assert loc.shape == scale.shape == (B, 4)
    assert (scale > 0).all()
    assert vae.decoder(loc).shape == (B, *shape)
    assert vae.decoder(torch.randn(K, B, 4)).shape == (K, B, *shape)  # leading batch dims pass through
    pyro.set_rng_seed(0)
    model_trace, guide_trace = traces(vae, x)
    loss = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in vae.encoder.parameters())
    assert all(p.grad is not None for p in vae.decoder.parameters())
    assert vae.sample(2).shape == (2, *shape)


@pytest.mark.parametrize("event_shape", [(1, 10, 10), (1, 8, 6), (784,), (8, 8)])
def test_conv_network_refuses_shapes_it_cannot_halve_twice(event_shape):
    with pytest.raises(ConfigError, match="divisible by 4") as err:
        make_vae(event_shape, network="conv")
    assert str(tuple(event_shape)) in str(err.value)
    assert "network='mlp'" in str(err.value)


@pytest.mark.parametrize(
    "bad",
    [(B, 64), (B, 1, 8, 9), (B, 2, 8, 8), (1, 8, 8), (2, B, 1, 8, 8)],
    ids=["flat", "width", "channels", "no-batch", "extra-dim"],
)
def test_data_of_the_wrong_shape_is_a_data_error_naming_both_shapes(bad):
    vae = make_vae()
    x = binary(bad)
    calls = [vae.model, vae.guide, vae.reconstruct, vae.check_data]
    for call in calls:
        with pytest.raises(DataError) as err:
            call(x)
        message = str(err.value)
        assert str(tuple(bad)) in message
        assert "(batch, 1, 8, 8)" in message


def test_flat_model_accepts_flat_data_and_names_the_event_shape_to_use():
    vae = make_vae(784)
    with pytest.raises(DataError, match=r"event_shape=\(1, 28, 28\)"):
        vae.check_data(binary((B, 1, 28, 28)))
    vae.check_data(binary((B, 784)))


@pytest.mark.parametrize(
    "option, valid",
    [
        ("activation", ACTIVATIONS),
        ("network", NETWORKS),
        ("prior", PRIORS),
        ("likelihood", LIKELIHOODS),
    ],
)
def test_unknown_names_are_config_errors_listing_the_valid_ones(option, valid):
    with pytest.raises(ConfigError) as err:
        make_vae(**{option: "no-such-thing"})
    message = str(err.value)
    assert "'no-such-thing'" in message and option in message
    for name in valid:
        assert name in message


def test_unknown_activation_is_refused_even_without_hidden_layers():
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        make_vae(hidden=(), activation="swish")
    make_vae(hidden=(), activation="tanh")  # a known one is fine


def test_invalid_sizes_and_half_given_networks_are_config_errors():
    with pytest.raises(ConfigError, match="latent_dim"):
        make_vae(latent_dim=0)
    with pytest.raises(ConfigError, match="both encoder and decoder"):
        make_vae(encoder=torch.nn.Identity())


@pytest.mark.parametrize("prior", PRIORS)
def test_every_prior_keeps_the_sites_and_plates_and_vectorizes_for_log_likelihood(prior):
    from pyrovae import log_likelihood

    vae = make_vae(prior=prior, prior_components=4 if prior in ("mixture", "vamp") else None)
    x = binary((B, *IMAGE))
    pyro.set_rng_seed(0)
    model_trace, guide_trace = traces(vae, x)
    z = model_trace.nodes["z"]
    assert z["fn"].batch_shape == (B,) and z["fn"].event_shape == (LATENT,)
    assert plates(z) == {"data": (-1, B)} and plates(model_trace.nodes["x"]) == {"data": (-1, B)}
    ll = log_likelihood(vae.model, vae.guide, x, 8, seed=0, progress=False)
    assert ll.log_px.shape == (B,) and torch.isfinite(ll.log_px).all()
    assert vae.sample(2).shape == (2, *IMAGE)
