"""INADE's training losses (supplementary Eq. 6–10), as the public code computes them.

* Hinge GAN loss (Eq. 6), SPADE's ``GANLoss(gan_mode="hinge")``: on each scale's
  patch logits, averaged over the ``num_D`` scales. Discriminator:
  ``mean(relu(1 - D(real)))`` and ``mean(relu(1 + D(fake)))``; generator: ``-mean(D(fake))``.
* Feature matching (Eq. 7): L1 between the discriminator's features of the fake
  and of the real image, only layers ``S_D = 3`` … (the last intermediate layer
  with ``n_layers_D = 4``), weighted ``λ_feat / num_D`` per layer.
* Perceptual loss (Eq. 8): L1 between VGG19 features, per-layer weights
  ``(0, 0, 0, 1/4, 1)`` on ``relu1_1 … relu5_1`` — the public code's weights for
  INADE (it uses SPADE's ``(1/32, 1/16, 1/8, 1/4, 1)`` only for SPADE models),
  which is Eq. 8 with ``S_V = 3``. ``SPADE_VGG_LAYER_WEIGHTS`` gives SPADE's.
* KL divergence (Eq. 9): ``(KL_γ + KL_β) / 2 · λ_KL``, each KL summed over
  batch, instances and channels (as the public code's ``KLDLoss``).

``λ_feat = λ_vgg = 10``, ``λ_KL = 0.05`` (Eq. 10), read from the config when given.

For ``train.py``: build one :class:`INADELoss` and call
:meth:`INADELoss.generator_losses` and :meth:`INADELoss.discriminator_losses`;
each returns a dict of named, already-weighted scalar losses whose sum is the
objective. The functional pieces below are the same computations on tensors.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.models.discriminator import discriminator_semantics
from inade.models.encoder import kl_divergence
from inade.models.vgg import load_vgg19

INADE_VGG_LAYER_WEIGHTS = (0.0, 0.0, 0.0, 1.0 / 4, 1.0)
SPADE_VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
FEAT_START_LAYER = 3  # S_D: feature matching uses discriminator layers from this index on

Predictions = list[list[Tensor]]  # per scale, per layer (the discriminator's output)


# ---------------------------------------------------------------------------
# Functional losses
# ---------------------------------------------------------------------------


def hinge_d_loss(pred: Predictions, real: bool) -> Tensor:
    """Discriminator hinge loss over scales: mean over scales of ``mean(relu(1 ∓ logits))``
    (``-`` for real, ``+`` for fake), logits = each scale's last output."""
    sign = 1.0 if real else -1.0
    return torch.stack([F.relu(1.0 - sign * scale[-1]).mean() for scale in pred]).mean()


def hinge_g_loss(pred_fake: Predictions) -> Tensor:
    """Generator hinge loss over scales: mean over scales of ``-mean(D(fake))``."""
    return torch.stack([-scale[-1].mean() for scale in pred_fake]).mean()


def feature_matching_loss(pred_fake: Predictions, pred_real: Predictions, start: int = FEAT_START_LAYER,
                          weight: float = 10.0) -> Tensor:
    """``Σ_scales Σ_{j=start}^{n-2} L1(fake[j], real[j].detach()) · weight / num_D`` (Eq. 7).

    The last output of each scale (the logits) is never matched. With the public
    code's ``n_layers_D = 4`` and ``start = 3`` that is one layer per scale.
    """
    num_d = len(pred_fake)
    total = pred_fake[0][0].new_zeros(())
    for fake_scale, real_scale in zip(pred_fake, pred_real):
        for j in range(start, len(fake_scale) - 1):
            total = total + F.l1_loss(fake_scale[j], real_scale[j].detach()) * (weight / num_d)
    return total


def loss_dtype(t: Tensor) -> torch.dtype:
    """The dtype a loss term of ``t`` is computed in: float32 under autocast (its low-precision
    activations are summed in float32), else ``t``'s own dtype -- a float64 model's losses stay
    float64, so no loss term changes the model's precision outside autocast."""
    return torch.float32 if torch.is_autocast_enabled(t.device.type) else t.dtype


def kl_loss(enc, weight: float = 0.05) -> Tensor:
    """Eq. 9 weighted: ``(KL_γ + KL_β) / 2 · weight`` for ``enc = (mu_γ, logvar_γ, mu_β, logvar_β)``
    (:func:`inade.models.encoder.kl_divergence`, summed like the public code, times ``λ_KL``)."""
    return kl_divergence(enc) * weight


class VGGLoss(nn.Module):
    """Perceptual loss (Eq. 8): ``Σ_i w_i · L1(V_i(fake), V_i(real).detach())``, unweighted by λ.

    Args:
        vgg: a :class:`inade.models.vgg.VGG19` with pretrained weights.
        layer_weights: ``w_i`` for ``relu1_1 … relu5_1``.
    """

    def __init__(self, vgg: nn.Module, layer_weights=INADE_VGG_LAYER_WEIGHTS):
        super().__init__()
        if len(layer_weights) != 5:
            raise ValueError(f"layer_weights must have 5 entries (relu1_1 … relu5_1), got {len(layer_weights)}")
        self.vgg = vgg
        self.layer_weights = tuple(float(w) for w in layer_weights)

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        with torch.no_grad():
            real_feats = self.vgg(real)
        fake_feats = self.vgg(fake)
        dtype = loss_dtype(fake)
        total = fake.new_zeros((), dtype=dtype)
        for w, f, r in zip(self.layer_weights, fake_feats, real_feats):
            if w:
                total = total + w * F.l1_loss(f.to(dtype), r.to(dtype))
        return total


# ---------------------------------------------------------------------------
# Running the discriminator on fake and real together
# ---------------------------------------------------------------------------


def discriminate(D: nn.Module, semantics: Tensor, fake: Tensor, real: Tensor) -> tuple[Predictions, Predictions]:
    """``D`` on ``semantics ⊕ fake`` and ``semantics ⊕ real`` in one batch of ``2B`` (as the
    public code does) -> ``(pred_fake, pred_real)``, each per scale, per layer ``[B, …]``."""
    fake_and_real = torch.cat([torch.cat([semantics, fake], 1), torch.cat([semantics, real], 1)], 0)
    out = D(fake_and_real)
    B = fake.shape[0]
    return [[t[:B] for t in scale] for scale in out], [[t[B:] for t in scale] for scale in out]


def compute_generator_losses(pred_fake: Predictions, pred_real: Predictions, *, fake: Tensor | None = None,
                             real: Tensor | None = None, enc=None, vgg_loss: VGGLoss | None = None,
                             lambda_feat: float = 10.0, lambda_vgg: float = 10.0, lambda_kld: float = 0.05,
                             feat_start: int = FEAT_START_LAYER, ganfeat: bool = True) -> dict[str, Tensor]:
    """The generator (and encoder) side of Eq. 10 from the discriminator's predictions.

    Args:
        pred_fake, pred_real: :func:`discriminate`'s output (per scale, per layer).
        fake, real: ``[B, 3, H, W]`` images in ``[-1, 1]``; needed with ``vgg_loss``.
        enc: encoder output ``(mu_γ, logvar_γ, mu_β, logvar_β)``, each ``[B, L, noise_nc]``;
            ``None`` skips the KL term.
        vgg_loss: a :class:`VGGLoss`; ``None`` skips the perceptual term.
        ganfeat: include feature matching.

    Returns:
        ``{"GAN", "GAN_Feat"?, "VGG"?, "KLD"?}``: 0-dim tensors, already multiplied by their λ.
    """
    losses = {"GAN": hinge_g_loss(pred_fake)}
    if ganfeat:
        losses["GAN_Feat"] = feature_matching_loss(pred_fake, pred_real, feat_start, lambda_feat)
    if vgg_loss is not None:
        if fake is None or real is None:
            raise ValueError("vgg_loss needs fake and real images")
        losses["VGG"] = vgg_loss(fake, real) * lambda_vgg
    if enc is not None:
        losses["KLD"] = kl_loss(enc, lambda_kld)
    return losses


def compute_discriminator_losses(pred_fake: Predictions, pred_real: Predictions) -> dict[str, Tensor]:
    """The discriminator side of Eq. 6: ``{"D_fake", "D_real"}``, 0-dim hinge losses (their sum is minimised)."""
    return {"D_fake": hinge_d_loss(pred_fake, real=False), "D_real": hinge_d_loss(pred_real, real=True)}


# ---------------------------------------------------------------------------
# Everything together, for train.py
# ---------------------------------------------------------------------------


class INADELoss(nn.Module):
    """All of INADE's losses with their weights, built once per training run.

    ``INADELoss(cfg)`` reads ``lambda_feat``, ``lambda_vgg``, ``lambda_kld``,
    ``no_ganFeat_loss``, ``no_vgg_loss`` from ``cfg`` (public-code names; keyword
    arguments override them).

    Args:
        cfg: an :func:`inade.config`; also gives the discriminator's input layout.
        vgg_weights: path to torchvision's ``vgg19-dcbb9e9d.pth``; default: ``$INADE_VGG19_WEIGHTS``
            or torch hub's cache. Without weights the perceptual loss is off (one warning).
        require_vgg: raise instead when the VGG weights are missing.
        vgg_layer_weights: per-layer weights (default the public code's INADE weights).
        normalize_vgg_input: ImageNet-normalise images before VGG (the public code does not).

    Attributes:
        vgg_loss: the :class:`VGGLoss`, or ``None`` when the perceptual loss is off.

    Usage (one step)::

        g = crit.generator_losses(D, label, inst, fake, real, enc)        # dict of scalars
        sum(g.values()).backward(); opt_G.step()
        d = crit.discriminator_losses(D, label, inst, fake, real)        # fake detached inside
        sum(d.values()).backward(); opt_D.step()
    """

    def __init__(self, cfg, *, lambda_feat: float | None = None, lambda_vgg: float | None = None,
                 lambda_kld: float | None = None, use_vgg: bool | None = None,
                 vgg_weights: str | os.PathLike | None = None, require_vgg: bool = False,
                 vgg_layer_weights=INADE_VGG_LAYER_WEIGHTS, normalize_vgg_input: bool = False,
                 feat_start: int = FEAT_START_LAYER):
        super().__init__()
        self.cfg = cfg
        self.lambda_feat = float(lambda_feat if lambda_feat is not None else getattr(cfg, "lambda_feat", 10.0))
        self.lambda_vgg = float(lambda_vgg if lambda_vgg is not None else getattr(cfg, "lambda_vgg", 10.0))
        self.lambda_kld = float(lambda_kld if lambda_kld is not None else getattr(cfg, "lambda_kld", 0.05))
        self.ganfeat = not getattr(cfg, "no_ganFeat_loss", False)
        self.feat_start = feat_start
        if use_vgg is None:
            use_vgg = not getattr(cfg, "no_vgg_loss", False)
        self.vgg_loss = None
        if use_vgg or require_vgg:
            vgg = load_vgg19(vgg_weights, require=require_vgg, normalize_input=normalize_vgg_input)
            if vgg is not None:
                self.vgg_loss = VGGLoss(vgg, vgg_layer_weights)

    def semantics(self, label: Tensor, inst: Tensor | None, dtype: torch.dtype) -> Tensor:
        """Label one-hot ⊕ instance edges ``[B, C_s, H, W]`` (the discriminator's conditioning)."""
        return discriminator_semantics(label, inst, self.cfg, dtype)

    def generator_losses(self, D: nn.Module, label: Tensor, inst: Tensor | None, fake: Tensor, real: Tensor,
                         enc=None) -> dict[str, Tensor]:
        """Losses of ``G`` (and ``E``) for one batch.

        Args:
            D: the :class:`inade.Discriminator`.
            label, inst: ``[B, H, W]`` integer maps (``inst`` compact ids; the label map when there are no instances).
            fake: ``G``'s output ``[B, 3, H, W]`` (with its graph); real: the images ``[B, 3, H, W]``.
            enc: ``E``'s output for the real images, for the KL term; ``None`` skips it.

        Returns:
            ``{"GAN", "GAN_Feat", "VGG", "KLD"}`` (those switched on): weighted 0-dim tensors.
        """
        pred_fake, pred_real = discriminate(D, self.semantics(label, inst, fake.dtype), fake, real)
        return compute_generator_losses(
            pred_fake, pred_real, fake=fake, real=real, enc=enc, vgg_loss=self.vgg_loss,
            lambda_feat=self.lambda_feat, lambda_vgg=self.lambda_vgg, lambda_kld=self.lambda_kld,
            feat_start=self.feat_start, ganfeat=self.ganfeat,
        )

    def discriminator_losses(self, D: nn.Module, label: Tensor, inst: Tensor | None, fake: Tensor,
                             real: Tensor) -> dict[str, Tensor]:
        """Losses of ``D`` for one batch: ``{"D_fake", "D_real"}`` (``fake`` is detached here)."""
        pred_fake, pred_real = discriminate(D, self.semantics(label, inst, real.dtype), fake.detach(), real)
        return compute_discriminator_losses(pred_fake, pred_real)
