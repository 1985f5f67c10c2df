"""Tests of :class:`pyrovae.CVAE`: plates and shapes, log p(x | c) against a closed form, and
training on a label and on an observed half of the image as conditions."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from toy_models import ExactConditionalPosterior

import pyrovae
from pyrovae.data.datasets import with_labels
from pyrovae.errors import ConfigError, DataError
from pyrovae.models.likelihoods import Gaussian
from pyrovae.models.nn import ConditionalMLPDecoder

torch.set_num_threads(2)


class Halves(torch.utils.data.Dataset):
    """The bottom halves of images as the data and their top halves as the condition."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def batch(self, index, generator=None):
        x = self.images.batch(index, generator=generator)
        return x[..., 4:, :], x[..., :4, :]


def test_sites_and_plates():
    cvae = pyrovae.CVAE((1, 8, 8), 10, categorical=True, latent_dim=3, hidden=(16,))
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.5))
    c = torch.tensor([0, 9, 2, 2, 1])
    guide = poutine.trace(cvae.guide).get_trace(x, c)
    model = poutine.trace(poutine.replay(cvae.model, trace=guide)).get_trace(x, c)
    assert model.nodes["z"]["value"].shape == (5, 3)
    assert model.nodes["x"]["fn"].batch_shape == (5,) and model.nodes["x"]["fn"].event_shape == (1, 8, 8)
    for name in ("z", "x"):
        assert [f.name for f in model.nodes[name]["cond_indep_stack"]] == ["data"]
    assert cvae.sample(c, num_samples=2).shape == (2, 5, 1, 8, 8)


def test_log_likelihood_of_x_given_c_is_exact():
    # linear decoder, Gaussian likelihood, 1-d latent, exact q(z | x, c): every log-weight is
    # log p(x | c) = log N(x; Vc + b, ww^T + sigma^2 I)
    pyro.set_rng_seed(0)
    cvae = pyrovae.CVAE(4, 3, latent_dim=1, hidden=(5,), likelihood=Gaussian(scale=0.8))
    cvae.decoder = ConditionalMLPDecoder((4,), 3, 1, (), "softplus")
    cvae.double()
    cvae.encoder = ExactConditionalPosterior(cvae.decoder, float(cvae.likelihood.log_scale.exp()))
    x, c = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    result = pyrovae.log_likelihood(
        cvae.model, cvae.guide, (x, c), 10, progress=False, seed=0, return_log_weights=True
    )
    exact = cvae.encoder.log_px(x, c)
    torch.testing.assert_close(result.log_weights, exact[:, None].expand(7, 10), atol=1e-9, rtol=0)


def test_fit_on_labels_and_on_image_halves():
    digits = pyrovae.load("digits", "train")
    pyro.set_rng_seed(0)
    by_label = pyrovae.CVAE((1, 8, 8), 10, categorical=True, latent_dim=4, hidden=(32,))
    result = pyrovae.fit(by_label, with_labels(digits), epochs=1, batch_size=100, progress=False)
    assert math.isfinite(result.final_loss)
    by_half = pyrovae.CVAE((1, 4, 8), (1, 4, 8), latent_dim=4, hidden=(32,))
    result = pyrovae.fit(by_half, Halves(digits), epochs=1, batch_size=100, progress=False)
    assert math.isfinite(result.final_loss)
    test = Halves(pyrovae.load("digits", "test"))
    ll = pyrovae.log_likelihood(by_half.model, by_half.guide, test, 8, progress=False, seed=0)
    assert ll.log_px.shape == (300,) and torch.isfinite(ll.log_px).all()


def test_bad_conditions():
    with pytest.raises(ConfigError, match="number of classes"):
        pyrovae.CVAE(4, (2, 2), categorical=True)
    cvae = pyrovae.CVAE(4, 3, categorical=True, hidden=(5,))
    x = torch.zeros(2, 4)
    with pytest.raises(DataError, match="values in 0..2"):
        cvae.model(x, torch.tensor([0, 3]))
    vector = pyrovae.CVAE(4, 3, hidden=(5,))
    with pytest.raises(DataError, match="does not match the CVAE"):
        vector.guide(x, torch.zeros(2, 4))


def test_sample_draws_in_the_decoders_dtype():
    # z and the condition are built on the decoder's device, in its dtype (float64 here)
    labels = pyrovae.CVAE((1, 4, 4), 3, categorical=True, latent_dim=2, hidden=(8,)).double()
    out = labels.sample(torch.tensor([0, 2]), num_samples=3)
    assert out.shape == (3, 2, 1, 4, 4) and out.dtype == torch.float64
    vector = pyrovae.CVAE(4, 3, latent_dim=2, hidden=(5,)).double()
    assert vector.sample(torch.zeros(2, 3)).dtype == torch.float64  # a float32 condition cast
