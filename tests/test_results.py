"""One base for every result: summary, HTML table, DataFrame, xarray/netCDF both ways, JSON, with
the same names for the same things."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from toy_models import PPCA

import pyrovae
from pyrovae.results import Result
from pyrovae.train.loop import SHOWN_EPOCHS, FitResult

RUN = dict(progress=False, seed=0, device="cpu")


@pytest.fixture(scope="module")
def results(load_digits):
    m = PPCA()
    x = m.sample(8)
    guide = m.diagonal_guide()
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(8,))
    digits = load_digits("train")
    return {
        "log_likelihood": pyrovae.log_likelihood(m.model, guide, x, 20, **RUN),
        "ais": pyrovae.ais(m.model, guide, x, num_steps=3, num_chains=4, **RUN),
        "bdmc": pyrovae.bdmc(m.model, guide, 5, num_steps=3, num_chains=2, **RUN),
        "bounds": pyrovae.bounds(m.model, guide, x, ks=(1, 5, 20), **RUN),
        "compare": pyrovae.compare(
            vae.model, vae.guide, digits.batch(torch.arange(10)), ["elbo"], num_repeats=2, **RUN
        ),
        "fit": pyrovae.fit(vae, digits, epochs=2, batch_size=400, progress=False, device="cpu"),
    }


@pytest.mark.parametrize("name", ["log_likelihood", "ais", "bdmc", "bounds", "compare", "fit"])
def test_every_result_has_the_same_surface(results, name, tmp_path):
    result = results[name]
    assert isinstance(result, Result)
    assert repr(result) == str(result) == result.summary()
    html = result._repr_html_()
    assert html.startswith("<div>") and "<table" in html
    assert len(result.to_dataframe()) > 0
    assert json.loads(json.dumps(result.to_json_dict()))["num_data"] == result.num_data
    path = tmp_path / f"{name}.nc"
    result.to_netcdf(path)
    back = type(result).from_netcdf(path)
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(back.to_dataframe(), result.to_dataframe(), check_dtype=False)
    if name != "fit":
        assert (
            back.mean == pytest.approx(result.mean)
            if isinstance(result.mean, float)
            else back.mean.equals(result.mean)
        )


def test_mean_and_stderr_mean_the_estimate_of_log_px(results):
    ll, ladder = results["log_likelihood"], results["bounds"]
    assert ll.mean == pytest.approx(float(ll.log_px.mean()))
    assert ladder.mean["ELBO"] == pytest.approx(float(ladder.values["ELBO"].mean()))
    assert ladder.stderr["ELBO"] == pytest.approx(float(ladder.values["ELBO"].std()) / 8**0.5)
    assert results["bdmc"].mean["gap"] == pytest.approx(float(results["bdmc"].gap.mean()))
    assert results["compare"].mean["elbo"] == results["compare"].table.loc["elbo", "bound"]


def test_a_long_history_shows_a_few_epochs_with_the_best_and_no_empty_columns():
    epochs = 150
    history = pd.DataFrame(
        {"epoch": range(1, epochs + 1), "train_loss": torch.linspace(100, 80, epochs).tolist()}
    ).assign(valid_loss=float("nan"), beta=1.0, seconds=0.1)
    result = FitResult(None, history, best_epoch=77, num_data=10)
    table = result.summary_table()
    assert table.index[0] == 1 and table.index[-1] == epochs and 77 in table.index
    assert len(table) <= SHOWN_EPOCHS + 1 and "valid_loss" not in table.columns
    assert len(result.to_dataframe()) == epochs  # the conversions keep every epoch
    short = FitResult(None, history.head(4), num_data=10)
    assert list(short.summary_table().index) == [1, 2, 3, 4]


def test_html_tables_have_one_header_row(results):
    for result in results.values():
        header = result._repr_html_().split("<thead>")[1].split("</thead>")[0]
        assert header.count("<tr") == 1, header
