"""bench/bench_export.py's method with a fake process runner: one build, one export per format, one
timing process per path; the exports are reused by a second run with the same options; a failed
export is an error row and its path is not timed; the speed-ups, the sentence naming the fastest
path and the report's table come from the rows. No real timing reaches an assert."""
from __future__ import annotations

import argparse
import json

from bench import bench_export, report


def fake_isolated(times: dict, failing: tuple = ()):
    calls = []

    def isolated(module, spec):
        calls.append(spec)
        if spec["what"] == "build":
            return {"params_M": 1.0}
        if spec["what"] == "export":
            return {"error": "exit 1: boom"} if spec["format"] in failing else {"export_s": 12.0, "file_MB": 3.0}
        t = times[spec["path_name"]]
        return {"min_ms": t, "median_ms": 2 * t, "spread": 0.1, "max_rel_err": 1e-7, "load_before": 1.0}

    return isolated, calls


def options(**kw):
    base = dict(official_code=None, ngf=4, size=64, instances=3, threads=2, warmup=0, calls=1, max_instances=8,
                paths=list(bench_export.PATHS))
    return argparse.Namespace(**{**base, **kw})


def test_each_step_is_its_own_process_and_the_fastest_is_named(tmp_path):
    isolated, calls = fake_isolated({"eager": 100.0, "onnxruntime": 40.0, "pt2": 50.0})
    rows, notes = bench_export.run(options(), tmp_path, isolated=isolated)
    assert [c["what"] for c in calls] == ["build", "export", "export", "time", "time", "time"]
    by = {r["path"]: r for r in rows}
    assert by["onnxruntime"]["x_vs_eager_by_min"] == 2.5 and by["pt2"]["export_s"] == 12.0
    assert notes == ["fastest here: onnxruntime, min 40 ms"]
    again, calls = fake_isolated({"eager": 1.0, "onnxruntime": 1.0, "pt2": 1.0})
    rows, _ = bench_export.run(options(), tmp_path, isolated=again)
    assert [c["what"] for c in calls] == ["time", "time", "time"]  # same options: built and exported before
    assert {r["path"]: r.get("export_s") for r in rows} == {"eager": None, "onnxruntime": 12.0, "pt2": 12.0}
    changed, calls = fake_isolated({"eager": 1.0, "onnxruntime": 1.0, "pt2": 1.0})
    bench_export.run(options(ngf=8), tmp_path, isolated=changed)
    assert [c["what"] for c in calls][:3] == ["build", "export", "export"]  # other options: built again


def test_a_failed_export_is_an_error_row_and_is_not_timed(tmp_path):
    isolated, calls = fake_isolated({"eager": 100.0, "onnxruntime": 40.0}, failing=("pt2",))
    rows, notes = bench_export.run(options(), tmp_path / "work", isolated=isolated)
    assert [c.get("path_name") for c in calls if c["what"] == "time"] == ["eager", "onnxruntime"]
    assert {r["path"]: r.get("error") for r in rows}["pt2"] == "export failed: exit 1: boom"
    (tmp_path / "cpu-2core").mkdir()
    (tmp_path / "cpu-2core" / "export.json").write_text(json.dumps({"rows": rows, "notes": notes[0]}))
    text = report.t_export(tmp_path)
    assert "| onnxruntime | 40 ms | 80 ms | 2.50× |" in text and "export failed" in text and notes[0] in text
