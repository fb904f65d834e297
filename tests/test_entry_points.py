"""Every command line answers at once and in the right environment: ``--help`` and a mistyped
option before torch is imported, the closest option name for an unknown one (case differences
included), one line naming the environment when a dependency is missing; and the public custom
data set's options (``--dataset_mode custom --label_dir … --image_dir … --instance_dir …``).
"""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from _cli import ROOT, assert_user_error, run_cli
from inade.training.options import parse_options
from inade.training.trainer import main as train_main

# (entry point as run_module / run_path sees it, a mistyped option and the name it must suggest)
ENTRY_POINTS = {
    "train.py": (str(ROOT / "train.py"), ["--batchsize", "4"], "--batchSize"),
    "inade.test": ("inade.test", ["--Which_Epoch", "best"], "--which_epoch"),
    "inade.metrics": ("inade.metrics", ["fid", "a", "b", "--batchsize", "4"], "--batch_size"),
    "inade.studio": ("inade.studio", ["--chekpoint", "c.pt"], "--checkpoint"),
    "inade-synth": ("inade.cli", ["random", "--checkpoint", "c", "--label", "l", "--out", "o.png", "--Seed", "1"],
                    "--seed"),
    "inade.data.prepare": ("inade.data.prepare", ["d", "--dataset", "ade20k", "--Overwrite"], "--overwrite"),
}

# Runs an entry point in this process, then reports whether torch was imported.
PROBE = textwrap.dedent("""
    import runpy, sys
    target, *argv = sys.argv[1:]
    sys.argv = [target, *argv]
    try:
        if target.endswith(".py"):
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    print("torch imported" if "torch" in sys.modules else "no torch", file=sys.stderr)
    sys.exit(code)
""")


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_help_and_a_mistyped_option_answer_before_torch(entry):
    target, wrong, meant = ENTRY_POINTS[entry]
    helped = run_cli(["-c", PROBE, target, "--help"], timeout=120)
    assert helped.returncode == 0 and b"usage:" in helped.stdout, helped.stderr
    assert helped.stderr.decode().strip().endswith("no torch"), helped.stderr
    proc = run_cli(["-c", PROBE, target, *wrong], timeout=120)
    err = proc.stderr.decode()
    assert err.strip().endswith("no torch"), err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert proc.returncode == 2 and len(line) == 1 and f"(did you mean {meant}?)" in line[0], err


def test_layout_names_are_the_loaders():
    """The parsers' torch-free list of data set layouts is the loaders' own."""
    from inade.config import LAYOUT_NAMES  # noqa: PLC0415
    from inade.data.folders import LAYOUTS  # noqa: PLC0415

    assert tuple(LAYOUTS) == LAYOUT_NAMES


def test_a_python_without_torch_names_the_environment(tmp_path):
    """torch made unimportable (as in a Python without it): one line, no traceback, naming .venv."""
    block = "import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
    for args in ([str(ROOT / "train.py"), "--batchSize", "2"], ["-m", "inade.test", "--name", "x"]):
        run = (f"runpy.run_path({args[0]!r}, run_name='__main__')" if args[0].endswith(".py")
               else f"runpy.run_module({args[1]!r}, run_name='__main__', alter_sys=True)")
        argv = args if args[0].endswith(".py") else [args[1], *args[2:]]
        proc = run_cli(["-c", block + run, *argv], cwd=tmp_path, timeout=120)
        line = assert_user_error(proc, "'torch'")
        assert ".venv/bin/python" in line or "inade[" in line, line
    assert list(tmp_path.iterdir()) == [], "nothing written"


# ---------------------------------------------------------------------------
# The public custom data set
# ---------------------------------------------------------------------------

TINY = ["--crop_size", "32", "--load_size", "32", "--ngf", "4", "--noise_nc", "4", "--z_dim", "8", "--ndf", "4",
        "--batchSize", "2", "--nThreads", "0", "--no_progress", "--gpu_ids", "-1", "--no_vgg_loss",
        "--display_freq", "1000", "--max_steps", "1"]


def _custom_folders(root, n: int = 3):
    """The public custom layout: label, image and instance folders, files paired by name."""
    rng = np.random.default_rng(0)
    for sub in ("labels", "photos", "objects"):
        (root / sub).mkdir(parents=True)
    for k in range(n):
        label = np.zeros((32, 32), np.uint8)
        label[4:20, 4:20] = 1
        label[20:, :] = 2
        inst = label.astype(np.uint16) * 1000 + (np.arange(32)[None] > 12)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "photos" / f"im{k}.jpg")
        Image.fromarray(label).save(root / "labels" / f"im{k}.png")
        Image.fromarray(inst).save(root / "objects" / f"im{k}.png")
    return ["--label_dir", str(root / "labels"), "--image_dir", str(root / "photos"),
            "--instance_dir", str(root / "objects")]


def test_custom_dataset_reads_the_public_layout(tmp_path):
    folders = _custom_folders(tmp_path / "data")
    argv = [*TINY, "--dataset_mode", "custom", "--label_nc", "3", *folders, "--checkpoints_dir", str(tmp_path),
            "--name", "run"]
    opt, cfg, _ = parse_options(argv)
    assert (opt.dataset_mode, cfg.dataset_mode, opt.label_dir) == ("custom", "custom", str(tmp_path / "data" / "labels"))
    assert train_main(argv) == 0
    assert (tmp_path / "run" / "latest.pt").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--dataset_mode", "custom", "--label_nc", "3"], "--dataset_mode custom needs --label_dir and --image_dir"),
    (["--dataset_mode", "custom", "--label_nc", "3", "--label_dir", "L"], "--dataset_mode custom needs --image_dir"),
    (["--dataset_mode", "custom", "--label_nc", "3", "--label_dir", "{tmp}/none", "--image_dir", "{tmp}"],
     "--label_dir folder not found"),
    (["--label_dir", "L", "--image_dir", "I"], "--label_dir is an option of --dataset_mode custom"),
    (["--dataset_mode", "custom", "--label_nc", "3", "--dataroot", "{tmp}/none"], "(dataset_mode='custom')"),
], ids=["no-folders", "no-image_dir", "missing-label_dir", "not-custom", "custom-dataroot-missing"])
def test_custom_dataset_errors_name_custom(args, needle, tmp_path, capsys):
    assert train_main([*TINY, "--checkpoints_dir", str(tmp_path), *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    assert needle in err and "folder'" not in err and err.count("\n") == 1, err


def test_custom_dataset_options_in_inade_test():
    from inade.test import parse_test_options  # noqa: PLC0415

    opt, notes = parse_test_options(["--label_dir", "L", "--image_dir", "I", "--instance_dir", "N"])
    assert (opt.label_dir, opt.image_dir, opt.instance_dir, notes) == ("L", "I", "N", [])
    with pytest.raises(Exception, match="--label_dir is an option of --dataset_mode custom"):
        parse_test_options(["--dataset_mode", "cityscapes", "--label_dir", "L"])


def test_no_test_process_reads_the_repository_folder():
    """The suite's working folder is a fresh empty one (conftest), so ./checkpoints of make train is unseen."""
    from pathlib import Path  # noqa: PLC0415

    assert Path.cwd() != ROOT and list(Path.cwd().iterdir()) == []


def test_a_missing_module_names_its_extra_or_the_environment(monkeypatch):
    """The extra comes from the installed package's metadata (setup.py's extras: the one list)."""
    from importlib import metadata  # noqa: PLC0415

    from inade.utils import errors  # noqa: PLC0415

    requires = ["torch>=2.4", "pillow", 'pydantic>=2; extra == "studio"', 'scipy>=1.9; extra == "metrics"',
                'pytest; extra == "test"', 'pydantic>=2; extra == "test"']
    monkeypatch.setattr(metadata, "requires", lambda name: requires if name == "inade" else [])
    assert [errors._extra_of(m) for m in ("pydantic", "scipy", "torch", "PIL", "pytest")] == \
        ["studio", "metrics", None, None, None]
    venv = ROOT / ".venv"
    monkeypatch.setattr(sys, "prefix", str(venv))  # the project's environment, lacking an extra's module
    if (venv / "bin" / "python").exists():
        assert 'pip install "inade[studio]"' in errors.missing_dependency(ModuleNotFoundError(name="pydantic"))
        monkeypatch.setattr(sys, "prefix", "/usr")  # another Python: the environment to use
        line = errors.missing_dependency(ModuleNotFoundError(name="torch"))
        assert "not the project's environment" in line and ".venv/bin/python" in line
    assert errors.missing_dependency(ModuleNotFoundError(name="inade.nothing")) is None  # a bug keeps its traceback
