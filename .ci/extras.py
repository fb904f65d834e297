"""Run by CI in a fresh virtual environment holding only the wheel and one extra
(``python extras.py EXTRA``, from a folder outside the clone): that extra's entry points answer
``--help``, and the modules behind them import, so a dependency missing from setup.py's extra
fails here. In the environment without extras, a feature whose extra is missing must say in one
line which extra to install.
"""
from __future__ import annotations

import importlib
import subprocess
import sys

PY = sys.executable
# extra -> (commands that must answer --help, modules that must import, code that must run)
CHECKS = {
    "none": ([["-m", "inade.cli"], ["-m", "inade.test"], ["-m", "inade.data.prepare"]],
             ["inade", "inade.cli", "inade.test", "inade.training.trainer", "inade.data.prepare", "inade.synthesis"],
             "import inade; inade.Generator(inade.config('synthetic'))"),
    "studio": ([["-m", "inade.studio"]], ["inade.studio.server", "inade.studio.schema", "inade.studio.engine"], ""),
    "metrics": ([["-m", "inade.metrics"]], ["inade.metrics.__main__", "inade.metrics.fid"],
                "import numpy as np; from inade.metrics.fid import frechet_distance as f; "
                "assert abs(f(np.zeros(3), np.eye(3), np.ones(3), np.eye(3))  - 3) < 1e-6"),  # scipy's sqrtm
    "bench": ([["-m", "bench.report"]], ["bench.report", "matplotlib.pyplot"], ""),
    "logs": ([["-m", "inade.training.report"]], ["inade.training.logs", "torch.utils.tensorboard", "matplotlib.figure"],
             ""),
    "export": ([["-m", "inade.export"]], ["inade.export.__main__", "onnx", "onnxscript", "onnxruntime"], ""),
}
# In the environment without extras: each feature names its extra.
NEEDS_EXTRA = {"studio": ["-m", "inade.studio", "--checkpoint", "none.pt"]}


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *args], capture_output=True, text=True, timeout=600)


def main(extra: str) -> int:
    helps, modules, code = CHECKS[extra]
    for args in helps:
        proc = run([*args, "--help"])
        assert proc.returncode == 0 and "usage:" in proc.stdout, f"{' '.join(args)} --help:\n{proc.stderr[-2000:]}"
    for name in modules:
        importlib.import_module(name)
    if code:
        exec(code, {})  # noqa: S102 - CI's own check
    if extra == "none":
        for feature, args in NEEDS_EXTRA.items():
            proc = run(args)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1 and f"inade[{feature}]" in lines[0], proc.stderr[-2000:]
    print(f"extra {extra}: {len(helps)} entry point(s) answer --help, {len(modules)} module(s) import")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
