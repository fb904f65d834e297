"""The INADE generator (paper §3, supplementary Fig. 8): a SPADE-style decoder whose
every normalisation is an INADE norm.

Structure (names are the public code's, so its checkpoints load key for key):
``fc`` maps ``z`` to a ``16·ngf × sh × sw`` map; seven residual blocks ``head_0``,
``G_middle_0``, ``G_middle_1``, ``up_0`` … ``up_3`` (and ``up_4`` for ``most``)
with nearest ×2 upsampling between them; ``conv_img`` after a leaky ReLU; tanh.

Where the paper and the public code (tzt101/INADE, commit 770a667) differ, this
follows the code:

* The generator's input is ``fc(z)`` with ``z ~ N(0, I)`` of size ``z_dim`` (256),
  also when the encoder is used; the encoder only remaps the norm noise.
* The norm output is ``γ·x̂ + β`` (no ``1 +``); one linear map ``fc_noise`` per norm
  serves the γ and the β noise (the paper's ``F_γ^i`` and ``F_β^i`` share weights).
* The learned shortcut is ``conv_s(norm_s(x))``: no activation, 1×1 conv without bias.
* All norms read the same noise ``[B, L, 2, noise_nc]`` (index 0 γ, 1 β), remapped
  once by the encoder's output as ``N·exp(½·logvar) + μ``.
* The norms never see the instance-edge map (the discriminator does).
* With ``cfg.add_sketch`` (the public code's 2021-12 update) every norm also reads an
  edge map ``sketch [B, 1, H, W]`` beside the label (:class:`inade.nn.INADENorm`).

Inference does no redundant work: spectral norm's ``W / σ`` is computed once in eval
mode (:class:`inade.nn.SpectralNormConv2d`), activations run channels-last on GPU
(``Generator.channels_last``), leaky ReLUs run in place when no autograd graph needs their input, and the
value-reading input checks run inside one custom op, so ``torch.compile(G,
fullgraph=True)`` traces the whole forward (pass ``noise`` — or ``remap`` — when
compiling: without it the number of instances is read from the map).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.config import Config
from inade.nn import (
    INADENorm,
    IndexPyramid,
    SpectralNormConv2d,
    check_integer_map,
    init_weights,
    instance_parts,
    leaky_relu,
    upsample_nearest2x,
)


def _conv(fin: int, fout: int, kernel_size: int, bias: bool, spectral: bool) -> nn.Module:
    if spectral:
        return SpectralNormConv2d(fin, fout, kernel_size, padding=kernel_size // 2, bias=bias)
    return nn.Conv2d(fin, fout, kernel_size, padding=kernel_size // 2, bias=bias)


class INADEResnetBlock(nn.Module):
    """Residual block of INADE norms and 3×3 convs (public code: ``SPADEResnetBlock``).

    ``out = shortcut(x) + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x))))))`` with
    ``shortcut(x) = conv_s(norm_s(x))`` when ``fin != fout`` (no activation, 1×1, no
    bias), else ``x``. Spectral norm on ``conv_0``, ``conv_1``, ``conv_s`` when
    ``cfg.norm_G`` starts with ``spectral``; sketch branches in the norms with ``cfg.add_sketch``.
    """

    def __init__(self, fin: int, fout: int, cfg: Config):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = _conv(fin, fmiddle, 3, True, cfg.spectral)
        self.conv_1 = _conv(fmiddle, fout, 3, True, cfg.spectral)
        if self.learned_shortcut:
            self.conv_s = _conv(fin, fout, 1, False, cfg.spectral)
        sketch = getattr(cfg, "add_sketch", False)
        self.norm_0 = INADENorm(fin, cfg.num_classes, cfg.noise_nc, add_sketch=sketch)
        self.norm_1 = INADENorm(fmiddle, cfg.num_classes, cfg.noise_nc, add_sketch=sketch)
        if self.learned_shortcut:
            self.norm_s = INADENorm(fin, cfg.num_classes, cfg.noise_nc, add_sketch=sketch)

    def forward(self, x: Tensor, inst: Tensor, cls: Tensor, noise: Tensor, sketch: Tensor | None = None) -> Tensor:
        """``x [B, fin, h, w]``, ``inst [B, h, w]`` at x's resolution, ``cls [B, L]``,
        ``noise [B, L, 2, noise_nc]``, ``sketch [B, 1, h, w]`` or ``None`` -> ``[B, fout, h, w]``."""
        x_s = self.conv_s(self.norm_s(x, inst, cls, noise, sketch)) if self.learned_shortcut else x
        # The norms' outputs are fresh tensors their ops do not save: the activations run in place.
        dx = self.conv_0(leaky_relu(self.norm_0(x, inst, cls, noise, sketch), fresh=True))
        dx = self.conv_1(leaky_relu(self.norm_1(dx, inst, cls, noise, sketch), fresh=True))
        return x_s + dx


def remap_noise(noise: Tensor, remap) -> Tensor:
    """Prior noise remapping (paper §3.4 as the public code applies it).

    ``Ñ_γ = N_γ·exp(½·logvar_γ) + μ_γ``, likewise β, per instance and channel: the
    paper's perturbation scale ``ã`` is ``exp(½·logvar)`` and its shift ``b̃`` is ``μ``,
    the encoder's outputs read as a Gaussian's parameters (hence the KL term, Eq. 9).

    Args:
        noise: ``[B, L, 2, noise_nc]`` (index 0 γ, 1 β).
        remap: ``(mu_gamma, logvar_gamma, mu_beta, logvar_beta)``, each ``[B, L, noise_nc]``
            (the output of :class:`inade.NoiseEncoder`).
    """
    mu_g, logvar_g, mu_b, logvar_b = remap
    gamma = noise[:, :, 0] * torch.exp(0.5 * logvar_g) + mu_g
    beta = noise[:, :, 1] * torch.exp(0.5 * logvar_b) + mu_b
    return torch.stack([gamma, beta], dim=2)


def part_rows(table: Tensor, part_inst: Tensor, num_instances: int) -> Tensor:
    """The rows of a per-instance table ``[B, L, …]`` for each part: ``table[b, part_inst[b, p]]``
    -> ``[B, P, …]`` (see :func:`inade.nn.instance_parts`). The gradient of a row is the sum over
    its parts. When every id lies in one class (``P = L``, ``part_inst`` = ``0 … L-1``) the
    table itself is returned (outside ``torch.compile``, where ``P`` is not known)."""
    if not torch.compiler.is_compiling() and part_inst.shape[1] == num_instances:
        return table
    B, P = part_inst.shape
    index = part_inst.reshape(B, P, *([1] * (table.dim() - 2))).expand(B, P, *table.shape[2:])
    return table.gather(1, index)


class SketchPyramid:
    """A float edge map ``[B, 1, H, W]`` resized (nearest, as the public code's norms do) once per
    resolution and shared by every norm of a forward; ``None`` stays ``None``."""

    def __init__(self, sketch: Tensor | None):
        self.full = sketch
        self._levels: dict[tuple[int, int], Tensor] = {}

    def at(self, size) -> Tensor | None:
        if self.full is None:
            return None
        size = (int(size[0]), int(size[1]))
        if size not in self._levels:
            self._levels[size] = F.interpolate(self.full, size=size, mode="nearest")
        return self._levels[size]


class Generator(nn.Module):
    """INADE generator: ``G(label, inst, noise=None, z=None, remap=None, sketch=None) -> image``.

    Args:
        cfg: an :func:`inade.config` (``ngf``, ``z_dim``, ``noise_nc``, ``label_nc`` …).

    Attributes:
        channels_last: run the activations in the channels-last layout. ``None`` (default):
            on GPU yes (faster convolutions), on CPU no — there the convolutions gain little
            in float32 and the C++ modulation kernel is ~10× slower on channels-last input
            (measured: C128 128×128, 5.7 vs 58 ms). The output is contiguous either way.

    The per-resolution index maps and the part → (instance, class) tables are computed
    once per forward and shared by every norm layer.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.channels_last: bool | None = None
        nf = cfg.ngf
        self.sh, self.sw = cfg.latent_size
        self.fc = nn.Linear(cfg.z_dim, 16 * nf * self.sh * self.sw)
        self.head_0 = INADEResnetBlock(16 * nf, 16 * nf, cfg)
        self.G_middle_0 = INADEResnetBlock(16 * nf, 16 * nf, cfg)
        self.G_middle_1 = INADEResnetBlock(16 * nf, 16 * nf, cfg)
        self.up_0 = INADEResnetBlock(16 * nf, 8 * nf, cfg)
        self.up_1 = INADEResnetBlock(8 * nf, 4 * nf, cfg)
        self.up_2 = INADEResnetBlock(4 * nf, 2 * nf, cfg)
        self.up_3 = INADEResnetBlock(2 * nf, 1 * nf, cfg)
        final_nc = nf
        if cfg.num_upsampling_layers == "most":
            self.up_4 = INADEResnetBlock(nf, nf // 2, cfg)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, kernel_size=3, padding=1)
        self._fc_cast: tuple | None = None  # fc's weights in the autocast dtype (eval, no autograd)
        init_weights(self, cfg.init_variance)

    def blocks(self) -> list[tuple[INADEResnetBlock, bool]]:
        """``(block, upsample_before)`` in forward order (the normal/more/most schedule)."""
        extra = self.cfg.num_upsampling_layers in ("more", "most")
        order = [(self.head_0, False), (self.G_middle_0, True), (self.G_middle_1, extra)]
        order += [(self.up_0, True), (self.up_1, True), (self.up_2, True), (self.up_3, True)]
        if self.cfg.num_upsampling_layers == "most":
            order.append((self.up_4, True))
        return order

    def forward(self, label: Tensor, inst: Tensor, noise: Tensor | None = None, z: Tensor | None = None,
                remap=None, sketch: Tensor | None = None) -> Tensor:
        """Synthesise images.

        Args:
            label: ``[B, H, W]`` integer class map, ids in ``[0, num_classes)``, ``(H, W) =
                cfg.output_size``.
            inst: ``[B, H, W]`` integer instance map with compact ids ``0 … L-1`` (for
                data without instances pass ``label``). An id may cover pixels of several
                classes: as in the public code it is one instance (one noise row, one
                remapping row) and every pixel takes its own class's parameters
                (:func:`inade.nn.instance_parts`).
            noise: ``[B, L, 2, noise_nc]`` shared by all norms (index 0 γ, 1 β), one row per
                instance id of ``inst`` (``L = inst.max() + 1``); drawn from ``N(0, I)`` when ``None``.
            z: ``[B, z_dim]`` input of ``fc``; drawn from ``N(0, I)`` when ``None``.
            remap: encoder output ``(mu_γ, logvar_γ, mu_β, logvar_β)``, each
                ``[B, L, noise_nc]``; when given the noise becomes ``N·exp(½·logvar) + μ``.
            sketch: ``[B, 1, H, W]`` float edge map in ``[0, 1]``; required when
                ``cfg.add_sketch``, refused otherwise.

        Returns:
            ``[B, 3, H, W]`` in ``(-1, 1)``, dtype of the model (or of autocast), contiguous.
        """
        # Part 1. Inputs: z, the noise, the instance -> class table.
        B = self._check_maps(label, inst)
        self._check_sketch(sketch, B)
        dtype, device = self.fc.weight.dtype, self.fc.weight.device
        num_instances = self._num_instances(inst, noise, remap)
        if z is None:
            z = torch.randn(B, self.cfg.z_dim, dtype=dtype, device=device)
        self._check_z(z, B)
        if noise is None:
            noise = torch.randn(B, num_instances, 2, self.cfg.noise_nc, dtype=dtype, device=device)
        self._check_noise(noise, B, num_instances)
        if remap is not None:
            self._check_remap(remap, B, num_instances)
            noise = remap_noise(noise, remap)
        # An id that spans classes is one noise row read by each of its class-pure parts.
        parts, part_inst, cls = instance_parts(label, inst, num_instances, num_classes=self.cfg.num_classes,
                                               exact=True, hint=self._label_hint())
        noise = part_rows(noise, part_inst, num_instances)
        pyramid, sketches = IndexPyramid(parts), SketchPyramid(sketch)

        # Part 2. The main branch.
        x = self._input_layer(z).view(B, 16 * self.cfg.ngf, self.sh, self.sw)
        if self.channels_last or (self.channels_last is None and x.device.type == "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        for block, upsample in self.blocks():
            if upsample:
                x = upsample_nearest2x(x)
            size = x.shape[-2:]
            x = block(x, pyramid.at(size), cls, noise, sketches.at(size))
        x = self.conv_img(leaky_relu(x, fresh=True))  # the last block's sum, saved by nothing
        return torch.tanh(x).contiguous()

    def _input_layer(self, z: Tensor) -> Tensor:
        """``fc(z)``; in inference under autocast its weights (a fifth of the model) are cast
        once and kept until they change, instead of on every forward."""
        device = z.device.type
        if (self.training or torch.is_grad_enabled() or torch.compiler.is_compiling()
                or not torch.is_autocast_enabled(device)):
            return self.fc(z)
        dtype = torch.get_autocast_dtype(device)
        w, b = self.fc.weight, self.fc.bias
        key = (w.data_ptr(), w._version, b.data_ptr(), b._version, dtype)
        if self._fc_cast is None or self._fc_cast[0] != key:
            self._fc_cast = (key, w.to(dtype), b.to(dtype))
        return F.linear(z.to(dtype), self._fc_cast[1], self._fc_cast[2])

    # -- input checks (shapes, dtypes, devices: no value is read here) -------------
    def _check_maps(self, label: Tensor, inst: Tensor) -> int:
        check_integer_map(label, "label")
        check_integer_map(inst, "inst")
        if label.shape != inst.shape:
            raise ValueError(f"label {tuple(label.shape)} and inst {tuple(inst.shape)} must have one shape")
        if label.shape[0] == 0:
            raise ValueError(f"label and inst have an empty batch (shape {tuple(label.shape)}): pass at least one map")
        expected = tuple(self.cfg.output_size)
        if tuple(label.shape[1:]) != expected:
            raise ValueError(
                f"label and inst are {tuple(label.shape[1:])} but the model makes {expected} images "
                f"(crop_size={self.cfg.crop_size}, aspect_ratio={self.cfg.aspect_ratio}, num_upsampling_layers="
                f"{self.cfg.num_upsampling_layers!r}): resize the maps (nearest) or build the model for their size"
            )
        if label.device != self.fc.weight.device or inst.device != self.fc.weight.device:
            raise ValueError(
                f"label ({label.device}) and inst ({inst.device}) must be on the model's device "
                f"({self.fc.weight.device})"
            )
        return label.shape[0]

    def _label_hint(self) -> str:
        return (f" (label_nc={self.cfg.label_nc}, contain_dontcare_label={self.cfg.contain_dontcare_label}): map "
                "don't-care pixels (255) to label_nc and set contain_dontcare_label=True")

    def _check_sketch(self, sketch: Tensor | None, B: int) -> None:
        if not getattr(self.cfg, "add_sketch", False):
            if sketch is not None:
                raise ValueError("a sketch was given but the model has add_sketch=False")
            return
        expected = (B, 1, *self.cfg.output_size)
        if sketch is None:
            raise ValueError(f"the model has add_sketch=True: pass sketch, a float edge map {list(expected)}")
        if not isinstance(sketch, Tensor) or not sketch.dtype.is_floating_point or tuple(sketch.shape) != expected:
            got = (sketch.dtype, tuple(sketch.shape)) if isinstance(sketch, Tensor) else type(sketch).__name__
            raise ValueError(f"sketch must be a float tensor {list(expected)} (edges in [0, 1]), got {got}")

    @staticmethod
    def _num_instances(inst: Tensor, noise, remap) -> int:
        if noise is not None:
            return noise.shape[1]
        if remap is not None:
            return remap[0].shape[1]
        if torch.compiler.is_compiling():
            raise ValueError(
                "under torch.compile pass noise (or remap): its rows give the number of instances, "
                "which would otherwise be read from the map's values"
            )
        return int(inst.max()) + 1

    def _check_z(self, z: Tensor, B: int) -> None:
        if tuple(z.shape) != (B, self.cfg.z_dim):
            raise ValueError(f"z must be [B, z_dim] = [{B}, {self.cfg.z_dim}], got {tuple(z.shape)}")

    def _check_noise(self, noise: Tensor, B: int, L: int) -> None:
        expected = (B, L, 2, self.cfg.noise_nc)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must be [B, L, 2, noise_nc] = {list(expected)}, got {tuple(noise.shape)}")

    def _check_remap(self, remap, B: int, L: int) -> None:
        if len(remap) != 4:
            raise ValueError(
                f"remap must be (mu_gamma, logvar_gamma, mu_beta, logvar_beta), got {len(remap)} items"
            )
        names = ("mu_gamma", "logvar_gamma", "mu_beta", "logvar_beta")
        for name, t in zip(names, remap):
            if tuple(t.shape) != (B, L, self.cfg.noise_nc):
                raise ValueError(
                    f"remap {name} must be [B, L, noise_nc] = [{B}, {L}, {self.cfg.noise_nc}], got {tuple(t.shape)}"
                )
