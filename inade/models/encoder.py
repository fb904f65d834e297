"""The noise-remapping encoder (paper §3.4, supplementary Fig. 7) and its KL term (Eq. 9).

A U-Net of instance-aware 3×3 convolutions (a tap counts only where its pixel
belongs to the window centre's instance, so no information crosses instances):
four stride-2 downs, a middle, three ups with bilinear ×2 upsampling and skip
concatenations, each followed by instance norm (no affine) and leaky ReLU 0.2;
then four full-resolution heads — ``μ`` and ``log σ²`` for the γ noise and for
the β noise — averaged over each instance's pixels (Eq. 4).

As in the public code (tzt101/INADE ``instanceAdaptiveEncoder``): the width is
``ngf``; the instance map is resized to each conv's input size with nearest
resampling from the full-resolution map; the output of the last up block is
upsampled once more so the heads run at the input resolution. The four heads
keep their own parameters (the public code's keys) but run as one instance-aware
conv with their weights concatenated, and are pooled in one pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.config import Config
from inade.nn import NEG_SLOPE, IndexPyramid, InstanceConv2d, init_weights
from inade.ops import instance_avg_pool, instance_conv2d

HEADS = ("scale_conv_mu", "scale_conv_var", "bias_conv_mu", "bias_conv_var")


class NoiseEncoder(nn.Module):
    """``E(image, inst) -> (mu_gamma, logvar_gamma, mu_beta, logvar_beta)``, each ``[B, L, noise_nc]``.

    Args:
        cfg: an :func:`inade.config`; uses ``ngf`` (width), ``noise_nc`` and ``init_variance``.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        nf = cfg.ngf

        def conv(fin, fout, stride=1):
            return InstanceConv2d(fin, fout, 3, stride=stride, padding=1)

        self.layer1 = conv(3, nf, 2)
        self.layer2 = conv(nf, 2 * nf, 2)
        self.layer3 = conv(2 * nf, 4 * nf, 2)
        self.layer4 = conv(4 * nf, 8 * nf, 2)
        self.middle = conv(8 * nf, 4 * nf)
        self.up1 = conv(8 * nf, 2 * nf)
        self.up2 = conv(4 * nf, nf)
        self.up3 = conv(2 * nf, nf)
        for name in HEADS:
            setattr(self, name, conv(nf, cfg.noise_nc))
        init_weights(self, cfg.init_variance)

    def forward(self, image: Tensor, inst: Tensor, num_instances: int | None = None) -> tuple[Tensor, ...]:
        """Encode per-instance remapping parameters.

        Args:
            image: ``[B, 3, H, W]`` reference image (in ``[-1, 1]`` like the generator's
                output); ``H`` and ``W`` divisible by 16, ``H·W ≥ 2·16²``.
            inst: ``[B, H, W]`` integer compact instance ids (one per raw id; an id that spans
                several classes is one region for the convolutions and the pooling, as in the
                public code).
            num_instances: ``L``; default ``inst.max() + 1`` over the batch.

        Returns:
            ``(mu_gamma, logvar_gamma, mu_beta, logvar_beta)``, each ``[B, L, noise_nc]``
            in the dtype of ``image``; rows of instances with no pixels are 0.
        """
        self._check_inputs(image, inst)
        if num_instances is None:
            num_instances = int(inst.max()) + 1
        maps = IndexPyramid(inst)

        def block(layer, x):
            x = layer(x, maps.at(x.shape[-2:]))
            return F.leaky_relu(F.instance_norm(x, eps=1e-5), NEG_SLOPE)

        def up(x):
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

        # Part 1. U-Net: four stride-2 downs, a middle, three ups with skips.
        x1 = block(self.layer1, image)
        x2 = block(self.layer2, x1)
        x3 = block(self.layer3, x2)
        x4 = block(self.layer4, x3)
        y = up(block(self.middle, x4))
        y = up(block(self.up1, torch.cat([y, x3], 1)))
        y = up(block(self.up2, torch.cat([y, x2], 1)))
        y = up(block(self.up3, torch.cat([y, x1], 1)))

        # Part 2. The four heads as one conv, then instance average pooling (Eq. 4).
        heads = [getattr(self, name) for name in HEADS]
        weight = torch.cat([h.weight for h in heads], 0)
        bias = torch.cat([h.bias for h in heads], 0)
        dense = instance_conv2d(y, inst, weight, bias, 1, 1)
        pooled = instance_avg_pool(dense, inst, num_instances)  # [B, L, 4·noise_nc]
        return tuple(pooled.split(self.cfg.noise_nc, dim=2))

    @staticmethod
    def _check_inputs(image: Tensor, inst: Tensor) -> None:
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be [B, 3, H, W], got {shape}")
        if not isinstance(inst, Tensor) or inst.dim() != 3 or inst.dtype.is_floating_point:
            raise ValueError("inst must be an integer [B, H, W] map")
        if (inst.shape[0], *inst.shape[1:]) != (image.shape[0], *image.shape[2:]):
            raise ValueError(
                f"inst {tuple(inst.shape)} must match image {tuple(image.shape)}: "
                f"expected {(image.shape[0], *image.shape[2:])}"
            )
        H, W = image.shape[2:]
        if H % 16 or W % 16 or H * W < 2 * 16 * 16:
            raise ValueError(
                "the encoder needs H and W divisible by 16 (four stride-2 levels) and more than one pixel "
                f"at 1/16 scale (its instance norm), got {H}×{W}"
            )


def kl_divergence(enc) -> Tensor:
    """KL term of the remapping (paper Eq. 9, as the public code computes it).

    ``(KL(μ_γ, logvar_γ) + KL(μ_β, logvar_β)) / 2`` with
    ``KL(μ, logvar) = -½ Σ (1 + logvar − μ² − exp(logvar))`` summed over the batch,
    the instances and the channels (a sum, not a mean, like the public code). Rows of
    empty instances are 0 and add nothing. Multiply by ``cfg.lambda_kld`` outside.

    Args:
        enc: the encoder output ``(mu_gamma, logvar_gamma, mu_beta, logvar_beta)``.

    Returns:
        A scalar tensor.
    """
    mu_g, logvar_g, mu_b, logvar_b = enc

    def kl(mu, logvar):
        return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

    return (kl(mu_g, logvar_g) + kl(mu_b, logvar_b)) / 2
