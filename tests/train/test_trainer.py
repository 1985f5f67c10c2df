"""The trainer's step with deferred checks (``Trainer.step(sync=False)``, the path of a GPU): a step that is
not finite is undone on the device, and so is every later one until ``check()`` names it."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

import pyrovae
from pyrovae.errors import TrainingError
from pyrovae.train import loop


@pytest.fixture(scope="module")
def digits(load_digits):
    return load_digits("train")


@pytest.mark.parametrize("compile", ["off", "graph"])
def test_a_deferred_step_that_is_not_finite_is_undone_and_check_names_it(digits, compile):
    torch.manual_seed(0)
    trainer = pyrovae.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,)), 1000, compile=compile)
    batches = [digits.batch(torch.arange(i * 50, i * 50 + 50)) for i in range(6)]
    bad = batches[2] * math.nan
    losses = [trainer.step(b, sync=False) for b in batches[:2]]
    assert all(torch.is_tensor(v) and v.dim() == 0 for v in losses)
    kept = [p.detach().clone() for p in trainer.params]
    trainer.step(bad, sync=False)
    trainer.step(batches[3], sync=False)  # after a step that was not finite, none is applied until checked
    assert all(torch.equal(p, k) for p, k in zip(trainer.params, kept, strict=True))
    assert trainer.check() == 3 and trainer.checked_steps == 4
    assert trainer.check() is None  # nothing since
    trainer.step(batches[4], sync=False)  # checked: steps are applied again
    assert trainer.check() is None and trainer.checked_steps == 1
    assert not all(torch.equal(p, k) for p, k in zip(trainer.params, kept, strict=True))


def test_deferred_and_immediate_checks_give_the_same_steps(digits):
    def run(sync: bool) -> tuple[list[float], list[torch.Tensor]]:
        torch.manual_seed(0)
        trainer = pyrovae.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,)), 1000)
        torch.manual_seed(1)
        losses = [
            float(trainer.step(digits.batch(torch.arange(i * 50, i * 50 + 50)), sync=sync)) for i in range(5)
        ]
        return losses, [p.detach() for p in trainer.params]

    (a, pa), (b, pb) = run(True), run(False)
    assert a == b and all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))


def test_fit_with_deferred_checks_names_the_epoch_and_step_and_keeps_the_last_good_parameters(
    monkeypatch, tmp_path, digits
):
    # the loop of a GPU, here on the CPU: checked every 2 steps and at the end of each epoch
    monkeypatch.setattr(loop, "DEFERRED_DEVICES", ("cpu", "cuda"))
    monkeypatch.setattr(loop, "SYNC_EVERY", 2)
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    run = dict(epochs=3, batch_size=100, seed=0, progress=False)
    pyrovae.fit(vae, digits, run_dir=tmp_path / "run", **{**run, "epochs": 1})
    good = {k: v.clone() for k, v in vae.state_dict().items()}
    # the learning rate that makes the first step of epoch 2 overflow the parameters (SGD, a huge step)
    with pytest.raises(TrainingError, match=r"non-finite at epoch 2, step 1\b") as err:
        pyrovae.fit(vae, digits, run_dir=tmp_path / "run", resume=True, lr=1e38, **run)
    assert "keeps the last finite state (epoch 1)" in str(err.value)
    for key, value in vae.state_dict().items():
        assert torch.equal(value, good[key]), key


def test_a_first_deferred_step_that_is_not_finite_leaves_no_state_behind(digits):
    # Adam's moments are made by the first step: where it was not finite they are zeroed, not left NaN
    torch.manual_seed(0)
    trainer = pyrovae.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,)), 1000)
    with pyro.validation_enabled(False):  # which would refuse the NaN data of the first step
        trainer.step(digits.batch(torch.arange(50)) * math.nan, sync=False)
    assert trainer.check() == 1
    for i in range(1, 4):
        trainer.step(digits.batch(torch.arange(i * 50, i * 50 + 50)), sync=False)
    assert trainer.check() is None
    assert all(bool(p.isfinite().all()) for p in trainer.params)
