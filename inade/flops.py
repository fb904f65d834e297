"""FLOP formulas of the ``inade::`` custom ops for ``torch.utils.flop_counter``, and a
counter that reports them beside the convolutions and linear layers.

``torch.utils.flop_counter.FlopCounterMode`` counts matrix products and
convolutions (FLOPs = 2 · MACs) but knows nothing of our custom ops; the formulas
below give each one the arithmetic its kernels do, per element:

* ``instance_modulation_stats``: Σx and Σx² per channel — 3 FLOPs (add, multiply, add).
* ``instance_modulation_apply``: ``(x − mean)·invstd·γ + β`` — 4 FLOPs.
* ``instance_modulation_backward_reduce``: x̂ (2), ``dy·x̂`` (1) and two sums (2) — 5 FLOPs.
* ``instance_modulation_backward_dx``: x̂ (2), ``dy·γ`` (1), two subtractions, one multiply,
  one scale — 6 FLOPs (3 without batch statistics: ``dy·γ·invstd``).
* ``instance_modulation_forward`` and ``instance_modulation_backward`` (the training passes
  in one): the sums of the passes they fuse — 7 and 11 FLOPs.
* ``instance_avg_pool_forward``: one add per input element, one divide per output.
* ``instance_avg_pool_backward``: one divide per output element.
* ``instance_classes`` and ``instance_parts`` (the model's instance → class tables and input checks): 0.
* ``instance_conv2d_forward`` (instance-aware convolution): the dense convolution's
  ``2·MACs`` plus one compare per tap and output pixel (the instance test);
  ``conv2d_backward_input`` and ``conv2d_backward_weight``: ``2·MACs`` each.

Elementwise work outside our ops (activations, upsampling, additions) is not
counted, as in ``FlopCounterMode`` itself.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula


def _numel(shape) -> int:
    return math.prod(shape)


def _modulation_stats(x, *args, out_shape=None, **kwargs) -> int:
    return 3 * _numel(x)


def _modulation_apply(x, *args, out_shape=None, **kwargs) -> int:
    return 4 * _numel(x)


def _modulation_backward_reduce(dy, x, *args, out_shape=None, **kwargs) -> int:
    return 5 * _numel(x)


def _modulation_backward_dx(dy, x, inst, gamma, mean, invstd, mean_dxhat, mean_dxhat_xhat, batch_stats, *args,
                            out_shape=None, **kwargs) -> int:
    return (6 if batch_stats else 3) * _numel(x)


def _modulation_forward(x, *args, out_shape=None, **kwargs) -> int:
    return _modulation_stats(x) + _modulation_apply(x)


def _modulation_backward(dy, x, *args, out_shape=None, **kwargs) -> int:
    return _modulation_backward_reduce(dy, x) + 6 * _numel(x)


def _avg_pool_forward(x, inst, num_instances, *args, out_shape=None, **kwargs) -> int:
    return _numel(x) + x[0] * num_instances * x[1]


def _avg_pool_backward(dy, inst, *args, out_shape=None, **kwargs) -> int:
    return dy[0] * dy[2] * inst[1] * inst[2]


def conv_macs(x_shape, weight_shape, out_shape) -> int:
    """Multiply-accumulates of a dense convolution producing ``out_shape``."""
    B, _, Ho, Wo = out_shape
    Co, Ci, kh, kw = weight_shape
    return B * Co * Ho * Wo * Ci * kh * kw


def _conv2d_forward(x, inst, weight, *args, out_shape=None, **kwargs) -> int:
    return 2 * conv_macs(x, weight, out_shape) + out_shape[0] * out_shape[2] * out_shape[3] * weight[2] * weight[3]


def _conv2d_backward_input(dy, x, inst, weight, *args, out_shape=None, **kwargs) -> int:
    return 2 * conv_macs(x, weight, dy)


def _conv2d_backward_weight(dy, x, inst, kernel_size, *args, out_shape=None, **kwargs) -> int:
    return 2 * conv_macs(x, (dy[1], x[1], kernel_size, kernel_size), dy)


# op name -> formula; an op that does not exist (yet) is skipped.
FORMULAS = {
    "instance_modulation_stats": _modulation_stats,
    "instance_modulation_apply": _modulation_apply,
    "instance_modulation_backward_reduce": _modulation_backward_reduce,
    "instance_modulation_backward_dx": _modulation_backward_dx,
    "instance_modulation_forward": _modulation_forward,
    "instance_modulation_backward": _modulation_backward,
    "instance_avg_pool_forward": _avg_pool_forward,
    "instance_avg_pool_backward": _avg_pool_backward,
    "instance_conv2d_forward": _conv2d_forward,
    "instance_conv2d_backward_input": _conv2d_backward_input,
    "instance_conv2d_backward_weight": _conv2d_backward_weight,
    # bookkeeping of the model (the class of each instance, input checks): no arithmetic
    "instance_classes": lambda *args, out_shape=None, **kwargs: 0,
    "instance_parts": lambda *args, out_shape=None, **kwargs: 0,
}


def register() -> list[str]:
    """Register every formula whose ``torch.ops.inade.<name>`` exists (idempotent).

    Returns the names of the registered ops.
    """
    import inade.ops  # noqa: F401, PLC0415  (defines the ops)

    done = []
    for name, formula in FORMULAS.items():
        try:
            op = getattr(torch.ops.inade, name)
        except (AttributeError, RuntimeError):
            continue
        if op not in flop_registry:
            register_flop_formula(op)(formula)
        done.append(name)
    return done


class _InadeOpLog(TorchDispatchMode):
    """Records which ``inade::`` ops ran (to name those without a formula)."""

    def __init__(self):
        super().__init__()
        self.seen = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "inade":
            self.seen[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(fn, modules: tuple[str, ...] = ()) -> dict:
    """Run ``fn()`` and count its FLOPs.

    Args:
        fn: the computation (e.g. a model's forward).
        modules: names of submodules (last name component, e.g. ``"fc_noise"``) whose
            FLOPs are also reported apart, summed over every module of that name.

    Returns:
        ``{"conv_linear": FLOPs of convolutions and matrix products (2·MACs),
        "inade_ops": FLOPs of our custom ops, "by_op": {op: FLOPs},
        "by_module": {name: FLOPs}, "uncounted_inade_ops": [names of inade ops that
        ran without a formula]}``.
    """
    registered = set(register())
    log = _InadeOpLog()
    with FlopCounterMode(display=False) as counter, log:
        fn()
    counts = counter.get_flop_counts()
    by_op = {str(op): int(n) for op, n in counts["Global"].items()}
    by_module = {
        name: sum(int(n) for key, ops in counts.items() if key.endswith("." + name) for n in ops.values())
        for name in modules
    }
    ours = sum(n for op, n in by_op.items() if op.startswith("inade."))
    return {
        "conv_linear": sum(by_op.values()) - ours,
        "inade_ops": ours,
        "by_op": by_op,
        "by_module": by_module,
        "uncounted_inade_ops": sorted(set(log.seen) - registered),
    }
