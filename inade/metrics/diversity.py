"""The paper's diversity metrics (supplementary §8) and their weight-free L1 twins.

* **LPIPS diversity**: ``G`` groups of images of the same layouts, each group with
  its own random styles; ``rounds`` (10) times, two different groups drawn at random
  and the mean LPIPS over the layouts taken; the score is the mean of the rounds.
* **mISD / mOID** (instance level): for each instance ``l`` of a layout, one base
  style, then ``M`` images in which only ``l``'s noise is redrawn (``z`` and every
  other instance kept). Over the ``M(M−1)/2`` pairs, the per-pixel distance map is
  averaged over the pairs, then over the pixels *inside* ``l`` (ISD) and *outside*
  ``l`` (OID). mISD / mOID are the means over all instances of all layouts.
* **mCSD / mOCD** (class level, GroupDNet's): the same with every instance of one
  class redrawn together (:meth:`inade.Synthesizer.resample_class`: an instance id that
  spans classes is redrawn whole, so its pixels of other classes count as outside),
  inside / outside that class's region; per class the mean
  over layouts, then the mean over the classes present.

**Masking rule** (fixed; the paper does not give one): the distance is computed on
the whole images, as a per-pixel map, and the map is averaged over the region's
pixels. For LPIPS the map is lpips' ``spatial=True`` output (each layer's weighted
squared difference upsampled bilinearly to the image size, summed); for L1 it is
``|a − b|`` averaged over RGB (pixels in ``[−1, 1]``). The images themselves are
never masked: blanking pixels would paint the region's outline into both images and
feed that edge to the network. Consequence: LPIPS's receptive fields spread a change
a few pixels past its region, so even a perfectly local generator has a small
LPIPS-mOID near region borders; the L1 twin has none (an exactly local change gives
L1-mOID = 0). A region that covers the whole image has no outside and is left out
of the outside mean.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from inade.metrics.lpips import LPIPS

# A distance turns images [M, 3, H, W] and pair indices (i, j) into maps [P, 1, H, W].
PairMaps = Callable[[Tensor, Tensor, Tensor], Tensor]


def l1_pair_maps(images: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """``|x_i − x_j|`` averaged over channels: ``[M, 3, H, W]`` -> ``[P, 1, H, W]``."""
    return (images[i].float() - images[j].float()).abs().mean(1, keepdim=True)


def lpips_pair_maps(lpips: LPIPS) -> PairMaps:
    """LPIPS spatial maps of image pairs (each image's features computed once)."""

    def maps(images: Tensor, i: Tensor, j: Tensor) -> Tensor:
        return lpips.pair_maps(images, i, j, spatial=True)

    return maps


def all_pairs(m: int) -> tuple[Tensor, Tensor]:
    """Indices ``i < j`` of all ``m(m−1)/2`` pairs."""
    i, j = torch.triu_indices(m, m, offset=1)
    return i, j


def region_means(dmap: Tensor, mask: Tensor) -> tuple[float, float | None]:
    """Mean of ``dmap [H, W]`` inside ``mask [H, W]`` and outside it (None when there is no outside)."""
    inside = float(dmap[mask].mean())
    outside = float(dmap[~mask].mean()) if bool((~mask).any()) else None
    return inside, outside


@dataclass
class RegionScores:
    """Inside / outside distances per region; ``key`` is the instance id or the class id."""

    inside: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)

    def add(self, key: int, inside: float, outside: float | None) -> None:
        self.keys.append(key)
        self.inside.append(inside)
        if outside is not None:
            self.outside.append(outside)

    def mean(self) -> tuple[float, float]:
        """Plain means (instance level)."""
        return _mean(self.inside), _mean(self.outside)


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


@torch.no_grad()
def _resample_maps(images: Tensor, distance: PairMaps) -> Tensor:
    """Per-pixel distance averaged over all pairs: ``[M, 3, H, W]`` -> ``[H, W]``."""
    i, j = all_pairs(images.shape[0])
    return distance(images, i, j).mean(0)[0]


def _layouts(layouts: Iterable) -> Iterable[tuple[Tensor, Tensor]]:
    for item in layouts:
        if isinstance(item, dict):
            yield item["label"], item["instance"]
        else:
            yield item


@torch.no_grad()
def instance_diversity(synth, layouts: Iterable, distance: PairMaps = l1_pair_maps, *, samples: int = 6,
                       seed: int = 0, level: str = "instance", max_regions: int | None = None) -> dict:
    """mISD / mOID (``level="instance"``) or mCSD / mOCD (``level="class"``).

    Args:
        synth: an :class:`inade.Synthesizer`.
        layouts: ``(label [H, W], inst [H, W])`` pairs (or dataset items with those keys).
        distance: :func:`l1_pair_maps` (default, weight-free) or :func:`lpips_pair_maps`.
        samples: ``M`` images per resampled region (``M ≥ 2``).
        seed: layout ``k`` uses seeds derived from ``(seed, k)``; the result is a function of them.
        max_regions: at most this many regions per layout (the first ids), to bound the time.
    Returns:
        ``{"inside": mISD | mCSD, "outside": mOID | mOCD, "regions": n, "layouts": n}``.
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (diversity is measured between pairs), got {samples}")
    if level not in ("instance", "class"):
        raise ValueError(f"level must be 'instance' or 'class', got {level!r}")
    like = synth._like
    scores = RegionScores()
    per_class: dict[int, RegionScores] = {}
    n_layouts = 0
    for k, (label, inst) in enumerate(_layouts(layouts)):
        label, inst = label.to(like.device).long(), inst.to(like.device).long()
        M = samples
        base = synth.random(label[None], inst[None], seed=seed * 1_000_003 + 2 * k)
        lab_m, inst_m = label.expand(M, -1, -1), inst.expand(M, -1, -1)
        noise_m, z_m = base.noise.expand(M, -1, -1, -1).contiguous(), base.z.expand(M, -1).contiguous()
        if level == "instance":
            regions = [(int(l), inst == l) for l in torch.unique(inst).tolist()]
        else:
            regions = [(int(c), label == c) for c in torch.unique(label).tolist()]
        for r, (key, mask) in enumerate(regions[:max_regions]):
            s = seed * 1_000_003 + 2 * k + 1 + 7919 * (r + 1)
            if level == "instance":
                out = synth.resample_instances(lab_m, inst_m, noise_m, [key], s, z=z_m)
            else:
                out = synth.resample_class(lab_m, inst_m, noise_m, key, s, z=z_m)
            inside, outside = region_means(_resample_maps(out.image, distance), mask)
            scores.add(key, inside, outside)
            per_class.setdefault(key, RegionScores()).add(key, inside, outside)
        n_layouts += 1
    if level == "instance":
        inside, outside = scores.mean()
    else:  # mean over layouts per class, then over classes
        inside = _mean([_mean(v.inside) for v in per_class.values()])
        outside = _mean([_mean(v.outside) for v in per_class.values() if v.outside])
    return {"inside": inside, "outside": outside, "regions": len(scores.keys), "layouts": n_layouts}


@torch.no_grad()
def group_diversity(groups: Sequence, distance: Callable[[Tensor, Tensor], Tensor], *, rounds: int = 10,
                    seed: int = 0) -> dict:
    """LPIPS diversity (or its L1 twin) between groups of images of the same layouts.

    Args:
        groups: ``G ≥ 2`` sequences of the same length ``N``; item ``n`` of each group is an image
            ``[3, H, W]`` (or ``[1, 3, H, W]``) in ``[-1, 1]`` of layout ``n``, or a callable returning it.
        distance: ``(a [1, 3, H, W], b [1, 3, H, W]) -> [1]`` (e.g. an :class:`LPIPS`, or :func:`l1_distance`).
        rounds: pairs of groups drawn (with replacement over rounds; always two different groups).
    Returns:
        ``{"mean": ..., "std": ..., "rounds": [...], "groups": G, "images": N}``.
    """
    G = len(groups)
    if G < 2:
        raise ValueError(f"diversity needs at least 2 groups of styles, got {G}")
    N = len(groups[0])
    if any(len(g) != N for g in groups) or N == 0:
        raise ValueError(f"every group must hold the same, non-zero number of images; got {[len(g) for g in groups]}")
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(rounds):
        a, b = rng.choice(G, size=2, replace=False)
        d = [float(distance(_get(groups[a][n]), _get(groups[b][n])).mean()) for n in range(N)]
        scores.append(float(np.mean(d)))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "rounds": scores, "groups": G, "images": N}


def _get(item) -> Tensor:
    x = item() if callable(item) else item
    return x[None] if x.dim() == 3 else x


def l1_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean ``|a − b|`` per image: ``[B, 3, H, W]`` each -> ``[B]``."""
    return (a.float() - b.float()).abs().mean((1, 2, 3))
