r"""Small model/guide pairs with exact :math:`\log p(x)`, for testing estimators and bounds.

Everything is built in float64 explicitly (the global default dtype is left alone). Every
per-datapoint site lives in ``pyro.plate("data", N)``, and every model is written so that extra
batch dimensions on the left (vectorized particles) broadcast.

- :class:`PPCA`: probabilistic PCA, with its exact Gaussian posterior as a guide and imperfect
  diagonal guides.
- :class:`TwoViewPPCA`: PPCA whose observation is split into two observed sites.
- :class:`OrthogonalPPCA`: PPCA with orthogonal loadings, whose exact posterior factorizes over
  the latent dimensions (one of them ignored by the decoder), with the latent statistics in
  closed form.
- :class:`TwoLayer`: a two-stochastic-layer linear-Gaussian model ``z2 -> z1 -> x``.
- :class:`Mixture`: a discrete latent ``c`` and a continuous ``z | c``.
- :func:`enumerated_model`: a mixture with its label enumerated in the model.
- :func:`global_latent_model`, :func:`no_plate_model`: pairs that the per-datapoint estimators
  must refuse.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

DTYPE = torch.float64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def binary_pixels(n: int, pixels: int, seed: int = 1) -> torch.Tensor:
    """``n`` rows of ``pixels`` independent Bernoulli(0.4) pixels in float64, for the tiny discrete-latent
    models whose exact log p(x) the tests enumerate."""
    return torch.bernoulli(torch.full((n, pixels), 0.4, dtype=DTYPE), generator=_generator(seed))


def _diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
    return dist.Normal(loc, scale).to_event(1)


class PPCA:
    r"""Probabilistic PCA: :math:`z \sim \mathcal N(0, I_d)`,
    :math:`x \mid z \sim \mathcal N(Wz + b, \sigma^2 I_D)`.

    Exact marginal :math:`x \sim \mathcal N(b, WW^\top + \sigma^2 I)` and posterior
    :math:`z \mid x \sim \mathcal N(M^{-1}W^\top(x - b), \sigma^2 M^{-1})`,
    :math:`M = W^\top W + \sigma^2 I`.
    """

    def __init__(self, data_dim: int = 6, latent_dim: int = 2, sigma: float = 0.7, seed: int = 0):
        g = _generator(seed)
        self.data_dim, self.latent_dim, self.sigma = data_dim, latent_dim, sigma
        self.W = torch.randn(data_dim, latent_dim, generator=g, dtype=DTYPE)
        self.b = torch.randn(data_dim, generator=g, dtype=DTYPE)
        eye = torch.eye(latent_dim, dtype=DTYPE)
        M = self.W.T @ self.W + sigma**2 * eye
        self._gain = torch.linalg.solve(M, self.W.T)  # M^{-1} W^T, (d, D)
        self.post_cov = sigma**2 * torch.linalg.inv(M)
        self.post_scale_tril = torch.linalg.cholesky(self.post_cov)

    def sample(self, num_data: int, seed: int = 1) -> torch.Tensor:
        """Draw ``num_data`` observations from the model."""
        g = _generator(seed)
        z = torch.randn(num_data, self.latent_dim, generator=g, dtype=DTYPE)
        noise = torch.randn(num_data, self.data_dim, generator=g, dtype=DTYPE)
        return z @ self.W.T + self.b + self.sigma * noise

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x)` per data point."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.data_dim, dtype=DTYPE)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def posterior_loc(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b) @ self._gain.T

    def model(self, x: torch.Tensor | None = None, *, batch_size: int | None = None) -> None:
        """Without ``x``, draws ``batch_size`` observations (as :meth:`pyrovae.VAE.model` does)."""
        zeros = self.b.new_zeros(self.latent_dim)
        with pyro.plate("data", x.shape[0] if x is not None else batch_size):
            z = pyro.sample("z", _diagonal_normal(zeros, torch.ones_like(zeros)))
            pyro.sample(
                "x", _diagonal_normal(z @ self.W.T + self.b, torch.full_like(self.b, self.sigma)), obs=x
            )

    def exact_guide(self, x: torch.Tensor) -> None:
        """The exact posterior: every importance weight equals :math:`p(x)`."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(self.posterior_loc(x), scale_tril=self.post_scale_tril))

    def pixel_plate_model(self, x: torch.Tensor) -> None:
        """The same model written with the data plate at dim -2 and a plate over the observed
        coordinates at dim -1 (no ``to_event`` on the likelihood)."""
        zeros = self.b.new_zeros(self.latent_dim)
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", _diagonal_normal(zeros, torch.ones_like(zeros)))
            with pyro.plate("coordinates", self.data_dim, dim=-1):
                loc = (z @ self.W.T + self.b)[..., 0, :]
                pyro.sample("x", dist.Normal(loc, torch.tensor(self.sigma, dtype=DTYPE)), obs=x)

    def pixel_plate_guide(self, x: torch.Tensor) -> None:
        """The exact posterior, for :meth:`pixel_plate_model`."""
        with pyro.plate("data", x.shape[0], dim=-2):
            loc = self.posterior_loc(x).unsqueeze(-2)
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=self.post_scale_tril))

    def diagonal_guide(self, shift: float = 0.3, widen: float = 1.3):
        """A mean-field guide: the posterior's marginals, shifted by ``shift`` marginal standard
        deviations and with scales multiplied by ``widen``."""
        sd = self.post_cov.diagonal().sqrt()

        def guide(x: torch.Tensor) -> None:
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", _diagonal_normal(self.posterior_loc(x) + shift * sd, widen * sd))

        return guide


def offset_guide(model: PPCA, offset: float = 0.5, scale: float = 0.7):
    """A mean-field guide for ``model``: the posterior's marginals, their means moved by ``offset`` and
    their scales multiplied by ``scale`` (narrower than the posterior: the guide of issue 27)."""
    sd = model.post_cov.diagonal().sqrt()

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", _diagonal_normal(model.posterior_loc(x) + offset, scale * sd))

    return guide


class TwoViewPPCA(PPCA):
    """PPCA whose observation is split into two observed sites ``x1`` (the first ``split``
    coordinates) and ``x2`` (the rest), passed as two arguments."""

    def __init__(self, split: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.split = split

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., : self.split], x[..., self.split :]

    def model(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        zeros = self.b.new_zeros(self.latent_dim)
        loc1, loc2 = self.views(self.b)
        W1, W2 = self.W[: self.split], self.W[self.split :]
        with pyro.plate("data", x1.shape[0]):
            z = pyro.sample("z", _diagonal_normal(zeros, torch.ones_like(zeros)))
            pyro.sample("x1", _diagonal_normal(z @ W1.T + loc1, torch.full_like(loc1, self.sigma)), obs=x1)
            pyro.sample("x2", _diagonal_normal(z @ W2.T + loc2, torch.full_like(loc2, self.sigma)), obs=x2)

    def exact_guide(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        super().exact_guide(torch.cat([x1, x2], -1))


class OrthogonalPPCA:
    r"""PPCA with loadings :math:`W = U \operatorname{diag}(s)`, :math:`U^\top U = I`:
    :math:`z \sim \mathcal N(0, I)`, :math:`x \mid z \sim \mathcal N(Wz + b, \sigma^2 I)`.

    The exact posterior factorizes, :math:`q(z_d \mid x) = \mathcal N\big(\tfrac{s_d}{s_d^2 +
    \sigma^2} u_d^\top (x - b),\ v_d\big)`, :math:`v_d = \sigma^2 / (s_d^2 + \sigma^2)`; a
    dimension with :math:`s_d = 0` is ignored by the decoder and its posterior is the prior. Over
    the model's own data, the posterior mean of dimension :math:`d` has variance :math:`s_d^2 /
    (s_d^2 + \sigma^2)` (the activity), the aggregate posterior is the prior, and
    :math:`\mathbb E_x \mathrm{KL}_d = I_d(x; z_d) = -\frac12 \log v_d`.
    """

    def __init__(self, scales=(2.0, 1.0, 0.0), data_dim: int = 6, sigma: float = 0.5, seed: int = 0):
        g = _generator(seed)
        self.s = torch.tensor(scales, dtype=DTYPE)
        self.U, _ = torch.linalg.qr(torch.randn(data_dim, len(scales), generator=g, dtype=DTYPE))
        self.b = torch.randn(data_dim, generator=g, dtype=DTYPE)
        self.sigma, self.latent_dim = sigma, len(scales)
        self.post_var = sigma**2 / (self.s**2 + sigma**2)

    def sample(self, num_data: int, seed: int = 1) -> torch.Tensor:
        g = _generator(seed)
        z = torch.randn(num_data, self.latent_dim, generator=g, dtype=DTYPE)
        noise = torch.randn(num_data, len(self.b), generator=g, dtype=DTYPE)
        return (z * self.s) @ self.U.T + self.b + self.sigma * noise

    def posterior_loc(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.b) @ self.U) * self.s / (self.s**2 + self.sigma**2)

    def kl_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        r"""The mean over ``x`` of :math:`\mathrm{KL}(q(z_d \mid x) \| \mathcal N(0, 1))`, exactly."""
        v = self.post_var
        return 0.5 * (v + self.posterior_loc(x).pow(2).mean(0) - 1 - v.log())

    def model(self, x: torch.Tensor) -> None:
        zeros = self.b.new_zeros(self.latent_dim)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", _diagonal_normal(zeros, torch.ones_like(zeros)))
            pyro.sample(
                "x",
                _diagonal_normal((z * self.s) @ self.U.T + self.b, torch.full_like(self.b, self.sigma)),
                obs=x,
            )

    def guide(self, x: torch.Tensor) -> None:
        """The exact posterior."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", _diagonal_normal(self.posterior_loc(x), self.post_var.sqrt().expand(len(x), -1)))

    def student_guide(self, x: torch.Tensor) -> None:
        """The posterior's means and scales in a Student-t (no analytic KL to the prior)."""
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.posterior_loc(x), self.post_var.sqrt().expand(len(x), -1)
            pyro.sample("z", dist.StudentT(torch.tensor(30.0, dtype=DTYPE), loc, scale).to_event(1))


class TwoLayer:
    r"""Two stochastic layers: :math:`z_2 \sim \mathcal N(0, I)`,
    :math:`z_1 \mid z_2 \sim \mathcal N(A z_2 + a, s^2 I)`,
    :math:`x \mid z_1 \sim \mathcal N(W z_1 + b, \sigma^2 I)`.

    Marginally :math:`z_1 \sim \mathcal N(a, S)`, :math:`S = AA^\top + s^2 I`, and
    :math:`x \sim \mathcal N(Wa + b, WSW^\top + \sigma^2 I)`. The exact posterior factorizes as
    :math:`p(z_1 \mid x)\, p(z_2 \mid z_1)`, which is the structure of the guide.
    """

    def __init__(self, data_dim=5, dim1=3, dim2=2, s=0.6, sigma=0.5, seed=0):
        g = _generator(seed)
        self.data_dim, self.dim1, self.dim2, self.s, self.sigma = data_dim, dim1, dim2, s, sigma
        self.A = torch.randn(dim1, dim2, generator=g, dtype=DTYPE)
        self.a = torch.randn(dim1, generator=g, dtype=DTYPE)
        self.W = torch.randn(data_dim, dim1, generator=g, dtype=DTYPE)
        self.b = torch.randn(data_dim, generator=g, dtype=DTYPE)
        self.S = self.A @ self.A.T + s**2 * torch.eye(dim1, dtype=DTYPE)
        # p(z1 | x): precision P1 = S^{-1} + W^T W / sigma^2
        S_inv = torch.linalg.inv(self.S)
        P1 = S_inv + self.W.T @ self.W / sigma**2
        self.z1_cov = torch.linalg.inv(P1)
        self._z1_prior_term = self.z1_cov @ S_inv @ self.a
        self._z1_gain = self.z1_cov @ self.W.T / sigma**2
        # p(z2 | z1): precision P2 = I + A^T A / s^2
        self.z2_cov = torch.linalg.inv(torch.eye(dim2, dtype=DTYPE) + self.A.T @ self.A / s**2)
        self._z2_gain = self.z2_cov @ self.A.T / s**2

    def sample(self, num_data: int, seed: int = 1) -> torch.Tensor:
        g = _generator(seed)
        z2 = torch.randn(num_data, self.dim2, generator=g, dtype=DTYPE)
        z1 = z2 @ self.A.T + self.a + self.s * torch.randn(num_data, self.dim1, generator=g, dtype=DTYPE)
        return (
            z1 @ self.W.T
            + self.b
            + self.sigma * torch.randn(num_data, self.data_dim, generator=g, dtype=DTYPE)
        )

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.S @ self.W.T + self.sigma**2 * torch.eye(self.data_dim, dtype=DTYPE)
        return dist.MultivariateNormal(self.W @ self.a + self.b, covariance_matrix=cov).log_prob(x)

    def model(self, x: torch.Tensor) -> None:
        zeros = torch.zeros(self.dim2, dtype=DTYPE)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", _diagonal_normal(zeros, torch.ones_like(zeros)))
            z1 = pyro.sample("z1", _diagonal_normal(z2 @ self.A.T + self.a, torch.full_like(self.a, self.s)))
            pyro.sample(
                "x", _diagonal_normal(z1 @ self.W.T + self.b, torch.full_like(self.b, self.sigma)), obs=x
            )

    def guide(self, widen: float = 1.0):
        """:math:`q(z_1 \\mid x)\\,q(z_2 \\mid z_1)`: the exact posterior factors (full covariance)
        when ``widen == 1``; with ``widen != 1``, diagonal factors with scales times ``widen``."""
        exact = widen == 1.0

        def factor(loc, cov):
            if exact:
                return dist.MultivariateNormal(loc, scale_tril=torch.linalg.cholesky(cov))
            return _diagonal_normal(loc, widen * cov.diagonal().sqrt())

        def guide(x: torch.Tensor) -> None:
            with pyro.plate("data", x.shape[0]):
                z1_loc = self._z1_prior_term + (x - self.b) @ self._z1_gain.T
                z1 = pyro.sample("z1", factor(z1_loc, self.z1_cov))
                pyro.sample("z2", factor((z1 - self.a) @ self._z2_gain.T, self.z2_cov))

        return guide


class Mixture:
    r"""A discrete latent: :math:`c \sim \mathrm{Categorical}(\pi)`,
    :math:`z \mid c \sim \mathcal N(\mu_c, 1)`, :math:`x \mid z \sim \mathcal N(z, \sigma^2)`, scalars.

    Exactly :math:`p(x) = \sum_c \pi_c\, \mathcal N(x; \mu_c, 1 + \sigma^2)`.
    """

    def __init__(self, sigma: float = 0.5):
        self.probs = torch.tensor([0.3, 0.5, 0.2], dtype=DTYPE)
        self.means = torch.tensor([-2.0, 0.5, 3.0], dtype=DTYPE)
        self.sigma = sigma

    def sample(self, num_data: int, seed: int = 1) -> torch.Tensor:
        g = _generator(seed)
        c = torch.multinomial(self.probs, num_data, replacement=True, generator=g)
        z = self.means[c] + torch.randn(num_data, generator=g, dtype=DTYPE)
        return z + self.sigma * torch.randn(num_data, generator=g, dtype=DTYPE)

    def _components(self, x: torch.Tensor) -> torch.Tensor:
        # log pi_c + log N(x; mu_c, 1 + sigma^2), shape (..., 3)
        scale = torch.tensor(1 + self.sigma**2, dtype=DTYPE).sqrt()
        return self.probs.log() + dist.Normal(self.means, scale).log_prob(x.unsqueeze(-1))

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self._components(x), -1)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(self.probs))
            z = pyro.sample("z", dist.Normal(self.means[c], torch.ones((), dtype=DTYPE)))
            pyro.sample("x", dist.Normal(z, torch.tensor(self.sigma, dtype=DTYPE)), obs=x)

    def guide(self, mix: float = 0.3, widen: float = 1.3, enumerate: bool = False):
        """:math:`q(c \\mid x) = (1 - \\text{mix})\\,p(c \\mid x) + \\text{mix}/3` and
        :math:`q(z \\mid x, c)` the exact conditional posterior with its scale times ``widen``;
        ``c`` enumerated in parallel if ``enumerate``."""
        precision = 1 + 1 / self.sigma**2
        infer = {"enumerate": "parallel"} if enumerate else {}

        def guide(x: torch.Tensor) -> None:
            post = torch.softmax(self._components(x), -1)
            with pyro.plate("data", x.shape[0]):
                c = pyro.sample("c", dist.Categorical((1 - mix) * post + mix / 3), infer=infer)
                loc = (self.means[c] + x / self.sigma**2) / precision
                pyro.sample("z", dist.Normal(loc, torch.tensor(widen * precision**-0.5, dtype=DTYPE)))

        return guide


def global_latent_model(x: torch.Tensor) -> None:
    """A global latent ``mu`` shared by all data points: per-datapoint log p(x) is undefined."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def global_latent_guide(x: torch.Tensor) -> None:
    pyro.sample("mu", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))


def no_plate_model(x: torch.Tensor) -> None:
    """Per-datapoint latents without a data plate (batch dims folded into the event)."""
    z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
    pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def no_plate_guide(x: torch.Tensor) -> None:
    pyro.sample("z", dist.Normal(x / 2, 1.0).to_event(1))


def enumerated_model(x: torch.Tensor) -> None:
    """:class:`Mixture`-like, with the discrete latent enumerated in the model."""
    means = torch.tensor([-1.0, 1.0], dtype=DTYPE)
    with pyro.plate("data", x.shape[0]):
        c = pyro.sample(
            "c", dist.Categorical(torch.ones(2, dtype=DTYPE) / 2), infer={"enumerate": "parallel"}
        )
        pyro.sample("x", dist.Normal(means[c], 1.0), obs=x)


def enumerated_guide(x: torch.Tensor) -> None:
    pass


class LearnablePPCA(torch.nn.Module):
    r""":class:`PPCA` with learnable parameters: the model's :math:`W, b` and an amortized guide
    :math:`q(z \mid x) = \mathcal N(Gx + c, LL^\top)` with full-covariance factor :math:`L`, initialized
    at the exact posterior (:math:`G = M^{-1}W^\top`, :math:`c = -Gb`, :math:`LL^\top` the posterior
    covariance), its mean then shifted by ``shift`` posterior standard deviations."""

    def __init__(self, ppca: PPCA, shift: float = 0.0):
        super().__init__()
        self.sigma = ppca.sigma
        self.W = torch.nn.Parameter(ppca.W.clone())
        self.b = torch.nn.Parameter(ppca.b.clone())
        sd = ppca.post_cov.diagonal().sqrt()
        self.gain = torch.nn.Parameter(ppca._gain.clone())
        self.offset = torch.nn.Parameter(-ppca._gain @ ppca.b + shift * sd)
        self.tril = torch.nn.Parameter(ppca.post_scale_tril.clone())

    def model(self, x: torch.Tensor) -> None:
        zeros = torch.zeros(self.W.shape[1], dtype=DTYPE)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", _diagonal_normal(zeros, torch.ones_like(zeros)))
            pyro.sample(
                "x", _diagonal_normal(z @ self.W.T + self.b, torch.full_like(self.b, self.sigma)), obs=x
            )

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z", dist.MultivariateNormal(x @ self.gain.T + self.offset, scale_tril=self.tril.tril())
            )

    def log_likelihood_term(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x \\mid z)` for latents ``z`` of shape ``(..., N, d)``."""
        return _diagonal_normal(z @ self.W.T + self.b, torch.full_like(self.b, self.sigma)).log_prob(x)


class ExactConditionalPosterior(torch.nn.Module):
    r"""The exact :math:`q(z \mid x, c) = p(z \mid x, c)` of a one-dimensional latent under a linear
    conditional decoder (:class:`~pyrovae.models.nn.ConditionalMLPDecoder` with ``hidden=()``) and a
    Gaussian likelihood of scale :math:`\sigma`: :math:`x \mid z, c \sim \mathcal N(wz + Vc + b,
    \sigma^2 I)`, :math:`z \sim \mathcal N(0, 1)`, so :math:`z \mid x, c` has precision
    :math:`1 + w^\top w / \sigma^2` and mean :math:`w^\top (x - Vc - b) / (\sigma^2 \cdot \text{precision})`.
    """

    def __init__(self, decoder, sigma: float):
        super().__init__()
        self.decoder, self.sigma = decoder, sigma

    def _maps(self):
        first = self.decoder.first.maps
        return first[0].weight[:, 0], first[0].bias, first[1].weight

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, b, v = self._maps()
        precision = 1 + w @ w / self.sigma**2
        residual = x - c @ v.T - b
        loc = (residual @ w / self.sigma**2 / precision).unsqueeze(-1)
        return loc, (precision**-0.5).expand(loc.shape)

    def log_px(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x \\mid c) = \\log \\mathcal N(x;\\ Vc + b,\\ ww^\\top + \\sigma^2 I)`."""
        w, b, v = self._maps()
        cov = torch.outer(w, w) + self.sigma**2 * torch.eye(len(w), dtype=w.dtype)
        return dist.MultivariateNormal(c @ v.T + b, cov).log_prob(x)
