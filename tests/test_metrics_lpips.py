"""inade.metrics.LPIPS: its properties on random weights in the real files' layout, weight-file
strictness, and (with the real files) the value lpips' own example gives."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from inade.metrics import LPIPS, WeightsError
from inade.metrics import testing as mt
from inade.metrics.lpips import unit_normalize


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    (d / "v0.1").mkdir()
    out = {
        "alex": mt.save(mt.backbone_state("alex", seed=1), d / "alexnet-owt-7be5be79.pth"),
        "alex_lin": mt.save(mt.lpips_lin_state("alex", seed=2), d / "v0.1" / "alex.pth"),
        "vgg_lin": mt.save(mt.lpips_lin_state("vgg", seed=3), d / "v0.1" / "vgg.pth"),
    }
    return out


@pytest.fixture(scope="module")
def lp(files):
    return LPIPS("alex", files["alex"], files["alex_lin"])


def _img(seed, shape=(2, 3, 48, 40)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def test_zero_symmetric_and_grows_with_perturbation(lp):
    x = _img(0)
    noise = _img(1)
    assert torch.equal(lp(x, x), torch.zeros(2))
    y = (x + 0.3 * noise).clamp(-1, 1)
    torch.testing.assert_close(lp(x, y), lp(y, x), rtol=1e-5, atol=1e-7)
    d = [lp(x, (x + t * noise).clamp(-1, 1)) for t in (0.05, 0.2, 0.6)]
    assert (d[0] > 0).all() and (d[1] > d[0]).all() and (d[2] > d[1]).all()


def test_spatial_map_and_pairs(lp):
    x, y = _img(2), _img(3)
    m = lp(x, y, spatial=True)
    assert m.shape == (2, 1, 48, 40) and (m >= 0).all()
    # the upsampled map's mean is close to the spatial average (as in lpips)
    torch.testing.assert_close(m.mean((1, 2, 3)), lp(x, y), rtol=0.1, atol=1e-4)
    # a change confined to the left half shows up on the left of the map
    z = x.clone()
    z[..., :, :12] = y[..., :, :12]
    mz = lp(x, z, spatial=True)
    assert mz[..., 28:].mean() < 0.2 * mz[..., :12].mean()
    imgs = torch.cat([x, y])
    i, j = torch.tensor([0, 1]), torch.tensor([2, 3])
    torch.testing.assert_close(lp.pair_maps(imgs, i, j, spatial=False), lp(x, y), rtol=1e-5, atol=1e-7)


def test_unit_normalize():
    f = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(unit_normalize(f).pow(2).sum(1), torch.ones(2, 3, 3))


def test_file_layout_and_strictness(files, tmp_path, monkeypatch):
    state = torch.load(files["alex"], weights_only=True)
    assert sorted(k for k in state if k.startswith("features")) == sorted(
        f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias"))
    assert state["classifier.1.weight"].shape == (4096, 9216)
    lin = torch.load(files["alex_lin"], weights_only=True)
    assert sorted(lin) == [f"lin{i}.model.1.weight" for i in range(5)]
    # the v0.1 folder works in place of the file; env vars are read when no path is given
    monkeypatch.setenv("INADE_ALEXNET_WEIGHTS", str(files["alex"]))
    monkeypatch.setenv("INADE_LPIPS_WEIGHTS", str(files["alex_lin"].parent))
    LPIPS("alex")
    monkeypatch.delenv("INADE_ALEXNET_WEIGHTS")
    with pytest.raises(WeightsError, match=r"alexnet-owt-7be5be79\.pth.*INADE_ALEXNET_WEIGHTS.*download\.pytorch\.org"):
        LPIPS("alex", lpips_weights=files["alex_lin"])
    with pytest.raises(WeightsError, match=r"lins?\d?.*has shape|has shape"):
        LPIPS("alex", files["alex"], files["vgg_lin"])  # vgg heads (64, 128, ...) into alex
    bad = dict(state)
    bad["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    with pytest.raises(WeightsError, match=r"features\.3\.weight has shape \(192, 64, 3, 3\).*\(192, 64, 5, 5\)"):
        LPIPS("alex", mt.save(bad, tmp_path / "a.pth"), files["alex_lin"])
    with pytest.raises(WeightsError, match=r"missing key.*features\.10\.bias"):
        LPIPS("alex", mt.save({k: v for k, v in state.items() if k != "features.10.bias"}, tmp_path / "b.pth"),
              files["alex_lin"])
    with pytest.raises(WeightsError, match=r"unexpected key.*lin5"):
        LPIPS("alex", files["alex"], mt.save({**lin, "lin5.model.1.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "c.pth"))
    with pytest.raises(ValueError, match="'alex' or 'vgg'"):
        LPIPS("squeeze", pretrained=False)


def test_backbone_parameter_counts_match_torchvision():
    """torchvision: AlexNet 61,100,840 parameters, VGG16 138,357,544; their classifiers
    (9216·4096+4096 + 4096·4096+4096 + 4096·1000+1000, and 25088·4096+4096 + ...) are not used."""
    alex_cls = 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    vgg_cls = 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    for net, total, cls in (("alex", 61_100_840, alex_cls), ("vgg", 138_357_544, vgg_cls)):
        lp = LPIPS(net, pretrained=False)
        assert sum(p.numel() for p in lp.backbone.parameters()) == total - cls, net


def test_vgg_backbone_layout():
    net = LPIPS("vgg", pretrained=False)
    keys = [k for k in mt.backbone_state("vgg") if k.startswith("features")]
    assert keys == [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) for p in ("weight", "bias")]
    x = _img(4, (1, 3, 32, 32))
    assert [f.shape[1] for f in net.features(x)] == [64, 128, 256, 512, 512]


REAL = {k: os.environ.get(k) for k in ("INADE_ALEXNET_WEIGHTS", "INADE_LPIPS_WEIGHTS", "INADE_LPIPS_EXAMPLES")}


@pytest.mark.skipif(not all(REAL.values()), reason="real LPIPS files: set INADE_ALEXNET_WEIGHTS, INADE_LPIPS_WEIGHTS "
                    "and INADE_LPIPS_EXAMPLES (PerceptualSimilarity's imgs/ folder)")
def test_real_weights_match_lpips_example():
    """lpips' test_network.py on imgs/ex_ref.png vs ex_p0.png / ex_p1.png prints
    ``Distances: (0.722, 0.138)`` with v0.1 AlexNet (richzhang/PerceptualSimilarity issue #120)."""
    from inade.metrics.images import load_image

    lp = LPIPS("alex")
    ex = Path(REAL["INADE_LPIPS_EXAMPLES"])
    t = {n: torch.from_numpy(load_image(ex / f"{n}.png").astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
         for n in ("ex_ref", "ex_p0", "ex_p1")}
    d0 = float(lp(t["ex_ref"], t["ex_p0"], spatial=True).mean())
    d1 = float(lp(t["ex_ref"], t["ex_p1"], spatial=True).mean())
    assert (round(d0, 3), round(d1, 3)) == pytest.approx((0.722, 0.138), abs=0.0015)
