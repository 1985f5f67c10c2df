r"""Native kernels for the elementwise work of evaluation, with torch as the fallback.

Evaluating a VAE with :math:`K` importance samples spends most of its time in the decoder's
matrix products, and most of the rest in two elementwise functions over the decoder's
activations and output: the softplus :math:`\log(1 + e^{v})` of the hidden layers, and the
Bernoulli log-density :math:`\sum_d x_d \ell_d - \log(1 + e^{\ell_d})` of the logits. Torch
evaluates each in several vectorized passes (``exp``, ``add``, ``log``, ``sum``); the kernels of
the C extension ``pyrovae._kernels`` take one pass, and for the row sums one exponential per
element and one logarithm per 16 (:math:`\sum_d \log(1 + t_d) = \log \prod_d (1 + t_d)`, see
``_kernels.c``). They run on torch's own OpenMP threads.

The extension is built when pyrovae is installed, where a C compiler with OpenMP is available.
Each function here returns ``None`` where it does not apply (the extension is missing, or the
tensor is not a float32 CPU tensor of a layout it reads), and the caller uses torch.
``PYROVAE_KERNELS=0`` in the environment disables them.

Accuracy: single precision throughout. Each softplus is within 2 units in the last place of
:math:`\max(1, \log(1 + e^{v}))`; where :math:`e^{-|v|} < 2^{-24}` the term
:math:`\log(1 + e^{-|v|})` is rounded as ``log(1 + exp(v))`` rounds it in torch. NaN propagates
(to the element, or to the row's sum).
"""

from __future__ import annotations

import os

import torch  # first: the extension's OpenMP symbols then resolve to torch's runtime

try:
    from . import _kernels
except ImportError:  # not built: torch does the work
    _kernels = None

__all__ = ["available", "bernoulli_log_prob", "log1p_exp_sum", "softplus"]


def available() -> bool:
    """Whether the native kernels are built and enabled (``PYROVAE_KERNELS`` is not ``0``)."""
    return _kernels is not None and os.environ.get("PYROVAE_KERNELS", "1") != "0"


def _rows(x: torch.Tensor) -> torch.Tensor | None:
    """``x`` as a ``(rows, last dim)`` float32 CPU matrix with unit stride along rows, or
    ``None`` if the kernels do not apply."""
    if not available() or x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() < 1:
        return None
    if x.requires_grad and torch.is_grad_enabled():
        return None
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[1] and flat.stride(1) != 1:
        flat = flat.contiguous()
    return flat


def log1p_exp_sum(x: torch.Tensor) -> torch.Tensor | None:
    r""":math:`\sum_d \log(1 + e^{x_d})` over the last dim of ``x``, or ``None``."""
    flat = _rows(x)
    if flat is None:
        return None
    out = flat.new_empty(flat.shape[0])
    _kernels.softplus_rowsum(flat.data_ptr(), flat.shape[0], flat.shape[1], flat.stride(0), out.data_ptr())
    return out.view(x.shape[:-1])


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    r""":math:`\sum_d x_d \ell_d - \log(1 + e^{\ell_d})` over the last dim, or ``None``.

    ``value`` broadcasts against ``logits``; the kernel applies where it is one row for all of
    ``logits`` (one data point), or one row per index of the last batch dim of ``logits`` (data
    points, with particles to their left), which covers importance sampling's layouts.
    """
    flat = _rows(logits)
    if flat is None or not 1 <= value.dim() <= logits.dim() or value.shape[-1] != logits.shape[-1]:
        return None
    rows = value.reshape(-1, value.shape[-1])
    if rows.shape[0] == 1:
        vrows = 1
    elif logits.dim() >= 2 and rows.shape[0] == logits.shape[-2] == value.shape[-2]:
        vrows = rows.shape[0]
    else:
        return None
    rows = rows.to(torch.float32).contiguous()
    out = flat.new_empty(flat.shape[0])
    _kernels.bernoulli_rowsum(
        flat.data_ptr(),
        flat.shape[0],
        flat.shape[1],
        flat.stride(0),
        rows.data_ptr(),
        vrows,
        rows.stride(0),
        out.data_ptr(),
    )
    return out.view(logits.shape[:-1])


def softplus(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor | None:
    r""":math:`\log(1 + e^{x})` elementwise, into ``out`` if given (``out=x`` for in place), or
    ``None`` (``out`` untouched). ``x`` and ``out`` must be contiguous and of the same shape."""
    if not x.is_contiguous() or _rows(x) is None:
        return None
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        return None
    _kernels.softplus(x.data_ptr(), out.data_ptr(), x.numel())
    return out
