"""Dataset presets and options, named as in the authors' public code (tzt101/INADE).

``inade.config(name, **overrides)`` returns a frozen :class:`Config`; every field
keeps the public code's option name (``label_nc``, ``contain_dontcare_label``,
``ngf``, ``z_dim``, ``noise_nc``, ``crop_size``, ``aspect_ratio``,
``num_upsampling_layers``, ``lambda_kld``, ...) so its command lines translate
one to one. ``cfg.replace(**overrides)`` derives a new one.

The four paper presets reproduce the options recorded with the public
checkpoints (``shared/reference/official_state_dict_<dataset>.json``): the
models they build have exactly the public code's parameters. ``cocostuff``
follows the public code's COCO defaults (the paper does not report it).

``synthetic`` is the built-in toy set of :mod:`inade.data` (no download; the
README's training command uses it): 64×64 RGB images of ``label_nc = 6`` classes
— three stuff classes (sky, ground, road) and three object classes (disc, box,
ellipse), several object instances per scene — so the instance-level paths are
exercised (:class:`inade.data.SyntheticScenes`). It uses a narrow generator
(``ngf = 16``, ``noise_nc = 16``) so a CPU trains it in minutes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

UPSAMPLING_LAYERS = {"normal": 5, "more": 6, "most": 7}
# --preprocess_mode: the public code's (data/base_dataset.py get_params / get_transform).
PREPROCESS_MODES = ("none", "fixed", "resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
                    "scale_shortside", "scale_shortside_and_crop")
# The real data sets' layouts (inade.data.folders.LAYOUTS, in this order), torch-free for the parsers.
LAYOUT_NAMES = ("cityscapes", "ade20k", "celeba", "deepfashion", "coco", "folder", "custom")
NORM_G_CHOICES = ("spectralspadesyncbatch3x3", "spadesyncbatch3x3", "spectralspadebatch3x3", "spadebatch3x3")


@dataclass(frozen=True)
class Config:
    """Options of one INADE model and its training run (public code's names and defaults).

    Model:
        label_nc: semantic classes, without the don't-care class.
        contain_dontcare_label: the label map holds an extra don't-care class
            (id ``label_nc``; the loaders map 255 there), so the norm tables have
            ``label_nc + 1`` rows.
        no_instance: the data has no instance maps (pass the label map as ``inst``).
        ngf: generator width (the last block has ``ngf`` channels, the first ``16·ngf``);
            also the encoder's width.
        z_dim: size of ``z``, the input of the generator's first linear layer.
        noise_nc: ``C⁰``, channels of the per-instance noise (paper §3.3).
        crop_size: output width in pixels.
        aspect_ratio: width / height of the output.
        num_upsampling_layers: ``normal`` (5 ×2 upsamplings), ``more`` (6, an extra one
            between the middle blocks), ``most`` (7, plus a block ``up_4``).
        norm_G: ``[spectral]spade(syncbatch|batch)3x3``; ``spectral`` puts spectral norm
            on the residual blocks' convs. The INADE norm always uses batch statistics
            (synchronised over a process group when one is set).
        use_vae: train with the noise-remapping encoder (paper §3.4).
        add_sketch: every norm also reads an edge map beside the label (the public
            code's ``--add_sketch``, its 2021-12 update; ``sketch_conv`` and ``merge_conv``
            in each norm).
        init_type, init_variance: weight initialisation (``xavier`` normal, gain 0.02).
    Data: load_size, preprocess_mode, no_flip, output_nc.
    Discriminator and losses: netD, ndf, num_D, n_layers_D, norm_D, gan_mode,
        lambda_feat, lambda_vgg, lambda_kld, no_ganFeat_loss, no_vgg_loss.
    Optimiser: lr, beta1, beta2, no_TTUR (TTUR: G at lr/2, D at 2·lr).
    """

    name: str = "custom"
    dataset_mode: str = "custom"
    # model
    label_nc: int = 35
    contain_dontcare_label: bool = False
    no_instance: bool = False
    ngf: int = 64
    z_dim: int = 256
    noise_nc: int = 64
    crop_size: int = 256
    aspect_ratio: float = 1.0
    num_upsampling_layers: str = "normal"
    norm_G: str = "spectralspadesyncbatch3x3"
    use_vae: bool = True
    add_sketch: bool = False
    init_type: str = "xavier"
    init_variance: float = 0.02
    # data
    load_size: int = 286
    preprocess_mode: str = "resize_and_crop"
    no_flip: bool = False
    output_nc: int = 3
    # discriminator and losses
    netD: str = "multiscale"
    ndf: int = 64
    num_D: int = 2
    n_layers_D: int = 4
    norm_D: str = "spectralinstance"
    gan_mode: str = "hinge"
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    lambda_kld: float = 0.05
    no_ganFeat_loss: bool = False
    no_vgg_loss: bool = False
    # optimiser
    lr: float = 0.0002
    beta1: float = 0.0
    beta2: float = 0.9
    no_TTUR: bool = False

    def __post_init__(self):
        _validate(self)

    # -- derived quantities (the public code's names where it has them) ------------
    @property
    def num_classes(self) -> int:
        """``L_m``: rows of every norm table (``label_nc`` plus the don't-care class)."""
        return self.label_nc + (1 if self.contain_dontcare_label else 0)

    @property
    def semantic_nc(self) -> int:
        """Channels of the discriminator's label input: classes plus the instance-edge map."""
        return self.num_classes + (0 if self.no_instance else 1)

    @property
    def num_up_layers(self) -> int:
        return UPSAMPLING_LAYERS[self.num_upsampling_layers]

    @property
    def latent_size(self) -> tuple[int, int]:
        """``(sh, sw)``: spatial size of ``fc(z)`` (public code: ``sw = crop // 2^n``,
        ``sh = round(sw / aspect_ratio)``)."""
        sw = self.crop_size // (2**self.num_up_layers)
        return round(sw / self.aspect_ratio), sw

    @property
    def output_size(self) -> tuple[int, int]:
        """``(H, W)`` of the generated image."""
        sh, sw = self.latent_size
        return sh * 2**self.num_up_layers, sw * 2**self.num_up_layers

    @property
    def spectral(self) -> bool:
        return self.norm_G.startswith("spectral")

    def replace(self, **overrides) -> Config:
        """A copy with ``overrides`` applied (unknown names raise)."""
        _check_names(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _validate(cfg: Config) -> None:
    if cfg.num_upsampling_layers not in UPSAMPLING_LAYERS:
        raise ValueError(
            f"num_upsampling_layers must be one of {', '.join(UPSAMPLING_LAYERS)}, "
            f"got {cfg.num_upsampling_layers!r}"
        )
    if cfg.norm_G not in NORM_G_CHOICES:
        raise ValueError(f"norm_G must be one of {', '.join(NORM_G_CHOICES)}, got {cfg.norm_G!r}")
    for key in ("label_nc", "ngf", "z_dim", "noise_nc", "crop_size", "output_nc"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    if cfg.aspect_ratio <= 0:
        raise ValueError(f"aspect_ratio must be positive, got {cfg.aspect_ratio!r}")
    if cfg.num_upsampling_layers == "most" and cfg.ngf < 2:
        raise ValueError(
            f"num_upsampling_layers='most' needs ngf >= 2 (its last block has ngf // 2 channels), got {cfg.ngf}"
        )
    sw = cfg.crop_size // (2 ** UPSAMPLING_LAYERS[cfg.num_upsampling_layers])
    if sw < 1 or round(sw / cfg.aspect_ratio) < 1:
        raise ValueError(
            f"crop_size={cfg.crop_size} with aspect_ratio={cfg.aspect_ratio} and "
            f"num_upsampling_layers={cfg.num_upsampling_layers!r} gives an empty latent map: "
            f"the latent width crop_size // {2 ** UPSAMPLING_LAYERS[cfg.num_upsampling_layers]} = {sw} "
            "and its height round(width / aspect_ratio) must both be at least 1"
        )


_FIELDS = tuple(f.name for f in dataclasses.fields(Config))


def _check_names(options: dict) -> None:
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(_FIELDS)}")


PRESETS: dict[str, dict] = {
    # Output 256×512, latent 4×8.
    "cityscapes": dict(
        dataset_mode="cityscapes", label_nc=35, crop_size=512, load_size=512, aspect_ratio=2.0,
        num_upsampling_layers="more", preprocess_mode="fixed",
    ),
    "ade20k": dict(dataset_mode="ade20k", label_nc=150, contain_dontcare_label=True),
    # CelebAMask-HQ.
    "celeba": dict(dataset_mode="celeba", label_nc=19),
    "deepfashion": dict(dataset_mode="deepfashion", label_nc=8, noise_nc=8, load_size=256),
    "cocostuff": dict(dataset_mode="coco", label_nc=182, contain_dontcare_label=True),
    "synthetic": dict(
        dataset_mode="synthetic", label_nc=6, crop_size=64, load_size=64, preprocess_mode="none",
        ngf=16, noise_nc=16, ndf=16, no_vgg_loss=True,
    ),
}
ALIASES = {"celebamask-hq": "celeba", "celebamaskhq": "celeba", "coco": "cocostuff", "coco-stuff": "cocostuff"}


def config(name: str, **overrides) -> Config:
    """The preset ``name`` with ``overrides`` applied.

    Args:
        name: ``cityscapes``, ``ade20k``, ``celeba`` (CelebAMask-HQ), ``deepfashion``,
            ``cocostuff`` or ``synthetic`` (case-insensitive; ``celebamask-hq`` and
            ``coco`` are accepted too).
        **overrides: any :class:`Config` field by its public-code name, e.g. ``ngf=32``.

    Raises:
        ValueError: unknown preset, or an invalid value.
        TypeError: an option name that :class:`Config` does not have (the message
            lists the valid ones).
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        raise ValueError(f"unknown configuration {name!r}; choose one of {', '.join(PRESETS)}")
    _check_names(overrides)
    return Config(name=key, **{**PRESETS[key], **overrides})
