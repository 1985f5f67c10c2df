r"""Native kernels for evaluation, with torch as the fallback.

Evaluating a VAE with :math:`K` importance samples spends most of its time in the decoder's
matrix products, and most of the rest in two elementwise functions over the decoder's
activations and output: the softplus :math:`\log(1 + e^{v})` of the hidden layers, and the
Bernoulli log-density :math:`\sum_d x_d \ell_d - \log(1 + e^{\ell_d})` of the logits. Torch
evaluates each in several vectorized passes (``exp``, ``add``, ``log``, ``sum``); the kernels of
the C extension ``pyrovae._kernels`` take one pass, and for the row sums one exponential per
element and one logarithm per 16 (:math:`\sum_d \log(1 + t_d) = \log \prod_d (1 + t_d)`, see
``_kernels.c``). They run on torch's own OpenMP threads.

:func:`mlp_bernoulli_log_prob` goes further for the commonest decoder, an MLP with a Bernoulli
likelihood: it evaluates the whole decoder and the log-density tile by tile of 128 rows, each
tile's layers in the cache of the thread that computes it, with MKL's matrix products (torch's
own copy). :class:`~pyrovae.likelihoods.Decoded` uses it for :class:`~pyrovae.nn.MLPDecoder`.

The extension is built when pyrovae is installed, where a C compiler with OpenMP is available.
Each function here returns ``None`` where it does not apply (the extension is missing, torch has
no MKL, autograd is recording, or the tensor is not a float32 CPU tensor of a layout it reads),
and the caller uses torch. ``PYROVAE_KERNELS=0`` in the environment disables them.

Accuracy: single precision throughout. Each softplus is within 2 units in the last place of
:math:`\max(1, \log(1 + e^{v}))`; where :math:`e^{-|v|} < 2^{-24}` the term
:math:`\log(1 + e^{-|v|})` is rounded as ``log(1 + exp(v))`` rounds it in torch. NaN propagates
(to the element, or to the row's sum).
"""

from __future__ import annotations

import os

import torch  # first: the extension's OpenMP symbols then resolve to torch's runtime
from torch import nn

try:
    from . import _kernels
except ImportError:  # not built: torch does the work
    _kernels = None

__all__ = ["available", "bernoulli_log_prob", "log1p_exp_sum", "mlp_bernoulli_log_prob", "softplus"]


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


def _value_rows(value: torch.Tensor, batch_shape: torch.Size, event: int) -> tuple[torch.Tensor, int] | None:
    """``value`` as float32 rows for the kernels, and how many: one row for all of
    ``batch_shape``, or one per index of its last dim (data points, particles to their left)."""
    if not 1 <= value.dim() <= len(batch_shape) + 1 or value.shape[-1] != event:
        return None
    rows = value.reshape(-1, event)
    if rows.shape[0] != 1 and not (
        len(batch_shape) >= 1 and rows.shape[0] == batch_shape[-1] == value.shape[-2]
    ):
        return None
    return rows.to(torch.float32).contiguous(), rows.shape[0]


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    r""":math:`\sum_d x_d \ell_d - \log(1 + e^{\ell_d})` over the last dim, or ``None``.

    ``value`` broadcasts against ``logits``; the kernel applies where it is one row for all of
    ``logits`` (one data point), or one row per index of the last batch dim of ``logits`` (data
    points, with particles to their left), which covers importance sampling's layouts.
    """
    flat = _rows(logits)
    found = None if flat is None else _value_rows(value, logits.shape[:-1], logits.shape[-1])
    if found is None:
        return None
    rows, vrows = found
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


def _activation_code(module: nn.Module) -> int | None:
    """The kernel's code of an activation between layers: 1 softplus (``beta=1``), 2 ReLU."""
    if isinstance(module, nn.Softplus):
        return 1 if module.beta == 1 else None
    return 2 if isinstance(module, nn.ReLU) else None


def _mlp_layers(mlp: nn.Module) -> list[tuple[nn.Linear, int]] | None:
    """The ``(linear, activation code)`` pairs of a :class:`~torch.nn.Sequential` of
    :class:`~torch.nn.Linear` layers with at most one softplus or ReLU after each but the last
    (0: none), with float32 CPU parameters; ``None`` for any other module."""
    if not isinstance(mlp, nn.Sequential):
        return None
    layers: list[tuple[nn.Linear, int]] = []
    for m in mlp:
        if isinstance(m, nn.Identity):
            continue
        if isinstance(m, nn.Linear):
            if m.weight.dtype != torch.float32 or m.weight.device.type != "cpu":
                return None
            if layers and layers[-1][0].out_features != m.in_features:  # torch will say why
                return None
            layers.append((m, 0))
            continue
        code = _activation_code(m)
        if code is None or not layers or layers[-1][1] != 0:
            return None
        layers[-1] = (layers[-1][0], code)
    if not layers or layers[-1][1] != 0:
        return None
    return layers


def mlp_bernoulli_log_prob(mlp: nn.Module, z: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    r""":math:`\sum_d x_d \ell_d - \log(1 + e^{\ell_d})` with :math:`\ell = \mathrm{mlp}(z)`,
    over the last dim, or ``None``.

    The whole decoder and log-density in one call, tile by tile of 128 rows of ``z``: no layer's
    output is stored beyond a tile, and each thread keeps its tiles in its own cache. Applies to
    an :class:`~torch.nn.Sequential` of :class:`~torch.nn.Linear` layers with softplus or ReLU
    between them, with float32 CPU parameters, where torch was built with MKL (the matrix
    products are MKL's); ``value`` as for :func:`bernoulli_log_prob`.
    """
    layers = _mlp_layers(mlp)
    flat = _rows(z)
    if layers is None or flat is None or not _kernels.blas_ready() or torch.is_grad_enabled():
        return None
    first, last = layers[0][0], layers[-1][0]
    if flat.shape[1] != first.in_features:
        return None
    found = _value_rows(value, z.shape[:-1], last.out_features)
    if found is None:
        return None
    rows, vrows = found
    params = []  # kept alive through the call
    for linear, act in layers:
        weight = linear.weight.detach().contiguous()
        bias = linear.bias.detach() if linear.bias is not None else weight.new_zeros(linear.out_features)
        params.append((weight, bias.contiguous(), act))
    out = flat.new_empty(flat.shape[0])
    _kernels.mlp_bernoulli(
        flat.data_ptr(),
        flat.shape[0],
        flat.shape[1],
        flat.stride(0),
        [(w.data_ptr(), b.data_ptr(), w.shape[0], w.shape[1], act) for w, b, act in params],
        rows.data_ptr(),
        vrows,
        rows.stride(0),
        out.data_ptr(),
    )
    return out.view(z.shape[:-1])


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
