"""Likelihoods: densities against torch.distributions, support checks, and training with each."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.distributions as td

import pyrovae
from pyrovae.errors import ConfigError, DataError
from pyrovae.likelihoods import LIKELIHOODS, Likelihood, likelihood

EVENT = (1, 4, 4)
SCALE = 0.7


@pytest.fixture
def params() -> torch.Tensor:
    return torch.randn(6, *EVENT, generator=torch.Generator().manual_seed(0))


def data_for(name: str, shape=(6, *EVENT), seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "bernoulli":
        return torch.bernoulli(torch.full(shape, 0.5), generator=g)
    if name == "continuous-bernoulli":
        return torch.rand(shape, generator=g)
    return torch.randn(shape, generator=g) * 3


def reference(name: str, params: torch.Tensor) -> td.Distribution:
    if name == "bernoulli":
        return td.Bernoulli(logits=params)
    if name == "continuous-bernoulli":
        return td.ContinuousBernoulli(logits=params)
    return td.Normal(params, torch.full_like(params, SCALE))


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_log_prob_and_mean_match_torch_distributions(name, params):
    lik = likelihood(name, EVENT, SCALE)
    assert isinstance(lik, Likelihood) and lik.name in name
    x = data_for(name)
    d = lik(params)
    assert d.batch_shape == params.shape
    ref = reference(name, params)
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lik.mean(params), ref.mean, rtol=1e-6, atol=1e-6)


def test_gaussian_fixed_scale_is_a_buffer_and_learned_scale_a_parameter():
    fixed = likelihood("gaussian", EVENT, SCALE)
    assert list(fixed.parameters()) == []
    assert "log_scale" in dict(fixed.named_buffers())
    learned = likelihood("gaussian-learned", EVENT, SCALE)
    (name, log_scale), *rest = learned.named_parameters()
    assert name == "log_scale" and not rest
    assert log_scale.shape == EVENT  # one scale per data dimension
    torch.testing.assert_close(log_scale.detach(), torch.full(EVENT, math.log(SCALE)))


def test_learned_gaussian_scale_receives_gradient_in_a_vae():
    torch.manual_seed(0)
    vae = pyrovae.VAE(
        EVENT, latent_dim=2, hidden=(32,), likelihood="gaussian-learned", likelihood_scale=SCALE
    )
    log_scale = vae.likelihood.log_scale
    trainer = pyrovae.Trainer(vae, num_data=6)
    assert any(p is log_scale for p in trainer.params)
    before = log_scale.detach().clone()
    trainer.step(data_for("gaussian"))
    assert log_scale.grad is not None and log_scale.grad.abs().sum() > 0
    assert not torch.equal(log_scale.detach(), before)
    # the density under the learned scale is Normal(params, exp(log_scale))
    p = torch.randn(2, *EVENT)
    x = data_for("gaussian", (2, *EVENT))
    expected = td.Normal(p, log_scale.exp()).log_prob(x)
    torch.testing.assert_close(vae.likelihood(p).log_prob(x), expected)


def test_unknown_likelihood_lists_the_valid_names():
    with pytest.raises(ConfigError) as err:
        likelihood("poisson")
    for name in LIKELIHOODS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_check_accepts_data_in_the_support(name):
    likelihood(name, EVENT).check(data_for(name))


def test_bernoulli_check_rejects_non_binary_data_and_names_the_fix():
    x = data_for("bernoulli")
    x[0, 0, 0, 0] = 0.5
    with pytest.raises(DataError) as err:
        likelihood("bernoulli").check(x, "the training data")
    message = str(err.value)
    assert "the training data" in message and "not binary" in message
    assert "binarize" in message and "continuous-bernoulli" in message


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_continuous_bernoulli_check_rejects_values_outside_the_unit_interval(value):
    x = data_for("continuous-bernoulli")
    x[1, 0, 2, 3] = value
    with pytest.raises(DataError) as err:
        likelihood("continuous-bernoulli").check(x)
    message = str(err.value)
    assert "[0, 1]" in message and "Rescale" in message and "gaussian" in message


@pytest.mark.parametrize("name", LIKELIHOODS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_likelihood_rejects_nan_and_inf(name, bad):
    x = data_for(name)
    x[2, 0, 1, 1] = bad
    with pytest.raises(DataError) as err:
        likelihood(name, EVENT).check(x, "the validation data")
    message = str(err.value)
    assert "the validation data" in message and "1 NaN or infinite" in message
    assert "nan_to_num" in message


@pytest.fixture(scope="module")
def digits():
    # grey levels in [0, 1] for the continuous likelihoods; dynamically binarized for Bernoulli
    return {
        "grey": pyrovae.load("digits", "train", binarize=None),
        "binary": pyrovae.load("digits", "train"),
    }


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_a_vae_with_each_likelihood_trains(name, digits):
    data = digits["binary" if name == "bernoulli" else "grey"]
    torch.manual_seed(0)
    vae = pyrovae.VAE(data.event_shape, latent_dim=2, hidden=(32,), likelihood=name, likelihood_scale=0.5)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    result = pyrovae.fit(vae, data, epochs=3, batch_size=200, lr=3e-3, seed=0, progress=False)
    losses = result.history["train_loss"]
    assert losses.notna().all() and torch.isfinite(torch.tensor(losses.to_numpy())).all()
    assert losses.iloc[-1] < losses.iloc[0]
    changed = [k for k, v in vae.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder") for k in changed) and any(k.startswith("decoder") for k in changed)
    assert ("likelihood.log_scale" in changed) == (name == "gaussian-learned")


# ---------------------------------------------------------------------------------------------
# Decoded: the likelihood at a decoder's output, decoded lazily or a block of rows at a time


class Affine(torch.nn.Module):
    """A decoder ``(z, c) -> params`` of shape ``(..., *EVENT)`` that counts its input rows."""

    def __init__(self, latent: int = 3, cond: int = 2):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.w = torch.randn(latent + cond, math.prod(EVENT), generator=g, dtype=torch.float64)
        self.rows: list[int] = []

    def forward(self, z, c):
        z, c = torch.broadcast_tensors(z[..., :1].expand(*z.shape[:-1], 1), c[..., :1])
        self.rows.append(z[..., 0].numel())
        return (torch.cat([z.expand(*z.shape[:-1], 3), c.expand(*c.shape[:-1], 2)], -1) @ self.w).unflatten(
            -1, EVENT
        )


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_decoded_is_the_likelihood_at_the_decoder_output(name):
    lik, dec = likelihood(name, EVENT, SCALE).double(), Affine()
    g = torch.Generator().manual_seed(3)
    z, c = (
        torch.randn(5, 4, 3, generator=g, dtype=torch.float64),
        torch.randn(4, 2, generator=g, dtype=torch.float64),
    )
    d = pyrovae.likelihoods.Decoded(lik, dec, (z, c), EVENT)
    full = lik(dec(z, c)).to_event(len(EVENT))
    x = data_for(name, (4, *EVENT)).double()
    assert d.batch_shape == (5, 4) and d.event_shape == EVENT
    torch.testing.assert_close(d.log_prob(x), full.log_prob(x), rtol=0, atol=0)
    torch.testing.assert_close(d.mean, full.mean, rtol=0, atol=0)
    assert d.sample().shape == (5, 4, *EVENT)
    assert d.has_rsample == full.has_rsample == lik.has_rsample
    assert d.support.check(x).all()


@pytest.mark.parametrize("name", LIKELIHOODS)
@pytest.mark.parametrize("block_size", [1, 3 * 16, 7 * 4 * 16, 10**6])
def test_decoded_log_prob_blocks_equals_log_prob_whatever_the_block_size(name, block_size):
    lik, dec = likelihood(name, EVENT, SCALE).double(), Affine()
    g = torch.Generator().manual_seed(4)
    # a particle dim (7), a data dim (4) and an enumerated condition (2, 1, 1) that broadcast
    z = torch.randn(7, 4, 3, generator=g, dtype=torch.float64)
    c = torch.randn(2, 1, 1, 2, generator=g, dtype=torch.float64)
    x = data_for(name, (4, *EVENT)).double()
    d = pyrovae.likelihoods.Decoded(lik, dec, (z, c), EVENT)
    expected = d.log_prob(x)
    dec.rows.clear()
    blocks = d.log_prob_blocks(x, block_size=block_size)
    torch.testing.assert_close(blocks, expected, rtol=1e-12, atol=1e-12)
    # every block holds at most block_size elements of the decoder's output (one row at least)
    assert max(dec.rows) * 16 <= max(block_size, 7 * 4 * 16)
    assert sum(dec.rows) == 2 * 7 * 4


def test_decoded_expand_stays_lazy_and_broadcasts_the_inputs():
    dec = Affine()
    z, c = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    d = pyrovae.likelihoods.Decoded(likelihood("bernoulli").double(), dec, (z, c), EVENT)
    assert d.expand((4,)) is d
    e = d.expand((5, 4))
    assert isinstance(e, pyrovae.likelihoods.Decoded) and e.batch_shape == (5, 4) and not dec.rows
    x = data_for("bernoulli", (4, *EVENT)).double()
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x).expand(5, 4))


def test_decoded_log_prob_blocks_uses_the_route_and_falls_back_to_log_prob():
    z, c = torch.randn(6, 4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    d = pyrovae.likelihoods.Decoded(likelihood("bernoulli").double(), Affine(), (z, c), EVENT)
    x = data_for("bernoulli", (4, *EVENT)).double()
    seen = []

    def route(fn, value):
        seen.append(fn.batch_shape)
        return None if len(seen) % 2 else torch.zeros(fn.batch_shape, dtype=torch.float64)

    lp = d.log_prob_blocks(x, route, block_size=2 * 4 * 16)
    assert seen == [(2, 4)] * 3
    full = d.log_prob(x)
    torch.testing.assert_close(lp[:2], full[:2])
    assert (lp[2:4] == 0).all()
    torch.testing.assert_close(lp[4:], full[4:])


@pytest.mark.parametrize("act", ["softplus", "relu"])
def test_decoded_mlp_bernoulli_runs_natively_where_it_can(act, monkeypatch):
    native = pyrovae.kernels.available() and pyrovae.kernels._kernels.blas_ready()
    dec = pyrovae.nn.MLPDecoder((4, 5), 3, (16,), act)
    calls = []
    dec.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    g = torch.Generator().manual_seed(5)
    z, x = torch.randn(300, 2, 3, generator=g), (torch.rand(2, 4, 5, generator=g) < 0.5).float()
    d = pyrovae.likelihoods.Decoded(likelihood("bernoulli"), dec, (z,), (4, 5))
    with torch.no_grad():
        expected = d.log_prob(x)
        calls.clear()
        torch.testing.assert_close(d.log_prob_blocks(x), expected, atol=1e-4, rtol=1e-6)
        assert not calls if native else calls  # the module is bypassed by the native call
        monkeypatch.setenv("PYROVAE_KERNELS", "0")
        torch.testing.assert_close(d.log_prob_blocks(x), expected, atol=1e-4, rtol=1e-6)
        assert calls
    # with autograd recording, or a likelihood other than the Bernoulli, the blocks go through torch
    monkeypatch.setenv("PYROVAE_KERNELS", "1")
    calls.clear()
    d.log_prob_blocks(x)
    assert calls
    calls.clear()
    x = data_for("continuous-bernoulli", (2, 4, 5))
    d = pyrovae.likelihoods.Decoded(likelihood("continuous-bernoulli"), dec, (z,), (4, 5))
    with torch.no_grad():
        d.log_prob_blocks(x)
    assert calls


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_each_likelihood_declares_whether_its_distributions_have_rsample(name, params):
    lik = likelihood(name, EVENT, SCALE)
    assert lik.has_rsample == lik(params).has_rsample


def test_a_likelihood_that_does_not_declare_rsample_is_probed():
    class Laplace(Likelihood):
        def forward(self, params):
            return pyro.distributions.Laplace(params, 1.0)

    z = torch.randn(5, 3, dtype=torch.float64)
    d = pyrovae.likelihoods.Decoded(Laplace(), lambda z: z.unsqueeze(-1).expand(*z.shape, 2), (z,), (3, 2))
    assert Laplace.has_rsample is None and d.has_rsample is True
