"""mIoU and pixel accuracy of synthesised images under a segmentation network the user supplies.

The SPADE-family protocol: segment each synthesised image, compare with the layout
it was made from, accumulate one confusion matrix over the whole test split, then

* IoU_c = TP_c / (TP_c + FP_c + FN_c) per class, mIoU = mean over classes that occur
  (in the labels or the predictions; a class with an empty union is left out);
* pixel accuracy = Σ_c TP_c / (number of counted pixels).

Pixels whose label is the ignore index (the dataset's don't-care label) are not
counted; predictions outside ``0 … K−1`` count as wrong.

The network: a TorchScript file (``torch.jit.save``) or ``"package.module:function"``
that returns an ``nn.Module``. It takes ``[B, 3, H, W]`` float RGB in ``[0, 1]`` and
returns class scores ``[B, K, h, w]`` (bilinearly resized to the label size when
``h, w`` differ; argmax over ``K``) or class ids ``[B, H, W]``. Normalisation to the
network's own input statistics is the network's job.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inade.metrics.weights import MetricsError


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """``[K, K + 1]`` int64 counts: rows = label, columns = prediction, the last column = a prediction
    outside ``0 … K−1``. ``pred``, ``target``: integer maps of one shape; labels outside ``0 … K−1``
    and ``ignore_index`` are not counted."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} differ in shape")
    K = int(num_classes)
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    keep = (t >= 0) & (t < K)
    if ignore_index is not None:
        keep &= t != ignore_index
    t, p = t[keep], p[keep]
    p = torch.where((p < 0) | (p >= K), torch.full_like(p, K), p)
    return torch.bincount(t * (K + 1) + p, minlength=K * (K + 1)).view(K, K + 1)


def scores(conf: Tensor | np.ndarray) -> dict:
    """mIoU, pixel accuracy and per-class IoU from a :func:`confusion_matrix` (``[K, K]`` or ``[K, K + 1]``)."""
    c = np.asarray(conf.cpu() if isinstance(conf, Tensor) else conf, dtype=np.float64)
    K = c.shape[0]
    tp = np.diag(c[:, :K])
    fn = c.sum(1) - tp          # includes out-of-range predictions
    fp = c[:, :K].sum(0) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = c.sum()
    return {
        "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "pixels": int(total),
    }


class ConfusionMeter:
    """Accumulates a confusion matrix over batches; :meth:`result` gives :func:`scores`."""

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.conf = torch.zeros(num_classes, num_classes + 1, dtype=torch.long)

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.conf += confusion_matrix(pred.cpu(), target.cpu(), self.num_classes, self.ignore_index)

    def result(self) -> dict:
        return scores(self.conf)


def load_segmenter(spec: str, device="cpu") -> nn.Module:
    """A TorchScript file, or ``"module:function"`` returning an ``nn.Module``; in eval mode.

    Raises:
        MetricsError: the file is missing or not TorchScript, the module or function does not import.
    """
    path = Path(spec)
    if path.suffix in (".pt", ".pth", ".ts", ".jit", ".torchscript") or path.exists():
        if not path.is_file():
            raise MetricsError(f"segmentation network file not found: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 marks TorchScript deprecated
                net = torch.jit.load(str(path), map_location=device)
        except Exception as e:  # noqa: BLE001
            raise MetricsError(f"{path}: not a TorchScript file ({type(e).__name__}); save it with "
                               "torch.jit.save(torch.jit.script(net), path), or pass module:function") from None
        return net.eval()
    if ":" not in spec:
        raise MetricsError(f"--segmenter {spec!r}: give a TorchScript file or module:function")
    mod_name, fn_name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise MetricsError(f"--segmenter {spec}: cannot import {fn_name} from {mod_name} ({e})") from None
    net = fn()
    if not isinstance(net, nn.Module):
        raise MetricsError(f"--segmenter {spec}: returned a {type(net).__name__}, not an nn.Module")
    return net.to(device).eval()


@torch.no_grad()
def segment(net: nn.Module, images: Tensor, size: tuple[int, int]) -> Tensor:
    """Class ids ``[B, H, W]`` (``size``) of ``images [B, 3, h, w]`` in ``[0, 1]``."""
    out = net(images)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = out.get("out", next(iter(out.values())))
    if out.dim() == 3:
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out[:, None].float(), size=size, mode="nearest")[:, 0]
        return out.long()
    if tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
    return out.argmax(1)
