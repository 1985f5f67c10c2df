"""pyrovae.analysis.latent_usage: active units, KL per dimension and the ELBO decomposition, against
closed forms.

Statistical checks use fixed seeds and tolerances of four standard errors of the estimate (the
standard error the result reports, across data points): a correct estimator fails such a check
with probability below 1e-4.
"""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.image import imread
from toy_models import DTYPE, OrthogonalPPCA, enumerated_guide, enumerated_model

import pyrovae
from pyrovae.analysis.latent_usage import LatentStats, latent_stats
from pyrovae.errors import ConfigError

Z = 4.0  # standard errors allowed


@pytest.fixture(scope="module")
def ppca():
    m = OrthogonalPPCA()
    return m, m.sample(1000)


@pytest.fixture(scope="module")
def ppca_stats(ppca):
    m, x = ppca
    return latent_stats(m.model, m.guide, x, 10, progress=False, seed=0)


def aggregate_kl(m: OrthogonalPPCA, x: torch.Tensor, step: float = 0.04, half_width: float = 6.0) -> float:
    r"""KL(q(z) || p(z)) of the data set's aggregate posterior :math:`q(z) = \frac1N \sum_n q(z \mid
    x_n)` by quadrature over the two used dimensions (the third one's posterior is the prior and
    adds nothing): the reference value the Monte Carlo estimate targets."""
    grid = torch.arange(-half_width, half_width + step / 2, step, dtype=DTYPE)
    z = torch.cartesian_prod(grid, grid)  # (G, 2)
    loc, var = m.posterior_loc(x)[:, :2], m.post_var[:2]
    log_q = torch.empty(len(z), dtype=DTYPE)
    for lo in range(0, len(z), 4096):
        zc = z[lo : lo + 4096, None, :]
        lp = (-0.5 * ((zc - loc) ** 2 / var + var.log() + math.log(2 * math.pi))).sum(-1)
        log_q[lo : lo + 4096] = lp.logsumexp(-1) - math.log(len(x))
    log_p = (-0.5 * (z**2 + math.log(2 * math.pi))).sum(-1)
    return float((log_q.exp() * (log_q - log_p)).sum() * step**2)


def test_kl_per_dimension_and_activity_match_closed_forms(ppca, ppca_stats):
    m, x = ppca
    dims = ppca_stats.dims
    assert list(dims["site"]) == ["z"] * 3
    # analytic: exact up to rounding, whatever the draws
    torch.testing.assert_close(torch.tensor(dims["kl"].to_numpy()), m.kl_per_dim(x), rtol=1e-9, atol=1e-12)
    # the exact guide's mean is exact: the activity is the variance of the posterior means
    torch.testing.assert_close(
        torch.tensor(dims["activity"].to_numpy()), m.posterior_loc(x).var(0), rtol=1e-9, atol=1e-12
    )
    assert list(dims["active"]) == [True, True, False]
    assert list(dims["collapsed"]) == [False, False, True]
    site = ppca_stats.sites.loc["z"]
    assert site.active_units == 2 and site.kl_method == "analytic" and not site.collapsed
    assert not ppca_stats.posterior_collapse
    assert site.kl == pytest.approx(float(m.kl_per_dim(x).sum()), rel=1e-9)


def test_mutual_information_and_marginal_kl_match_the_data_sets_closed_form(ppca, ppca_stats):
    m, x = ppca
    site = ppca_stats.sites.loc["z"]
    marginal = aggregate_kl(m, x)
    mutual = float(m.kl_per_dim(x).sum()) - marginal  # E_x KL = I + marginal KL
    assert abs(site.marginal_kl - marginal) < Z * site.marginal_kl_stderr
    assert abs(site.mutual_information - mutual) < Z * site.mutual_information_stderr
    assert site.mutual_information <= math.log(len(x))
    # the population values (aggregate posterior = prior) are close for N = 1000 in two dimensions
    assert marginal < 0.02
    assert mutual == pytest.approx(float(-0.5 * m.post_var.log().sum()), abs=0.05)


def test_monte_carlo_kl_where_no_analytic_form(ppca):
    m, x = ppca
    stats = latent_stats(m.model, m.student_guide, x[:300], 20, progress=False, seed=1)
    site = stats.sites.loc["z"]
    assert site.kl_method == "monte carlo"
    # the dimensions' Monte Carlo terms are the site's, split: they sum to it on the same draws
    assert stats.dims["kl"].sum() == pytest.approx(site.kl, rel=1e-9)
    # a Student-t with 30 degrees of freedom is close to the exact posterior: KL within 5 %
    assert site.kl == pytest.approx(float(m.kl_per_dim(x[:300]).sum()), rel=0.05)


def test_the_decomposition_sums_to_the_elbo_bounds_reports(ppca):
    m, x = ppca
    x = x[:500]
    stats = latent_stats(m.model, m.student_guide, x, 10, progress=False, seed=2)
    ladder = pyrovae.bounds(m.model, m.student_guide, x, ks=(1,), num_samples=1, progress=False, seed=3)
    elbo = ladder.values["ELBO"]
    se = math.hypot(pyrovae.results.mean_stderr(stats.elbo), pyrovae.results.mean_stderr(elbo))
    assert abs(float(stats.elbo.mean()) - float(elbo.mean())) < Z * se
    torch.testing.assert_close(stats.elbo, stats.reconstruction - stats.kl)
    assert stats.kl.mean() == pytest.approx(stats.sites["kl"].sum(), rel=1e-9)


def test_a_scalar_latent_site_is_one_dimension():
    """A latent with no event dims (one number per data point, here a Gamma precision scaling the
    prior of another latent) is reported as a site of one dimension."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            tau = pyro.sample("tau", dist.Gamma(x.new_tensor(2.0), 2.0))
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), tau.rsqrt().unsqueeze(-1)).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("tau", dist.Gamma(2.0 + x.pow(2).sum(-1), 2.0))
            pyro.sample("z", dist.Normal(x / 2, 0.7).to_event(1))

    stats = latent_stats(model, guide, torch.randn(40, 2), 5, progress=False)
    assert stats.sites.loc["tau", "dims"] == 1 and stats.sites.loc["z", "dims"] == 2
    assert stats.sites.loc["tau", "kl_method"] == "analytic"
    assert stats.dims.query("site == 'tau'").shape[0] == 1
    assert stats.sites.loc["tau", "active_units"] == 1  # E_q[tau] varies with x


def test_a_decoder_that_ignores_every_dimension_is_flagged_as_collapsed():
    m = OrthogonalPPCA(scales=(0.0, 0.0))
    stats = latent_stats(m.model, m.guide, m.sample(200), 5, progress=False)
    assert stats.posterior_collapse and stats.active_units == 0
    assert "POSTERIOR COLLAPSE" in stats.summary()


@pytest.fixture(scope="module")
def digits():
    data = pyrovae.data.DataSource(pyrovae.load("digits", "train"))
    return data.sample(60, seed=0)[0]


def test_vae_vampprior_and_hvae(digits):
    torch.manual_seed(0)
    vamp = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,), prior="vamp", prior_components=5)
    stats = latent_stats(vamp.model, vamp.guide, digits, 4, progress=False)
    site = stats.sites.loc["z"]
    assert site.kl_method == "monte carlo" and stats.dims["kl"].isna().all()
    assert "does not factorize" in site.note
    assert math.isfinite(site.mutual_information) and math.isfinite(site.marginal_kl)

    hvae = pyrovae.HVAE((1, 8, 8), latent_dim=3, latent_dim2=2, hidden=(16,))
    stats = latent_stats(hvae.model, hvae.guide, digits, 4, progress=False)
    assert list(stats.sites.index) == ["z2", "z1"]  # the model's order: top layer first
    assert stats.sites.loc["z2", "dims"] == 2 and stats.sites.loc["z1", "dims"] == 3
    assert math.isfinite(stats.sites.loc["z2", "mutual_information"])
    assert math.isnan(stats.sites.loc["z1", "mutual_information"])
    assert "depends on other latents" in stats.sites.loc["z1", "note"]
    # KL per dimension of the conditional p(z1 | z2), analytic at the guide's draws of z2
    assert stats.dims[stats.dims["site"] == "z1"]["kl"].notna().all()
    assert stats.sites.loc["z1", "kl_method"] == "analytic"


def test_result_renders_and_converts(ppca_stats, tmp_path):
    stats = ppca_stats
    text = stats.summary()
    assert "2 of 3 dimensions active" in text and "I(x; z)" in text
    assert "<table" in stats._repr_html_()
    frame = stats.to_dataframe()
    assert list(frame.columns) == ["site", "dim", "activity", "active", "kl", "kl_stderr", "collapsed"]
    summary = stats.to_json_dict()
    json.dumps(summary)
    assert summary["active_units"] == 2 and summary["sites"]["z"]["active_units"] == 2
    stats.to_netcdf(tmp_path / "latents.nc")
    back = LatentStats.from_netcdf(tmp_path / "latents.nc")
    assert back.to_json_dict() | {"elapsed": 0} == summary | {"elapsed": 0}
    torch.testing.assert_close(back.reconstruction, stats.reconstruction)


def test_plot_is_labelled_and_saved(ppca_stats, tmp_path):
    path = tmp_path / "latents.png"
    fig = ppca_stats.plot(path)
    assert fig._suptitle is not None and fig._suptitle.get_text()
    for ax in fig.axes:
        assert ax.get_ylabel() and ax.get_title() or ax.get_xlabel()
    height, width = imread(path).shape[:2]
    assert height > 300 and width > 400


def test_mistakes_are_named(ppca):
    m, x = ppca
    with pytest.raises(ConfigError, match="threshold must be a number > 0; got 0"):
        latent_stats(m.model, m.guide, x, 2, threshold=0, progress=False)
    with pytest.raises(ConfigError, match="enumerates"):
        latent_stats(enumerated_model, enumerated_guide, torch.randn(5, 2, dtype=DTYPE), 2, progress=False)
