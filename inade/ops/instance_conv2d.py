"""instance_conv2d: instance-aware partial convolution (the noise-remapping encoder's conv).

    y[b, o, i, j] = Σ_{c, u, v} W[o, c, u, v] · x[b, c, i·s−p+u, j·s−p+v] · m[b, u, v, i, j] + bias[o]

``m`` is 1 where the tap's pixel lies inside the image and has the instance id of
the window's centre pixel ``(i·s − p + k//2, j·s − p + k//2)``, else 0 (inputs and
ids are zero-padded, so a centre outside the image has id 0). ``renorm=True``
multiplies a window's ``m`` by ``k² / (number of taps with m = 1)`` (0 for none),
as partial convolution does; the bias is never rescaled. The op never builds an
``unfold`` of its input: the kernels work on tiles of output pixels and compute
``m`` on the fly from the ids.

Pieces (the same for every op of this package):
    * three ``torch.library`` custom ops (``inade::instance_conv2d_<pass>``) with fake
      kernels: the forward pass, the input gradient and the weight gradient, each
      run by ``_backend.run_pass`` on the chosen backend (the bias gradient is ``Σ dy``);
    * :class:`InstanceConv2dFunction`, the autograd wrapper that wires them;
    * :func:`instance_conv2d`, the public function: input checks, backend choice.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inade.ops import _backend, _checks, reference

# ---------------------------------------------------------------------------
# The passes as custom ops (each runs on the backend _backend.run_pass picks)
# ---------------------------------------------------------------------------


def output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: ``(size + 2p − k) // s + 1``."""
    return (size + 2 * padding - kernel_size) // stride + 1


@torch.library.custom_op("inade::instance_conv2d_forward", mutates_args=())
def instance_conv2d_forward(
    x: Tensor, inst: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int, renorm: bool
) -> Tensor:
    """``y [B, C_out, Ho, Wo]``, dtype and layout (contiguous / channels-last) of ``x``.

    The ids are checked (>= 0; only equality matters) here, in the op's body,
    because only the body sees real values (also under ``torch.compile``).
    """
    _checks.check_ids_in_range(inst, None)
    return _backend.run_pass("conv2d", "forward", x.device, x, inst, weight, bias, stride, padding, renorm)


@instance_conv2d_forward.register_fake
def _(x, inst, weight, bias, stride, padding, renorm):
    k = weight.shape[-1]
    shape = (x.shape[0], weight.shape[0], output_size(x.shape[2], k, stride, padding),
             output_size(x.shape[3], k, stride, padding))
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_checks.memory_format_of(x))


@torch.library.custom_op("inade::instance_conv2d_backward_input", mutates_args=())
def instance_conv2d_backward_input(
    dy: Tensor, x: Tensor, inst: Tensor, weight: Tensor, stride: int, padding: int, renorm: bool
) -> Tensor:
    """Gradient of ``x``: ``[B, C_in, H, W]``, dtype and layout of ``x`` (only ``x``'s shape,
    dtype and layout are read). ``dy: [B, C_out, Ho, Wo]``, contiguous or channels-last."""
    return _backend.run_pass("conv2d", "backward_input", x.device, dy, x, inst, weight, stride, padding, renorm)


@instance_conv2d_backward_input.register_fake
def _(dy, x, inst, weight, stride, padding, renorm):
    return torch.empty_like(x, memory_format=_checks.memory_format_of(x))


@torch.library.custom_op("inade::instance_conv2d_backward_weight", mutates_args=())
def instance_conv2d_backward_weight(
    dy: Tensor, x: Tensor, inst: Tensor, kernel_size: int, stride: int, padding: int, renorm: bool
) -> Tensor:
    """Gradient of the weight: ``[C_out, C_in, k, k]`` contiguous, dtype of ``x`` (float32
    accumulation). ``dy: [B, C_out, Ho, Wo]``, contiguous or channels-last."""
    args = (dy, x, inst, kernel_size, stride, padding, renorm)
    return _backend.run_pass("conv2d", "backward_weight", x.device, *args)


@instance_conv2d_backward_weight.register_fake
def _(dy, x, inst, kernel_size, stride, padding, renorm):
    return x.new_empty(dy.shape[1], x.shape[1], kernel_size, kernel_size)


_backend.forbid_double_backward("instance_conv2d", (
    instance_conv2d_forward, instance_conv2d_backward_input, instance_conv2d_backward_weight,
))


# ---------------------------------------------------------------------------
# Autograd wrapper
# ---------------------------------------------------------------------------


class InstanceConv2dFunction(torch.autograd.Function):
    """Autograd of ``y = conv(x ⊙ m, W) + bias``: the input and weight gradients are the
    two backward ops, the bias gradient is ``Σ dy`` over ``(B, Ho, Wo)``."""

    @staticmethod
    def forward(ctx, x, inst, weight, bias, stride, padding, renorm):
        y = instance_conv2d_forward(x, inst, weight, bias, stride, padding, renorm)
        ctx.save_for_backward(x, inst, weight)
        ctx.conv = (stride, padding, renorm)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, inst, weight = ctx.saved_tensors
        stride, padding, renorm = ctx.conv
        dy = _checks.dense(dy)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = instance_conv2d_backward_input(dy, x, inst, weight, stride, padding, renorm)
        if ctx.needs_input_grad[2]:
            dw = instance_conv2d_backward_weight(dy, x, inst, weight.shape[-1], stride, padding, renorm)
        if ctx.needs_input_grad[3]:
            db = dy.sum((0, 2, 3), dtype=_checks.acc_dtype(dy.dtype)).to(dy.dtype)
        return dx, None, dw, db, None, None, None


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------


def instance_conv2d(
    x: Tensor,
    inst: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: int = 0,
    renorm: bool = False,
) -> Tensor:
    """Instance-aware partial convolution: a tap counts only where its pixel has the
    instance id of the window's centre pixel.

    ``y[b, o, i, j] = Σ_{c,u,v} W[o, c, u, v] · x[b, c, i·s−p+u, j·s−p+v] · m[b, u, v, i, j] + bias[o]``

    Args:
        x: ``[B, C_in, H, W]`` float16 / bfloat16 / float32 / float64, contiguous or
            channels-last (other strides are copied; the output keeps the layout).
        inst: ``[B, H, W]`` integer instance ids at x's resolution. Any id >= 0 is
            valid (only equality matters); negative ids raise.
        weight: ``[C_out, C_in, k, k]`` with odd ``k``, dtype of ``x``.
        bias: ``[C_out]`` or ``None``; added to every output, never rescaled.
        stride: positive int, the same along both axes. The window centre of output
            ``(i, j)`` is input pixel ``(i·s − p + k//2, j·s − p + k//2)``.
        padding: non-negative int; inputs and ids are zero-padded, and taps outside
            the image never count.
        renorm: multiply each window's sum by ``k² / (taps that count)``
            (partial-convolution rescaling; 0 where no tap counts).

    Returns:
        ``[B, C_out, Ho, Wo]`` with ``Ho = (H + 2p − k) // s + 1`` (likewise ``Wo``),
        dtype and layout of ``x``. Accumulation is in float32 (float64 for float64).
    """
    _check_inputs(x, inst, weight, bias, stride, padding, renorm)
    x = _checks.dense(x)
    inst = _checks.index_map_for_kernel(inst)
    weight = weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    if _backend.requested_backend() == "reference":
        _checks.check_ids_in_range(inst, None)
        return reference.instance_conv2d(x, inst, weight, bias, stride, padding, renorm)
    return InstanceConv2dFunction.apply(x, inst, weight, bias, stride, padding, renorm)


def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_inputs(x, inst, weight, bias, stride, padding, renorm) -> None:
    _checks.check_feature_map(x)
    _checks.check_index_map(inst, x)
    _checks.check_float(weight, "weight")
    _checks.check_same_device(x, weight, "weight")
    _checks.check_same_dtype(x, weight, "weight")
    C = x.shape[1]
    if weight.dim() != 4 or weight.shape[1] != C or weight.shape[2] != weight.shape[3] or weight.shape[0] == 0:
        raise ValueError(f"weight must be [C_out, C_in, k, k] = [C_out, {C}, k, k] for x {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)}")
    k = weight.shape[-1]
    if k % 2 == 0:
        raise ValueError(f"weight has an even kernel size {k}: the window needs a centre pixel, use an odd k")
    if bias is not None:
        _checks.check_float(bias, "bias")
        _checks.check_same_device(x, bias, "bias")
        _checks.check_same_dtype(x, bias, "bias")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must be [C_out] = [{weight.shape[0]}], got {tuple(bias.shape)}")
    _check_int(stride, "stride", 1)
    _check_int(padding, "padding", 0)
    if not isinstance(renorm, bool):
        raise TypeError(f"renorm must be a bool, got {type(renorm).__name__}")
    h_out, w_out = (output_size(s, k, stride, padding) for s in x.shape[2:])
    if h_out < 1 or w_out < 1:
        raise ValueError(f"x {tuple(x.shape)} with padding {padding} is smaller than the kernel ({k}x{k})")
