"""The importance-weighted family, one bound per data point: IWAE, Rényi, STL, DReG, and MIWAE,
PIWAE and CIWAE."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from pyro.infer.util import is_validation_enabled, torch_item

from pyrovae.errors import ConfigError
from pyrovae.estimators.base import DifferentiableELBO
from pyrovae.infer.checks import check_pair
from pyrovae.infer.pair import Pair, log_density
from pyrovae.infer.sites import data_frame, latents, scored_sites

__all__ = ["CIWAE", "DReG", "IWAE", "MIWAE", "PIWAE", "Renyi", "STL", "data_scale"]


class IWAE(DifferentiableELBO):
    r"""The importance weighted bound (Burda, Grosse & Salakhutdinov 2015), one per data point.

    For each data point :math:`x_n`, :math:`k` draws :math:`z_1, \dots, z_k \sim q(\cdot \mid x_n)`,
    vectorized in an outer plate, give log-weights :math:`\log w_i = \log p(x_n, z_i) - \log q(z_i
    \mid x_n)` and the bound

    .. math:: \mathcal{L}_k(x_n) = \log \frac1k \sum_{i=1}^k w_i \;\le\; \log p(x_n),

    with :math:`\mathcal L_1` the ELBO. The loss is :math:`-\sum_n \mathcal L_k(x_n)`, and its gradient
    the reparameterized IWAE gradient :math:`\sum_i \tilde w_i \nabla \log w_i`, :math:`\tilde w_i =
    w_i / \sum_j w_j`. Unlike Pyro's :class:`~pyro.infer.RenyiELBO` (:math:`\alpha = 0`), which sums
    the log-weights over every plate before the log-mean-exp, each data point has its own weights,
    which is the bound of Burda et al. for a minibatch.

    **Site scales.** A minibatch of :math:`B` of :math:`N` data points scales every site of the
    data plate by :math:`s = N/B` (:func:`~pyrovae.handlers.scale_data`, or Pyro's own plate
    subsampling). That scale must multiply the bound, :math:`-s \sum_n \mathcal L_k(x_n)`, not the
    log-weights inside the log-mean-exp, where it would change the bound. :math:`s` is read from the
    observed sites of the data plate, which all carry it; every site's log-density enters
    :math:`\log w` scaled by its own scale relative to :math:`s`, and masks apply. So the latent
    scale :math:`\beta` of :class:`KLAnnealed` (or ``kl_warmup`` in :func:`~pyrovae.fit`) gives the
    β-IWAE weights :math:`\log w_i = \log p(x \mid z_i) + \beta(\log p(z_i) - \log q(z_i \mid x))`.

    **Requirements.** Every sample site of model and guide lies in the data plate (the data points
    are then independent given the parameters); every latent site of the model is sampled by the
    guide, reparameterized (``has_rsample``; a discrete latent is refused with a
    :class:`~pyrovae.ConfigError`: use ``vimco``, ``rws``, ``elbo`` or ``tracegraph``); scales are
    scalars. The particle plate sits at dim ``-(max_plate_nesting + 1)``, with the nesting found by
    running the pair once on the first call (the random state is left untouched) and kept.

    :param int k: the number of particles :math:`k` per data point.
    :param str data_plate: the name of the data plate.
    """

    name = "iwae"
    #: whether the pair must have reparameterized latents (the pathwise estimators)
    reparameterized = True
    #: evaluate log q through the samples only (STL, DReG)
    _path_derivative = False
    #: weight the guide's gradient by the squared normalized weights (DReG)
    _doubly_reparameterized = False

    def __init__(self, k: int = 5, *, data_plate: str | None = None):
        _check_count(k, f"k, the number of particles of {self.name!r}")
        super().__init__(num_particles=k, vectorize_particles=True)
        self.data_plate = data_plate
        self._pair: Pair | None = None

    @property
    def k(self) -> int:
        return self.num_particles

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The per-datapoint bound from the ``(k, B)`` log-weights."""
        return torch.logsumexp(log_w, 0) - math.log(self.num_particles)

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        """The negative bound :math:`-s \\sum_n \\mathcal{L}(x_n)`, a float.

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        log_w, scale = self._log_weights(model, guide, args, kwargs, differentiable=False)
        return torch_item(-scale * self._bound(log_w).sum())

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative bound, with this estimator's gradient.

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        log_w, scale = self._log_weights(model, guide, args, kwargs, differentiable=True)
        return -scale * self._bound(log_w).sum()

    def probe(self, model, guide, args, kwargs) -> Pair:
        """The :class:`~pyrovae.infer.pair.Pair` probed on the first call's arguments, then kept.

        :param model: the Pyro model.
        :param guide: the guide.
        :param tuple args: the positional arguments of both, the data first (its leading dimension
            indexes the data points).
        :param dict kwargs: their keyword arguments.
        """
        if self._pair is None:
            num_data = args[0].shape[0] if args and torch.is_tensor(args[0]) and args[0].dim() else 1
            self._pair = Pair(
                model,
                guide,
                args,
                kwargs,
                self.data_plate,
                num_data=num_data,
                reparameterized=self.name if self.reparameterized else None,
                num_particles=self.num_particles,
            )
        return self._pair

    def _shape(self, model_trace) -> tuple[int, int]:
        """``(k, B)``: the particles and the data points of the data plate of ``model_trace``."""
        return self.num_particles, data_frame(next(scored_sites(model_trace))[1], self._pair.data_plate).size

    def _check(self, model_trace, guide_trace) -> None:
        """Refuse, where Pyro's validation is on, a pair that per-datapoint weights cannot serve."""
        if is_validation_enabled():
            name = self.name if self.reparameterized else None
            _, num_data = self._shape(model_trace)
            check_pair(model_trace, guide_trace, self._pair.data_plate, num_data, reparameterized=name)

    def _get_trace(self, model, guide, args, kwargs):
        """The guide with its particles vectorized, and the model replayed against its latents
        (copies of them, for DReG, so that their gradient can be reweighted)."""
        pair = self.probe(model, guide, args, kwargs)
        model_trace, guide_trace = pair.traces(
            args, kwargs, self.num_particles, copy_latents=self._doubly_reparameterized
        )
        self._check(model_trace, guide_trace)
        return model_trace, guide_trace

    def _log_weights(
        self, model, guide, args, kwargs, differentiable: bool, traces=None
    ) -> tuple[torch.Tensor, Any]:
        """The ``(k, B)`` log-weights, each site scaled relative to the data scale, and that scale; of the
        ``(model_trace, guide_trace)`` of :meth:`_get_trace` given as ``traces``, or of fresh ones."""
        model_trace, guide_trace = traces or self._get_trace(model, guide, args, kwargs)
        pair = self._pair
        scale, shape = data_scale(model_trace), self._shape(model_trace)
        values = {name: model_trace.nodes[name]["value"] for name in latents(guide_trace)}
        log_q = self._guide_log_density(guide, guide_trace, values, args, kwargs, scale, shape)
        if differentiable and self._path_derivative:
            # log q(z) - log q(sg z): the derivative through z only (stop-gradient on the
            # guide's parameters), with the value of log q(z)
            fixed = self._guide_log_density(
                guide, guide_trace, {n: v.detach() for n, v in values.items()}, args, kwargs, scale, shape
            )
            log_q = log_q + (fixed.detach() - fixed)
        log_w = log_density(model_trace, pair.particle_dim, pair.data_plate, shape, scale=scale) - log_q
        if differentiable and self._doubly_reparameterized:
            self._reweight(values, guide_trace, log_w)
        return log_w, scale

    def _guide_log_density(self, guide, guide_trace, values, args, kwargs, scale, shape) -> torch.Tensor:
        """:math:`\\log q` at the latent ``values``, with the parameters of the traced guide run: its traced
        distributions, or, for other values of a guide with several latent sites (where a later site's
        distribution may depend on earlier latents), those of the guide run again on the values."""
        pair = self._pair
        if len(values) > 1 and any(v is not guide_trace.nodes[n]["value"] for n, v in values.items()):
            guide_trace = pair.replay(guide, values, guide_trace, args, kwargs, self.num_particles)
        return log_density(guide_trace, pair.particle_dim, pair.data_plate, shape, values=values, scale=scale)

    def _reweight(self, values: dict, guide_trace, log_w: torch.Tensor) -> None:
        """Multiply the gradient reaching each latent copy by its particle's normalized weight."""
        weights = torch.softmax(log_w.detach(), 0)
        for name, value in values.items():
            site = guide_trace.nodes[name]
            nbatch = len(site["fn"].batch_shape)
            shape = [1] * value.dim()
            shape[nbatch + self._pair.particle_dim] = weights.shape[0]
            shape[nbatch + data_frame(site, self._pair.data_plate).dim] = weights.shape[1]
            value.register_hook(partial(torch.mul, weights.reshape(shape)))


class Renyi(IWAE):
    r"""The variational Rényi bound (Li & Turner 2016), one per data point.

    With the log-weights of :class:`IWAE`,

    .. math:: \mathcal{L}_\alpha(x_n) = \frac{1}{1 - \alpha} \log \frac1k \sum_{i=1}^k w_i^{1-\alpha},

    a lower bound on :math:`\log p(x_n)` in expectation for :math:`\alpha \ge 0`, the IWAE bound at
    :math:`\alpha = 0` and the ELBO (the mean of :math:`\log w_i`, used at :math:`\alpha = 1`) in the
    limit :math:`\alpha \to 1`. The gradient is reparameterized,
    :math:`\sum_i \tilde w_{\alpha,i} \nabla \log w_i` with :math:`\tilde w_{\alpha,i} \propto
    w_i^{1-\alpha}`. Unlike Pyro's :class:`~pyro.infer.RenyiELBO` it keeps one bound per data point
    and has a ``differentiable_loss``. Site scales and requirements are those of :class:`IWAE`.

    :param float alpha: the order :math:`\alpha`.
    :param int k: the number of particles per data point.
    :param str data_plate: the name of the data plate (default: found on the first call, see
        :func:`~pyrovae.infer.sites.find_data_plate`).
    """

    name = "renyi"

    def __init__(self, alpha: float = 0.5, k: int = 5, *, data_plate: str | None = None):
        super().__init__(k, data_plate=data_plate)
        if not math.isfinite(alpha):
            raise ConfigError(f"alpha must be a finite number; got {alpha!r}")
        self.alpha = float(alpha)

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        if self.alpha == 1.0:
            return log_w.mean(0)
        a = 1.0 - self.alpha
        return (torch.logsumexp(a * log_w, 0) - math.log(self.num_particles)) / a


class STL(IWAE):
    r"""Sticking-the-landing gradients (Roeder, Wu & Duvenaud 2017) of the IWAE-:math:`k` bound
    (:math:`k = 1`: the ELBO).

    The bound is :class:`IWAE`'s; in its gradient :math:`\log q_\phi(z \mid x)` is differentiated
    through the reparameterized samples :math:`z = z(\epsilon, \phi)` only, not through its
    parameters :math:`\phi` directly:

    .. math:: \nabla_\phi \approx \sum_i \tilde w_i\, \big(\nabla_z \log p(x, z_i)
              - \nabla_z \log q_\phi(z_i \mid x)\big)\, \frac{\partial z_i}{\partial\phi}.

    The score term dropped, :math:`\mathbb{E}_q[\nabla_\phi \log q_\phi] = 0`, has zero mean, so for
    :math:`k = 1` the estimator is unbiased, and it is exactly zero when :math:`q` is the exact posterior
    (:math:`\log p(x, z) - \log q(z \mid x) = \log p(x)` for every :math:`z`). For :math:`k > 1` it is biased
    (Tucker et al. 2018); :class:`DReG` is the unbiased correction. The model's gradient is :class:`IWAE`'s.

    The stop-gradient is generic: the surrogate uses :math:`\log q_\phi(z) - \log q_\phi(\bar z)`
    (:math:`\bar z` the detached samples, the guide re-run on them where it has several latent sites),
    whose derivative is the path derivative at any depth of a hierarchical guide.

    :param int k: the number of particles per data point (default 1: the ELBO).
    :param str data_plate: the name of the data plate (default: found on the first call, see
        :func:`~pyrovae.infer.sites.find_data_plate`).
    """

    name = "stl"
    _path_derivative = True

    def __init__(self, k: int = 1, *, data_plate: str | None = None):
        super().__init__(k, data_plate=data_plate)


class DReG(STL):
    r"""Doubly reparameterized gradients of the IWAE-:math:`k` bound (Tucker, Lawson, Gu & Maddison 2018).

    The bound and the model's gradient are :class:`IWAE`'s; the guide's gradient is

    .. math:: \nabla_\phi \mathcal L_k \approx \sum_{i=1}^k \tilde w_i^{\,2}\,
              \frac{\partial \log w_i}{\partial z_i}\, \frac{\partial z_i}{\partial \phi},

    with :math:`\log w_i` differentiated through :math:`z_i` only (as :class:`STL`). Reparameterizing
    the score term of the IWAE gradient a second time makes this estimator unbiased for it, with a
    signal-to-noise ratio that does not fall as :math:`k` grows (Rainforth et al. 2018); at
    :math:`k = 1` it is :class:`STL`. One backward pass gives both gradients: the model is run on
    copies of the latents whose gradient is multiplied by :math:`\tilde w_i` (a tensor hook), the
    outer log-mean-exp contributing the other :math:`\tilde w_i`.

    :param int k: the number of particles per data point.
    :param str data_plate: the name of the data plate (default: found on the first call, see
        :func:`~pyrovae.infer.sites.find_data_plate`).
    """

    name = "dreg"
    _doubly_reparameterized = True

    def __init__(self, k: int = 5, *, data_plate: str | None = None):
        super().__init__(k, data_plate=data_plate)


class MIWAE(IWAE):
    r"""The multiply importance weighted bound (Rainforth et al. 2018), one per data point.

    For each data point :math:`x_n`, :math:`MK` draws :math:`z \sim q(\cdot \mid x_n)`, vectorized in
    one particle plate as :class:`IWAE`'s (particle :math:`(m - 1)K + k` is :math:`z_{m,k}`), form
    :math:`M` groups of :math:`K`, with log-weights :math:`\log w_{m,k} = \log p(x_n, z_{m,k}) - \log
    q(z_{m,k} \mid x_n)`; the bound is the mean of the :math:`M` IWAE-:math:`K` bounds,

    .. math:: \mathcal{L}_{M,K}(x_n) = \frac1M \sum_{m=1}^M \log \frac1K \sum_{k=1}^K w_{m,k},

    whose expectation is that of the IWAE-:math:`K` bound, its variance divided by :math:`M`:
    :math:`M = 1` is the IWAE-:math:`K` bound, :math:`K = 1` the ELBO estimated with :math:`M`
    particles. The loss is :math:`-s \sum_n \mathcal L_{M,K}(x_n)`, and its gradient the
    reparameterized :math:`\frac1M \sum_{m,k} \tilde w_{m,k} \nabla \log w_{m,k}`, :math:`\tilde
    w_{m,k} = w_{m,k} / \sum_{j=1}^K w_{m,j}` normalized within the group. Rainforth et al. show that
    the signal-to-noise ratio of the guide's gradient is :math:`O(\sqrt{M/K})` and the model's
    :math:`O(\sqrt{MK})`: at a fixed budget :math:`MK`, :math:`M` trades the model's tighter bound
    for the guide's gradient. Site scales and requirements are those of :class:`IWAE`.

    :param int k: the number of particles :math:`K` per group (default 8).
    :param int m: the number of groups :math:`M` (default 8; :math:`MK` particles per data point in
        all, the MIWAE(8, 8) of Rainforth et al.).
    :param str data_plate: the name of the data plate.

    Reference: T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood and
    Y. W. Teh (2018), "Tighter Variational Bounds are Not Necessarily Better", ICML.
    """

    name = "miwae"

    def __init__(self, k: int = 8, m: int = 8, *, data_plate: str | None = None):
        _check_count(k, f"k, the number of particles per group of {self.name!r}")
        _check_count(m, f"m, the number of groups of {self.name!r}")
        super().__init__(k * m, data_plate=data_plate)
        self.m = m

    @property
    def k(self) -> int:
        """The number of particles :math:`K` per group."""
        return self.num_particles // self.m

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The per-datapoint bound from the ``(M K, B)`` log-weights, groups of ``K`` in a row."""
        groups = log_w.reshape(self.m, self.k, *log_w.shape[1:])
        return (torch.logsumexp(groups, 1) - math.log(self.k)).mean(0)


class PIWAE(MIWAE):
    r"""The partially importance weighted estimator (Rainforth et al. 2018): the model's parameters
    :math:`\theta` trained on the IWAE-:math:`MK` bound, the guide's :math:`\phi` on the MIWAE
    bound :math:`\mathcal L_{M,K}` of :class:`MIWAE`, with the same :math:`MK` draws per data point.

    With the log-weights :math:`\log w_i`, :math:`i = 1, \dots, MK`, of :class:`MIWAE`'s draws,

    .. math:: \nabla_\theta = \sum_{i=1}^{MK} \tilde w_i\, \nabla_\theta \log p_\theta(x_n, z_i),
              \quad \tilde w_i = \frac{w_i}{\sum_{j=1}^{MK} w_j}; \qquad
              \nabla_\phi = \nabla_\phi \mathcal L_{M,K}(x_n)
              = \frac1M \sum_{m,k} \tilde w_{m,k}\, \nabla_\phi \log w_{m,k},

    :math:`\tilde w_{m,k}` normalized within group :math:`m`: the model gets the tighter bound's gradient
    (whose SNR grows as :math:`O(\sqrt{MK})`), the guide the gradient whose SNR does not fall with :math:`M`.

    **One backward pass.** The latents are reparameterized, :math:`z_i = z(\epsilon_i, \phi)`, so
    :math:`\theta` enters :math:`\log w_i` only through :math:`\log p_\theta(x_n, z_i)`, and
    :math:`\phi` only through :math:`z_i` and :math:`\log q_\phi`. The model is replayed a second
    time, against the latents detached, :math:`\bar z_i` (the same values): :math:`t_i = \log
    p_\theta(x_n, \bar z_i)` carries a gradient to :math:`\theta` alone, equal to :math:`\nabla_\theta
    \log w_i`. With :math:`\ell_i = \bar{\log w_i} + t_i - \bar t_i` (a bar: detached), the log-weights'
    values with :math:`t_i`'s gradient, the loss is :math:`-s \sum_n S(x_n)`, with the surrogate

    .. math:: S(x_n) = \mathcal L_{MK}(\ell) + \big(\mathcal L_{M,K}(\log w) - \mathcal L_{M,K}(\ell)\big),

    :math:`\mathcal L_{MK}` the IWAE-:math:`MK` bound of :class:`IWAE`. Its value is the IWAE-:math:`MK` bound
    (:math:`\ell = \log w` in value: the bracket is exactly zero). Its :math:`\phi`-gradient is
    :math:`\nabla_\phi \mathcal L_{M,K}(\log w)`, MIWAE's, since :math:`\ell` carries none. Its
    :math:`\theta`-gradient is :math:`\sum_i \tilde w_i \nabla_\theta t_i` from the first term, plus
    :math:`\frac1M \sum_{m,k} \tilde w_{m,k} (\nabla_\theta \log w_{m,k} - \nabla_\theta t_{m,k}) = 0` from
    the bracket: IWAE's (to rounding, as two equal terms cancel). No split of the parameters into the model's
    and the guide's is needed; a parameter that both use gets the IWAE weights on its direct part in
    :math:`\log p` and the MIWAE weights on the rest. The cost is one more model pass.

    ``loss`` and ``differentiable_loss`` return the negative IWAE-:math:`MK` bound, :math:`-s \sum_n
    \mathcal L_{MK}(x_n)`, the tighter of the two (:class:`MIWAE`'s loss is the MIWAE bound of the same
    draws). Site scales and requirements are those of :class:`IWAE`.

    :param int k: the number of particles :math:`K` per group of the guide's bound (default 8).
    :param int m: the number of groups :math:`M` (default 8, the PIWAE(8, 8) of Rainforth et al.).
    :param str data_plate: the name of the data plate.
    """

    name = "piwae"

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The IWAE-:math:`MK` bound, all the particles in one group."""
        return IWAE._bound(self, log_w)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative IWAE-:math:`MK` bound, with its gradient for the model's parameters and the
        MIWAE bound's for the guide's (see the class docstring).

        :param model: the Pyro model, called as ``model(*args, **kwargs)``.
        :param guide: the guide, called with the same arguments.
        """
        traces = self._get_trace(model, guide, args, kwargs)
        log_w, scale = self._log_weights(model, guide, args, kwargs, differentiable=True, traces=traces)
        # log p(x, sg z): the model replayed against the guide's latents detached, scaled as log w
        pair = self._pair
        detached = {name: value.detach() for name, value in latents(traces[1]).items()}
        replayed = pair.replay(model, detached, traces[1], args, kwargs, self.num_particles)
        log_p = log_density(replayed, pair.particle_dim, pair.data_plate, tuple(log_w.shape), scale=scale)
        model_only = log_w.detach() + (log_p - log_p.detach())
        miwae = super()._bound
        bound = self._bound(model_only) + (miwae(log_w) - miwae(model_only))
        return -scale * bound.sum()


class CIWAE(IWAE):
    r"""The combination importance weighted bound (Rainforth et al. 2018), one per data point.

    With the log-weights :math:`\log w_i` of :class:`IWAE`'s :math:`k` draws per data point, the
    bound is the mixture, with weight :math:`\beta` (the option ``mix``), of the ELBO estimated
    with the :math:`k` draws and the IWAE-:math:`k` bound of the same draws,

    .. math:: \mathcal{L}(x_n) = \beta\, \frac1k \sum_{i=1}^k \log w_i
              + (1 - \beta) \log \frac1k \sum_{i=1}^k w_i,

    with the reparameterized gradient :math:`\sum_i \big(\frac\beta k + (1 - \beta)\tilde w_i\big)
    \nabla \log w_i`, :math:`\tilde w_i = w_i / \sum_j w_j`. :math:`\beta = 1` is the ELBO
    (:class:`Renyi` at :math:`\alpha = 1`), :math:`\beta = 0` the IWAE-:math:`k` bound. The option
    is named ``mix``, since ``beta`` on any estimator is the KL weight of :class:`KLAnnealed`. Site
    scales and requirements are those of :class:`IWAE`.

    :param int k: the number of particles :math:`k` per data point (default 64).
    :param float mix: the weight :math:`\beta \in [0, 1]` of the ELBO (default 0.05: with
        :math:`k = 64`, the CIWAE of Rainforth et al.'s comparison).
    :param str data_plate: the name of the data plate.
    """

    name = "ciwae"

    def __init__(self, k: int = 64, mix: float = 0.05, *, data_plate: str | None = None):
        super().__init__(k, data_plate=data_plate)
        if isinstance(mix, bool) or not isinstance(mix, int | float) or not 0 <= mix <= 1:
            raise ConfigError(
                f"mix, the weight of the ELBO in {self.name!r}, must be a number with 0 <= mix <= 1; "
                f"got {mix!r}"
            )
        self.mix = float(mix)

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        if self.mix == 0.0:
            return super()._bound(log_w)
        elbo = log_w.mean(0)
        if self.mix == 1.0:
            return elbo
        return self.mix * elbo + (1.0 - self.mix) * super()._bound(log_w)


def data_scale(model_trace):
    """The scale :math:`s` of the data plate, carried by its observed sites."""
    scales = [site["scale"] for _, site in scored_sites(model_trace) if site["is_observed"]]
    if not scales:
        raise ConfigError(
            "the model has no observed site in the data plate, whose scale (the minibatch scale N/B) "
            "the importance-weighted estimators read; observe the data inside pyro.plate('data', N)"
        )
    if is_validation_enabled():
        for scale in scales:
            if torch.as_tensor(scale).numel() != 1 or float(scale) != float(scales[0]):
                raise ConfigError(
                    "the observed sites of the data plate carry different or non-scalar scales; the "
                    "importance-weighted estimators need one minibatch scale for the whole data point"
                )
    return scales[0]


def _check_count(value, what: str) -> None:
    """Refuse a number of particles or groups that is not a positive integer; ``what`` names it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what}, must be a positive integer; got {value!r}")
