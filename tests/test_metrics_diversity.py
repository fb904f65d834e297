"""inade.metrics diversity (mISD/mOID, mCSD/mOCD, group diversity) on generators whose answers are
known, and mIoU / pixel accuracy with a tiny scripted segmenter."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import inade
from inade.metrics import LPIPS, MetricsError
from inade.metrics.diversity import group_diversity, instance_diversity, l1_distance, l1_pair_maps, lpips_pair_maps
from inade.metrics.segmentation import ConfusionMeter, confusion_matrix, load_segmenter, scores, segment

CFG = inade.config("synthetic", noise_nc=4, z_dim=8, crop_size=32)


class PaintByNoise(nn.Module):
    """Each instance painted with a colour from its own noise row (exactly local), plus
    ``leak`` times a colour from the mean of all rows (changes everywhere when any row changes)."""

    def __init__(self, leak=0.0):
        super().__init__()
        self.cfg, self.leak = CFG, leak
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, label, inst, noise=None, z=None, remap=None):
        B = label.shape[0]
        rows = noise[:, :, 0, :3]
        img = torch.gather(rows, 1, inst.reshape(B, -1, 1).expand(-1, -1, 3)).view(*inst.shape, 3)
        img = img + self.leak * noise[:, :, 1, :3].mean(1)[:, None, None, :]
        return torch.tanh(img).permute(0, 3, 1, 2) + self.dummy


def _layouts():
    label = torch.zeros(20, 24, dtype=torch.long)
    inst = torch.zeros(20, 24, dtype=torch.long)
    label[:, 12:] = 1
    inst[:, 12:] = 1
    inst[10:, 12:] = 2           # two instances of class 1
    label2, inst2 = label.clone(), inst.clone()
    label2[:5], inst2[:5] = 2, 3  # a third class on top
    return [(label, inst), {"label": label2, "instance": inst2}]


def test_local_generator_l1_inside_positive_outside_zero():
    s = inade.Synthesizer(PaintByNoise(), cfg=CFG)
    r = instance_diversity(s, _layouts(), samples=4, seed=0)
    assert r["regions"] == 3 + 4 and r["layouts"] == 2
    assert r["inside"] > 0.1 and r["outside"] == 0.0
    c = instance_diversity(s, _layouts(), samples=4, seed=0, level="class")
    assert c["inside"] > 0.1 and c["outside"] == 0.0
    again = instance_diversity(s, _layouts(), samples=4, seed=0)
    assert again == r  # a function of the seed


def test_leaky_generator_has_outside_diversity():
    local = instance_diversity(inade.Synthesizer(PaintByNoise(), cfg=CFG), _layouts(), samples=4)
    leaky = instance_diversity(inade.Synthesizer(PaintByNoise(leak=1.0), cfg=CFG), _layouts(), samples=4)
    assert leaky["outside"] > 0.01 and leaky["outside"] > local["outside"]
    assert leaky["inside"] > leaky["outside"]


def test_lpips_variant_inside_above_outside():
    lp = LPIPS("alex", pretrained=False)
    torch.manual_seed(0)
    for lin in lp.lins:  # lpips' heads are non-negative
        lin.model[1].weight.data.abs_()
    dist = lpips_pair_maps(lp)
    big = [tuple(m.repeat_interleave(3, 0).repeat_interleave(3, 1) for m in _layouts()[0])]  # 60x72 for AlexNet
    local = instance_diversity(inade.Synthesizer(PaintByNoise(), cfg=CFG), big, dist, samples=3)
    leaky = instance_diversity(inade.Synthesizer(PaintByNoise(leak=1.0), cfg=CFG), big, dist, samples=3)
    assert local["inside"] > local["outside"] >= 0
    assert leaky["outside"] > local["outside"]


def test_group_diversity():
    g = torch.Generator().manual_seed(0)
    groups = [[torch.rand(3, 8, 8, generator=g) * 2 - 1 for _ in range(5)] for _ in range(3)]
    r = group_diversity(groups, l1_distance, rounds=10, seed=0)
    assert len(r["rounds"]) == 10 and r["groups"] == 3 and r["images"] == 5
    assert 0.5 < r["mean"] < 0.8  # E|U - V| = 2/3 for U, V uniform on [-1, 1]
    same = group_diversity([groups[0], groups[0]], l1_distance)
    assert same["mean"] == 0.0
    with pytest.raises(ValueError, match="at least 2 groups"):
        group_diversity(groups[:1], l1_distance)
    with pytest.raises(ValueError, match="same, non-zero number"):
        group_diversity([groups[0], groups[1][:2]], l1_distance)


def test_pair_maps_shape():
    x = torch.rand(4, 3, 5, 6)
    i, j = torch.tensor([0, 1]), torch.tensor([2, 3])
    m = l1_pair_maps(x, i, j)
    assert m.shape == (2, 1, 5, 6)
    torch.testing.assert_close(m[0, 0], (x[0] - x[2]).abs().mean(0))


# ---------------------------------------------------------------------------
# mIoU
# ---------------------------------------------------------------------------


def test_confusion_matrix_known_answer():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 9, 9]])  # 9 = don't care
    pred = torch.tensor([[0, 1, 1, 1], [2, 7, 0, 1]])    # 7 is out of range
    conf = confusion_matrix(pred, target, 3, ignore_index=9)
    assert conf.shape == (3, 4) and int(conf.sum()) == 6
    r = scores(conf)
    # class 0: tp 1, fn 1, fp 0 -> 1/2; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 (out of range) -> 1/2
    assert r["iou"] == pytest.approx([0.5, 2 / 3, 0.5])
    assert r["mIoU"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    absent = scores(confusion_matrix(torch.zeros(4), torch.zeros(4), 3))
    assert absent["iou"] == [1.0, None, None] and absent["mIoU"] == 1.0


class ColourSegmenter(nn.Module):
    """Class = the brightest channel (scores at half resolution, to exercise the resize)."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 2)


def make_segmenter():
    return ColourSegmenter()


@pytest.mark.filterwarnings("ignore:.*torch.jit:DeprecationWarning")
def test_segmenter_from_torchscript_and_module_function(tmp_path, monkeypatch):
    path = tmp_path / "seg.pt"
    torch.jit.save(torch.jit.script(ColourSegmenter()), str(path))
    img = torch.zeros(1, 3, 8, 8)
    img[0, 0, :, :4] = 1
    img[0, 2, :, 4:] = 1
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, :, 4:] = 2
    label[0, 0, 0] = 1  # one wrong pixel
    for spec in (str(path), "test_metrics_diversity:make_segmenter"):
        net = load_segmenter(spec)
        meter = ConfusionMeter(3)
        meter.update(segment(net, img, (8, 8)), label)
        r = meter.result()
        assert r["accuracy"] == pytest.approx(63 / 64) and r["iou"][1] == 0.0
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(MetricsError, match=r"junk\.pt: not a TorchScript file"):
        load_segmenter(str(tmp_path / "junk.pt"))
    with pytest.raises(MetricsError, match="cannot import"):
        load_segmenter("no_such_module_xyz:build")
    with pytest.raises(MetricsError, match="not found"):
        load_segmenter(str(tmp_path / "missing.pt"))
    assert np.isfinite(r["mIoU"])
