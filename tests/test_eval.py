"""python -m inade.metrics synthetic (formerly inade.eval): the metrics on generators whose answers are known,
the command, and the inade.eval alias."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import inade
from inade.data.synthetic import COLOR_MEAN, COLOR_STD
from inade.metrics.__main__ import main as metrics_main
from inade.metrics.synthetic import compare_colors, evaluate, format_report, pair_distance, wasserstein_1d


class OracleGenerator(nn.Module):
    """Paints each instance with a draw from its class's true colour distribution, taken from
    the instance's noise row: the ideal INADE generator (no texture). ``share`` mixes in a
    global colour from ``z`` to leak changes outside the instance; ``collapse`` ignores the noise."""

    def __init__(self, cfg, collapse=False, share=0.0):
        super().__init__()
        self.cfg, self.collapse, self.share = cfg, collapse, share
        self.dummy = nn.Parameter(torch.zeros(()))
        self.register_buffer("mean", torch.tensor(COLOR_MEAN, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(COLOR_STD, dtype=torch.float32))

    def forward(self, label, inst, noise=None, z=None, remap=None):
        B = label.shape[0]
        rows = noise[:, :, 0, :3]  # [B, L, 3]
        if self.collapse:
            rows = torch.zeros_like(rows)
        per_pixel = torch.gather(rows, 1, inst.reshape(B, -1, 1).expand(-1, -1, 3)).view(*inst.shape, 3)
        if self.share:
            per_pixel = per_pixel + self.share * noise[:, :, 1, :3].mean(1)[:, None, None, :]
        img = self.mean[label] + self.std[label] * per_pixel
        return img.clamp(-0.9, 0.9).permute(0, 3, 1, 2) + self.dummy


CFG = inade.config("synthetic", noise_nc=4, z_dim=8, crop_size=32)


def test_wasserstein_1d_known_values():
    a = torch.randn(4000, generator=torch.Generator().manual_seed(0))
    assert wasserstein_1d(a, a) == 0.0
    assert wasserstein_1d(a, a + 0.3) == pytest.approx(0.3, abs=1e-6)
    b = torch.randn(4000, generator=torch.Generator().manual_seed(1)) * 2
    assert wasserstein_1d(a, b) == pytest.approx(2 / (2 * torch.pi) ** 0.5, rel=0.1)  # E|N(0,1)|·(2-1)


def test_compare_colors_and_pair_distance():
    g = torch.tensor([[0.0, 0, 0], [1.0, 1, 1]])
    r = torch.tensor([[0.0, 0, 0], [0.5, 0.5, 0.5]])
    v = compare_colors(g, r)
    assert v["abs_mean_diff"] == pytest.approx(0.25) and v["std_ratio"] == pytest.approx(2.0)
    imgs = torch.zeros(3, 3, 2, 2)
    imgs[1, :, 0, 0] = 1.0
    d = pair_distance(imgs)  # pairs (0,1): 1, (0,2): 0, (1,2): 1 at pixel (0,0)
    assert d[0, 0] == pytest.approx(2 / 3) and d[1, 1] == 0


def test_oracle_generator_scores_like_real_data():
    r = evaluate(OracleGenerator(CFG), CFG, scenes=12, samples=4)
    d = r["diversity"]
    assert d["inside_l1"] > 0.05 and d["outside_l1"] == 0.0, "only the resampled instance changes"
    s = r["colors_summary"]
    assert s["w1"] < 2 * s["floor_w1"] + 0.02, "the true distributions match up to sampling noise"
    for name, v in r["colors"].items():
        assert 0.5 < v["std_ratio"] < 1.6, name
    assert "| sky |" in format_report(r)


def test_collapsed_and_leaking_generators_are_caught():
    collapsed = evaluate(OracleGenerator(CFG, collapse=True), CFG, scenes=6, samples=3)
    assert collapsed["diversity"]["inside_l1"] == 0.0
    assert all(v["std_ratio"] < 0.05 for v in collapsed["colors"].values()), "no spread = collapse"
    leaking = evaluate(OracleGenerator(CFG, share=0.5), CFG, scenes=6, samples=3)
    assert leaking["diversity"]["outside_l1"] > 0.01


def test_restores_training_mode_and_rejects_other_configs():
    G = OracleGenerator(CFG).train()
    evaluate(G, CFG, scenes=1, samples=2)
    assert G.training
    with pytest.raises(ValueError, match="label_nc"):
        evaluate(G, inade.config("celeba"), scenes=1, samples=2)
    with pytest.raises(ValueError, match="samples"):
        evaluate(G, CFG, scenes=1, samples=1)


def test_command_on_a_train_py_checkpoint(tmp_path, capsys):
    cfg = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32)
    torch.manual_seed(0)
    G = inade.Generator(cfg)
    path = tmp_path / "latest.pt"
    torch.save({"G": G.state_dict(), "E": None, "config": cfg.to_dict(), "step": 7}, path)
    assert metrics_main(["synthetic", "--checkpoint", str(path), "--scenes", "2", "--samples", "2"]) == 0
    out = json.loads((tmp_path / "eval_synthetic.json").read_text())
    assert out["step"] == 7 and out["scenes"] == 2 and set(out["diversity"]) >= {"inside_l1", "outside_l1"}
    assert "inside the resampled instance" in capsys.readouterr().out
    assert metrics_main(["synthetic", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.pt'}: no such file"


def test_inade_eval_is_an_alias_that_says_it_moved(tmp_path, capsys):
    from inade.eval import main as eval_main  # noqa: PLC0415

    assert eval_main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "note: python -m inade.eval moved to python -m inade.metrics synthetic"
    assert len(err) == 2 and err[1].startswith("error: ") and "missing.pt" in err[1]
