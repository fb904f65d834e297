"""Fréchet Inception Distance with pytorch-fid's protocol.

* Images: uint8 RGB files read as ``x / 255``; optionally resized first to
  ``(resize_size, resize_ratio · resize_size)`` bilinearly (the public INADE
  script's ``--resize_size``, 2:1 for Cityscapes); then bilinearly to 299×299
  and ``2x − 1`` inside the network (:mod:`inade.metrics.inception`).
* Features: the 2048-d pool of :class:`FIDInceptionV3`, float32, stored float64.
  Every image counts: the last batch may be short (pytorch-fid ≥ 0.3 does the same;
  the public INADE copy drops the remainder).
* Statistics: mean and ``np.cov(rowvar=False)`` (unbiased) in float64.
* Distance: ``|μ1 − μ2|² + tr(Σ1) + tr(Σ2) − 2 tr(√(Σ1 Σ2))`` with
  ``scipy.linalg.sqrtm``; when the product's root is not finite, ``1e-6 · I`` is
  added to both covariances; an imaginary part above 1e-3 on the diagonal is an
  error, below it is dropped.

Statistics files: pytorch-fid's ``.npz`` (``mu``, ``sigma``) and the public
code's folder ``train_mu_si/<dataset>/`` with ``m.npy`` and ``s.npy``.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inade.metrics.images import batches, check_same_sizes, list_images, load_image, to_unit_tensor
from inade.metrics.inception import FIDInceptionV3, load_inception
from inade.metrics.weights import MetricsError
from inade.utils.files import atomic_path


@dataclass
class Statistics:
    """Gaussian fit of features: ``mu [D]`` and ``sigma [D, D]``, float64; ``count`` images (None when read from a file)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None


# ---------------------------------------------------------------------------
# The distance
# ---------------------------------------------------------------------------


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy import linalg  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Matrix is singular": handled by the caller's fallback
        return linalg.sqrtm(a)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64, as pytorch-fid).

    Args:
        mu1, mu2: ``[D]`` means; sigma1, sigma2: ``[D, D]`` covariances (array-likes, any float dtype).
        eps: the diagonal offset used when ``√(Σ1 Σ2)`` comes out non-finite (a singular product).
        method: ``"sqrtm"`` (pytorch-fid's route, ``scipy.linalg.sqrtm``; the reference) or ``"eigh"``:
            ``tr √(Σ1 Σ2) = Σ √λ(√Σ1 Σ2 √Σ1)`` from two symmetric eigendecompositions, the same
            value up to rounding and many times faster at D = 2048 (no fallback needed).
    Returns:
        ``|mu1 - mu2|² + tr(sigma1 + sigma2 - 2 √(sigma1 sigma2))`` as a Python float.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"means have different lengths: {mu1.shape} vs {mu2.shape}")
    if s1.shape != s2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"covariances {s1.shape} and {s2.shape} do not match means of length {mu1.shape[0]}")
    diff = mu1 - mu2
    if method == "eigh":
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(s1, s2))
    if method != "sqrtm":
        raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}")
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the covariance product's square root has an imaginary part of "
                             f"{np.max(np.abs(covmean.imag)):.3g} (too few images for {mu1.shape[0]} features?)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``tr √(Σ1 Σ2)`` for symmetric PSD ``Σ1, Σ2``: the eigenvalues of ``Σ1 Σ2`` are those of ``√Σ1 Σ2 √Σ1``."""
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root @ s2 @ root
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def statistics(features: np.ndarray | torch.Tensor) -> Statistics:
    """``features [N, D]`` -> mean and unbiased covariance (float64); needs N >= 2."""
    f = features.double().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise MetricsError(f"statistics need at least 2 feature vectors [N, D], got shape {tuple(f.shape)}")
    return Statistics(f.mean(0), np.cov(f, rowvar=False), f.shape[0])


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------


def preprocess(image: torch.Tensor, resize_size: int | None = None, resize_ratio: float = 2.0) -> torch.Tensor:
    """``[B, 3, H, W]`` in ``[0, 1]`` -> the same, resized to ``(S, round(ratio·S))`` bilinearly when ``resize_size`` is set."""
    if resize_size is None or resize_size <= 0:
        return image
    size = (int(resize_size), int(round(resize_size * resize_ratio)))
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def inception_features(images, net: FIDInceptionV3 | None = None, *, weights=None, batch_size: int = 50,
                       device="cpu", resize_size: int | None = None, resize_ratio: float = 2.0,
                       autocast_dtype: torch.dtype | None = None, progress: bool = False) -> np.ndarray:
    """2048-d FID features of images, float64 ``[N, 2048]``.

    Args:
        images: a folder, a list of image files, a uint8 tensor ``[N, 3, H, W]``, or a float
            tensor in ``[0, 1]``.
        net: a built :class:`FIDInceptionV3`; else loaded from ``weights`` / ``$INADE_INCEPTION_WEIGHTS``.
        batch_size: images per forward; every image is used (the last batch may be short).
        resize_size, resize_ratio: the public script's pre-resize to ``(S, ratio·S)``.
        autocast_dtype: e.g. ``torch.bfloat16`` for CPU autocast (faster, not the reference protocol).
    """
    if net is None:
        net = load_inception(weights, device)
    device = next(iter(net.parameters()), torch.empty(0, device=device)).device
    if isinstance(images, torch.Tensor):
        chunks = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
        total = len(images)
    else:
        files = list_images(images) if isinstance(images, (str, Path)) else [Path(p) for p in images]
        if not files:
            raise MetricsError("no images given")
        chunks = (torch.stack([to_unit_tensor(load_image(p)) for p in b]) for b in batches(files, batch_size))
        total = len(files)
    out = None
    bar = _bar(total, progress, "inception")
    start = 0
    for x in chunks:
        x = x.to(device)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        x = preprocess(x, resize_size, resize_ratio)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            f = net(x).float().reshape(len(x), -1)
        if out is None:  # 2048 for the FID network; any feature net works (tests use small ones)
            out = np.empty((total, f.shape[1]), dtype=np.float64)
        out[start:start + len(f)] = f.cpu().numpy()
        start += len(f)
        bar.update(len(f))
    bar.close()
    return out


def _bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img", leave=False)


# ---------------------------------------------------------------------------
# Statistics files
# ---------------------------------------------------------------------------


def is_statistics_path(path: str | Path) -> bool:
    """A ``.npz`` file, or a folder holding ``m.npy`` and ``s.npy`` (the public code's ``train_mu_si/<dataset>``)."""
    p = Path(path)
    return p.suffix == ".npz" or (p.is_dir() and (p / "m.npy").is_file() and (p / "s.npy").is_file())


def load_statistics(path: str | Path) -> Statistics:
    """Read pytorch-fid ``.npz`` (``mu``, ``sigma``) or a ``m.npy`` / ``s.npy`` folder; :class:`MetricsError` naming the file."""
    p = Path(path)
    try:
        if p.suffix == ".npz":
            if not p.is_file():
                raise MetricsError(f"statistics file not found: {p}")
            with np.load(p) as f:
                if "mu" not in f or "sigma" not in f:
                    raise MetricsError(f"{p}: a FID statistics .npz needs arrays 'mu' and 'sigma', found {sorted(f.files)}")
                mu, sigma = f["mu"][:], f["sigma"][:]
        else:
            mu, sigma = np.load(p / "m.npy"), np.load(p / "s.npy")
    except MetricsError:
        raise
    except FileNotFoundError as e:
        raise MetricsError(f"statistics not found: {e.filename}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt npy/npz
        raise MetricsError(f"{p}: not readable FID statistics ({type(e).__name__}: {e})") from None
    try:
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    except (TypeError, ValueError) as e:
        raise MetricsError(f"{p}: not numeric FID statistics ({e})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise MetricsError(f"{p}: mu has shape {mu.shape} and sigma {sigma.shape}; expected [D] and [D, D]")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise MetricsError(f"{p}: FID statistics with NaN or infinite values (a corrupt file)")
    return Statistics(mu, sigma)


def save_statistics(path: str | Path, stats: Statistics) -> Path:
    """Write ``.npz`` (``mu``, ``sigma``, compressed, as pytorch-fid ``--save-stats``) or, for any
    other path, a folder with ``m.npy`` and ``s.npy`` (the public code's layout). Atomic per file."""
    p = Path(path)
    try:
        return _save_statistics(p, stats)
    except OSError as e:
        raise MetricsError(f"{p}: cannot write the statistics ({e.strerror or e})") from None


def _save_statistics(p: Path, stats: Statistics) -> Path:
    if p.suffix == ".npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, mu=stats.mu, sigma=stats.sigma)
        with atomic_path(p) as tmp:
            tmp.write_bytes(buf.getvalue())
        return p
    for name, arr in (("m.npy", stats.mu), ("s.npy", stats.sigma)):
        buf = io.BytesIO()
        np.save(buf, arr)
        with atomic_path(p / name) as tmp:
            tmp.write_bytes(buf.getvalue())
    return p


# ---------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------


def statistics_of(source, net: FIDInceptionV3 | None = None, **kw) -> Statistics:
    """Statistics of a folder / file list / tensor of images, or read from a statistics path."""
    if isinstance(source, Statistics):
        return source
    if isinstance(source, (str, Path)) and is_statistics_path(source):
        return load_statistics(source)
    return statistics(inception_features(source, net, **kw))


def fid(real, fake, *, net: FIDInceptionV3 | None = None, weights=None, device="cpu", method: str = "sqrtm",
        log: Callable[[str], None] | None = None, **kw) -> float:
    """FID between two image sets (pytorch-fid protocol; see the module doc).

    Args:
        real, fake: each a folder of images, a list of files, an image tensor (uint8 or [0, 1]),
            a :class:`Statistics`, or a statistics path (``.npz``, or a folder with ``m.npy``/``s.npy``).
        net / weights: the Inception network, or its weight file (default ``$INADE_INCEPTION_WEIGHTS``).
        method: ``"sqrtm"`` (pytorch-fid) or ``"eigh"`` (faster, same value); see :func:`frechet_distance`.
        kw: ``batch_size``, ``resize_size``, ``resize_ratio``, ``autocast_dtype``, ``progress``
            (see :func:`inception_features`).
    Raises:
        MetricsError: an empty folder, an unreadable image or statistics file, real and fake folders
            of different image sizes (without ``resize_size``); WeightsError for the weight file.
    """
    folders = [s for s in (real, fake) if isinstance(s, (str, Path)) and not is_statistics_path(s)]
    if len(folders) == 2 and not kw.get("resize_size"):
        check_same_sizes(list_images(folders[0]), list_images(folders[1]))
    needs_net = any(not isinstance(s, Statistics) and not (isinstance(s, (str, Path)) and is_statistics_path(s))
                    for s in (real, fake))
    if needs_net and net is None:
        net = load_inception(weights, device)
    out = []
    for name, src in (("real", real), ("fake", fake)):
        if log is not None:
            log(f"{name}: {src if isinstance(src, (str, Path)) else type(src).__name__}")
        out.append(statistics_of(src, net, **kw))
    (a, b) = out
    if a.mu.shape != b.mu.shape:
        raise MetricsError(f"real statistics have {a.mu.shape[0]} features, fake {b.mu.shape[0]}")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method=method)


__all__ = [
    "Statistics", "frechet_distance", "statistics", "inception_features", "preprocess", "load_statistics",
    "save_statistics", "is_statistics_path", "statistics_of", "fid",
]
