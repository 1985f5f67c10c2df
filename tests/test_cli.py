"""The command line, end to end on the bundled digits: in-process through main(), and once as a process."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
import xarray as xr
from conftest import CLI_TRAIN

import pyrovae
from pyrovae import cli
from pyrovae.cli.flags import default_bounds
from pyrovae.runs.run import CONFIG, RunConfig, load_run
from pyrovae.storage import load_checkpoint

# small and fast; --test-samples 0 skips the importance-sampled test log-likelihood; the Bernoulli
# likelihood (on dynamically binarized digits) keeps the test bound's magnitude known (64 log 2 = 44
# nats for a uniform guess, below 100 after two epochs) where the default, a binomial on 17 grey
# levels, starts near 500 nats
# (conftest's CLI_TRAIN, the shared run's: the data and model, then the flags that keep it fast)
TRAIN, FAST = CLI_TRAIN[:11], CLI_TRAIN[11:]
RUN_FILES = {
    CONFIG,
    "results.json",
    "checkpoint.pt",
    ".lock",
    "manifest.json",
    "history.csv",
    "learning_curves.png",
    "samples.png",
    "reconstructions.png",
    "embedding.png",
}
PNG = b"\x89PNG\r\n\x1a\n"


def snapshot(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def usage_error(capsys, argv) -> str:
    """Run ``argv``, which must fail as a usage error: status 2 and one line on stderr, no traceback."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pyrovae {argv[0]}: error: ")
    return lines[0]


def argparse_error(capsys, argv) -> str:
    """Run ``argv``, which argparse must refuse: status 2, its usage and one error line, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pyrovae {argv[0]}: error: ")
    return last


@pytest.fixture(scope="module")
def trained(cli_run, tmp_path_factory):
    """This module's copy of the shared `pyrovae train` run of ``TRAIN + FAST`` (conftest's
    ``cli_run``), for the tests that read it or write their outputs beside its files."""
    run = tmp_path_factory.mktemp("cli") / "run"
    shutil.copytree(cli_run, run)
    return run


def test_train_writes_a_complete_run_directory(trained, capsys):
    assert {p.name for p in trained.iterdir()} == RUN_FILES
    config = RunConfig.read(trained / CONFIG)
    assert (config.dataset, config.epochs, config.latent_dim, config.hidden) == ("digits", 2, 4, [32])
    results = json.loads((trained / "results.json").read_text())
    assert results["epochs"] == 2 and results["test_size"] == 300
    assert 0 < results["test_negative_elbo"] < 100
    assert len(pd.read_csv(trained / "history.csv")) == 2
    assert load_checkpoint(trained / "checkpoint.pt")["epoch"] == 2
    for name in RUN_FILES:
        if name.endswith(".png"):
            assert (trained / name).read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "spec, words",
    [("poisson", ["unknown likelihood 'poisson'", "binomial"]), ("binomial:levels=1", ["levels must be"])],
)
def test_a_bad_likelihood_is_a_usage_error_before_anything_is_written(spec, words, tmp_path, capsys):
    line = usage_error(capsys, [*TRAIN, "--likelihood", spec, "--run-dir", str(tmp_path / "run"), *FAST])
    assert all(word in line for word in words)
    assert not (tmp_path / "run").exists()


def test_a_saved_config_gives_the_same_config_and_flags_override_it(trained, tmp_path, capsys):
    again = tmp_path / "again"
    assert cli.main(["train", "--config", str(trained / CONFIG), "--run-dir", str(again), *FAST]) == 0
    assert json.loads((again / CONFIG).read_text()) == json.loads((trained / CONFIG).read_text())
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"latent_dim": 3, "hidden": [16], "epochs": 1, "batch_size": 600}))
    argv = ["train", "--config", str(config), "--run-dir", str(tmp_path / "o"), "--latent-dim", "2", *FAST]
    assert cli.main(argv) == 0
    written = RunConfig.read(tmp_path / "o" / CONFIG)
    assert (written.latent_dim, written.hidden, written.epochs, written.batch_size) == (2, [16], 1, 400)


def test_cli_seed_determines_initial_parameters_so_a_config_reproduces_its_run(tmp_path, capsys):
    """`train` seeds the initial parameters with --seed: whatever used the global random state
    before, two runs of one configuration start from the same parameters."""
    first, second = tmp_path / "first", tmp_path / "second"
    torch.manual_seed(123)  # global RNG state left by earlier work in the process
    assert cli.main([*TRAIN, "--seed", "4", "--run-dir", str(first), *FAST]) == 0
    torch.manual_seed(456)
    assert cli.main(["train", "--config", str(first / CONFIG), "--run-dir", str(second), *FAST]) == 0
    a, b = load_checkpoint(first / "checkpoint.pt"), load_checkpoint(second / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.parametrize(
    "command, default", [("sample", "samples.png"), ("reconstruct", "reconstructions-test.png")]
)
def test_sample_and_reconstruct_write_figures_and_refuse_to_overwrite(
    trained, tmp_path, capsys, command, default
):
    out = tmp_path / "figure.png"
    assert cli.main([command, str(trained), "--out", str(out), "--num", "5"]) == 0
    assert out.read_bytes()[:8] == PNG
    before = out.read_bytes()
    message = usage_error(capsys, [command, str(trained), "--out", str(out), "--seed", "1"])
    assert "--overwrite" in message and str(out) in message
    assert out.read_bytes() == before
    assert cli.main([command, str(trained), "--out", str(out), "--overwrite", "--checkpoint", "last"]) == 0
    assert out.read_bytes()[:8] == PNG
    # without --out the figure goes into the run directory (replacing training's samples.png: --overwrite)
    if command == "reconstruct":
        assert cli.main([command, str(trained), "--split", "valid", "--num", "3"]) == 0
        default = "reconstructions-valid.png"
    else:
        assert cli.main([command, str(trained), "--num", "3", "--overwrite"]) == 0
    assert (trained / default).read_bytes()[:8] == PNG


@pytest.mark.parametrize("command", [None, *cli.COMMANDS])
def test_help_exits_zero(capsys, command):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pyrovae" + ("" if command is None else f" {command}"))


def test_unknown_dataset_is_an_argparse_error(capsys):
    message = argparse_error(capsys, ["train", "--dataset", "cifar"])
    assert "invalid choice: 'cifar'" in message and "digits" in message


def test_non_empty_run_dir_is_refused_and_left_untouched(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    message = usage_error(capsys, [*TRAIN, "--run-dir", str(run), *FAST])
    assert "not empty" in message and "--resume" in message and "--overwrite" in message
    assert snapshot(run) == before


def test_missing_data_file_names_the_file_and_where_it_looked(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "run"
    args = ["--dataset", "binarized-mnist", "--data-root", str(empty), "--run-dir", str(run)]
    message = usage_error(capsys, [*TRAIN, *args, *FAST])
    assert "binarized_mnist_train.amat" in message
    assert f"looked in: {empty}" in message and "--download" in message
    assert not run.exists()


def test_config_file_with_an_unknown_key(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"latent_dim": 4, "laten_dim": 4}))
    message = usage_error(
        capsys, ["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), *FAST]
    )
    assert "laten_dim" in message and "valid keys" in message and "latent_dim" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["sample", "reconstruct"])
def test_run_commands_on_a_directory_that_is_not_a_run(tmp_path, capsys, command):
    message = usage_error(capsys, [command, str(tmp_path)])
    assert "(not a run)" in message


def test_resume_continues_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main([*TRAIN, "--run-dir", str(run), *FAST]) == 0
    # the same epochs again: training is done, the final evaluation is computed again
    (run / "results.json").unlink()
    assert cli.main(["train", "--run-dir", str(run), "--resume", *FAST]) == 0
    assert json.loads((run / "results.json").read_text())["epochs"] == 2
    assert "already trained 2 epochs" in usage_error(
        capsys, ["train", "--run-dir", str(run), "--resume", *FAST, "--epochs", "1"]
    )
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "3", *FAST]) == 0
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert json.loads((run / "results.json").read_text())["epochs"] == 3
    config = RunConfig.read(run / CONFIG)
    assert (config.epochs, config.latent_dim, config.hidden) == (3, 4, [32])  # the rest from the run's config
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 3


def test_train_as_a_process_without_stdin(tmp_path):
    run = tmp_path / "run"
    env = {
        **os.environ,
        "PYROVAE_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pyrovae.cli", *TRAIN, "--run-dir", str(run), *FAST],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "run directory" in proc.stdout
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert not (tmp_path / "runs").exists()


def test_cli_refused_resume_leaves_the_runs_config_alone(tmp_path, capsys):
    """A refused resume (exit 2) leaves the run directory as it was: config.json included."""
    run = tmp_path / "run"
    assert cli.main([*TRAIN, "--run-dir", str(run), *FAST]) == 0
    before = snapshot(run)
    message = usage_error(capsys, ["train", "--run-dir", str(run), "--resume", "--epochs", "1", *FAST])
    assert "already trained 2 epochs" in message
    assert snapshot(run) == before


def test_cli_overwrite_replaces_the_previous_runs_test_results(tmp_path, capsys):
    """--overwrite replaces results.json: no figure of the previous model survives in it."""
    run = tmp_path / "run"
    capsys.readouterr()
    assert cli.main([*TRAIN, "--run-dir", str(run), *FAST[:-1], "2"]) == 0
    old = json.loads((run / "results.json").read_text())
    assert any(key.startswith("test_nll") for key in old)  # written for --test-samples 2
    # the importance-sampled log p(x) stored with what decides whether to trust it, and printed last
    ll = old["test_log_likelihood"]
    assert ll["num_data"] == 300 and ll["khat_above_0_7"] >= 0 and ll["ess_median"] > 0
    assert ll["verdict"].startswith("IS-2 NLL") and "k-hat" in ll["verdict"]
    last = capsys.readouterr().out.strip().splitlines()[-3:]
    assert last[0].startswith("IS-2 NLL") and last[-1].startswith("run directory:"), last
    assert cli.main([*TRAIN, "--run-dir", str(run), "--overwrite", "--seed", "1", *FAST]) == 0
    new = json.loads((run / "results.json").read_text())
    assert new["test_negative_elbo"] != old["test_negative_elbo"]
    assert not any(key.startswith("test_nll") for key in new) and "test_log_likelihood" not in new, new


def test_evaluate_with_ais_and_bdmc(trained, capsys):
    argv = [
        "evaluate",
        str(trained),
        "--limit",
        "4",
        "--num-samples",
        "20",
        "--bounds",
        "1,20",
        "--no-progress",
    ]
    argv += ["--ais-steps", "3", "--ais-chains", "2", "--leapfrog-steps", "2", "--bdmc", "3"]
    assert cli.main(argv) == 0
    summary = json.loads((trained / "evaluation-test.json").read_text())
    assert "AIS-3" in summary["bounds"]["bounds"] and summary["bounds"]["ais"]["AIS-3"]["num_chains"] == 2
    assert (
        summary["bounds"]["bdmc"]["num_data"] == 3 and summary["bounds"]["bdmc"]["forward"]["num_steps"] == 3
    )
    assert "AIS-3" in pd.read_csv(trained / "evaluation-test.csv").columns
    assert list(pd.read_csv(trained / "evaluation-test-bdmc.csv").columns)[:4] == [
        "simulated",
        "lower",
        "upper",
        "gap",
    ]
    assert (trained / "bounds-test.png").read_bytes()[:8] == PNG
    assert "BDMC" in capsys.readouterr().out
    assert "--ais-chains" in usage_error(
        capsys, ["evaluate", str(trained), "--ais-steps", "3", "--ais-chains", "0"]
    )


def test_train_an_hvae_with_a_vamp_prior_and_rebuild_it_from_its_run_directory(tmp_path, capsys):
    run = tmp_path / "hvae"
    argv = [*TRAIN, "--model", "hvae", "--prior", "vamp", "--prior-components", "5", "--latent-dim2", "2"]
    assert cli.main([*argv, "--epochs", "1", "--run-dir", str(run), *FAST]) == 0
    config = RunConfig.read(run / CONFIG)
    assert (config.model, config.prior, config.prior_components, config.latent_dim, config.latent_dim2) == (
        "hvae",
        "vamp",
        5,
        4,
        2,
    )
    loaded = load_run(run)
    assert type(loaded.vae).__name__ == "HVAE" and loaded.vae.prior.pseudo_inputs.shape == (5, 1, 8, 8)
    state = load_checkpoint(run / "checkpoint.pt")["model"]
    for key, value in loaded.vae.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert cli.main(["sample", str(run), "--num", "4", "--overwrite"]) == 0


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--prior", "normal", "--prior-components", "5"], "no components"),
        (["--prior", "mixture", "--prior-components", "0"], "must be an integer >= 1"),
        (["--latent-dim2", "2"], "--model hvae"),
        (["--model", "hvae", "--network", "conv"], "--network mlp"),
    ],
)
def test_inconsistent_model_options_are_usage_errors(tmp_path, capsys, flags, match):
    message = usage_error(capsys, [*TRAIN, *flags, "--run-dir", str(tmp_path / "r"), *FAST])
    assert match in message
    assert not (tmp_path / "r").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"pyrovae {pyrovae.__version__}\n"
    assert pyrovae.__version__ == importlib.metadata.version("pyrovae")


@pytest.mark.parametrize(
    "argv, status, expected",
    [
        (["--help"], 0, "usage: pyrovae [-h] [--version] COMMAND"),
        (["sample", "."], 2, "pyrovae sample: error: . holds no checkpoint.pt (not a run)"),
    ],
)
def test_python_m_pyrovae_is_the_pyrovae_command(tmp_path, argv, status, expected):
    proc = subprocess.run(
        [sys.executable, "-m", "pyrovae", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
        timeout=300,
    )
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stdout + proc.stderr


def subcommand(command: str | None) -> argparse.ArgumentParser:
    """The parser of ``pyrovae COMMAND`` (the top-level parser for None)."""
    p = cli.parser()
    if command is None:
        return p
    (commands,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[command]


@pytest.mark.parametrize("command", [None, "sample", "reconstruct", "evaluate", "compare"])
def test_help_gives_every_option_one_line_and_its_true_default(command):
    p = subcommand(command)
    options = [a for a in p._actions if a.option_strings]
    text = p.format_help()
    # one entry per option: its invocation and its help, wrapped lines joined
    entries = [" ".join(e.split()) for e in text.split("\noptions:\n")[1].split("\n  -")]
    assert len(entries) == len(options)
    for entry in entries:
        assert "(default: None)" not in entry and entry.count("(default:") <= 1, entry
    for action in options:
        assert action.help, action.option_strings
        default = action.default  # 0 (--seed) is shown, unlike None and False
        if default is not None and default is not False and default != argparse.SUPPRESS:
            if "default" not in action.help:
                assert f"(default: {default})" in " ".join(text.split()), action.option_strings


@pytest.mark.parametrize(
    "num_samples, ks", [(1, [1]), (10, [1, 10]), (300, [1, 10, 100, 300]), (5000, [1, 10, 100, 1000, 5000])]
)
def test_default_bounds_are_the_powers_of_ten_below_num_samples_and_num_samples(num_samples, ks):
    assert default_bounds(num_samples) == ks


@pytest.fixture
def run_copy(cli_run, tmp_path):
    """A copy of the files of the shared run that `pyrovae train` wrote (its manifest recording those alone,
    not the outputs this module's tests wrote beside them in ``trained``), for a test that writes into it."""
    run = tmp_path / "run"
    shutil.copytree(cli_run, run, ignore=lambda _, names: [n for n in names if n not in RUN_FILES])
    return run


def test_evaluate_with_num_samples_1000_and_the_default_bounds(run_copy, capsys):
    argv = ["evaluate", str(run_copy), "--num-samples", "1000", "--limit", "2", "--no-progress"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    # one verdict on the importance-sampled estimate, and whether the ladder had levelled off
    assert out.count("IS-1000 NLL") == 1 and "the ladder: IWAE-100 -> IWAE-1000" in out
    summary = json.loads((run_copy / "evaluation-test.json").read_text())
    assert summary["bounds"]["verdict"].startswith("IS-1000 NLL")
    assert set(summary["bounds"]["bounds"]) == {
        "ELBO (analytic KL)",
        "ELBO",
        "IWAE-10",
        "IWAE-100",
        "IWAE-1000",
    }
    # a k larger than --num-samples given explicitly is still refused
    message = usage_error(capsys, [*argv, "--bounds", "1,5000", "--overwrite"])
    assert "k = 5000" in message and "--num-samples is 1000" in message


EVALUATE_FAST = ["--limit", "3", "--num-samples", "10", "--bounds", "1,10", "--no-progress"]
BDMC_FAST = ["--bdmc", "2", "--bdmc-steps", "2", "--ais-chains", "2", "--leapfrog-steps", "2"]
EVALUATE_OUTPUTS = [
    "evaluation-test.json",
    "evaluation-test.csv",
    "evaluation-test.nc",
    "evaluation-test-bdmc.csv",
    "bounds-test.png",
]
OUTPUTS = {  # each command's options for a quick run, and the files it writes into the run directory
    "sample": (["--num", "4"], ["samples.png"]),  # training wrote samples.png too
    "reconstruct": (["--num", "3"], ["reconstructions-test.png"]),
    "evaluate": ([*EVALUATE_FAST, *BDMC_FAST], EVALUATE_OUTPUTS),
    "compare": (
        ["--estimators", "elbo,iwae:k=2", "--num-repeats", "2", "--batch-size", "5", "--no-progress"],
        ["compare.csv", "compare.png"],
    ),
}


def not_computed(*args, **kwargs):
    raise AssertionError("the run was loaded before the output files were checked")


@pytest.mark.parametrize("command", OUTPUTS)
def test_no_command_replaces_a_file_without_overwrite(run_copy, capsys, monkeypatch, command):
    flags, outputs = OUTPUTS[command]
    argv = [command, str(run_copy), *flags]
    for name in outputs:
        if not (run_copy / name).exists():
            (run_copy / name).write_bytes(b"mine")
    before = snapshot(run_copy)
    with monkeypatch.context() as patched:
        patched.setattr("pyrovae.runs.run.load_run", not_computed)  # refused before the run is even loaded
        message = usage_error(capsys, argv)
    assert all(str(run_copy / name) in message for name in outputs), message
    assert "pass --overwrite" in message
    assert ("choose another --out" if command in ("sample", "reconstruct") else "remove") in message
    assert snapshot(run_copy) == before
    assert cli.main([*argv, "--overwrite"]) == 0
    for name in outputs:
        assert (run_copy / name).read_bytes() != before[name], name
    assert (run_copy / outputs[-1]).read_bytes()[:8] == PNG


@pytest.mark.parametrize("name", EVALUATE_OUTPUTS)
def test_evaluate_checks_each_of_its_files_before_computing(run_copy, capsys, monkeypatch, name):
    (run_copy / name).write_text("mine")
    before = snapshot(run_copy)
    monkeypatch.setattr("pyrovae.runs.run.load_run", not_computed)
    message = usage_error(capsys, ["evaluate", str(run_copy), *EVALUATE_FAST, *BDMC_FAST])
    assert message.endswith(f"{run_copy / name} exists; pass --overwrite to replace it, or remove it")
    assert snapshot(run_copy) == before


def test_evaluate_without_bdmc_leaves_a_bdmc_file_alone(run_copy, capsys):
    (run_copy / "evaluation-test-bdmc.csv").write_text("mine")
    assert cli.main(["evaluate", str(run_copy), *EVALUATE_FAST]) == 0
    assert (run_copy / "evaluation-test-bdmc.csv").read_text() == "mine"
    assert (run_copy / "evaluation-test.json").is_file()
    assert cli.main(["evaluate", str(run_copy), *EVALUATE_FAST, "--overwrite"]) == 0
    assert (run_copy / "evaluation-test-bdmc.csv").read_text() == "mine"  # not pyrovae's: never removed


def test_replacing_an_evaluation_removes_the_earlier_ones_bdmc_table(run_copy, capsys):
    assert cli.main(["evaluate", str(run_copy), *EVALUATE_FAST, *BDMC_FAST]) == 0
    assert (run_copy / "evaluation-test-bdmc.csv").is_file()
    # the earlier evaluation's BDMC table would not match the new evaluation: it goes with its set
    assert cli.main(["evaluate", str(run_copy), *EVALUATE_FAST, "--overwrite"]) == 0
    assert not (run_copy / "evaluation-test-bdmc.csv").exists()


def test_out_that_is_a_directory_is_refused(run_copy, tmp_path, capsys):
    message = usage_error(capsys, ["sample", str(run_copy), "--out", str(tmp_path), "--overwrite"])
    assert "is a directory" in message and str(tmp_path / "samples.png") in message


def test_a_flag_given_as_none_is_kept(tmp_path):
    run = tmp_path / "run"
    argv = [*TRAIN, "--epochs", "1", "--binarize", "none", "--likelihood", "gaussian", "--clip-norm", "none"]
    assert cli.main([*argv, "--run-dir", str(run), *FAST]) == 0
    config = RunConfig.read(run / CONFIG)
    assert config.binarize is None and config.clip_norm is None and config.likelihood == "gaussian"


def test_resume_refuses_a_changed_model_and_applies_a_new_learning_rate(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main([*TRAIN, "--epochs", "1", "--run-dir", str(run), *FAST]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    for flags, named in (
        (["--activation", "tanh"], "--activation 'tanh' (the run's: 'softplus')"),
        (["--hidden", "128"], "--hidden [128] (the run's: [32])"),
        (["--optimizer", "sgd", "--seed", "3"], "--optimizer 'sgd' (the run's: 'adam'), --seed 3"),
    ):
        message = usage_error(capsys, ["train", "--run-dir", str(run), "--resume", *flags, *FAST])
        assert named in message and "would change them" in message
    assert (run / "checkpoint.pt").read_bytes() == before
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--lr", "0.01", *FAST]) == 0
    history = pd.read_csv(run / "history.csv")
    assert history["lr"].tolist() == [0.001, 0.01]
    assert RunConfig.read(run / CONFIG).lr == 0.01


def test_evaluate_reports_a_config_json_that_disagrees_with_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main([*TRAIN, "--epochs", "1", "--run-dir", str(run), *FAST]) == 0
    config = json.loads((run / CONFIG).read_text())
    (run / CONFIG).write_text(json.dumps({**config, "activation": "relu"}))
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--num-samples", "10", "--limit", "5", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "activation ('softplus' in the checkpoint, 'relu' in config.json)" in err


SCORE_FAST = ["--limit", "12", "--num-samples", "8", "--steps", "2", "--no-progress"]


def test_score_writes_per_datapoint_scores_of_any_method(run_copy, capsys):
    for method in ("nll", "reconstruction", "likelihood-regret", "complexity", "typicality"):
        argv = ["score", str(run_copy), "--method", method, "--group-size", "3", *SCORE_FAST]
        assert cli.main(argv) == 0, method
        stem = run_copy / f"scores-run-test-{method}"
        frame = pd.read_csv(stem.with_suffix(".csv"))
        assert len(frame) == (4 if method == "typicality" else 12) and frame["score"].notna().all()
        summary = json.loads(stem.with_suffix(".json").read_text())
        assert summary["method"] == method and summary["dataset"] == "digits"
    # the background model equal to the model: every likelihood-ratio score is 0
    argv = [
        "score",
        str(run_copy),
        "--method",
        "likelihood-ratio",
        "--background",
        str(run_copy),
        *SCORE_FAST,
    ]
    assert cli.main(argv) == 0
    assert (pd.read_csv(run_copy / "scores-run-test-likelihood-ratio.csv")["score"] == 0).all()
    # scoring another data set of another shape is a message, before anything is written
    before = snapshot(run_copy)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["score", str(run_copy), "--method", "nope"])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    message = usage_error(capsys, ["score", str(run_copy), "--method", "likelihood-ratio", *SCORE_FAST])
    assert "--background RUN_DIR" in message
    assert snapshot(run_copy) == before


def test_detect_writes_the_table_and_a_figure_per_method(run_copy, capsys):
    argv = [
        "detect",
        str(run_copy),
        "--out",
        "digits",
        "--split",
        "valid",
        "--methods",
        "nll,elbo",
        *SCORE_FAST,
    ]
    assert cli.main(argv) == 0
    table = pd.read_csv(run_copy / "detect-run-vs-digits.csv", index_col=0)
    assert list(table.index) == ["nll", "elbo"] and table["AUROC"].between(0, 1).all()
    for method in ("nll", "elbo"):
        assert (run_copy / f"detect-run-vs-digits-{method}.png").read_bytes()[:4] == b"\x89PNG"
    message = usage_error(capsys, argv)  # the same files again: --overwrite is needed
    assert "pass --overwrite to replace them" in message
    assert "each once" in usage_error(capsys, [*argv[:-7], "--methods", "nll,nll", "--overwrite"])


def test_evaluate_on_another_data_set_writes_its_own_files(run_copy):
    argv = ["evaluate", str(run_copy), "--dataset", "digits", *EVALUATE_FAST]
    assert cli.main(argv) == 0
    summary = json.loads((run_copy / "evaluation-digits-test.json").read_text())
    assert summary["dataset"] == "digits" and summary["log_likelihood"]["num_data"] == 3
    assert not (run_copy / "evaluation-test.json").exists()


def test_resume_refuses_a_config_file(run_copy, tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 5}))
    message = usage_error(
        capsys, ["train", "--run-dir", str(run_copy), "--resume", "--config", str(tmp_path / "c.json")]
    )
    assert "drop --config" in message


LATENTS_OUTPUTS = [
    "latents-test.csv",
    "latents-test.json",
    "latents-test.png",
    "latents-test-embedding.png",
    "latents-test-interpolation.png",
    "latents-test-traversal.png",
    "latents-test-prior-samples.png",
]


def test_latents_writes_its_table_summary_and_pictures(run_copy, capsys):
    argv = ["latents", str(run_copy), "--limit", "50", "--num-particles", "3", "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "latent usage: N = 50 data points" in out and "50 drawn at random with seed 0" in out
    table = pd.read_csv(run_copy / "latents-test.csv")
    assert list(table["dim"]) == [0, 1, 2, 3] and set(table["site"]) == {"z"}
    summary = json.loads((run_copy / "latents-test.json").read_text())
    assert summary["num_data"] == 50 and summary["limit"] == 50 and summary["num_dims"] == 4
    assert summary["sites"]["z"]["mutual_information"] <= math.log(50)
    for name in LATENTS_OUTPUTS:
        if name.endswith(".png"):
            assert (run_copy / name).read_bytes()[:8] == PNG, name
    # a second call refuses to replace them, naming the first one, and exits 2
    message = usage_error(capsys, argv)
    assert "latents-test.csv" in message and "--overwrite" in message
    assert cli.main([*argv, "--overwrite", "--embedding", "tsne"]) == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--limit", "1"], "--limit must be at least 2"),
        (["--num-particles", "0"], "--num-particles must be at least 1"),
    ],
)
def test_latents_refuses_bad_options_before_writing(run_copy, capsys, flags, message):
    before = snapshot(run_copy)
    assert message in usage_error(capsys, ["latents", str(run_copy), *flags])
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    "flags, options",
    [
        (["--estimator", "piwae", "--k", "2", "--m", "3"], {"k": 2, "m": 3}),
        (["--estimator", "ciwae", "--k", "3", "--mix", "0.25"], {"k": 3, "mix": 0.25}),
    ],
)
def test_train_takes_the_options_of_the_rainforth_estimators(tmp_path, flags, options):
    run = tmp_path / "run"
    assert cli.main([*TRAIN, "--epochs", "1", "--run-dir", str(run), *FAST, *flags]) == 0
    config = RunConfig.read(run / CONFIG)
    assert {name: getattr(config, name) for name in options} == options
    built = config.build_estimator()
    assert {name: getattr(built, name) for name in options} == options


def test_mix_outside_0_1_is_refused(capsys, tmp_path):
    message = usage_error(
        capsys, [*TRAIN, "--run-dir", str(tmp_path / "r"), "--estimator", "ciwae", "--mix", "2"]
    )
    assert "mix (--mix) must be a number >= 0 and <= 1" in message


def test_another_data_set_is_binarized_as_the_run_s_data_were():
    from pyrovae.cli.scoring import other_binarize

    # binarized MNIST is stored binary: another data set gets its own binarization (a fixed Bernoulli
    # draw for valid and test), not its grey levels, which a Bernoulli likelihood cannot score
    binary = RunConfig(dataset="binarized-mnist", likelihood="bernoulli")
    assert binary.binarize_mode() is None and other_binarize(binary, "mnist", None) == "dynamic"
    assert other_binarize(binary, "mnist", "threshold") == "threshold"
    assert other_binarize(binary, "mnist", "none") is None
    # a run whose data were binarized binarizes the other set the same way; grey levels stay grey
    assert other_binarize(RunConfig(dataset="digits", likelihood="bernoulli"), "mnist", None) == "dynamic"
    assert other_binarize(RunConfig(dataset="digits", likelihood="binomial"), "mnist", None) is None


@pytest.mark.parametrize(
    "name, bad, first, then",
    [("compile", "fast", "off", "graph"), ("precision", "fp16", "bf16", "highest")],
)
def test_how_a_run_computes_is_checked_recorded_and_may_change_when_it_resumes(
    tmp_path, capsys, name, bad, first, then
):
    flag = f"--{name}"
    message = argparse_error(capsys, ["train", flag, bad])
    assert f"invalid choice: '{bad}'" in message and then in message
    run = tmp_path / "run"
    assert cli.main([*TRAIN, "--run-dir", str(run), *FAST, "--epochs", "1", flag, first]) == 0
    assert getattr(RunConfig.read(run / CONFIG), name) == first
    resume = ["train", "--run-dir", str(run), "--resume", *FAST, "--epochs", "2", flag, then]
    assert cli.main(resume) == 0
    assert getattr(RunConfig.read(run / CONFIG), name) == then
    assert load_checkpoint(run / "checkpoint.pt")["settings"][name] == then


def test_evaluate_computes_and_records_the_precision(run_copy, capsys):
    message = argparse_error(capsys, ["evaluate", str(run_copy), "--precision", "half"])
    assert "invalid choice: 'half'" in message
    argv = ["evaluate", str(run_copy), *EVALUATE_FAST]
    assert cli.main(argv) == 0
    exact = pd.read_csv(run_copy / "evaluation-test.csv")
    capsys.readouterr()
    assert cli.main([*argv, "--precision", "bf16", "--overwrite"]) == 0
    assert "bf16 arithmetic" in capsys.readouterr().out
    summary = json.loads((run_copy / "evaluation-test.json").read_text())
    assert summary["log_likelihood"]["precision"] == "bf16"
    with xr.open_dataset(run_copy / "evaluation-test.nc") as saved:
        assert saved.attrs["precision"] == "bf16"
    # the same images and draws (the seed), computed with bfloat16 products
    half = pd.read_csv(run_copy / "evaluation-test.csv")
    assert not half["log_px"].equals(exact["log_px"])
    assert (half["log_px"] - exact["log_px"]).abs().max() < 1
