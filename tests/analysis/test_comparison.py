"""pyrovae.compare on probabilistic PCA with known answers, and `pyrovae compare` / `train --k` end to end."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from toy_models import LearnablePPCA

import pyrovae
from pyrovae import cli
from pyrovae.analysis.comparison import COLUMNS
from pyrovae.errors import ConfigError
from pyrovae.runs.run import CONFIG, RunConfig

PNG = b"\x89PNG\r\n\x1a\n"
TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "4", "--hidden", "32"]
FAST = ["--batch-size", "400", "--no-progress", "--test-samples", "0"]


@pytest.fixture(scope="module")
def ppca(make_ppca):
    return make_ppca(20)


def test_columns_the_guide_model_split_and_exact_answers(ppca):
    ppca, x = ppca
    exact = LearnablePPCA(ppca)  # the guide is the exact posterior
    result = pyrovae.compare(
        exact.model, exact.guide, x, ["elbo", "stl", "iwae:k=5"], num_repeats=10, progress=False
    )
    table = result.to_dataframe()
    assert list(table.columns) == list(COLUMNS) and table.index.name == "estimator"
    assert list(table.index) == ["elbo", "stl", "iwae:k=5"]
    # guide: gain (2 x 6), offset (2), tril (2 x 2); model: W (6 x 2), b (6)
    assert (result.num_guide_params, result.num_model_params, result.batch_size) == (18, 18, 20)
    # every importance weight is p(x): each draw's bound is the exact mean log p(x), without noise
    assert table["bound"].to_numpy() == pytest.approx(float(ppca.log_px(x).mean()), rel=1e-12)
    assert (table["bound_se"] < 1e-12).all()
    # STL's guide gradient is zero, the standard estimator's is not
    assert table.loc["stl", "guide_grad_var"] < 1e-24 < 1e-3 < table.loc["elbo", "guide_grad_var"]
    assert (table["seconds_per_step"] > 0).all()


def test_the_guide_snr_of_iwae_falls_with_k_and_dregs_does_not(ppca):
    # fixed seed; the ratios below are about 8 (IWAE falls) and 1.4 (DReG rises) with 50 draws,
    # far from the thresholds given the draws' spread
    ppca, x = ppca
    module = LearnablePPCA(ppca, shift=0.5)
    specs = ["iwae:k=5", "iwae:k=50", "dreg:k=5", "dreg:k=50"]
    table = pyrovae.compare(module.model, module.guide, x, specs, num_repeats=50, progress=False).table
    assert table.loc["iwae:k=50", "guide_snr"] < table.loc["iwae:k=5", "guide_snr"] / 3
    assert table.loc["dreg:k=50", "guide_snr"] > table.loc["dreg:k=5", "guide_snr"] / 2
    assert table.loc["dreg:k=5", "guide_snr"] > 3 * table.loc["iwae:k=5", "guide_snr"]
    # the model's gradient is the same estimator for both
    assert table.loc["dreg:k=5", "model_snr"] == pytest.approx(table.loc["iwae:k=5", "model_snr"], rel=1e-9)
    assert table.loc["iwae:k=50", "model_snr"] > table.loc["iwae:k=5", "model_snr"]


def test_labels_summary_plot_and_the_callers_random_state(ppca, tmp_path):
    ppca, x = ppca
    module = LearnablePPCA(ppca, shift=0.5)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    result = pyrovae.compare(
        module.model,
        module.guide,
        x,
        {"ELBO": "elbo", "β-IWAE": pyrovae.IWAE(k=3)},
        num_repeats=3,
        progress=False,
    )
    assert torch.equal(torch.rand(3), expected)
    assert list(result.table.index) == ["ELBO", "β-IWAE"]
    text = repr(result)
    assert "3 gradient draws" in text and "guide_snr" in text and "β-IWAE" in text
    result.plot(tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["compare.png"]  # no temporary file left


def test_compare_usage_errors(ppca):
    ppca, x = ppca
    module = LearnablePPCA(ppca)
    with pytest.raises(ConfigError, match="num_repeats"):
        pyrovae.compare(module.model, module.guide, x, ["elbo"], num_repeats=1)
    with pytest.raises(ConfigError, match="no parameters"):
        pyrovae.compare(ppca.model, ppca.exact_guide, x, ["elbo"], num_repeats=2, progress=False)
    with pytest.raises(ConfigError, match="unknown estimator"):
        pyrovae.compare(module.model, module.guide, x, ["nope"], num_repeats=2)
    with pytest.raises(ConfigError, match="label"):
        pyrovae.compare(module.model, module.guide, x, ["elbo", "elbo"], num_repeats=2)


@pytest.fixture(scope="module")
def iwae_run(tmp_path_factory):
    """A `pyrovae train --estimator iwae --k 3` run."""
    base = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYROVAE_CACHE", str(base / "cache"))
        assert (
            cli.main(
                [
                    *TRAIN,
                    "--estimator",
                    "iwae",
                    "--k",
                    "3",
                    "--beta",
                    "0.9",
                    "--run-dir",
                    str(base / "run"),
                    *FAST,
                ]
            )
            == 0
        )
    return base / "run"


def test_train_takes_estimator_options(iwae_run):
    config = RunConfig.read(iwae_run / CONFIG)
    assert (config.estimator, config.k, config.alpha, config.beta) == ("iwae", 3, None, 0.9)
    estimator = config.build_estimator()
    assert isinstance(estimator, pyrovae.KLAnnealed) and estimator.base.k == 3
    assert math.isfinite(json.loads((iwae_run / "results.json").read_text())["test_negative_elbo"])


def test_compare_command_writes_its_table_and_plot(iwae_run, capsys):
    argv = ["compare", str(iwae_run), "--estimators", "elbo, iwae:k=4,dreg:k=4", "--num-repeats", "3"]
    assert cli.main([*argv, "--batch-size", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "dreg:k=4" in out and "guide_snr" in out
    table = pd.read_csv(iwae_run / "compare.csv", index_col="estimator")
    assert list(table.index) == ["elbo", "iwae:k=4", "dreg:k=4"] and list(table.columns) == list(COLUMNS)
    assert (iwae_run / "compare.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--estimators", "iwae:k=0"], "positive integer"),
        (["--estimators", "iwae,iwae"], "each once"),
        (["--estimators", "nope"], "unknown estimator"),
        (["--num-repeats", "1"], "--num-repeats"),
    ],
)
def test_compare_usage_errors_exit_2(iwae_run, capsys, argv, match):
    capsys.readouterr()
    assert cli.main(["compare", str(iwae_run), *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae compare: error: ") and match in err and "Traceback" not in err


def test_train_refuses_an_option_the_estimator_does_not_take(tmp_path, capsys):
    assert (
        cli.main([*TRAIN, "--estimator", "elbo", "--k", "3", "--run-dir", str(tmp_path / "run"), *FAST]) == 2
    )
    assert "takes no option k" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
