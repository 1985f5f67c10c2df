"""Tests of :func:`pyrovae.infer.importance.log_likelihood` against models with exact log p(x).

Statistical tests use a fixed seed and a tolerance of 4 standard errors, each estimate's own
delta-method ``log_px_se``: the IWAE-K estimate is approximately normal around log p(x) with
that standard deviation (its bias, about se^2 / 2, is negligible at K = 5000), so a correct
estimator fails one data point's check with probability about 6e-5.
"""

from __future__ import annotations

import json
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from pyro.infer.util import is_validation_enabled
from toy_models import (
    DTYPE,
    PPCA,
    Mixture,
    TwoLayer,
    TwoViewPPCA,
    enumerated_guide,
    enumerated_model,
    global_latent_guide,
    global_latent_model,
    no_plate_guide,
    no_plate_model,
)

import pyrovae
from pyrovae.errors import ConfigError, DataError
from pyrovae.handlers import scale_data, scale_latents
from pyrovae.infer.diagnostics import reduce_log_weights
from pyrovae.infer.importance import LogLikelihood, LogWeights, log_likelihood

torch.set_num_threads(2)
RUN = dict(progress=False, seed=0)


def assert_within_4se(result: LogLikelihood, exact: torch.Tensor) -> None:
    z = (result.log_px - exact) / result.log_px_se
    assert torch.all(z.abs() < 4), f"standardized errors: {z}"


@pytest.fixture(scope="module")
def ppca(make_ppca):
    return make_ppca(25)


# ---------------------------------------------------------------------------------------------
# exact posterior as guide: every weight is p(x)


def test_exact_posterior_weights_equal_log_px(ppca):
    model, x = ppca
    result = log_likelihood(model.model, model.exact_guide, x, 200, return_log_weights=True, **RUN)
    exact = model.log_px(x)
    assert result.log_weights.shape == (25, 200) and result.log_weights.dtype == DTYPE
    torch.testing.assert_close(result.log_weights, exact[:, None].expand(25, 200), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.log_px, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.ess, torch.full((25,), 200.0, dtype=DTYPE))
    assert torch.all(result.log_px_se < 1e-6)
    assert torch.all(result.khat == -math.inf)  # flat weights: no tail to fit
    assert "WARNING" not in result.summary()


@pytest.mark.parametrize("case", ["two_layer", "two_views", "mixture"])
def test_exact_posterior_other_models(case):
    if case == "two_layer":
        m = TwoLayer()
        x = m.sample(10)
        data, guide, exact = x, m.guide(), m.log_px(x)
    elif case == "two_views":
        m = TwoViewPPCA()
        x = m.sample(10)
        data, guide, exact = m.views(x), m.exact_guide, m.log_px(x)
    else:
        m = Mixture()
        x = m.sample(10)
        data, guide, exact = x, m.guide(mix=0.0, widen=1.0), m.log_px(x)
    result = log_likelihood(m.model, guide, data, 100, return_log_weights=True, **RUN)
    torch.testing.assert_close(result.log_weights, exact[:, None].expand(10, 100), atol=1e-6, rtol=0)


def test_nested_plates(ppca):
    # data plate at dim -2, a plate over coordinates at -1: particles go to dim -3
    model, x = ppca
    result = log_likelihood(
        model.pixel_plate_model, model.pixel_plate_guide, x, 20, return_log_weights=True, **RUN
    )
    torch.testing.assert_close(result.log_weights, model.log_px(x)[:, None].expand(25, 20), atol=1e-6, rtol=0)
    assert LogWeights(model.pixel_plate_model, model.pixel_plate_guide, x, 20).pair.particle_dim == -3


# ---------------------------------------------------------------------------------------------
# imperfect guides: estimates within 4 of their own standard errors


def test_imperfect_guide_within_4se(ppca):
    model, x = ppca
    result = log_likelihood(model.model, model.diagonal_guide(), x, 5000, **RUN)
    assert result.log_px.shape == (25,)
    assert torch.all(result.ess < 5000) and torch.all(result.log_px_se > 0)
    assert_within_4se(result, model.log_px(x))
    assert torch.all(result.khat < 0.7)


def test_discrete_latent_guide():
    m = Mixture()
    x = m.sample(20)
    result = log_likelihood(m.model, m.guide(), x, 5000, **RUN)
    assert_within_4se(result, m.log_px(x))


# ---------------------------------------------------------------------------------------------
# enumerated discrete latents: w_k = sum_c p(x, c, z_k^(c)) / q(z_k^(c) | x, c)


@pytest.mark.parametrize("mix", [0.0, 0.6])
def test_enumerated_guide_with_exact_conditionals_is_exact(mix):
    # q(z | x, c) exact: each term p(x, c, z) / q(z | x, c) = p(x, c), so every weight is p(x),
    # whatever q(c | x) (mix = 0.6 is far from the posterior)
    m = Mixture()
    x = m.sample(10)
    guide = m.guide(mix=mix, widen=1.0, enumerate=True)
    result = log_likelihood(m.model, guide, x, 50, return_log_weights=True, **RUN)
    assert result.log_weights.shape == (10, 50)
    torch.testing.assert_close(result.log_weights, m.log_px(x)[:, None].expand(10, 50), atol=1e-10, rtol=0)


def test_enumerated_guide_within_4se():
    m = Mixture()
    x = m.sample(20)
    guide = m.guide(widen=1.3, enumerate=True)
    result = log_likelihood(m.model, guide, x, 5000, **RUN)
    assert_within_4se(result, m.log_px(x))
    # chunked particles and data give the same distribution: here, identical exact-case weights
    exact = m.guide(widen=1.0, enumerate=True)
    chunked = log_likelihood(m.model, exact, x, 30, batch_size=7, particle_batch_size=4, **RUN)
    torch.testing.assert_close(chunked.log_px, m.log_px(x), atol=1e-10, rtol=0)


def test_model_enumeration_is_summed_out():
    # c enumerated in the model, no other latent: log p(x) = logsumexp_c log p(c) p(x | c)
    x = torch.randn(6, dtype=DTYPE)
    result = log_likelihood(enumerated_model, enumerated_guide, x, 5, return_log_weights=True, **RUN)
    means = torch.tensor([-1.0, 1.0], dtype=DTYPE)
    exact = torch.logsumexp(dist.Normal(means, 1.0).log_prob(x[:, None]) - math.log(2), -1)
    torch.testing.assert_close(result.log_weights, exact[:, None].expand(6, 5), atol=1e-12, rtol=0)


def test_two_layer_imperfect_guide():
    m = TwoLayer()
    x = m.sample(20)
    result = log_likelihood(m.model, m.guide(widen=1.3), x, 5000, **RUN)
    assert result.log_px.shape == result.ess.shape == result.khat.shape == (20,)
    assert torch.isfinite(result.log_px).all()
    assert_within_4se(result, m.log_px(x))


# ---------------------------------------------------------------------------------------------
# chunking


def test_reduction_is_chunk_invariant():
    # heavy-tailed log-weights, so that every statistic is non-trivial
    g = torch.Generator().manual_seed(0)
    log_w = 3 * torch.distributions.StudentT(3.0).sample((37, 500)).to(DTYPE) + torch.randn(
        37, 1, generator=g
    )
    whole = LogLikelihood.from_log_weights(log_w)
    for chunk in (1, 7, 36, 37, 100):
        part = LogLikelihood.from_log_weights(log_w, chunk=chunk)
        for name in ("log_px", "log_px_se", "ess", "khat"):
            assert torch.equal(getattr(part, name), getattr(whole, name)), (name, chunk)
    torch.testing.assert_close(whole.log_px, torch.logsumexp(log_w, -1) - math.log(500))
    torch.testing.assert_close(
        whole.ess, torch.logsumexp(log_w, -1).mul(2).sub(torch.logsumexp(2 * log_w, -1)).exp()
    )


@pytest.mark.parametrize("batch_size, particle_batch_size", [(None, None), (2, 97), (4, 100), (25, 1000)])
def test_log_likelihood_is_chunk_invariant(ppca, batch_size, particle_batch_size):
    model, x = ppca
    reference = log_likelihood(model.model, model.exact_guide, x, 1000, **RUN)
    result = log_likelihood(
        model.model,
        model.exact_guide,
        x,
        1000,
        batch_size=batch_size,
        particle_batch_size=particle_batch_size,
        return_log_weights=True,
        **RUN,
    )
    torch.testing.assert_close(result.log_px, reference.log_px, atol=1e-10, rtol=0)
    torch.testing.assert_close(result.ess, reference.ess, atol=1e-8, rtol=0)
    # the estimate is exactly the log-mean-exp of the returned weights
    assert torch.equal(result.log_px, torch.logsumexp(result.log_weights, -1) - math.log(1000))


def test_chunks_derived_from_max_memory(ppca):
    model, x = ppca
    tiny = LogWeights(model.model, model.exact_guide, x, 40, max_memory=1)
    assert (tiny.batch_size, tiny.particle_batch_size) == (1, 1)
    big = LogWeights(model.model, model.exact_guide, x, 40, max_memory=2**30)
    assert big.particle_batch_size == 40 and big.batch_size == 25
    result = log_likelihood(model.model, model.exact_guide, x[:3], 40, max_memory=1, **RUN)
    torch.testing.assert_close(result.log_px, model.log_px(x[:3]), atol=1e-6, rtol=0)


def test_imperfect_guide_log_px_matches_weights(ppca):
    model, x = ppca
    result = log_likelihood(
        model.model,
        model.diagonal_guide(),
        x,
        300,
        batch_size=3,
        particle_batch_size=64,
        return_log_weights=True,
        **RUN,
    )
    again = LogLikelihood.from_log_weights(result.log_weights)
    for name in ("log_px", "log_px_se", "ess", "khat"):
        assert torch.equal(getattr(result, name), getattr(again, name))


def test_from_log_weights_keeps_them_detached_on_the_cpu():
    log_w = torch.randn(3, 4, dtype=DTYPE, requires_grad=True)
    kept = LogLikelihood.from_log_weights(log_w).log_weights
    assert not kept.requires_grad and kept.device.type == "cpu" and torch.equal(kept, log_w.detach())


# ---------------------------------------------------------------------------------------------
# seeds, inputs, scales


def test_seed_is_reproducible_and_isolated(ppca):
    model, x = ppca
    pyro.set_rng_seed(123)
    state = torch.get_rng_state()
    a = log_likelihood(model.model, model.diagonal_guide(), x, 50, **RUN)
    assert torch.equal(torch.get_rng_state(), state)
    b = log_likelihood(model.model, model.diagonal_guide(), x, 50, **RUN)
    assert torch.equal(a.log_px, b.log_px)


def test_global_modes_are_left_alone(ppca):
    # grad mode and Pyro's validation are switched off inside each chunk of the sweep, and back after
    model, x = ppca
    before = (torch.is_grad_enabled(), is_validation_enabled())
    weights = LogWeights(model.model, model.exact_guide, x, 10, batch_size=1)
    inside = weights.sweep.map(
        lambda chunk: torch.tensor([torch.is_grad_enabled(), is_validation_enabled()]).expand(chunk.size, 2)
    )
    assert not inside.any()
    assert (torch.is_grad_enabled(), is_validation_enabled()) == before


def test_dataset_inputs(ppca):
    model, x = ppca

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i]

    class Batched(Items):
        def batch(self, index):
            return x[index]

    reference = log_likelihood(model.model, model.diagonal_guide(), x, 100, batch_size=4, **RUN)
    for data in (Items(), Batched(), torch.utils.data.TensorDataset(x), (x,)):
        result = log_likelihood(model.model, model.diagonal_guide(), data, 100, batch_size=4, **RUN)
        assert torch.equal(result.log_px, reference.log_px)


def test_scales_are_ignored(ppca):
    # minibatch scaling and KL annealing must not change per-datapoint nats
    model, x = ppca
    exact = model.log_px(x)
    scaled = scale_latents(scale_data(model.model, scale=100.0), beta=0.1)
    guide = scale_latents(scale_data(model.exact_guide, scale=100.0), beta=0.1)
    result = log_likelihood(scaled, guide, x, 20, **RUN)
    torch.testing.assert_close(result.log_px, exact, atol=1e-6, rtol=0)


def test_model_args_and_kwargs():
    m = PPCA()
    x = m.sample(5)

    def model(x, shift, *, scale):
        m.model(x * scale + shift)

    def guide(x, shift, *, scale):
        m.exact_guide(x * scale + shift)

    for compile in ("auto", "graph"):  # "graph" records from the second chunk: the arguments are constants
        options = dict(model_args=(1.0,), model_kwargs={"scale": 2.0}, batch_size=1, compile=compile)
        result = log_likelihood(model, guide, x, 10, **options, **RUN)
        torch.testing.assert_close(result.log_px, m.log_px(2 * x + 1), atol=1e-6, rtol=0)


def test_model_kwargs_tensors_go_to_the_device():
    m = PPCA()
    x = m.sample(5)

    def model(x, *, scale):
        m.model(x * scale)

    def guide(x, *, scale):
        m.exact_guide(x * scale)

    kwargs = {"scale": torch.full((6,), 2.0, dtype=DTYPE)}
    weights = LogWeights(model, guide, x, 10, model_kwargs=kwargs, device="cpu")
    assert weights.model_kwargs is not kwargs and weights.model_kwargs["scale"].device == weights.sweep.device
    result = log_likelihood(model, guide, x, 10, model_kwargs=kwargs, device="cpu", **RUN)
    torch.testing.assert_close(result.log_px, m.log_px(2 * x), atol=1e-6, rtol=0)


def test_float32_data_runs_in_float32():
    m = PPCA()
    x = m.sample(4)

    def model(x):
        m.model(x.double())

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    def model32(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ m.W.float().T, 1.0).to_event(1), obs=x)

    result = log_likelihood(model32, guide, x.float(), 10, return_log_weights=True, **RUN)
    assert result.log_weights.dtype == torch.float32 and result.log_px.dtype == torch.float64


# ---------------------------------------------------------------------------------------------
# errors


def test_global_latent_is_refused():
    x = torch.randn(5, dtype=DTYPE)
    with pytest.raises(ConfigError, match=r"latent site 'mu' of the model lies outside the data plate"):
        log_likelihood(global_latent_model, global_latent_guide, x, 10, **RUN)


def test_missing_data_plate_is_refused():
    x = torch.randn(5, 3, dtype=DTYPE)
    with pytest.raises(ConfigError, match=r"no sample site .* plate named 'data'"):
        log_likelihood(no_plate_model, no_plate_guide, x, 10, **RUN)


def test_sequential_enumeration_is_refused():
    m = Mixture()

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(m.probs), infer={"enumerate": "sequential"})
            pyro.sample("z", dist.Normal(m.means[c], 1.0))

    with pytest.raises(ConfigError, match=r"site 'c' of the \w+ is enumerated with .*'sequential'"):
        log_likelihood(m.model, guide, m.sample(5), 10, **RUN)


def test_latent_missing_from_guide_is_refused(ppca):
    model, x = ppca

    def empty_guide(x):
        pass

    with pytest.raises(ConfigError, match=r"latent site 'z' of the model is not sampled by the guide"):
        log_likelihood(model.model, empty_guide, x, 10, **RUN)


def test_fixed_size_data_plate_is_refused(ppca):
    model, x = ppca

    def fixed_model(x):
        with pyro.plate("data", 25):
            pyro.sample("x", dist.Normal(torch.zeros(6, dtype=DTYPE), 1.0).to_event(1), obs=x)

    with pytest.raises(ConfigError, match=r"has size 25 when 1 data point was passed"):
        log_likelihood(fixed_model, lambda x: None, x, 10, **RUN)


def test_bad_arguments(ppca):
    model, x = ppca
    with pytest.raises(ConfigError, match="num_samples"):
        log_likelihood(model.model, model.exact_guide, x, 0, **RUN)
    with pytest.raises(DataError, match="leading"):
        log_likelihood(model.model, model.exact_guide, (x, x[:3]), 10, **RUN)
    with pytest.raises(DataError, match="no data points"):
        log_likelihood(model.model, model.exact_guide, x[:0], 10, **RUN)


def test_observed_values_outside_support_are_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    x = torch.zeros(6, 3)
    x[4, 1] = 0.5
    with pytest.raises(DataError, match="'x' holds values outside the support"):
        log_likelihood(model, guide, x, 10, batch_size=2, **RUN)


# ---------------------------------------------------------------------------------------------
# the result object


@pytest.fixture(scope="module")
def bad_result(ppca):
    # a much too narrow, shifted guide: heavy-tailed weights
    model, x = ppca
    return log_likelihood(
        model.model, model.diagonal_guide(shift=1.5, widen=0.3), x, 1000, return_log_weights=True, **RUN
    )


def test_summary_ends_with_one_verdict_on_khat_and_ess(bad_result):
    text = bad_result.summary()
    bad = int((bad_result.khat > 0.7).sum())
    assert bad > 0.1 * 25, "the narrow guide should give k-hat > 0.7 for most points"
    # the per-point caveat aggregated in one statement, once; the points are in the result's khat
    assert text.count("k-hat > 0.7 for") == 1 and f"k-hat > 0.7 for {bad}/25 points" in text
    assert f"IS-1000 NLL {bad_result.nll:.2f} ± {bad_result.stderr:.2f}" in text
    assert "a lower bound on log p(x)" in text and "AIS" in text and "median ESS" in text
    assert bad_result.to_json_dict()["verdict"] == bad_result.verdict() and bad_result.verdict() in text
    assert repr(bad_result) == text == str(bad_result)
    assert "N = 25" in text and "K = 1000" in text


@pytest.mark.parametrize(
    "khat, words",
    [
        ([0.2] * 20, "k-hat <= 0.7 for all 20 points, median ESS 50.0 of 100: reliable"),
        ([0.2] * 18 + [0.9] * 2, "k-hat > 0.7 for 2/20 points, median ESS 50.0 of 100: their estimates are"),
        (
            [0.9] * 3 + [0.2] * 17,
            "k-hat > 0.7 for 3/20 points, median ESS 50.0 of 100:\n  a lower bound on log p",
        ),
    ],
)
def test_the_verdict_follows_the_share_of_points_with_a_large_khat(khat, words):
    from pyrovae.infer.diagnostics import verdict

    text = verdict("IS-100", -89.281, 0.314, torch.tensor(khat), torch.full((20,), 50.0), 100)
    assert text.startswith("IS-100 NLL 89.28 ± 0.31; ") and words in text


def test_exports_round_trip(bad_result, tmp_path):
    df = bad_result.to_dataframe()
    assert list(df.columns) == ["log_px", "log_px_se", "ess", "khat"] and len(df) == 25
    assert df["log_px"].to_numpy() == pytest.approx(bad_result.log_px.numpy())
    ds = bad_result.to_xarray()
    assert ds["log_weights"].dims == ("datapoint", "sample") and ds.attrs["num_samples"] == 1000
    path = tmp_path / "ll.nc"
    bad_result.to_netcdf(path)
    assert [p.name for p in tmp_path.iterdir()] == ["ll.nc"]  # no temporary file left behind
    with xr.open_dataset(path, engine="h5netcdf") as back:
        assert back["log_px"].values == pytest.approx(bad_result.log_px.numpy())
    loaded = LogLikelihood.from_netcdf(path)
    for name in ("log_px", "log_px_se", "ess", "khat", "log_weights"):
        assert torch.equal(getattr(loaded, name), getattr(bad_result, name))
    summary = json.loads(json.dumps(bad_result.to_json_dict()))
    assert summary["nll"] == pytest.approx(-bad_result.mean) and summary["num_samples"] == 1000
    assert summary["khat_above_0_7"] == int((bad_result.khat > 0.7).sum())


def test_mean_stderr_nll(bad_result):
    assert bad_result.mean == pytest.approx(float(bad_result.log_px.mean()))
    assert bad_result.nll == -bad_result.mean
    assert bad_result.stderr == pytest.approx(float(bad_result.log_px.std()) / 5)


def test_reduce_log_weights_edge_cases():
    log_w = torch.tensor([[0.0, -math.inf, 1.0], [-math.inf] * 3, [0.0, math.nan, 1.0]], dtype=DTYPE)
    log_px, se, ess, khat = reduce_log_weights(log_w)
    assert log_px[0] == pytest.approx(math.log((1 + math.e) / 3))
    assert log_px[1] == -math.inf and torch.isnan(khat[1:]).all()
    single = reduce_log_weights(torch.zeros(2, 1))
    assert torch.isnan(single[1]).all() and torch.equal(single[2], torch.ones(2, dtype=DTYPE))


def test_a_point_without_a_khat_is_not_called_reliable():
    from pyrovae.infer.diagnostics import verdict

    khat = torch.tensor([0.2] * 19 + [math.nan])
    text = verdict("IS-100", -89.3, 0.3, khat, torch.full((20,), 50.0), 100)
    assert not text.endswith(": reliable") and "their estimates are unreliable" in text
    assert "k-hat > 0.7 or undefined (no finite log-weight) for 1/20 points" in text


def test_recorded_chunks_give_the_traced_chunks_values_exactly(load_digits):
    # compile="graph": every chunk after the first (checked) one of each image replays the recorded
    # log-weights, drawing the generator's next numbers as tracing would; the same estimates, bit for bit
    x = load_digits("test").batch(torch.arange(40))
    for model in (pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,)), pyrovae.HVAE((1, 8, 8), latent_dim=2)):
        run = dict(num_samples=300, seed=0, batch_size=4, particle_batch_size=100, progress=False)
        traced = log_likelihood(model.model, model.guide, x, **run, compile="off")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # recorded: no fallback line
            recorded = log_likelihood(model.model, model.guide, x, **run, compile="graph")
        assert torch.equal(traced.log_px, recorded.log_px) and torch.equal(traced.khat, recorded.khat)


def test_derived_particle_chunks_share_one_graph_and_a_short_last_chunk_is_not_recorded(load_digits):
    # 301 particles in the chunks max_memory allows: three of 101, the last drawing two it does not keep, so
    # that one graph serves them all; the two images of the last chunk of data (batches of 4) are traced
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    x = load_digits("test").batch(torch.arange(30))
    run = dict(seed=0, batch_size=4, max_memory=2 * 2**20, progress=False)
    weights = LogWeights(vae.model, vae.guide, x, 301, compile="graph", **run)
    assert weights.particle_batch_size == 101
    recorded = weights.estimate()
    assert weights.graphs.graphs == 1
    traced = LogWeights(vae.model, vae.guide, x, 301, compile="off", **run).estimate()
    assert all(torch.equal(a, b) for a, b in zip(recorded[:4], traced[:4], strict=True))
    # chunks of a size given: 101, 101 and 99 particles, as asked, two graphs
    run["particle_batch_size"] = 101
    weights = LogWeights(vae.model, vae.guide, x, 301, compile="graph", **run)
    recorded = weights.estimate()
    assert weights.graphs.graphs == 2
    traced = LogWeights(vae.model, vae.guide, x, 301, compile="off", **run).estimate()
    assert all(torch.equal(a, b) for a, b in zip(recorded[:4], traced[:4], strict=True))


def test_a_pair_that_reads_a_draw_in_python_is_evaluated_eagerly_with_one_line(load_digits):
    class Reading(pyrovae.VAE):
        def model(self, x):
            super().model(x)
            float(x.sum())  # a value read in Python: no graph can hold it

    vae = Reading((1, 8, 8), latent_dim=2, hidden=(16,))
    x = load_digits("test").batch(torch.arange(12))
    run = dict(num_samples=50, seed=0, batch_size=3, progress=False)
    with pytest.warns(
        UserWarning, match="compile: the pair reads a tensor's value in Python.*evaluating eagerly"
    ):
        recorded = log_likelihood(vae.model, vae.guide, x, **run, compile="graph")
    assert torch.equal(recorded.log_px, log_likelihood(vae.model, vae.guide, x, **run, compile="off").log_px)


def test_a_recorded_chunk_still_checks_its_data_against_the_support(load_digits):
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    x = load_digits("test").batch(torch.arange(40)).clone()
    x[33, 0, 0, 0] = 0.5  # in the ninth chunk of 4, long after the graph was recorded
    with pytest.raises(DataError, match="observed site 'x' holds values outside the support"):
        log_likelihood(vae.model, vae.guide, x, 50, seed=0, batch_size=4, progress=False, compile="graph")
