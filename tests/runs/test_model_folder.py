"""Model folders: a model saved as config.json, model.safetensors and a model card, loaded elsewhere, and
refused when damaged or altered."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import pyrovae
from pyrovae import cli
from pyrovae.errors import ConfigError, ModelFolderError
from pyrovae.models.nn import MLPDecoder, MLPEncoder
from pyrovae.runs.model_card import model_card, train_command
from pyrovae.runs.model_folder import PROTOCOL, is_model_folder, load_model, save_model
from pyrovae.runs.run import RunConfig


class TinyPair(nn.Module):
    """A user's own model/guide pair that says how to rebuild itself."""

    def __init__(self, event_shape=(1, 8, 8), latent_dim=2, hidden=(8,)):
        super().__init__()
        self.options = {"event_shape": list(event_shape), "latent_dim": latent_dim, "hidden": list(hidden)}
        self.encoder = MLPEncoder(event_shape, latent_dim, hidden, "softplus")
        self.decoder = MLPDecoder(event_shape, latent_dim, hidden, "softplus")

    def constructor_arguments(self) -> dict:
        return dict(self.options)


class Unsaveable(nn.Module):
    """A module with no way to rebuild it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)


def small_vae(**options) -> pyrovae.VAE:
    return pyrovae.VAE((1, 8, 8), **{"latent_dim": 2, "hidden": (8,), **options})


def main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def rehash(folder: Path) -> None:
    """Record the weights file's SHA-256 in config.json, as if the folder had been exported so."""
    config = json.loads((folder / "config.json").read_text())
    config["sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def folder(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_model(small_vae(prior="vamp"), tmp_path / "model")


# saving and loading


@pytest.mark.parametrize("model", ["vae", "hvae"])
def test_round_trip_gives_the_same_parameters_and_ties(tmp_path, model):
    torch.manual_seed(0)
    kind = pyrovae.VAE if model == "vae" else pyrovae.HVAE
    vae = kind((1, 8, 8), latent_dim=2, hidden=(8,), prior="vamp", likelihood="binomial:levels=17")
    path = save_model(vae, tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_model(path)
    assert type(loaded) is kind and not loaded.training
    assert loaded.state_dict().keys() == vae.state_dict().keys()
    for name, t in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    assert loaded.prior.encoder is loaded.encoder  # the VampPrior's encoder is the guide's, stored once
    stored = load_file(path / "model.safetensors")
    assert not any(name.startswith("prior.encoder.") for name in stored)
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "pyrovae-model" and config["format_version"] == 1
    assert config["class"] == f"pyrovae.models.{model}:{kind.__name__}"
    assert config["pyrovae_version"] == pyrovae.__version__ and config["torch_version"] == torch.__version__
    assert config["options"]["likelihood"] == "binomial:levels=17" and config["options"]["dataset"] is None
    assert config["tensors"].keys() == stored.keys()
    for name, t in stored.items():
        assert config["tensors"][name] == {"shape": list(t.shape), "dtype": "float32"}
    assert config["sha256"] == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_a_module_that_says_how_to_rebuild_itself_round_trips(tmp_path):
    pair = TinyPair(latent_dim=3).double()
    path = save_model(pair, tmp_path / "pair")
    config = json.loads((path / "config.json").read_text())
    assert config["class"] == f"{TinyPair.__module__}:TinyPair"
    assert config["arguments"] == {"event_shape": [1, 8, 8], "latent_dim": 3, "hidden": [8]}
    loaded = load_model(path)
    assert type(loaded) is TinyPair
    for name, t in pair.state_dict().items():
        assert loaded.state_dict()[name].dtype == torch.float64
        assert torch.equal(loaded.state_dict()[name], t), name
    assert "| `latent_dim` | `3` |" in (path / "README.md").read_text()
    with pytest.raises(ModelFolderError, match="which pyrovae's commands cannot use .* pyrovae.load_model"):
        pyrovae.load_run(path)


def test_a_module_without_the_protocol_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=f"Define {PROTOCOL}\\(self\\) -> dict"):
        save_model(Unsaveable(), tmp_path / "m")
    vae = pyrovae.VAE(
        (1, 8, 8),
        encoder=MLPEncoder((1, 8, 8), 2, (8,), "relu"),
        decoder=MLPDecoder((1, 8, 8), 2, (8,), "relu"),
    )
    with pytest.raises(
        ConfigError, match="given its likelihood, prior or networks as modules cannot be saved"
    ):
        save_model(vae, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_class_of_a_script_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(TinyPair, "__module__", "__main__")
    with pytest.raises(ConfigError, match="cannot be imported by its name"):
        save_model(TinyPair(), tmp_path / "m")


def test_protocol_arguments_must_be_json(tmp_path, monkeypatch):
    monkeypatch.setattr(TinyPair, "constructor_arguments", lambda self: {"prior": nn.Linear(1, 1)})
    with pytest.raises(ConfigError, match="must return a dict of keyword arguments in JSON"):
        save_model(TinyPair(), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_non_finite_parameters_are_not_saved(tmp_path):
    vae = small_vae()
    with torch.no_grad():
        vae.decoder.net[0].weight[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN or infinite values in decoder.net.0.weight"):
        save_model(vae, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_an_existing_folder_is_replaced_only_with_overwrite(tmp_path, folder):
    before = files(folder)
    with pytest.raises(ModelFolderError, match="exists and is not empty; pass overwrite=True"):
        save_model(small_vae(), folder)
    assert files(folder) == before
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    save_model(small_vae(latent_dim=3), folder, overwrite=True)
    assert (folder / ".gitattributes").read_text() == "*.safetensors filter=lfs\n"  # the user's file is kept
    assert load_model(folder).latent_dim == 3
    assert not list(tmp_path.glob(".*"))  # no temporary left beside it
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(ModelFolderError, match="holds files but no model folder"):
        save_model(small_vae(), other, overwrite=True)
    assert files(other) == {"todo.txt": b"mine"}
    (tmp_path / "empty").mkdir()
    assert is_model_folder(save_model(small_vae(), tmp_path / "empty"))
    with pytest.raises(ModelFolderError, match="is a file"):
        save_model(small_vae(), other / "todo.txt")


# refusals on loading


def test_refuses_a_missing_weights_file(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="lacks model.safetensors, the model's parameters"):
        load_model(folder)


def test_refuses_altered_weights(folder):
    tensors = load_file(folder / "model.safetensors")
    tensors["decoder.net.0.bias"] += 1
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFolderError, match="does not match the SHA-256 that config.json records"):
        load_model(folder)


def test_refuses_a_truncated_weights_file(folder):
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFolderError, match="damaged, truncated or not a safetensors file"):
        load_model(folder)


def test_refuses_non_finite_weights_by_name(folder):
    tensors = load_file(folder / "model.safetensors")
    tensors["decoder.net.2.weight"][0, 0] = float("inf")
    save_file(tensors, folder / "model.safetensors")
    rehash(folder)
    with pytest.raises(ModelFolderError, match="NaN or infinite values in decoder.net.2.weight"):
        load_model(folder)


def test_refuses_missing_unexpected_and_misshaped_tensors_by_name(folder):
    tensors = load_file(folder / "model.safetensors")
    del tensors["prior.logits"]
    tensors["extra"] = torch.zeros(2)
    tensors["decoder.net.0.bias"] = torch.zeros(9)
    save_file(tensors, folder / "model.safetensors")
    rehash(folder)
    with pytest.raises(ModelFolderError) as err:
        load_model(folder)
    message = str(err.value)
    assert "missing prior.logits" in message and "unexpected extra" in message
    assert "decoder.net.0.bias (9,) in the file, (8,) in the model" in message


@pytest.mark.parametrize(
    "changes, match",
    [
        (
            {"class": "pyrovae.models.vae:NoSuchVAE"},
            "names the class pyrovae.models.vae:NoSuchVAE, which cannot",
        ),
        ({"class": "os:getcwd"}, "which is not a torch.nn.Module class"),
        (
            {"class": "pyrovae.models.hvae:HVAE"},
            "names the class pyrovae.models.hvae:HVAE, but its options build",
        ),
        ({"format_version": 2}, "the folder was written by a newer pyrovae"),
        ({"pyrovae_version": "9.0.0"}, "a newer major version than this one"),
        ({"format": "other"}, "is not the configuration of a model folder"),
        ({"sha256": None}, "lacks sha256"),
        ({"options": {"latent_dim": "abc"}}, "does not rebuild its pyrovae.models.vae:VAE: .*latent_dim"),
    ],
)
def test_refuses_an_altered_config(folder, changes, match):
    edit_config(folder, **changes)
    with pytest.raises(ModelFolderError, match=match):
        load_model(folder)


def test_refuses_what_is_not_a_model_folder(tmp_path, folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="config.json is not valid JSON"):
        load_model(folder)
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (folder / "config.json").unlink()
    with pytest.raises(ModelFolderError, match="holds no config.json"):
        load_model(folder)


def test_warns_of_other_versions_and_loads(folder):
    edit_config(folder, torch_version="2.0.0", pyrovae_version="0.0.1")
    with pytest.warns(UserWarning) as caught:
        load_model(folder)
    messages = " ".join(str(w.message) for w in caught)
    assert "written with pyrovae 0.0.1, and this is pyrovae" in messages
    assert "written with torch 2.0.0, and this is torch" in messages


# from a run: the card, the command line, and a fresh process


def test_card_reports_the_run_and_reproduces_it(cli_run, tmp_path):
    from conftest import CLI_TRAIN

    status, out, err = main("export", cli_run, tmp_path / "model")
    assert status == 0, err
    assert "wrote" in out and "huggingface_hub.upload_folder" in out
    card = (tmp_path / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: pyrovae\ntags:\n- pyrovae\n")
    assert "# VAE on digits" in card and "| negative ELBO |" in card
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["run"]["checkpoint"]["which"] == "best" and config["run"]["epoch"] in (1, 2)
    command = train_command(config["options"], config["run"]["results"])
    assert command in card
    # parsed, the command gives the run's configuration
    parsed = cli.parser().parse_args(shlex.split(command)[1:])
    expected = cli.parser().parse_args(CLI_TRAIN)
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        default = getattr(defaults, f.name)
        assert getattr(parsed, f.name, default) == getattr(expected, f.name, default), f.name


def test_card_shows_the_importance_sampled_figures():
    results = {
        "epochs": 5,
        "test_size": 100,
        "test_negative_elbo": 30.5,
        "test_log_likelihood": {"num_samples": 1000, "mean_log_px": -28.25, "stderr": 0.5, "nll": 28.25}
        | {"ess_median": 12.0, "ess_min": 1.5, "khat_below_0_5": 90, "khat_0_5_to_0_7": 8}
        | {"khat_above_0_7": 2, "verdict": "IS-1000: trust it"},
    }
    config = {
        "class": "pyrovae.models.vae:VAE",
        "options": {"dataset": "digits", "seed": 3},
        "arguments": None,
    }
    config |= {"event_shape": [1, 8, 8], "pyrovae_version": "0.1.0", "torch_version": "2.4", "sha256": "ab"}
    config["run"] = {"epoch": 5, "checkpoint": {"which": "last", "epoch": 5}, "results": results}
    card = model_card(config)
    assert "| log p(x), importance sampled (K = 1000) | -28.250 ± 0.500 |" in card
    assert "| negative log-likelihood | 28.250 ± 0.500 |" in card
    assert "| PSIS k̂ < 0.5 / 0.5–0.7 / > 0.7 | 90 / 8 / 2 data points |" in card
    assert "--seed 3 --test-samples 1000 --run-dir runs/model" in card
    assert "pyrovae export runs/model model --checkpoint last" in card


def test_commands_take_a_model_folder_and_write_beside_it(cli_run, tmp_path):
    model = tmp_path / "model"
    assert main("export", cli_run, model)[0] == 0
    before = files(model)
    status, out, err = main("export", cli_run, model)
    assert status == 2 and "exists and is not empty; pass overwrite=True (--overwrite)" in err
    status, out, err = main(
        "evaluate", model, "--limit", "2", "--num-samples", "5", "--bounds", "1,5", "--no-progress"
    )
    assert status == 0, err
    assert files(model) == before  # the published folder is left as it is
    outputs = tmp_path / "model-outputs"
    assert (outputs / "evaluation-test.json").is_file() and (outputs / "bounds-test.png").is_file()
    recorded = json.loads((outputs / "manifest.json").read_text())[
        "sets"
    ]  # locked and recorded from the first
    assert "evaluation-test.json" in recorded["evaluation-test"]["files"]
    assert main("sample", model, "--num", "4")[0] == 0
    assert (outputs / "samples.png").is_file()
    assert files(model) == before
    assert main("export", cli_run, model, "--overwrite", "--checkpoint", "last")[0] == 0
    assert json.loads((model / "config.json").read_text())["run"]["checkpoint"]["which"] == "last"


def test_a_fresh_process_gives_the_run_directorys_log_likelihood(cli_run, tmp_path):
    """The acceptance test: exported, loaded in another process, the seeded log p(x) is the run's."""
    model = tmp_path / "model"
    assert main("export", cli_run, model)[0] == 0
    script = f"""
import torch, pyrovae
torch.set_num_threads(1)
vae = pyrovae.load_model({str(model)!r})
x = pyrovae.load("digits", "test", binarize="threshold").batch(torch.arange(20))
ll = pyrovae.log_likelihood(vae.model, vae.guide, x, 16, seed=7, progress=False)
print(ll.mean.hex())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = pyrovae.load_run(cli_run)
    x = pyrovae.load("digits", "test", binarize="threshold").batch(torch.arange(20))
    ll = pyrovae.log_likelihood(run.vae.model, run.vae.guide, x, 16, seed=7, progress=False)
    assert float.fromhex(done.stdout.strip().splitlines()[-1]) == ll.mean
