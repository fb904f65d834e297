"""Class names and built-in example layouts for each dataset preset.

Names follow each dataset's own class order as the public code's loaders feed
it to the model (ADE20K: the 150 SceneParsing classes shifted down by one, the
don't-care class last; Cityscapes: the 35 label ids). Colours come from
:func:`inade.training.grids.palette`, the palette of the training sample grids,
so a class has the same colour in both.

Example layouts are drawn from shapes at the model's output size: each shape is
one instance (``thing``) or joins its class's single instance (``stuff``). The
synthetic preset's examples are scenes of the built-in test split instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inade.data import CLASS_NAMES as SYNTHETIC_NAMES
from inade.data import SyntheticScenes, compact_ids
from inade.training.grids import palette

CITYSCAPES = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "caravan", "trailer", "train", "motorcycle", "bicycle", "license plate",
)
CELEBA = (
    "background", "skin", "nose", "eye glasses", "left eye", "right eye", "left brow", "right brow", "left ear",
    "right ear", "mouth", "upper lip", "lower lip", "hair", "hat", "earring", "necklace", "neck", "cloth",
)
# The public demo's brushes, in its order; the eighth class has no brush there.
DEEPFASHION = ("background", "hair", "face", "clothes", "pants", "body", "shoes", "class 7")
ADE20K = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)
NAMES = {"synthetic": SYNTHETIC_NAMES, "cityscapes": CITYSCAPES, "celeba": CELEBA, "deepfashion": DEEPFASHION,
         "ade20k": ADE20K}


def class_names(cfg) -> list[str]:
    """``cfg.num_classes`` names: the preset's where their count fits, else ``class k``; don't-care last."""
    known = NAMES.get(cfg.name, ())
    names = list(known) if len(known) == cfg.label_nc else [f"class {k}" for k in range(cfg.label_nc)]
    if cfg.contain_dontcare_label:
        names.append("don't care")
    return names


def class_colors(cfg) -> list[str]:
    """``cfg.num_classes`` CSS colours ``#rrggbb`` (the sample grids' palette)."""
    return ["#%02x%02x%02x" % tuple(int(v) for v in rgb) for rgb in palette(cfg.num_classes)]


# ---------------------------------------------------------------------------
# Example layouts
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A filled shape in relative coordinates (``0 … 1`` of width / height).

    ``kind`` ``rect`` takes ``(x0, y0, x1, y1)``; ``ellipse`` takes ``(cx, cy, rx, ry)``.
    """

    cls: int
    kind: str
    box: tuple[float, float, float, float]
    thing: bool = False


def _mask(shape: Shape, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    a, b, c, d = shape.box
    if shape.kind == "rect":
        return (xx >= a) & (xx < c) & (yy >= b) & (yy < d)
    return ((xx - a) / c) ** 2 + ((yy - b) / d) ** 2 <= 1.0


def render_layout(shapes: list[Shape], height: int, width: int, background: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(label, inst)`` ``[H, W]`` int64 (compact ids) from shapes painted in order over ``background``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yy, xx = (yy + 0.5) / height, (xx + 0.5) / width
    label = np.full((height, width), background, dtype=np.int64)
    raw = label.copy()  # stuff: raw id = class; things: ids past every class
    next_id = 10_000
    for shape in shapes:
        m = _mask(shape, yy, xx)
        label[m] = shape.cls
        if shape.thing:
            raw[m], next_id = next_id, next_id + 1
        else:
            raw[m] = shape.cls
    inst, _ = compact_ids(raw)
    return label, inst


R, E = "rect", "ellipse"
LAYOUTS: dict[str, dict[str, list[Shape]]] = {
    "cityscapes": {
        "street": [
            Shape(23, R, (0, 0, 1, 0.45)), Shape(11, R, (0, 0.1, 0.35, 0.6)), Shape(11, R, (0.7, 0.05, 1, 0.6)),
            Shape(21, E, (0.5, 0.45, 0.2, 0.12)), Shape(7, R, (0, 0.55, 1, 1)), Shape(8, R, (0, 0.55, 0.15, 1)),
            Shape(8, R, (0.85, 0.55, 1, 1)), Shape(26, R, (0.2, 0.6, 0.42, 0.8), True),
            Shape(26, R, (0.55, 0.58, 0.72, 0.74), True), Shape(24, R, (0.88, 0.5, 0.92, 0.75), True),
        ],
        "parking": [
            Shape(23, R, (0, 0, 1, 0.4)), Shape(21, R, (0, 0.3, 1, 0.55)), Shape(9, R, (0, 0.55, 1, 1)),
            Shape(26, R, (0.05, 0.6, 0.3, 0.85), True), Shape(26, R, (0.38, 0.6, 0.63, 0.85), True),
            Shape(26, R, (0.71, 0.6, 0.96, 0.85), True),
        ],
    },
    "celeba": {
        "face": [
            Shape(18, R, (0.1, 0.85, 0.9, 1)), Shape(17, R, (0.4, 0.7, 0.6, 0.9)), Shape(13, E, (0.5, 0.42, 0.33, 0.38)),
            Shape(1, E, (0.5, 0.5, 0.24, 0.3)), Shape(8, E, (0.25, 0.5, 0.04, 0.07)), Shape(9, E, (0.75, 0.5, 0.04, 0.07)),
            Shape(6, R, (0.34, 0.38, 0.46, 0.41)), Shape(7, R, (0.54, 0.38, 0.66, 0.41)),
            Shape(4, E, (0.4, 0.46, 0.05, 0.025)), Shape(5, E, (0.6, 0.46, 0.05, 0.025)),
            Shape(2, E, (0.5, 0.55, 0.04, 0.07)), Shape(11, E, (0.5, 0.66, 0.09, 0.02)), Shape(12, E, (0.5, 0.69, 0.09, 0.025)),
        ],
    },
    "ade20k": {
        "landscape": [
            Shape(2, R, (0, 0, 1, 0.5)), Shape(16, E, (0.3, 0.55, 0.45, 0.25)), Shape(9, R, (0, 0.6, 1, 1)),
            Shape(21, E, (0.7, 0.85, 0.25, 0.08)), Shape(4, E, (0.15, 0.55, 0.08, 0.2), True),
            Shape(4, E, (0.85, 0.5, 0.1, 0.25), True),
        ],
        "street": [
            Shape(2, R, (0, 0, 1, 0.4)), Shape(1, R, (0, 0.1, 0.45, 0.65)), Shape(1, R, (0.55, 0.15, 1, 0.65)),
            Shape(6, R, (0, 0.65, 1, 1)), Shape(20, R, (0.3, 0.65, 0.6, 0.85), True),
            Shape(12, R, (0.75, 0.5, 0.8, 0.8), True),
        ],
    },
    "deepfashion": {
        "person": [
            Shape(5, R, (0.3, 0.3, 0.7, 0.6)), Shape(3, R, (0.35, 0.28, 0.65, 0.6)), Shape(4, R, (0.37, 0.58, 0.63, 0.92)),
            Shape(6, R, (0.36, 0.92, 0.64, 0.98)), Shape(1, E, (0.5, 0.14, 0.1, 0.1)), Shape(2, E, (0.5, 0.18, 0.07, 0.08)),
        ],
    },
}
# Presets without a layout of their own: bands of the first classes and two objects.
GENERIC = {
    "bands": [Shape(0, R, (0, 0, 1, 0.4)), Shape(1, R, (0, 0.4, 1, 0.7)), Shape(2, R, (0, 0.7, 1, 1)),
              Shape(1, E, (0.3, 0.5, 0.12, 0.12), True), Shape(2, E, (0.7, 0.8, 0.15, 0.1), True)],
}


def examples(cfg, count: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named example layouts ``{name: (label [H, W], inst [H, W])}`` int64 at ``cfg.output_size``."""
    H, W = cfg.output_size
    if cfg.name == "synthetic":
        scenes = SyntheticScenes(length=count, crop_size=W, aspect_ratio=W / H, phase="test")
        return {f"scene {i}": (scenes[i]["label"].numpy(), scenes[i]["instance"].numpy()) for i in range(count)}
    layouts = LAYOUTS.get(cfg.name, GENERIC)
    out = {}
    for name, shapes in layouts.items():
        if max(s.cls for s in shapes) < cfg.num_classes:
            out[name] = render_layout(shapes, H, W)
    return out or {"plain": (np.zeros((H, W), np.int64), np.zeros((H, W), np.int64))}
