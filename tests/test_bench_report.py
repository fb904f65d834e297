"""bench/report.py: the figures in README.md and docs/PERFORMANCE.md are the committed JSON's."""
from __future__ import annotations

import json

import pytest

from bench import __main__ as bench_main
from bench import report


def test_the_docs_tables_equal_the_committed_json():
    assert report.stale() == [], "run python -m bench.report"
    for path in report.DOCS:
        assert "<!-- bench:table " in path.read_text(), path


def _results(tmp_path, rows, peaks=None, run_peaks=None):
    d = tmp_path / "results" / report.DEVICE
    d.mkdir(parents=True)
    (d / "train_step.json").write_text(json.dumps({"machine": {}, "notes": "fake run", "rows": rows,
                                                   "peaks": run_peaks or {}}))
    if peaks:
        (d / "peaks.json").write_text(json.dumps({"peaks": peaks, "machine": {
            "processor": "x86_64", "threads": 2, "torch": "2.13", "date": "2026-12-06", "loadavg": [1.0, 1, 1]}}))
    return tmp_path / "results"


ROWS = [
    {"path": "public code", "precision": "fp32", "batch": 1, "min_ms": 7780.0, "median_ms": 8000.0, "spread": 0.2,
     "images_per_s": 0.1285, "peak_MB": 5000.0, "flop_fraction": 0.2, "load_before": 5.0, "load_after": 6.0},
    {"path": "ours", "precision": "fp32", "batch": 1, "min_ms": 4330.0, "median_ms": 4444.0, "spread": 0.05,
     "images_per_s": 0.2309, "peak_MB": 1950.0, "gflop": 281.0, "x_by_min": 1.7968, "x_by_median": 1.8001,
     "memory_ratio": 0.39, "load_before": 5.5, "load_after": 6.5, "minor_faults_per_call": 140000.0,
     "sys_s_per_call": 0.24},
]


def test_a_table_shows_the_json_numbers(tmp_path):
    results = _results(tmp_path, ROWS, peaks={"fp32_flops": 1.5e11, "bf16_flops": 3e11, "copy_bytes_per_s": 2e10})
    text = "intro 1.23×\n<!-- bench:table train-headline -->\nold\n<!-- bench:end -->\nafter\n"
    out = report.render(text, results)
    assert out.startswith("intro 1.23×\n") and out.endswith("<!-- bench:end -->\nafter\n")  # prose untouched
    line = next(l for l in out.splitlines() if l.startswith("| float32, batch 1"))
    assert "1.80×" in line and "0.231" in line and "0.39" in line and "43 %" in line
    assert "old" not in out
    peaks = report.render("<!-- bench:table peaks -->\n<!-- bench:end -->", results)
    assert "150 GFLOP/s" in peaks and "300 GFLOP/s" in peaks and "20 GB/s" in peaks


def test_a_stale_table_is_found_and_rewritten(tmp_path):
    results = _results(tmp_path, ROWS)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- bench:table train-step -->\n| made up |\n<!-- bench:end -->\n")
    assert report.stale([doc], results) == [f"{doc}: train-step"]
    doc.write_text(report.render(doc.read_text(), results))
    assert report.stale([doc], results) == []
    assert "4.33 s" in doc.read_text() and "7.78 s" in doc.read_text()


def test_an_unknown_table_name_is_an_error(tmp_path):
    with pytest.raises(KeyError, match="unknown bench table 'nope'"):
        report.render("<!-- bench:table nope -->\n<!-- bench:end -->", tmp_path)


def test_python_m_bench_measures_the_peaks_first_and_writes_the_report_last():
    names = [cmd[2] for cmd in bench_main.commands(False, None)]
    assert names[0] == "bench.peaks" and names[-1] == "bench.report"
    train = next(cmd for cmd in bench_main.commands(False, None, "/code") if cmd[2] == "bench.bench_train_step")
    assert train[3:5] == ["--official-code", "/code"]


def test_plots_are_written_beside_the_json(tmp_path):
    pytest.importorskip("matplotlib")
    results = _results(tmp_path, ROWS, peaks={"fp32_flops": 1.5e11, "bf16_flops": 3e11, "copy_bytes_per_s": 2e10})
    written = report.plot_all(results)
    assert {p.name for p in written} >= {"train_step.png", "roofline.png"}
    assert all(p.parent == results / report.DEVICE / "plots" and p.stat().st_size > 1000 for p in written)


def test_fractions_use_the_highest_peak_measured_on_the_machine(tmp_path):
    """A peak measured during a busy spell (the run's own, 5e10) must not inflate the fraction."""
    results = _results(tmp_path, ROWS, peaks={"fp32_flops": 1.5e11, "bf16_flops": 3e11, "copy_bytes_per_s": 2e10},
                       run_peaks={"fp32_flops": 5e10, "bf16_flops": 1e11})
    assert report.best_peaks(results)["fp32_flops"] == 1.5e11
    assert report.flop_fraction(ROWS[1], report.best_peaks(results)) == pytest.approx(281e9 / 4.33 / 1.5e11)
