"""The one-call GPU check runs end to end on CPU (``--dry-run``): every stage reports,
the summary is written, and the interpreter's kernels match the reference in it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "bench.gpu_check", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_dry_run_reports_every_stage(tmp_path):
    out = tmp_path / "check"
    proc = _run("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stages"]) == ["a", "b", "c", "d"]
    for key, stage in summary["stages"].items():
        assert stage["status"] == "done", (key, stage)
        assert stage["records"] > 0, key
        assert json.loads((out / f"stage_{key}.json").read_text())["done"]
    records = summary["details"]["a"]["records"]
    correctness = [r for r in records if r["what"] == "correctness"]
    assert {r["op"] for r in correctness} == {"instance_modulation", "instance_avg_pool", "instance_conv2d"}
    assert all(r["ok"] for r in correctness), [r for r in correctness if not r["ok"]]
    peaks = next(r for r in summary["details"]["c"]["records"] if r["what"] == "peaks")
    assert peaks["ok"] and peaks["fp32_flops"] > 0 and peaks["copy_bytes_per_s"] > 0  # measured before the ops
    assert "256x256" in peaks["method"] and "4 MB copy" in peaks["method"]  # the dry run's sizes, said as run
    model = summary["details"]["d"]["records"]
    assert {r["what"] for r in model} >= {"G inference B=1", "train step B=2"}
    assert all(r["ok"] for r in model), [r for r in model if not r["ok"]]
    collected = next(r for r in records if r["what"] == "pytest")
    assert collected["ok"], collected["tail"]
    text = (out / "summary.md").read_text()
    assert "Dry run on CPU" in text and "## d: model" in text
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU this would run the whole check")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    proc = _run("--out", str(tmp_path / "x"), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_dry_run_peaks_without_bf16_skip_it_with_the_reason(tmp_path):
    """The peak stage on a CPU marked as having no bfloat16 arithmetic (``INADE_NO_BF16=1``): the
    float32 and copy peaks are measured, the bfloat16 kernels are not run, and the record says why."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(INADE_NO_BF16="1", TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(tmp_path), "--stage", "c",
                           "--mode", "dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = json.loads((tmp_path / "stage_c.json").read_text())
    assert stage["done"]
    peaks = next(r for r in stage["records"] if r["what"] == "peaks")
    assert peaks["ok"] and peaks["fp32_flops"] > 0 and peaks["copy_bytes_per_s"] > 0
    assert not any("bf16" in k and k.endswith("_flops") for k in peaks), peaks
    assert peaks["bf16_skipped"].startswith("bf16 skipped: INADE_NO_BF16 is set")
    assert "in fp32 " in peaks["method"] and "bf16" not in peaks["method"]
