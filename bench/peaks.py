"""The machine's own peaks, measured: ``python -m bench.peaks`` writes
``bench/results/<device>/peaks.json`` — float32 and bfloat16 FLOP/s of a large
``torch.mm`` and bytes/s of a large copy (CUDA events on GPU), with the machine and its
load. ``python -m bench.report`` states the op benchmarks against the copy peak and the
model figures against the FLOP peaks (:func:`bench.common.measure_peaks`)."""
from __future__ import annotations

import json
import sys

from bench import common


@common.interruptible
def main(argv=None) -> int:
    device = common.default_device()
    peaks = common.measure_peaks(device)
    path = common.RESULTS / common.device_name(device) / "peaks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from inade.utils.files import write_text_atomic  # noqa: PLC0415

    write_text_atomic(path, json.dumps({"machine": common.machine_info(device), "peaks": peaks}, indent=1) + "\n")
    bf16 = f"bf16 {peaks['bf16_flops'] / 1e9:.1f} GFLOP/s" if "bf16_flops" in peaks else peaks.get("bf16_skipped")
    print(f"fp32 {peaks['fp32_flops'] / 1e9:.1f} GFLOP/s, {bf16}, "
          f"copy {peaks['copy_bytes_per_s'] / 1e9:.1f} GB/s ({peaks['method']})\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
