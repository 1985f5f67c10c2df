"""Checks of a traced model/guide pair and of the data it is given, each refusal a message that
names the site or the data and the fix (see :mod:`pyrovae.infer.pair` for the contract)."""

from __future__ import annotations

import torch

from pyrovae.errors import ConfigError, DataError
from pyrovae.infer.sites import data_frame, scored_sites

__all__ = ["check_pair", "check_support", "dtype_error", "shape_error", "support_error", "supported"]


def check_support(name: str, site: dict) -> None:
    """Raise :class:`~pyrovae.errors.DataError` if an observed site's values are outside the support.

    Pyro's validation is switched off in vectorized sweeps (it would check every large parameter
    tensor of every chunk); the observed values are checked with this instead."""
    if not bool(supported(site)):
        raise support_error(name, site["fn"].support)


def supported(site: dict) -> torch.Tensor:
    """Whether every value of an observed site lies in its distribution's support: a boolean tensor on the
    site's device, so that a recorded graph can hold the check (:mod:`pyrovae.graphs`).

    :param dict site: a sample site of a trace.
    """
    return torch.as_tensor(site["fn"].support.check(site["value"])).all()


def support_error(name: str, support) -> DataError:
    """The error for observed site ``name`` holding values outside ``support``.

    :param str name: the site's name.
    :param support: its distribution's support (a constraint, or its description).
    """
    return DataError(
        f"observed site {name!r} holds values outside the support of its distribution ({support}); "
        "check the data"
    )


def check_pair(
    model_trace,
    guide_trace,
    data_plate: str,
    num_data: int,
    *,
    reparameterized: str | None = None,
) -> None:
    """Refuse, with a message that names the site and the fix, a pair that per-datapoint weights
    cannot serve (see the module docstring). ``reparameterized`` names an estimator that also
    needs every latent of the guide reparameterized and none enumerated."""
    sites = [("model", n, s) for n, s in scored_sites(model_trace)]
    sites += [("guide", n, s) for n, s in scored_sites(guide_trace)]
    for role, name, site in sites:
        how = site["infer"].get("enumerate")
        if how and how != "parallel":
            raise ConfigError(
                f"site {name!r} of the {role} is enumerated with infer={{'enumerate': {how!r}}}; "
                "per-datapoint weights sum out parallel enumeration only: mark the site "
                "infer={'enumerate': 'parallel'}, or sample it in the guide"
            )
        if reparameterized and (
            how or (role == "guide" and not site["is_observed"] and not site["fn"].has_rsample)
        ):
            raise ConfigError(
                f"the {reparameterized!r} estimator needs reparameterized latents, but site {name!r} of the "
                f"{role} is {type(site['fn']).__name__}{', enumerated' if how else ' (no rsample)'}; use "
                "'elbo' or 'tracegraph', whose score-function gradients serve discrete latents, or "
                "'vimco' or 'rws' for a multi-sample bound"
            )
    for role, name, site in sites:
        frame = data_frame(site, data_plate)
        if frame is None:
            kind = "observed" if site["is_observed"] else "latent"
            raise ConfigError(
                f"{kind} site {name!r} of the {role} lies outside the data plate {data_plate!r}. "
                "log p(x_n) of one data point is undefined when a variable is shared across data "
                "points: the data points are then not independent given the parameters. Put the "
                f"site inside pyro.plate({data_plate!r}, N), or marginalize it out, or make it a "
                "parameter (pyro.param)"
            )
        if frame.size != num_data:
            passed = "1 data point was" if num_data == 1 else f"{num_data} data points were"
            raise ConfigError(
                f"the data plate {data_plate!r} at site {name!r} of the {role} has size {frame.size} "
                f"when {passed} passed: its size must be the number of data points passed "
                f"in, pyro.plate({data_plate!r}, x.shape[0]), without subsampling"
            )
    guide_names = {n for n, _ in scored_sites(guide_trace)}
    model_names = {n for n, _ in scored_sites(model_trace)}
    for name, site in scored_sites(model_trace):
        if not site["is_observed"] and name not in guide_names and not site["infer"].get("enumerate"):
            raise ConfigError(
                f"latent site {name!r} of the model is not sampled by the guide; importance "
                "weighting needs the guide to propose every latent variable: add it to the guide"
            )
    for name in sorted(guide_names - model_names):
        raise ConfigError(
            f"site {name!r} of the guide does not appear in the model; auxiliary guide variables "
            "are not supported by per-datapoint importance weights"
        )


def shape_error(args, error: Exception) -> DataError | None:
    """A :class:`~pyrovae.errors.DataError` naming the data's shapes, where ``error`` is about shapes."""
    message = str(error)
    if not any(word in message for word in ("size of tensor", "shape", "dimension", "mat1 and mat2")):
        return None
    tensors = [a for a in args if torch.is_tensor(a)]
    return DataError(
        f"the model/guide pair failed on data of {_describe_inputs(tensors)}: {type(error).__name__}: "
        f"{message.splitlines()[0]}. Pass data of the shape the model expects, (N, *event_shape)."
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _describe_inputs(args) -> str:
    return ", ".join(
        f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')} on {a.device}"
        if torch.is_tensor(a)
        else type(a).__name__
        for a in args
    )


def _param_dtypes(model, guide) -> set[torch.dtype]:
    dtypes = set()
    for fn in (model, guide):
        owner = getattr(fn, "__self__", fn)
        if isinstance(owner, torch.nn.Module):
            dtypes |= {p.dtype for p in owner.parameters()}
    return dtypes


def dtype_error(model, guide, args, error: Exception) -> DataError | None:
    """A :class:`~pyrovae.errors.DataError` naming the data's dtype and the model's, where ``error``
    (raised by the pair on ``args``) is about dtypes; else ``None``."""
    message = str(error)
    if not any(word in message for word in ("dtype", "scalar type")):
        return None
    tensors = [a for a in args if torch.is_tensor(a)]
    params = _param_dtypes(model, guide)
    fix = (
        f"cast the data to the model's dtype ({', '.join(map(_dtype_name, params))}), "
        "e.g. x.float(), or the model to the data's, e.g. vae.double()"
        if params
        else "cast the data to the dtype the model computes in, e.g. x.float()"
    )
    return DataError(
        f"the model/guide pair failed on the data's dtype (data: {_describe_inputs(tensors)}): "
        f"{type(error).__name__}: {message.splitlines()[0]}. Integer images must be floats, e.g. "
        f"x.float(); {fix}"
    )
