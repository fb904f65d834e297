"""The paper's evaluation: FID, LPIPS, the diversity metrics (LPIPS diversity, mCSD/mOCD,
mISD/mOID and their weight-free L1 twins) and mIoU / pixel accuracy with a given segmenter.

Networks are written in the project and read the standard weight files
(``pt_inception-2015-12-05-6726825d.pth``, ``alexnet-owt-7be5be79.pth``,
``vgg16-397923af.pth``, lpips' ``weights/v0.1/{alex,vgg}.pth``) from a path or
an environment variable; see ``docs/EVALUATION.md`` for the exact protocols.

Command line: ``python -m inade.metrics {fid,stats,lpips,all} ...``.
"""
from inade.metrics.fid import (
    Statistics,
    fid,
    frechet_distance,
    inception_features,
    load_statistics,
    save_statistics,
    statistics,
)
from inade.metrics.inception import FIDInceptionV3, load_inception
from inade.metrics.lpips import LPIPS
from inade.metrics.weights import MetricsError, WeightsError
from inade.metrics import diversity, segmentation  # noqa: E402 - submodules as attributes

__all__ = [
    "FIDInceptionV3",
    "LPIPS",
    "MetricsError",
    "Statistics",
    "WeightsError",
    "diversity",
    "fid",
    "frechet_distance",
    "inception_features",
    "load_inception",
    "load_statistics",
    "save_statistics",
    "segmentation",
    "statistics",
]
