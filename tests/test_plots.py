"""The latent-space pictures of pyrovae.plots: for every kind of pair, their PNGs, titles and labels,
the values they show, and the errors for bad arguments."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import imread
from torch import nn

from pyrovae import CVAE, HVAE, VAE, plots
from pyrovae.analysis.latent_space import decode, encode, interpolation
from pyrovae.data import DataSource
from pyrovae.errors import ConfigError

IMAGE = (1, 8, 8)
N = 20


class UserPair:
    """A user's own pair on flattened images: plain methods, a ``pyro.module`` registration and a
    latent site named ``code``."""

    def __init__(self, latent: int = 2):
        torch.manual_seed(0)
        self.latent = latent
        self.net = nn.ModuleDict({"enc": nn.Linear(64, 2 * latent), "dec": nn.Linear(latent, 64)})

    def model(self, x):
        pyro.module("user", self.net)
        with pyro.plate("data", x.shape[0]):
            code = pyro.sample("code", dist.Normal(x.new_zeros(self.latent), 1.0).to_event(1))
            pyro.sample("x", self.likelihood(code), obs=x)

    def likelihood(self, code):
        return dist.Bernoulli(logits=self.net["dec"](code)).to_event(1)

    def guide(self, x):
        pyro.module("user", self.net)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.net["enc"](x).chunk(2, -1)
            pyro.sample("code", dist.Normal(loc, nn.functional.softplus(scale) + 1e-3).to_event(1))


class ThresholdPair(UserPair):
    """Pixels on exactly where their latent is positive: the likelihood's draw equals its mean, so a
    draw and a mean agree exactly when they were decoded at the same latents."""

    def __init__(self):
        super().__init__(latent=64)

    def likelihood(self, code):
        return dist.Bernoulli(probs=(code > 0).to(code.dtype)).to_event(1)


@pytest.fixture(autouse=True)
def clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="module")
def digits(load_digits):
    """``(x, labels)``: 20 binarized 8x8 digits, ``(20, 1, 8, 8)``, and their classes."""
    data = load_digits("train")
    (x,) = DataSource(data).chunk(0, N)
    return x, data.targets[:N]


def make(kind: str, digits):
    """``(pair, data, site)`` for a kind of pair: its data rows and a site to show."""
    x, y = digits
    torch.manual_seed(0)
    if kind == "vae":
        return VAE(IMAGE, latent_dim=3, hidden=(16,)), x, None
    if kind.startswith("hvae"):
        return HVAE(IMAGE, latent_dim=3, latent_dim2=2, hidden=(16,)), x, kind.split(":")[1]
    if kind == "cvae":
        return CVAE(IMAGE, 10, categorical=True, latent_dim=3, hidden=(16,)), (x, y), None
    return UserPair(), x.flatten(1), None


def row(data, i: int):
    """Data row ``i`` without its batch dim."""
    return tuple(t[i] for t in data) if isinstance(data, tuple) else data[i]


def draw(name: str, pair, data, site, path):
    if name == "interpolate":
        return plots.interpolate(pair, row(data, 0), row(data, 1), 4, path, site=site, method="both")
    if name == "traverse":
        return plots.traverse(pair, row(data, 0), steps=3, path=path, site=site)
    if name == "embedding":
        return plots.embedding(pair, data, torch.arange(N) % 3, path, site=site)
    return plots.prior_samples(pair, data, 6, path, ncols=3)


def image(ax) -> torch.Tensor:
    """The image an axes shows."""
    return torch.as_tensor(ax.images[0].get_array().data).float()


def titles(fig: Figure) -> list[str]:
    return [fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)]


KINDS = ["vae", "hvae:z2", "hvae:z1", "cvae", "user"]
PICTURES = ["interpolate", "traverse", "embedding", "prior_samples"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", PICTURES)
def test_every_picture_of_every_pair_is_saved_titled_and_labelled(name, kind, digits, tmp_path):
    pair, data, site = make(kind, digits)
    path = tmp_path / "f.png"
    fig = draw(name, pair, data, site, path)
    assert isinstance(fig, Figure)
    height, width = imread(path).shape[:2]
    assert 150 < height < 2000 and 200 < width < 3000
    assert any(titles(fig))
    if site is not None and name != "prior_samples":
        assert site in " ".join(titles(fig))
    if name == "embedding":
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel()
    else:  # every row of images is labelled on its left
        assert {ax.get_ylabel() for ax in fig.axes} - {""}


def test_a_row_with_or_without_its_batch_dim_gives_the_same_picture(digits):
    pair, x, _ = make("vae", digits)
    a = plots.interpolate(pair, x[0], x[1], 3)
    b = plots.interpolate(pair, x[0:1], x[1:2], 3)
    for ax_a, ax_b in zip(a.axes, b.axes, strict=True):
        assert torch.equal(image(ax_a), image(ax_b))


def test_linear_interpolation_ends_are_the_decoded_encodings_between_the_inputs(digits):
    pair, x, _ = make("vae", digits)
    steps = 4
    fig = plots.interpolate(pair, x[0], x[1], steps)
    axes = fig.axes
    assert len(axes) == steps + 2
    assert [ax.get_title() for ax in axes] == ["x_a", "t=0.00", "t=0.33", "t=0.67", "t=1.00", "x_b"]
    assert torch.equal(image(axes[0]), x[0, 0]) and torch.equal(image(axes[-1]), x[1, 0])
    for ax, i in ((axes[1], 0), (axes[-2], 1)):
        expected = decode(pair, encode(pair, x[i : i + 1]), x[0:1])[0, 0].clamp(0, 1)
        torch.testing.assert_close(image(ax), expected)
    assert "z" in fig.get_suptitle() and "linear" in fig.get_suptitle()


def test_both_methods_draw_linear_above_spherical_and_an_hvae_top_layer_holds_z1_at_its_mean(digits):
    pair, x, _ = make("hvae:z2", digits)
    fig = plots.interpolate(pair, x[0], x[1], 3, site="z2", method="both")
    assert len(fig.axes) == 2 * 5
    assert fig.axes[0].get_ylabel() == "linear" and fig.axes[5].get_ylabel() == "spherical"
    assert "z1 at its conditional mean" in " ".join(fig.get_suptitle().split())  # wrapped
    # the ends are the same on both rows: slerp and lerp agree at t = 0 and t = 1
    torch.testing.assert_close(image(fig.axes[1]), image(fig.axes[6]))
    torch.testing.assert_close(image(fig.axes[3]), image(fig.axes[8]))


def test_interpolation_reaches_its_ends_and_slerp_keeps_equal_norms():
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 3.0])
    for method in ("linear", "spherical"):
        path = interpolation(a, b, 5, method)
        torch.testing.assert_close(path[0], a)
        torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(interpolation(a, b, 5, "spherical").norm(dim=1), torch.full((5,), 3.0))
    assert interpolation(a, b, 5, "linear").norm(dim=1)[2] < 3.0


def test_a_traversal_varies_one_dim_per_row_and_holds_the_others_at_the_encoding(digits):
    pair, x, _ = make("vae", digits)
    fig = plots.traverse(pair, x[0], dims=[0, 2], span=2.0, steps=5)
    assert len(fig.axes) == 2 * 5
    assert [fig.axes[i].get_ylabel() for i in (0, 5)] == ["dim 0", "dim 2"]
    assert [ax.get_title() for ax in fig.axes[:5]] == ["-2.00", "-1.00", "+0.00", "+1.00", "+2.00"]
    z = encode(pair, x[0:1])["z"]
    z[0, 2] = 1.0  # row "dim 2", column +1
    torch.testing.assert_close(image(fig.axes[8]), decode(pair, {"z": z}, x[0:1])[0, 0].clamp(0, 1))


def test_a_pca_embedding_labels_its_axes_with_the_variance_and_its_legend_with_the_labels(digits):
    pair, x, _ = make("vae", digits)
    y = digits[1]
    fig = plots.embedding(pair, x, y)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC 1 (") and ax.get_xlabel().endswith("% of variance)")
    assert ax.get_ylabel().startswith("PC 2 (")
    assert sorted(int(t.get_text()) for t in ax.get_legend().get_texts()) == sorted(set(y.tolist()))
    assert sum(len(c.get_offsets()) for c in ax.collections) == N


def test_a_tsne_embedding_labels_its_axes(digits):
    pair, x, _ = make("vae", digits)
    fig = plots.embedding(pair, x, method="tsne", limit=12)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("t-SNE 1", "t-SNE 2")
    assert sum(len(c.get_offsets()) for c in ax.collections) == 12


def test_a_limited_embedding_draws_a_random_subset_and_its_labels_with_it(digits):
    x = digits[0]
    torch.manual_seed(0)
    pair = VAE(IMAGE, latent_dim=2, hidden=(16,))  # two dims: the means are plotted as they are
    limit, seed = 12, 3
    fig = plots.embedding(pair, x, torch.arange(N), limit=limit, seed=seed)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z[0]", "z[1]")
    assert sum(len(c.get_offsets()) for c in ax.collections) == limit
    shown = {int(c.get_label()): torch.as_tensor(c.get_offsets().data) for c in ax.collections}
    assert set(shown) != set(range(limit))  # not the first ones
    (subset,) = DataSource(x).sample(limit, seed)
    assert sorted(shown) == sorted(i for i in range(N) if (x[i] == subset).flatten(1).all(1).any())
    for i, point in shown.items():  # each label at its own data point's encoding
        torch.testing.assert_close(point[0].float(), encode(pair, x[i : i + 1])["z"][0])


def test_real_valued_or_many_labels_get_a_colorbar(digits):
    pair, x, _ = make("user", digits)
    x = x.flatten(1)
    for labels in (torch.arange(N) / 2, torch.arange(2 * N) * 7):
        data = torch.cat([x, x])[: len(labels)]
        fig = plots.embedding(pair, data, labels)
        assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "label"  # the colorbar's axes
        assert torch.equal(torch.as_tensor(fig.axes[0].collections[0].get_array()), labels.double())


def test_prior_samples_show_mean_and_draw_at_the_same_latent_draws(digits):
    pair, x = ThresholdPair(), digits[0].flatten(1)
    fig = plots.prior_samples(pair, x[:1], 4, ncols=4, seed=5)
    assert [fig.axes[i].get_ylabel() for i in (0, 4)] == ["mean", "sample"]
    means = torch.stack([image(ax) for ax in fig.axes[:4]])
    samples = torch.stack([image(ax) for ax in fig.axes[4:]])
    assert torch.equal(means, samples)  # the same z: the draw of this likelihood is its mean
    assert len(set(map(tuple, means.flatten(1).tolist()))) == 4  # four different draws
    again = plots.prior_samples(pair, x[:1], 4, ncols=4, seed=5)
    other = plots.prior_samples(pair, x[:1], 4, ncols=4, seed=6)
    assert torch.equal(image(again.axes[0]), means[0])
    assert not torch.equal(image(other.axes[0]), means[0])


def test_prior_samples_of_a_continuous_likelihood_show_the_means_only(digits):
    torch.manual_seed(0)
    pair = VAE(IMAGE, latent_dim=2, hidden=(16,), likelihood="gaussian")
    fig = plots.prior_samples(pair, digits[0], 5, ncols=3)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["mean", "mean"]
    assert "sample" not in fig.get_suptitle()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p, x: plots.interpolate(p, x[0], x[1], site="z3"), "'z3'.*z2, z1"),
        (lambda p, x: plots.traverse(p, x[0], site="z"), "'z'.*z2, z1"),
        (lambda p, x: plots.embedding(p, x, site="q"), "'q'.*z2, z1"),
        (lambda p, x: plots.interpolate(p, x[0], x[1], method="cubic"), "linear, spherical, both"),
        (lambda p, x: plots.embedding(p, x, method="umap"), "pca, tsne"),
        (lambda p, x: plots.interpolate(p, x[0], x[1], steps=1), "at least 2"),
        (lambda p, x: plots.traverse(p, x[0], steps=1), "at least 2"),
        (lambda p, x: plots.traverse(p, x[0], dims=[0, 2], site="z2"), r"\[2\].*2 dims.*between 0 and 1"),
        (lambda p, x: plots.traverse(p, x[0], dims=[-1]), "out of range"),
        (lambda p, x: plots.traverse(p, x[0], span=0), "span"),
        (lambda p, x: plots.interpolate(p, x[0:2], x[1]), "one data row"),
        (lambda p, x: plots.embedding(p, x, torch.arange(3)), "one entry per data point"),
        (lambda p, x: plots.embedding(p, x, limit=0), "limit"),
        (lambda p, x: plots.prior_samples(p, x, num=0), "num"),
    ],
)
def test_bad_arguments_are_refused_with_a_message_that_names_them(call, match, digits):
    pair, x, _ = make("hvae:z2", digits)
    with pytest.raises(ConfigError, match=match):
        call(pair, x)


def test_a_figure_renders_itself_as_png_for_jupyter():
    """Made without pyplot, pyrovae's figures are not drawn by a notebook's inline backend; their
    ``_repr_png_`` is what shows them inline (tests/test_tutorials.py checks it in a kernel)."""
    fig = plots.image_grid(torch.rand(4, 1, 8, 8), ncols=2, title="t")
    assert isinstance(fig, plots.Figure) and isinstance(fig, Figure)
    assert fig._repr_png_().startswith(b"\x89PNG\r\n\x1a\n")


def test_learning_curves_show_the_convergence_not_the_first_epochs():
    import pandas as pd

    epochs = torch.arange(1, 301, dtype=torch.float64)
    train = 90 + 270 * torch.exp(-epochs / 20)  # 360 nats at the first epoch, then toward 90
    history = pd.DataFrame({"epoch": epochs.int().numpy(), "train_loss": train.numpy()})
    history["valid_loss"] = history["train_loss"] + 2
    fig = plots.learning_curves(history)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    # the axis spans the epochs after the first tenth (from epoch 31, 147 nats, down to 92), not up to 360
    later = history[["train_loss", "valid_loss"]].iloc[30:].to_numpy()
    pad = 0.05 * (later.max() - later.min())
    assert (low, high) == pytest.approx((later.min() - pad, later.max() + pad))
    assert "epoch 1: 34" in ax.get_title() and "above the scale" in ax.get_title()
    assert any("best validation (epoch 300)" in t.get_text() for t in ax.get_legend().get_texts())
    assert all(line.get_marker() in (None, "None", "") for line in ax.get_lines())  # 300 epochs: no markers
    few = plots.learning_curves(history.iloc[:12])
    assert few.axes[0].get_lines()[0].get_marker() == "o"


def test_reconstructions_label_their_rows():
    fig = plots.reconstructions(torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8), ncols=3)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert labels == ["data", "recon."] and "means of p(x | z)" in fig._suptitle.get_text()
