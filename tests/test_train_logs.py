"""Training logs: ``loss_log.txt`` (the public code's lines), ``metrics.jsonl``, TensorBoard,
``curves.png`` and ``web/index.html``; each step logged once across ``kill -9`` and
``--continue_train``; the page opened in a real headless Chromium; the imports of the trainer,
the FID tracker and ``inade.test`` in a line.

The run: the tiny synthetic model, 12 steps (3 epochs of 4), a log line every step, a grid
every 3 steps, a checkpoint and an FID (a pixel-statistics stand-in for Inception) every
epoch, TensorBoard on. It is killed with SIGKILL just after the line of step 5 (its last
checkpoint is step 4), then resumed to the end.
"""
from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inade.training import logs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--crop_size", "32", "--ngf", "4", "--noise_nc", "4", "--z_dim", "8", "--ndf", "4", "--batchSize", "2",
        "--synthetic_size", "8", "--nThreads", "0", "--no_progress", "--gpu_ids", "-1", "--no_vgg_loss"]
STEPS, KILL_AFTER, SAVED = 12, 5, 4
LAUNCHER = """
import sys, torch
from inade.metrics import train_eval

class PixelFeatures(torch.nn.Module):  # stands in for Inception (no weights file here)
    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

train_eval.load_inception = lambda path, device: PixelFeatures()
from inade.training.trainer import main
sys.exit(main(sys.argv[1:]))
"""


def _record(step: int, **losses) -> dict:
    return {"step": step, "epoch": 1, "iters": 2 * step, "time": 0.125, "img_s": 8.0, "lr_G": 1e-4, "lr_D": 4e-4,
            **losses}


# ---------------------------------------------------------------------------
# lines and files
# ---------------------------------------------------------------------------


def test_lines_are_the_public_format_with_rates_speed_and_step():
    rec = _record(7, GAN=0.5, GAN_Feat=1.25, D_fake=0.75, D_real=1.0)
    assert logs.loss_line(rec) == ("(epoch: 1, iters: 14, time: 0.125) GAN: 0.500 GAN_Feat: 1.250 D_fake: 0.750 "
                                   "D_real: 1.000 lr_G: 1.000e-04 lr_D: 4.000e-04 img/s: 8.0 step: 7")
    assert logs.loss_line(rec, fid=81.5).startswith("(epoch: 1, iters: 14, time: 0.125, FID: 81.500) GAN: 0.500 ")
    # the public visualizer's pattern: "(epoch: %d, iters: %d, time: %.3f) " then "%s: %.3f " per loss
    public = re.match(r"\(epoch: (\d+), iters: (\d+), time: ([\d.]+)\) ((?:\w+: -?[\d.]+ )+)", logs.loss_line(rec))
    assert public and public.group(4).split()[:2] == ["GAN:", "0.500"]
    fid = {"step": 8, "epoch": 2, "FID": 80.0, "best_FID": 90.0}
    assert logs.fid_line(fid) == "(epoch: 2, curr FID: 80.000, previous best FID: 90.000) step: 8"
    assert [logs.line_step(x) for x in (logs.loss_line(rec), logs.fid_line(fid), logs.header_line())] == [7, 8, None]


def test_drop_after_keeps_headers_and_drops_later_and_cut_lines(tmp_path):
    header = logs.header_line()
    lines = [header] + [logs.loss_line(_record(s, GAN=0.1)) for s in (1, 2, 3)]
    (tmp_path / logs.LOSS_LOG).write_text("\n".join(lines) + "\n(epoch: 1, iters: 8, ti")  # cut by a kill
    (tmp_path / logs.METRICS).write_text("".join(json.dumps(_record(s, GAN=0.1)) + "\n" for s in (1, 2, 3)) + '{"st')
    assert logs.drop_after(tmp_path, 2) == 4
    assert (tmp_path / logs.LOSS_LOG).read_text() == "\n".join(lines[:3]) + "\n"
    assert [r["step"] for r in logs.read_metrics(tmp_path)] == [1, 2]
    assert logs.drop_after(tmp_path, 2) == 0  # nothing to drop: the files are not rewritten
    assert not list(tmp_path.glob(".*.tmp"))


def test_without_matplotlib_the_page_is_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "have_matplotlib", lambda: False)
    (tmp_path / "samples").mkdir()
    for s in (3, 6):
        (tmp_path / "samples" / f"step_{s:07d}.png").write_bytes(b"")
    records = [_record(s, GAN=s / 10) for s in range(1, 7)]
    assert logs.draw_curves(tmp_path / logs.CURVES, records) is None and not (tmp_path / logs.CURVES).exists()
    page = logs.write_page(tmp_path, records, name="a<b", upto=5).read_text()
    assert "install matplotlib" in page and 'id="records"' in page and "a&lt;b" in page
    assert "step_0000003.png" in page and "step_0000006.png" not in page  # grids past upto: a stopped run's
    assert "losses at step 3: GAN 0.300" in page


def test_tf_log_without_tensorboard_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(logs.UserError, match=r'^--tf_log needs the tensorboard package, .*: pip install "inade\[logs\]"'):
        logs.TrainingLog("unused", name="x", tf_log=True)


def test_report_redraws_or_names_what_is_missing(tmp_path, capsys):
    from inade.training.report import main

    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such folder"
    (tmp_path / logs.METRICS).write_text("".join(json.dumps(_record(s, GAN=0.1, D_fake=1.0)) + "\n" for s in (1, 2)))
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "web" / "index.html").is_file()
    if logs.have_matplotlib():
        from PIL import Image

        assert Image.open(tmp_path / logs.CURVES).size == (1000, 640)


def test_trainer_fid_tracker_and_test_import_in_a_line():
    """trainer -> metrics.train_eval -> (checkpoint, latents); inade.test never reaches the FID
    tracker, the tracker neither the trainer nor inade.test (lazy imports inside functions count)."""
    def imports(rel):
        tree = ast.parse((ROOT / rel).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    assert "inade.metrics.train_eval" in imports("inade/training/trainer.py")
    assert not imports("inade/metrics/train_eval.py") & {"inade.test", "inade.training.trainer"}
    assert "inade.metrics.train_eval" not in imports("inade/test.py")
    loaded = subprocess.run([sys.executable, "-c", "import sys, inade.metrics.train_eval, inade.test; "
                             "print(sorted(m for m in sys.modules if m in ('inade.training.trainer', "
                             "'inade.metrics.train_eval', 'inade.test')))"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert loaded.stdout.split() == ["['inade.metrics.train_eval',", "'inade.test']"], loaded.stderr


# ---------------------------------------------------------------------------
# a run killed with SIGKILL between two log lines, then resumed
# ---------------------------------------------------------------------------


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / logs.TENSORBOARD), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _loss_lines(folder: Path) -> list[str]:
    return [x for x in (folder / logs.LOSS_LOG).read_text().splitlines() if x.startswith("(epoch:") and "curr FID" not in x]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Run, SIGKILL after the line of step 5, resume; ``(folder, state after the kill, stderr of the resume)``."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("matplotlib")
    from inade.metrics import Statistics, save_statistics

    tmp = tmp_path_factory.mktemp("logs")
    rng = np.random.default_rng(0)
    save_statistics(tmp / "ref.npz", Statistics(rng.random(12), np.eye(12) * 0.01))
    (tmp / "launch.py").write_text(LAUNCHER)
    folder = tmp / "run"
    args = [sys.executable, str(tmp / "launch.py"), *TINY, "--checkpoints_dir", str(tmp), "--name", "run",
            "--niter", "2", "--niter_decay", "1", "--print_freq", "2", "--display_freq", "6", "--save_latest_freq", "8",
            "--tf_log", "--train_eval", "--eval_epoch_freq", "1", "--eval_stats", str(tmp / "ref.npz"),
            "--eval_how_many", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    with open(tmp / "first.txt", "wb") as err:
        proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=err)
        end = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < end:
            if any(r["step"] >= KILL_AFTER for r in logs.read_metrics(folder)):
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, (tmp / "first.txt").read_text()
    from inade.utils.checkpoint_io import load_checkpoint

    after_kill = {"saved": int(load_checkpoint(folder / "latest.pt")["step"]),
                  "logged": [r["step"] for r in logs.read_metrics(folder) if "lr_G" in r],
                  "lines": _loss_lines(folder),
                  "tensorboard": [e.step for e in _events(folder).Scalars("loss/GAN")]}
    resumed = subprocess.run(args + ["--continue_train"], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return folder, after_kill, resumed.stderr


def test_each_step_is_logged_once_across_kill_9_and_resume(killed_and_resumed):
    folder, after_kill, stderr = killed_and_resumed
    # the kill fell between two log lines, past the last checkpoint: there was something to drop
    assert after_kill["saved"] == SAVED and max(after_kill["logged"]) >= KILL_AFTER, after_kill
    assert max(after_kill["tensorboard"]) >= KILL_AFTER  # TensorBoard had it too (flushed with each line)
    dropped = len([s for s in after_kill["logged"] if s > SAVED])
    assert f"note: dropped {2 * dropped} log line(s) past step {SAVED}" in stderr
    steps = list(range(1, STEPS + 1))
    # loss_log.txt: each step once, in order; two runs, two headers
    text = (folder / logs.LOSS_LOG).read_text()
    assert [logs.line_step(x) for x in _loss_lines(folder)] == steps
    assert text.count("================ Training Loss (") == 2
    assert _loss_lines(folder)[:SAVED] == after_kill["lines"][:SAVED]  # kept as they were
    # the FID of each epoch (steps 4, 8, 12): the public evaluation line, then FID inside the brackets
    fids = [r for r in logs.read_metrics(folder) if "FID" in r]
    assert [r["step"] for r in fids] == [4, 8, 12] and [r["epoch"] for r in fids] == [1, 2, 3]
    assert len(re.findall(r"^\(epoch: \d, curr FID: [\d.]+, previous best FID: [\d.]+\) step: \d+$", text, re.M)) == 3
    assert [", FID: " in x for x in _loss_lines(folder)] == [s > 4 for s in steps]
    # metrics.jsonl: each step once, every loss, the rates and the speed
    records = [r for r in logs.read_metrics(folder) if "lr_G" in r]
    assert [r["step"] for r in records] == steps
    assert [r["epoch"] for r in records] == [(s - 1) // 4 + 1 for s in steps]
    assert all({"GAN", "GAN_Feat", "KLD", "D_fake", "D_real", "lr_G", "lr_D", "img_s"} <= r.keys() for r in records)
    # TensorBoard, read back with its own reader: one continuous run, each step once
    acc = _events(folder)
    for tag in ("loss/GAN", "loss/D_real", "lr/G", "lr/D", "speed/img_s"):
        assert [e.step for e in acc.Scalars(tag)] == steps, tag
    assert [e.value for e in acc.Scalars("loss/GAN")] == pytest.approx([r["GAN"] for r in records], rel=1e-6)
    assert [e.step for e in acc.Scalars("FID")] == [4, 8, 12]
    assert [e.step for e in acc.Images("samples")] == [3, 6, 9, 12]
    assert len(list((folder / logs.TENSORBOARD).glob("events.out.tfevents.*"))) == 2
    assert not list(folder.rglob(".*.tmp"))


def _page_facts(folder: Path, shot: Path) -> dict:
    """What headless Chromium shows of ``folder``'s web/index.html and curves.png (a screenshot to ``shot``)."""
    from test_studio_browser import ARGS, _chromium, _missing

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto((folder / "web" / "index.html").as_uri())
            page.wait_for_load_state("load")
            facts = {
                "images": page.evaluate("Array.from(document.images, i => [i.getAttribute('src'), i.naturalWidth, "
                                        "i.naturalHeight])"),
                "captions": page.locator("figcaption").all_inner_texts(),
                "rows": page.locator("#records tr").all_inner_texts(),
                "refresh": page.evaluate("document.querySelector('meta[http-equiv=refresh]') !== null"),
            }
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            page.goto((folder / logs.CURVES).as_uri())
            page.wait_for_load_state("load")
            facts["curves"] = page.evaluate("[document.images[0].naturalWidth, document.images[0].naturalHeight]")
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    return facts


def _check_page(folder: Path, facts: dict) -> list[int]:
    """The page of a finished run: curves and every grid decoded, the grids newest first with their
    step and losses, the newest record first in the table; returns the grids' steps as shown."""
    records = [r for r in logs.read_metrics(folder) if "lr_G" in r]
    assert facts["curves"] == [1000, 640]
    assert facts["images"][0] == ["../curves.png", 1000, 640]
    grids = [src for src, w, h in facts["images"] if "samples/" in src and w > 0 and h > 0]
    steps = [int(re.search(r"step_(\d+)", g).group(1)) for g in grids]
    assert len(grids) == len(facts["images"]) - 1 and steps == sorted(steps, reverse=True)
    assert steps == [s for s, _ in logs.grids(folder)]  # every grid of the run
    assert [c.split(":")[0] for c in facts["captions"]] == [
        f"losses at step {max(r['step'] for r in records if r['step'] <= s)}" for s in steps]
    assert all("GAN" in c and "D_real" in c for c in facts["captions"])
    assert facts["rows"][1].split()[:2] == [str(records[-1]["step"]), str(records[-1]["epoch"])]
    assert len(facts["rows"]) == min(len(records), logs.TABLE_ROWS) + 1
    assert not facts["refresh"]  # the run has ended
    return steps


def _artifacts(tmp_path: Path) -> Path:
    where = os.environ.get("INADE_TEST_ARTIFACTS")
    return Path(where) / "training" if where else tmp_path


def test_results_page_and_curves_in_headless_chromium(killed_and_resumed, tmp_path):
    """The killed-and-resumed run's web/index.html and curves.png as a browser shows them."""
    folder, _, _ = killed_and_resumed
    facts = _page_facts(folder, _artifacts(tmp_path) / "tiny_run_page.png")
    assert _check_page(folder, facts) == [12, 9, 6, 3]
    assert len(facts["rows"]) == STEPS + 1


def test_make_train_page_in_headless_chromium(tmp_path):
    """The same checks on a real run's folder, ``INADE_TRAIN_RUN=checkpoints/inade_synthetic`` after
    ``make train`` (skipped without it: the tests never read the working folder on their own)."""
    run = os.environ.get("INADE_TRAIN_RUN")
    if not run:
        pytest.skip("set INADE_TRAIN_RUN to a finished train.py run folder (e.g. checkpoints/inade_synthetic)")
    facts = _page_facts(Path(run), _artifacts(tmp_path) / "train_run_page.png")
    assert _check_page(Path(run), facts)
