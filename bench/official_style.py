"""Official-style baselines: our own re-implementation of the *approach* of the
authors' public code (tzt101/INADE), kept for benchmarks only and labelled as such.

That code builds dense one-hot maps ``[B, L, H, W]`` and combines them with
``einsum`` in every norm layer, pools per instance with a Python loop over
instances, and runs the instance-aware convolution on a full ``unfold`` of its
input. No line of it is copied here: these functions reproduce what it computes
and how much memory it touches, so that speed-ups are measured against it.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def one_hot_map(index: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, H, W]`` ids -> dense ``[B, num_classes, H, W]`` one-hot map (as the public code builds)."""
    return F.one_hot(index.long(), num_classes).permute(0, 3, 1, 2).to(dtype)


def modulation(x, inst, gamma, beta, *, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5):
    """instance_modulation the public code's way: one-hot instance map, two ``einsum``s to
    per-pixel ``γ, β`` maps ``[B, C, H, W]``, then batch norm and modulation."""
    onehot = one_hot_map(inst, gamma.shape[1], x.dtype)
    gamma_map = torch.einsum("blc,blhw->bchw", gamma, onehot)
    beta_map = torch.einsum("blc,blhw->bchw", beta, onehot)
    x_hat = F.batch_norm(x, running_mean, running_var, None, None, training, momentum, eps)
    return x_hat * gamma_map + beta_map


def avg_pool_loop(x, inst, num_instances):
    """instance_avg_pool the public code's way: a dense one-hot instance map, then a
    Python loop over instances, each masking the whole map and summing it, divided by
    the instance's pixel count (1 where empty, so empty instances give 0).

    ``x`` is one ``[B, C, H, W]`` map or a tuple/list of them (the encoder pools four
    maps, each with its own loop, as the public code does); returns ``[B, L, C]`` or
    a tuple of them.
    """
    if isinstance(x, (list, tuple)):
        return tuple(avg_pool_loop(t, inst, num_instances) for t in x)
    # Contiguous [B, L, H, W], as the public code builds it (scatter_ into zeros).
    onehot = one_hot_map(inst, num_instances, x.dtype).contiguous()
    rows = []
    for l in range(num_instances):
        mask = onehot[:, l : l + 1]  # [B, 1, H, W]
        pixels = mask.sum((2, 3), keepdim=True)
        pixels = torch.where(pixels == 0, torch.ones_like(pixels), pixels)
        rows.append(((x * mask).sum((2, 3), keepdim=True) / pixels)[:, :, 0, 0])  # [B, C]
    return torch.stack(rows, 1)


def conv2d_unfold(x, inst, weight, bias, stride, padding):
    """instance_conv2d the public code's way: a full ``unfold`` of the input ``[B, C·k², P]``
    and of the (float) id map ``[B, k², P]``, a 0/1 mask from ``1 − clamp(|id − centre id|, 0, 1)``
    broadcast over the channels, and an ``einsum`` with the flattened weight, plus the bias.
    No renormalisation (the public code has none)."""
    B, C, H, W = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    h_out, w_out = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    ids = F.unfold(inst[:, None].to(x.dtype), k, padding=padding, stride=stride)
    mask = 1.0 - (ids - ids[:, k * k // 2 : k * k // 2 + 1]).abs().clamp(0, 1)
    cols = F.unfold(x, k, padding=padding, stride=stride).view(B, C, k * k, -1)
    masked = (cols * mask[:, None]).view(B, C * k * k, -1)
    y = torch.einsum("ok,bkp->bop", weight.reshape(c_out, -1), masked)
    if bias is not None:
        y = y + bias[None, :, None]
    return y.view(B, c_out, h_out, w_out)


def inade_norm_layer(norm, x, seg_onehot, inst_onehot, noise):
    """One INADE norm layer the public code's way (``ILADE.forward``): per-pixel class maps
    from the label one-hot ``seg_onehot [B, L_m, H, W]`` and per-pixel noise maps from the
    instance one-hot ``inst_onehot [B, L, H, W]``, six ``einsum``s over dense maps, then
    batch norm and modulation. ``norm`` is an :class:`inade.nn.INADENorm` (its parameters)."""
    mapped = norm.fc_noise(noise)  # [B, L, 2, C]
    bn = norm.param_free_norm
    normalized = F.batch_norm(x, bn.running_mean, bn.running_var, None, None, True, bn.momentum, bn.eps)
    maps = []
    for k in range(2):  # 0: gamma, 1: beta
        a = torch.einsum("mc,bmhw->bchw", norm.weight[..., k], seg_onehot)
        b = torch.einsum("mc,bmhw->bchw", norm.bias[..., k], seg_onehot)
        n = torch.einsum("blc,blhw->bchw", mapped[:, :, k], inst_onehot)
        maps.append(a * n + b)
    return maps[0] * normalized + maps[1]


# ---------------------------------------------------------------------------
# The public code itself, where it is available (a checkout passed by path)
# ---------------------------------------------------------------------------


def _stub_unused_imports() -> list[str]:
    """Stand-ins for modules the public code imports but its generator and encoder never use
    (torchvision for the VGG loss, dill for option pickling), where they do not import here."""
    import importlib  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import types  # noqa: PLC0415

    stubbed = []
    for name in ("torchvision", "dill"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - torchvision fails beside a local torch build
            module = types.ModuleType(name)
            module.models = types.SimpleNamespace()
            sys.modules[name] = module
            stubbed.append(name)
    return stubbed


def import_public_code(path, module: str = "models.networks.generator"):
    """``(module, stubbed)``: ``module`` (default ``models.networks.generator``) of a tzt101/INADE
    checkout at ``path`` (never part of this project), and the names of the modules stubbed to import it."""
    import importlib  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    root = Path(path).resolve()
    if not (root / "models" / "networks" / "normalization.py").is_file():
        raise FileNotFoundError(f"{root} is not a checkout of tzt101/INADE (no models/networks/normalization.py)")
    stubbed = _stub_unused_imports()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(module), stubbed


@contextlib.contextmanager
def public_code_on_cpu(code_dir, vgg_features):
    """Import the public code's ``models.networks`` (for its trainer and losses) with
    ``torchvision.models.vgg19`` giving ``vgg_features`` (a random VGG19 in torchvision's
    layout) and ``Module.cuda`` a no-op within the block (its ``VGGLoss`` calls ``.cuda()``)."""
    import sys  # noqa: PLC0415
    import types  # noqa: PLC0415

    import_public_code(code_dir, "models.networks")
    tv = sys.modules["torchvision"]
    if not hasattr(tv, "models"):
        tv.models = types.SimpleNamespace()
    tv.models.vgg19 = lambda *a, **k: types.SimpleNamespace(features=vgg_features)
    saved = torch.nn.Module.cuda
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.nn.Module.cuda = saved


def public_options(cfg, **overrides):
    """The public code's option namespace for an :func:`inade.config` (generator and encoder)."""
    from types import SimpleNamespace  # noqa: PLC0415

    opt = dict(
        netG="spade", norm_mode="inade", norm_G=cfg.norm_G, ngf=cfg.ngf, z_dim=cfg.z_dim, noise_nc=cfg.noise_nc,
        label_nc=cfg.label_nc, contain_dontcare_label=cfg.contain_dontcare_label, no_instance=cfg.no_instance,
        semantic_nc=cfg.semantic_nc, crop_size=cfg.crop_size, aspect_ratio=cfg.aspect_ratio,
        num_upsampling_layers=cfg.num_upsampling_layers, use_vae=False, add_sketch=cfg.add_sketch,
    )
    return SimpleNamespace(**{**opt, **overrides})


def public_generator_inputs(label, inst, cfg, dtype=torch.float32):
    """What the public code's ``preprocess_input`` hands its generator: the one-hot label map
    with the instance-edge channel last ``[B, semantic_nc, H, W]``, and the one-hot instance
    map ``[B, inst.max() + 1, H, W]``."""
    from inade.models.discriminator import instance_edges  # noqa: PLC0415

    seg = torch.zeros(label.shape[0], cfg.num_classes, *label.shape[1:], dtype=dtype, device=label.device)
    seg.scatter_(1, label[:, None].long(), 1.0)
    seg = torch.cat([seg, instance_edges(inst, dtype)], 1)
    onehot = torch.zeros(inst.shape[0], int(inst.max()) + 1, *inst.shape[1:], dtype=dtype, device=inst.device)
    return seg, onehot.scatter_(1, inst[:, None].long(), 1.0)
