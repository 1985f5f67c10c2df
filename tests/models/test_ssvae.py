"""Tests of :class:`pyrovae.SSVAE` (M2): plates and shapes, the objective against exhaustive
enumeration with exact conditional posteriors, log p(x) with the label summed out, training."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from toy_models import ExactConditionalPosterior

import pyrovae
from pyrovae.data.datasets import UNLABELLED, with_labels
from pyrovae.errors import DataError
from pyrovae.models.likelihoods import Gaussian
from pyrovae.models.nn import ConditionalMLPDecoder

torch.set_num_threads(2)
C, D = 3, 4


@pytest.fixture
def exact():
    """An SSVAE with a linear decoder, a Gaussian likelihood and a 1-d latent, whose guide's
    q(z | x, y) is the exact conditional posterior: then log p(x, y, z) - log q(z | x, y) =
    log p(x, y) for every z, and p(x | y) = N(V_y + b, ww^T + sigma^2 I) in closed form."""
    pyro.set_rng_seed(0)
    sigma = 0.7
    ssvae = pyrovae.SSVAE(D, C, latent_dim=1, hidden=(5,), likelihood=Gaussian(scale=sigma), alpha=0.0)
    ssvae.decoder = ConditionalMLPDecoder((D,), C, 1, (), "softplus")
    ssvae.double()
    # the likelihood's scale as stored (exp of a float32 log), for an exactly matching posterior
    ssvae.encoder = ExactConditionalPosterior(ssvae.decoder, float(ssvae.likelihood.log_scale.exp()))
    x = torch.randn(6, D, dtype=torch.float64) * 2

    def log_pxy(x):  # (B, C): log p(x, y) for every label y
        eye = torch.eye(C, dtype=torch.float64)
        return torch.stack(
            [ssvae.encoder.log_px(x, eye[y].expand(len(x), C)) for y in range(C)], -1
        ) - math.log(C)

    return ssvae, x, log_pxy


def test_sites_and_plates():
    ssvae = pyrovae.SSVAE((1, 4, 4), num_classes=C, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
    y = torch.tensor([0, UNLABELLED, 2, UNLABELLED, 1])
    guide = poutine.trace(ssvae.guide).get_trace(x, y)
    model = poutine.trace(poutine.replay(ssvae.model, trace=guide)).get_trace(x, y)
    assert guide.nodes["y"]["value"].shape == (5,) and guide.nodes["z"]["value"].shape == (5, 2)
    # the guide's q(y | x) is the point mass at a known label
    assert torch.equal(guide.nodes["y"]["value"][[0, 2, 4]], y[[0, 2, 4]])
    for name in ("y", "z", "x", "y_aux"):
        assert [f.name for f in model.nodes[name]["cond_indep_stack"]] == ["data"]
    assert torch.equal(model.nodes["y_aux"]["mask"], y != UNLABELLED)
    # enumerated in parallel left of the data plate, every value gets its own z
    enum = poutine.trace(poutine.enum(ssvae.guide, first_available_dim=-2)).get_trace(x)
    assert enum.nodes["y"]["value"].shape == (C, 1) and enum.nodes["z"]["value"].shape == (C, 5, 2)


def test_enumerated_objective_is_exact(exact):
    # with exact q(z | x, y) the enumerated ELBO is deterministic: -log p(x, y) for a labelled
    # point, sum_y q(y | x) (log p(x, y) - log q(y | x)) for an unlabelled one, in one mixed batch
    ssvae, x, log_pxy = exact
    y = torch.tensor([2, UNLABELLED, 0, UNLABELLED, UNLABELLED, 1])
    known = y != UNLABELLED
    log_q = torch.log_softmax(ssvae.logits(x), -1).detach()
    labelled = log_pxy(x)[known].gather(-1, y[known, None]).sum()
    unlabelled = (log_q.exp() * (log_pxy(x) - log_q))[~known].sum()
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(ssvae.model, ssvae.guide, x, y)
    assert loss == pytest.approx(-(labelled + unlabelled).item(), abs=1e-9)


def test_log_likelihood_sums_out_the_label(exact):
    ssvae, x, log_pxy = exact
    result = pyrovae.log_likelihood(
        ssvae.model, ssvae.guide, x, 20, progress=False, seed=0, return_log_weights=True
    )
    exact_log_px = torch.logsumexp(log_pxy(x), -1)
    torch.testing.assert_close(result.log_weights, exact_log_px[:, None].expand(6, 20), atol=1e-9, rtol=0)
    ladder = pyrovae.bounds(ssvae.model, ssvae.guide, x, ks=(1, 4), progress=False, seed=0)
    torch.testing.assert_close(ladder.values["ELBO"], exact_log_px, atol=1e-9, rtol=0)
    assert any("enumerated" in note for note in ladder.notes)


def test_classification_term(exact):
    # the model adds alpha * log q(y | x) of each labelled point
    ssvae, x, _ = exact
    y = torch.tensor([2, UNLABELLED, 0, UNLABELLED, UNLABELLED, 1])
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    base = elbo.loss(ssvae.model, ssvae.guide, x, y)
    ssvae.alpha = 3.0
    with_aux = elbo.loss(ssvae.model, ssvae.guide, x, y)
    log_q = (
        torch.log_softmax(ssvae.logits(x), -1).detach()[y != UNLABELLED].gather(-1, y[y != UNLABELLED, None])
    )
    assert with_aux - base == pytest.approx(-3.0 * log_q.sum().item(), abs=1e-9)


def test_fit_classify_and_sample():
    train = with_labels(pyrovae.load("digits", "train"), 50, seed=0)
    assert train.num_labelled == 50 and torch.equal(
        torch.bincount(train.labels[train.labels != UNLABELLED]), torch.full((10,), 5)
    )
    x, y = train.batch(torch.arange(4))
    assert x.shape == (4, 1, 8, 8) and y.shape == (4,)
    pyro.set_rng_seed(0)
    ssvae = pyrovae.SSVAE((1, 8, 8), 10, latent_dim=4, hidden=(32,))
    result = pyrovae.fit(ssvae, train, estimator="enum", epochs=1, batch_size=200, progress=False)
    assert math.isfinite(result.final_loss)
    test = pyrovae.load("digits", "test")
    x = test.batch(torch.arange(len(test)))
    assert ssvae.classify(x).shape == (len(test),)
    assert 0 <= ssvae.accuracy(x, test.targets) <= 1
    assert ssvae.sample(7).shape == ssvae.sample(7, y=3).shape == (7, 1, 8, 8)
    assert ssvae.reconstruct(x[:3]).shape == (3, 1, 8, 8)


def test_bad_labels_and_data():
    ssvae = pyrovae.SSVAE(D, C, latent_dim=1, hidden=(5,))
    x = torch.bernoulli(torch.full((2, D), 0.5))
    with pytest.raises(DataError, match="labels must lie in 0..2"):
        ssvae.guide(x, torch.tensor([0, 3]))
    with pytest.raises(DataError, match="LongTensor of shape"):
        ssvae.model(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="does not match the SSVAE"):
        ssvae.model(torch.zeros(2, D + 1))
    with pytest.raises(DataError, match="has no labels"):
        with_labels(pyrovae.as_dataset(x))
    with pytest.raises(DataError, match="evenly over the 10 classes"):
        with_labels(pyrovae.load("digits", "train"), 15)


def test_sample_draws_in_the_decoders_dtype():
    # z and the labels are built on the decoder's device, in its dtype (float64 here)
    ssvae = pyrovae.SSVAE((1, 4, 4), num_classes=3, latent_dim=2, hidden=(8,)).double()
    for y in (None, 1, torch.tensor([0, 2, 1])):
        out = ssvae.sample(3, y=y)
        assert out.shape == (3, 1, 4, 4) and out.dtype == torch.float64
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    assert ssvae.reconstruct(x).dtype == torch.float64
    y = ssvae.classify(x)
    assert ssvae.accuracy(x, y, chunk=2) == 1.0
