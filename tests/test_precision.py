"""The arithmetic precision of training and evaluation (:mod:`pyrovae.precision`)."""

from __future__ import annotations

import contextlib
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.precision import PRECISIONS, check_precision, using_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def digits(load_digits):
    return load_digits("train")


def rounded(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to bfloat16, in float32."""
    return t.to(torch.bfloat16).float()


def test_an_unknown_precision_is_refused_with_the_choices():
    for bad in ("fp16", "float32", 16):
        with pytest.raises(ConfigError, match="precision .*'highest', 'tf32', 'bf16'"):
            check_precision(bad, CPU)
    assert PRECISIONS == ("highest", "tf32", "bf16")
    with pytest.raises(ConfigError, match="precision"):
        pyrovae.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=2), 100, device="cpu", precision="half")


def test_bf16_rounds_the_products_of_float32_tensors_and_nothing_else():
    torch.manual_seed(0)
    x, w, b = torch.randn(5, 7), torch.randn(3, 7), torch.randn(3)
    x64 = x.double()
    with using_precision("bf16", CPU):
        y, z = F.linear(x, w, b), x @ w.T
        y64 = x64 @ w.double().T  # float64 is left in float64
        scale = F.softplus(y)
        log_prob = dist.Normal(y, scale).log_prob(z)
        total = log_prob.sum()
    assert y.dtype == z.dtype == torch.float32 and y64.dtype == torch.float64
    # the product of the rounded inputs, accumulated in float32, rounded to bfloat16 (within its half-ulp,
    # 2^-8 of the value) and returned in float32
    assert torch.equal(z, rounded(z)) and torch.equal(y, rounded(y))
    assert torch.allclose(z, rounded(x) @ rounded(w).T, rtol=2**-8, atol=0)
    assert torch.allclose(y, F.linear(rounded(x), rounded(w), rounded(b)), rtol=2**-8, atol=2**-8)
    assert not torch.equal(z, x @ w.T)
    assert torch.equal(y64, x64 @ w.double().T)
    # every other operation is float32 arithmetic on the products' values, as outside the block
    assert torch.equal(scale, F.softplus(y))
    assert torch.equal(log_prob, dist.Normal(y, F.softplus(y)).log_prob(z))
    assert total.dtype == torch.float32 and torch.equal(total, log_prob.sum())


def test_gradients_flow_back_through_bf16_products_in_float32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    with using_precision("bf16", CPU):
        layer(torch.randn(8, 6)).pow(2).sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("device", [CPU, CUDA], ids=["cpu", "cuda"])
def test_the_product_settings_are_set_inside_the_block_and_put_back_after_it(precision, device):
    # torch's settings can be set and read without a GPU: TF32 on CUDA for "tf32" alone, full float32 for the
    # rest, and on the CPU always (oneDNN's, which torch.set_float32_matmul_precision("medium") sets to bf16)
    backends = {
        "cuda": (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn),
        "cpu": (torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv, torch.backends.mkldnn.rnn),
    }[device.type]
    before = [b.fp32_precision for b in backends]
    with pytest.raises(RuntimeError, match="inside"), using_precision(precision, device):
        expected = "tf32" if precision == "tf32" and device.type == "cuda" else "ieee"
        assert [b.fp32_precision for b in backends] == [expected] * 3
        raise RuntimeError("inside")
    assert [b.fp32_precision for b in backends] == before
    # torch's older flags still read without an error once the block has put the settings back
    assert torch.get_float32_matmul_precision() in ("highest", "high", "medium")
    assert isinstance(torch.backends.cuda.matmul.allow_tf32, bool)


def test_blocks_nest_the_innermost_deciding():
    torch.manual_seed(0)
    x, w = torch.randn(4, 5), torch.randn(5, 3)
    with using_precision("bf16", CPU):
        outer = x @ w
        with using_precision("highest", CPU):
            inner = x @ w
        assert torch.equal(x @ w, outer)
    assert torch.equal(inner, x @ w) and not torch.equal(outer, inner)


def test_bf16_rounds_convolutions_batched_and_attention_products_but_not_those_given_out():
    torch.manual_seed(0)
    image, kernel = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    a, b = torch.randn(2, 4, 5), torch.randn(2, 5, 3)
    q = k = v = torch.randn(1, 2, 6, 4)
    exact = [F.conv2d(image, kernel), torch.bmm(a, b), torch.einsum("bij,bjk->bik", [a, b])]
    exact.append(F.scaled_dot_product_attention(q, k, v))
    with using_precision("bf16", CPU):
        rounded_ = [F.conv2d(image, kernel), torch.bmm(a, b), torch.einsum("bij,bjk->bik", [a, b])]
        rounded_.append(F.scaled_dot_product_attention(q, k, v))
        out = torch.empty(2, 4, 3)
        torch.bmm(a, b, out=out)
    for e, r in zip(exact, rounded_, strict=True):
        assert r.dtype == torch.float32 and torch.equal(r, rounded(r)) and not torch.equal(r, e)
        assert torch.allclose(r, e, rtol=0.05, atol=0.05)
    assert torch.equal(out, exact[1])


def test_bf16_is_refused_on_a_gpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "an old GPU")
    with pytest.raises(ConfigError, match="'bf16' needs a GPU with bfloat16.*an old GPU.*'highest'"):
        check_precision("bf16", CUDA)
    assert check_precision("tf32", CUDA) == "tf32"


def test_bf16_log_likelihood_differs_from_float32_by_less_than_its_monte_carlo_error(digits):
    # the same draws (same seed) at both precisions: the difference is the rounding of the networks'
    # products alone; it must be small beside the estimate's own standard error (the delta method's, per
    # data point), and the result records the precision
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    pyrovae.fit(vae, digits, epochs=2, batch_size=100, progress=False, device="cpu")
    data = digits.batch(torch.randperm(len(digits), generator=torch.Generator().manual_seed(1))[:100])
    kwargs = dict(num_samples=200, seed=3, progress=False)
    exact = pyrovae.log_likelihood(vae.model, vae.guide, data, **kwargs)
    half = pyrovae.log_likelihood(vae.model, vae.guide, data, precision="bf16", **kwargs)
    difference = half.log_px - exact.log_px
    assert exact.precision == "highest" and half.precision == "bf16"
    assert "bf16 arithmetic" in half.summary() and "arithmetic" not in exact.summary()
    assert 0 < float(difference.abs().mean()) < 0.1 * float(exact.log_px_se.median())
    assert pyrovae.log_likelihood(vae.model, vae.guide, data, precision="tf32", **kwargs).log_px.equal(
        exact.log_px
    )  # no TF32 on a CPU
    assert half.to_json_dict()["precision"] == "bf16"
    assert type(half).from_xarray(half.to_xarray()).precision == "bf16"


def test_bounds_and_ais_compute_and_record_the_precision(digits):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    data = digits.batch(torch.arange(4))

    def ladder(precision):
        options = dict(ks=(1, 10), ais_steps=3, ais_chains=2, seed=0, progress=False, precision=precision)
        return pyrovae.bounds(vae.model, vae.guide, data, ais_options={"leapfrog_steps": 2}, **options)

    half, exact = ladder("bf16"), ladder("highest")
    assert half.log_likelihood.precision == "bf16" and half.ais["AIS-3"].precision == "bf16"
    assert "bf16 arithmetic" in half.ais["AIS-3"].headline()
    # the same draws, computed in the two precisions
    assert not torch.equal(half.ais["AIS-3"].log_px, exact.ais["AIS-3"].log_px)
    assert not torch.equal(half.log_likelihood.log_px, exact.log_likelihood.log_px)
    assert torch.allclose(half.ais["AIS-3"].log_px, exact.ais["AIS-3"].log_px, atol=0.5)


def test_captured_bf16_steps_give_the_eager_bf16_steps_exactly(digits):
    def run(compile: str):
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
        trainer = pyrovae.Trainer(vae, 1000, device="cpu", compile=compile, precision="bf16")
        pyro.set_rng_seed(1)
        losses = [trainer.step(digits.batch(torch.arange(i * 50, i * 50 + 50))) for i in range(6)]
        return losses, [p.detach().clone() for p in trainer.params], trainer

    eager_losses, eager_params, _ = run("off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # recorded under the bf16 products: no fallback line
        losses, params, trainer = run("graph")
    assert trainer.capture.active and trainer.capture.graphs == 1
    assert losses == eager_losses
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))
    assert all(p.dtype == torch.float32 for p in params)
    # and the bf16 steps are not the float32 ones
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    trainer = pyrovae.Trainer(vae, 1000, device="cpu", compile="off")
    pyro.set_rng_seed(1)
    assert trainer.step(digits.batch(torch.arange(50))) != eager_losses[0]


def test_fit_records_the_precision_and_a_resumed_run_may_change_it(tmp_path, digits):
    run = tmp_path / "run"
    options = dict(batch_size=200, progress=False, device="cpu")
    torch.manual_seed(0)
    exact = pyrovae.fit(
        pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,)), digits, digits, epochs=1, **options
    )
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    result = pyrovae.fit(vae, digits, digits, epochs=1, precision="bf16", run_dir=run, **options)
    # the same seed, the steps and the validation bound in bfloat16 products: close, not equal
    difference = result.history["valid_loss"].iloc[0] - exact.history["valid_loss"].iloc[0]
    assert 0 < abs(difference) < 0.5
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["settings"]["precision"] == "bf16"
    pyrovae.fit(vae, digits, digits, epochs=2, precision="highest", resume=True, run_dir=run, **options)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["settings"]["precision"] == "highest"
    assert any("precision" in str(resume) for resume in state["resumes"])


def test_anomaly_scores_compute_and_record_the_precision(digits):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    data = digits.batch(torch.arange(6))
    options = dict(num_samples=20, seed=0, progress=False)
    exact = pyrovae.anomaly_scores(vae.model, vae.guide, data, "elbo", **options)
    half = pyrovae.anomaly_scores(vae.model, vae.guide, data, "elbo", precision="bf16", **options)
    assert exact.settings["precision"] == "highest" and half.settings["precision"] == "bf16"
    assert not torch.equal(half.score, exact.score) and torch.allclose(half.score, exact.score, atol=0.5)
