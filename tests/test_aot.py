"""Static checks of the compiled Triton kernels (no GPU needed).

Every kernel launch of the three ops, captured from the public ops (float32 and
bfloat16, contiguous and channels-last) and specialised as a real launch is, is
compiled for sm_80 and sm_90; then: no register spill anywhere, and every
memory-bound kernel moves its feature maps with 16-byte (or wider) accesses.
The full report with occupancy is ``python -m bench.aot_report``.
"""
from __future__ import annotations

import importlib.util

import pytest

from _aot import aot

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


@pytest.fixture(scope="module")
def rows():
    from bench import aot_report  # noqa: PLC0415

    launches = aot.capture(aot.OPS, quick=True)
    return [aot_report.summarise(r) for r in aot.compile_launches(launches, aot.ARCHS, with_usage=True)]


def test_every_op_launches_kernels_that_compile(rows):
    kernels = {r["kernel"].split(".")[0] for r in rows}
    assert kernels == set(aot.OPS)
    errors = [f"{r['kernel']} [{r['case']}, {r['arch']}]: {r['error'][:300]}" for r in rows if "error" in r]
    assert not errors, "\n".join(errors)


def test_no_kernel_spills_registers(rows):
    spills = [f"{r['kernel']} [{r['case']}, {r['arch']}]: {r['spill_bytes']} bytes at {r['registers']} registers"
              for r in rows if r.get("spill_bytes")]
    assert not spills, "\n".join(spills)


def test_memory_bound_kernels_move_feature_maps_in_16_byte_accesses(rows):
    checked = [r for r in rows if "error" not in r and r["memory_bound"] and not r["stencil"]]
    assert checked and all(r["main_loads"] + r["main_stores"] > 0 for r in checked)
    scalar = [f"{r['kernel']} [{r['case']}, {r['arch']}]: loads {r['main_load_bytes_min']} B, "
              f"stores {r['main_store_bytes_min']} B of {r['main_tensors']}" for r in checked if not r["vectorised"]]
    assert not scalar, "\n".join(scalar)


def test_occupancy_follows_cuda_rules():
    from bench.aot_report import h100_occupancy  # noqa: PLC0415

    assert h100_occupancy(32, 8, 0)["occupancy"] == 1.0  # 8 blocks of 8 warps
    assert h100_occupancy(64, 8, 0)["occupancy"] == 0.5  # 2048 registers per warp: 32 warps
    assert h100_occupancy(65, 4, 0)["blocks_per_sm"] == 7  # 2304 per warp: 28 warps, 7 blocks of 4
    low = h100_occupancy(32, 4, 100 * 1024)  # shared memory: 2 blocks of 101 KB
    assert low["blocks_per_sm"] == 2 and low["limited_by"] == "shared memory"
