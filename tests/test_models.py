"""The generator and the noise-remapping encoder: the public code's structure and
parameter counts, its forward function (re-stated here the way the public code
computes it: dense one-hot maps and ``einsum``), agreement across backends, and
instance-level control."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import inade
from conftest import fused_backends
from inade.data import compact_ids, spans_classes
from inade.models.discriminator import instance_edges
from inade.models.encoder import kl_divergence
from inade.models.generator import INADEResnetBlock, remap_noise
from inade.ops import _backend, use_backend

REFERENCE = Path(__file__).resolve().parent / "data"  # key lists of the public code (copied from shared/reference)
PAPER_CONFIGS = ("cityscapes", "ade20k", "celeba", "deepfashion")
# The public code's parameter counts (shared/reference/README.md).
GENERATOR_PARAMS = {"cityscapes": 77_394_435, "ade20k": 90_893_827, "celeba": 85_115_395, "deepfashion": 84_020_995}
ENCODER_PARAMS = {"cityscapes": 3_689_856, "ade20k": 3_689_856, "celeba": 3_689_856, "deepfashion": 3_560_608}


def has_instance_conv() -> bool:
    """Whether the encoder's ops (instance_conv2d, instance_avg_pool, InstanceConv2d) have landed."""
    try:
        from inade.nn.conv import InstanceConv2d  # noqa: F401, PLC0415

        x, inst = torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
        inade.ops.instance_conv2d(x, inst, torch.zeros(1, 1, 1, 1), torch.zeros(1), 1, 0)
        inade.ops.instance_avg_pool(x, inst, 1)
    except (ImportError, NotImplementedError):
        return False
    return True


needs_encoder_ops = pytest.mark.skipif(
    not has_instance_conv(), reason="instance_conv2d / instance_avg_pool not built yet"
)


def official_keys(name: str, part: str) -> dict[str, tuple]:
    entries = json.loads((REFERENCE / f"official_state_dict_{name}.json").read_text())[part]
    return {e["key"]: tuple(e["shape"]) for e in entries}


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------


def test_config_presets_match_the_public_options():
    for name in PAPER_CONFIGS:
        opt = json.loads((REFERENCE / f"official_state_dict_{name}.json").read_text())["opt"]
        cfg = inade.config(name)
        for key in ("label_nc", "contain_dontcare_label", "ngf", "z_dim", "noise_nc", "crop_size",
                    "aspect_ratio", "num_upsampling_layers", "norm_G", "no_instance", "use_vae", "semantic_nc"):
            assert getattr(cfg, key) == opt[key], f"{name}.{key}: {getattr(cfg, key)} != public {opt[key]}"
    assert inade.config("cityscapes").output_size == (256, 512)
    assert inade.config("ade20k").num_classes == 151
    assert inade.config("synthetic").label_nc == 6


def test_config_overrides_and_errors():
    cfg = inade.config("celeba", ngf=32, noise_nc=16)
    assert (cfg.ngf, cfg.noise_nc, cfg.label_nc) == (32, 16, 19)
    assert cfg.replace(ngf=8).ngf == 8 and cfg.ngf == 32
    with pytest.raises(TypeError, match="unknown option.*ngff.*valid options:.*ngf"):
        inade.config("celeba", ngff=3)
    with pytest.raises(ValueError, match="unknown configuration 'mnist'"):
        inade.config("mnist")
    with pytest.raises(ValueError, match="num_upsampling_layers"):
        inade.config("celeba", num_upsampling_layers="many")
    with pytest.raises(ValueError, match="empty latent map"):
        inade.config("celeba", crop_size=16)
    with pytest.raises(Exception):  # frozen
        cfg.ngf = 3


# ---------------------------------------------------------------------------
# Structure: the public code's keys, shapes and parameter counts (meta device: no memory)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_generator_has_the_public_parameters_and_keys(name):
    with torch.device("meta"):
        G = inade.Generator(inade.config(name))
    assert sum(p.numel() for p in G.parameters()) == GENERATOR_PARAMS[name]
    mine = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    want = official_keys(name, "generator")
    assert list(mine) == list(want), "key names or order differ"
    for key, shape in want.items():
        assert mine[key] == shape, f"{key}: {mine[key]} != {shape}"


@needs_encoder_ops
@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_encoder_has_the_public_parameters_and_keys(name):
    with torch.device("meta"):
        E = inade.NoiseEncoder(inade.config(name))
    assert sum(p.numel() for p in E.parameters()) == ENCODER_PARAMS[name]
    mine = {k: tuple(v.shape) for k, v in E.state_dict().items()}
    assert mine == official_keys(name, "encoder")


def test_initialisation_follows_the_public_code():
    """Conv/linear weights Xavier-normal with gain 0.02 and zero bias; tables a ~ U[0,1), b = 0."""
    torch.manual_seed(0)
    G = inade.Generator(inade.config("synthetic"))
    w = G.head_0.conv_0.weight_orig
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    expected_std = 0.02 * (2.0 / (fan_in + fan_out)) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.05
    assert G.head_0.conv_0.bias.abs().max() == 0 and G.fc.bias.abs().max() == 0
    a = G.up_1.norm_0.weight
    assert 0 <= a.min() and a.max() < 1 and abs(a.mean().item() - 0.5) < 0.05
    assert G.up_1.norm_0.bias.abs().max() == 0


# ---------------------------------------------------------------------------
# The public code's forward, re-stated: dense one-hot maps + einsum
# ---------------------------------------------------------------------------


def official_norm(norm, x, seg, inst_onehot, noise, training):
    """ILADE.forward of the public code for the parameters of ``norm`` (an INADENorm).

    ``seg [B, L_m, H, W]`` and ``inst_onehot [B, L, H, W]`` are float one-hot maps at the
    input resolution; ``noise [B, L, 2, noise_nc]``. Updates ``norm``'s running stats in
    training mode, like the public code's batch norm.
    """
    bn = norm.param_free_norm
    normalized = F.batch_norm(x, bn.running_mean, bn.running_var, None, None, training, 0.1, 1e-5)
    seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
    inst_onehot = F.interpolate(inst_onehot, size=x.shape[2:], mode="nearest")
    B, L = noise.shape[:2]
    noise_fc = F.linear(noise.reshape(-1, noise.shape[-1]), norm.fc_noise.weight, norm.fc_noise.bias)
    noise_fc = noise_fc.view(B, L, 2, -1)
    out = []
    for k in range(2):  # 0: scale γ, 1: shift β
        class_weight = torch.einsum("ic,nihw->nchw", norm.weight[..., k], seg)
        class_bias = torch.einsum("ic,nihw->nchw", norm.bias[..., k], seg)
        instance_noise = torch.einsum("nic,nihw->nchw", noise_fc[:, :, k, :], inst_onehot)
        out.append(class_weight * instance_noise + class_bias)
    return out[0] * normalized + out[1]


def official_spectral_weight(conv, training):
    """torch.nn.utils.spectral_norm's weight, re-stated: one power iteration in training."""
    w = conv.weight_orig
    mat = w.reshape(w.shape[0], -1)
    u, v = conv.weight_u, conv.weight_v
    if training:
        with torch.no_grad():
            v.copy_(F.normalize(mat.t() @ u, dim=0, eps=1e-12))
            u.copy_(F.normalize(mat @ v, dim=0, eps=1e-12))
    sigma = torch.dot(u, mat @ v)
    return w / sigma


def official_block(block, x, seg, inst_onehot, noise, training):
    """SPADEResnetBlock.forward (INADE mode) of the public code."""
    def conv(c, t, padding):
        return F.conv2d(t, official_spectral_weight(c, training), c.bias, padding=padding)

    def actvn(t):
        return F.leaky_relu(t, 0.2)

    if block.learned_shortcut:
        x_s = conv(block.conv_s, official_norm(block.norm_s, x, seg, inst_onehot, noise, training), 0)
    else:
        x_s = x
    dx = conv(block.conv_0, actvn(official_norm(block.norm_0, x, seg, inst_onehot, noise, training)), 1)
    dx = conv(block.conv_1, actvn(official_norm(block.norm_1, dx, seg, inst_onehot, noise, training)), 1)
    return x_s + dx


def official_remap(noise, enc):
    """pre_process_noise of the public code (identity without an encoder output)."""
    if enc is None:
        return noise
    s_mu, s_logvar, b_mu, b_logvar = enc
    z = [s_mu, torch.exp(0.5 * s_logvar), b_mu, torch.exp(0.5 * b_logvar)]
    s_noise = torch.unsqueeze(noise[:, :, 0, :].mul(z[1]) + z[0], 2)
    b_noise = torch.unsqueeze(noise[:, :, 1, :].mul(z[3]) + z[2], 2)
    return torch.cat([s_noise, b_noise], 2)


def official_generator(G, seg, inst_onehot, noise, z, enc, training):
    """SPADEGenerator.forward (INADE mode, use_vae) of the public code."""
    cfg = G.cfg
    noise = official_remap(noise, enc)
    x = F.linear(z, G.fc.weight, G.fc.bias).view(-1, 16 * cfg.ngf, G.sh, G.sw)
    up = lambda t: F.interpolate(t, scale_factor=2)  # noqa: E731
    more = cfg.num_upsampling_layers in ("more", "most")
    x = official_block(G.head_0, x, seg, inst_onehot, noise, training)
    x = official_block(G.G_middle_0, up(x), seg, inst_onehot, noise, training)
    x = up(x) if more else x
    x = official_block(G.G_middle_1, x, seg, inst_onehot, noise, training)
    for block in (G.up_0, G.up_1, G.up_2, G.up_3):
        x = official_block(block, up(x), seg, inst_onehot, noise, training)
    if cfg.num_upsampling_layers == "most":
        x = official_block(G.up_4, up(x), seg, inst_onehot, noise, training)
    x = F.conv2d(F.leaky_relu(x, 2e-1), G.conv_img.weight, G.conv_img.bias, padding=1)
    return torch.tanh(x)


def one_hot_maps(label, inst, num_classes, num_instances, dtype):
    seg = F.one_hot(label, num_classes).permute(0, 3, 1, 2).to(dtype)
    inst_onehot = F.one_hot(inst, num_instances).permute(0, 3, 1, 2).to(dtype)
    return seg, inst_onehot


def scene(B, H, W, num_classes, grid=4, seed=0, span=False):
    """Compact instance ids on a ``grid × grid`` layout of blocks, each block one instance
    of a random class; image 1 leaves some ids empty. ``span``: the blocks keep their classes
    but ids ``2k`` and ``2k + 1`` become one id ``k`` (COCO-Stuff-like ids that span classes)."""
    g = torch.Generator().manual_seed(seed)
    L = grid * grid
    cells = torch.stack([torch.randperm(L, generator=g) for _ in range(B)]).view(B, 1, grid, grid).float()
    if B > 1:
        cells[1] = cells[1] % (L // 2)  # fewer instances in image 1 (its ids repeat, some are empty)
    inst = F.interpolate(cells, size=(H, W), mode="nearest")[:, 0].long()
    classes = torch.randint(0, num_classes, (L,), generator=g)
    label = classes[inst]
    if span:
        inst = inst // 2
        assert inade.nn.instance_parts(label, inst)[1].shape[1] > int(inst.max()) + 1, "no id spans two classes"
    return label, inst


def randomize(module, seed=0):
    """Non-trivial running statistics and shift tables, so every term of the norm matters."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, inade.nn.INADENorm):
            with torch.no_grad():
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
                bn = m.param_free_norm
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.01)
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) * 1e-3 + 1e-4)
    return module


def tiny_config(**kw):
    return inade.config("synthetic", **{"ngf": 4, "noise_nc": 5, "z_dim": 7, "crop_size": 32, **kw})


def random_remap(B, L, nc, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(B, L, nc, generator=g) * 0.5).to(dtype) for _ in range(4))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("with_remap", [False, True], ids=["noise", "remap"])
def test_norm_and_block_compute_the_public_function(training, with_remap):
    """One INADE norm and one residual block with a learned shortcut, float64."""
    cfg = tiny_config()
    torch.manual_seed(0)
    block = randomize(INADEResnetBlock(6, 4, cfg)).double().train(training)
    twin = copy.deepcopy(block)
    B, H, W = 2, 12, 10
    label, inst = scene(B, 24, 20, cfg.num_classes)
    L = int(inst.max()) + 1
    noise = torch.randn(B, L, 2, cfg.noise_nc, dtype=torch.float64)
    enc = random_remap(B, L, cfg.noise_nc) if with_remap else None
    noise_ours = remap_noise(noise, enc) if with_remap else noise
    noise_official = official_remap(noise, enc)
    x = torch.randn(B, 6, H, W, dtype=torch.float64) * 2 + 0.5
    seg, inst_onehot = one_hot_maps(label, inst, cfg.num_classes, L, torch.float64)
    cls = inade.nn.instance_classes(label, inst)
    small = inade.nn.resize_index_map(inst, (H, W))

    # The norm alone.
    got = block.norm_s(x, small, cls, noise_ours)
    want = official_norm(twin.norm_s, x, seg, inst_onehot, noise_official, training)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

    # The block, forward and backward.
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = block(xa, small, cls, noise_ours)
    want = official_block(twin, xb, seg, inst_onehot, noise_official, training)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(got)
    got.backward(dy)
    want.backward(dy)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-10)
    for (name, p), q in zip(block.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10, msg=f"grad of {name}")
    for (name, b), c in zip(block.named_buffers(), twin.buffers()):
        if "num_batches" not in name:
            torch.testing.assert_close(b, c, rtol=1e-12, atol=1e-12, msg=f"buffer {name}")


@pytest.mark.parametrize(
    "training, with_remap, span",
    [(False, False, False), (False, True, False), (True, False, False), (True, True, False),
     (False, False, True), (True, True, True)],
    ids=["eval-noise", "eval-remap", "train-noise", "train-remap", "eval-noise-span", "train-remap-span"],
)
def test_generator_computes_the_public_function(training, with_remap, span):
    """The whole tiny generator (schedule 'more': an extra upsampling between the middle blocks).
    ``span``: ids that cover two classes get one noise (and remapping) row, each pixel its class's
    parameters — the public code's one-hot arithmetic."""
    cfg = tiny_config(num_upsampling_layers="more", crop_size=128, aspect_ratio=2.0)
    torch.manual_seed(0)
    G = randomize(inade.Generator(cfg)).double().train(training)
    twin = copy.deepcopy(G)
    B = 2
    H, W = cfg.output_size
    label, inst = scene(B, H, W, cfg.num_classes, seed=3, span=span)
    L = int(inst.max()) + 1
    noise = torch.randn(B, L, 2, cfg.noise_nc, dtype=torch.float64)
    z = torch.randn(B, cfg.z_dim, dtype=torch.float64)
    enc = random_remap(B, L, cfg.noise_nc) if with_remap else None
    got = G(label, inst, noise=noise, z=z, remap=enc)
    want = official_generator(twin, *one_hot_maps(label, inst, cfg.num_classes, L, torch.float64), noise, z,
                              enc, training)
    assert got.shape == (B, 3, H, W)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert want.abs().max() > 1e-4, "degenerate test: output is ~0"
    got.sum().backward()
    want.sum().backward()
    for (name, p), q in zip(G.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-12, msg=f"grad of {name}")
    for (name, b), c in zip(G.named_buffers(), twin.buffers()):
        if "num_batches" not in name:
            torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-12, msg=f"buffer {name}")


def test_remap_noise_is_n_sigma_plus_mu():
    noise = torch.randn(2, 3, 2, 4)
    mu_g, lv_g, mu_b, lv_b = (torch.randn(2, 3, 4) for _ in range(4))
    out = remap_noise(noise, (mu_g, lv_g, mu_b, lv_b))
    torch.testing.assert_close(out[:, :, 0], noise[:, :, 0] * (0.5 * lv_g).exp() + mu_g)
    torch.testing.assert_close(out[:, :, 1], noise[:, :, 1] * (0.5 * lv_b).exp() + mu_b)


# ---------------------------------------------------------------------------
# Backends agree; inputs are checked; instance-level control
# ---------------------------------------------------------------------------


def generator_step(backend, G, label, inst, noise, z, enc=None, dtype=torch.float32):
    """Output, parameter gradients and buffers after one forward+backward of a copy of ``G``."""
    G = copy.deepcopy(G).to(dtype)
    with use_backend(backend):
        y = G(label, inst, noise=noise.to(dtype), z=z.to(dtype), remap=enc)
        y.square().sum().backward()
    return y.detach(), {n: p.grad for n, p in G.named_parameters()}, dict(G.named_buffers())


def assert_within_float32_budget(got, ref32, truth, name, slack=1e-4, floor=0.0):
    """``|got − truth| ≤ 4·|ref32 − truth| + slack·max|truth| + floor``: a fused float32 path
    may be no less accurate than the float32 reference."""
    err = (got.double() - truth).abs().max().item()
    budget = 4 * (ref32.double() - truth).abs().max().item() + slack * truth.abs().max().item() + floor + 1e-9
    assert err <= budget, f"{name}: error {err:.3g} > budget {budget:.3g}"


def assert_grads_within_budget(got, ref32, truth):
    """Every gradient within the float32 budget. Some are ~0 in exact arithmetic (a conv
    bias before batch or instance norm): only rounding of the cancelling terms is left,
    whose size follows the layer's other gradients, so each gets a floor of 1e-6 × the
    largest gradient of its block (``G.head_0``, ``E.layer1`` …)."""
    def block(name):
        return ".".join(name.split(".")[:2])

    scale = {}
    for name, t in truth.items():
        scale[block(name)] = max(scale.get(block(name), 0.0), t.abs().max().item())
    for name in truth:
        assert_within_float32_budget(got[name], ref32[name], truth[name], f"grad of {name}",
                                     floor=1e-6 * scale[block(name)])


@pytest.mark.parametrize("backend", [b for b in fused_backends()])
def test_generator_backends_agree_with_reference(backend):
    """Training step (batch statistics, running-stat updates) of a tiny generator: each fused
    backend in float32 against the reference in float32 and float64."""
    cfg = tiny_config(crop_size=32)
    torch.manual_seed(0)
    G = randomize(inade.Generator(cfg)).train()
    B, (H, W) = 2, cfg.output_size
    label, inst = scene(B, H, W, cfg.num_classes, seed=5)
    L = int(inst.max()) + 1
    noise, z = torch.randn(B, L, 2, cfg.noise_nc), torch.randn(B, cfg.z_dim)
    truth = generator_step("reference", G, label, inst, noise, z, dtype=torch.float64)
    ref32 = generator_step("reference", G, label, inst, noise, z)
    got = generator_step(backend, G, label, inst, noise, z)
    assert_within_float32_budget(got[0], ref32[0], truth[0], "output")
    assert_grads_within_budget(got[1], ref32[1], truth[1])
    for name in truth[2]:
        if "num_batches" not in name:
            assert_within_float32_budget(got[2][name], ref32[2][name], truth[2][name], f"buffer {name}")


def test_generator_draws_noise_and_z_and_checks_inputs():
    cfg = tiny_config()
    G = inade.Generator(cfg).eval()
    label, inst = scene(2, 32, 32, cfg.num_classes)
    torch.manual_seed(0)
    a = G(label, inst)
    torch.manual_seed(1)
    b = G(label, inst)
    assert a.shape == (2, 3, 32, 32) and not torch.equal(a, b)
    with pytest.raises(ValueError, match=r"noise must be \[B, L, 2, noise_nc\]"):
        G(label, inst, noise=torch.randn(2, 16, 2, cfg.noise_nc + 1))
    with pytest.raises(ValueError, match=r"z must be \[B, z_dim\]"):
        G(label, inst, z=torch.randn(2, cfg.z_dim + 1))
    with pytest.raises(ValueError, match="remap mu_beta"):
        G(label, inst, remap=(torch.zeros(2, 16, 5),) * 2 + (torch.zeros(2, 16, 4),) * 2)
    with pytest.raises(TypeError, match="label must be an integer map"):
        G(label.float(), inst)
    with pytest.raises(ValueError, match=r"label has classes in \[\d, 6\] but the model has num_classes=6"):
        G(torch.where(label == 0, 6, label), inst)
    one = G(label, torch.zeros_like(inst))  # one id over every class: one noise row, as the public code
    assert one.shape == (2, 3, *cfg.output_size)


def test_resampling_one_instance_changes_mostly_that_instance():
    """Instance-level diversity (paper §3.3): new noise for instance i changes the output
    inside i far more than outside.

    Outside changes come only from the convs' receptive fields and the coarse levels
    (at 2×2 a feature spans half the image), so they are not zero. Measured with the
    public code's initialisation (tiny model, 64×64, two box instances on a background,
    six seeds): inside/outside mean |Δ| ratio 14–97 for the boxes. The threshold 5 is
    far above the 1 a model without instance control would give and well below what
    we measured.
    """
    cfg = inade.config("synthetic", ngf=8, crop_size=64)
    torch.manual_seed(0)
    G = inade.Generator(cfg).eval()
    B, H, W = 2, 64, 64
    label = torch.zeros(B, H, W, dtype=torch.long)
    inst = torch.zeros(B, H, W, dtype=torch.long)
    label[:, 16:48, 8:40], inst[:, 16:48, 8:40] = 3, 1
    label[:, 40:60, 44:60], inst[:, 40:60, 44:60] = 4, 2
    noise, z = torch.randn(B, 3, 2, cfg.noise_nc), torch.randn(B, cfg.z_dim)
    with torch.no_grad():
        y0 = G(label, inst, noise=noise, z=z)
        for i in (1, 2):
            resampled = noise.clone()
            resampled[:, i] = torch.randn_like(resampled[:, i])
            change = (G(label, inst, noise=resampled, z=z) - y0).abs().mean(1)
            inside, outside = change[inst == i].mean(), change[inst != i].mean()
            assert inside > 5 * outside, f"instance {i}: inside {inside:.3g} vs outside {outside:.3g}"
            assert inside > 0.5 * y0.abs().mean(), "the change inside is negligible"


# ---------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------


def official_instance_conv(x, inst_full, weight, bias, stride):
    """InstanceAwareConv2d.forward of the public code (unfold + einsum), 3×3, padding 1."""
    N, C, H, W = x.shape
    k = weight.shape[-1]
    instances = F.interpolate(inst_full[:, None].to(x.dtype), size=(H, W), mode="nearest")
    unfold = torch.nn.Unfold(k, stride=stride, padding=1)
    inst_unf = unfold(instances)
    center = inst_unf[:, k * k // 2][:, None]
    mask = 1.0 - torch.clamp((inst_unf - center).abs(), 0, 1)
    x_unf = unfold(x).view(N, C, k * k, -1)
    masked = (mask[:, None] * x_unf).view(N, C * k * k, -1)
    out = torch.einsum("cm,nml->ncl", weight.view(weight.shape[0], -1), masked) + bias[None, :, None]
    return out.view(N, weight.shape[0], H // stride, W // stride)


def official_encoder(E, image, inst):
    """instanceAdaptiveEncoder.forward of the public code."""
    L = int(inst.max()) + 1

    def block(layer, x, stride=1):
        x = official_instance_conv(x, inst, layer.weight, layer.bias, stride)
        return F.leaky_relu(F.instance_norm(x), 0.2)

    up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear")  # noqa: E731
    x1 = block(E.layer1, image, 2)
    x2 = block(E.layer2, x1, 2)
    x3 = block(E.layer3, x2, 2)
    x4 = block(E.layer4, x3, 2)
    y = up(block(E.middle, x4))
    y1 = up(block(E.up1, torch.cat([y, x3], 1)))
    y2 = up(block(E.up2, torch.cat([y1, x2], 1)))
    y3 = up(block(E.up3, torch.cat([y2, x1], 1)))
    onehot = F.one_hot(inst, L).permute(0, 3, 1, 2).to(image.dtype)
    outs = []
    for head in (E.scale_conv_mu, E.scale_conv_var, E.bias_conv_mu, E.bias_conv_var):
        dense = official_instance_conv(y3, inst, head.weight, head.bias, 1)
        pooled = []
        for i in range(L):  # instAvgPooling
            mask = onehot[:, i : i + 1]
            count = mask.sum((2, 3), keepdim=True)
            count[count == 0] = 1
            pooled.append(((dense * mask).sum((2, 3), keepdim=True) / count)[:, :, 0, 0])
        outs.append(torch.stack(pooled, 1))
    return tuple(outs)


def perturb_encoder(E, seed=0):
    """Weights of a larger scale than the 0.02-gain init, so the test sees real signals."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in E.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return E


@needs_encoder_ops
def test_encoder_computes_the_public_function():
    cfg = tiny_config(ngf=3, noise_nc=4)
    E = perturb_encoder(inade.NoiseEncoder(cfg)).double()
    twin = copy.deepcopy(E)
    B, H, W = 2, 32, 48
    _, inst = scene(B, H, W, cfg.num_classes, grid=5, seed=2)
    image = torch.randn(B, 3, H, W, dtype=torch.float64)
    got = E(image, inst)
    want = official_encoder(twin, image, inst)
    assert [t.shape for t in got] == [(B, int(inst.max()) + 1, 4)] * 4
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    sum(t.square().sum() for t in got).backward()
    sum(t.square().sum() for t in want).backward()
    for (name, p), q in zip(E.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-10, msg=f"grad of {name}")


def encoder_backends() -> list[str]:
    """Fused backends for the E+G run; the interpreted Triton encoder takes ~30 s even at
    32×32 (its ops are tested one by one in test_instance_conv2d / test_instance_avg_pool),
    so it runs here only on a GPU."""
    return [b for b in fused_backends() if not (b == "triton" and _backend.triton_interpreted())]


@needs_encoder_ops
@pytest.mark.parametrize("backend", encoder_backends())
def test_encoder_and_generator_backends_agree(backend):
    """E then G with the remapped noise, forward and backward (with the KL term), each
    fused backend in float32 against the reference in float32 and float64."""
    cfg = tiny_config(ngf=4, noise_nc=4)
    torch.manual_seed(0)
    E = perturb_encoder(inade.NoiseEncoder(cfg))
    G = randomize(inade.Generator(cfg))
    B, (H, W) = 2, cfg.output_size
    label, inst = scene(B, H, W, cfg.num_classes, seed=7)
    image = torch.randn(B, 3, H, W)
    L = int(inst.max()) + 1
    noise, z = torch.randn(B, L, 2, cfg.noise_nc), torch.randn(B, cfg.z_dim)

    def step(name, dtype=torch.float32):
        e, g = copy.deepcopy(E).to(dtype), copy.deepcopy(G).to(dtype)
        with use_backend(name):
            enc = e(image.to(dtype), inst)
            y = g(label, inst, noise=noise.to(dtype), z=z.to(dtype), remap=enc)
            (y.square().sum() + 1e-3 * kl_divergence(enc)).backward()
        grads = {f"E.{n}": p.grad for n, p in e.named_parameters()}
        grads.update({f"G.{n}": p.grad for n, p in g.named_parameters()})
        return [t.detach() for t in enc] + [y.detach()], grads

    truth, ref32, got = step("reference", torch.float64), step("reference"), step(backend)
    names = ["mu_gamma", "logvar_gamma", "mu_beta", "logvar_beta", "image"]
    for name, a, b, t in zip(names, got[0], ref32[0], truth[0]):
        assert_within_float32_budget(a, b, t, name)
    assert_grads_within_budget(got[1], ref32[1], truth[1])


@needs_encoder_ops
def test_encoder_checks_inputs_and_pools_to_zero_for_empty_instances():
    cfg = tiny_config(ngf=2, noise_nc=3)
    E = perturb_encoder(inade.NoiseEncoder(cfg))
    inst = torch.zeros(1, 32, 16, dtype=torch.long)
    inst[:, :8] = 2  # id 1 has no pixels
    out = E(torch.randn(1, 3, 32, 16), inst)
    for t in out:
        assert t.shape == (1, 3, 3) and t[:, 1].abs().max() == 0 and t[:, 0].abs().max() > 0
    with pytest.raises(ValueError, match="divisible by 16"):
        E(torch.randn(1, 3, 20, 16), torch.zeros(1, 20, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="more than one pixel"):
        E(torch.randn(1, 3, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="must match image"):
        E(torch.randn(1, 3, 32, 16), torch.zeros(1, 64, 16, dtype=torch.long))


def test_kl_divergence_is_the_public_sum():
    mu_g, lv_g, mu_b, lv_b = (torch.randn(2, 5, 3) for _ in range(4))
    kl = lambda m, lv: -0.5 * torch.sum(1 + lv - m.pow(2) - lv.exp())  # noqa: E731
    torch.testing.assert_close(kl_divergence((mu_g, lv_g, mu_b, lv_b)), (kl(mu_g, lv_g) + kl(mu_b, lv_b)) / 2)
    zeros = torch.zeros(2, 5, 3)
    assert kl_divergence((zeros,) * 4) == 0  # the prior itself, and empty instances, cost nothing


def test_flop_count_matches_the_layer_shapes():
    """inade.flops.count on a tiny generator equals the MACs computed from its layers' shapes,
    and the modulation op is counted at 4 FLOPs per element of every norm's input."""
    from inade import flops  # noqa: PLC0415

    cfg = tiny_config(crop_size=128, num_upsampling_layers="more", aspect_ratio=2.0)
    G = inade.Generator(cfg).eval()
    label, inst = scene(1, *cfg.output_size, cfg.num_classes)
    L = int(inst.max()) + 1
    with torch.no_grad():
        counted = flops.count(lambda: G(label, inst), modules=("fc_noise",))
    macs, modulated, noise_macs = cfg.z_dim * G.fc.out_features, 0, 0
    h, w = G.sh, G.sw
    for block, upsample in G.blocks():
        h, w = (2 * h, 2 * w) if upsample else (h, w)
        fin, fout = block.conv_0.in_channels, block.conv_1.out_channels
        fmid = block.conv_0.out_channels
        macs += (fmid * fin * 9 + fout * fmid * 9 + (fout * fin if block.learned_shortcut else 0)) * h * w
        norms = [block.norm_0, block.norm_1] + ([block.norm_s] if block.learned_shortcut else [])
        modulated += (2 * fin + fmid if block.learned_shortcut else fin + fmid) * h * w
        noise_macs += sum(2 * L * n.fc_noise.in_features * n.fc_noise.out_features for n in norms)
    macs += 3 * G.conv_img.in_channels * 9 * h * w
    assert counted["conv_linear"] == 2 * (macs + noise_macs)
    assert counted["by_module"]["fc_noise"] == 2 * noise_macs
    assert counted["inade_ops"] == 4 * modulated
    assert counted["uncounted_inade_ops"] == []


@needs_encoder_ops
def test_encoder_flop_count_matches_the_layer_shapes():
    """The instance-aware convs count 2·MACs + one compare per tap and output pixel, the
    pooling one add per input element and one divide per output."""
    from inade import flops  # noqa: PLC0415

    cfg = tiny_config(ngf=3, noise_nc=4)
    E = inade.NoiseEncoder(cfg)
    B, H, W = 2, 32, 48
    _, inst = scene(B, H, W, cfg.num_classes, grid=3)
    L = int(inst.max()) + 1
    with torch.no_grad():
        counted = flops.count(lambda: E(torch.randn(B, 3, H, W), inst))
    expected = 0
    layers = [(E.layer1, 2, 1), (E.layer2, 2, 2), (E.layer3, 2, 4), (E.layer4, 2, 8), (E.middle, 1, 16),
              (E.up1, 1, 8), (E.up2, 1, 4), (E.up3, 1, 2)]
    for layer, stride, scale in layers:  # scale: input size divisor
        ho, wo = H // scale // stride, W // scale // stride
        co, ci = layer.weight.shape[:2]
        expected += 2 * B * co * ho * wo * ci * 9 + B * ho * wo * 9
    heads = 4 * cfg.noise_nc
    expected += 2 * B * heads * H * W * cfg.ngf * 9 + B * H * W * 9  # the four heads as one conv
    expected += B * heads * H * W + B * L * heads  # pooling
    assert counted["inade_ops"] == expected
    assert counted["conv_linear"] == 0 and counted["uncounted_inade_ops"] == []


# ---------------------------------------------------------------------------
# Input checks (empty batch, extra noise rows, map size)
# ---------------------------------------------------------------------------


def test_generator_refuses_empty_batches_extra_noise_rows_and_other_sizes():
    cfg = tiny_config()
    G = inade.Generator(cfg).eval()
    label, inst = scene(2, 32, 32, cfg.num_classes)
    L = int(inst.max()) + 1
    empty = torch.zeros(0, 32, 32, dtype=torch.long)
    with pytest.raises(ValueError, match="empty batch"):
        G(empty, empty)
    with pytest.raises(ValueError, match=rf"noise has {L + 2} instance rows but inst has ids 0 \.\.\. {L - 1}"):
        G(label, inst, noise=torch.randn(2, L + 2, 2, cfg.noise_nc))
    with pytest.raises(ValueError, match=rf"remap|noise has {L + 1} instance rows"):
        G(label, inst, remap=(torch.zeros(2, L + 1, cfg.noise_nc),) * 4)
    small = inade.nn.resize_index_map(inst, (16, 16))
    with pytest.raises(ValueError, match=r"label and inst are \(16, 16\) but the model makes \(32, 32\) images"):
        G(inade.nn.resize_index_map(label, (16, 16)), small)
    with torch.no_grad():  # exactly L rows is fine
        assert G(label, inst, noise=torch.randn(2, L, 2, cfg.noise_nc)).shape == (2, 3, 32, 32)


# ---------------------------------------------------------------------------
# Spectral norm: the same as torch's in training, computed once in eval
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cin, cout, H, W", [(5, 7, 9, 11), (20, 30, 3, 2)], ids=["weight-scaled", "output-scaled"])
def test_spectral_norm_conv_trains_exactly_like_torch_spectral_norm(cin, cout, H, W):
    """Same random draws, same outputs, u/v and gradients over optimiser steps; then eval.
    (Large weights on small maps divide the output by σ instead of the weight.)"""
    torch.manual_seed(3)
    ours = inade.nn.SpectralNormConv2d(cin, cout, 3, padding=1).double()
    torch.manual_seed(3)
    theirs = torch.nn.utils.spectral_norm(torch.nn.Conv2d(cin, cout, 3, padding=1)).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())  # bias, weight_orig, weight_u, weight_v
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.5)
    opt_b = torch.optim.SGD(theirs.parameters(), lr=0.5)
    x = torch.randn(2, cin, H, W, dtype=torch.float64)
    for _ in range(3):
        ya, yb = ours(x), theirs(x)
        torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
        ya.square().sum().backward(), yb.square().sum().backward()
        torch.testing.assert_close(ours.weight_orig.grad, theirs.weight_orig.grad, rtol=1e-12, atol=1e-12)
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()
    torch.testing.assert_close(ours.weight_u, theirs.weight_u, rtol=1e-12, atol=1e-12)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k, B, C, H, W, bias", [(3, 1, 6, 16, 16, True), (3, 3, 6, 5, 7, False),
                                                (3, 1, 768, 4, 4, True), (1, 2, 6, 40, 30, False),
                                                (1, 1, 6, 6, 9, True)])
def test_gemm_conv_matches_conv2d(k, B, C, H, W, bias):
    """inade.nn.gemm_conv: the matrix-product convolution gives F.conv2d's outputs and gradients,
    through its forward/backward functions and, where it is taken, through conv2d's autograd."""
    from inade.nn import gemm_conv  # noqa: PLC0415

    torch.manual_seed(0)
    x = torch.randn(B, C, H, W, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, C, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    want = F.conv2d(x, w, b, padding=k // 2)
    y = gemm_conv.gemm_conv_forward(x.detach(), w.detach(), None if b is None else b.detach(), k // 2)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    ex, ew = torch.autograd.grad(want, (x, w), g, retain_graph=True)
    dx, dw = gemm_conv.gemm_conv_backward(g, x.detach(), w.detach(), k // 2, True, True)
    torch.testing.assert_close(dx, ex, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dw, ew, rtol=1e-12, atol=1e-12)
    assert gemm_conv.gemm_conv_backward(g, x.detach(), w.detach(), k // 2, False, True)[0] is None
    if gemm_conv.gemm_conv_wins(x, w):
        y = gemm_conv.conv2d(x, w, b, k // 2)
        inputs = (x, w) if b is None else (x, w, b)
        for got, expected in zip(torch.autograd.grad(y, inputs, g), torch.autograd.grad(want, inputs, g)):
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_gemm_conv_takes_only_the_shapes_where_it_wins():
    from inade.nn import gemm_conv  # noqa: PLC0415

    wide, narrow, w1 = torch.zeros(4, 768, 3, 3), torch.zeros(4, 512, 3, 3), torch.zeros(4, 4, 1, 1)
    small, large = torch.zeros(2, 768, 16, 16), torch.zeros(1, 768, 32, 32)  # 512 and 1024 positions
    assert gemm_conv.gemm_conv_wins(small, wide) and not gemm_conv.gemm_conv_wins(large, wide)
    assert not gemm_conv.gemm_conv_wins(torch.zeros(2, 512, 16, 16), narrow)
    assert gemm_conv.gemm_conv_wins(torch.zeros(1, 4, 64, 64), w1)  # 1×1 at any size
    assert not gemm_conv.gemm_conv_wins(small.bfloat16(), wide.bfloat16())
    assert not gemm_conv.gemm_conv_wins(small.contiguous(memory_format=torch.channels_last), wide)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not gemm_conv.gemm_conv_wins(small, wide)
    # Outside its shapes conv2d is F.conv2d itself (same kernel, bit for bit).
    x, w = torch.randn(1, 4, 32, 32), torch.randn(4, 4, 3, 3)
    assert torch.equal(gemm_conv.conv2d(x, w, None, 1), F.conv2d(x, w, None, padding=1))


def test_spectral_norm_conv_caches_in_eval_and_refreshes_on_change():
    conv = inade.nn.SpectralNormConv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 6, 6)

    def expected():
        w = conv.weight_orig
        return w / torch.dot(conv.weight_u, w.flatten(1) @ conv.weight_v)

    with torch.no_grad():
        conv(x)
        first = conv._cache[1]
        conv(x)
        assert conv._cache[1] is first, "eval forward recomputed W / sigma"
        conv.weight_orig.mul_(2)  # an in-place change (optimiser step, load_state_dict, ...)
        torch.testing.assert_close(conv(x), F.conv2d(x, expected(), conv.bias, padding=1))
        assert conv._cache[1] is not first
        conv.load_state_dict({k: v * 1.5 if k == "weight_orig" else v for k, v in conv.state_dict().items()})
        torch.testing.assert_close(conv(x), F.conv2d(x, expected(), conv.bias, padding=1))
    conv.train()
    conv(x)  # power iteration moves u, v; back in eval the cache must not be stale
    conv.eval()
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, expected(), conv.bias, padding=1))
    # With autograd on, eval mode still gives gradients to weight_orig (no cached leaf).
    conv(x).sum().backward()
    assert conv.weight_orig.grad is not None and conv.weight_orig.grad.abs().sum() > 0


# ---------------------------------------------------------------------------
# torch.compile(G, fullgraph=True): no graph break, same results as eager
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, backend",
    # Inductor on the whole training graph takes minutes on 2 cores; the training step is
    # traced fully (Dynamo fullgraph + AOTAutograd's joint graph) with aot_eager here.
    [("eval", "inductor"), ("train", "aot_eager")],
)
def test_compiled_generator_matches_eager(mode, backend):
    torch._dynamo.reset()
    cfg = tiny_config(ngf=2, noise_nc=3, z_dim=4, crop_size=32)
    torch.manual_seed(0)
    # Training is compared in float64: eager takes inade.nn.gemm_conv's kernels where they are
    # faster, the traced graph F.conv2d, and their float32 roundings differ by more than the
    # gradients of near-cancelling parameters (conv biases before a batch norm).
    dtype = torch.float64 if mode == "train" else torch.float32
    G = randomize(inade.Generator(cfg)).train(mode == "train").to(dtype)
    twin = copy.deepcopy(G)
    label, inst = scene(2, 32, 32, cfg.num_classes, seed=4, span=True)  # P > L parts: a data-dependent size
    L = int(inst.max()) + 1
    noise, z = torch.randn(2, L, 2, cfg.noise_nc, dtype=dtype), torch.randn(2, cfg.z_dim, dtype=dtype)
    compiled = torch.compile(twin, fullgraph=True, backend=backend)
    with torch.set_grad_enabled(mode == "train"):
        want = G(label, inst, noise=noise, z=z)
        got = compiled(label, inst, noise=noise, z=z)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if mode == "train":
        want.square().sum().backward()
        got.square().sum().backward()
        for (name, p), q in zip(G.named_parameters(), twin.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-7, atol=1e-9, msg=f"grad of {name}")
        for (name, b), c in zip(G.named_buffers(), twin.buffers()):
            torch.testing.assert_close(c, b, rtol=1e-7, atol=1e-9, msg=f"buffer {name}")
    with pytest.raises(Exception, match="under torch.compile pass noise"):  # Dynamo wraps the ValueError
        compiled(label, inst, z=z)


# ---------------------------------------------------------------------------
# The sketch input (--add_sketch) from files to the generator
# ---------------------------------------------------------------------------


def test_sketches_load_beside_the_labels_and_drive_the_generator(tmp_path):
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from inade.data import DatasetError, build_dataset  # noqa: PLC0415
    from inade.synthesis import Synthesizer  # noqa: PLC0415

    for d in ("images", "labels", "sketches"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        label = np.zeros((32, 32), np.uint8)
        label[8:20, 4:30] = 2
        Image.fromarray(label).save(tmp_path / "labels" / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{name}.png")
        edges = np.zeros((32, 32), np.uint8)
        edges[8, :], edges[:, 4] = 255, 128
        Image.fromarray(edges).save(tmp_path / "sketches" / f"{name}.png")
    cfg = tiny_config(add_sketch=True, dataset_mode="folder", preprocess_mode="none", no_flip=True)
    data = build_dataset(cfg, tmp_path)
    item = data[0]
    assert item["sketch"].shape == (1, 32, 32) and item["sketch"].dtype == torch.float32
    assert item["sketch"][0, 8, 5:].eq(1).all() and torch.isclose(item["sketch"][0, 0, 4], torch.tensor(128 / 255))
    G = inade.Generator(cfg).eval()
    batch = torch.utils.data.default_collate([data[0], data[1]])
    with torch.no_grad():
        a = G(batch["label"], batch["instance"], noise=torch.zeros(2, 2, 2, cfg.noise_nc), z=torch.zeros(2, 7),
              sketch=batch["sketch"])
        b = G(batch["label"], batch["instance"], noise=torch.zeros(2, 2, 2, cfg.noise_nc), z=torch.zeros(2, 7),
              sketch=torch.zeros_like(batch["sketch"]))
    assert not torch.equal(a, b), "the sketch does not reach the output"
    synth = Synthesizer(G, cfg=cfg)
    synth.sketch = batch["sketch"][:1]
    assert synth.random(batch["label"][:1], batch["instance"][:1]).image.shape == (1, 3, 32, 32)
    (tmp_path / "sketches" / "b.png").unlink()
    with pytest.raises(DatasetError, match="no sketch .*labels/b.png"):
        build_dataset(cfg, tmp_path)


def test_bfloat16_inference_keeps_casts_and_matches_autocast():
    """Under autocast in eval mode the generator reuses its cast weights (fc, spectral-normed
    convs) and gives what autocast gives with fresh casts; a weight change is seen."""
    cfg = tiny_config()
    torch.manual_seed(0)
    G = inade.Generator(cfg).eval()  # (randomize's tiny running variances would amplify bf16 rounding)
    label, inst = scene(2, 32, 32, cfg.num_classes)
    noise, z = torch.randn(2, int(inst.max()) + 1, 2, cfg.noise_nc), torch.randn(2, cfg.z_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            first, again = G(label, inst, noise=noise, z=z), G(label, inst, noise=noise, z=z)
            cached = G._fc_cast[1]
            G(label, inst, noise=noise, z=z)
            assert G._fc_cast[1] is cached
        fresh = G(label, inst, noise=noise, z=z).detach()  # autograd on: no caches
        assert first.dtype == torch.bfloat16 and torch.equal(first, again)
        assert first.abs().max() > 1e-3
        torch.testing.assert_close(first.float(), fresh.float(), rtol=2e-2, atol=2e-2 * first.abs().max().item())
        with torch.no_grad():
            G.fc.weight.mul_(2)
            G(label, inst, noise=noise, z=z)
            assert G._fc_cast[1] is not cached


# ---------------------------------------------------------------------------
# Instance ids that span classes (COCO-Stuff): one noise row, each pixel's class
# ---------------------------------------------------------------------------


def test_an_id_that_spans_classes_is_one_noise_row():
    """The generator on a map whose id 1 covers two classes equals the generator on the same map
    with that id's two class parts numbered apart and given the *same* row; the gradient of the
    row is the sum of the parts' gradients; giving the parts different rows (the old split rule)
    is another picture."""
    cfg = tiny_config(crop_size=64)
    torch.manual_seed(0)
    G = randomize(inade.Generator(cfg)).double().train()
    twin = copy.deepcopy(G)
    H, W = cfg.output_size
    label = torch.zeros(1, H, W, dtype=torch.long)
    inst = torch.zeros(1, H, W, dtype=torch.long)
    label[:, 8:24, 4:20], inst[:, 8:24, 4:20] = 2, 1
    label[:, 8:24, 20:28], inst[:, 8:24, 20:28] = 3, 1  # id 1: classes 2 and 3
    label[:, 30:, :], inst[:, 30:, :] = 4, 2
    parts, part_inst, part_cls = inade.nn.instance_parts(label, inst)
    assert part_inst.tolist() == [[0, 1, 2, 1]] and part_cls.tolist() == [[0, 2, 4, 3]]
    assert torch.equal(parts == 3, (label == 3) & (inst == 1)) and torch.equal(parts[parts != 3], inst[parts != 3])
    noise = torch.randn(1, 3, 2, cfg.noise_nc, dtype=torch.float64, requires_grad=True)
    z = torch.randn(1, cfg.z_dim, dtype=torch.float64)
    split_noise = noise.detach()[:, [0, 1, 2, 1]].clone().requires_grad_()
    got = G(label, inst, noise=noise, z=z)
    want = twin(label, parts, noise=split_noise, z=z)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    dy = torch.randn_like(got)
    got.backward(dy)
    want.backward(dy)
    shared = split_noise.grad[:, [0, 1, 2]].clone()
    shared[:, 1] += split_noise.grad[:, 3]
    torch.testing.assert_close(noise.grad, shared, rtol=1e-12, atol=1e-14)
    assert split_noise.grad[:, 3].abs().max() > 0 and split_noise.grad[:, 1].abs().max() > 0, "both parts read row 1"
    # One row per id: another value of row 1 moves both classes' pixels of id 1.
    with torch.no_grad():
        base = G(label, inst, noise=noise, z=z)
        moved = noise.detach().clone()
        moved[:, 1] += 1.0
        diff = (G(label, inst, noise=moved, z=z) - base).abs().sum(1)[0]
        assert diff[12:20, 8:16].min() > 1e-6 and diff[12:20, 22:26].min() > 1e-6
        apart = noise.detach()[:, [0, 1, 2, 1]].clone()
        apart[:, 3] += 1.0  # the split rule: a row of its own for the class-3 part
        assert not torch.allclose(G(label, parts, noise=apart, z=z), base)


def _public_code():
    """The public code's generator, encoder and model modules from ``INADE_PUBLIC_CODE`` (a
    tzt101/INADE checkout, never part of this project); skipped when it is not set. The modules
    it adds (``models``, ``util``, ``data``, stand-ins for torchvision and dill) are removed again."""
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    path = os.environ.get("INADE_PUBLIC_CODE")
    if not path:
        pytest.skip("INADE_PUBLIC_CODE is not set (a checkout of tzt101/INADE to compare with)")
    from bench import official_style  # noqa: PLC0415

    before, saved_path = set(sys.modules), list(sys.path)
    try:
        gen, _ = official_style.import_public_code(path)
        enc, _ = official_style.import_public_code(path, "models.networks.encoder")
        model, _ = official_style.import_public_code(path, "models.pix2pix_model")
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("models", "util", "data", "torchvision", "dill"):
                del sys.modules[name]
        sys.path[:] = saved_path
    return SimpleNamespace(gen=gen, enc=enc, model=model, options=official_style.public_options)


@needs_encoder_ops
def test_generator_encoder_and_edges_equal_the_public_code_on_ids_that_span_classes():
    """Raw COCO-like ids with gaps (0 for every stuff class, objects 3, 5, 8): the public code's
    generator, encoder, KL and edge map on its one-hot maps over ``max + 1`` raw ids, and ours on
    each image's compact ids (row ``k`` = the ``k``-th raw id present), float64, eval and train."""
    public = _public_code()
    cfg = tiny_config(crop_size=32)
    H, W = cfg.output_size
    g = torch.Generator().manual_seed(0)
    cells = torch.randint(0, cfg.num_classes, (2, 1, 4, 4), generator=g).float()
    label = F.interpolate(cells, size=(H, W), mode="nearest")[:, 0].long()
    raw = torch.zeros_like(label)  # stuff: id 0 whatever its class
    raw[0, 2:10, 3:15], raw[0, 18:30, 5:25], raw[1, 4:20, 4:12] = 3, 8, 5  # objects, over cell borders too
    label[0, 2:10, 3:15] = 5
    compact = [compact_ids(raw[b]) for b in range(2)]
    inst = torch.stack([ids for ids, _ in compact])
    assert spans_classes(raw[0], label[0]) and spans_classes(raw[1], label[1])
    assert spans_classes(raw[0][raw[0] > 0], label[0][raw[0] > 0]), "an object spans classes too"
    L, K = int(inst.max()) + 1, int(raw.max()) + 1
    Gp = public.gen.SPADEGenerator(public.options(cfg))
    Ep = public.enc.instanceAdaptiveEncoder(public.options(cfg))
    for m in (Gp, Ep):
        m.init_weights("xavier", 0.5)
    G = inade.load_official(inade.Generator(cfg), Gp.state_dict())
    E = inade.load_official(inade.NoiseEncoder(cfg), Ep.state_dict())
    seg = F.one_hot(label, cfg.num_classes).permute(0, 3, 1, 2).double()
    edges = public.model.Pix2PixModel.get_edges(SimpleNamespace(ByteTensor=torch.ByteTensor), raw[:, None])
    torch.testing.assert_close(instance_edges(inst, torch.float64), edges.double(),
                               rtol=0, atol=0)
    seg = torch.cat([seg, edges.double()], 1)
    onehot = F.one_hot(raw, K).permute(0, 3, 1, 2).double()
    real = torch.rand(2, 3, H, W, generator=g, dtype=torch.float64) * 2 - 1
    noise_p = torch.randn(2, K, 2, cfg.noise_nc, generator=g, dtype=torch.float64)
    noise = torch.zeros(2, L, 2, cfg.noise_nc, dtype=torch.float64)
    for b, (_, raw_of) in enumerate(compact):
        noise[b, : len(raw_of)] = noise_p[b, raw_of]
    z = torch.randn(2, cfg.z_dim, generator=g, dtype=torch.float64)
    kld = public.model.networks.KLDLoss()
    for training in (False, True):
        for m in (Gp, Ep, G, E):
            m.double().train(training)
        enc_p = Ep(real, onehot)
        Gp.opt.use_vae = True
        want = Gp(seg, z=[enc_p[0], torch.exp(0.5 * enc_p[1]), enc_p[2], torch.exp(0.5 * enc_p[3])],
                  input_instances=onehot, noise=noise_p, noise_ins=z)
        enc = E(real, inst, L)
        for b, (_, raw_of) in enumerate(compact):
            for ours, theirs in zip(enc, enc_p):
                torch.testing.assert_close(ours[b, : len(raw_of)], theirs[b, raw_of], rtol=1e-9, atol=1e-12)
                assert not ours[b, len(raw_of):].any()
        got = G(label, inst, noise=noise, z=z, remap=enc)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
        loss_p = want.square().sum() + (kld(enc_p[0], enc_p[1]) + kld(enc_p[2], enc_p[3])) / 2
        loss = got.square().sum() + kl_divergence(enc)
        torch.testing.assert_close(loss, loss_p, rtol=1e-10, atol=0)
        params_p = {**dict(Gp.named_parameters()), **{f"E.{n}": p for n, p in Ep.named_parameters()}}
        params = {**dict(G.named_parameters()), **{f"E.{n}": p for n, p in E.named_parameters()}}
        assert params.keys() == params_p.keys()
        names = sorted(params)
        theirs = torch.autograd.grad(loss_p, [params_p[n] for n in names], allow_unused=True)
        ours = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        scale = max(t.abs().max().item() for t in theirs if t is not None)
        for name, a, b, p in zip(names, ours, theirs, (params[n] for n in names)):
            a = torch.zeros_like(p) if a is None else a
            b = torch.zeros_like(p) if b is None else b
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9 * scale, msg=f"grad of {name} (training={training})")
