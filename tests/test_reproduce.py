"""The VampPrior paper's MNIST configurations of ``examples/reproduce.py``: their parameter counts
against the paper's architecture counted by hand, their recipe, one training step of each, and
the example's train-evaluate-resume-progress cycle on a few images."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import pyrovae
from pyrovae.runs.run import RunConfig, load_run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "reproduce.py"


def load_example():
    spec = importlib.util.spec_from_file_location("reproduce", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reproduce = load_example()

# The paper's sizes: 784 pixels, hidden layers of 300 units, latents of 40, 500 pseudo-inputs.
D, H, Z, K = 784, 300, 40, 500


def linear(n_in: int, n_out: int) -> int:
    """A weight matrix and a bias."""
    return n_in * n_out + n_out


def gated_dense(n_in: int, n_out: int) -> int:
    """h = (W1 x + b1) * sigmoid(W2 x + b2): two linear maps."""
    return 2 * linear(n_in, n_out)


def gaussian_head(n_in: int, n_out: int) -> int:
    """The mean and the (clamped) log-variance of a diagonal Gaussian: two linear maps."""
    return 2 * linear(n_in, n_out)


# q(z | x), the VAE's encoder and the HVAE's q(z2 | x): 784 -> 300 -> 300 gated, then the head
ENCODER = gated_dense(D, H) + gated_dense(H, H) + gaussian_head(H, Z)
# p(x | z): 40 -> 300 -> 300 gated, then a linear layer to the 784 logits (their sigmoid means)
DECODER = gated_dense(Z, H) + gated_dense(H, H) + linear(H, D)
# q(z1 | x, z2): x -> 300 and z2 -> 300 gated, their concatenation 600 -> 300 gated, the head
ENCODER1 = gated_dense(D, H) + gated_dense(Z, H) + gated_dense(2 * H, H) + gaussian_head(H, Z)
# p(z1 | z2): 40 -> 300 -> 300 gated, then the head
TRANSITION = gated_dense(Z, H) + gated_dense(H, H) + gaussian_head(H, Z)
# p(x | z1, z2): z1 -> 300 and z2 -> 300 gated, their concatenation 600 -> 300 gated, 300 -> 784
DECODER2 = gated_dense(Z, H) + gated_dense(Z, H) + gated_dense(2 * H, H) + linear(H, D)
# the VampPrior's 500 pseudo-inputs of 784 pixels (the standard prior has no parameters)
PSEUDO_INPUTS = K * D

EXPECTED = {
    "vae-standard": ENCODER + DECODER,
    "vae-vamp": ENCODER + DECODER + PSEUDO_INPUTS,
    "hvae-standard": ENCODER + ENCODER1 + TRANSITION + DECODER2,
    "hvae-vamp": ENCODER + ENCODER1 + TRANSITION + DECODER2 + PSEUDO_INPUTS,
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_four_configurations_are_the_papers():
    assert list(reproduce.CONFIGS) == ["vae-standard", "vae-vamp", "hvae-standard", "hvae-vamp"]
    assert EXPECTED == {
        "vae-standard": 1_116_864,
        "vae-vamp": 1_508_864,
        "hvae-standard": 2_431_024,
        "hvae-vamp": 2_823_024,
    }


@pytest.mark.parametrize("name", list(EXPECTED))
def test_parameter_count_is_the_papers_architecture(name):
    model = reproduce.build(name)
    assert count(model) == EXPECTED[name]
    if name.startswith("vae"):
        assert (count(model.encoder), count(model.decoder)) == (ENCODER, DECODER)
    else:
        parts = (model.encoder, model.encoder1, model.transition, model.decoder)
        assert tuple(map(count, parts)) == (ENCODER, ENCODER1, TRANSITION, DECODER2)
    if name.endswith("vamp"):
        assert model.prior.pseudo_inputs.shape == (K, 1, 28, 28)
        assert model.prior.encoder is model.encoder


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_recipe_is_the_papers_and_rebuilds_from_the_stored_configuration(name):
    config = reproduce.run_config(name)
    assert (config.dataset, config.likelihood, config.network) == ("binarized-mnist", "bernoulli", "gated")
    assert (config.latent_dim, config.hidden) == (40, [300, 300])
    assert config.latent_dim2 == (40 if name.startswith("hvae") else None)
    assert config.prior_components == (K if name.endswith("vamp") else None)
    assert (config.optimizer, config.lr, config.batch_size) == ("adam-normgrad", 5e-4, 100)
    assert (config.kl_warmup, config.patience, config.epochs, config.seed) == (100, 50, 2000, 0)
    assert Path(config.data_root).parts[-3:] == ("shared", "data", "binarized_mnist")
    # what load_run and the command line do with the configuration stored in the run directory
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))).build_vae((1, 28, 28))
    built = reproduce.build(name)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in built.state_dict().items()
    }


@pytest.mark.parametrize("name", list(EXPECTED))
def test_one_training_step_of_each_configuration(name):
    torch.manual_seed(0)
    model = reproduce.build(name)
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    trainer = pyrovae.Trainer(model, num_data=3, lr=5e-4, device="cpu")
    loss = trainer.step(x, beta=0.01)  # the first epoch of the warm-up
    assert math.isfinite(loss)
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p.detach(), before[k])]
    assert unchanged == []  # every parameter, pseudo-inputs included, got a gradient and moved


@pytest.fixture
def tiny_mnist(monkeypatch):
    """pyrovae.load gives a few random binary images per split in place of binarized MNIST."""
    sizes = {"train": 4, "valid": 3, "test": 2}

    def load(name, split, root=None, **kwargs):
        assert name == "binarized-mnist"
        g = torch.Generator().manual_seed(len(split))
        return torch.bernoulli(torch.full((sizes[split], 1, 28, 28), 0.3), generator=g)

    monkeypatch.setattr(pyrovae, "load", load)


def test_train_evaluate_resume_and_progress(tmp_path, tiny_mnist, capsys):
    runs = tmp_path / "runs"
    flags = ["--runs-dir", str(runs), "--epochs", "2", "--eval-samples", "10", "--device", "cpu", "--quiet"]
    reproduce.main(["vae-vamp", *flags, "--no-eval"])
    run_dir = runs / "vae-vamp"
    assert not (run_dir / reproduce.SUMMARY).exists()
    reproduce.main(["progress", "--runs-dir", str(runs)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("vae-vamp: epoch 2/2, best validation -ELBO ")
    assert "reached the most epochs" in line and line.endswith("; not evaluated")

    reproduce.main(["vae-vamp", *flags])  # the finished run is evaluated, not trained again
    summary = json.loads((run_dir / reproduce.SUMMARY).read_text())
    assert (summary["epochs"], summary["test_num_data"], summary["test_num_samples"]) == (2, 2, 10)
    assert summary["parameters"] == EXPECTED["vae-vamp"] and summary["paper_nll"] == 85.57
    assert math.isfinite(summary["test_nll"]) and summary["eval_device"].startswith("cpu")
    assert summary["best_epoch"] in (1, 2) and not summary["stopped_early"]
    assert len((run_dir / reproduce.PER_IMAGE).read_text().splitlines()) == 1 + 2
    run = load_run(run_dir)  # the run directory is an ordinary one
    assert run.config.network == "gated" and run.epoch == summary["best_epoch"]

    capsys.readouterr()
    reproduce.main(["vae-vamp", *flags])
    assert "already evaluated" in capsys.readouterr().out
    reproduce.main(["progress", "--runs-dir", str(runs)])
    line = capsys.readouterr().out.strip()
    assert f"; test NLL {summary['test_nll']:.2f} ± " in line and "(IS-10; the paper: 85.57)" in line

    # AIS on a random subset of the test images, against their IS estimates: how tight IS is
    reproduce.main(["vae-vamp", *flags, "--ais-images", "2", "--ais-steps", "3"])
    tight = json.loads((run_dir / reproduce.TIGHTNESS).read_text())
    assert sorted(tight["images"]) == [0, 1] and math.isfinite(tight["gap_mean"])
    assert tight["settings"] == {"ais_images": 2, "ais_steps": 3, "eval_samples": 10}

    # the report rewrites only its table in the Markdown file, and draws the learning curves
    out, figure = tmp_path / "results.md", tmp_path / "curves.png"
    out.write_text("before\n<!-- reproduction-table:start -->\nold\n<!-- reproduction-table:end -->\nafter\n")
    reproduce.main(["report", "--runs-dir", str(runs), "--out", str(out), "--figure", str(figure)])
    text = out.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    row = next(line for line in text.splitlines() if line.startswith("| vae-vamp |"))
    assert f"| {summary['test_nll']:.2f} |" in row and "| evaluated |" in row and "| 2 (" in row
    # the estimate is labelled as it was recorded, not as the recipe's IS-5000
    assert f"| IS-10 on {summary['test_num_data']} images |" in row and "IS-5000" not in text
    assert f"{tight['gap_mean']:.2f} ± {tight['gap_se']:.2f} (AIS-3, 2 images)" in row
    assert figure.read_bytes()[:4] == b"\x89PNG"
    # a file without the table's section (or none at all): a usage error, before anything is drawn
    notes = tmp_path / "notes.md"
    notes.write_text("no table here\n")
    for bare in (notes, tmp_path / "missing.md"):
        unseen = tmp_path / f"{bare.stem}.png"
        with pytest.raises(SystemExit) as err:
            reproduce.main(["report", "--runs-dir", str(runs), "--out", str(bare), "--figure", str(unseen)])
        message = capsys.readouterr().err
        assert err.value.code == 2 and "no section <!-- reproduction-table:start -->" in message
        assert not unseen.exists()
    assert notes.read_text() == "no table here\n"


def test_the_authors_bernoulli_clamp_is_an_option_of_the_recipe(tmp_path, tiny_mnist, capsys):
    config = reproduce.run_config("hvae-vamp", bernoulli_clamp=1e-5)
    assert config.likelihood == "bernoulli:clamp=1e-05"
    # still a Bernoulli to the data: grey-level MNIST is binarized for it, as for the exact one
    assert RunConfig(dataset="mnist", likelihood=config.likelihood).binarize_mode() == "dynamic"
    assert config.build_vae((1, 28, 28)).likelihood.clamp == 1e-5
    assert reproduce.run_config("hvae-vamp").build_vae((1, 28, 28)).likelihood.clamp == 0
    runs, out = tmp_path / "runs", tmp_path / "results.md"
    flags = ["--runs-dir", str(runs), "--epochs", "1", "--eval-samples", "5", "--device", "cpu", "--quiet"]
    reproduce.main(["vae-standard", *flags, "--bernoulli-clamp", "1e-5"])
    summary = json.loads((runs / "vae-standard" / reproduce.SUMMARY).read_text())
    assert summary["likelihood"] == "bernoulli:clamp=1e-05" and math.isfinite(summary["test_nll"])
    out.write_text("<!-- reproduction-table:start -->\n<!-- reproduction-table:end -->\n")
    figure = str(tmp_path / "curves.png")
    reproduce.main(["report", "--runs-dir", str(runs), "--out", str(out), "--figure", figure])
    assert "| vae-standard (bernoulli:clamp=1e-05) | 88.56 |" in out.read_text()
    for bad in ("0.5", "-1e-5"):  # a usage error: exit status 2, naming the option, nothing written
        with pytest.raises(SystemExit) as err:
            reproduce.main(["vae-vamp", *flags, f"--bernoulli-clamp={bad}"])
        message = capsys.readouterr().err
        assert err.value.code == 2 and "--bernoulli-clamp: clamp must be a number >= 0 and < 0.5" in message
    assert not (runs / "vae-vamp").exists()
    with pytest.raises(SystemExit) as err:  # a run keeps its likelihood when resumed
        reproduce.main(["vae-standard", *flags])
    assert "likelihood 'bernoulli' (the run's: 'bernoulli:clamp=1e-05') would change" in str(err.value.code)
    # the command that does it again, recorded with the evaluations, keeps the clamp
    args = reproduce.parse_args(["hvae-vamp", "--runs-dir", "runs/clamp", "--bernoulli-clamp", "1e-5"])
    assert reproduce.rerun("hvae-vamp", args) == (
        "python examples/reproduce.py hvae-vamp --runs-dir runs/clamp --bernoulli-clamp 1e-05"
    )

    # the variant against the recipe itself: best validation bounds and the paired test NLL difference
    exact = tmp_path / "exact"
    reproduce.main(["vae-standard", *flags[2:], "--runs-dir", str(exact)])
    capsys.readouterr()
    reproduce.main(["compare", "--runs-dir", str(runs), "--against", str(exact)])
    out = capsys.readouterr().out
    row = next(
        line for line in out.splitlines() if line.startswith("| vae-standard (bernoulli:clamp=1e-05) against")
    )
    paired = reproduce.paired_difference(runs / "vae-standard", exact / "vae-standard", (1, 1))
    difference, se, images = paired
    assert images == 2 and f"| {difference:.2f} | {se:.2f} | 2 |" in row and " (1) |" in row
    with pytest.raises(SystemExit) as err:
        reproduce.main(["compare", "--runs-dir", str(runs)])
    assert err.value.code == 2 and "--against" in capsys.readouterr().err


def test_progress_without_runs(tmp_path, capsys):
    reproduce.main(["progress", "--runs-dir", str(tmp_path)])
    assert capsys.readouterr().out.startswith("no runs of vae-standard, vae-vamp")


def test_paired_differences_are_per_image_means_of_runs_evaluated_alike(tmp_path, tiny_mnist):
    flags = [
        "--runs-dir",
        str(tmp_path),
        "--epochs",
        "1",
        "--eval-samples",
        "5",
        "--device",
        "cpu",
        "--quiet",
    ]
    for name in ("vae-standard", "vae-vamp"):
        reproduce.main([name, *flags])
    log_px = {"vae-standard": [-90.0, -80.0], "vae-vamp": [-88.0, -76.0]}  # tiny_mnist has 2 test images
    for name, values in log_px.items():
        frame = pd.DataFrame({"log_px": values}, index=pd.Index(range(2), name="datapoint"))
        (tmp_path / name / reproduce.PER_IMAGE).write_text(frame.to_csv())
    table = reproduce.paired_table(tmp_path, reproduce.run_states(tmp_path))
    assert table["comparison"].tolist() == ["vae-vamp - vae-standard"]  # the pairs with both runs evaluated
    row = table.iloc[0]
    # NLL differences per image: -2 and -4
    assert row["ours"] == pytest.approx(-3.0) and row["± paired se"] == pytest.approx(1.0)
    assert row["paper"] == pytest.approx(85.57 - 88.56) and row["images"] == 2
    # no pair once a run has trained on since its evaluation, or where the two used different K
    reproduce.main(["vae-vamp", *flags[:2], "--epochs", "2", "--device", "cpu", "--quiet", "--no-eval"])
    assert reproduce.paired_difference(tmp_path / "vae-vamp", tmp_path / "vae-standard", (2, 1)) is None
    assert len(reproduce.paired_table(tmp_path, reproduce.run_states(tmp_path))) == 0
    reproduce.main(
        ["vae-vamp", *flags[:2], "--epochs", "2", "--eval-samples", "6", "--device", "cpu", "--quiet"]
    )
    assert reproduce.paired_difference(tmp_path / "vae-vamp", tmp_path / "vae-standard", (2, 1)) is None
