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

and the option ``beta`` on any of them wraps it in :class:`KLAnnealed`, which scales the
log-density of the latent sites by :math:`\beta`.

The last four are vectorized over particles and keep one importance weight per particle *and
per data point* (Pyro's :class:`~pyro.infer.RenyiELBO` sums the log-weights over the whole
batch). They ask of the model/guide pair what every part of pyrovae asks: each sample site lies
in the data plate ``pyro.plate("data", N)``; and they need reparameterized latents in the guide.
"""

from .annealed import KLAnnealed
from .base import DifferentiableELBO
from .elbos import TailAdaptiveELBO, TraceELBO, TraceGraphELBO
from .iwae import IWAE, STL, DReG, Renyi, data_scale
from .registry import ESTIMATORS, estimator, parse_spec

__all__ = [
    "ESTIMATORS",
    "DReG",
    "DifferentiableELBO",
    "IWAE",
    "KLAnnealed",
    "Renyi",
    "STL",
    "TailAdaptiveELBO",
    "TraceELBO",
    "TraceGraphELBO",
    "data_scale",
    "estimator",
    "parse_spec",
]
