"""Tests of :func:`pyrovae.infer.ladder.bounds`, the ELBO / IWAE-k ladder, on models with exact log p(x).

Statistical checks use a fixed seed and a tolerance of 4 standard errors computed from the
draws themselves (stated at each check).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from matplotlib.figure import Figure
from torch.distributions import MultivariateNormal, kl_divergence
from toy_models import PPCA, Mixture, TwoLayer

from pyrovae.errors import ConfigError
from pyrovae.infer.ladder import ANALYTIC_ELBO, Bounds, bounds, iwae_bounds

torch.set_num_threads(2)
RUN = dict(progress=False, seed=0)
KS = (1, 10, 100, 1000, 5000)


@pytest.fixture(scope="module")
def ppca_ladder():
    model = PPCA()
    x = model.sample(25)
    return model, x, bounds(model.model, model.diagonal_guide(), x, KS, return_log_weights=True, **RUN)


def exact_elbo(model: PPCA, x: torch.Tensor, shift: float = 0.3, widen: float = 1.3) -> torch.Tensor:
    """log p(x) - KL(q || p(z | x)) for :meth:`PPCA.diagonal_guide`, in closed form."""
    sd = model.post_cov.diagonal().sqrt()
    q = MultivariateNormal(model.posterior_loc(x) + shift * sd, scale_tril=torch.diag(widen * sd))
    posterior = MultivariateNormal(model.posterior_loc(x), covariance_matrix=model.post_cov)
    return model.log_px(x) - kl_divergence(q, posterior)


def test_ladder_is_ordered(ppca_ladder):
    model, x, ladder = ppca_ladder
    assert ladder.names == [ANALYTIC_ELBO, "ELBO", "IWAE-10", "IWAE-100", "IWAE-1000", "IWAE-5000"]
    assert ladder.iwae.shape == (25, 5) and ladder.num_samples == 5000
    # each k divides the next and K, so by Jensen's inequality the estimates from the same draws
    # are nondecreasing in k on every data point, not only in expectation
    assert torch.all(ladder.iwae.diff(dim=-1) >= -1e-12)
    means = [ladder.mean[f"IWAE-{k}" if k > 1 else "ELBO"] for k in KS]
    assert all(a < b for a, b in zip(means, means[1:], strict=False)), means
    assert means[0] < float(model.log_px(x).mean())


def test_ladder_rows_come_from_the_same_draws(ppca_ladder):
    _, _, ladder = ppca_ladder
    log_w = ladder.log_likelihood.log_weights
    assert log_w.shape == (25, 5000)
    torch.testing.assert_close(ladder["ELBO"], log_w.mean(-1), atol=1e-10, rtol=0)
    torch.testing.assert_close(ladder["IWAE-5000"], ladder.log_likelihood.log_px, atol=1e-12, rtol=0)
    torch.testing.assert_close(ladder["IWAE-1000"], iwae_bounds(log_w, [1000])[:, 0])


def test_elbo_matches_closed_form(ppca_ladder):
    model, x, ladder = ppca_ladder
    log_w = ladder.log_likelihood.log_weights
    # standard error of the mean over data points of K-draw averages of log w
    se = float(log_w.var(-1).div(5000).sum().sqrt() / 25)
    assert abs(ladder.mean["ELBO"] - float(exact_elbo(model, x).mean())) < 4 * se


def test_analytic_elbo_agrees_with_monte_carlo(ppca_ladder):
    _, _, ladder = ppca_ladder
    # paired over data points: both rows average over the same draws, so the standard error of
    # the mean difference is sd(difference) / sqrt(N)
    diff = ladder[ANALYTIC_ELBO] - ladder["ELBO"]
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / 5
    assert abs(ladder.mean[ANALYTIC_ELBO] - ladder.mean["ELBO"]) < ladder.stderr["ELBO"]


def test_discrete_latents_have_an_analytic_elbo():
    m = Mixture()
    x = m.sample(20)
    ladder = bounds(m.model, m.guide(), x, (1, 10, 1000), **RUN)
    assert ANALYTIC_ELBO in ladder.names
    diff = ladder[ANALYTIC_ELBO] - ladder["ELBO"]
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(20)  # paired, as above
    exact = float(m.log_px(x).mean())
    assert ladder.mean["ELBO"] < ladder.mean["IWAE-10"] < ladder.mean["IWAE-1000"]
    assert ladder.mean["ELBO"] < exact
    # the mean of the IWAE-K estimates has standard error sqrt(sum of se_n^2) / N
    se = float(ladder.log_likelihood.log_px_se.square().sum().sqrt()) / 20
    assert abs(ladder.mean["IWAE-1000"] - exact) < 4 * se


def test_analytic_row_omitted_with_a_note():
    model = PPCA()
    x = model.sample(5)
    # no closed-form KL between a full-covariance guide and a diagonal prior
    ladder = bounds(model.model, model.exact_guide, x, (1, 10), **RUN)
    assert ANALYTIC_ELBO not in ladder.names
    assert any("no closed-form KL" in note and "'z'" in note for note in ladder.notes)
    assert "no closed-form KL" in ladder.summary()
    # z2 -> z1 in the model but z1 -> z2 in the guide: not mean-field
    m = TwoLayer()
    ladder = bounds(m.model, m.guide(widen=1.3), m.sample(5), (1, 10), **RUN)
    assert ANALYTIC_ELBO not in ladder.names and "different order" in ladder.notes[0]
    ladder = bounds(m.model, m.guide(widen=1.3), m.sample(5), (1, 10), analytic_kl=False, **RUN)
    assert ladder.names == ["ELBO", "IWAE-10"] and not ladder.notes


def test_ks_not_dividing_k():
    model = PPCA()
    ladder = bounds(model.model, model.diagonal_guide(), model.sample(4), (10, 3, 1), **RUN)
    assert list(ladder.ks.values()) == [1, 3, 10]
    assert any("floor(K/k)" in note for note in ladder.notes)


def test_exports_and_extra_rows(ppca_ladder, tmp_path):
    _, _, ladder = ppca_ladder
    extra = Bounds(dict(ladder.values), dict(ladder.ks), ladder.num_samples, list(ladder.notes))
    extra.add("AIS", ladder["IWAE-5000"] + 0.01, note="AIS: 10 chains")
    assert extra.names[-1] == "AIS" and "AIS: 10 chains" in extra.summary()
    with pytest.raises(ConfigError, match="3 values for 25 data points"):
        extra.add("bad", torch.zeros(3))
    df = extra.to_dataframe()
    assert list(df.columns) == extra.names and len(df) == 25
    ds = extra.to_xarray()
    assert ds["log_px_bound"].dims == ("bound", "datapoint")
    assert ds["k"].sel(bound="IWAE-100").item() == 100 and ds["k"].sel(bound="AIS").item() == 0
    summary = json.loads(json.dumps(extra.to_json_dict()))
    assert summary["bounds"]["ELBO"]["mean"] == pytest.approx(extra.mean["ELBO"])
    text = repr(extra)
    assert all(name in text for name in extra.names) and "K = 5000" in text


def test_plot_writes_png(ppca_ladder, tmp_path):
    _, _, ladder = ppca_ladder
    path = tmp_path / "ladder.png"
    fig = ladder.plot(path)
    assert isinstance(fig, Figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ladder.png"]
    assert ladder.plot() is not None


def test_bad_options():
    model = PPCA()
    x = model.sample(3)
    for ks in ((), (0, 10), (1.5,)):
        with pytest.raises(ConfigError, match="ks must be"):
            bounds(model.model, model.diagonal_guide(), x, ks, **RUN)
    with pytest.raises(ConfigError, match="num_samples"):
        bounds(model.model, model.diagonal_guide(), x, (1, 10), num_samples=20, **RUN)
    with pytest.raises(ConfigError, match="unknown option"):
        bounds(model.model, model.diagonal_guide(), x, (1, 10), particles=20, **RUN)


def test_ais_rows_and_bdmc(tmp_path):
    model = PPCA()
    x = model.sample(5)
    options = dict(leapfrog_steps=2)
    ladder = bounds(
        model.model,
        model.diagonal_guide(),
        x,
        (1, 10),
        ais_steps=[3],
        ais_chains=2,
        bdmc_data=3,
        ais_options=options,
        **RUN,
    )
    assert ladder.names[-1] == "AIS-3" and ladder.ais["AIS-3"].num_chains == 2
    assert ladder.bdmc.num_data == 3 and ladder.bdmc.forward.num_steps == 3  # the largest ais_steps
    summary = ladder.to_json_dict()
    assert summary["ais"]["AIS-3"]["num_steps"] == 3 and "gap" in summary["bdmc"]
    ds = ladder.to_xarray()
    assert ds["ais_acceptance"].shape == (1, 5) and ds["bdmc_gap"].shape == (3,)
    back = Bounds.from_xarray(ds)  # the rows, k and the BDMC sandwich come back
    assert back.names == ladder.names and back.ks == ladder.ks
    assert torch.equal(back.bdmc.gap, ladder.bdmc.gap) and back.bdmc.forward.num_chains == 2
    fig = ladder.plot(tmp_path / "bounds.png")
    assert len(fig.axes) == 2 and (tmp_path / "bounds.png").exists()
    assert "BDMC" in ladder.summary()


def test_enumerated_label_is_summed_out():
    # the label c enumerated in the guide and q(z | x, c) exact: every weight is p(x), so every
    # row of the ladder equals log p(x); the analytic-KL row is omitted with a note
    m = Mixture()
    x = m.sample(8)
    ladder = bounds(m.model, m.guide(mix=0.5, widen=1.0, enumerate=True), x, (1, 5), **RUN)
    assert ANALYTIC_ELBO not in ladder.values
    assert any("'c' is enumerated" in note for note in ladder.notes)
    for name in ("ELBO", "IWAE-5"):
        torch.testing.assert_close(ladder.values[name], m.log_px(x), atol=1e-10, rtol=0)


def test_added_rows_are_float64_on_the_cpu():
    # a row is kept detached, in float64 on the CPU (wherever it was computed), Python floats exactly
    rows = Bounds({"ELBO": torch.zeros(3, dtype=torch.float64)}, {"ELBO": 1}, 1)
    rows.add("grad", torch.zeros(3, requires_grad=True))
    rows.add("floats", [0.1] * 3)
    for name in ("grad", "floats"):
        row = rows[name]
        assert row.dtype == torch.float64 and row.device.type == "cpu" and not row.requires_grad
    assert rows["floats"].tolist() == [0.1] * 3


@pytest.mark.parametrize("gain, state", [(0.05, "levelled off (< 0.1 nats)"), (0.3, "still climbing")])
def test_the_ladder_has_levelled_off_when_its_last_rung_adds_little(gain, state):
    # nested rungs rise for every data point, so any gain is significant: its size decides
    below = torch.linspace(-90, -80, 50, dtype=torch.float64)
    top = below + gain + 0.001 * torch.linspace(-1, 1, 50, dtype=torch.float64)
    ladder = Bounds({"IWAE-100": below, "IWAE-1000": top}, {"IWAE-100": 100, "IWAE-1000": 1000}, 1000)
    assert f"the ladder: IWAE-100 -> IWAE-1000 {gain:+.2f} ± 0.00 nats, {state}" in ladder.verdict()
