"""RunConfig as JSON, and rebuilding a trained model from its run directory."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError, RunDirError
from pyrovae.io import load_checkpoint
from pyrovae.run import CONFIG, RunConfig, load_run
from pyrovae.training import BEST, CHECKPOINT

SMALL = dict(latent_dim=4, hidden=[32], epochs=2, batch_size=400, lr=1e-2)


def test_config_round_trips_through_json(tmp_path):
    config = RunConfig(likelihood="gaussian-learned", binarize=None, clip_norm=2.5, patience=3, **SMALL)
    path = tmp_path / "sub" / CONFIG
    config.write(path)
    assert RunConfig.read(path) == config
    values = json.loads(path.read_text())
    assert values == config.to_dict()
    assert set(values) == {f.name for f in dataclasses.fields(RunConfig)}
    assert RunConfig.from_dict(values) == config
    assert RunConfig.from_dict({}) == RunConfig()


def test_unknown_keys_are_config_errors_listing_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"latent_dim": 4, "latnet_dim": 4, "colour": "red"})
    message = str(err.value)
    assert "colour, latnet_dim" in message
    for field in dataclasses.fields(RunConfig):
        assert field.name in message
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochz": 3}))
    with pytest.raises(ConfigError, match="epochz") as err:
        RunConfig.read(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "text, match", [(None, "does not exist"), ("{oops", "not valid JSON"), ("[1]", "object")]
)
def test_unreadable_config_files_are_config_errors(tmp_path, text, match):
    path = tmp_path / "config.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        RunConfig.read(path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run directory as `pyrovae train` writes it: config.json and checkpoints of a fit."""
    run = tmp_path_factory.mktemp("runs") / "run"
    config = RunConfig(seed=1, **SMALL)
    train, valid = config.load_data("train"), config.load_data("valid")
    torch.manual_seed(0)
    vae = config.build_vae(train.event_shape)
    result = pyrovae.fit(
        vae,
        train,
        valid,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        run_dir=run,
        progress=False,
        config={**config.to_dict(), "event_shape": list(train.event_shape)},
    )
    config.write(run / CONFIG)
    return run, config, result


def test_load_run_rebuilds_the_model_with_identical_parameters(trained_run):
    path, config, result = trained_run
    for which, file in (("best", BEST), ("last", CHECKPOINT)):
        run = load_run(path, which)
        assert run.path == path and run.config == config
        assert not run.vae.training
        state = load_checkpoint(path / file)
        assert run.epoch == state["epoch"]
        loaded = run.vae.state_dict()
        assert loaded.keys() == state["model"].keys()
        for key in loaded:
            assert torch.equal(loaded[key], state["model"][key]), key
    # the best epoch is the last here, so both equal the trained module
    run = load_run(path)
    assert run.epoch == result.best_epoch == 2
    for key, value in result.vae.state_dict().items():
        assert torch.equal(run.vae.state_dict()[key], value)
    assert run.load_data("test").event_shape == (1, 8, 8)


def test_load_run_without_best_checkpoint_or_event_shape_uses_the_last_and_the_data(tmp_path):
    config = RunConfig(**SMALL)
    train = config.load_data("train")
    torch.manual_seed(0)
    result = pyrovae.fit(
        config.build_vae(train.event_shape), train, epochs=1, run_dir=tmp_path, progress=False
    )
    config.write(tmp_path / CONFIG)
    assert not (tmp_path / BEST).exists()
    run = load_run(tmp_path)
    assert run.epoch == 1
    for key, value in result.vae.state_dict().items():
        assert torch.equal(run.vae.state_dict()[key], value)


def test_load_run_on_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="not a pyrovae run directory"):
        load_run(tmp_path)
    with pytest.raises(RunDirError, match="not a pyrovae run directory"):
        load_run(tmp_path / "missing")


def test_load_run_checkpoint_names(trained_run):
    with pytest.raises(ConfigError, match="'best' or 'last'"):
        load_run(trained_run[0], "middle")


def test_config_builds_an_hvae_with_its_prior_and_checks_the_model_options():
    config = RunConfig(
        model="hvae", prior="mixture", prior_components=3, latent_dim=4, latent_dim2=2, hidden=[8]
    )
    hvae = config.build_vae((1, 8, 8))
    assert isinstance(hvae, pyrovae.HVAE) and (hvae.latent_dim, hvae.latent_dim2) == (4, 2)
    assert hvae.prior.logits.shape == (3,) and hvae.prior.loc.shape == (3, 2)
    vae = RunConfig(prior="vamp", prior_components=7, latent_dim=4, hidden=[8]).build_vae((1, 8, 8))
    assert isinstance(vae, pyrovae.VAE) and vae.prior.pseudo_inputs.shape == (7, 1, 8, 8)
    with pytest.raises(ConfigError, match="unknown model 'ladder'; choose one of: hvae, vae"):
        RunConfig(model="ladder").build_vae((1, 8, 8))
