"""pyrovae.analysis.latent_space: encodings, decodings and interpolations of any model/guide pair."""

from __future__ import annotations

import pytest
import torch

import pyrovae
from pyrovae.analysis import latent_space
from pyrovae.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    return pyrovae.data.DataSource(pyrovae.load("digits", "train")).sample(12, seed=0)[0]


def test_a_vae_encodes_to_its_encoder_mean_and_decodes_to_its_reconstruction(digits):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    assert latent_space.latent_sites(vae, digits) == ["z"]
    codes = latent_space.encode(vae, digits, batch_size=5)
    torch.testing.assert_close(codes["z"], vae.encoder(digits)[0])
    torch.testing.assert_close(latent_space.decode(vae, codes, digits), vae.reconstruct(digits))


def test_an_hvae_bottom_layer_is_averaged_over_draws_of_the_top(digits):
    torch.manual_seed(0)
    hvae = pyrovae.HVAE((1, 8, 8), latent_dim=3, latent_dim2=2, hidden=(16,))
    assert latent_space.latent_sites(hvae, digits) == ["z2", "z1"]
    codes = latent_space.encode(hvae, digits, num_particles=2000, seed=1)
    z2 = torch.distributions.Normal(*hvae.encoder(digits)).sample((2000,))
    expected = hvae.encoder1(digits.expand(2000, *digits.shape), z2)[0].mean(0)
    torch.testing.assert_close(codes["z1"], expected, atol=0.02, rtol=0)  # two Monte Carlo means
    torch.testing.assert_close(codes["z2"], hvae.encoder(digits)[0])


def test_a_draw_comes_after_the_same_latents_as_the_mean(digits):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    mean = latent_space.decode(vae, {}, digits, fill="sample", seed=3)
    draw = latent_space.decode(vae, {}, digits, fill="sample", draw=True, seed=3)
    assert set(draw.unique().tolist()) <= {0.0, 1.0}
    # the draw is Bernoulli(mean): over 768 pixels its mean matches within 4 standard errors
    assert abs(float(draw.mean() - mean.mean())) < 4 * float((mean * (1 - mean)).mean().sqrt()) / 768**0.5


def test_interpolations_and_their_mistakes():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    path = latent_space.interpolation(a, b, 5, "spherical")
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    with pytest.raises(ConfigError, match="opposite codes"):
        latent_space.interpolation(a, -a, 5, "spherical")
    with pytest.raises(ConfigError, match="non-zero"):
        latent_space.interpolation(a, torch.zeros(2), 5, "spherical")
    with pytest.raises(ConfigError, match="method must be"):
        latent_space.interpolation(a, b, 5, "cubic")


def test_unknown_names_are_refused(digits):
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    with pytest.raises(ConfigError, match="no latent site named w; the pair's latent sites are: z"):
        latent_space.decode(vae, {"w": torch.zeros(12, 3)}, digits)
    with pytest.raises(ConfigError, match="no latent site named w"):
        latent_space.encode(vae, digits, sites=["w"])
    with pytest.raises(ConfigError, match="expected a model/guide pair"):
        latent_space.as_pair(42)
