"""--train_eval / --eval_epoch_freq: FID every N epochs, the best checkpoints kept, the curve written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from inade.metrics import Statistics, save_statistics
from inade.metrics import train_eval
from inade.training.options import parse_options
from inade.training.trainer import Trainer
from inade.utils.errors import UserError

from test_train import TINY, one_thread  # noqa: F401 - the tiny run and its one-thread fixture


class PixelFeatures(torch.nn.Module):
    """Stands in for the 2048-d Inception net (its 2048x2048 square root is slow on 2 cores)."""

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_fid_every_epoch_keeps_the_best(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    save_statistics(tmp_path / "ref.npz", Statistics(rng.random(12), np.eye(12) * 0.01))
    monkeypatch.setattr(train_eval, "load_inception", lambda path, device: PixelFeatures())
    opt, cfg, _ = parse_options(TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--train_eval",
                                        "--eval_epoch_freq", "1", "--eval_stats", str(tmp_path / "ref.npz"),
                                        "--eval_how_many", "3", "--results_dir", str(tmp_path / "res")])
    lines = []
    tr = Trainer(opt, cfg, log=lines.append)
    tr.run()
    run = tmp_path / "run"
    rec = json.loads((run / "fid.json").read_text())
    assert [h["epoch"] for h in rec["history"]] == [1, 2] and rec["images"] == 3
    assert rec["best_fid"] == min(h["fid"] for h in rec["history"]) and np.isfinite(rec["best_fid"])
    assert (run / "best_net_G.pth").is_file() and (run / "best.pt").is_file()
    best = torch.load(run / "best.pt", weights_only=False)
    assert best["step"] == rec["history"][int(np.argmin([h["fid"] for h in rec["history"]]))]["step"]
    assert Image.open(run / "fid_curve.png").size == (480, 300)
    assert any("epoch 2: FID" in str(x) for x in lines)
    # --results_dir: each evaluation's images where the public code puts them, one complete run each
    for epoch in (1, 2):
        shown = tmp_path / "res" / "run" / f"test_{epoch}"
        assert sorted(p.name for p in (shown / "images" / "synthesized_image").iterdir()) == [
            "00000.png", "00001.png", "00002.png"]
        assert len(json.loads((shown / "test_run.json").read_text())["files"]) == 3
    # --which_epoch best after the run: the public README's test command reads our best.pt
    from inade.test import main as test_main  # noqa: PLC0415
    assert test_main(["--name", "run", "--norm_mode", "inade", "--batchSize", "1", "--gpu_ids", "-1",
                      "--which_epoch", "best", "--dataset_mode", "synthetic", "--dataroot", str(tmp_path),
                      "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "res"),
                      "--how_many", "2", "--no_progress"]) == 0
    meta = json.loads((tmp_path / "res" / "run" / "test_best" / "test_run.json").read_text())
    assert meta["checkpoint"].endswith("best.pt") and meta["step"] == best["step"] and meta["layouts"] == 2


def test_missing_files_fail_before_training(tmp_path, monkeypatch):
    monkeypatch.delenv("INADE_INCEPTION_WEIGHTS", raising=False)
    save_statistics(tmp_path / "ref.npz", Statistics(np.zeros(4), np.eye(4)))
    base = TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--train_eval"]
    opt, cfg, _ = parse_options(base + ["--eval_stats", str(tmp_path / "ref.npz")])
    with pytest.raises(UserError, match=r"--train_eval: .*pt_inception-2015-12-05-6726825d\.pth"):
        Trainer(opt, cfg, log=lambda *a: None)
    opt, cfg, _ = parse_options(base + ["--inception_weights", str(tmp_path / "x.pth")])
    with pytest.raises(UserError, match=r"train_mu_si/synthetic"):
        Trainer(opt, cfg, log=lambda *a: None)


def test_curve_plot(tmp_path):
    p = train_eval.plot_curve(tmp_path / "c.png", [{"epoch": e, "fid": f} for e, f in ((1, 90.0), (2, 70.0), (3, 75.0))])
    a = np.asarray(Image.open(p))
    assert a.shape == (300, 480, 3) and (a != 255).any()
