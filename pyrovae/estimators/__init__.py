r"""ELBO estimators and gradient estimators, built by name.

Every estimator is a :class:`pyro.infer.ELBO` with ``loss`` and ``differentiable_loss``, so
:func:`pyrovae.fit`, ``ELBO(model, guide)`` modules and data-parallel wrappers accept it.
By name (see :data:`ESTIMATORS` and :func:`estimator`):

- ``elbo``: :class:`TraceELBO`, Pyro's :class:`~pyro.infer.Trace_ELBO` (Kingma & Welling 2014);
- ``elbo-analytic-kl``: Pyro's :class:`~pyro.infer.TraceMeanField_ELBO`, the KL in closed form;
- ``enum``: Pyro's :class:`~pyro.infer.TraceEnum_ELBO`, which sums out the discrete latents a
  guide or model marks ``infer={"enumerate": "parallel"}`` exactly (the unobserved label of
  :class:`~pyrovae.SSVAE`), with ``max_plate_nesting`` found by Pyro from a first run;
- ``tracegraph``: :class:`TraceGraphELBO`, Pyro's :class:`~pyro.infer.TraceGraph_ELBO`
  (Schulman et al. 2015), score-function terms with Rao-Blackwellization and baselines;
- ``tail-adaptive``: :class:`TailAdaptiveELBO`, Pyro's :class:`~pyro.infer.TraceTailAdaptive_ELBO`
  (Wang, Liu & Liu 2018);
- ``iwae``: :class:`IWAE`, the importance weighted bound (Burda, Grosse & Salakhutdinov 2015);
- ``renyi``: :class:`Renyi`, the variational Rényi bound (Li & Turner 2016);
- ``stl``: :class:`STL`, sticking-the-landing gradients (Roeder, Wu & Duvenaud 2017);
- ``dreg``: :class:`DReG`, doubly reparameterized gradients (Tucker, Lawson, Gu & Maddison 2018);
- ``miwae``: :class:`MIWAE`, the mean of :math:`M` IWAE-:math:`K` bounds (Rainforth et al. 2018);
- ``piwae``: :class:`PIWAE`, the IWAE-:math:`MK` gradient for the model, MIWAE's for the guide,
  on the same draws (Rainforth et al. 2018);
- ``ciwae``: :class:`CIWAE`, the mixture :math:`\beta` ELBO + :math:`(1 - \beta)` IWAE-:math:`k`
  of the same draws, :math:`\beta` the option ``mix`` (Rainforth et al. 2018);
- ``vimco``: :class:`VIMCO`, score-function gradients of the IWAE bound with leave-one-out
  baselines (Mnih & Rezende 2016);
- ``rws``: :class:`RWS`, reweighted wake-sleep: the IWAE gradient for the model, the inclusive
  KL's for the guide (Bornschein & Bengio 2015; Le et al. 2019);

and the option ``beta`` on any of them wraps it in :class:`KLAnnealed`, which scales the
log-density of the latent sites by :math:`\beta`.

``iwae``, ``renyi``, ``stl``, ``dreg``, ``miwae``, ``piwae`` and ``ciwae`` are vectorized over particles and
keep one importance weight per particle *and per data point*; they need each sample site in the data plate
``pyro.plate("data", N)`` and reparameterized latents. ``vimco`` and ``rws`` (:class:`DetachedIWAE`) keep the
same weights but also serve latents the guide samples without ``rsample`` (Bernoulli, Categorical).
"""

from pyrovae.estimators.annealed import KLAnnealed
from pyrovae.estimators.base import DifferentiableELBO
from pyrovae.estimators.detached import DetachedIWAE, WeightTerms
from pyrovae.estimators.elbos import TailAdaptiveELBO, TraceELBO, TraceGraphELBO
from pyrovae.estimators.iwae import CIWAE, IWAE, MIWAE, PIWAE, STL, DReG, Renyi, data_scale
from pyrovae.estimators.registry import ESTIMATORS, estimator, parse_spec
from pyrovae.estimators.rws import RWS
from pyrovae.estimators.vimco import VIMCO

__all__ = [
    "CIWAE",
    "ESTIMATORS",
    "DReG",
    "DetachedIWAE",
    "DifferentiableELBO",
    "IWAE",
    "KLAnnealed",
    "MIWAE",
    "PIWAE",
    "RWS",
    "Renyi",
    "STL",
    "TailAdaptiveELBO",
    "TraceELBO",
    "TraceGraphELBO",
    "VIMCO",
    "WeightTerms",
    "data_scale",
    "estimator",
    "parse_spec",
]
