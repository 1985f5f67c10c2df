"""Devices: names resolved with messages, ``device="cpu"`` everywhere, and the GPU end to end
(tests marked ``gpu`` skip without CUDA; ``benchmarks/gpu_check.sh`` runs them on a GPU machine)."""

from __future__ import annotations

import subprocess
import sys

import pyro
import pytest
import torch
from toy_models import PPCA

import pyrovae
from pyrovae import cli, devices
from pyrovae.data.datasets import VAEDataset
from pyrovae.errors import ConfigError
from pyrovae.infer.pair import Pair
from pyrovae.runs.run import load_run

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_resolve_names_and_refuses_what_is_not_here():
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu7'"):
        devices.resolve("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(
            ConfigError, match=r"device 'cuda' is not available on this machine; the devices here are: cpu"
        ):
            devices.resolve("cuda")
    with pytest.raises(ConfigError, match="cuda:99"):
        devices.resolve("cuda:99")


def test_every_entry_point_takes_device_cpu():
    m = PPCA()
    x = m.sample(6)
    run = dict(progress=False, seed=0, device="cpu")
    ll = pyrovae.log_likelihood(m.model, m.exact_guide, x, 10, **run)
    torch.testing.assert_close(ll.log_px, m.log_px(x), rtol=0, atol=1e-6)
    ladder = pyrovae.bounds(
        m.model, m.exact_guide, x, ks=(1, 10), ais_steps=2, ais_chains=2, bdmc_data=2, **run
    )
    assert ladder.log_likelihood.log_px.device.type == "cpu"
    assert pyrovae.ais(m.model, m.exact_guide, x, num_steps=2, num_chains=2, **run).log_px.shape == (6,)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,))
    data = pyrovae.load("digits", "train")
    fit = pyrovae.fit(vae, data, epochs=1, batch_size=400, progress=False, device="cpu")
    assert next(fit.vae.parameters()).device.type == "cpu"
    x = data.batch(torch.arange(8))
    assert pyrovae.compare(vae.model, vae.guide, x, ["elbo"], num_repeats=2, **run).num_data == 8


def test_move_kwargs_copies_and_moves_only_tensors():
    kwargs = {"scale": torch.ones(2), "name": "x", "k": 3}
    moved = devices.move_kwargs(kwargs, torch.device("cpu"))
    assert moved is not kwargs and moved.keys() == kwargs.keys()
    assert moved["scale"] is kwargs["scale"]  # already there: not copied
    assert (moved["name"], moved["k"]) == ("x", 3)
    assert devices.move_kwargs(None, torch.device("cpu")) == {}


def test_the_cli_refuses_a_device_that_is_not_here_before_writing(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    status = cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--device", "cuda"])
    assert status == 2 and not (tmp_path / "run").exists()
    assert "not available on this machine; the devices here are: cpu" in capsys.readouterr().err


def test_import_leaves_matplotlib_alone():
    code = (
        "import sys, matplotlib; before = matplotlib.rcParams._get('backend'); import pyrovae; "
        "assert matplotlib.rcParams._get('backend') == before, matplotlib.rcParams._get('backend'); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.gpu
@cuda
def test_cpu_and_gpu_give_the_same_exact_log_px():
    # the exact posterior as guide: every weight is log p(x), whatever the draws (float32 tolerance)
    m = PPCA()
    x = m.sample(50).float()
    results = {}
    for device in ("cpu", "cuda"):
        pair = _on(m, x.to(device))
        results[device] = pyrovae.log_likelihood(
            pair.model, pair.exact_guide, x, 100, progress=False, device=device
        )
    torch.testing.assert_close(results["cuda"].log_px, results["cpu"].log_px, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(results["cpu"].log_px, m.log_px(x.double()), rtol=1e-5, atol=1e-4)


def _on(ppca: PPCA, x: torch.Tensor) -> PPCA:
    """A copy of ``ppca`` whose tensors are on ``x``'s device and dtype."""
    copy = PPCA.__new__(PPCA)
    copy.__dict__.update({k: v.to(x) if torch.is_tensor(v) else v for k, v in ppca.__dict__.items()})
    return copy


@pytest.mark.gpu
@cuda
def test_gpu_end_to_end(tmp_path):
    data = pyrovae.load("digits", "train")
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    fit = pyrovae.fit(vae, data, epochs=2, batch_size=100, progress=False, device="cuda")
    assert next(fit.vae.parameters()).device.type == "cuda"
    x = data.batch(torch.arange(20))
    ll = pyrovae.log_likelihood(vae.model, vae.guide, x, 100, progress=False, seed=0)
    assert ll.log_px.device.type == "cpu" and torch.isfinite(ll.log_px).all()
    ladder = pyrovae.bounds(vae.model, vae.guide, x, ks=(1, 10), ais_steps=3, progress=False, seed=0)
    assert torch.isfinite(ladder.values["AIS-3"]).all()
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--epochs",
                "1",
                "--run-dir",
                str(run),
                "--device",
                "cuda",
                "--no-progress",
                "--test-samples",
                "10",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "evaluate",
                str(run),
                "--num-samples",
                "20",
                "--bounds",
                "1,5",
                "--limit",
                "30",
                "--device",
                "cuda",
                "--no-progress",
            ]
        )
        == 0
    )
    # a checkpoint written on the GPU loads on the CPU
    assert next(load_run(run, device="cpu").vae.parameters()).device.type == "cpu"


@pytest.mark.gpu
@cuda
def test_models_on_the_gpu_sample_and_take_cpu_inputs():
    # draws made on the model's device; CPU inputs (data, labels, conditions) moved there
    torch.manual_seed(0)
    test = pyrovae.load("digits", "test")
    x, y = test.batch(torch.arange(20)), test.targets[:20]
    ssvae = pyrovae.SSVAE((1, 8, 8), num_classes=10, latent_dim=2, hidden=(8,)).cuda()
    for labels in (None, 3, torch.arange(4)):
        out = ssvae.sample(4, y=labels)
        assert out.shape == (4, 1, 8, 8) and out.device.type == "cuda"
    assert 0 <= ssvae.accuracy(x, y, chunk=7) <= 1
    assert ssvae.reconstruct(x[:3]).device.type == "cuda"
    cvae = pyrovae.CVAE((1, 8, 8), 10, categorical=True, latent_dim=2, hidden=(8,)).cuda()
    out = cvae.sample(torch.tensor([0, 9]), num_samples=3)
    assert out.shape == (3, 2, 1, 8, 8) and out.device.type == "cuda"
    halves = pyrovae.CVAE((1, 4, 8), (1, 4, 8), latent_dim=2, hidden=(8,)).cuda()
    assert halves.sample(x[:2, :, :4], num_samples=3).device.type == "cuda"
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,)).cuda()
    hvae = pyrovae.HVAE((1, 8, 8), latent_dim=2, latent_dim2=2, hidden=(8,)).cuda()
    for model in (vae, hvae):
        assert model.reconstruct(x[:3]).device.type == "cuda"


@pytest.mark.gpu
@cuda
def test_binarization_of_data_held_on_the_gpu_draws_the_bits_of_the_cpu():
    digits = pyrovae.load("digits", "train")
    on_gpu = VAEDataset(digits.data.cuda(), name="digits", binarize="dynamic")
    index = torch.arange(30)
    bits = on_gpu.batch(index, torch.Generator().manual_seed(0))
    assert bits.device.type == "cuda"
    assert torch.equal(bits.cpu(), digits.batch(index, torch.Generator().manual_seed(0)))
    test = pyrovae.load("digits", "test")
    fixed = VAEDataset(test.data.cuda(), name="digits", split="test", binarize="dynamic").batch(index)
    assert fixed.device.type == "cuda" and torch.equal(fixed.cpu(), test.batch(index))
    # fit draws the binarization from a CPU generator: the same run whether the data are held
    # on the CPU or on the GPU
    losses = []
    for data in (digits, on_gpu):
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,))
        fit = pyrovae.fit(vae, data, epochs=1, batch_size=100, progress=False, device="cuda")
        losses.append(fit.final_loss)
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


@pytest.mark.gpu
@cuda
def test_the_pair_probe_leaves_the_cuda_generator_alone():
    # Pyro's random state is torch's CPU generator, random's and numpy's: the probe must restore
    # the CUDA generator too, or a training run resumed on the GPU draws differently
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,)).cuda()
    x = pyrovae.load("digits", "test").batch(torch.arange(4)).cuda()
    pyro.set_rng_seed(0)
    state = torch.cuda.get_rng_state()
    pair = Pair(vae.model, vae.guide, (x,), num_data=4)
    assert pair.data_plate == "data"
    assert torch.equal(torch.cuda.get_rng_state(), state)


@pytest.mark.gpu
@cuda
def test_bdmc_simulates_on_the_device_and_returns_the_data_on_the_cpu():
    run = dict(num_steps=2, num_chains=2, leapfrog_steps=2, progress=False, seed=0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,))
    result = pyrovae.bdmc(vae.model, vae.guide, 3, device="cuda", **run)
    assert next(vae.parameters()).device.type == "cuda"
    assert result.data[0].shape == (3, 1, 8, 8) and result.data[0].device.type == "cpu"
    assert torch.isfinite(result.gap).all()
    # the model already on the GPU, no device given
    result = pyrovae.bdmc(vae.model, vae.guide, 3, **run)
    assert result.data[0].device.type == "cpu" and torch.isfinite(result.gap).all()


@pytest.mark.gpu
@cuda
def test_model_kwargs_tensors_follow_the_model_to_the_gpu():
    m = PPCA()
    x = m.sample(5)
    on_gpu = _on(m, x.cuda())

    def model(x, *, scale):
        on_gpu.model(x * scale)

    def guide(x, *, scale):
        on_gpu.exact_guide(x * scale)

    kwargs = {"scale": torch.full((6,), 2.0, dtype=x.dtype)}  # on the CPU
    run = dict(progress=False, seed=0, device="cuda", model_kwargs=kwargs)
    ll = pyrovae.log_likelihood(model, guide, x, 10, **run)
    torch.testing.assert_close(ll.log_px, m.log_px(2 * x), atol=1e-6, rtol=0)
    assert torch.isfinite(pyrovae.ais(model, guide, x, num_steps=2, num_chains=2, **run).log_px).all()


# ---------------------------------------------------------------------------------------------------------
# CPU threads


def test_cpu_threads_keep_the_users_choice_and_leave_busy_cores_alone(monkeypatch):
    for name in devices.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert devices.cpu_threads(3) == 3 and devices.cpu_threads(None) is None
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(devices.torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(devices, "_TORCH_THREADS", 4)  # torch's count when pyrovae was imported
    for busy, chosen in [(0.0, 3), (1.2, 2), (2.6, 1), (7.0, 1)]:  # one core left to the rest
        monkeypatch.setattr(devices, "busy_cores", lambda busy=busy: busy)
        assert devices.cpu_threads("auto") == chosen, busy
    monkeypatch.setattr(devices, "_TORCH_THREADS", 2)  # torch.set_num_threads(4) since: the user chose
    assert devices.cpu_threads("auto") is None
    monkeypatch.setattr(devices, "_TORCH_THREADS", 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user chose: torch's count is kept
    assert devices.cpu_threads("auto") is None
    for bad in ("fast", 0, 2.5, True):
        with pytest.raises(
            ConfigError, match=r"threads \(--threads\) must be an integer >= 1, 'auto', or None"
        ):
            devices.cpu_threads(bad)


def test_busy_cores_counts_the_other_processes_not_this_one(monkeypatch):
    # over 0.5 s the machine spent 1.5 CPU seconds busy at normal priority, 0.5 of them this process's
    samples = iter([(10.0, 100.0, 3.0), (10.5, 101.5, 3.5)])
    monkeypatch.setattr(devices, "_cpu_seconds", lambda: next(samples))
    monkeypatch.setattr(devices.time, "sleep", lambda seconds: None)
    assert devices.busy_cores() == pytest.approx(2.0)

    def missing():
        raise FileNotFoundError("/proc/stat")

    monkeypatch.setattr(devices, "_cpu_seconds", missing)  # elsewhere: the load average
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (1.25, 1.0, 1.0), raising=False)
    assert devices.busy_cores() == 1.25


def test_using_threads_restores_torchs_count_and_fit_reports_its_own():
    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    with devices.using_threads(other) as chosen:
        assert chosen == torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    data = torch.rand(20, 4).round()
    vae = pyrovae.VAE(event_shape=(4,), latent_dim=2, hidden=(8,))
    result = pyrovae.fit(vae, data, epochs=1, batch_size=10, progress=False, threads=1)
    assert result.cpu_threads == 1 and "1 CPU thread" in result.summary()
    assert torch.get_num_threads() == before
