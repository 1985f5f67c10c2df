"""Anomaly scores: exact on probabilistic PCA, the background ratio, complexity, regret, typicality,
bad input, and the exports."""

from __future__ import annotations

import math

import pytest
import torch

import pyrovae
from pyrovae.analysis.anomaly import METHODS, AnomalyScores, anomaly_scores, complexity, perturb
from pyrovae.errors import ConfigError, DataError

RUN = dict(seed=0, progress=False)


@pytest.fixture(scope="module")
def ppca(make_ppca):
    return make_ppca(30)


def test_nll_scores_are_minus_log_px_within_their_standard_errors(ppca):
    model, x = ppca
    scores = anomaly_scores(model.model, model.diagonal_guide(), x, "nll", num_samples=4000, **RUN)
    exact = -model.log_px(x)
    # an importance-sampled estimate with a fixed seed: each within 4 of its delta-method standard
    # errors, plus its O(1/K) bias (the second-order delta term, about se^2 / 2, is far below 1e-3)
    assert (scores.score - exact).abs().le(4 * scores.stderr + 1e-3).all()
    assert scores.columns["khat"].lt(0.7).all()
    # with the exact posterior as guide every weight is p(x): the scores are exact
    exact_scores = anomaly_scores(model.model, model.exact_guide, x, "nll", num_samples=10, **RUN)
    torch.testing.assert_close(exact_scores.score, exact, atol=1e-9, rtol=0)


def test_elbo_scores_of_the_exact_posterior_are_minus_log_px(ppca):
    model, x = ppca
    scores = anomaly_scores(model.model, model.exact_guide, x, "elbo", num_samples=20, **RUN)
    torch.testing.assert_close(scores.score, -model.log_px(x), atol=1e-9, rtol=0)
    assert scores.stderr.max() < 1e-6
    worse = anomaly_scores(model.model, model.diagonal_guide(), x, "elbo", num_samples=20, **RUN)
    # -ELBO >= -log p(x): each estimate (20 draws, fixed seed) is above it but for 4 standard errors
    assert (worse.score >= scores.score - 4 * worse.stderr).all()
    gap = worse.score - scores.score
    assert gap.mean() > 4 * gap.std() / math.sqrt(len(gap))


def test_reconstruction_is_minus_log_p_x_given_the_guide_mean(ppca):
    model, x = ppca
    guide = model.diagonal_guide(shift=0.3)
    scores = anomaly_scores(model.model, guide, x, "reconstruction", **RUN)
    sd = model.post_cov.diagonal().sqrt()
    z = model.posterior_loc(x) + 0.3 * sd
    expected = -torch.distributions.Normal(z @ model.W.T + model.b, model.sigma).log_prob(x).sum(-1)
    torch.testing.assert_close(scores.score, expected, atol=1e-9, rtol=0)
    assert scores.stderr is None


def test_likelihood_ratio_against_the_model_itself_is_zero(ppca):
    model, x = ppca
    pair = (model.model, model.diagonal_guide())
    scores = anomaly_scores(*pair, x, "likelihood-ratio", num_samples=50, background=pair, **RUN)
    assert torch.equal(scores.score, torch.zeros_like(scores.score))
    assert {"nll", "background_nll"} <= set(scores.columns)
    with pytest.raises(ConfigError, match="background=\\(model, guide\\)"):
        anomaly_scores(*pair, x, "likelihood-ratio", **RUN)


def test_the_complexity_of_a_constant_image_is_below_that_of_noise():
    noise = torch.bernoulli(torch.full((3, 1, 28, 28), 0.5), generator=torch.Generator().manual_seed(0))
    flat = torch.zeros(3, 1, 28, 28)
    assert (complexity(flat) < complexity(noise)).all()
    assert complexity(flat).std() == 0  # the same image, the same code length
    with pytest.raises(DataError, match=r"values in \[0, 1\]"):
        complexity(noise * 2)
    with pytest.raises(DataError, match="images of shape"):
        complexity(torch.zeros(3, 7))


def test_likelihood_regret_is_zero_for_the_exact_posterior_and_positive_for_a_worse_guide(ppca):
    model, x = ppca
    options = dict(num_samples=200, steps=60, lr=0.05, **RUN)
    exact = anomaly_scores(model.model, model.exact_guide, x[:10], "likelihood-regret", **options)
    # the exact posterior maximizes the ELBO (its estimate is exact): nothing to gain
    assert torch.equal(exact.score, torch.zeros_like(exact.score))
    shifted = anomaly_scores(
        model.model, model.diagonal_guide(shift=1.0, widen=2.0), x[:10], "likelihood-regret", **options
    )
    assert (shifted.score > 5 * shifted.stderr).all() and shifted.score.mean() > 0.5


def test_regret_refuses_a_guide_it_cannot_optimize(ppca):
    model, x = ppca

    def discrete_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Delta(torch.zeros(x.shape[0], 2, dtype=x.dtype)).to_event(1))

    import pyro

    with pytest.raises(ConfigError, match="reparameterized"):
        anomaly_scores(model.model, discrete_guide, x, "likelihood-regret", steps=1, **RUN)


def test_typicality_scores_groups_by_their_distance_from_the_entropy(ppca):
    model, x = ppca
    guide = model.exact_guide
    whole = anomaly_scores(
        model.model, guide, x, "typicality", num_samples=5, reference=x, group_size=30, **RUN
    )
    assert whole.num_data == 1 and whole.score.item() == pytest.approx(0, abs=1e-9)
    groups = anomaly_scores(
        model.model, guide, x, "typicality", num_samples=5, reference=x, group_size=7, **RUN
    )
    assert groups.num_data == 4  # the last 2 of 30 make no full group
    entropy = float(-model.log_px(x).mean())
    expected = (-model.log_px(x)[:28].reshape(4, 7).mean(-1) - entropy).abs()
    torch.testing.assert_close(groups.score, expected, atol=1e-9, rtol=0)
    far = x + 5.0  # a shifted batch is atypical
    shifted = anomaly_scores(
        model.model, guide, far, "typicality", num_samples=5, reference=x, group_size=7, **RUN
    )
    assert shifted.score.min() > groups.score.max()
    with pytest.raises(ConfigError, match="reference="):
        anomaly_scores(model.model, guide, x, "typicality", **RUN)
    with pytest.raises(ConfigError, match="group_size"):
        anomaly_scores(model.model, guide, x, "typicality", reference=x, group_size=31, **RUN)


def test_perturb_replaces_the_given_fraction_with_values_of_the_set():
    x = torch.bernoulli(torch.full((200, 50), 0.2), generator=torch.Generator().manual_seed(1))
    assert torch.equal(perturb(x, 0.0), x)
    rate = 0.2
    y = perturb(x, rate, seed=3)
    assert torch.equal(y, perturb(x, rate, seed=3)) and ((y == 0) | (y == 1)).all()
    # half of the replaced elements keep their value: the changed fraction is rate / 2, within 4
    # binomial standard errors
    changed = (y != x).double().mean().item()
    assert abs(changed - rate / 2) < 4 * math.sqrt(rate / 2 * (1 - rate / 2) / x.numel())
    grey = perturb(torch.full((10, 10), 0.5), 1.0, seed=0)
    assert ((grey * 255).round() == grey * 255).all()
    with pytest.raises(ConfigError, match="rate"):
        perturb(x, 1.5)


def test_bad_input_gets_messages(ppca):
    model, x = ppca
    with pytest.raises(
        ConfigError, match="unknown anomaly score method 'surprise'; choose one of: complexity"
    ):
        anomaly_scores(model.model, model.exact_guide, x, "surprise", **RUN)
    with pytest.raises(DataError, match="no data points"):
        anomaly_scores(model.model, model.exact_guide, x[:0], **RUN)
    with pytest.raises((DataError, ConfigError)):
        anomaly_scores(model.model, model.exact_guide, x[:, :4], **RUN)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,))
    with pytest.raises(DataError, match="outside the support"):
        anomaly_scores(vae.model, vae.guide, torch.full((4, 1, 8, 8), 0.5), **RUN)
    with pytest.raises(ConfigError, match="num_samples"):
        anomaly_scores(model.model, model.exact_guide, x, num_samples=0, **RUN)


def test_every_method_runs_on_a_vae_and_exports(tmp_path):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((6, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    pair = (vae.model, vae.guide)
    options = dict(num_samples=8, steps=2, background=pair, reference=x, group_size=2, device="cpu", **RUN)
    for method in METHODS:
        scores = anomaly_scores(*pair, x, method, **options)
        assert scores.method == method and torch.isfinite(scores.score).all()
        assert scores.num_data == (3 if method == "typicality" else 6)
        frame = scores.to_dataframe()
        assert list(frame.columns)[0] == "score" and len(frame) == scores.num_data
        assert "anomaly scores" in scores._repr_html_()
        path = tmp_path / f"{method}.nc"
        scores.to_netcdf(path)
        back = AnomalyScores.from_netcdf(path)
        assert back.method == method and torch.equal(back.score, scores.score)
        assert back.columns.keys() == scores.columns.keys()
