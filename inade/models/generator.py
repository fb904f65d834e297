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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.config import Config
from inade.nn import INADENorm, instance_classes, resize_index_map

NEG_SLOPE = 0.2


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The public code's ``init_weights('xavier', gain)``: every conv and linear weight
    Xavier-normal with ``gain``, every bias zero. Spectral-normed convs get ``weight_orig``
    initialised (as the public code does through the shared storage of ``weight``)."""
    for m in module.modules():
        if "Conv" not in type(m).__name__ and "Linear" not in type(m).__name__:
            continue
        weight = getattr(m, "weight_orig", None)
        if weight is None:
            weight = getattr(m, "weight", None)
        if not isinstance(weight, Tensor):
            continue
        with torch.no_grad():
            nn.init.xavier_normal_(weight, gain=gain)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class IndexPyramid:
    """An index map resized once per resolution and shared by every layer of a forward.

    Each size is taken from the full-resolution map with nearest resampling (the
    public code's ``F.interpolate(…, mode='nearest')`` of its one-hot maps), never
    from another resized level.
    """

    def __init__(self, index: Tensor):
        self.full = index
        self._levels: dict[tuple[int, int], Tensor] = {tuple(index.shape[-2:]): index}

    def at(self, size) -> Tensor:
        """``[B, h, w]`` map at ``size = (h, w)``."""
        size = (int(size[0]), int(size[1]))
        if size not in self._levels:
            self._levels[size] = resize_index_map(self.full, size)
        return self._levels[size]


class INADEResnetBlock(nn.Module):
    """Residual block of INADE norms and 3×3 convs (public code: ``SPADEResnetBlock``).

    ``out = shortcut(x) + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x))))))`` with
    ``shortcut(x) = conv_s(norm_s(x))`` when ``fin != fout`` (no activation, 1×1, no
    bias), else ``x``. Spectral norm on ``conv_0``, ``conv_1``, ``conv_s`` when
    ``cfg.norm_G`` starts with ``spectral``.
    """

    def __init__(self, fin: int, fout: int, cfg: Config):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        sn = nn.utils.spectral_norm if cfg.spectral else (lambda m: m)
        self.conv_0 = sn(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = sn(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = INADENorm(fin, cfg.num_classes, cfg.noise_nc)
        self.norm_1 = INADENorm(fmiddle, cfg.num_classes, cfg.noise_nc)
        if self.learned_shortcut:
            self.norm_s = INADENorm(fin, cfg.num_classes, cfg.noise_nc)

    def forward(self, x: Tensor, inst: Tensor, cls: Tensor, noise: Tensor) -> Tensor:
        """``x [B, fin, h, w]``, ``inst [B, h, w]`` at x's resolution, ``cls [B, L]``,
        ``noise [B, L, 2, noise_nc]`` -> ``[B, fout, h, w]``."""
        x_s = self.conv_s(self.norm_s(x, inst, cls, noise)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, inst, cls, noise), NEG_SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, inst, cls, noise), NEG_SLOPE))
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


class Generator(nn.Module):
    """INADE generator: ``G(label, inst, noise=None, z=None, remap=None) -> image``.

    Args:
        cfg: an :func:`inade.config` (``ngf``, ``z_dim``, ``noise_nc``, ``label_nc`` …).

    The per-resolution index maps and the instance → class table are computed
    once per forward and shared by every norm layer.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
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
                remap=None) -> Tensor:
        """Synthesise images.

        Args:
            label: ``[B, H, W]`` integer class map, ids in ``[0, num_classes)``.
            inst: ``[B, H, W]`` integer instance map with compact ids ``0 … L-1`` (for
                data without instances pass ``label``). Every instance lies in one class.
            noise: ``[B, L, 2, noise_nc]`` shared by all norms (index 0 γ, 1 β); drawn
                from ``N(0, I)`` when ``None``.
            z: ``[B, z_dim]`` input of ``fc``; drawn from ``N(0, I)`` when ``None``.
            remap: encoder output ``(mu_γ, logvar_γ, mu_β, logvar_β)``, each
                ``[B, L, noise_nc]``; when given the noise becomes ``N·exp(½·logvar) + μ``.

        Returns:
            ``[B, 3, sh·2^n, sw·2^n]`` in ``(-1, 1)`` (``cfg.output_size``).
        """
        # Part 1. Inputs: z, the noise, the instance -> class table.
        B = self._check_maps(label, inst)
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
        cls = instance_classes(label, inst, num_instances)
        pyramid = IndexPyramid(inst)

        # Part 2. The main branch.
        x = self.fc(z).view(B, 16 * self.cfg.ngf, self.sh, self.sw)
        for block, upsample in self.blocks():
            if upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, pyramid.at(x.shape[-2:]), cls, noise)
        x = self.conv_img(F.leaky_relu(x, NEG_SLOPE))
        return torch.tanh(x)

    # -- input checks -------------------------------------------------------------
    def _check_maps(self, label: Tensor, inst: Tensor) -> int:
        for name, t in (("label", label), ("inst", inst)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise TypeError(f"{name} must be an integer map [B, H, W], got dtype {t.dtype}")
            if t.dim() != 3:
                raise ValueError(f"{name} must be [B, H, W], got shape {tuple(t.shape)}")
        if label.shape != inst.shape:
            raise ValueError(f"label {tuple(label.shape)} and inst {tuple(inst.shape)} must have one shape")
        if label.numel() and (int(label.min()) < 0 or int(label.max()) >= self.cfg.num_classes):
            raise ValueError(
                f"label has classes in [{int(label.min())}, {int(label.max())}] but the model has "
                f"num_classes={self.cfg.num_classes} (label_nc={self.cfg.label_nc}, contain_dontcare_label="
                f"{self.cfg.contain_dontcare_label}): map don't-care pixels (255) to label_nc and set "
                "contain_dontcare_label=True"
            )
        if label.device != self.fc.weight.device or inst.device != self.fc.weight.device:
            raise ValueError(
                f"label ({label.device}) and inst ({inst.device}) must be on the model's device "
                f"({self.fc.weight.device})"
            )
        return label.shape[0]

    @staticmethod
    def _num_instances(inst: Tensor, noise, remap) -> int:
        if noise is not None:
            return noise.shape[1]
        if remap is not None:
            return remap[0].shape[1]
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
