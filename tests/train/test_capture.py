"""Captured training steps (pyrovae.train.capture): the same losses and parameters as eager steps, a graph
only for a pair whose structure is static, and one line that says why whenever a pair trains eagerly."""

from __future__ import annotations

import json
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.estimators import ESTIMATORS
from pyrovae.graphs import COMPILE_MODES
from pyrovae.runs.directory import CONFIG
from pyrovae.train.capture import CPU_EAGER_STEPS

# the estimators whose step reads a tensor's value in Python, and so trains eagerly
EAGER = {
    "elbo-analytic-kl": "trace_mean_field_elbo.py",
    "tail-adaptive": "util.py",
    "enum": "traceenum_elbo.py",
}


@pytest.fixture(scope="module")
def digits(load_digits):
    return load_digits("train")


def steps(digits, compile: str, estimator="elbo", beta=1.0, num=6, vae=None, batch=50, last=20):
    """The losses and final parameters of ``num`` steps from the same initial parameters and random state, the
    last on a shorter batch of ``last`` images."""
    torch.manual_seed(0)
    vae = vae() if vae is not None else pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    trainer = pyrovae.Trainer(vae, 1000, estimator=estimator, device="cpu", compile=compile)
    pyro.set_rng_seed(1)
    losses = []
    for i in range(num):
        size = batch if i < num - 1 else last
        losses.append(trainer.step(digits.batch(torch.arange(i * batch, i * batch + size)), beta=beta))
    return losses, [p.detach().clone() for p in trainer.params], trainer


def test_captured_steps_give_the_eager_steps_losses_and_parameters_exactly(digits):
    # the replayed graph draws the generator's next numbers, as the eager step would: identical, bit for bit,
    # during a KL warm-up too (beta enters the graph as an input)
    for beta in (1.0, 0.37):
        eager_losses, eager_params, _ = steps(digits, "off", beta=beta, num=8)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the VAE is captured: no fallback line
            losses, params, trainer = steps(digits, "graph", beta=beta, num=8)
        assert trainer.capture.active and trainer.capture.graphs == 1
        assert losses == eager_losses
        assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_is_captured_or_trains_eagerly_with_its_line(digits, name):
    eager_losses, eager_params, _ = steps(digits, "off", estimator=name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, params, trainer = steps(digits, "graph", estimator=name)
    lines = [str(w.message) for w in caught if str(w.message).startswith("compile:")]
    if name in EAGER:
        assert not trainer.capture.active and len(lines) == 1, lines
        assert "reads a tensor's value in Python" in lines[0] and EAGER[name] in lines[0]
        assert lines[0].endswith("training eagerly from here on")
    else:
        assert trainer.capture.active and not lines, lines
    # the same losses; parameters equal up to the rounding of a graph's own decomposition of an operation
    # (VIMCO's: 1e-7 after 6 steps)
    assert losses == pytest.approx(eager_losses, rel=1e-6)
    for a, b in zip(params, eager_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class CoinFlipPair(nn.Module):
    """A pair with Python control flow on a sampled value: a second latent only when the first is positive."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(2))
        self.decoder = nn.Linear(2, 64)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            if float(z.sum()) > 0:
                z = z + pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            logits = self.decoder(z).reshape(x.shape)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.loc.expand(x.shape[0], 2), 1.0).to_event(1))
            if float(z.sum()) > 0:
                pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def test_a_pair_with_control_flow_on_its_draws_trains_eagerly_with_one_line(digits):
    eager_losses, eager_params, _ = steps(digits, "off", vae=CoinFlipPair, num=12)
    with pytest.warns(UserWarning, match="compile: ") as caught:
        losses, params, trainer = steps(digits, "graph", vae=CoinFlipPair, num=12)
    assert len([w for w in caught if str(w.message).startswith("compile:")]) == 1
    assert not trainer.capture.active
    # a draw read in Python (float(z.sum())) is refused when it is recorded, before any step depends on it
    assert (
        "reads a tensor's value in Python" in trainer.capture.reason
        and "test_capture.py" in trainer.capture.reason
    )
    assert losses == eager_losses
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))


class ScheduledPair(pyrovae.VAE):
    """A VAE whose likelihood's temperature is a Python number it changes at every call: a constant of the
    graph that differs from one step to the next."""

    def __init__(self):
        super().__init__((1, 8, 8), latent_dim=2, hidden=(16,))
        self.calls = 0

    def model(self, x):
        self.calls += 1
        with pyro.poutine.scale(scale=torch.tensor(1.0 + 0.01 * self.calls)):
            super().model(x)


def test_a_pair_whose_constants_change_between_steps_trains_eagerly(digits):
    eager_losses, _, _ = steps(digits, "off", vae=ScheduledPair, num=8)
    with pytest.warns(UserWarning, match="the pair's constants changed from one call to the next"):
        losses, _, trainer = steps(digits, "graph", vae=ScheduledPair, num=8)
    assert not trainer.capture.active
    # the two recorded steps and the eager ones after them are the eager run's
    assert losses == eager_losses


class NormalizedVAE(pyrovae.VAE):
    """A VAE whose encoder input goes through batch normalization: a buffer (running statistics) the step
    updates in place."""

    def __init__(self):
        super().__init__((1, 8, 8), latent_dim=2, hidden=(16,))
        self.norm = nn.BatchNorm1d(64)

    def guide(self, x):
        return super().guide(self.norm(x.reshape(-1, 64)).reshape(x.shape).clamp(0, 1))


def test_buffers_updated_by_a_step_are_updated_once_per_captured_step(digits):
    _, eager_params, eager_trainer = steps(digits, "off", vae=NormalizedVAE, num=8)
    _, params, trainer = steps(digits, "graph", vae=NormalizedVAE, num=8)
    assert trainer.capture.graphs == 1
    for name, buffer in eager_trainer.vae.norm.named_buffers():
        assert torch.equal(buffer, dict(trainer.vae.norm.named_buffers())[name]), name
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))


def test_each_batch_shape_has_its_own_graph(digits):
    _, _, trainer = steps(digits, "graph", num=9, last=20)
    assert trainer.capture.graphs == 1  # the short batch came once: recorded, not confirmed
    losses = [trainer.step(digits.batch(torch.arange(20))) for _ in range(3)]
    assert trainer.capture.graphs == 2 and all(math.isfinite(v) for v in losses)


def test_fit_records_compile_and_refuses_an_unknown_mode(tmp_path, digits):
    with pytest.raises(
        ConfigError, match="unknown compile 'fast'; choose one of: auto, graph, inductor, off"
    ):
        pyrovae.fit(pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,)), digits, epochs=1, compile="fast")
    assert not list(tmp_path.iterdir())
    assert set(COMPILE_MODES) == {"auto", "off", "graph", "inductor"}
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    pyrovae.fit(vae, digits, epochs=1, run_dir=tmp_path / "run", progress=False, compile="off")
    assert json.loads((tmp_path / "run" / CONFIG).read_text())["compile"] == "off"


@pytest.mark.slow
def test_a_compiled_step_gives_the_eager_losses_in_distribution(digits):
    # inductor fuses operations, so its losses differ from the eager ones in the last bits, and its draws
    # may differ: compared in distribution, at fixed parameters (lr 1e-12) on one binarized batch, 200 steps
    # each from their own seeds. The mean losses differ by less than four standard errors of the difference
    # (seeded)
    torch.manual_seed(0)
    x = digits.batch(torch.arange(100))  # the digits are binarized at random

    def losses(compile: str, seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        trainer = pyrovae.Trainer(
            pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,)), 1000, lr=1e-12, device="cpu", compile=compile
        )
        pyro.set_rng_seed(seed)
        return torch.tensor([trainer.step(x) for _ in range(200)], dtype=torch.float64)

    eager, compiled = losses("off", 1), losses("inductor", 2)
    se = math.sqrt(eager.var() / len(eager) + compiled.var() / len(compiled))
    assert abs(float(eager.mean() - compiled.mean())) < 4 * se, (eager.mean(), compiled.mean(), se)
    assert float(compiled.std()) == pytest.approx(float(eager.std()), rel=0.3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_graph_step_gives_the_eager_losses_in_distribution(digits):
    torch.manual_seed(0)
    x = digits.batch(torch.arange(100))  # the digits are binarized at random

    def losses(compile: str, seed: int) -> tuple[torch.Tensor, pyrovae.Trainer]:
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
        trainer = pyrovae.Trainer(vae, 1000, lr=1e-12, device="cuda", compile=compile)
        pyro.set_rng_seed(seed)
        return torch.tensor([trainer.step(x) for _ in range(200)], dtype=torch.float64), trainer

    eager, _ = losses("off", 1)
    captured, trainer = losses("graph", 2)
    assert trainer.capture.active and trainer.capture.graphs == 1
    se = math.sqrt(eager.var() / len(eager) + captured.var() / len(captured))
    assert abs(float(eager.mean() - captured.mean())) < 4 * se, (eager.mean(), captured.mean(), se)
    # and it trains: 300 steps at the default learning rate lower the loss as eager steps do
    trained = []
    for compile in ("off", "graph"):
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
        trainer = pyrovae.Trainer(vae, 1000, device="cuda", compile=compile)
        pyro.set_rng_seed(0)
        trained.append(sum([trainer.step(x) for _ in range(300)][-50:]) / 50)
    assert trained[1] == pytest.approx(trained[0], rel=0.05)


def test_a_module_with_hooks_trains_eagerly_with_one_line(digits):
    def hooked():
        vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
        vae.decoder.register_forward_hook(lambda module, args, output: None)
        return vae

    eager_losses, _, _ = steps(digits, "off", vae=hooked)
    with pytest.warns(
        UserWarning, match="compile: module decoder has hooks, which torch calls in eager steps alone"
    ):
        losses, _, trainer = steps(digits, "graph", vae=hooked)
    assert not trainer.capture.active and losses == eager_losses


def test_auto_on_a_cpu_records_a_batch_shape_after_its_first_eager_steps(digits):
    # CPU_EAGER_STEPS eager steps of the shape (the first, validated one included), then two recordings
    eager_losses, eager_params, _ = steps(digits, "off", num=CPU_EAGER_STEPS + 5, batch=10, last=10)
    losses, params, trainer = steps(digits, "auto", num=CPU_EAGER_STEPS + 5, batch=10, last=10)
    assert trainer.capture.graphs == 1
    assert losses == eager_losses
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))


class SharedGradientPair(nn.Module):
    """A pair whose two location parameters enter only as their sum: autograd gives both one gradient."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(2))
        self.decoder = nn.Linear(2, 64)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            logits = self.decoder(z).reshape(x.shape)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((self.a + self.b).expand(x.shape[0], 2), 1.0).to_event(1))


@pytest.mark.parametrize("optimizer", ["sgd", "adam-normgrad"])
def test_gradients_autograd_shares_between_parameters_are_clipped_once(digits, optimizer):
    # clipping and AdamNormGrad scale p.grad in place: a gradient shared by a and b must not be scaled twice
    def run(compile: str):
        torch.manual_seed(0)
        trainer = pyrovae.Trainer(
            SharedGradientPair(), 1000, optimizer=optimizer, clip_norm=0.1, device="cpu", compile=compile
        )
        pyro.set_rng_seed(1)
        losses = [trainer.step(digits.batch(torch.arange(i * 50, i * 50 + 50))) for i in range(6)]
        return losses, [p.detach().clone() for p in trainer.params], trainer

    eager_losses, eager_params, _ = run("off")
    losses, params, trainer = run("graph")
    assert trainer.capture.graphs == 1 and losses == eager_losses
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))


def test_a_hook_on_a_parameter_tensor_trains_eagerly_with_one_line(digits):
    def hooked():
        vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
        vae.decoder.net[0].weight.register_hook(lambda grad: grad * 0)  # freezes that weight
        return vae

    eager_losses, eager_params, _ = steps(digits, "off", vae=hooked)
    with pytest.warns(UserWarning, match="compile: parameter decoder.net.0.weight has hooks"):
        losses, params, trainer = steps(digits, "graph", vae=hooked)
    assert not trainer.capture.active and losses == eager_losses
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))
