"""What every Triton launcher of this package shares: strides, the split of a
reduction over programs, the accumulator type, the ``tl.dot`` precision policy,
and the one-hot segment sum (a ``@triton.jit`` helper the pooling and modulation
kernels both call).

One rule each:

* **Programs.** A split reduction aims at :data:`PROGRAMS_PER_SM` programs per SM;
  off the GPU (the interpreter) :data:`INTERPRETER_SMS` stands in for the SM count,
  so CPU runs still split and merge (and tests exercise the merge).
* **Accumulation.** float32 for 16-bit and float32 inputs, float64 for float64
  (``tl.dot`` takes float64 operands on sm_80+ and in the interpreter).
* **Dot precision** (``input_precision`` of ``tl.dot``, see :func:`dot_precision`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from inade.ops._checks import acc_dtype

PROGRAMS_PER_SM = 4
INTERPRETER_SMS = 8


def strides_chw(t: torch.Tensor) -> tuple[int, int, int]:
    """``(s_b, s_c, s_hw)`` of a ``[B, C, H, W]`` tensor whose ``(H, W)`` is one axis of stride
    ``s_hw`` (contiguous: ``s_hw = 1``; channels-last: ``s_c = 1``)."""
    return t.stride(0), t.stride(1), t.stride(3)


def strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    """``(s_b, s_c, s_h, s_w)`` of a ``[B, C, H, W]`` tensor."""
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; :data:`INTERPRETER_SMS` off the GPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_SMS


def split_reduction(tiles: int, other_programs: int, device: torch.device) -> tuple[int, int]:
    """``(chunks, tiles per chunk)`` for a reduction over ``tiles`` tiles split over programs.

    ``other_programs`` is how many programs run per chunk already (batch × channel
    blocks × ...); the chunks bring the total to about ``PROGRAMS_PER_SM`` per SM,
    never to chunks of no tile.
    """
    target = max(1, (PROGRAMS_PER_SM * sm_count(device)) // max(1, other_programs))
    per_chunk = triton.cdiv(tiles, max(1, min(tiles, target)))
    return triton.cdiv(tiles, per_chunk), per_chunk


def acc_type(dtype: torch.dtype):
    """The Triton accumulator type for inputs of ``dtype`` (see ``inade.ops._checks.acc_dtype``)."""
    return tl.float64 if acc_dtype(dtype) == torch.float64 else tl.float32


def dot_precision(operand_dtype: torch.dtype, device: torch.device, exact_in_tf32: bool = False) -> str:
    """``input_precision`` of ``tl.dot`` for operands of ``operand_dtype`` (the dtype fed to the dot).

    * off the GPU (interpreter), or operands that are not float32: ``"ieee"`` (the
      only one there, or one the dot ignores);
    * float32 operands whose values TF32 holds exactly (``exact_in_tf32``: bfloat16
      values, 8 mantissa bits of TF32's 10, times a 0/1 map): ``"tf32"``, one pass;
    * other float32 operands: ``"tf32x3"`` (three TF32 passes, float32-accurate) unless
      ``torch.get_float32_matmul_precision()`` allows TF32 (``"high"``/``"medium"``: ``"tf32"``).
    """
    if device.type != "cuda" or operand_dtype != torch.float32:
        return "ieee"
    if exact_in_tf32 or torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "tf32x3"


def upcast(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``tl.dot`` must get bfloat16 operands as float32: in the interpreter it would
    multiply them as their raw 16-bit integers."""
    return dtype == torch.bfloat16 and device.type != "cuda"


@triton.jit
def one_hot_segment_sum(acc, v, ids, lanes, DOT_PRECISION: tl.constexpr):
    """``acc[c, l] + Σ_p v[c, p] · [ids[p] == lanes[l]]``: a tile's sums per instance.

    One matrix product with the tile's one-hot map ``[P, L]`` (in registers, never
    stored), so it runs on tensor cores and needs no atomics. ``v``: ``[BLOCK_C, P]``;
    ``ids``: ``[P]`` (masked pixels carry an id no lane has, e.g. -1); ``lanes``:
    ``[BLOCK_L]`` instance ids; ``acc``: ``[BLOCK_C, BLOCK_L]`` float32 or float64.
    float16 ``v`` multiplies the exact 0/1 map in float16 (float32 accumulation);
    other dtypes go through ``acc``'s dtype.
    """
    hit = ids[:, None] == lanes[None, :]
    if v.dtype == tl.float16:
        return acc + tl.dot(v, hit.to(tl.float16), input_precision=DOT_PRECISION)
    return acc + tl.dot(v.to(acc.dtype), hit.to(acc.dtype), input_precision=DOT_PRECISION)


@triton.jit
def pixel_program(C, HW, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """The tile of a map ``[B, C, HW]`` an elementwise program owns, grid ``(HW blocks, C blocks, B)``:
    ``(b, c, hw, c_mask, hw_mask, mask)`` with ``b`` and ``hw`` int64, ``mask`` ``[BLOCK_C, BLOCK_HW]``."""
    pid_hw, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c_mask, hw_mask = c < C, hw < HW
    return b.to(tl.int64), c, hw.to(tl.int64), c_mask, hw_mask, c_mask[:, None] & hw_mask[None, :]


@triton.jit
def segment_program(C, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    """What a segment-sum program owns, grid ``(C blocks · L blocks, B, chunks)``:
    ``(b, chunk, pid_c, c, c_mask, lanes)`` (``b`` int64; ``lanes``: its ``BLOCK_L`` instance ids)."""
    pid, b, chunk = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_c_blocks = tl.cdiv(C, BLOCK_C)
    pid_c = pid % n_c_blocks
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    lanes = (pid // n_c_blocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    return b.to(tl.int64), chunk, pid_c, c, c < C, lanes


@triton.jit
def chunk_tile(chunk, t, tiles_per_prog, HW, BLOCK_HW: tl.constexpr):
    """Pixels of tile ``t`` of pixel chunk ``chunk``: ``(hw as int64, hw < HW)``."""
    hw = (chunk * tiles_per_prog + t) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    return hw.to(tl.int64), hw < HW


@triton.jit
def offsets_chw(b, c, hw, s_b, s_c, s_hw):
    """Offsets ``[BLOCK_C, BLOCK_HW]`` of channels ``c`` at pixels ``hw`` of image ``b`` in a map
    with strides ``(s_b, s_c, s_hw)`` (int64 arithmetic: ``b`` and ``hw`` are int64)."""
    return b * s_b + c.to(tl.int64)[:, None] * s_c + hw[None, :] * s_hw
