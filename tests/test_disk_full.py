"""A full disk, for real: every write of the project onto a small tmpfs that fills up.

torch's zip writer reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc…]
unexpected pos …`` (the ``OSError`` only as its context), Pillow and numpy as ``OSError``; every one
must end as one line naming the path and saying what is intact, with the previous file kept and no
temporary file left. The tests mount a tmpfs of a few hundred kilobytes (root only: they are skipped
with the reason where ``mount`` is not permitted).
"""
from __future__ import annotations

import errno
import os
import subprocess

import numpy as np
import pytest
import torch
from _cli import assert_user_error
from PIL import Image
from test_train import TINY

import inade
from inade.metrics import results
from inade.test import main as inade_test_main
from inade.training.trainer import main as train_main
from inade.utils.checkpoint_io import atomic_save
from inade.utils.errors import UserError

CFG = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32)


@pytest.fixture
def small_fs(tmp_path):
    """``mount(size)``: a fresh tmpfs of ``size`` (e.g. ``"600k"``) under ``tmp_path``; unmounted after."""
    mounted = []

    def mount(size: str, options: str = ""):
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip() or proc.returncode}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder, leave: int = 0) -> None:
    """Fill ``folder``'s file system, then free ``leave`` bytes."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
        f.truncate(max(f.tell() - leave, 0))


def _one_line(code: int, err: str, *needles: str) -> str:
    return assert_user_error(subprocess.CompletedProcess([], code, "", err), *needles)


def _temporaries(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.name.endswith((".tmp", ".lock")))


def test_torch_save_onto_a_full_disk_keeps_the_previous_file(small_fs):
    """The library's own error (RuntimeError from the zip writer): one line, the old file byte-identical."""
    fs = small_fs("600k")
    previous = {"w": torch.ones(10)}
    atomic_save(previous, fs / "latest.pt")
    before = (fs / "latest.pt").read_bytes()
    fill(fs, leave=20_000)
    with pytest.raises(UserError) as caught:
        atomic_save({"w": torch.randn(100_000)}, fs / "latest.pt")  # 400 KB
    line = str(caught.value)
    assert line.startswith(f"{fs / 'latest.pt'}: cannot write it (No space left on device)"), line
    assert "previous file is intact" in line and "\n" not in line
    assert (fs / "latest.pt").read_bytes() == before and _temporaries(fs) == []
    assert isinstance(caught.value.__cause__, RuntimeError) and "inline_container" in str(caught.value.__cause__)


def test_a_read_only_file_system_is_one_line(small_fs):
    fs = small_fs("600k", ",ro")
    with pytest.raises(UserError, match=r"latest\.pt: cannot write it \(Read-only file system\); nothing was written"):
        atomic_save({"w": torch.ones(3)}, fs / "latest.pt")


def test_train_py_on_a_full_disk_is_one_line(small_fs, capsys):
    """The issue's case: a 34-line traceback from torch's zip writer at the first save."""
    fs = small_fs("600k")
    code = train_main([*TINY, "--checkpoints_dir", str(fs), "--name", "run", "--max_steps", "1", "--no_vgg_loss",
                       "--display_freq", "1000"])
    err = capsys.readouterr().err
    _one_line(code, err, f"{fs / 'run'}: cannot write latest.pt", "No space left on device", "intact")
    assert _temporaries(fs) == []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    torch.save({"G": inade.Generator(CFG).state_dict(), "config": CFG.to_dict(), "options": {"seed": 0}}, d / "latest.pt")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "label.png")
    return d


def test_inade_test_on_a_full_disk_keeps_the_previous_results(small_fs, checkpoint, capsys):
    fs = small_fs("1m")
    argv = ["--checkpoint", str(checkpoint / "latest.pt"), "--name", "exp", "--results_dir", str(fs),
            "--synthetic_size", "3", "--no_progress"]
    assert inade_test_main(argv) == 0
    out = fs / "exp" / "test_latest"
    before = results.file_table(out)
    fill(fs, leave=8_000)
    capsys.readouterr()
    code = inade_test_main(argv + ["--samples", "3"])
    _one_line(code, capsys.readouterr().err, f"{out}: cannot write the results (No space left on device)",
              "previous results there are intact")
    assert results.file_table(out) == before and results.verify(out)["layouts"] == 3
    assert _temporaries(fs) == []


def test_inade_synth_on_a_full_disk_keeps_the_previous_image(small_fs, checkpoint, capsys):
    from inade.cli import main as synth_main  # noqa: PLC0415

    fs = small_fs("600k")
    out = fs / "a.png"
    argv = ["random", "--checkpoint", str(checkpoint / "latest.pt"), "--label", str(checkpoint / "label.png"),
            "--out", str(out)]
    assert synth_main(argv) == 0
    before = out.read_bytes()
    fill(fs)
    capsys.readouterr()
    code = synth_main([*argv, "--seed", "3"])
    _one_line(code, capsys.readouterr().err, f"{out}: cannot write --out (No space left on device)",
              "the previous file is intact")
    assert out.read_bytes() == before and sorted(p.name for p in fs.iterdir()) == ["a.png", "filler"]


def test_metrics_json_on_a_full_disk_is_one_line(small_fs, checkpoint, tmp_path, capsys):
    from inade.metrics.__main__ import main as metrics_main  # noqa: PLC0415

    argv = ["--checkpoint", str(checkpoint / "latest.pt"), "--name", "exp", "--results_dir", str(tmp_path / "res"),
            "--synthetic_size", "2", "--no_progress"]
    assert inade_test_main(argv) == 0
    fs = small_fs("600k")
    fill(fs)
    capsys.readouterr()
    code = metrics_main(["all", str(tmp_path / "res" / "exp" / "test_latest"), "--no_generator",
                         "--json", str(fs / "m.json"), "--md", str(tmp_path / "m.md")])
    _one_line(code, capsys.readouterr().err, f"{fs / 'm.json'}: cannot write (No space left on device); nothing was written")
    assert sorted(os.listdir(fs)) == ["filler"]


@pytest.mark.parametrize("leave", [0, 4096, 8192])
def test_inade_synth_image_and_latents_both_or_neither_on_a_full_disk(small_fs, checkpoint, capsys, leave):
    """--out and --save-latents with room for none, one or (maybe) both: either both files appear whole, or
    neither and one line naming the one that did not fit; never a temporary file."""
    from inade.cli import main as synth_main  # noqa: PLC0415

    fs = small_fs("600k")
    fill(fs, leave=leave)
    argv = ["random", "--checkpoint", str(checkpoint / "latest.pt"), "--label", str(checkpoint / "label.png"),
            "--out", str(fs / "a.png"), "--save-latents", str(fs / "a.pt")]
    code = synth_main(argv)
    err = capsys.readouterr().err
    names = sorted(p.name for p in fs.iterdir())
    if code == 0:
        assert names == ["a.png", "a.pt", "filler"]
    else:
        line = _one_line(code, err, "No space left on device", "nothing was written")
        assert "--out" in line or "--save-latents" in line, line
        assert names == ["filler"], names
