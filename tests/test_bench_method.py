"""The benchmarks' method (bench/common.py, bench/bench_train_step.py), checked with fakes:
fake clocks, fake processes, fake timers. No real timing reaches an assert."""
from __future__ import annotations

import argparse
import contextlib
import io
import json

import pytest
import torch

from bench import bench_train_step, common


class FakeClock:
    """Each reading advances by the next of ``steps`` seconds."""

    def __init__(self, steps):
        self.t, self.steps = 0.0, list(steps)

    def __call__(self):
        self.t += self.steps.pop(0) if self.steps else 0.0
        return self.t


def test_time_calls_times_only_the_calls_after_the_warm_up():
    log = []
    clock = FakeClock([0.0, 2.0, 0.0, 3.0, 0.0, 5.0])  # start, end pairs of three timed calls
    seconds = common.time_calls(lambda: log.append("call"), warmup=2, calls=3, setup=lambda: log.append("setup"),
                                sync=lambda: log.append("sync"), clock=clock)
    assert seconds == [2.0, 3.0, 5.0]
    assert log[:4] == ["setup", "call", "setup", "call"]  # warm-up: untimed, no clock read
    assert log[4:] == ["setup", "sync", "call", "sync"] * 3


@pytest.mark.parametrize("warmup,calls", [(-1, 3), (0, 0)], ids=["negative-warmup", "no-calls"])
def test_time_calls_refuses_a_meaningless_count(warmup, calls):
    with pytest.raises(ValueError, match="warmup"):
        common.time_calls(lambda: None, warmup=warmup, calls=calls)


def test_sample_stats_reports_min_median_and_spread():
    s = common.sample_stats([0.2, 0.1, 0.4, 0.1, 0.3])
    assert s == {"n": 5, "min_ms": 100.0, "median_ms": 200.0, "max_ms": 400.0, "spread": 3.0}


class FakeProcesses:
    """``subprocess.run`` stand-in: records every command line and answers like a worker."""

    def __init__(self, answer):
        self.commands, self.answer = [], answer

    def __call__(self, cmd, **kwargs):
        self.commands.append(cmd)
        spec = json.loads(cmd[cmd.index("--worker") + 1])
        code, out, err = self.answer(spec)
        return argparse.Namespace(returncode=code, stdout=out, stderr=err)


def test_isolated_runs_each_measurement_as_its_own_worker_process():
    fake = FakeProcesses(lambda spec: (0, "noise\n" + common.RESULT_PREFIX + json.dumps({"got": spec["k"]}) + "\n", ""))
    results = [common.isolated("bench.some", {"k": k}, run=fake, python="py") for k in (1, 2)]
    assert [r["got"] for r in results] == [1, 2]
    assert fake.commands[0][:4] == ["py", "-m", "bench.some", "--worker"]
    assert len(fake.commands) == 2  # one process per measurement, never two paths in one
    assert all("load_before" in r and "load_after" in r for r in results)


@pytest.mark.parametrize("code,out,err,expected", [
    (1, "", "Traceback ...\nValueError: bad", "exit 1: ValueError: bad"),
    (0, "no result line\n", "", "exit 0: no result line"),
], ids=["worker-crashed", "worker-printed-no-result"])
def test_isolated_turns_a_failed_worker_into_an_error_entry(code, out, err, expected):
    r = common.isolated("bench.some", {}, run=FakeProcesses(lambda spec: (code, out, err)))
    assert r["error"] == expected


def test_worker_main_prints_what_isolated_reads():
    def run_in_process(cmd, **kwargs):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert common.worker_main(lambda spec: {"twice": 2 * spec["x"]}, cmd[cmd.index("--worker"):])
        return argparse.Namespace(returncode=0, stdout=buf.getvalue(), stderr="")

    assert common.isolated("bench.x", {"x": 21}, run=run_in_process)["twice"] == 42
    assert common.worker_main(lambda spec: {}, ["--quick"]) is False


def _row(path, precision, min_ms, median_ms, peak, batch=1):
    return {"call": "step", "path": path, "precision": precision, "batch": batch, "min_ms": min_ms,
            "median_ms": median_ms, "peak_MB": peak, "spread": 0.1}


def test_comparisons_pair_the_same_precision_only():
    rows = [_row("ours", "fp32", 100, 120, 50), _row("base", "fp32", 300, 480, 200),
            _row("ours", "bf16", 50, 60, 40)]  # the base has no bf16 row
    out = common.compare_same_precision(rows, base="base")
    ours32, ours16 = out[0], out[2]
    assert ours32["x_by_min"] == 3.0 and ours32["x_by_median"] == 4.0 and ours32["memory_ratio"] == 0.25
    assert "x_by_min" not in ours16  # never bf16 against fp32 silently
    assert len(out) == 3


def test_a_cross_precision_row_says_so_in_its_name():
    rows = [_row("ours", "bf16", 50, 60, 40), _row("base", "fp32", 300, 480, 200)]
    out = common.compare_same_precision(rows, base="base", cross_precision={"ours": "bf16", "base": "fp32"})
    assert "x_by_min" not in out[0]
    extra = out[-1]
    assert "cross-precision" in extra["call"] and "bf16" in extra["call"] and "fp32" in extra["call"]
    assert extra["x_by_min"] == 6.0


def test_peaks_are_work_over_the_best_time_of_each_kernel():
    calls = []
    kernels = {"mm_fp32": (lambda: calls.append("mm32"), 8e9), "mm_bf16": (lambda: calls.append("mm16"), 8e9),
               "conv_fp32": (lambda: calls.append("conv32"), 8e9), "copy": (lambda: calls.append("copy"), 4e9)}
    times = iter([0.4, 0.2, 0.3,  0.1, 0.2, 0.1,  0.1, 0.4, 0.8,  2.0, 1.0, 4.0])

    def timer(fn):
        fn()
        return next(times)

    peaks = common.measure_peaks(torch.device("cpu"), repeats=3, timer=timer, kernels=kernels)
    assert peaks["mm_fp32_flops"] == pytest.approx(4e10) and peaks["conv_fp32_flops"] == pytest.approx(8e10)
    assert peaks["fp32_flops"] == pytest.approx(8e10)  # the faster dense kernel of the precision
    assert peaks["bf16_flops"] == pytest.approx(8e10)
    assert peaks["copy_bytes_per_s"] == pytest.approx(4e9)
    assert calls.count("mm32") == 4  # one warm-up, then the timed repeats


def test_peak_kernels_run_in_their_precision_and_count_their_work():
    k = common.peak_kernels(torch.device("cpu"), n=8, copy_MB=1, conv=(1, 4, 5), bf16=True)
    assert k["mm_fp32"][0]().dtype == torch.float32 and k["mm_bf16"][0]().dtype == torch.bfloat16
    assert k["conv_bf16"][0]().dtype == torch.bfloat16 and k["conv_fp32"][1] == 2 * 1 * 4 * 5 * 5 * 4 * 9
    assert k["mm_fp32"][1] == 2 * 8**3
    assert k["copy"][1] == 2 * 2**20
    assert common.fraction_of_peak(1e9, 0.5, 4e9) == 0.5 and common.fraction_of_peak(1e9, 0.5, None) is None


def test_without_cpu_bf16_the_peaks_skip_bf16_and_say_why(monkeypatch):
    """No bfloat16 kernel runs on a CPU without bf16 arithmetic (minutes each there); the peaks say why."""
    monkeypatch.setenv("INADE_NO_BF16", "1")
    assert set(common.peak_kernels(torch.device("cpu"), n=8, copy_MB=1, conv=(1, 4, 5))) == {
        "mm_fp32", "conv_fp32", "copy"}
    ran = []
    kernels = {name: (lambda name=name: ran.append(name), 1.0) for name in ("mm_fp32", "conv_fp32", "copy")}
    peaks = common.measure_peaks(torch.device("cpu"), repeats=1, timer=lambda fn: (fn(), 0.5)[1], kernels=kernels)
    assert set(ran) == {"mm_fp32", "conv_fp32", "copy"} and "bf16_flops" not in peaks
    assert peaks["fp32_flops"] == 2.0 and peaks["bf16_skipped"].startswith("bf16 skipped: INADE_NO_BF16 is set")
    assert common.bf16_supported(torch.device("cpu"))[0] is False


@pytest.mark.parametrize("b1,b2,budget,expected", [
    (1000, 1500, 1400, 1), (1000, 1500, 1500, 2), (1000, 1500, 3100, 5), (1000, 1000, 9e9, 16),
], ids=["below-B2", "exactly-B2", "B5", "flat-capped"])
def test_budget_batch_is_the_largest_on_the_memory_line(b1, b2, budget, expected):
    assert bench_train_step.budget_batch(b1, b2, budget, limit=16) == expected


def test_train_step_runs_every_row_in_its_own_process_with_the_same_precision_paired(monkeypatch):
    """The parent with a fake worker: peaks, weights and FLOPs first; then per precision the
    public code at batch 1 and 2, whose batch-2 peak becomes the budget, then ours."""
    monkeypatch.setattr("inade.utils.cpu.cpu_has_bf16", lambda: True)  # the bf16 rows run (fake workers)
    specs = []

    def fake(module, spec):
        specs.append(spec)
        if spec["what"] == "peaks":
            return {"peaks": {"fp32_flops": 1e11, "bf16_flops": 2e11, "method": "fake"}}
        if spec["what"] in ("prepare",):
            return {"ok": True}
        if spec["what"] == "flops":
            return {"flops": 1e11}
        public = spec["path_name"] == "public code"
        per_sample = 1000 if public else 400
        if not public and spec["batch"] == 5:  # the line predicts 3000 MB; measured over the budget
            per_sample = 450
        ms = (2000 if public else 1000) * spec["batch"]
        return {"min_ms": ms, "median_ms": ms * 1.1, "spread": 0.2, "peak_MB": 1000 + per_sample * spec["batch"]}

    args = argparse.Namespace(ngf=8, size=32, instances=3, threads=1, official_code="/x", warmup=1, calls=2,
                              budget_calls=1, precisions=["fp32", "bf16"], memory_budget_mb=None,
                              fallback_budget_mb=4096, max_batch=16)
    rows, peaks, notes = bench_train_step.run(args, isolated=fake)
    steps = [s for s in specs if s["what"] == "step"]
    assert [s["what"] for s in specs[:3]] == ["peaks", "prepare", "flops"]
    assert all(s["precision"] in ("fp32", "bf16") for s in steps)
    # public B1, B2 (its B2 peak 3000 MB is the budget), ours B1, B2 and B5 (1400 + 400*4 = 3000 predicted,
    # 3250 measured: over), then B4 (2600) per precision
    assert [(s["path_name"], s["batch"]) for s in steps[:6]] == [
        ("public code", 1), ("public code", 2), ("ours", 1), ("ours", 2), ("ours", 5), ("ours", 4)]
    assert len(steps) == 12
    out = bench_train_step.summarize(rows)
    ours_b1 = next(r for r in out if r["path"] == "ours" and r["batch"] == 1 and r["precision"] == "bf16")
    assert ours_b1["x_by_min"] == 2.0 and ours_b1["flop_fraction"] == pytest.approx(1e11 / 1.0 / 2e11)
    budget = next(r for r in out if r["path"] == "ours" and r.get("budget_batch") and r["precision"] == "fp32")
    assert budget["batch"] == 4 and budget["budget_x_batch"] == 2.0 and budget["peak_MB"] <= 3000
    assert any("3000 MB" in n for n in notes)


def test_model_speed_pairs_bf16_with_bf16_in_separate_processes(monkeypatch):
    from bench import bench_model_speed

    monkeypatch.setattr("inade.utils.cpu.cpu_has_bf16", lambda: True)  # the bf16 rows run (fake workers)
    specs = []

    def fake(module, spec):
        specs.append(spec)
        if spec["what"] == "peaks":
            return {"peaks": {"fp32_flops": 1e11, "bf16_flops": 4e11}}
        if spec["what"] == "flops":
            return {"flops": {c: 1e10 for c in bench_model_speed.CALLS}}
        if spec["what"] == "notes":
            return {"notes": []}
        ms = {"public code": 800.0, "ours": 400.0}[spec["path_name"]] / (2 if "bf16" in spec["call"] else 1)
        return {"min_ms": ms, "median_ms": ms, "spread": 0.0, "peak_MB": 100.0}

    args = argparse.Namespace(ngf=8, size=32, instances=3, threads=1, official_code="/x", warmup=1, calls=2,
                              calls_to_run=["G inference fp32", "G inference bf16"])
    rows, _, _ = bench_model_speed.run(args, isolated=fake)
    timed = [s for s in specs if s["what"] == "time"]
    assert [(s["path_name"], s["call"]) for s in timed] == [
        ("public code", "G inference fp32"), ("ours", "G inference fp32"),
        ("public code", "G inference bf16"), ("ours", "G inference bf16")]
    bf16 = next(r for r in rows if r["path"] == "ours" and r["precision"] == "bf16")
    assert bf16["x_by_min"] == 2.0  # 400 / 200, not 800 / 200 against the public float32
    assert bf16["flop_fraction"] == pytest.approx(1e10 / 0.2 / 4e11)


def test_without_cpu_bf16_the_model_benchmarks_skip_bf16_rows_with_the_reason(monkeypatch, tmp_path):
    """No bf16 worker starts on a CPU without bf16 arithmetic; each skipped row carries the reason
    and the report shows it in the row's place."""
    from bench import bench_model_speed, report

    monkeypatch.setenv("INADE_NO_BF16", "1")
    specs = []

    def fake(module, spec):
        specs.append(spec)
        if spec["what"] == "peaks":
            return {"peaks": {"fp32_flops": 1e11}}
        if spec["what"] == "flops":
            return {"flops": 1e10} if module.endswith("train_step") else {"flops": {}}
        if spec["what"] in ("notes", "prepare"):
            return {"notes": []}
        return {"min_ms": 100.0, "median_ms": 100.0, "spread": 0.0, "peak_MB": 100.0}

    args = argparse.Namespace(ngf=8, size=32, instances=3, threads=1, official_code=None, warmup=1, calls=2,
                              calls_to_run=["G inference fp32", "G inference bf16"])
    rows, _, _ = bench_model_speed.run(args, isolated=fake)
    assert [s["call"] for s in specs if s["what"] == "time"] == ["G inference fp32"] * 2
    skipped = [r for r in rows if r.get("skipped")]
    assert len(skipped) == 1 and skipped[0]["skipped"].startswith("bf16 skipped: INADE_NO_BF16 is set")
    specs.clear()
    args = argparse.Namespace(ngf=8, size=32, instances=3, threads=1, official_code=None, warmup=1, calls=2,
                              budget_calls=1, precisions=["fp32", "bf16"], memory_budget_mb=None,
                              fallback_budget_mb=4096, max_batch=2)
    rows, _, _ = bench_train_step.run(args, isolated=fake)
    assert {s["precision"] for s in specs if s["what"] == "step"} == {"fp32"}
    rows = bench_train_step.summarize(rows)
    assert [r["precision"] for r in rows if r.get("skipped")] == ["bf16"]
    (tmp_path / report.DEVICE).mkdir()
    (tmp_path / report.DEVICE / "train_step.json").write_text(json.dumps({"rows": rows, "notes": ""}))
    assert "| ours | bf16 | 1 | bf16 skipped: INADE_NO_BF16 is set" in report.t_train_step(tmp_path)
