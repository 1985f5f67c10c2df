"""pyrovae.analysis.detection: AUROC, AUPRC and FPR95 against analytic answers for two Gaussians and exact
answers on small sets; inputs, errors, and the Result surface (DataFrame, xarray, netCDF, HTML, plot)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from pyrovae.analysis.detection import Detection, detect, detection_table
from pyrovae.errors import ConfigError, DataError
from pyrovae.results import Result

PNG = b"\x89PNG\r\n\x1a\n"
PHI = NormalDist()


class Scores:
    """A stand-in for a score object: ``score`` (N,) and ``method``."""

    def __init__(self, score, method=None):
        self.score = score
        if method is not None:
            self.method = method


@pytest.fixture(scope="module")
def gaussians():
    """in ~ N(0, 1), out ~ N(delta, 1), 2000 each, fixed seed."""
    delta, n = 1.5, 2000
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, generator=gen, dtype=torch.float64)
    b = delta + torch.randn(n, generator=gen, dtype=torch.float64)
    return delta, a, b


def test_two_gaussians_match_the_analytic_auroc_and_fpr95(gaussians):
    delta, a, b = gaussians
    m, n = len(a), len(b)
    result = detect(a, b, name="gauss")
    # b - a ~ N(delta, 2): AUROC = P(b > a) = Phi(delta / sqrt 2)
    auroc = PHI.cdf(delta / math.sqrt(2))
    # tolerance: 4 Hanley-McNeil (1982) standard errors of the AUC, evaluated at the analytic AUC
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    se = math.sqrt((auroc * (1 - auroc) + (n - 1) * (q1 - auroc**2) + (m - 1) * (q2 - auroc**2)) / (m * n))
    assert abs(result.auroc - auroc) < 4 * se
    # 95 % of the OOD scores lie above t = delta + Phi^-1(0.05); FPR95 = P(a > t) = 1 - Phi(t)
    z = PHI.inv_cdf(1 - 0.95)
    t = delta + z
    fpr95 = 1 - PHI.cdf(t)
    # tolerance: 4 standard errors of the empirical FPR95, which has two sources of noise: the binomial
    # error of the fraction of in-distribution scores above a fixed t, fpr(1 - fpr)/m, and the error of
    # the empirical 5 % quantile of the OOD scores, 0.05 * 0.95 / (n phi(z)^2) (the asymptotic variance
    # of a sample quantile), carried through the slope phi(t) of 1 - Phi at t (delta method)
    var_binomial = fpr95 * (1 - fpr95) / m
    var_quantile = 0.05 * 0.95 / (n * PHI.pdf(z) ** 2) * PHI.pdf(t) ** 2
    assert abs(result.fpr95 - fpr95) < 4 * math.sqrt(var_binomial + var_quantile)
    # AUPRC has no simple closed form: equal sets make chance 0.5, and it must lie well above it
    assert result.auprc_chance == 0.5 and 0.75 < result.auprc < 1
    assert (result.num_in, result.num_out, result.num_data, result.name) == (m, n, m + n, "gauss")


def test_small_sets_match_exact_counts_with_ties_counted_half():
    # pairs (out > in): 1.5 beats 0 and 1, 3 beats all three: 5 of 6
    r = detect([0.0, 1.0, 2.0], [1.5, 3.0])
    assert r.auroc == pytest.approx(5 / 6)
    # ranked: 3 (out), 2 (in), 1.5 (out): precision 1 at recall 1/2, 2/3 at recall 1
    assert r.auprc == pytest.approx((1 + 2 / 3) / 2)
    # 95 % of the OOD data means both, so the threshold is 1.5: one of three in-distribution flagged
    assert r.fpr95 == pytest.approx(1 / 3)
    # 1 against 1 ties: three wins and one tie of four pairs
    assert detect([0.0, 1.0], [1.0, 2.0]).auroc == pytest.approx(3.5 / 4)


def test_perfect_identical_and_reversed_sets():
    a, b = torch.arange(100.0), torch.arange(100.0) + 1000
    perfect = detect(a, b)
    assert (perfect.auroc, perfect.auprc, perfect.fpr95) == (1.0, 1.0, 0.0)
    same = detect(a, a.clone())
    # each threshold flags as many of one set as of the other
    assert same.auroc == 0.5 and same.fpr95 == pytest.approx(0.95)
    # the likelihood failure: the OOD data score as *less* anomalous than every in-distribution point
    reversed_ = detect(b, a)
    assert reversed_.auroc == 0.0 and reversed_.fpr95 == 1.0
    assert "AUROC below 0.5" in reversed_.summary() and "below" not in perfect.summary()


def test_infinite_scores_rank_as_expected():
    inf = math.inf
    # -log p(x) = inf for a data point of zero likelihood: the most anomalous of all
    assert detect([0.0, 1.0], [inf, 5.0]).auroc == 1.0
    assert detect([-inf, 1.0], [2.0, 5.0]).auroc == 1.0
    # inf vs 0 wins, inf vs inf ties, 5 vs 0 wins, 5 vs inf loses: 2.5 of 4
    r = detect([0.0, inf], [inf, 5.0])
    assert r.auroc == pytest.approx(2.5 / 4)
    assert "infinite scores: 1 in-distribution, 1 out-of-distribution" in r.summary()


def test_inputs_as_tensors_arrays_lists_and_score_objects():
    a32 = torch.tensor([0.1, 0.4, 0.35, 0.8], dtype=torch.float32, requires_grad=True)
    b = [0.3, 0.9, 0.7]
    reference = detect(a32.detach().double(), torch.tensor(b, dtype=torch.float64))
    for x, y in [(a32, b), (a32.detach().numpy(), np.array(b)), (a32.tolist(), b), ([0, 1, 2], [3, 4])]:
        r = detect(x, y)
        assert r.in_scores.dtype == r.out_scores.dtype == torch.float64
        assert r.in_scores.device.type == "cpu" and not r.in_scores.requires_grad
    assert detect(a32, b) == reference
    # score objects: their method names the result unless name= is given
    named = detect(Scores(a32, "elbo"), Scores(torch.tensor(b), "elbo"))
    assert named.name == "elbo" and named.auroc == reference.auroc
    assert detect(Scores(a32, "elbo"), b).name == "elbo"
    assert detect(a32, Scores(torch.tensor(b), "elbo")).name == "elbo"
    assert detect(Scores(a32), Scores(b)).name is None
    assert detect(Scores(a32, "elbo"), Scores(b, "elbo"), name="mine").name == "mine"
    with pytest.raises(DataError, match="same method"):
        detect(Scores(a32, "elbo"), Scores(b, "iwae"))
    with pytest.raises(ConfigError, match="name must be a string"):
        detect(a32, b, name=3)


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([], [1.0], "no in-distribution scores: each set needs at least one data point"),
        (torch.zeros(3), torch.zeros(0), "no out-of-distribution scores"),
        (torch.zeros(3, 2), [1.0], r"in-distribution scores must be 1-D.*shape \(3, 2\)"),
        ([0.0], torch.tensor(1.0), r"out-of-distribution scores must be 1-D.*shape \(\)"),
        (
            [0.0, math.nan, 1.0, math.nan],
            [1.0],
            r"2 of 4 in-distribution scores are NaN \(data points 1, 3\).*remove those data points",
        ),
        (
            [0.0],
            [math.nan] * 12,
            r"12 of 12 out-of-distribution scores are NaN \(data points 0, 1, .*, 9, ...\)",
        ),
        (["a", "b"], [1.0], "in-distribution scores must be numbers"),
    ],
)
def test_bad_inputs_name_the_problem(a, b, message):
    with pytest.raises(DataError, match=message):
        detect(a, b)


@pytest.fixture(scope="module")
def result(gaussians):
    _, a, b = gaussians
    return detect(a[:300], b[:200], name="gauss")


def test_result_surface_dataframe_json_and_html(result):
    assert isinstance(result, Result)
    assert repr(result) == str(result) == result.summary()
    assert result.summary().splitlines()[0].startswith("out-of-distribution detection by 'gauss'")
    frame = result.to_dataframe()
    assert list(frame.columns) == ["score", "set"] and frame.index.name == "datapoint"
    assert (frame["set"] == "in").sum() == 300 and (frame["set"] == "out").sum() == 200
    assert np.array_equal(frame.loc[frame["set"] == "out", "score"].to_numpy(), result.out_scores.numpy())
    summary = json.loads(json.dumps(result.to_json_dict()))
    assert summary == {
        "name": "gauss",
        "auroc": result.auroc,
        "auprc": result.auprc,
        "fpr95": result.fpr95,
        "num_in": 300,
        "num_out": 200,
        "num_data": 500,
    }
    html = result._repr_html_()
    assert html.startswith("<div>") and "<table" in html and "AUROC" in html and "FPR95" in html


def test_xarray_and_netcdf_round_trips(result, tmp_path):
    ds = result.to_xarray()
    assert ds["in_scores"].dims == ("in_datapoint",) and ds["out_scores"].dims == ("out_datapoint",)
    assert ds.attrs["auroc"] == result.auroc and ds.attrs["num_out"] == 200
    assert Detection.from_xarray(ds) == result
    path = tmp_path / "detection.nc"
    result.to_netcdf(path)
    back = Detection.from_netcdf(path)
    assert back == result
    pd.testing.assert_frame_equal(back.to_dataframe(), result.to_dataframe())
    # no name and infinite scores survive too
    unnamed = detect([0.0, math.inf], [-math.inf, 5.0])
    unnamed.to_netcdf(tmp_path / "unnamed.nc")
    assert Detection.from_netcdf(tmp_path / "unnamed.nc") == unnamed
    assert unnamed != result and result != "gauss"


def test_plot_returns_a_figure_with_two_panels_and_saves_a_png(result, tmp_path):
    fig = result.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    hist_ax, roc_ax = fig.axes
    assert [t.get_text() for t in hist_ax.get_legend().get_texts()] == [
        "in-distribution",
        "out-of-distribution",
    ]
    assert f"AUROC = {result.auroc:.3f}" in roc_ax.get_legend().get_texts()[0].get_text()
    # both histograms share the bins
    bars = list(hist_ax.patches)
    assert len(bars) % 2 == 0
    half = len(bars) // 2
    assert [p.get_x() for p in bars[:half]] == [p.get_x() for p in bars[half:]]
    path = tmp_path / "detection.png"
    assert result.plot(path, bins=20) is not None
    assert path.read_bytes().startswith(PNG)
    # infinite scores are left out of the histogram and counted in its title
    fig = detect([0.0, 1.0, math.inf], [2.0, 3.0]).plot()
    assert "1 infinite not shown" in fig.axes[0].get_title()
    with pytest.raises(ConfigError, match="bins must be an integer >= 1"):
        result.plot(bins=0)


def test_detection_table_compares_methods(gaussians):
    _, a, b = gaussians
    results = [detect(-a, -b, name="reversed"), detect(a, b, name="log p"), detect(a[:10], b[:20])]
    table = detection_table(results)
    assert list(table.columns) == ["AUROC", "AUPRC", "FPR95", "in", "out"]
    assert list(table.index) == ["reversed", "log p", "2"] and table.index.name == "name"
    assert table.loc["log p", "AUROC"] == results[1].auroc
    assert table.loc["reversed", "AUROC"] == pytest.approx(1 - results[1].auroc)
    assert table.loc["2", "in"] == 10 and table.loc["2", "out"] == 20
    assert table["in"].dtype == np.int64
    assert detection_table([]).empty
    with pytest.raises(DataError, match="several results are named 'log p'"):
        detection_table([results[1], results[1]])
    with pytest.raises(DataError, match="takes results of pyrovae.detect"):
        detection_table([0.9])
