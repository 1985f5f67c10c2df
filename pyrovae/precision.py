r"""The arithmetic precision of training and evaluation: :data:`PRECISIONS`.

- ``"highest"`` (the default): float32 matrix products and convolutions in full float32 on every device.
  torch itself lets cuDNN's convolutions use TF32 by default, and ``torch.set_float32_matmul_precision``
  changes the process's matrix products on CUDA and on the CPU; inside pyrovae's computations, this setting
  decides instead.
- ``"tf32"``: float32 matrix products and convolutions on CUDA in TensorFloat-32, the tensor cores' format
  (inputs rounded to 10 stored mantissa bits, products accumulated in float32; NVIDIA Ampere and later),
  everything else as ``"highest"``. A device without TF32 (the CPU, MPS, older GPUs) computes as
  ``"highest"``.
- ``"bf16"``: the matrix products and convolutions of float32 tensors (:data:`BF16_PRODUCTS`: those of the
  networks) in bfloat16, as :func:`torch.autocast` computes them (inputs rounded to 7 stored mantissa bits,
  the products accumulated in float32 by the hardware, the result rounded to bfloat16), handed on as
  float32; every other operation, in particular the activations, the draws and the log-densities of the
  distributions and every sum over sites, data points and particles, in the tensors' own float32 or
  float64, on every device. Unlike :func:`torch.autocast`, which leaves the products' results in bfloat16
  and the operations after them to a list that differs between devices (on the CPU, ``log``, ``exp`` and
  ``sum`` of a bfloat16 tensor stay in bfloat16), nothing but the products is rounded: a log-density is the
  same function of the networks' outputs as in float32, on the CPU as on a GPU.

What ``"bf16"`` rounds, exactly: a call of one of :data:`BF16_PRODUCTS` made by the model, the guide or the
estimator (``nn.Linear``, ``nn.Conv2d``, ``@``, ``einsum`` ...) whose floating-point operands are all
float32. So a product inside a distribution is rounded too where the distribution computes one in float32
(the draws of a ``MultivariateNormal``, the log-density of a ``LowRankMultivariateNormal``; pyrovae's
mixture priors compute in float64 and are not); a product in float64, or given ``out=``, is not; nor are the
products inside torch's composite modules that call its kernels directly (``nn.LSTM``, ``nn.GRU``,
``nn.MultiheadAttention``), which stay float32. The parameters, their gradients and the optimizer's state
stay float32; the gradient flows back through the rounding, as under autocast.

:func:`using_precision` computes a block at a precision: pyrovae's :class:`~pyrovae.infer.Sweep` wraps every
chunk of an evaluation in it, and :class:`~pyrovae.Trainer` every step. Blocks nest, the innermost deciding.
The matrix-product settings are torch's, for the whole process (``torch.backends.cuda.matmul.fp32_precision``,
cuDNN's and oneDNN's): they are set for the block and put back after it, as
:func:`~pyrovae.devices.using_threads` does for the CPU's threads.

References:

- NVIDIA (2020), "TensorFloat-32 in the A100 GPU Accelerates AI Training, HPC up to 20x".
- D. Kalamkar et al. (2019), "A Study of BFLOAT16 for Deep Learning Training", arXiv:1905.12322.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from pyrovae.errors import ConfigError
from pyrovae.options import DOMAINS, check_option

__all__ = ["BF16_PRODUCTS", "PRECISIONS", "check_precision", "described", "using_precision"]

#: the precisions of training and evaluation (module docstring)
PRECISIONS: tuple[str, ...] = DOMAINS["precision"].choices

#: the products that ``"bf16"`` computes in bfloat16, by function and method: the matrix products and
#: convolutions of torch's autocast list of operations in lower precision, less the recurrent cells
BF16_PRODUCTS = frozenset(
    {
        F.linear,
        F.bilinear,
        F.conv1d,
        F.conv2d,
        F.conv3d,
        F.conv_transpose1d,
        F.conv_transpose2d,
        F.conv_transpose3d,
        F.scaled_dot_product_attention,
        torch.matmul,
        torch.mm,
        torch.bmm,
        torch.mv,
        torch.addmm,
        torch.addbmm,
        torch.baddbmm,
        torch.addmv,
        torch.addr,
        torch.einsum,
        torch.chain_matmul,
        torch.linalg.multi_dot,
        torch.linalg.vecdot,
        torch.Tensor.matmul,
        torch.Tensor.__matmul__,
        torch.Tensor.__rmatmul__,
        torch.Tensor.mm,
        torch.Tensor.bmm,
        torch.Tensor.mv,
        torch.Tensor.addmm,
        torch.Tensor.addbmm,
        torch.Tensor.baddbmm,
        torch.Tensor.addmv,
        torch.Tensor.addr,
    }
)
# torch's settings of float32 matrix products, convolutions and recurrent layers, by device type (the new API:
# torch refuses a mix of it and the old ``allow_tf32`` flags only while both are set, not once these are put
# back)
_SETTINGS = {
    "cuda": (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn),
    "cpu": (torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv, torch.backends.mkldnn.rnn),
}
# whether the innermost block of using_precision rounds products to bfloat16
_ROUNDING = contextvars.ContextVar("pyrovae_bf16_products", default=False)


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` that ``device`` can compute in, else a
    :class:`~pyrovae.errors.ConfigError` that names the option and the fix.

    :param str precision: the precision asked for.
    :param torch.device device: where the computation runs.
    """
    check_option("precision", precision)
    if precision == "bf16" and device.type == "cuda":
        with torch.cuda.device(device):
            supported = torch.cuda.is_bf16_supported(including_emulation=False)
        if not supported:
            raise ConfigError(
                f"precision 'bf16' needs a GPU with bfloat16 arithmetic (NVIDIA Ampere or later), and "
                f"{torch.cuda.get_device_name(device)} has none; use precision='highest' (or 'tf32' on a GPU "
                "that has it)"
            )
    return precision


def described(precision: str) -> str:
    """What a summary adds for ``precision``: nothing for the default, else e.g. ``" (bf16 arithmetic)"``.

    :param str precision: one of :data:`PRECISIONS`.
    """
    return "" if precision == "highest" else f" ({precision} arithmetic)"


@contextlib.contextmanager
def using_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Compute inside the block at ``precision`` (one of :data:`PRECISIONS`, module docstring) on ``device``;
    torch's settings of float32 products on that device are put back after it. Blocks nest: the innermost
    decides.

    :param str precision: ``"highest"``, ``"tf32"`` or ``"bf16"``.
    :param torch.device device: where the block computes.
    """
    value = "tf32" if precision == "tf32" and device.type == "cuda" else "ieee"
    settings = _SETTINGS.get(device.type, ())
    before = [backend.fp32_precision for backend in settings]
    rounding = _ROUNDING.set(precision == "bf16")
    try:
        for backend in settings:
            backend.fp32_precision = value
        with _BFloat16Products() if precision == "bf16" else contextlib.nullcontext():
            yield
    finally:
        for backend, old in zip(settings, before, strict=True):
            backend.fp32_precision = old
        _ROUNDING.reset(rounding)


class _BFloat16Products(TorchFunctionMode):
    """The products of :data:`BF16_PRODUCTS` whose floating-point operands are all float32, computed in
    bfloat16 and handed on in float32, inside a block whose innermost precision is ``"bf16"``; every other
    function as it is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in BF16_PRODUCTS and "out" not in kwargs and _ROUNDING.get():
            floats = [t for t in _tensors((args, kwargs)) if t.is_floating_point()]
            if floats and all(t.dtype == torch.float32 for t in floats):
                args, kwargs = _cast((args, kwargs), torch.float32, torch.bfloat16)
                return _cast(func(*args, **kwargs), torch.bfloat16, torch.float32)
        return func(*args, **kwargs)


def _tensors(value) -> Iterator[torch.Tensor]:
    """The tensors in ``value``, a tensor or a (nested) tuple, list or dict of arguments."""
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _cast(value, source: torch.dtype, target: torch.dtype):
    """``value`` (as for :func:`_tensors`) with its tensors of dtype ``source`` converted to ``target``."""
    if torch.is_tensor(value):
        return value.to(target) if value.dtype == source else value
    if isinstance(value, list | tuple):
        return type(value)(_cast(item, source, target) for item in value)
    if isinstance(value, dict):
        return {key: _cast(item, source, target) for key, item in value.items()}
    return value
