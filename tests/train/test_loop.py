"""fit and Trainer: history, run directories, checkpoint/resume, and errors before or during training."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import Dataset, TensorDataset

import pyrovae
from pyrovae.errors import CheckpointError, ConfigError, DataError, RunDirError, TrainingError
from pyrovae.handlers import scale_latents
from pyrovae.runs.directory import CHECKPOINT, CONFIG, HISTORY
from pyrovae.runs.outputs import output_set, writing
from pyrovae.seeds import seeded
from pyrovae.storage import load_checkpoint, write_text

COLUMNS = ["epoch", "train_loss", "valid_loss", "beta", "lr", "seconds"]
RUN_FILES = {
    CHECKPOINT,
    CONFIG,
    HISTORY,
    ".lock",
    "manifest.json",
    "learning_curves.png",
    "samples.png",
    "reconstructions.png",
}
SMALL = dict(batch_size=200, lr=1e-2, progress=False)  # 1197 training images: 6 steps per epoch


@pytest.fixture(scope="module")
def train(load_digits):
    return load_digits("train")


@pytest.fixture(scope="module")
def valid(load_digits):
    return load_digits("valid")


@pytest.fixture(scope="module")
def binary_tensor(train):
    """The training digits as a fixed binary tensor (thresholded), and their labels."""
    return (train.data > 0.5).float(), train.targets


def make_vae(seed: int = 0, **kwargs) -> pyrovae.VAE:
    torch.manual_seed(seed)
    kwargs.setdefault("latent_dim", 4)
    kwargs.setdefault("hidden", (32,))
    return pyrovae.VAE((1, 8, 8), **kwargs)


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def without_timing(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="seconds")


def snapshot(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# ---------------------------------------------------------------------------------------------
# history and run directory


def test_fit_returns_a_history_whose_losses_decrease(train, valid):
    result = pyrovae.fit(make_vae(), train, valid, epochs=4, seed=0, **SMALL)
    history = result.history
    assert list(history.columns) == COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["beta"].tolist() == [1.0] * 4
    assert history[["train_loss", "valid_loss"]].notna().all().all()
    # deterministic for a fixed seed; at this lr the bound improves by ~10 (train) and ~4 (valid)
    # nats in 4 epochs, far beyond the epoch-to-epoch noise of dynamic binarization (~0.2 nats)
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0] - 5
    assert history["valid_loss"].iloc[-1] < history["valid_loss"].iloc[0] - 2
    assert result.best_epoch == history["valid_loss"].idxmin() + 1
    assert not result.stopped_early and result.run_dir is None
    assert result.final_loss == history["valid_loss"].iloc[-1]
    assert "trained for 4 epochs" in result.summary()


def test_fit_is_reproducible_with_a_seed(train):
    a = pyrovae.fit(make_vae(), train, epochs=2, seed=5, **SMALL)
    b = pyrovae.fit(make_vae(), train, epochs=2, seed=5, **SMALL)
    c = pyrovae.fit(make_vae(), train, epochs=2, seed=6, **SMALL)
    assert_same_parameters(a.vae, b.vae)
    pd.testing.assert_frame_equal(without_timing(a.history), without_timing(b.history))
    assert not without_timing(a.history).equals(without_timing(c.history))


def test_run_dir_holds_checkpoints_history_and_figures(tmp_path, train, valid):
    run = tmp_path / "run"
    result = pyrovae.fit(
        make_vae(), train, valid, epochs=2, seed=0, run_dir=run, config={"note": "x"}, **SMALL
    )
    assert result.run_dir == run
    assert set(p.name for p in run.iterdir()) == RUN_FILES  # and no temporary files
    for name in RUN_FILES:
        if name.endswith(".png"):
            assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pd.testing.assert_frame_equal(pd.read_csv(run / HISTORY), result.history, check_dtype=False)
    state = load_checkpoint(run / CHECKPOINT)
    assert state["epoch"] == 2 and state["config"] == {"note": "x"} and len(state["history"]) == 2
    for key, value in result.vae.state_dict().items():
        assert torch.equal(state["model"][key], value)
    assert state["best_epoch"] == result.best_epoch
    assert json.loads((run / CONFIG).read_text()) == {"note": "x"}


def test_four_epochs_equal_two_and_a_resume_for_two_more(tmp_path, train, valid):
    options = dict(epochs=4, seed=3, kl_warmup=3, **SMALL)
    straight = pyrovae.fit(make_vae(), train, valid, run_dir=tmp_path / "straight", **options)

    first = pyrovae.fit(make_vae(), train, valid, run_dir=tmp_path / "resumed", **{**options, "epochs": 2})
    assert len(first.history) == 2
    # a fresh module with other initial values: resume must load everything from the checkpoint
    resumed = pyrovae.fit(
        make_vae(seed=99), train, valid, run_dir=tmp_path / "resumed", resume=True, **options
    )

    assert_same_parameters(straight.vae, resumed.vae)
    pd.testing.assert_frame_equal(without_timing(straight.history), without_timing(resumed.history))
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT)
    b = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 4
    assert (a["best"], a["best_epoch"], a["bad_epochs"]) == (b["best"], b["best_epoch"], b["bad_epochs"])
    for which in ("model", "best_model"):
        for key in a[which]:
            assert torch.equal(a[which][key], b[which][key])
    for key in a["optimizer"]["state"]:
        for name, value in a["optimizer"]["state"][key].items():
            assert torch.equal(value, b["optimizer"]["state"][key][name])


def test_a_non_empty_run_dir_is_refused_and_left_untouched(tmp_path, train):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    with pytest.raises(RunDirError, match="not empty") as err:
        pyrovae.fit(make_vae(), train, epochs=1, run_dir=run, **SMALL)
    assert "resume" in str(err.value) and "overwrite" in str(err.value)
    assert snapshot(run) == before

    # a finished run is not overwritten by accident either
    pyrovae.fit(make_vae(), train, epochs=1, run_dir=tmp_path / "done", **SMALL)
    before = snapshot(tmp_path / "done")
    with pytest.raises(RunDirError):
        pyrovae.fit(make_vae(), train, epochs=1, run_dir=tmp_path / "done", **SMALL)
    assert snapshot(tmp_path / "done") == before


def test_overwrite_starts_afresh_and_discards_the_earlier_runs_checkpoints(tmp_path, train, valid):
    run = tmp_path / "run"
    pyrovae.fit(make_vae(), train, valid, epochs=2, seed=0, run_dir=run, **SMALL)
    with writing(run), output_set("evaluation-test", "pyrovae evaluate run"):  # as pyrovae evaluate writes
        write_text(run / "evaluation-test.json", "{}")
        write_text(run / "latents-test.csv", "")
    (run / "notes.txt").write_text("mine")
    (run / "evaluation-notes.json").write_text("mine")  # named as pyrovae names its own, but the user's

    result = pyrovae.fit(make_vae(seed=1), train, epochs=1, seed=1, run_dir=run, overwrite=True, **SMALL)
    assert len(result.history) == 1
    state = load_checkpoint(run / CHECKPOINT)
    assert state["epoch"] == 1
    for key, value in result.vae.state_dict().items():
        assert torch.equal(state["model"][key], value)
    # the earlier run's best parameters and outputs must not pass for this run's
    assert state["best_model"] is None and not (run / "evaluation-test.json").exists()
    assert not (run / "latents-test.csv").exists()
    assert len(pd.read_csv(run / HISTORY)) == 1
    assert (run / "notes.txt").read_text() == "mine"  # files pyrovae did not write are kept
    assert (run / "evaluation-notes.json").read_text() == "mine"


def test_resuming_where_nothing_was_committed_starts_from_the_first_epoch(tmp_path, train):
    reference = pyrovae.fit(make_vae(), train, epochs=1, **SMALL)
    for name in ("new", "empty"):
        if name == "empty":
            (tmp_path / name).mkdir()
        result = pyrovae.fit(make_vae(), train, epochs=1, run_dir=tmp_path / name, resume=True, **SMALL)
        assert_same_parameters(result.vae, reference.vae)
        assert any("first epoch" in note for note in result.notes)


def test_run_dir_errors(tmp_path, train):
    with pytest.raises(ConfigError, match="resume and overwrite"):
        pyrovae.fit(make_vae(), train, epochs=1, run_dir=tmp_path / "x", resume=True, overwrite=True, **SMALL)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="is a file"):
        pyrovae.fit(make_vae(), train, epochs=1, run_dir=tmp_path / "file", **SMALL)


def test_resuming_a_finished_run_returns_it_and_fewer_epochs_are_refused(tmp_path, train):
    done = pyrovae.fit(make_vae(), train, epochs=2, run_dir=tmp_path / "run", **SMALL)
    again = pyrovae.fit(make_vae(seed=5), train, epochs=2, run_dir=tmp_path / "run", resume=True, **SMALL)
    assert_same_parameters(done.vae, again.vae)
    pd.testing.assert_frame_equal(done.history, again.history)
    with pytest.raises(ConfigError, match="already trained 2 epochs"):
        pyrovae.fit(make_vae(), train, epochs=1, run_dir=tmp_path / "run", resume=True, **SMALL)


# ---------------------------------------------------------------------------------------------
# failures


class NaNAfter:
    """A forward hook that makes the decoder's output NaN from its ``n + 1``-th call on."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, module, args, output):
        self.calls += 1
        return output * math.nan if self.calls > self.n else None


def test_nan_loss_stops_training_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, train):
    run = tmp_path / "run"
    vae = make_vae()
    # batch_size 400: 3 steps per epoch, one decoder call per step and one more in the first step
    # (which finds the data plate), so call 6 is epoch 2, step 2
    vae.decoder.register_forward_hook(NaNAfter(5))
    with pytest.raises(TrainingError) as err:
        pyrovae.fit(vae, train, epochs=4, batch_size=400, seed=0, run_dir=run, progress=False)
    message = str(err.value)
    assert "epoch 2, step 2" in message and "loss became non-finite" in message
    assert "last finite state (epoch 1)" in message and "--lr" in message
    assert err.value.exit_code == 1

    state = load_checkpoint(run / CHECKPOINT)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert len(pd.read_csv(run / HISTORY)) == 1
    # the checkpoint holds exactly the parameters after one good epoch
    reference = pyrovae.fit(make_vae(), train, epochs=1, batch_size=400, seed=0, progress=False)
    for key, value in reference.vae.state_dict().items():
        assert torch.equal(state["model"][key], value), key


def test_infinite_loss_from_a_huge_learning_rate_is_a_training_error(train):
    with pytest.raises(TrainingError, match=r"became non-finite .* at epoch \d+, step \d+"):
        pyrovae.fit(make_vae(), train, epochs=5, batch_size=200, lr=1e30, optimizer="sgd", progress=False)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_in_the_data_is_a_data_error_before_training(tmp_path, binary_tensor, bad):
    x, labels = binary_tensor
    x = x.clone()
    x[10, 0, 3, 4] = bad
    run = tmp_path / "run"
    with pytest.raises(DataError, match="NaN or infinite"):
        pyrovae.fit(make_vae(), x, epochs=1, run_dir=run, **SMALL)
    assert not run.exists()
    with pytest.raises(DataError, match="NaN or infinite"):
        pyrovae.fit(make_vae(), TensorDataset(x, labels), epochs=1, run_dir=run, **SMALL)
    with pytest.raises(DataError, match="NaN or infinite"):
        pyrovae.fit(make_vae(), binary_tensor[0], x, epochs=1, run_dir=run, **SMALL)
    assert not run.exists()


def test_grey_levels_under_a_bernoulli_likelihood_are_a_data_error(train):
    grey = train.data
    with pytest.raises(DataError, match="not binary") as err:
        pyrovae.fit(make_vae(), grey, epochs=1, **SMALL)
    assert "binarize" in str(err.value)
    with pytest.raises(DataError, match="not binary"):
        pyrovae.fit(make_vae(), pyrovae.load("digits", "train", binarize=None), epochs=1, **SMALL)


def test_data_of_the_wrong_shape_is_a_data_error(binary_tensor):
    x, _ = binary_tensor
    with pytest.raises(DataError, match=r"\(1197, 64\)"):
        pyrovae.fit(make_vae(), x.flatten(1), epochs=1, **SMALL)


def test_invalid_options_are_config_errors(train):
    with pytest.raises(ConfigError, match="adam"):
        pyrovae.fit(make_vae(), train, epochs=1, optimizer="adamax", progress=False)
    with pytest.raises(ConfigError, match=r"lr \(--lr\) must be a number > 0"):
        pyrovae.fit(make_vae(), train, epochs=1, lr=0.0, progress=False)
    with pytest.raises(ConfigError, match=r"epochs \(--epochs\) must be an integer >= 1"):
        pyrovae.fit(make_vae(), train, epochs=0, progress=False)
    with pytest.raises(ConfigError, match="model\\(\\) method"):
        pyrovae.fit(torch.nn.Linear(2, 2), torch.zeros(4, 2), epochs=1, progress=False)
    with pytest.raises(ConfigError, match="estimator"):
        pyrovae.fit(make_vae(), train, epochs=1, estimator="no-such-estimator", progress=False)


# ---------------------------------------------------------------------------------------------
# options


def test_kl_warmup_raises_beta_linearly_to_one(train):
    result = pyrovae.fit(make_vae(), train, epochs=5, kl_warmup=3, **SMALL)
    assert result.history["beta"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0], abs=1e-12)


def test_gradient_clipping_bounds_the_gradient_norm(train):
    x = train.batch(torch.arange(100), generator=torch.Generator().manual_seed(0))

    def grad_norm(clip_norm):
        vae = make_vae()
        trainer = pyrovae.Trainer(vae, len(train), clip_norm=clip_norm)
        pyro.set_rng_seed(0)
        trainer.step(x)
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.params])).item()

    assert grad_norm(None) > 1.0
    assert grad_norm(1e-2) <= 1e-2 * (1 + 1e-5)
    result = pyrovae.fit(make_vae(), train, epochs=2, clip_norm=1.0, **SMALL)
    assert result.history["train_loss"].notna().all()


def test_early_stopping_stops_when_the_validation_bound_stops_improving(tmp_path, train, valid):
    # lr = 1e-30 leaves every float32 parameter unchanged, so the validation bound only varies
    # with the estimator's seeded draws: the run plateaus, and stops after `patience` epochs
    # without a new best (deterministically, for this seed)
    epochs, patience = 30, 2
    result = pyrovae.fit(
        make_vae(),
        train,
        valid,
        epochs=epochs,
        patience=patience,
        optimizer="sgd",
        lr=1e-30,
        batch_size=400,
        seed=0,
        run_dir=tmp_path / "run",
        progress=False,
    )
    history = result.history
    assert result.stopped_early and len(history) < epochs
    assert len(history) == result.best_epoch + patience
    best = history["valid_loss"].iloc[result.best_epoch - 1]
    assert best == history["valid_loss"].min()
    assert (history["valid_loss"].iloc[result.best_epoch :] >= best).all()
    assert "stopped early" in result.summary()
    assert any("restored" in note for note in result.notes)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["best_epoch"] == result.best_epoch


def test_patience_without_validation_data_is_a_config_error(train):
    with pytest.raises(ConfigError, match="valid"):
        pyrovae.fit(make_vae(), train, epochs=2, patience=1, progress=False)


class Images(Dataset):
    """A generic map-style data set returning bare tensors."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_fit_on_a_tensor_and_on_generic_datasets(binary_tensor):
    x, labels = binary_tensor
    results = [
        pyrovae.fit(make_vae(), data, epochs=2, seed=0, **SMALL)
        for data in (x, (x,), TensorDataset(x), Images(x))
    ]
    # the same data in the same (seeded) order: the same training
    for other in results[1:]:
        assert_same_parameters(results[0].vae, other.vae)
        pd.testing.assert_frame_equal(without_timing(results[0].history), without_timing(other.history))
    assert results[0].history["train_loss"].notna().all()


def test_trainer_step_returns_nats_per_data_point(train):
    x = train.batch(torch.arange(50), generator=torch.Generator().manual_seed(0))
    vae = make_vae()
    for beta in (1.0, 0.3):
        pyro.set_rng_seed(7)
        with scale_latents(beta=beta):
            expected = Trace_ELBO().loss(vae.model, vae.guide, x) / len(x)  # unscaled sum over 50
        for num_data in (50, 1197):  # the minibatch scale N/B cancels in the per-data-point figure
            trainer = pyrovae.Trainer(make_vae(), num_data)
            pyro.set_rng_seed(7)
            # equal up to float rounding: the scale N/B is applied per data point before summing
            assert trainer.step(x, beta=beta) == pytest.approx(expected, rel=1e-5)
    # evaluation too: the estimator's negative bound summed over chunks, per data point, each
    # chunk seeded from (seed, its first data point)
    trainer = pyrovae.Trainer(make_vae(), len(train))
    value = trainer.evaluate(x, seed=0, chunk_size=20)
    parts = []
    for lo in range(0, len(x), 20):
        with pyro.validation_enabled(False), seeded(pyrovae.distributed.derived_seed(0, lo)):
            parts.append(trainer.elbo.loss(trainer.vae.model, trainer.vae.guide, x[lo : lo + 20]))
    assert value == pytest.approx(sum(parts) / len(x), rel=1e-12)


def test_a_nan_gradient_with_a_finite_loss_is_never_applied(tmp_path, train):
    vae = make_vae()
    pyrovae.fit(vae, train, epochs=1, seed=0, run_dir=tmp_path / "run", **SMALL)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    vae.decoder.register_full_backward_hook(lambda module, grad_in, grad_out: (grad_in[0] * math.nan,))
    with pytest.raises(TrainingError, match=r"the gradient became non-finite .* at epoch 2, step 1") as err:
        pyrovae.fit(vae, train, epochs=2, seed=0, run_dir=tmp_path / "run", resume=True, **SMALL)
    assert "keeps the last finite state (epoch 1)" in str(err.value)
    for key, value in vae.state_dict().items():  # the step was not applied
        assert torch.equal(value, before[key]), key
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["epoch"] == 1


def test_a_nan_validation_bound_stops_before_the_epoch_is_committed(tmp_path, train, valid):
    vae = make_vae()
    calls = []

    def nan_in_validation(module, args, out):  # the first call (without gradients) finds the data plate
        calls.append(1)
        return None if torch.is_grad_enabled() or len(calls) == 1 else out * math.nan

    vae.decoder.register_forward_hook(nan_in_validation)
    with pytest.raises(TrainingError, match="the validation bound became nan after epoch 1") as err:
        pyrovae.fit(vae, train, valid, epochs=2, run_dir=tmp_path / "run", **SMALL)
    assert "no epoch was completed, so there is no checkpoint" in str(err.value)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_resume_refuses_other_fixed_settings_and_records_a_new_learning_rate(tmp_path, train):
    run = tmp_path / "run"
    pyrovae.fit(make_vae(), train, epochs=1, run_dir=run, **SMALL)
    for change in ({"batch_size": 300}, {"optimizer": "sgd"}, {"seed": 1}, {"kl_warmup": 2}):
        with pytest.raises(ConfigError, match=f"the run was trained with {next(iter(change))}="):
            pyrovae.fit(make_vae(), train, epochs=2, run_dir=run, resume=True, **{**SMALL, **change})
    assert load_checkpoint(run / CHECKPOINT)["epoch"] == 1  # refused before anything was written
    result = pyrovae.fit(make_vae(), train, epochs=2, run_dir=run, resume=True, **{**SMALL, "lr": 1e-3})
    assert result.history["lr"].tolist() == [1e-2, 1e-3]
    assert any("lr 0.01 -> 0.001" in note for note in result.notes)
    state = load_checkpoint(run / CHECKPOINT)
    assert state["resumes"] == [{"epoch": 1, "changed": {"epochs": [1, 2], "lr": [1e-2, 1e-3]}}]
    assert all(group["lr"] == 1e-3 for group in state["optimizer"]["param_groups"])


def test_resuming_another_architecture_is_a_checkpoint_error(tmp_path, train):
    pyrovae.fit(make_vae(), train, epochs=1, run_dir=tmp_path / "run", **SMALL)
    with pytest.raises(
        CheckpointError, match="do not fit this VAE.*Resume with the model the run was trained"
    ):
        pyrovae.fit(make_vae(hidden=(16,)), train, epochs=2, run_dir=tmp_path / "run", resume=True, **SMALL)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"epochs": 2.5}, r"epochs \(--epochs\) must be an integer >= 1; got 2\.5"),
        ({"lr": "0.1"}, r"lr \(--lr\) must be a number > 0; got '0\.1'"),
        ({"clip_norm": -1}, r"clip_norm \(--clip-norm\) must be a number > 0, or None"),
        ({"patience": 0}, r"patience \(--patience\) must be an integer >= 1, or None"),
        ({"kl_warmup": -1}, r"kl_warmup \(--kl-warmup\) must be an integer >= 0"),
    ],
)
def test_options_outside_their_domain_are_refused_before_anything_is_written(tmp_path, train, options, match):
    with pytest.raises(ConfigError, match=match):
        pyrovae.fit(make_vae(), train, run_dir=tmp_path / "run", **{"epochs": 1, **SMALL, **options})
    assert not (tmp_path / "run").exists()


def test_adam_normgrad_is_adam_on_per_tensor_normalized_gradients():
    from pyrovae.train.optim import NORM_EPS, AdamNormGrad

    torch.manual_seed(0)
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)
    a2, b2 = (t.detach().clone().requires_grad_(True) for t in (a, b))
    ours, theirs = AdamNormGrad([a, b], lr=0.1), torch.optim.Adam([a2, b2], lr=0.1)
    for _ in range(3):
        grads = [torch.randn_like(a) * 100, torch.randn_like(b) * 1e-3]
        a.grad, b.grad = (g.clone() for g in grads)
        a2.grad, b2.grad = (g / (g.norm() + NORM_EPS) for g in grads)
        ours.step()
        theirs.step()
    torch.testing.assert_close(a, a2, rtol=0, atol=1e-6)
    torch.testing.assert_close(b, b2, rtol=0, atol=1e-6)
    result = pyrovae.fit(
        make_vae(), pyrovae.load("digits", "train"), epochs=1, optimizer="adam-normgrad", **SMALL
    )
    assert result.history["train_loss"].notna().all()


def test_parameters_made_non_finite_by_the_last_step_are_never_committed(tmp_path):
    torch.manual_seed(0)
    vae = pyrovae.VAE(4, latent_dim=2, hidden=(4,), likelihood="gaussian")
    x = torch.randn(20, 4)
    with pytest.raises(TrainingError, match="non-finite at epoch 1") as err:
        pyrovae.fit(
            vae,
            x,
            epochs=1,
            batch_size=20,
            optimizer="sgd",
            lr=1e38,
            run_dir=tmp_path / "run",
            progress=False,
        )
    assert "no epoch was completed, so there is no checkpoint" in str(err.value)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def diverging(vae: pyrovae.VAE, epochs: int) -> None:
    """``fit``, one step per epoch, at a learning rate that makes the loss non-finite in epoch 2 (here)."""
    x = (torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    pyrovae.fit(vae, x, epochs=epochs, lr=1e6, optimizer="sgd", batch_size=64, progress=False)


def test_parameters_that_became_non_finite_are_replaced_by_those_the_epoch_began_with():
    x = (torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    vae = make_vae(hidden=(8,))
    start = {name: value.clone() for name, value in vae.state_dict().items()}
    # the parameters are infinite after step 1, the loss of step 2 not finite
    with pytest.raises(TrainingError, match=r"step 2; .* parameters from before epoch 1 \(the last finite"):
        pyrovae.fit(vae, x, epochs=1, lr=1e37, optimizer="sgd", batch_size=64, progress=False)
    assert all(torch.equal(start[name], value) for name, value in vae.state_dict().items())


def test_a_fit_stopped_by_a_non_finite_value_gives_back_the_parameters_of_its_last_good_step():
    one_epoch = make_vae(hidden=(8,))
    diverging(one_epoch, 1)
    stopped = make_vae(hidden=(8,))
    with pytest.raises(TrainingError, match="The module holds its parameters from just before the step that"):
        diverging(stopped, 2)
    for name, value in one_epoch.state_dict().items():
        assert torch.equal(stopped.state_dict()[name], value), name
    # those parameters diverged already: a next fit names the problem instead of Pyro's traceback
    with pytest.raises(ConfigError, match="failed Pyro's validation .* diverged in an earlier training"):
        pyrovae.fit(stopped, (torch.rand(8, 1, 8, 8) > 0.5).float(), epochs=1, progress=False)
