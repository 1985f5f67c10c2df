"""The sigmoid belief network: sites and plates, the exact log p(x) of a tiny SBN by enumeration
against the importance-sampled estimate, the baselines, training and evaluation."""

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
from pyrovae import SBN
from pyrovae.errors import ConfigError, DataError
from pyrovae.handlers import scale_data
from pyrovae.infer.pair import trace_pair

PIXELS, SIZES = 6, (3, 2)


def tiny_sbn(seed: int = 0, **kwargs) -> SBN:
    """A 6-pixel SBN of layers of 3 and 2 units in float64: the model's weights spread (a peaked
    posterior), the guide's small (a broad proposal over the 32 states, far from the posterior)."""
    torch.manual_seed(seed)
    sbn = SBN(PIXELS, latent_sizes=SIZES, **kwargs).double()
    with torch.no_grad():
        for name, p in sbn.named_parameters():
            if not name.startswith("baseline"):
                p.normal_(0.0, 0.3 if name.startswith("recognition") else 1.0)
    return sbn


def binary(n: int, seed: int = 1) -> torch.Tensor:
    return binary_pixels(n, PIXELS, seed)


def exact_log_px(sbn: SBN, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(x_n) = \log \sum_{h_1, h_2} p(h_2)\, p(h_1 \mid h_2)\, p(x_n \mid h_1)` over all
    :math:`2^5` states, from the SBN's parameters directly."""
    terms = []
    for bits in itertools.product((0.0, 1.0), repeat=sum(SIZES)):
        state = torch.tensor(bits, dtype=torch.float64)
        h1, h2 = state[: SIZES[0]], state[SIZES[0] :]
        log_joint = (
            dist.Bernoulli(logits=sbn.top_logits).log_prob(h2).sum()
            + dist.Bernoulli(logits=sbn.transitions[0](h2)).log_prob(h1).sum()
            + dist.Bernoulli(logits=sbn.decoder(h1)).log_prob(x).sum(-1)
        )
        terms.append(log_joint)
    return torch.stack(terms).logsumexp(0)


def test_sites_shapes_and_plates():
    sbn, x = tiny_sbn(), binary(5)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(sbn.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(sbn.model, trace=guide_trace)).get_trace(x)
    assert [n for n, s in guide_trace.nodes.items() if s["type"] == "sample"] == ["data", "h1", "h2"]
    assert [n for n, s in model_trace.nodes.items() if s["type"] == "sample"] == ["data", "h2", "h1", "x"]
    for trace in (model_trace, guide_trace):
        for name, size in zip(("h1", "h2"), SIZES, strict=True):
            site = trace.nodes[name]
            assert site["value"].shape == (5, size) and set(site["value"].unique().tolist()) <= {0.0, 1.0}
            assert site["fn"].batch_shape == (5,) and site["fn"].event_shape == (size,)
            assert not site["fn"].has_rsample
            assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    assert model_trace.nodes["x"]["is_observed"] and model_trace.nodes["x"]["fn"].event_shape == (PIXELS,)
    # in a particle plate, every site broadcasts on the left
    model_trace, guide_trace = trace_pair(sbn.model, sbn.guide, (x,), {}, num_particles=4, particle_dim=-2)
    for trace in (model_trace, guide_trace):
        assert trace.nodes["h1"]["value"].shape == (4, 5, 3)
        site = trace.nodes["h2"]
        assert site["fn"].log_prob(site["value"]).shape == (4, 5)
    assert guide_trace.nodes["h2"]["fn"].batch_shape == (4, 5)
    assert model_trace.nodes["x"]["fn"].batch_shape == (4, 5)


@pytest.mark.parametrize("seed", [0, 1])
def test_log_likelihood_matches_enumeration(seed):
    """The importance-sampled estimate with the sampled Bernoulli latents weighed by their own
    log-densities matches the exact log p(x) of every data point within 4 of its standard errors,
    for two guides (the estimate is right whatever the proposal), in chunks of data and particles."""
    sbn, x = tiny_sbn(seed), binary(5)
    exact = exact_log_px(sbn, x)
    ll = pyrovae.log_likelihood(
        sbn.model,
        sbn.guide,
        x,
        num_samples=2000,
        seed=0,
        batch_size=2,
        particle_batch_size=700,
        progress=False,
    )
    error = (ll.log_px - exact).abs()
    assert (error < 4 * ll.log_px_se).all(), (ll.log_px, exact, ll.log_px_se)
    assert (ll.log_px_se < 0.1).all() and (ll.khat < 0.7).all()  # 4 se: under 0.4 nats


def test_baseline_is_attached_scaled_and_shaped():
    sbn, x = tiny_sbn(), binary(5)
    with torch.no_grad():
        sbn.baseline.net[-1].bias.copy_(torch.tensor([-2.0, -1.0]))
    values = sbn.baseline(x)
    trace = poutine.trace(scale_data(sbn.guide, scale=3.0)).get_trace(x)
    for i, name in enumerate(("h1", "h2")):
        got = trace.nodes[name]["infer"]["baseline"]["baseline_value"]
        torch.testing.assert_close(got, 3.0 * values[:, i])
    # the shape of the downstream cost: particles and data; leading 1s dropped (one data point)
    _, guide_trace = trace_pair(sbn.model, sbn.guide, (x,), {}, num_particles=4, particle_dim=-2)
    assert guide_trace.nodes["h1"]["infer"]["baseline"]["baseline_value"].shape == (4, 5)
    one = poutine.trace(sbn.guide).get_trace(x[:1])
    assert one.nodes["h2"]["infer"]["baseline"]["baseline_value"].shape == ()
    assert "baseline" not in poutine.trace(tiny_sbn(baseline=False).guide).get_trace(x).nodes["h1"]["infer"]


@pytest.mark.parametrize(
    "spec", ["tracegraph", "tracegraph:num_particles=2:vectorize_particles=true", "elbo"]
)
def test_fit_on_digits(spec):
    torch.manual_seed(0)
    train = pyrovae.load("digits", "train")
    sbn = SBN((1, 8, 8), latent_sizes=(8, 4))
    result = pyrovae.fit(sbn, train, epochs=1, estimator=spec, batch_size=200, progress=False)
    assert math.isfinite(result.history["train_loss"].iloc[-1])
    moved = sbn.baseline.net[-1].bias.detach().abs().sum()
    assert (moved > 0) == spec.startswith("tracegraph")  # only TraceGraph_ELBO fits the baseline


def test_reparameterized_estimators_refuse_it():
    with pytest.raises(ConfigError, match="reparameterized"):
        pyrovae.fit(tiny_sbn(), binary(8), epochs=1, estimator="iwae:k=2", batch_size=4, progress=False)


def test_bounds_and_compare():
    sbn, x = tiny_sbn(), binary(6)
    ladder = pyrovae.bounds(sbn.model, sbn.guide, x, ks=(1, 10), seed=0, progress=False)
    assert ladder.mean["ELBO"] <= ladder.mean["IWAE-10"] + 0.5
    comparison = pyrovae.compare(
        sbn.model, sbn.guide, x, ["elbo", "tracegraph"], num_repeats=3, progress=False
    )
    table = comparison.table
    assert list(table.index) == ["elbo", "tracegraph"]
    assert table["bound"].map(math.isfinite).all()
    # the baseline is neither the guide's nor the model's: it is no part of log w
    guide_params = sum(p.numel() for p in sbn.recognition.parameters())
    assert comparison.num_guide_params == guide_params


def test_sample_and_reconstruct():
    sbn = SBN((1, 8, 8), latent_sizes=(8, 4), hidden=(16,))
    x = pyrovae.load("digits", "test").batch(torch.arange(3))
    for images in (sbn.sample(5), sbn.reconstruct(x)):
        assert images.shape[1:] == (1, 8, 8) and ((images >= 0) & (images <= 1)).all()
    assert sbn.sample(5).shape[0] == 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latent_sizes": (0,)}, "latent_sizes"),
        ({"latent_sizes": ()}, "latent_sizes"),
        ({"latent_sizes": (200, 2.5)}, "latent_sizes"),
        ({"latent_sizes": "200"}, "latent_sizes"),
        ({"hidden": (0,)}, "hidden"),
        ({"activation": "sigmoid2"}, "activation"),
        ({"baseline": "yes"}, "baseline"),
        ({"likelihood": "poisson"}, "likelihood"),
    ],
)
def test_option_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SBN(PIXELS, **kwargs)


def test_data_mistakes():
    sbn = tiny_sbn()
    with pytest.raises(ConfigError, match="needs the data"):
        sbn.guide(batch_size=3)
    with pytest.raises(DataError, match="event_shape"):
        sbn.check_data(torch.zeros(4, 7, dtype=torch.float64))
    with pytest.raises(DataError, match="not binary"):
        sbn.check_data(torch.full((4, PIXELS), 0.5))
