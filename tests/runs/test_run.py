"""RunConfig as JSON, and rebuilding a trained model from its run directory."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pandas as pd
import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError, RunDirError
from pyrovae.runs.directory import CHECKPOINT, CONFIG
from pyrovae.runs.run import RunConfig, load_run
from pyrovae.storage import load_checkpoint

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
        config=config.to_dict(),
    )
    return run, config, result


def test_load_run_rebuilds_the_model_with_identical_parameters(trained_run):
    path, config, result = trained_run
    state = load_checkpoint(path / CHECKPOINT)
    for which, weights in (("best", "best_model"), ("last", "model")):
        run = load_run(path, which)
        assert run.path == path and run.config == config
        assert not run.vae.training
        assert run.epoch == state["epoch"]
        loaded = run.vae.state_dict()
        assert loaded.keys() == state[weights].keys()
        for key in loaded:
            assert torch.equal(loaded[key], state[weights][key]), key
        pd.testing.assert_frame_equal(run.history, result.history)
    # the best epoch is the last here, so both equal the trained module
    run = load_run(path)
    assert run.epoch == result.best_epoch == 2
    for key, value in result.vae.state_dict().items():
        assert torch.equal(run.vae.state_dict()[key], value)
    assert run.load_data("test").event_shape == (1, 8, 8)


def test_a_run_trained_from_python_loads_with_its_last_parameters_without_validation(tmp_path):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=4, hidden=(32,), activation="tanh")
    train = pyrovae.load("digits", "train")
    result = pyrovae.fit(vae, train, epochs=1, batch_size=400, run_dir=tmp_path, progress=False)
    config = json.loads((tmp_path / CONFIG).read_text())
    assert config["activation"] == "tanh" and config["dataset"] is None and config["epochs"] == 1
    run = load_run(tmp_path)  # no validation data: the best parameters are the last
    assert run.epoch == 1 and run.config.activation == "tanh" and run.results is None
    for key, value in result.vae.state_dict().items():
        assert torch.equal(run.vae.state_dict()[key], value)
    with pytest.raises(ConfigError, match="trained from Python on data of its own"):
        run.load_data("test")


def test_load_run_on_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="not a run"):
        load_run(tmp_path)
    with pytest.raises(RunDirError, match="not a run"):
        load_run(tmp_path / "missing")
    (tmp_path / CONFIG).write_text("{}")
    with pytest.raises(RunDirError, match="has not finished an epoch"):
        load_run(tmp_path)


def test_a_config_json_that_disagrees_with_the_checkpoint_is_reported_and_the_checkpoints_used(
    trained_run, tmp_path
):
    path, config, result = trained_run
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    (copy / CONFIG).write_text(json.dumps({**config.to_dict(), "activation": "relu", "lr": 0.5}))
    with pytest.warns(
        UserWarning, match=r"activation \('softplus' in the checkpoint, 'relu' in config.json\)"
    ) as w:
        run = load_run(copy)
    assert "lr" not in str(w[0].message)  # a resumed run may change the learning rate
    assert run.config.activation == "softplus"
    (copy / CONFIG).write_text('{"latent_dim": "abc"}')
    with pytest.warns(UserWarning, match="latent_dim"):
        load_run(copy)


def test_the_configuration_of_a_run_is_its_checkpoints_else_its_config_json(trained_run, tmp_path):
    path, config, _ = trained_run
    assert RunConfig.of_run(path) == config
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    (copy / CONFIG).write_text(json.dumps({**config.to_dict(), "activation": "relu"}))
    assert RunConfig.of_run(copy) == config  # the checkpoint's, whatever config.json says
    (copy / CHECKPOINT).unlink()  # before the first epoch: config.json's
    assert RunConfig.of_run(copy).activation == "relu"
    (copy / CONFIG).unlink()
    assert RunConfig.of_run(copy) is None and RunConfig.of_run(tmp_path / "missing") is None
    state = load_checkpoint(path / CHECKPOINT)
    # version 1 kept the data's shape in the configuration; a model trained from Python has none
    assert RunConfig.of_state({"config": {**state["config"], "event_shape": [1, 8, 8]}}) == config
    assert RunConfig.of_state({"config": None}) is None and RunConfig.of_state({}) is None
    with pytest.raises(ConfigError, match="the checkpoint: unknown keys colour"):
        RunConfig.of_state({"config": {**state["config"], "colour": "red"}}, "the checkpoint")


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
    gated = RunConfig(model="hvae", network="gated", latent_dim=4, hidden=[8]).build_vae((1, 8, 8))
    assert type(gated.encoder1).__name__ == "ConditionalGatedEncoder"
    assert gated.run_options()["network"] == "gated"
    with pytest.raises(ConfigError, match="--network mlp or --network gated"):
        RunConfig(model="hvae", network="conv").build_vae((1, 8, 8))


@pytest.mark.parametrize(
    "dataset, likelihood, binarize, spec, mode",
    [
        ("digits", "default", "default", "binomial:levels=17", None),  # the digits' 17 grey levels
        ("mnist", "default", "default", "bernoulli", "dynamic"),  # MNIST as the literature has it
        ("binarized-mnist", "default", "default", "bernoulli", None),
        ("mnist", "binomial", "default", "binomial:levels=256", None),
        ("mnist", "gaussian", "default", "gaussian", None),  # grey levels for a continuous likelihood
        ("digits", "bernoulli", "default", "bernoulli", "dynamic"),  # as runs before the binomial
        ("digits", "binomial:levels=5", "threshold", "binomial:levels=5", "threshold"),  # as given
    ],
)
def test_default_likelihood_and_binarization_follow_the_data_set(dataset, likelihood, binarize, spec, mode):
    config = RunConfig(dataset=dataset, likelihood=likelihood, binarize=binarize)
    assert config.likelihood_spec() == spec and config.binarize_mode() == mode


def test_the_default_digits_model_is_a_binomial_on_their_grey_levels():
    config = RunConfig(**SMALL)
    train = config.load_data("train")
    vae = config.build_vae(train.event_shape)
    assert isinstance(vae.likelihood, pyrovae.models.likelihoods.Binomial) and vae.likelihood.levels == 17
    assert train.binarize is None and len(torch.unique(train.data)) == 17
    vae.likelihood.check(train.data)
