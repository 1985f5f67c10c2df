r"""Pictures of the latent space of any model/guide pair: interpolations, traversals, embeddings and
samples from the prior (see :mod:`pyrovae.plots`)."""

from __future__ import annotations

import math
import operator
import textwrap
from collections.abc import Sequence

import matplotlib
import matplotlib.figure
import numpy as np
import torch
from matplotlib.axes import Axes

from pyrovae.analysis.latent_space import (
    as_pair,
    decode,
    encode,
    interpolation,
    latent_sites,
    repeat_rows,
    rows,
)
from pyrovae.data.source import DataSource
from pyrovae.errors import ConfigError
from pyrovae.plots.figures import Figure, as_images, figure, save, show_image
from pyrovae.seeds import seeded

__all__ = ["EMBEDDINGS", "INTERPOLATIONS", "embedding", "interpolate", "prior_samples", "traverse"]

#: the ``method`` values of :func:`interpolate`
INTERPOLATIONS = ("linear", "spherical", "both")
#: the ``method`` values of :func:`embedding`
EMBEDDINGS = ("pca", "tsne")
#: label values :func:`embedding` shows in a legend (more, or real-valued labels: a colorbar)
MAX_LEGEND = 20


def _labelled_grid(
    labelled: Sequence[tuple[str, torch.Tensor]], path, title: str, col_labels: Sequence[str] = (), held=()
) -> Figure:
    """Rows of images, ``(label, (n, ...) data)`` each, labelled on their left, the columns above; the
    title names the latent sites ``held`` at their conditional means."""
    if held:
        title += f"; {', '.join(held)} at {'its' if len(held) == 1 else 'their'} conditional mean"
    labelled = [(label, as_images(images)) for label, images in labelled]
    nrows, ncols = len(labelled), max(len(images) for _, images in labelled)
    width = 0.85 * ncols + 1.0
    fig = figure(figsize=(width, 0.85 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, (label, images) in enumerate(labelled):
        for ax, image in zip(axes[i], images, strict=False):
            show_image(ax, image)
        for ax in axes[i][len(images) :]:
            ax.axis("off")
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    for ax, label in zip(axes[0], col_labels, strict=False):
        ax.set_title(label, fontsize=7)
    fig.suptitle(textwrap.fill(title, max(40, int(width * 12))), fontsize=10)
    return save(fig, path)


def _one_row(pair, row, name: str) -> tuple[torch.Tensor, ...]:
    """The model's arguments for the single data row ``row`` (see :func:`interpolate`)."""
    parts = tuple(row) if isinstance(row, (tuple, list)) else (row,)
    if not parts or not all(torch.is_tensor(p) for p in parts):
        raise ConfigError(
            f"{name} must be one data row: a tensor, or a tuple of tensors such as (x, c) for a CVAE; "
            f"got {type(row).__name__}"
        )
    event = getattr(getattr(as_pair(pair)[0], "__self__", pair), "event_shape", None)
    first = parts[0]
    batched = first.dim() > len(event) if event is not None else first.dim() > 0 and first.shape[0] == 1
    if not batched:
        parts = tuple(p.unsqueeze(0) for p in parts)
    if any(p.dim() == 0 or p.shape[0] != 1 for p in parts):
        shapes = ", ".join(str(tuple(p.shape)) for p in parts)
        raise ConfigError(
            f"{name} must be one data row, with a leading batch dim of 1 on every part or on none, "
            f"got shapes {shapes}; pass x[i:i+1] (or x[i]), and (x[i:i+1], c[i:i+1]) for a CVAE"
        )
    return rows(parts)


def _pick_site(sites: list[str], site: str | None, default: str) -> str:
    """``site``, checked to be one of the pair's latent ``sites``; ``default`` when ``None``."""
    if site is None:
        return default
    if site not in sites:
        raise ConfigError(
            f"no latent site named {site!r}; the pair's latent sites are: {', '.join(sites)} "
            "(pass site= one of them)"
        )
    return site


def interpolate(
    pair, x_a, x_b, steps: int = 10, path=None, *, site: str | None = None, method: str = "linear"
) -> Figure:
    r"""Decoded interpolations between the encodings of two data rows, the rows at the ends.

    Both rows are encoded, :math:`\bar z_a = \mathbb{E}_q[z \mid x_a]` and :math:`\bar z_b`; ``site``
    (default: the last latent site the model draws, so every site moves) and every site drawn before it follow
    ``steps`` points :math:`z_t`, :math:`t \in [0, 1]`, from :math:`\bar z_a` to :math:`\bar z_b`
    (:func:`pyrovae.analysis.latent_space.interpolation`); the sites drawn after it take their conditional
    means (an HVAE interpolated at ``site="z2"`` shows :math:`z_1 = \mathbb{E}[z_1 \mid z_{2,t}]`). Each
    column is the likelihood mean :math:`\mathbb{E}[x \mid z_t]`, decoded at the arguments of ``x_a`` (a CVAE
    at ``x_a``'s condition).

    ``method``: ``"linear"``, :math:`z_t = (1 - t)\,\bar z_a + t\,\bar z_b`; ``"spherical"``, slerp (Shoemake
    1985, "Animating rotation with quaternion curves"), which White (2016, "Sampling generative networks")
    recommends in the latent space of a VAE with an isotropic Gaussian prior: codes of high dimension under
    :math:`\mathcal N(0, I)` concentrate near the sphere of radius :math:`\sqrt d`, and the straight line
    between two of them passes through the improbable middle, which slerp avoids. It makes no such sense for a
    prior that is not isotropic (a mixture, the VampPrior, an HVAE's conditional :math:`p(z_1 \mid z_2)`).
    ``"both"`` draws two rows, linear above spherical.

    :param pair: a model/guide pair.
    :param x_a: one data row, the left end: a tensor with its leading batch dim of 1 (``x[i:i+1]``) or without
        it (``x[i]``), or a tuple of such rows, ``(x, c)`` for a CVAE. With or without is told by the pair's
        ``event_shape`` where it has one (every pyrovae model), else a tensor whose first dim is 1 counts as
        having the batch dim; the other parts of a tuple follow the first.
    :param x_b: the right end, the same way.
    :param int steps: interpolated points, at least 2 (the ends included).
    :param path: where to save the PNG.
    :param str site: the latent site to interpolate (with the sites drawn before it).
    :param str method: one of :data:`INTERPOLATIONS`.
    """
    if method not in INTERPOLATIONS:
        raise ConfigError(f"method must be one of {', '.join(INTERPOLATIONS)}; got {method!r}")
    args_a, args_b = _one_row(pair, x_a, "x_a"), _one_row(pair, x_b, "x_b")
    sites = latent_sites(pair, args_a)
    site = _pick_site(sites, site, sites[-1])
    moved = sites[: sites.index(site) + 1]
    enc_a, enc_b = encode(pair, args_a, sites=moved), encode(pair, args_b, sites=moved)
    methods = ["linear", "spherical"] if method == "both" else [method]
    values = {
        s: torch.cat([interpolation(enc_a[s][0], enc_b[s][0], steps, m) for m in methods]) for s in moved
    }
    decoded = decode(pair, values, repeat_rows(args_a, torch.zeros(len(methods) * steps, dtype=torch.long)))
    ends_a, ends_b = as_images(args_a[0]), as_images(args_b[0])
    parts = zip(methods, decoded.split(steps), strict=True)
    labelled = [(m, torch.cat([ends_a, as_images(part), ends_b])) for m, part in parts]
    title = f"{', '.join(moved)} interpolated from x_a to x_b ({' and '.join(methods)})"
    columns = ["x_a", *(f"t={t:.2f}" for t in torch.linspace(0, 1, steps).tolist()), "x_b"]
    return _labelled_grid(labelled, path, title, columns, held=sites[len(moved) :])


def traverse(
    pair,
    x,
    dims: Sequence[int] | None = None,
    span: float = 3.0,
    steps: int = 9,
    path=None,
    *,
    site: str | None = None,
) -> Figure:
    r"""Latent traversals: one row per dimension :math:`d` of ``site``, along which :math:`z_d` takes the
    values ``linspace(-span, span, steps)``; the other dims of ``site`` and the sites drawn before it stay at
    ``x``'s encoding :math:`\mathbb{E}_q[z \mid x]`, the sites drawn after it at their conditional means.

    Each image is the likelihood mean :math:`\mathbb{E}[x \mid z]`, decoded at the arguments of ``x`` (a CVAE
    at ``x``'s condition). The values are absolute, in the prior's units: :math:`\pm 3` spans nearly all of a
    standard normal prior's mass along one dim.

    :param pair: a model/guide pair.
    :param x: one data row (as ``x_a`` of :func:`interpolate`), ``(x_row, c_row)`` for a CVAE.
    :param dims: the dims to vary, indexing the flattened value of ``site`` for one data point
        (default: all of them, at most the first 10).
    :param float span: the largest absolute value.
    :param int steps: values per dim, at least 2.
    :param path: where to save the PNG.
    :param str site: the latent site to traverse (default: the first the model draws, the top
        layer of an HVAE).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps must be an integer of at least 2, got {steps!r}")
    if not isinstance(span, (int, float)) or not math.isfinite(span) or span <= 0:
        raise ConfigError(f"span must be a positive number (3.0 spans a standard normal prior), got {span!r}")
    args = _one_row(pair, x, "x")
    sites = latent_sites(pair, args)
    site = _pick_site(sites, site, sites[0])
    encoded = sites[: sites.index(site) + 1]
    enc = encode(pair, args, sites=encoded)
    shape = enc[site].shape[1:]
    size = shape.numel()
    dims = list(range(min(size, 10))) if dims is None else _check_dims(dims, size, site)
    grid = torch.linspace(-span, span, steps, dtype=enc[site].dtype)
    varied = enc[site].reshape(1, 1, size).repeat(len(dims), steps, 1)
    varied[torch.arange(len(dims)), :, dims] = grid  # row i: dim dims[i] along the grid
    num = len(dims) * steps
    values = {s: enc[s].expand(num, *enc[s].shape[1:]) for s in encoded}
    values[site] = varied.reshape(num, *shape)
    decoded = decode(pair, values, repeat_rows(args, torch.zeros(num, dtype=torch.long)))
    labelled = [(f"dim {d}", part) for d, part in zip(dims, decoded.split(steps), strict=True)]
    title = f"traversals of {site} (one dim per row) at the encoding of x"
    columns = [f"{v:+.2f}" for v in grid.tolist()]
    return _labelled_grid(labelled, path, title, columns, held=sites[len(encoded) :])


def _check_dims(dims, size: int, site: str) -> list[int]:
    """``dims`` as a list of ints in ``0..size-1``, else a :class:`ConfigError`."""
    try:
        dims = [operator.index(d) for d in dims]
    except TypeError:
        raise ConfigError(f"dims must be a sequence of integers, got {dims!r}") from None
    bad = [d for d in dims if not 0 <= d < size]
    if not dims or bad:
        raise ConfigError(
            f"dims {bad or dims} out of range: site {site!r} has {size} dims per data point "
            f"(flattened); pass dims between 0 and {size - 1}"
        )
    return dims


def embedding(
    pair,
    data,
    labels=None,
    path=None,
    *,
    method: str = "pca",
    site: str | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> Figure:
    r"""The posterior means :math:`\mathbb{E}_q[z \mid x_n]` of ``site`` for the data points, in 2-D,
    coloured by ``labels``.

    The means (flattened per data point) are reduced to two dims with scikit-learn's ``PCA`` (the axes say
    what share of their variance each principal component carries) or ``TSNE`` (van der Maaten & Hinton 2008;
    its axes have no units; perplexity ``min(30, (n - 1) / 3)`` for ``n`` points); a site of two dims is shown
    as it is, whatever the method (axes ``z[0]``, ``z[1]``), a site of one dim against the data point's index.

    :param pair: a model/guide pair.
    :param data: the data rows (a tensor, a tuple such as ``(x, c)``, or a data set).
    :param labels: one integer per data point (a 1-D tensor or array), e.g. the class: a legend
        for at most :data:`MAX_LEGEND` distinct values, else (or for real values) a colorbar.
    :param path: where to save the PNG.
    :param str method: one of :data:`EMBEDDINGS`.
    :param str site: the latent site (default: the first the model draws).
    :param int seed: seeds the subset, the encodings' draws and t-SNE.
    :param int limit: at most this many data points, drawn at random with ``seed`` (the same
        subset as ``DataSource(data).sample(limit, seed)``; a data set ordered by class is not its
        first ones); ``labels`` are subset with them.
    """
    if method not in EMBEDDINGS:
        raise ConfigError(f"method must be one of {', '.join(EMBEDDINGS)}; got {method!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    source = DataSource(data)
    num = source.num_data
    if labels is not None:
        labels = torch.as_tensor(np.asarray(labels.cpu() if torch.is_tensor(labels) else labels))
        if labels.shape != (num,):
            raise ConfigError(
                f"labels must be 1-D with one entry per data point ({num}); got shape {tuple(labels.shape)}"
            )
    sites = latent_sites(pair, source)
    site = _pick_site(sites, site, sites[0])
    if limit is not None and limit < num:
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(num, generator=generator)[:limit]
        source = DataSource(source.batch(index, generator))  # the draw DataSource.sample makes
        labels = None if labels is None else labels[index]
        num = limit
    z = encode(pair, source, sites=[site], seed=seed)[site].flatten(1).double().numpy()
    if z.shape[1] == 2:
        xy, axis_labels, how = z, (f"{site}[0]", f"{site}[1]"), "its two dims"
    elif z.shape[1] == 1:
        xy, axis_labels, how = np.stack([z[:, 0], np.arange(num)], 1), (f"{site}[0]", "data point"), "its dim"
    elif num < 2:
        raise ConfigError(f"a {method} embedding needs at least 2 data points, got {num}")
    elif method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(z)
        share = 100 * pca.explained_variance_ratio_
        axis_labels = tuple(f"PC {i + 1} ({share[i]:.0f}% of variance)" for i in range(2))
        how = "PCA"
    else:
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=max(1.0, min(30.0, (num - 1) / 3)), random_state=seed)
        xy, axis_labels, how = tsne.fit_transform(z), ("t-SNE 1", "t-SNE 2"), "t-SNE"
    fig = figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.subplots()
    _scatter(fig, ax, xy, labels)
    ax.set(xlabel=axis_labels[0], ylabel=axis_labels[1])
    ax.set_title(f"posterior means E_q[{site} | x] of {num} data points: {how}")
    ax.grid(alpha=0.3)
    return save(fig, path)


def _scatter(fig: Figure, ax: Axes, xy: np.ndarray, labels: torch.Tensor | None) -> None:
    """Points ``xy``, one colour, or coloured by ``labels`` with a legend or a colorbar."""
    style = {"s": 12, "alpha": 0.8, "linewidths": 0}
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], **style)
        return
    values = labels.numpy()
    distinct = np.unique(values)
    integral = not labels.is_floating_point() and not labels.is_complex()
    if integral and len(distinct) <= MAX_LEGEND:
        colours = matplotlib.colormaps["tab10" if len(distinct) <= 10 else "tab20"]
        for k, value in enumerate(distinct):
            mine = values == value
            ax.scatter(xy[mine, 0], xy[mine, 1], color=colours(k), label=str(value), **style)
        ax.legend(title="label", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    else:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap="viridis", **style)
        fig.colorbar(points, ax=ax, label="label")


def prior_samples(pair, data, num: int = 16, path=None, *, seed: int = 0, ncols: int = 8) -> Figure:
    r"""``num`` draws from the model's prior: for each, the likelihood mean :math:`\mathbb{E}[x \mid
    z]`, :math:`z \sim p(z)` (every latent site drawn, in the model's order), and, for binary data,
    a draw :math:`x \sim p(x \mid z)` at the same :math:`z` below it.

    The mean and the draw come from two decodings with the same ``seed``, which draw the same latents
    (:func:`pyrovae.analysis.latent_space.decode`), so each column is one :math:`z`. The data are taken as
    binary when every value of the draw is 0 or 1, as with any likelihood that draws only 0s and 1s, whatever
    its class (``Bernoulli(...).to_event()``, a ``MaskedDistribution``, ...); a continuous one almost surely
    draws other values, and its draw, pixel noise added to the mean, is left out.

    :param pair: a model/guide pair.
    :param data: data rows that give the model's arguments for the ``num`` draws: its first
        ``num`` rows, repeated in turn if it has fewer (a single row serves a VAE; for a CVAE
        the rows' conditions are the draws' conditions). Their observed values are not used.
    :param int num: number of draws.
    :param path: where to save the PNG.
    :param int seed: seeds the draws.
    :param int ncols: draws per row of the figure.
    """
    for name, value in (("num", num), ("ncols", ncols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    with seeded(seed):  # a data set's random binarization leaves the caller's stream alone
        args = rows(data, num)
    args = repeat_rows(args, torch.arange(num) % args[0].shape[0])
    means = decode(pair, {}, args, fill="sample", seed=seed)
    draws = decode(pair, {}, args, fill="sample", draw=True, seed=seed)
    binary = bool(((draws == 0) | (draws == 1)).all())
    shown = {"mean": means, "sample": draws} if binary else {"mean": means}
    labelled = [(label, x[lo : lo + ncols]) for lo in range(0, num, ncols) for label, x in shown.items()]
    what = "likelihood mean" + (" ('mean') and a draw of x at the same z ('sample')" if binary else "")
    return _labelled_grid(labelled, path, f"{num} draws z ~ p(z) (seed {seed}): {what}")
