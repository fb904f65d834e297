"""The multi-scale discriminator, its input, the training losses and the project's VGG19.

Shapes follow the conv arithmetic of the public code's PatchGAN; loss values are
checked against numbers worked out by hand on tiny inputs.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import inade
from inade.models import discriminator as dmod
from inade.models import losses, vgg as vggmod
from inade.models.discriminator import Discriminator, discriminator_input, instance_edges


def tiny_cfg(**kw):
    return inade.config("synthetic", ndf=4, **kw)


# ---------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------


def _patchgan_shapes(h: int, w: int, ndf: int, n_layers: int = 4):
    """Expected [C, H, W] of each layer: 4x4 convs, padding 2, stride 2 except the last two."""
    shapes, c = [], ndf
    for n in range(n_layers):
        stride = 2 if n < n_layers - 1 else 1
        h, w = (h + 4 - 4) // stride + 1, (w + 4 - 4) // stride + 1
        shapes.append((c, h, w))
        c = min(c * 2, 512)
    shapes.append((1, h + 1, w + 1))
    return shapes


@pytest.mark.parametrize("hw", [(32, 40), (27, 19)], ids=["H32-W40", "H27-W19"])
def test_discriminator_shapes_per_scale(hw):
    cfg = tiny_cfg()
    D = Discriminator(cfg)
    h, w = hw
    x = torch.randn(2, cfg.label_nc + 1 + 3, h, w)
    out = D(x)
    assert len(out) == cfg.num_D == 2
    for scale, feats in enumerate(out):
        sh, sw = h, w
        for _ in range(scale):  # avg pool k3 s2 p1 -> ceil(n / 2)
            sh, sw = math.ceil(sh / 2), math.ceil(sw / 2)
        expected = [(2, *s) for s in _patchgan_shapes(sh, sw, cfg.ndf)]
        assert [tuple(f.shape) for f in feats] == expected


def test_discriminator_input_channels_and_layout():
    cfg = tiny_cfg()
    label = torch.randint(0, cfg.label_nc, (2, 12, 10))
    inst = torch.randint(0, 4, (2, 12, 10))
    image = torch.randn(2, 3, 12, 10)
    x = discriminator_input(label, inst, image, cfg)
    assert x.shape == (2, cfg.label_nc + 1 + 3, 12, 10)
    assert torch.equal(x[:, : cfg.label_nc].argmax(1), label)
    assert torch.equal(x[:, : cfg.label_nc].sum(1), torch.ones(2, 12, 10))
    assert torch.equal(x[:, cfg.label_nc : cfg.label_nc + 1], instance_edges(inst))
    assert torch.equal(x[:, -3:], image)
    # a don't-care class adds a channel; no_instance drops the edge map
    assert dmod.discriminator_input_nc(tiny_cfg(contain_dontcare_label=True)) == cfg.label_nc + 1 + 1 + 3
    assert dmod.discriminator_input_nc(tiny_cfg(no_instance=True)) == cfg.label_nc + 3
    x = discriminator_input(label, None, image, tiny_cfg(no_instance=True))
    assert x.shape[1] == cfg.label_nc + 3


def test_discriminator_input_rejects_bad_label():
    cfg = tiny_cfg()
    label = torch.full((1, 4, 4), cfg.label_nc)  # one past the last class
    with pytest.raises(ValueError, match="label has ids"):
        discriminator_input(label, label, torch.zeros(1, 3, 4, 4), cfg)
    with pytest.raises(ValueError, match="must be \\[B, 10, H, W\\]"):
        Discriminator(cfg)(torch.zeros(1, 5, 8, 8))


def test_discriminator_state_dict_matches_public_layout():
    """Module names as the public code's MultiscaleDiscriminator: its latest_net_D.pth loads."""
    D = Discriminator(tiny_cfg())
    keys = set(D.state_dict())
    for i in range(2):
        p = f"discriminator_{i}"
        assert {f"{p}.model0.0.weight", f"{p}.model0.0.bias", f"{p}.model4.0.weight", f"{p}.model4.0.bias"} <= keys
        for n in (1, 2, 3):  # spectral-normed, bias removed (instance norm follows)
            assert {f"{p}.model{n}.0.0.weight_orig", f"{p}.model{n}.0.0.weight_u", f"{p}.model{n}.0.0.weight_v"} <= keys
            assert f"{p}.model{n}.0.0.bias" not in keys
    assert len(keys) == 2 * (4 + 3 * 3)
    # widths ndf·2^k; last inner conv is stride 1
    m3 = D.discriminator_0.model3[0][0]
    assert m3.weight_orig.shape == (32, 16, 4, 4) and m3.stride == (1, 1)


def test_discriminator_backward_reaches_image():
    cfg = tiny_cfg()
    D = Discriminator(cfg)
    image = torch.randn(1, 3, 16, 16, requires_grad=True)
    label = torch.zeros(1, 16, 16, dtype=torch.long)
    out = D(discriminator_input(label, label, image, cfg))
    sum(scale[-1].sum() for scale in out).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


# ---------------------------------------------------------------------------
# Edge map
# ---------------------------------------------------------------------------


def _edges_by_loop(inst):
    B, H, W = inst.shape
    out = torch.zeros(B, 1, H, W)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < H and 0 <= xx < W and inst[b, yy, xx] != inst[b, y, x]:
                        out[b, 0, y, x] = 1
    return out


def test_instance_edges_hand_example():
    inst = torch.tensor([[[0, 0, 1, 1],
                          [0, 0, 1, 1],
                          [2, 2, 2, 2]]])
    expected = torch.tensor([[[0, 1, 1, 0],
                              [1, 1, 1, 1],
                              [1, 1, 1, 1]]], dtype=torch.float32)[:, None]
    assert torch.equal(instance_edges(inst), expected)


def test_instance_edges_matches_neighbour_loop():
    g = torch.Generator().manual_seed(0)
    inst = torch.randint(0, 3, (2, 7, 9), generator=g)
    assert torch.equal(instance_edges(inst), _edges_by_loop(inst))
    assert torch.equal(instance_edges(torch.zeros(1, 5, 5, dtype=torch.long)), torch.zeros(1, 1, 5, 5))


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def _pred(scale0_logits, scale1_logits):
    """Two scales of five outputs; only the last (logits) matters to the hinge loss."""
    junk = [torch.randn(1, 2, 3, 3) for _ in range(4)]
    return [junk + [torch.tensor(scale0_logits).view(1, 1, 2, 2)], junk + [torch.tensor(scale1_logits).view(1, 1, 1, 1)]]


def test_hinge_losses_hand_computed():
    pred = _pred([0.5, -2.0, 1.5, 0.0], [3.0])
    # real: relu(1 - x) -> [0.5, 3, 0, 1] mean 1.125; scale 1: relu(-2) = 0 -> (1.125 + 0) / 2
    assert losses.hinge_d_loss(pred, real=True).item() == pytest.approx(0.5625)
    # fake: relu(1 + x) -> [1.5, 0, 2.5, 1] mean 1.25; scale 1: 4 -> (1.25 + 4) / 2
    assert losses.hinge_d_loss(pred, real=False).item() == pytest.approx(2.625)
    # generator: -mean(x) -> 0 and -3 -> -1.5
    assert losses.hinge_g_loss(pred).item() == pytest.approx(-1.5)
    d = losses.compute_discriminator_losses(pred, pred)
    assert set(d) == {"D_fake", "D_real"} and d["D_fake"].item() == pytest.approx(2.625)


def test_feature_matching_uses_layers_from_three_on():
    def feats(v3, scale_offset):
        # layers 0-2 and the logits differ wildly; only layer 3 may count
        return [torch.full((1, 2, 2, 2), 100.0 * (j + 1) + scale_offset) for j in range(3)] + [
            torch.full((1, 2, 2, 2), v3), torch.full((1, 1, 2, 2), 50.0 + scale_offset)]

    real = [feats(1.0, 0.0), feats(3.0, 0.0)]
    fake = [feats(0.0, 7.0), feats(0.0, -7.0)]
    # (|0 - 1| + |0 - 3|) * λ / num_D = 4 * 10 / 2
    assert losses.feature_matching_loss(fake, real).item() == pytest.approx(20.0)
    # from layer 0: add the layers 0-2 (7 each), never the logits
    assert losses.feature_matching_loss(fake, real, start=0, weight=1.0).item() == pytest.approx((7 * 3 + 1 + 7 * 3 + 3) / 2)


def test_feature_matching_gradient_only_to_fake():
    real = [[torch.randn(1, 2, 3, 3, requires_grad=True) for _ in range(5)]]
    fake = [[torch.randn(1, 2, 3, 3, requires_grad=True) for _ in range(5)]]
    losses.feature_matching_loss(fake, real).backward()
    assert fake[0][3].grad is not None and fake[0][3].grad.abs().sum() > 0
    assert all(t.grad is None for t in real[0])
    assert fake[0][0].grad is None  # layers before S_D = 3 are not used


def test_kl_loss_hand_computed():
    L, C = 3, 2
    zero = torch.zeros(1, L, C)
    assert losses.kl_loss((zero, zero, zero, zero)).item() == 0.0
    mu = torch.zeros(1, L, C)
    mu[0, 1] = 2.0  # KL of N(2, 1) per channel = ½·2² = 2, two channels -> 4
    logvar_b = torch.zeros(1, L, C)
    logvar_b[0, 0, 0] = math.log(4.0)  # KL of N(0, 4) = -½(1 + ln 4 - 4)
    kl_b = -0.5 * (1 + math.log(4.0) - 4.0)
    expected = (4.0 + kl_b) / 2 * 0.05
    assert losses.kl_loss((mu, zero, zero, logvar_b)).item() == pytest.approx(expected)


def test_inade_loss_end_to_end():
    cfg = tiny_cfg()
    crit = losses.INADELoss(cfg, use_vgg=False)
    D = Discriminator(cfg)
    label = torch.randint(0, cfg.label_nc, (2, 16, 16))
    inst = torch.randint(0, 3, (2, 16, 16))
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    fake = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_()
    mu = torch.randn(2, 3, cfg.noise_nc, requires_grad=True)
    enc = (mu, torch.zeros_like(mu), mu, torch.zeros_like(mu))
    g = crit.generator_losses(D, label, inst, fake, real, enc)
    assert set(g) == {"GAN", "GAN_Feat", "KLD"} and all(v.dim() == 0 for v in g.values())
    assert g["KLD"].item() == pytest.approx((0.5 * mu.pow(2).sum() * 2 / 2 * 0.05).item(), rel=1e-5)
    sum(g.values()).backward()
    assert fake.grad.abs().sum() > 0 and mu.grad.abs().sum() > 0
    # the discriminator side never reaches the generator's output
    fake.grad = None
    d = crit.discriminator_losses(D, label, inst, fake, real)
    sum(d.values()).backward()
    assert fake.grad is None
    assert D.discriminator_0.model0[0].weight.grad.abs().sum() > 0
    # the options of the config switch terms off
    crit = losses.INADELoss(cfg.replace(no_ganFeat_loss=True), use_vgg=False)
    assert set(crit.generator_losses(D, label, inst, fake, real)) == {"GAN"}


# ---------------------------------------------------------------------------
# VGG19
# ---------------------------------------------------------------------------

_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
          16: (256, 256), 19: (256, 512), 21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512)}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A torchvision-format vgg19 state dict with random weights (features up to conv5_1, plus an extra key)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for idx, (cin, cout) in _CONVS.items():
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
    state["classifier.6.bias"] = torch.zeros(1000)  # other keys of the file are ignored
    path = tmp_path_factory.mktemp("vgg") / vggmod.VGG19_FILE
    torch.save(state, path)
    return path, state


def _manual_vgg(x, state):
    """relu1_1 … relu5_1 by hand from the state dict (conv indices and pool positions of torchvision's vgg19)."""
    outs, pools = [], {4, 9, 18, 27}
    taps = {0: 0, 5: 1, 10: 2, 19: 3, 28: 4}
    for idx in range(29):
        if idx in pools:
            x = F.max_pool2d(x, 2)
        elif idx in _CONVS:
            x = F.relu(F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1))
            if idx in taps:
                outs.append(x)
    return outs


def test_vgg_loads_torchvision_format(vgg_file):
    path, state = vgg_file
    net = vggmod.load_vgg19(path, require=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    got = net(x)
    assert [tuple(t.shape) for t in got] == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8), (1, 512, 4, 4), (1, 512, 2, 2)]
    for g, e in zip(got, _manual_vgg(x, state)):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)
    assert not any(p.requires_grad for p in net.parameters())
    # ImageNet normalisation as an option
    norm = vggmod.load_vgg19(path, normalize_input=True)
    mean, std = torch.tensor(vggmod.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(vggmod.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x)[0], _manual_vgg(((x + 1) / 2 - mean) / std, state)[0], atol=1e-4, rtol=1e-4)


def test_vgg_found_in_hub_cache(vgg_file, tmp_path, monkeypatch):
    path, _ = vgg_file
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / vggmod.VGG19_FILE).symlink_to(path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv(vggmod.WEIGHTS_ENV, raising=False)
    assert isinstance(vggmod.load_vgg19(require=True), vggmod.VGG19)


def test_vgg_missing_warns_once_or_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(vggmod, "_warned", False)
    missing = tmp_path / "missing.pth"
    with pytest.warns(RuntimeWarning, match="perceptual loss is off.*missing.pth"):
        assert vggmod.load_vgg19(missing) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vggmod.load_vgg19(missing) is None  # only one warning per process
        crit = losses.INADELoss(tiny_cfg(no_vgg_loss=False), vgg_weights=missing)
    assert crit.vgg_loss is None
    with pytest.raises(vggmod.VGGWeightsNotFound, match="missing.pth"):
        vggmod.load_vgg19(missing, require=True)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        losses.INADELoss(tiny_cfg(), vgg_weights=missing, require_vgg=True)


def test_vgg_bad_files_named(tmp_path, vgg_file):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        vggmod.load_vgg19(junk)
    _, state = vgg_file
    wrong = tmp_path / "wrong.pth"
    torch.save({**state, "features.28.weight": torch.zeros(512, 512, 1, 1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth.*features.28.weight"):
        vggmod.load_vgg19(wrong)


def test_vgg_loss_uses_inade_layer_weights(vgg_file):
    path, state = vgg_file
    cfg = tiny_cfg(no_vgg_loss=False)
    crit = losses.INADELoss(cfg, vgg_weights=path, require_vgg=True)
    assert crit.vgg_loss.layer_weights == (0.0, 0.0, 0.0, 0.25, 1.0)
    fake = torch.rand(1, 3, 32, 32) * 2 - 1
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    f, r = _manual_vgg(fake, state), _manual_vgg(real, state)
    expected = 10 * (0.25 * (f[3] - r[3]).abs().mean() + (f[4] - r[4]).abs().mean())
    torch.testing.assert_close(crit.vgg_loss(fake, real) * crit.lambda_vgg, expected, atol=1e-4, rtol=1e-4)
    spade = losses.VGGLoss(crit.vgg_loss.vgg, losses.SPADE_VGG_LAYER_WEIGHTS)
    expected = sum(w * (a - b).abs().mean() for w, a, b in zip(losses.SPADE_VGG_LAYER_WEIGHTS, f, r))
    torch.testing.assert_close(spade(fake, real), expected, atol=1e-4, rtol=1e-4)
