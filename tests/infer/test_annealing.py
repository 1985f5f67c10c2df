"""Tests of annealed importance sampling (:func:`pyrovae.ais`) and the BDMC sandwich
(:func:`pyrovae.bdmc`) on probabilistic PCA, whose log p(x) and posterior are exact.

Statistical checks use a fixed seed; tolerances are stated at each check, derived from the
standard errors over chains that the estimates report.
"""

from __future__ import annotations

import math

import pytest
import torch
from toy_models import PPCA, Mixture, offset_guide

import pyrovae
from pyrovae import AIS, BDMC, ais, bdmc
from pyrovae.errors import ConfigError
from pyrovae.infer.annealing import annealing_schedule

RUN = dict(progress=False, seed=0, leapfrog_steps=3)


@pytest.fixture(scope="module")
def ppca():
    model = PPCA()
    x = model.sample(12)
    return model, x, model.log_px(x)


@pytest.fixture(scope="module")
def forward_runs(ppca):
    """Forward AIS from the prior (far from the posterior) with more and more steps; 256 chains, so
    that the standard error of the mean over the data points is well below the 0.05-nat target."""
    model, x, _ = ppca
    return {
        steps: ais(
            model.model, model.diagonal_guide(), x, num_steps=steps, num_chains=256, start="prior", **RUN
        )
        for steps in (1, 10, 200)
    }


def test_forward_ais_rises_toward_log_px(ppca, forward_runs):
    _, _, exact = ppca
    # AIS-50 is within its standard error of log p(x) already: 10 steps are where the bound still rises
    means = [forward_runs[t].mean for t in (1, 10, 200)]
    assert means[0] < means[1] < means[2], means
    assert means[0] < float(exact.mean()) - 0.1


def test_forward_ais_within_0_05_nats_at_a_few_hundred_steps(ppca, forward_runs):
    _, _, exact = ppca
    result = forward_runs[200]
    error = result.mean - float(exact.mean())
    # the issue's accuracy target; the chains' own standard error of the mean over 12 data points
    # (sqrt(sum se^2) / N) is about 0.017 nats here (256 chains), so 0.05 is three standard errors
    se = float(result.log_px_se.square().sum().sqrt()) / result.num_data
    assert abs(error) < 0.05, (error, se)
    assert error < 4 * se  # a lower bound: above the truth only by noise


def test_exact_posterior_start_is_exact_for_any_number_of_steps(ppca):
    model, x, exact = ppca
    for steps in (1, 2, 25):
        result = ais(model.model, model.exact_guide, x, num_steps=steps, num_chains=3, **RUN)
        # every AIS increment is (beta_t - beta_{t-1}) log p(x): the weights are exact
        torch.testing.assert_close(result.log_px, exact, atol=1e-10, rtol=0)


def test_bdmc_sandwich_contains_log_px_and_reverse_ais_comes_down(ppca):
    model, _, _ = ppca
    guide = model.diagonal_guide(shift=1.0, widen=1.5)
    short = bdmc(model.model, guide, 12, num_steps=3, num_chains=8, **RUN)
    long = bdmc(model.model, guide, 12, num_steps=100, num_chains=8, **RUN)
    torch.testing.assert_close(short.data[0], long.data[0])  # same seed, same simulated data
    exact = model.log_px(long.data[0])
    assert float(short.upper.mean()) > float(long.upper.mean()) > float(exact.mean()) - 0.05
    assert float(short.lower.mean()) < float(long.lower.mean())
    # the sandwich holds in the mean, up to the chains' standard errors (4 standard errors)
    se_lower = float(long.forward.log_px_se.square().sum().sqrt()) / 12
    se_upper = float(long.reverse.log_px_se.square().sum().sqrt()) / 12
    assert (
        float(long.lower.mean()) - 4 * se_lower
        < float(exact.mean())
        < float(long.upper.mean()) + 4 * se_upper
    )
    assert float(long.gap.mean()) < float(short.gap.mean())
    assert 0 < float(long.forward.acceptance.mean()) < 1


def test_reverse_from_the_exact_posterior_draws(ppca):
    model, x, exact = ppca
    z = model.posterior_loc(x) + torch.randn(x.shape[0], 2, dtype=x.dtype) @ model.post_scale_tril.T
    result = ais(model.model, model.exact_guide, x, num_steps=5, num_chains=2, reverse_from={"z": z}, **RUN)
    assert result.reverse and result.name == "reverse AIS-5"
    torch.testing.assert_close(result.log_px, exact, atol=1e-10, rtol=0)


# Unbiasedness of the weights with adapted step sizes. Adapting the step sizes on the chains whose
# weights are accumulated biases them, and these settings make it show: two chains per data point,
# so that each pulls hard on its step size; a step size of 0.6, well above the adapted ~0.4; 100
# steps. On the two tests below that rule gave E[w] / p(x) = 0.9855 +- 0.0015 forward and
# E[w] p(x) = 0.9905 +- 0.0014 in reverse (9.9 and 6.6 standard errors below 1; 6 to 10 with other
# seeds), the pilot's fixed schedule 1.0005 +- 0.0014 and 1.0009 +- 0.0014.
UNBIASED = dict(num_steps=100, num_chains=2, step_size=0.6, adapt_step_size=True, **RUN)


def _mean_and_se(ratios):
    """Mean of the per-datapoint means of ``ratios`` ``(N, K)``, and its standard error: the data
    points are independent, the chains of one data point need not be (they share the schedule of
    step sizes, and in reverse their start)."""
    per_datapoint = ratios.mean(1)
    return float(per_datapoint.mean()), float(per_datapoint.std()) / math.sqrt(len(per_datapoint))


def test_forward_ais_weights_are_unbiased_with_adapted_step_sizes():
    model = PPCA()
    x = model.sample(8192, seed=2)
    # the mean-field guide is wider than the posterior in every direction, so p(x, z) / q(z) and the
    # AIS weights are bounded, and the ratios w / p(x) have a finite variance
    result = ais(model.model, model.diagonal_guide(), x, **UNBIASED)
    # the pilot did adapt the step sizes, every one down from 0.6 (jittered: acceptances vary more)
    assert (result.step_size < UNBIASED["step_size"]).all() and result.step_size.median() < 0.45
    mean, se = _mean_and_se(torch.exp(result.log_weights - model.log_px(x)[:, None]))
    # E[w] = p(x): the mean ratio is 1 within 4 standard errors (se about 0.0015 here)
    assert abs(mean - 1) < 4 * se, (mean, se)


def test_reverse_ais_weights_are_unbiased_with_adapted_step_sizes():
    model = PPCA()
    x = model.sample(8192, seed=2)
    g = torch.Generator().manual_seed(3)
    z = model.posterior_loc(x) + torch.randn(len(x), 2, generator=g, dtype=x.dtype) @ model.post_scale_tril.T
    # reverse AIS from an exact posterior draw is forward AIS on the reversed path, from the
    # normalized posterior to the unnormalized f_0 = q: its weights (stored as they are, the
    # estimate being -log of their mean) have E[w] = 1 / p(x). A guide narrower than the posterior
    # in every direction keeps q(z) / p(x, z) and so the weights bounded
    result = ais(model.model, model.diagonal_guide(widen=0.8), x, reverse_from={"z": z}, **UNBIASED)
    assert (result.step_size < 0.5).all()
    mean, se = _mean_and_se(torch.exp(result.log_weights + model.log_px(x)[:, None]))
    # E[w] p(x) = 1 within 4 standard errors (se about 0.0014 here)
    assert abs(mean - 1) < 4 * se, (mean, se)


def test_the_pilot_runs_beside_the_chains(ppca, monkeypatch):
    from pyrovae.infer import hmc

    model, x, _ = ppca
    z = model.posterior_loc(x)  # any value will do for counting
    transitions, original = [], hmc.hmc_transition

    def counted(path, state, *args):
        transitions.append(state.u.shape[0])
        return original(path, state, *args)

    monkeypatch.setattr(hmc, "hmc_transition", counted)
    ais(model.model, model.diagonal_guide(), x, num_steps=7, num_chains=8, **RUN)
    # the T - 1 transitions, each of the 8 chains and the pilot's 2 together: no second pass
    assert transitions == [8 + 2] * 6
    transitions.clear()
    result = ais(
        model.model, model.diagonal_guide(), x, num_steps=7, num_chains=8, reverse_from={"z": z}, **RUN
    )
    # in reverse the pilot first runs forward alone (it must not start from the exact posterior draws), then
    # back beside the chains
    assert transitions == [2] * 6 + [8 + 2] * 6
    assert result.num_chains == 8 and result.pilot_chains == 2 and "a pilot of 2" in str(result)


def test_result_object(ppca, forward_runs, tmp_path):
    result = forward_runs[10]
    assert isinstance(result, AIS) and result.num_chains == 256 and result.name == "AIS-10"
    text = str(result)
    assert "lower bound" in text and "256 chains" in text and "acceptance" in text
    df = result.to_dataframe()
    assert list(df.columns) == ["log_px", "log_px_se", "ess", "acceptance", "step_size"] and len(df) == 12
    ds = result.to_xarray()
    assert ds["log_weights"].shape == (12, 256) and ds.attrs["num_steps"] == 10
    result.to_netcdf(tmp_path / "ais.nc")
    assert math.isnan(forward_runs[1].acceptance[0])  # one step: no transition


def test_bdmc_result_object():
    model = PPCA()
    result = bdmc(model.model, model.diagonal_guide(), 4, num_steps=2, num_chains=2, **RUN)
    assert isinstance(result, BDMC)
    assert list(result.to_dataframe().columns)[:3] == ["lower", "upper", "gap"]
    assert "gap" in str(result) and result.to_json_dict()["num_data"] == 4
    assert set(result.to_xarray().dims) == {"simulated", "chain"}
    back = BDMC.from_xarray(result.to_xarray())
    assert torch.equal(back.gap, result.gap) and back.forward.num_steps == 2 and back.reverse.reverse
    assert result.data[0].shape == (4, 6) and result.data[0].device.type == "cpu"


def test_schedules():
    for name in ("sigmoid", "linear"):
        betas = annealing_schedule(name, 10)
        assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 11 and (betas.diff() > 0).all()
    assert annealing_schedule([0, 0.5, 1], 1).tolist() == [0, 0.5, 1]
    with pytest.raises(ConfigError, match="schedule"):
        annealing_schedule("cosine", 10)
    with pytest.raises(ConfigError, match="from 0 to 1"):
        annealing_schedule([0.2, 1], 1)


def test_discrete_latent_is_refused():
    m = Mixture()
    with pytest.raises(ConfigError, match="discrete"):
        ais(m.model, m.guide(), m.sample(3), num_steps=2, progress=False)


def test_bad_options(ppca):
    model, x, _ = ppca
    for kwargs, match in [
        (dict(num_steps=0), "num_steps"),
        (dict(num_chains=0), "num_chains"),
        (dict(start="posterior"), "start"),
        (dict(target_accept=1.5), "target_accept"),
        (dict(reverse_from={}), "reverse_from"),
    ]:
        with pytest.raises(ConfigError, match=match):
            ais(model.model, model.exact_guide, x, progress=False, **kwargs)
    with pytest.raises(ConfigError, match="data_sites"):
        bdmc(model.model, model.exact_guide, 3, data_sites=("y",), progress=False)


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_ais_bdmc_and_bounds_run_on_mixture_priors(prior):
    # a MixtureSameFamily prior: its latent is sampled in the unconstrained space of its components
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,), prior=prior, prior_components=3)
    x = pyrovae.load("digits", "test").batch(torch.arange(4))
    run = dict(num_steps=3, num_chains=2, leapfrog_steps=2, progress=False, seed=0)
    assert torch.isfinite(ais(vae.model, vae.guide, x, **run).log_px).all()
    assert torch.isfinite(bdmc(vae.model, vae.guide, 3, **run).gap).all()
    ladder = pyrovae.bounds(
        vae.model, vae.guide, x, ks=(1, 4), ais_steps=3, ais_chains=2, progress=False, seed=0
    )
    assert torch.isfinite(ladder.values["AIS-3"]).all()


# ---------------------------------------------------------------------------------------------------------
# precision: the model of issue 27 (examples/ais_bdmc.py), where the error of AIS is known exactly


@pytest.fixture(scope="module")
def linear_gaussian():
    """PPCA with 10-dimensional data and 3 latents, 20 data points and a mean-field guide whose means are
    moved by 0.5 and whose scales are 0.7 times the posterior's; AIS with 16 chains and 10 leapfrog steps."""
    model = PPCA(data_dim=10, latent_dim=3)
    x = model.sample(20)
    exact = model.log_px(x)

    def errors(num_steps: int, **options) -> torch.Tensor:
        run = dict(num_steps=num_steps, num_chains=16, leapfrog_steps=10, seed=0, progress=False)
        return ais(model.model, offset_guide(model), x, **run, **options).log_px.double() - exact

    return errors


def spread(errors: torch.Tensor) -> tuple[float, float, float, float]:
    """The mean error and its standard error, and the standard deviation of the errors over the data points
    and its standard error (sd / sqrt(2 (n - 1)), for about normal errors)."""
    n, sd = len(errors), float(errors.std())
    return float(errors.mean()), sd / math.sqrt(n), sd, sd / math.sqrt(2 * (n - 1))


def test_default_ais_1000_is_within_a_few_hundredths_of_a_nat_per_point(linear_gaussian):
    mean, mean_se, sd, sd_se = spread(linear_gaussian(1000))
    # measured: mean +0.001 (se 0.007), sd 0.031 (se 0.005); before issue 27, mean -0.11 and sd 0.098.
    # The spread is bounded with two of its standard errors to spare; the mean error at the issue's 0.02
    # (three of its standard errors from 0 would allow 0.022, about what the measured mean leaves)
    assert sd + 2 * sd_se <= 0.05, (sd, sd_se)
    assert abs(mean) <= 0.02, (mean, mean_se)


def test_default_ais_200_beats_every_fixed_step_size_of_the_issue(linear_gaussian):
    _, _, sd, sd_se = spread(linear_gaussian(200))
    # the best fixed step size in the issue's table (0.05): a spread of 0.121; measured 0.066 (se 0.011);
    # before, 0.37: adapting toward acceptance 0.65 made trajectories 14 times the posterior's scale
    assert sd + 2 * sd_se <= 0.121, (sd, sd_se)


def test_a_jittered_step_size_escapes_the_resonance_of_a_fixed_trajectory(linear_gaussian):
    fixed = dict(adapt_step_size=False, step_size=0.1)
    _, _, resonant, _ = spread(linear_gaussian(200, step_size_jitter=0.0, **fixed))
    _, _, sd, sd_se = spread(linear_gaussian(200, **fixed))
    # 10 leapfrog steps of 0.1: a trajectory near one turn of the dynamics at the posterior's scale, which
    # brings a chain back near its start: a spread of 0.48 over the points without jitter, 0.14 (se 0.02)
    # with it; both fixed in advance, so both unbiased
    assert sd + 2 * sd_se < resonant / 2, (sd, sd_se, resonant)


def test_anneal_refuses_to_adapt_without_a_pilot(ppca):
    from pyrovae.infer.hmc import AnnealingPath, anneal
    from pyrovae.infer.pair import Pair

    model, x, _ = ppca
    pair = Pair(model.model, model.diagonal_guide(), (x,), num_data=len(x))
    path = AnnealingPath(pair, (x,), {}, 2, "guide", True)
    betas = annealing_schedule("linear", 3)
    with pytest.raises(ConfigError, match="needs a pilot"):
        anneal(path, path.flatten(path.values), betas, 2, torch.full((2, len(x)), 0.1), lambda n: None, 0.65)
