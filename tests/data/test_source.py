"""One data source (:class:`pyrovae.DataSource`) for fit, log_likelihood, bounds, ais and compare:
tuples of tensors and data sets with every column passed, dtypes kept."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import pyrovae
from pyrovae.data import DataSource
from pyrovae.errors import ConfigError, DataError

RUN = dict(progress=False, seed=0, device="cpu")


@pytest.fixture(scope="module")
def digits(load_digits):
    data = load_digits("train")
    x = data.batch(torch.arange(300), generator=torch.Generator().manual_seed(0))
    return x, data.targets[:300]


def test_columns_dtypes_and_random_subsets():
    x, y = torch.rand(10, 3, dtype=torch.float64), torch.arange(10)
    for source in (DataSource(x), DataSource((x, y)), DataSource(TensorDataset(x, y))):
        batch = source.batch(torch.tensor([3, 1]))
        assert batch[0].dtype == torch.float64 and torch.equal(batch[0], x[[3, 1]])
    assert len(DataSource((x, y)).chunk(2, 5)) == 2
    assert DataSource(torch.ones(2, 3, dtype=torch.uint8)).chunk(0, 2)[0].dtype == torch.get_default_dtype()
    assert DataSource(torch.ones(2, 3, dtype=torch.bool)).chunk(0, 2)[0].dtype == torch.get_default_dtype()
    # a random subset, not the first points (a test set ordered by class)
    subset = DataSource(torch.arange(1000)).sample(10, seed=0)[0]
    assert len(subset.unique()) == 10 and subset.max() > 100
    assert torch.equal(subset, DataSource(torch.arange(1000)).sample(10, seed=0)[0])
    with pytest.raises(DataError, match="leading"):
        DataSource((x, y[:3]))
    with pytest.raises(DataError, match="Convert it"):
        DataSource("images")


def test_cvae_on_a_tuple_and_on_a_tensor_dataset_with_a_condition_column(digits):
    x, y = digits
    results = []
    for data in ((x, y), TensorDataset(x, y)):
        torch.manual_seed(0)
        cvae = pyrovae.CVAE((1, 8, 8), 10, categorical=True, latent_dim=2, hidden=(16,))
        fit = pyrovae.fit(cvae, data, epochs=1, batch_size=100, seed=0, progress=False, device="cpu")
        ll = pyrovae.log_likelihood(cvae.model, cvae.guide, data, 20, **RUN)
        cmp = pyrovae.compare(cvae.model, cvae.guide, (x[:20], y[:20]), ["elbo"], num_repeats=2, **RUN)
        results.append((fit.history["train_loss"].iloc[-1], ll.log_px, cmp.mean["elbo"]))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]


def test_a_label_column_a_vae_does_not_take_is_named(digits):
    x, y = digits
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    with pytest.raises(ConfigError, match=r"each batch has 2 columns .*not their labels"):
        pyrovae.fit(vae, TensorDataset(x, y), epochs=1, progress=False, device="cpu")


def test_float64_end_to_end(digits):
    x = digits[0].double()
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=2, hidden=(16,)).double()
    result = pyrovae.fit(vae, x, epochs=1, batch_size=100, seed=0, progress=False, device="cpu")
    assert next(result.vae.parameters()).dtype == torch.float64
    ll = pyrovae.log_likelihood(vae.model, vae.guide, x[:10], 20, return_log_weights=True, **RUN)
    assert ll.log_weights.dtype == torch.float64 and torch.isfinite(ll.log_px).all()
    ladder = pyrovae.bounds(vae.model, vae.guide, x[:10], ks=(1, 5), **RUN)
    assert torch.isfinite(ladder.values["ELBO"]).all()
    annealed = pyrovae.ais(vae.model, vae.guide, x[:4], num_steps=2, num_chains=2, **RUN)
    assert torch.isfinite(annealed.log_px).all()
