"""Sample grids: for fixed label maps, random styles, and one instance resampled.

For each of ``K`` fixed layouts the grid has two rows of ``2 + M`` tiles:

* row 1: the colour-coded label map, the real image, then ``M`` random styles
  (every instance's noise and ``z`` redrawn);
* row 2: the label map with one instance highlighted (:func:`pick_instance`), the
  first style of row 1 again, then ``M`` images in which only that instance's noise is redrawn
  (everything else, ``z`` included, is kept): the instance should change and the
  rest of the picture stay.

The networks run in eval mode (running batch statistics) through
:class:`inade.synthesis.Synthesizer`; their training mode is restored afterwards.
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch

from inade.data.images import to_uint8, write_image
from inade.synthesis import Sample, Synthesizer

GAP = 2  # pixels between tiles


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours, well apart for neighbouring class ids."""
    cols = [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65 if i % 2 else 0.9, 0.95 if i % 3 else 0.75) for i in range(n)]
    return (np.asarray(cols) * 255).round().astype(np.uint8)


def colorize(label: torch.Tensor, num_classes: int) -> np.ndarray:
    """``[H, W]`` class map -> ``[H, W, 3]`` uint8."""
    return palette(num_classes)[label.cpu().numpy().clip(0, num_classes - 1)]


def pick_instance(inst: torch.Tensor) -> int:
    """The instance a grid resamples: the largest one that does not touch the image border
    (an object rather than a background region such as the sky), else the smallest."""
    counts = torch.bincount(inst.flatten().long())
    border = torch.cat([inst[0], inst[-1], inst[:, 0], inst[:, -1]]).long().unique()
    inner = counts.clone()
    inner[border] = 0
    if inner.max() > 0:
        return int(inner.argmax())
    present = counts.nonzero().flatten()
    return int(present[counts[present].argmin()])


def highlight(label_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = (label_rgb.astype(np.float32) * 0.3).astype(np.uint8)
    out[mask] = label_rgb[mask]
    return out


@torch.no_grad()
def grid_rows(G, cfg, label, inst, real, num_styles: int = 6, seed: int = 0) -> list[list[np.ndarray]]:
    """Tiles (``[H, W, 3]`` uint8) of the grid, row by row.

    Args:
        G: the generator (its mode is restored on return).
        label, inst: ``[K, H, W]`` layouts on ``G``'s device; real: ``[K, 3, H, W]``.
    """
    was_training = G.training
    synth = Synthesizer(G, cfg=cfg)
    try:
        rows = []
        M = num_styles
        for k in range(label.shape[0]):
            lab, ins = label[k : k + 1].expand(M, -1, -1), inst[k : k + 1].expand(M, -1, -1)
            styles = synth.random(lab, ins, seed=seed * 1000 + k)
            base = Sample(styles.image[:1].expand(M, -1, -1, -1), styles.noise[:1].expand(M, -1, -1, -1).clone(),
                          styles.z[:1].expand(M, -1).clone())
            target = pick_instance(inst[k])
            resampled = synth.resample_instances(lab, ins, base, [target], seed=seed * 1000 + 500 + k)
            label_rgb = colorize(label[k], cfg.num_classes)
            rows.append([label_rgb, to_uint8(real[k])] + [to_uint8(x) for x in styles.image])
            mask = (inst[k] == target).cpu().numpy()
            rows.append([highlight(label_rgb, mask), to_uint8(styles.image[0])] + [to_uint8(x) for x in resampled.image])
        return rows
    finally:
        G.train(was_training)


def assemble(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Tiles -> one ``[H', W', 3]`` uint8 image with white gaps."""
    h, w = rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + GAP) - GAP, n_cols * (w + GAP) - GAP, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            out[i * (h + GAP) : i * (h + GAP) + h, j * (w + GAP) : j * (w + GAP) + w] = tile
    return out


def save_grid(path, G, cfg, label, inst, real, num_styles: int = 6, seed: int = 0) -> Path:
    """Write the grid as PNG (atomically) and return its path."""
    return write_image(path, assemble(grid_rows(G, cfg, label, inst, real, num_styles, seed)))
