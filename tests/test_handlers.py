"""Effect handlers that scale sites by plate membership (minibatches) and by observation (KL weight)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pyrovae.handlers import DATA_PLATE, in_plate, scale_data, scale_latents

N, B = 12, 4


def model(x: torch.Tensor, plate: str = DATA_PLATE):
    """A global latent ``g`` outside the plate; a local latent ``z`` and observed ``x`` inside it."""
    g = pyro.sample("g", dist.Normal(0.0, 1.0))
    with pyro.plate(plate, len(x)):
        z = pyro.sample("z", dist.Normal(g, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def data() -> torch.Tensor:
    return torch.randn(N, generator=torch.Generator().manual_seed(0))


def scales(fn, *args) -> dict[str, float]:
    trace = poutine.trace(fn).get_trace(*args)
    return {
        name: float(site["scale"])
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and name in ("g", "z", "x")
    }


def test_scale_data_scales_only_sites_in_the_data_plate():
    pyro.set_rng_seed(0)
    with scale_data(scale=3.0):
        got = scales(model, data())
    assert got == {"g": 1.0, "z": 3.0, "x": 3.0}


def test_scale_data_acts_on_the_named_plate_only():
    pyro.set_rng_seed(0)
    with scale_data(scale=3.0):
        assert scales(model, data(), "obs") == {"g": 1.0, "z": 1.0, "x": 1.0}
    with scale_data(scale=3.0, plate="obs"):
        assert scales(model, data(), "obs") == {"g": 1.0, "z": 3.0, "x": 3.0}


def test_scale_latents_scales_only_unobserved_sites():
    pyro.set_rng_seed(0)
    with scale_latents(beta=0.25):
        assert scales(model, data()) == {"g": 0.25, "z": 0.25, "x": 1.0}
    with scale_latents(beta=1.0):
        assert scales(model, data()) == {"g": 1.0, "z": 1.0, "x": 1.0}


def test_handlers_compose_multiplicatively_and_work_as_decorators():
    pyro.set_rng_seed(0)
    scaled = scale_latents(scale_data(model, scale=3.0), beta=0.5)
    assert scales(scaled, data()) == {"g": 0.5, "z": 1.5, "x": 3.0}

    # and compose with the plate's own subsampling scale
    def subsampled(x):
        with pyro.plate(DATA_PLATE, N, subsample_size=B):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with scale_data(scale=2.0):
        trace = poutine.trace(subsampled).get_trace(None)
    assert float(trace.nodes["z"]["scale"]) == pytest.approx(2.0 * N / B)


def test_in_plate():
    pyro.set_rng_seed(0)
    trace = poutine.trace(model).get_trace(data())
    assert in_plate(trace.nodes["z"], DATA_PLATE) and in_plate(trace.nodes["x"], DATA_PLATE)
    assert not in_plate(trace.nodes["g"], DATA_PLATE)
    assert not in_plate(trace.nodes["z"], "other")


def log_joint(x: torch.Tensor, z: torch.Tensor, g: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """log p(g) + sum_n log p(z_n, x_n | g) at fixed values (a deterministic function of the batch)."""
    conditioned = poutine.condition(model, {"g": g, "z": z})
    if scale is not None:
        conditioned = scale_data(conditioned, scale=scale)
    return poutine.trace(conditioned).get_trace(x).log_prob_sum()


def test_a_scaled_minibatch_estimates_the_full_data_log_density_without_bias():
    x = data()
    g = torch.tensor(0.3)
    z = torch.randn(N, generator=torch.Generator().manual_seed(1))
    full = log_joint(x, z, g)
    global_term = dist.Normal(0.0, 1.0).log_prob(g)

    # one minibatch: the local terms are multiplied by N/B, the global term is counted once
    idx = torch.tensor([3, 7, 0, 10])
    scaled = log_joint(x[idx], z[idx], g, scale=N / B)
    unscaled = log_joint(x[idx], z[idx], g)
    torch.testing.assert_close(scaled - global_term, N / B * (unscaled - global_term))

    # the minibatch estimate is unbiased: its mean over all minibatches of a uniformly random
    # partition into N/B batches (each data point in exactly one) is exactly the full-data value
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(2))
    estimates = torch.stack([log_joint(x[b], z[b], g, scale=N / B) for b in perm.split(B)])
    torch.testing.assert_close(estimates.mean(), full)
