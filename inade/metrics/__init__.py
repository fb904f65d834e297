"""The paper's evaluation: FID, LPIPS, the diversity metrics (LPIPS diversity, mCSD/mOCD,
mISD/mOID and their weight-free L1 twins) and mIoU / pixel accuracy with a given segmenter.

Networks are written in the project and read the standard weight files
(``pt_inception-2015-12-05-6726825d.pth``, ``alexnet-owt-7be5be79.pth``,
``vgg16-397923af.pth``, lpips' ``weights/v0.1/{alex,vgg}.pth``) from a path or
an environment variable; see ``docs/EVALUATION.md`` for the exact protocols.

Command line: ``python -m inade.metrics {fid,stats,lpips,all} ...``.
"""
import importlib
import sys
import types

# Imported when first used (PEP 562): ``python -m inade.metrics`` parses its options before torch loads.
_HOME = {**dict.fromkeys(("Statistics", "frechet_distance", "inception_features", "load_statistics",
                          "save_statistics", "statistics"), "fid"),
         "FIDInceptionV3": "inception", "load_inception": "inception", "LPIPS": "lpips",
         "MetricsError": "weights", "WeightsError": "weights"}
_SUBMODULES = ("diversity", "segmentation")

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


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


class _Package(types.ModuleType):
    """``inade.metrics.fid`` is the function :func:`inade.metrics.fid.fid`, as when this package
    imported it eagerly, even after the submodule of the same name is imported (the import system
    then binds the submodule to the name: ignored here)."""

    @property
    def fid(self):
        return importlib.import_module(f"{__name__}.fid").fid

    @fid.setter
    def fid(self, _module):
        pass


sys.modules[__name__].__class__ = _Package
