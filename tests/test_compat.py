"""inade.compat: the public code's modules (ILADE, InstanceAwareConv2d, instAvgPooling),
swapped into a model built the public code's way, give that model's outputs and load
its state dict as it is.

The "public way" model is written here from the key layout in tests/data and the
public code's forward passes, restated (dense one-hot maps, ``einsum``, ``unfold``,
a loop over instances) — the same approach as tests/test_models.py; no line of it is
the public code's.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import inade
from inade import compat
from test_models import official_norm

REFERENCE = Path(__file__).resolve().parent / "data"


# ---------------------------------------------------------------------------
# The public code's modules, restated
# ---------------------------------------------------------------------------


class RestatedILADE(nn.Module):
    """ILADE of the public code: BN without affine, per-pixel maps from one-hot inputs."""

    def __init__(self, config_text, norm_nc, label_nc, noise_nc, add_sketch=False):
        super().__init__()
        self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.weight = nn.Parameter(torch.rand(label_nc, norm_nc, 2))
        self.bias = nn.Parameter(torch.zeros(label_nc, norm_nc, 2))
        self.fc_noise = nn.Linear(noise_nc, norm_nc)
        self.add_sketch = add_sketch
        if add_sketch:
            self.sketch_conv = nn.Conv2d(1, norm_nc, kernel_size=3, padding=1)
            self.merge_conv = nn.Conv2d(2 * norm_nc, norm_nc, kernel_size=1, bias=False)

    def forward(self, x, segmap, input_instances=None, noise=None, sketch=None):
        # The edge channel (last) is dropped; the dense maps are tests/test_models.py's restatement.
        norm, training = self, self.training
        if isinstance(self.param_free_norm, nn.InstanceNorm2d):  # normalise here; identity statistics there
            ones = torch.ones(x.shape[1], dtype=x.dtype)
            stats = SimpleNamespace(running_mean=ones * 0, running_var=ones - 1e-5)
            norm = SimpleNamespace(param_free_norm=stats, weight=self.weight, bias=self.bias, fc_noise=self.fc_noise)
            x, training = F.instance_norm(x), False
        elif training:
            self.param_free_norm.num_batches_tracked += 1
        out = official_norm(norm, x, segmap[:, :-1], input_instances, noise, training)
        if self.add_sketch:
            s = self.sketch_conv(F.interpolate(sketch, size=x.shape[2:], mode="nearest"))
            out = self.merge_conv(torch.cat([out, s], 1))
        return out


class RestatedInstanceAwareConv2d(nn.Module):
    """InstanceAwareConv2d of the public code: unfold, 0/1 mask of equal ids, einsum."""

    def __init__(self, fin, fout, kw, stride=1, padding=1):
        super().__init__()
        self.kw, self.stride, self.padding, self.fout = kw, stride, padding, fout
        self.weight = nn.Parameter(torch.randn(fout, fin, kw, kw) * 0.3)
        self.bias = nn.Parameter(torch.randn(fout) * 0.3)

    def forward(self, x, instances, check=False):
        N, C, H, W = x.shape
        instances = F.interpolate(instances, size=(H, W), mode="nearest")
        unfold = nn.Unfold(self.kw, stride=self.stride, padding=self.padding)
        ids = unfold(instances)
        mask = 1.0 - (ids - ids[:, self.kw * self.kw // 2][:, None]).abs().clamp(0, 1)
        cols = unfold(x).view(N, C, self.kw * self.kw, -1)
        masked = (mask[:, None] * cols).view(N, C * self.kw * self.kw, -1)
        out = torch.einsum("cm,nml->ncl", self.weight.view(self.fout, -1), masked) + self.bias[None, :, None]
        ho = (H + 2 * self.padding - self.kw) // self.stride + 1  # the public code: H // stride (even H)
        wo = (W + 2 * self.padding - self.kw) // self.stride + 1
        return out.view(N, self.fout, ho, wo)


def restated_inst_avg_pooling(x, instances):
    rows = []
    for i in range(instances.shape[1]):
        mask = instances[:, i : i + 1]
        count = mask.sum((2, 3), keepdim=True)
        count[count == 0] = 1
        rows.append(((x * mask).sum((2, 3), keepdim=True) / count)[:, :, 0, 0])
    return torch.stack(rows, 1)


# ---------------------------------------------------------------------------
# A generator and an encoder built the public code's way, with pluggable modules
# ---------------------------------------------------------------------------


class PublicBlock(nn.Module):
    def __init__(self, fin, fout, opt, norm_cls):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        sn = nn.utils.spectral_norm
        self.conv_0 = sn(nn.Conv2d(fin, fmiddle, 3, padding=1))
        self.conv_1 = sn(nn.Conv2d(fmiddle, fout, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, 1, bias=False))
        text = opt.norm_G.replace("spectral", "")
        input_nc = opt.label_nc + (1 if opt.contain_dontcare_label else 0)
        self.norm_0 = norm_cls(text, fin, input_nc, opt.noise_nc, opt.add_sketch)
        self.norm_1 = norm_cls(text, fmiddle, input_nc, opt.noise_nc, opt.add_sketch)
        if self.learned_shortcut:
            self.norm_s = norm_cls(text, fin, input_nc, opt.noise_nc, opt.add_sketch)

    def forward(self, x, seg, input_instances=None, noise=None, sketch=None):
        act = lambda t: F.leaky_relu(t, 2e-1)  # noqa: E731
        x_s = self.conv_s(self.norm_s(x, seg, input_instances, noise, sketch)) if self.learned_shortcut else x
        dx = self.conv_0(act(self.norm_0(x, seg, input_instances, noise, sketch)))
        dx = self.conv_1(act(self.norm_1(dx, seg, input_instances, noise, sketch)))
        return x_s + dx


class PublicGenerator(nn.Module):
    def __init__(self, opt, norm_cls):
        super().__init__()
        self.opt, nf = opt, opt.ngf
        self.sw = opt.crop_size // 2**5
        self.sh = round(self.sw / opt.aspect_ratio)
        self.fc = nn.Linear(opt.z_dim, 16 * nf * self.sw * self.sh)
        widths = [(16, 16), (16, 16), (16, 16), (16, 8), (8, 4), (4, 2), (2, 1)]
        names = ["head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3"]
        for name, (a, b) in zip(names, widths):
            setattr(self, name, PublicBlock(a * nf, b * nf, opt, norm_cls))
        self.names = names
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, input, z=None, input_instances=None, sketch=None, noise=None, noise_ins=None):
        x = self.fc(noise_ins).view(-1, 16 * self.opt.ngf, self.sh, self.sw)
        if z is not None:  # use_vae: z = [s_mu, s_std, b_mu, b_std]
            noise = torch.stack([noise[:, :, 0] * z[1] + z[0], noise[:, :, 1] * z[3] + z[2]], 2)
        for i, name in enumerate(self.names):
            if i not in (0, 2):  # normal schedule: no upsampling before head_0 and G_middle_1
                x = F.interpolate(x, scale_factor=2)
            x = getattr(self, name)(x, input, input_instances, noise, sketch)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 2e-1)))


class PublicEncoder(nn.Module):
    def __init__(self, opt, conv_cls, pool):
        super().__init__()
        nf, self.pool = opt.ngf, pool
        spec = {"layer1": (3, nf, 2), "layer2": (nf, 2 * nf, 2), "layer3": (2 * nf, 4 * nf, 2),
                "layer4": (4 * nf, 8 * nf, 2), "middle": (8 * nf, 4 * nf, 1), "up1": (8 * nf, 2 * nf, 1),
                "up2": (4 * nf, nf, 1), "up3": (2 * nf, nf, 1)}
        for name, (a, b, s) in spec.items():
            setattr(self, name, conv_cls(a, b, 3, stride=s, padding=1))
        self.heads = ("scale_conv_mu", "scale_conv_var", "bias_conv_mu", "bias_conv_var")
        for name in self.heads:
            setattr(self, name, conv_cls(nf, opt.noise_nc, 3, stride=1, padding=1))

    def forward(self, x, input_instances):
        ids = torch.argmax(input_instances, 1, keepdim=True).float()
        block = lambda layer, t: F.leaky_relu(F.instance_norm(layer(t, ids)), 0.2)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear")  # noqa: E731
        skips = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):  # stride-2 downs
            x = block(layer, x)
            skips.append(x)
        y = up(block(self.middle, x))
        for layer, skip in zip((self.up1, self.up2, self.up3), reversed(skips[:-1])):  # ups with skips
            y = up(block(layer, torch.cat([y, skip], 1)))
        return tuple(self.pool(getattr(self, h)(y, ids), input_instances) for h in self.heads)


def options(**kw):
    base = dict(norm_G="spectralspadesyncbatch3x3", label_nc=5, contain_dontcare_label=False, ngf=2, z_dim=6,
                noise_nc=3, crop_size=32, aspect_ratio=1.0, add_sketch=False)
    return SimpleNamespace(**{**base, **kw})


def public_keys(name, part):
    return {e["key"]: tuple(e["shape"]) for e in json.loads((REFERENCE / f"official_state_dict_{name}.json").read_text())[part]}


# ---------------------------------------------------------------------------
# Inputs the public code's way (preprocess_input): one-hot maps
# ---------------------------------------------------------------------------


def public_inputs(B, H, W, label_nc, seed=0, grid=3, span=True):
    """One-hot classes ⊕ an instance-edge channel, one-hot instances; instance 0 of image 1
    spans two classes (the dense maps allow it)."""
    g = torch.Generator().manual_seed(seed)
    K = grid * grid
    cells = torch.stack([torch.randperm(K, generator=g) for _ in range(B)]).view(B, 1, grid, grid).float()
    inst = F.interpolate(cells, size=(H, W), mode="nearest")[:, 0].long()
    label = torch.randint(0, label_nc, (K,), generator=g)[inst]
    if B > 1 and span:
        label[1, : H // 3, : W // 3] = (label[1, 0, 0] + 1) % label_nc
    seg = F.one_hot(label, label_nc).permute(0, 3, 1, 2).double()
    edges = torch.zeros(B, 1, H, W, dtype=torch.float64)
    edges[:, :, 1:] = (inst[:, 1:] != inst[:, :-1])[:, None].double()
    onehot = F.one_hot(inst, K).permute(0, 3, 1, 2).double().contiguous()
    return torch.cat([seg, edges], 1), onehot


def assert_grads_close(public, swapped):
    """Every gradient within 1e-9 of the largest gradient of its block (float64; the two paths sum
    in different orders, and some gradients — a conv bias before batch norm — are ~0 but rounding)."""
    scale = {}
    for name, p in public.named_parameters():
        scale[name.split(".")[0]] = max(scale.get(name.split(".")[0], 0.0), p.grad.abs().max().item())
    for (name, p), q in zip(public.named_parameters(), swapped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-9 * scale[name.split('.')[0]] + 1e-12, msg=f"grad of {name}")


def perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return model


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_the_public_way_model_has_the_public_keys():
    """The test's model is the public layout (CelebAMask-HQ, meta device), and the compat
    modules swapped in keep every key and shape."""
    opt = options(label_nc=19, ngf=64, z_dim=256, noise_nc=64, crop_size=256)
    with torch.device("meta"):
        for norm_cls in (RestatedILADE, compat.ILADE):
            G = PublicGenerator(opt, norm_cls)
            assert {k: tuple(v.shape) for k, v in G.state_dict().items()} == public_keys("celeba", "generator")
        for conv_cls in (RestatedInstanceAwareConv2d, compat.InstanceAwareConv2d):
            E = PublicEncoder(opt, conv_cls, compat.instAvgPooling)
            assert {k: tuple(v.shape) for k, v in E.state_dict().items()} == public_keys("celeba", "encoder")


@pytest.mark.parametrize("sketch", [False, True], ids=["plain", "sketch"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_compat_norms_in_a_public_generator_give_its_outputs(training, sketch):
    opt = options(add_sketch=sketch)
    torch.manual_seed(0)
    public = perturb(PublicGenerator(opt, RestatedILADE)).double().train(training)
    swapped = PublicGenerator(opt, compat.ILADE).double().train(training)
    result = swapped.load_state_dict(public.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    B, H, W = 2, 32, 32
    seg, onehot = public_inputs(B, H, W, opt.label_nc)
    K = onehot.shape[1]
    noise = torch.randn(B, K, 2, opt.noise_nc, dtype=torch.float64)
    z_in = torch.randn(B, opt.z_dim, dtype=torch.float64)
    z = [torch.randn(B, K, opt.noise_nc, dtype=torch.float64) * 0.5 for _ in range(4)]
    edges = (torch.rand(B, 1, H, W, generator=torch.Generator().manual_seed(1)) > 0.8).double() if sketch else None
    want = public(seg, z=z, input_instances=onehot, sketch=edges, noise=noise, noise_ins=z_in)
    got = swapped(seg, z=z, input_instances=onehot, sketch=edges, noise=noise, noise_ins=z_in)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert want.abs().max() > 1e-3
    want.square().sum().backward()
    got.square().sum().backward()
    assert_grads_close(public, swapped)
    for (name, b), c in zip(public.named_buffers(), swapped.buffers()):
        torch.testing.assert_close(c, b, rtol=1e-10, atol=1e-12, msg=f"buffer {name}")


def test_compat_conv_and_pooling_in_a_public_encoder_give_its_outputs():
    opt = options(ngf=3, noise_nc=4)
    torch.manual_seed(0)
    public = PublicEncoder(opt, RestatedInstanceAwareConv2d, restated_inst_avg_pooling).double()
    swapped = PublicEncoder(opt, compat.InstanceAwareConv2d, compat.instAvgPooling).double()
    result = swapped.load_state_dict(public.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    _, onehot = public_inputs(2, 32, 48, opt.label_nc, seed=2, grid=4)
    onehot[1, 5] = 0  # an instance with no pixels in image 1 ...
    onehot[1, 0][onehot[1].sum(0) == 0] = 1  # ... its pixels join instance 0
    image = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    want, got = public(image, onehot), swapped(image, onehot)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    sum(t.square().sum() for t in want).backward()
    sum(t.square().sum() for t in got).backward()
    assert_grads_close(public, swapped)


@pytest.mark.parametrize("stride", [1, 2])
def test_instance_aware_conv_accepts_odd_sizes(stride):
    torch.manual_seed(0)
    public = RestatedInstanceAwareConv2d(4, 5, 3, stride=stride).double()
    ours = compat.InstanceAwareConv2d(4, 5, 3, stride=stride).double()
    ours.load_state_dict(public.state_dict())
    x = torch.randn(2, 4, 13, 9, dtype=torch.float64)
    ids = torch.randint(0, 4, (2, 1, 26, 18)).double()
    torch.testing.assert_close(ours(x, ids, check=True), public(x, ids), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="whole non-negative ids"):
        ours(x, ids + 0.5, check=True)


@pytest.mark.parametrize("config_text", ["spadesyncbatch3x3", "spadeinstance3x3"])
def test_ilade_alone_at_odd_sizes(config_text):
    torch.manual_seed(0)
    public = RestatedILADE(config_text, 6, 5, 3).double()
    if "instance" in config_text:
        public.param_free_norm = nn.InstanceNorm2d(6, affine=False)
    ours = compat.ILADE(config_text, 6, 5, 3).double()
    assert not ours.load_state_dict(public.state_dict(), strict=False).unexpected_keys
    seg, onehot = public_inputs(2, 21, 15, 5, seed=3)
    noise = torch.randn(2, onehot.shape[1], 2, 3, dtype=torch.float64)
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(ours(x, seg, onehot, noise), public(x, seg, onehot, noise), rtol=1e-10, atol=1e-10)


class _LargestOutput(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:  # no new memory
            return out
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_ilade_builds_no_map_of_the_one_hot_size():
    """With many instances and few channels, every tensor the norm makes is far smaller than
    the one-hot input [B, K, H, W] (the public code's einsums make several of that size)."""
    norm = compat.ILADE("spadebatch3x3", 4, 5, 3)
    seg, onehot = public_inputs(1, 64, 64, 5, seed=0, grid=8)  # K = 64
    seg, onehot = seg.float(), onehot.float()
    x = torch.randn(1, 4, 64, 64)
    noise = torch.randn(1, 64, 2, 3)
    with _LargestOutput() as mode:
        norm(x, seg, onehot, noise)
    assert mode.largest <= x.numel() < onehot.numel() // 8


def test_ilade_errors_name_the_argument():
    norm = compat.ILADE("spadesyncbatch3x3", 4, 5, 3, add_sketch=True)
    seg, onehot = public_inputs(1, 8, 8, 5)
    seg, onehot = seg.float(), onehot.float()
    noise = torch.randn(1, onehot.shape[1], 2, 3)
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="sketch input should not be None"):
        norm(x, seg, onehot, noise)
    with pytest.raises(ValueError, match=r"segmap must be \[B, label_nc \+ 1, H, W\]"):
        norm(x, seg[:, :-1], onehot, noise, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="noise must be"):
        norm(x, seg, onehot, noise[:, :-1], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="no hot channel"):
        norm(x, seg, onehot * 0, noise, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="config_text"):
        compat.ILADE("batch3x3", 4, 5, 3)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_our_generator_with_sketch_is_the_public_way_model(training):
    """inade.Generator(add_sketch=True) takes the public-way model's state dict as it is
    (sketch_conv / merge_conv keys in every norm) and gives its outputs from index maps, also
    where an instance spans two classes (one noise row, each pixel's class parameters)."""
    opt = options(add_sketch=True)
    torch.manual_seed(0)
    public = perturb(PublicGenerator(opt, RestatedILADE)).double().train(training)
    cfg = inade.config("synthetic", label_nc=opt.label_nc, ngf=opt.ngf, z_dim=opt.z_dim, noise_nc=opt.noise_nc,
                       crop_size=opt.crop_size, add_sketch=True)
    G = inade.load_official(inade.Generator(cfg), public.state_dict()).double().train(training)
    assert any(k.endswith("norm_0.sketch_conv.weight") for k in G.state_dict())
    seg, onehot = public_inputs(2, 32, 32, opt.label_nc, seed=5)
    label, inst = seg[:, :-1].argmax(1), onehot.argmax(1)
    assert inade.nn.instance_parts(label, inst)[1].shape[1] > onehot.shape[1], "no instance spans two classes"
    K = onehot.shape[1]
    noise = torch.randn(2, K, 2, opt.noise_nc, dtype=torch.float64)
    z = torch.randn(2, opt.z_dim, dtype=torch.float64)
    edges = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.8).double()
    want = public(seg, input_instances=onehot, sketch=edges, noise=noise, noise_ins=z)
    got = G(label, inst, noise=noise, z=z, sketch=edges)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="add_sketch=True: pass sketch"):
        G(label, inst, noise=noise, z=z)
