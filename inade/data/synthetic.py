"""The built-in synthetic dataset: procedural scenes whose appearance statistics are known.

Each scene has three *stuff* classes (sky, ground, road: one instance per class
present) and a few *thing* instances (discs, boxes, ellipses). Every class ``c`` is a
known distribution: an instance's colour is one draw from a per-channel Gaussian
``N(mean_c, std_c²)`` (clipped to ``[-0.9, 0.9]``), and its texture a class-specific
zero-mean pattern of amplitude ``texture_c`` with a random phase. So "class =
distribution, instance = sample" -- the premise of INADE -- holds exactly and can be
measured on generated images (:mod:`inade.eval`).

Nothing is read from disk: scene ``i`` of split ``phase`` is a pure function of
``(seed, phase, i)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inade.data.ids import compact_ids

CLASS_NAMES = ("sky", "ground", "road", "disc", "box", "ellipse")
STUFF_CLASSES = (0, 1, 2)
THING_CLASSES = (3, 4, 5)
NUM_CLASSES = len(CLASS_NAMES)

# Per-class colour distribution (RGB in [-1, 1]): mean, per-channel std; texture amplitude.
COLOR_MEAN = np.array(
    [
        [-0.40, 0.00, 0.70],  # sky: blue
        [-0.30, 0.35, -0.50],  # ground: green
        [-0.20, -0.20, -0.15],  # road: grey
        [0.70, -0.50, -0.30],  # disc: red
        [0.60, 0.50, -0.60],  # box: yellow
        [0.00, 0.00, 0.00],  # ellipse: any colour
    ],
    dtype=np.float64,
)
COLOR_STD = np.array(
    [
        [0.10, 0.10, 0.10],
        [0.10, 0.10, 0.10],
        [0.15, 0.15, 0.15],
        [0.15, 0.15, 0.15],
        [0.15, 0.15, 0.10],
        [0.45, 0.45, 0.45],
    ],
    dtype=np.float64,
)
TEXTURE_AMPLITUDE = np.array([0.05, 0.12, 0.06, 0.0, 0.20, 0.10])
COLOR_CLIP = 0.9
PIXEL_NOISE = 0.02
MIN_INSTANCE_PIXELS = 12
PHASES = {"train": 0, "test": 1, "val": 1}


@dataclass
class Scene:
    """One synthetic scene.

    Attributes:
        label: ``[H, W]`` int64 class map.
        instance: ``[H, W]`` int64 compact instance ids ``0 … L-1`` (stuff regions are
            instances too, one per stuff class present).
        image: ``[3, H, W]`` float32 in ``[-1, 1]``.
        colors: ``{instance id: [3] float32}``, the colour drawn for each instance
            (the mean of its pixels up to texture and pixel noise).
        classes: ``{instance id: class}``.
    """

    label: torch.Tensor
    instance: torch.Tensor
    image: torch.Tensor
    colors: dict[int, torch.Tensor]
    classes: dict[int, int]


class SyntheticScenes(torch.utils.data.Dataset):
    """Procedural scenes of :data:`CLASS_NAMES` (``label_nc = 6``, no don't-care class).

    Args:
        length: number of scenes in the split.
        crop_size: image width; the height is ``round(crop_size / aspect_ratio)``.
        aspect_ratio: width / height.
        seed: the dataset's seed; ``phase`` ``train`` and ``test``/``val`` are disjoint streams.
        phase: ``train``, ``test`` or ``val`` (``val`` is ``test``).

    ``dataset[i]`` is a dict ``label [H, W] int64``, ``instance [H, W] int64``,
    ``image [3, H, W] float32``, ``index``; :meth:`scene` also gives the instances'
    true colours. A key may be ``(index, augmentation_seed)`` like the real loaders';
    the seed is ignored (scenes are not augmented).
    """

    label_nc = NUM_CLASSES
    contain_dontcare_label = False

    def __init__(self, length: int = 1024, crop_size: int = 64, aspect_ratio: float = 1.0, seed: int = 0, phase: str = "train"):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if crop_size < 8:
            raise ValueError(f"crop_size must be >= 8, got {crop_size}")
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        self.length, self.seed, self.phase = length, seed, phase
        self.size = (max(8, round(crop_size / aspect_ratio)), crop_size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        s = self.scene(index)
        return {"label": s.label, "instance": s.instance, "image": s.image, "index": int(index)}

    def scene(self, index: int) -> Scene:
        """Scene ``index`` (deterministic in ``(seed, phase, index)``)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes")
        rng = np.random.default_rng([self.seed, PHASES[self.phase], int(index)])
        return render_scene(rng, *self.size)


# ---------------------------------------------------------------------------
# Scene construction
# ---------------------------------------------------------------------------


def render_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Draw a layout, then each instance's appearance, from ``rng``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yy, xx = (yy + 0.5) / height, (xx + 0.5) / width
    raw, classes = _layout(rng, yy, xx, width / height)
    inst, _ = compact_ids(raw)  # drops numbers of fully hidden objects, keeps drawing order
    kept = [classes[r] for r in np.unique(raw)]
    label = np.asarray(kept, dtype=np.int64)[inst]
    image = np.empty((3, height, width))
    colors, class_of = {}, {}
    for l, cls in enumerate(kept):
        mask = inst == l
        color = np.clip(COLOR_MEAN[cls] + COLOR_STD[cls] * rng.standard_normal(3), -COLOR_CLIP, COLOR_CLIP)
        pattern = TEXTURE_AMPLITUDE[cls] * _texture(cls, rng, yy[mask], xx[mask])
        image[:, mask] = color[:, None] + pattern[None]
        colors[l], class_of[l] = torch.tensor(color, dtype=torch.float32), int(cls)
    image += PIXEL_NOISE * rng.standard_normal(image.shape)
    return Scene(
        label=torch.from_numpy(label),
        instance=torch.from_numpy(inst),
        image=torch.from_numpy(np.clip(image, -1.0, 1.0).astype(np.float32)),
        colors=colors,
        classes=class_of,
    )


def _layout(rng, yy, xx, aspect):
    """Raw instance map (drawing order) and the class of each raw id."""
    horizon = rng.uniform(0.3, 0.5)
    raw = np.where(yy < horizon, 0, 1)
    classes = [0, 1]
    if rng.random() < 0.8:  # a road running from the bottom edge to the horizon
        centre, half = rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        t = np.clip((yy - horizon) / (1.0 - horizon), 0.0, 1.0)
        road = (yy >= horizon) & (np.abs(xx - (0.5 + (centre - 0.5) * t)) < half * (0.15 + 0.85 * t))
        raw[road] = len(classes)
        classes.append(2)
    before = {}  # raw map as it was before each object was drawn
    for _ in range(rng.integers(2, 6)):
        cls = int(rng.choice(THING_CLASSES))
        mask = _shape(cls, rng, yy, xx, aspect)
        if mask.sum() >= MIN_INSTANCE_PIXELS:
            before[len(classes)] = raw.copy()
            raw[mask] = len(classes)
            classes.append(cls)
    # an object drawn over by later ones may be left too small to be an instance: undo it
    for r in sorted(before, reverse=True):
        left = raw == r
        if 0 < left.sum() < MIN_INSTANCE_PIXELS:
            raw[left] = before[r][left]
    return raw, classes


def _shape(cls, rng, yy, xx, aspect):
    """Pixel mask of one object: a disc, an axis-aligned box or a rotated ellipse."""
    cy, cx = rng.uniform(0.2, 0.9), rng.uniform(0.1, 0.9)
    r = rng.uniform(0.08, 0.18)
    dy, dx = yy - cy, (xx - cx) * aspect
    if cls == 3:
        return dy**2 + dx**2 < r**2
    if cls == 4:
        return (np.abs(dy) < r * rng.uniform(0.6, 1.2)) & (np.abs(dx) < r * rng.uniform(0.6, 1.2))
    angle = rng.uniform(0.0, np.pi)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / (1.5 * r)) ** 2 + (v / (0.6 * r)) ** 2 < 1.0


def _texture(cls, rng, yy, xx):
    """Zero-mean pattern in ``[-1, 1]`` of class ``cls`` at the given pixels, random phase."""
    phase = rng.uniform(0.0, 2 * np.pi)
    if cls == 0:  # sky: slow horizontal bands
        return np.sin(2 * np.pi * 3 * yy + phase)
    if cls == 1:  # ground: fine crossed ripples
        return np.sin(2 * np.pi * 12 * xx + phase) * np.sin(2 * np.pi * 9 * yy + phase)
    if cls == 2:  # road: lane-like stripes
        return np.sin(2 * np.pi * 16 * yy + phase)
    if cls == 4:  # box: diagonal stripes
        return np.sign(np.sin(2 * np.pi * 10 * (xx + yy) + phase))
    if cls == 5:  # ellipse: checkerboard
        return np.sign(np.sin(2 * np.pi * 8 * xx + phase) * np.sin(2 * np.pi * 8 * yy + phase))
    return np.zeros_like(yy)  # disc: flat
