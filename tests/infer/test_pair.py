"""The model/guide contract of :mod:`pyrovae.infer.pair`: the data plate found by what the observed sites
share, one set of checks with messages, and every site evaluated by its own distribution."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from toy_models import DTYPE, PPCA, no_plate_guide, no_plate_model

import pyrovae
from pyrovae.errors import ConfigError, DataError
from pyrovae.infer.pair import Pair
from pyrovae.models.nn import MLPDecoder

RUN = dict(progress=False, seed=0)


class Renamed(torch.nn.Module):
    """PPCA with a learnable shift, its data plate called ``plate`` (``"data"`` by default)."""

    def __init__(self, plate: str = "data"):
        super().__init__()
        self.ppca, self.plate = PPCA(), plate
        self.shift = torch.nn.Parameter(torch.zeros(2, dtype=DTYPE))

    def model(self, x):
        with pyro.plate(self.plate, x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=DTYPE), 1.0).to_event(1))
            loc = z @ self.ppca.W.T + self.ppca.b
            pyro.sample("x", dist.Normal(loc, self.ppca.sigma).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate(self.plate, x.shape[0]):
            loc = self.ppca.posterior_loc(x) + self.shift
            pyro.sample("z", dist.Normal(loc, 0.5).to_event(1))


@pytest.mark.parametrize("plate", ["data", "batch"])
def test_fit_scales_the_data_plate_whatever_its_name(plate):
    # the loss of one step, in nats per data point, must not depend on the plate's name: the
    # minibatch scale N/B applies to the plate every observed site shares
    x = PPCA().sample(40)
    losses = {}
    for name in ("data", plate):
        module = Renamed(name)
        trainer = pyrovae.Trainer(module, num_data=400, lr=0.1, device="cpu")
        pyro.set_rng_seed(3)
        losses[name] = [trainer.step(x) for _ in range(3)]
        assert trainer.data_plate == name
        if name == "data":
            reference = module.shift.detach().clone()
    assert losses[plate] == pytest.approx(losses["data"], rel=1e-12)
    torch.testing.assert_close(module.shift.detach(), reference, rtol=0, atol=1e-12)


def test_log_likelihood_finds_a_data_plate_of_another_name():
    x = PPCA().sample(10)
    a = pyrovae.log_likelihood(Renamed("data").model, Renamed("data").guide, x, 50, **RUN)
    b = pyrovae.log_likelihood(Renamed("rows").model, Renamed("rows").guide, x, 50, **RUN)
    assert torch.equal(a.log_px, b.log_px)


def test_a_pair_without_a_data_plate_is_refused_by_fit_as_by_log_likelihood():
    x = torch.randn(5, 3, dtype=DTYPE)

    class NoPlate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def model(self, x):
            no_plate_model(x + 0 * self.p)

        def guide(self, x):
            no_plate_guide(x)

    match = r"no sample site of the model or guide lies in a plate named 'data'"
    with pytest.raises(ConfigError, match=match):
        pyrovae.fit(NoPlate(), x, epochs=1, batch_size=5, progress=False, device="cpu")
    with pytest.raises(ConfigError, match=match):
        pyrovae.log_likelihood(no_plate_model, no_plate_guide, x, 10, **RUN)


class ShiftedDecoder(MLPDecoder):
    """A subclass whose ``forward`` differs from its ``net``: logits shifted by 3."""

    def forward(self, z):
        return super().forward(z) + 3.0


def test_a_subclassed_decoders_forward_is_what_is_evaluated():
    torch.manual_seed(0)
    vae = pyrovae.VAE((20,), latent_dim=3, hidden=(8,))
    vae.decoder = ShiftedDecoder((20,), 3, (8,), "softplus")
    calls = []
    vae.decoder.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    x = torch.bernoulli(torch.full((4, 20), 0.3))

    def written_out(x):  # the same model, its likelihood spelled out from the decoder's forward
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", vae.prior((x.shape[0],)))
            pyro.sample("x", dist.Bernoulli(logits=vae.decoder(z)).to_event(1), obs=x)

    def through_net(x):  # what skipping forward would compute
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", vae.prior((x.shape[0],)))
            pyro.sample("x", dist.Bernoulli(logits=vae.decoder.net(z)).to_event(1), obs=x)

    result = pyrovae.log_likelihood(vae.model, vae.guide, x, 200, **RUN)
    assert calls
    expected = pyrovae.log_likelihood(written_out, vae.guide, x, 200, **RUN)
    torch.testing.assert_close(result.log_px, expected.log_px, rtol=0, atol=1e-5)
    wrong = pyrovae.log_likelihood(through_net, vae.guide, x, 200, **RUN)
    assert (result.log_px - wrong.log_px).abs().min() > 1.0


def test_a_guide_latent_of_the_wrong_size_is_named():
    vae = pyrovae.VAE((20,), latent_dim=3, hidden=(8,))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 5), 1.0).to_event(1))

    x = torch.bernoulli(torch.full((4, 20), 0.3))
    with pytest.raises(
        ConfigError, match=r"latent site 'z': the guide draws values of shape \(1, 5\), but the "
    ):
        pyrovae.log_likelihood(vae.model, guide, x, 10, **RUN)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_images_of_another_dtype_than_the_model_get_a_message(dtype):
    vae = pyrovae.VAE((20,), latent_dim=3, hidden=(8,))
    x = torch.bernoulli(torch.full((4, 20), 0.3)).to(dtype)
    with pytest.raises(DataError, match=r"failed on the data's dtype .*float32.*vae.double\(\)"):
        pyrovae.log_likelihood(vae.model, vae.guide, x, 10, **RUN)


def test_the_pair_probe_leaves_the_random_state_alone():
    m = PPCA()
    x = m.sample(3)
    state = torch.get_rng_state()
    pair = Pair(m.model, m.diagonal_guide(), (x[:1],))
    assert torch.equal(torch.get_rng_state(), state)
    assert pair.data_plate == "data" and pair.particle_dim == -2 and not pair.enumerated


def test_the_pair_probe_forks_the_cuda_generators_of_its_data_only(monkeypatch):
    # Pyro's random state leaves CUDA's generators out: the probe forks those its data live on,
    # none for data on the CPU (tests/test_devices.py checks the CUDA generator on a GPU)
    forked = []
    fork_rng = torch.random.fork_rng

    def spy(devices=None, **kwargs):
        forked.append(list(devices))
        return fork_rng(devices=devices, **kwargs)

    monkeypatch.setattr(torch.random, "fork_rng", spy)
    m = PPCA()
    Pair(m.model, m.diagonal_guide(), (m.sample(1),))
    assert forked == [[]]
