"""bench.breakdown sorts profiler events into groups and floors; bench.neighbours runs each cell
with its own OpenMP settings; the report makes their tables (fake events, fake workers)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bench import breakdown, neighbours, report


def ev(name, self_us, total_us=None, parent=None, shapes=()):
    return SimpleNamespace(name=name, self_cpu_time_total=self_us, cpu_time_total=total_us or self_us,
                           cpu_parent=parent, input_shapes=list(shapes))


@pytest.mark.parametrize(("name", "group"), [
    ("aten::mkldnn_convolution", "dense"), ("aten::convolution_backward", "dense"), ("aten::addmm", "dense"),
    ("aten::mm", "dense"), ("aten::im2col", "dense"), ("aten::col2im", "dense"),
    ("inade::instance_modulation_forward", "instance_modulation"),
    ("inade::instance_avg_pool_backward", "instance_avg_pool"), ("inade::instance_conv2d_forward", "instance_conv2d"),
    ("inade::instance_classes", "other"), ("aten::leaky_relu_", "elementwise"), ("aten::_foreach_add_", "elementwise"),
    ("aten::sum", "elementwise"), ("aten::copy_", "layout"), ("aten::contiguous", "layout"), ("aten::to", "layout"),
    ("aten::empty", "allocation"), ("aten::zero_", "allocation"), ("aten::view", "other"),
    ("autograd::engine::evaluate_function: MulBackward0", "other"), ("Optimizer.step#Adam.step", "other"),
])
def test_group_of_names_every_kind_of_event(name, group):
    assert breakdown.group_of(name) == group


def test_an_upsampling_copy_is_elementwise_not_a_layout_conversion():
    # upsample_nearest2x copies a [B, C, H, 2, W, 2] broadcast view: a pass the network needs
    assert breakdown.group_of("aten::copy_", [[1, 8, 4, 2, 4, 2], [1, 8, 4, 2, 4, 2]]) == "elementwise"
    assert breakdown.group_of("aten::copy_", [[1, 8, 4, 4], [1, 8, 4, 4]]) == "layout"


def test_attribute_counts_our_ops_whole_and_the_rest_by_self_time():
    mod = ev("inade::instance_modulation_forward", 100, 300, shapes=[[1, 2, 4, 4], [1, 4, 4]])
    inner = ev("aten::empty", 200, parent=mod)  # inside our op: counted with it, not as allocation
    events = [mod, inner, ev("aten::mkldnn_convolution", 1000), ev("aten::add", 50, shapes=[[1, 2, 4, 4], [1, 2, 4, 4]]),
              ev("aten::empty", 5), ev("aten::view", 1)]
    out = breakdown.attribute(events, wall_us=2000)
    assert out["instance_modulation"]["us"] == 300 and out["allocation"]["us"] == 5
    assert out["dense"]["us"] == 1000 and out["elementwise"]["us"] == 50
    assert out["other"]["us"] == 1 + (2000 - 1356)  # views, and the wall time no event accounts for
    assert out["elementwise"]["bytes"] == 4 * (32 + 32 + 32)  # two inputs read, one output written
    assert out["instance_modulation"]["bytes"] == 4 * (32 + 16 + 32)


def test_rows_set_compute_against_flops_and_memory_against_bytes():
    result = {"profiled_ms": 10.0, "dense_flops": 1e9, "op_flops": {"instance_conv2d": 0},
              "groups": {g: {"ms": 0.0, "bytes": 0, "events": 0} for g in breakdown.GROUPS}}
    result["groups"]["dense"] = {"ms": 5.0, "bytes": 0, "events": 3}
    result["groups"]["layout"] = {"ms": 2.0, "bytes": 10**7, "events": 3}
    rows = {r["group"]: r for r in breakdown.rows_of("G inference", result, {"fp32_flops": 4e11,
                                                                             "copy_bytes_per_s": 1e10})}
    assert rows["dense"]["fraction"] == pytest.approx(1e9 / 5e-3 / 4e11) and rows["dense"]["share"] == 0.5
    assert rows["layout"]["fraction"] == pytest.approx(1e7 / 2e-3 / 1e10) and rows["layout"]["kind"] == "memory"
    assert rows["allocation"]["kind"] == "overhead" and "fraction" not in rows["allocation"]


def test_the_report_makes_the_breakdown_table(tmp_path):
    rows = [{"call": "G inference", "group": g, "ms": 1.0 + i, "share": 0.1, "kind": "memory", "fraction": 0.5}
            for i, g in enumerate(breakdown.GROUPS)]
    doc = {"rows": rows, "calls": [{"call": "G inference", "profiled_ms": 40.0, "min_ms": 30.0, "median_ms": 31.0,
                                    "spread": 0.05, "flops": 2e10, "flop_fraction": 0.75}],
           "peaks": {"fp32_flops": 1.7e11, "copy_bytes_per_s": 2e10}, "cpu": {"cpu_model": "AMD EPYC X",
           "cpu_capability": "AVX2", "cpu_bf16": False}, "machine": {"threads": 2}, "notes": "the method"}
    (tmp_path / report.DEVICE).mkdir()
    (tmp_path / report.DEVICE / "breakdown.json").write_text(json.dumps(doc))
    text = report.t_breakdown(tmp_path)
    assert "| `instance_modulation` (the norms) | 2 ms (10 %) | 50 % of copy peak |" in text
    assert "**75 %** (20 GFLOP)" in text and "30 ms / 31 ms (5 %)" in text
    assert "AMD EPYC X (AVX2, no bf16 arithmetic)" in text and "170 GFLOP/s float32" in text


def test_neighbours_cells_run_with_their_own_omp_settings(monkeypatch):
    seen = []

    def fake(module, spec, run):
        seen.append((spec["threads"], run.keywords["env"].get("OMP_WAIT_POLICY")))
        return {"min_ms": 100.0 * (1 + spec["threads"]), "median_ms": 1.0, "spread": 0.0}

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the parent's own setting reaches no cell
    monkeypatch.setattr(neighbours, "start_neighbours", lambda n: [])
    base = {"threads": 2}
    rows = [neighbours.cell(base, 0, s, isolated=fake) for s in ("spin", "passive", "1 thread")]
    assert seen == [(2, None), (2, "PASSIVE"), (1, "PASSIVE")]
    rows = neighbours.add_ratios(rows)
    assert rows[2]["speedup_vs_spin"] == pytest.approx(1.5) and rows[0]["x_vs_alone"] == 1.0


def test_neighbours_keep_each_cells_fastest_round():
    a = [{"neighbours": 0, "setting": "spin", "min_ms": 5.0}, {"neighbours": 1, "setting": "spin", "min_ms": 9.0}]
    b = [{"neighbours": 0, "setting": "spin", "min_ms": 6.0}, {"neighbours": 1, "setting": "spin", "min_ms": 7.0}]
    assert [r["min_ms"] for r in neighbours.fastest([a, b])] == [5.0, 7.0]


def test_the_report_makes_the_neighbours_table(tmp_path):
    rows = [{"neighbours": n, "setting": s, "label": neighbours.SETTINGS[s][0], "min_ms": 100.0 * (1 + n) * k,
             "median_ms": 110.0 * (1 + n) * k, "load_before": 1.0, "load_after": 2.0,
             **({"neighbour_Mloops_per_s": 20.0} if n else {})}
            for n in (0, 2) for s, k in (("spin", 2), ("passive", 1))]
    (tmp_path / report.DEVICE).mkdir()
    (tmp_path / report.DEVICE / "neighbours.json").write_text(json.dumps(
        {"rows": neighbours.add_ratios(rows), "notes": "the method", "machine": {"processor": "x86_64"}}))
    text = report.t_neighbours(tmp_path)
    assert "| busy neighbours | gomp default (spin, then sleep) | OMP_WAIT_POLICY=PASSIVE |" in text
    assert "| 2 | 600 ms (median 660 ms); 3.00× alone; neighbours 20 M loops/s; load 1.0/2.0 | 300 ms" in text
    assert "2.00× vs default" in text and "the method." in text
