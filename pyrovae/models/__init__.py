"""The model/guide pairs and their parts.

A pair is a ``torch.nn.Module`` with ``model`` and ``guide`` methods whose per-datapoint sites live
in ``pyro.plate("data", N)`` (:mod:`pyrovae.models.vae`, :mod:`~pyrovae.models.hvae`,
:mod:`~pyrovae.models.cvae`, :mod:`~pyrovae.models.ssvae`, :mod:`~pyrovae.models.sbn`,
:mod:`~pyrovae.models.categorical`), built from networks (:mod:`~pyrovae.models.nn`), priors
(:mod:`~pyrovae.models.priors`), likelihoods (:mod:`~pyrovae.models.likelihoods`) and NVIL's
baselines (:mod:`~pyrovae.models.baselines`). Models import only the plain modules of
:mod:`pyrovae` (errors, options, handlers) and each other; nothing here trains or evaluates.
"""
