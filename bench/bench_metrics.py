"""Speed of the evaluation: Inception features, the Fréchet distance, LPIPS, and a whole FID.

    python -m bench.bench_metrics                 # features, distance, LPIPS; FID of 1,000 vs 1,000 at 256x256
    python -m bench.bench_metrics --fid_images 100 --skip_sqrtm   # a shorter run

Random weights in the real files' layout (:mod:`inade.metrics.testing`): the speed of
a network does not depend on its values. Rows:

* ``inception``: images/s of :func:`inade.metrics.inception_features` on 256×256 uint8
  images (resized to 299 inside), batch 16, float32 and bfloat16 autocast (CPU);
* ``frechet``: one Fréchet distance at D = 2048 with ``sqrtm`` (pytorch-fid's) and ``eigh``;
* ``lpips``: image pairs/s of LPIPS-Alex at 256×256;
* ``fid``: the full FID of two folders of ``--fid_images`` PNGs at 256×256 each
  (reading, features of both, statistics, the distance), seconds.

The machine's load average is recorded with each row: on a shared machine the
figures are only as good as that load.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import interruptible, markdown_table, write_results
from inade.metrics import LPIPS, FIDInceptionV3, fid, frechet_distance, inception_features, statistics
from inade.metrics import testing as mt


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random uint8 images ``[n, 3, size, size]`` (upsampled noise, so PNGs compress as photos do)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    x = x + 0.1 * torch.rand(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().byte()


def bench_inception(net, batch: int, repeat: int) -> list[dict]:
    rows = []
    x = _images(batch, 256, 0)
    from bench.common import bf16_supported  # noqa: PLC0415

    bf16_ok, why = bf16_supported(torch.device("cpu"))
    for name, dtype in (("float32", None), ("bfloat16 autocast", torch.bfloat16)):
        if dtype is not None and not bf16_ok:  # minutes without bf16 arithmetic: skipped, with the reason
            rows.append({"row": "inception", "dtype": name, "batch": batch, "size": "256->299", "skipped": why})
            return rows
        s = _timed(lambda: inception_features(x, net, batch_size=batch, autocast_dtype=dtype), repeat)
        rows.append({"row": "inception", "dtype": name, "batch": batch, "size": "256->299",
                     "images_per_s": batch / s, "load": _load()})
    a = inception_features(x, net, batch_size=batch)
    b = inception_features(x, net, batch_size=batch, autocast_dtype=torch.bfloat16)
    rows[-1]["max_rel_feature_diff"] = float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
    return rows


def bench_frechet(skip_sqrtm: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    f1, f2 = rng.standard_normal((3000, 2048)), rng.standard_normal((3000, 2048)) + 0.1
    s1, s2 = statistics(f1), statistics(f2)
    rows = []
    values = {}
    for method in (("eigh",) if skip_sqrtm else ("sqrtm", "eigh")):
        t = time.perf_counter()
        values[method] = frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma, method=method)
        rows.append({"row": "frechet", "method": method, "dims": 2048, "seconds": time.perf_counter() - t,
                     "value": values[method], "load": _load()})
    return rows


def bench_lpips(repeat: int) -> dict:
    lp = LPIPS("alex", pretrained=False)
    a = _images(4, 256, 1).float() / 127.5 - 1
    b = _images(4, 256, 2).float() / 127.5 - 1
    s = _timed(lambda: lp(a, b), repeat)
    return {"row": "lpips", "dtype": "float32", "batch": 4, "size": "256", "pairs_per_s": 4 / s, "load": _load()}


def bench_fid(net, n: int, method: str) -> dict:
    from inade.data import write_image  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as d:
        folders = [Path(d) / "real", Path(d) / "fake"]
        for k, f in enumerate(folders):
            imgs = _images(n, 256, 10 + k)
            for i in range(n):
                write_image(f / f"{i:05d}.png", imgs[i].permute(1, 2, 0).numpy())
        load0 = _load()
        t = time.perf_counter()
        value = fid(folders[0], folders[1], net=net, batch_size=50, method=method)
        seconds = time.perf_counter() - t
    return {"row": "fid", "images": f"{n} vs {n}", "size": "256", "method": method, "seconds": seconds,
            "value": value, "load": f"{load0} -> {_load()}"}


@interruptible
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--fid_images", type=int, default=1000, help="images per folder of the full FID (0: skip)")
    p.add_argument("--fid_method", default="sqrtm", choices=("sqrtm", "eigh"))
    p.add_argument("--skip_sqrtm", action="store_true", help="time only the eigh route of the distance")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    net = FIDInceptionV3()
    net.load_state_dict(mt.inception_state(), strict=False)
    rows = bench_inception(net, args.batch, args.repeat)
    rows += bench_frechet(args.skip_sqrtm)
    rows.append(bench_lpips(args.repeat))
    if args.fid_images:
        rows.append(bench_fid(net, args.fid_images, args.fid_method))
    cols = ["row", "dtype", "method", "batch", "images", "images_per_s", "pairs_per_s", "seconds", "value", "load",
            "skipped"]
    print(markdown_table(rows, cols))
    if not args.no_write:
        notes = (f"threads {torch.get_num_threads()}; random weights; load = 1-min load average when the row "
                 "finished (shared machine)")
        print("wrote", write_results("metrics", rows, torch.device("cpu"), notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
