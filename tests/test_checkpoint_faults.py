"""Checkpoints under attack: damaged and NaN files refused by every loader, a trained
model never overwritten by accident, divergence stopping before a bad save, the
temporary files of a killed save removed, the import circle gone (issues 18 and 19)."""
from __future__ import annotations

import ast
import errno
import os
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import assert_user_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_train import TINY, one_thread, quiet_trainer, tiny_options  # noqa: F401 - the tiny run and its fixture

import inade
from inade.models.losses import INADELoss
from inade.training import checkpoint as ckpt
from inade.training.trainer import main
from inade.utils.checkpoint_io import atomic_save, load_checkpoint
from inade.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step tiny run with the encoder: latest.pt and latest_net_{G,D,E}.pth (read-only for the tests)."""
    root = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    opt, cfg, _ = tiny_options(root, "--max_steps", "2", "--display_freq", "1000")
    quiet_trainer(opt, cfg).run()
    torch.set_num_threads(threads)
    return root / "run"


def flip_tensor_bytes(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` with 4 bytes inverted in the middle of its largest tensor record:
    the zip structure and the pickle stay valid, so ``torch.load`` alone reads it silently."""
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    raw[at: at + 4] = bytes(b ^ 0xFF for b in raw[at: at + 4])
    dst.write_bytes(bytes(raw))


def nan_copy(src: Path, dst: Path, legacy: bool = False) -> str:
    """Copy ``src`` with one NaN in its first floating-point weight, written by plain ``torch.save``
    (valid checksums); ``legacy``: the pre-zip format, which has no checksums at all. Returns the key."""
    obj = torch.load(src, weights_only=True)
    sd = obj["G"] if "G" in obj else obj
    key = next(k for k, v in sd.items() if v.is_floating_point() and k.endswith("weight"))
    sd[key].view(-1)[0] = float("nan")
    torch.save(obj, dst, _use_new_zipfile_serialization=not legacy)
    return ("G." if "G" in obj else "") + key


@pytest.fixture(scope="module")
def bad_files(trained, tmp_path_factory):
    """{case id: (file, what the error must say)}."""
    out = tmp_path_factory.mktemp("bad")
    cases = {}
    for name in ("latest.pt", "latest_net_G.pth"):
        flipped = out / "flipped" / name
        flipped.parent.mkdir(exist_ok=True)
        flip_tensor_bytes(trained / name, flipped)
        cases[f"{name}-flipped-bytes"] = (flipped, "damaged: the checksum (CRC-32) of its record")
        nan = out / "nan" / name
        nan.parent.mkdir(exist_ok=True)
        cases[f"{name}-nan"] = (nan, f"tensor {nan_copy(trained / name, nan)} holds NaN or inf")
    public = out / "public" / "best_net_G.pth"  # the public code's kind of file: no checksum
    public.parent.mkdir()
    cases["public-legacy-format-nan"] = (public, f"tensor {nan_copy(trained / 'latest_net_G.pth', public, True)} holds")
    return cases


CASES = ["latest.pt-flipped-bytes", "latest.pt-nan", "latest_net_G.pth-flipped-bytes", "latest_net_G.pth-nan",
         "public-legacy-format-nan"]


@pytest.mark.parametrize("case", CASES)
def test_damaged_and_nan_files_are_refused_by_the_reader(bad_files, case):
    path, message = bad_files[case]
    with pytest.raises(UserError, match="holds|damaged") as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)
    if path.suffix == ".pth":  # inade.load_official reads through the same reader
        cfg = tiny_options(path.parent)[1]
        with pytest.raises(UserError, match=message.split(":")[0]):
            inade.load_official(inade.Generator(cfg), path)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1, exclude_max=True), xor=st.binary(min_size=1, max_size=4).filter(any))
def test_any_changed_bytes_are_refused_or_change_nothing(trained, tmp_path, where, xor):
    """An attacker's view: change 1-4 bytes anywhere in a checkpoint (data, pickle, headers,
    directory). The reader refuses it with a UserError, or it loads exactly the original
    (the bytes were padding). Never another exception, never different weights."""
    src = trained / "latest_net_E.pth"
    raw = bytearray(src.read_bytes())
    at = int(where * (len(raw) - len(xor)))
    raw[at: at + len(xor)] = bytes(a ^ b for a, b in zip(raw[at: at + len(xor)], xor))
    changed = tmp_path / "changed.pth"
    changed.write_bytes(bytes(raw))
    try:
        got = load_checkpoint(changed)
    except UserError as err:
        assert str(err).startswith(f"{changed}: ") and "\n" not in str(err)
    else:
        assert _same(torch.load(src, weights_only=True), got), f"bytes at {at} changed the weights silently"


def test_torch_load_alone_would_have_read_them(bad_files):
    """What the checks add: plain torch.load reads the flipped file without a word."""
    path, _ = bad_files["latest.pt-flipped-bytes"]
    assert torch.load(path, weights_only=True)["step"] == 2


def test_intact_files_load(trained):
    assert load_checkpoint(trained / "latest.pt")["step"] == 2
    assert all(torch.isfinite(v).all() for v in load_checkpoint(trained / "latest_net_D.pth").values())


def test_continue_train_refuses_damaged_and_nan_checkpoints(trained, bad_files, tmp_path, capsys):
    resume = TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--continue_train", "--max_steps", "3"]
    folder = tmp_path / "run"
    for case, only_public in (("latest.pt-flipped-bytes", False), ("latest.pt-nan", False),
                              ("latest_net_G.pth-nan", True)):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(trained, folder)
        bad, message = bad_files[case]
        shutil.copyfile(bad, folder / bad.name)
        if only_public:
            (folder / "latest.pt").unlink()
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        assert main(resume) == 2, case
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and str(folder / bad.name) in lines[0] and message in lines[0], err
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before, "nothing rewritten"


@pytest.mark.parametrize("program", ["inade-synth", "inade.test", "inade.studio"])
def test_every_program_refuses_a_damaged_checkpoint(bad_files, tmp_path, program):
    """One line, exit 2, naming the file, and no output written."""
    bad, message = bad_files["latest.pt-flipped-bytes"]
    label = tmp_path / "label.png"
    Image.fromarray(np.ones((32, 32), np.uint8)).save(label)
    args = {
        "inade-synth": ["-m", "inade.cli", "random", "--checkpoint", str(bad), "--label", str(label),
                        "--out", str(tmp_path / "out.png")],
        "inade.test": ["-m", "inade.test", "--checkpoint", str(bad), "--results_dir", str(tmp_path / "results"),
                       "--no_progress"],
        "inade.studio": ["-m", "inade.studio", "--checkpoint", str(bad), "--port", "0"],
    }[program]
    line = assert_user_error(run_cli(args, timeout=120), str(bad), message)
    assert line.count(str(bad)) >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label.png"], "no output written"


# ---------------------------------------------------------------------------
# never overwrite a trained model by accident
# ---------------------------------------------------------------------------


def test_fresh_run_into_a_trained_folder_stops_before_writing(trained, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")  if p.is_file()}
    fresh = TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--max_steps", "1", "--display_freq", "1000"]
    assert main(fresh) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: {folder} already holds a trained model (latest.pt")
    for option in ("--continue_train", "another --name", "--overwrite"):
        assert option in line
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()} == snapshot
    # only the public code's files: still a trained model
    (folder / "latest.pt").unlink()
    assert main(fresh) == 2
    assert "latest_net_G.pth" in capsys.readouterr().err
    # --overwrite: a new run replaces them when it saves
    old_g = (folder / "latest_net_G.pth").read_bytes()
    assert main(fresh + ["--overwrite"]) == 0
    assert load_checkpoint(folder / "latest.pt")["step"] == 1
    assert (folder / "latest_net_G.pth").read_bytes() != old_g


# ---------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_divergence_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, where):
    """From step 4 on the generator's loss (or only its gradient) is NaN. The run saved at step 2
    (every 4 images); it stops at step 4 with one line, and the step-2 files stay byte for byte."""
    real = INADELoss.generator_losses

    def poisoned(self, *args, **kwargs):
        losses = real(self, *args, **kwargs)
        if poisoned.calls >= 3:  # the 4th step
            if where == "loss":
                losses["GAN"] = losses["GAN"] * float("nan")
            else:  # a finite loss whose gradient is NaN
                losses["GAN"] = losses["GAN"].clone()
                losses["GAN"].register_hook(lambda grad: grad * float("nan"))
        poisoned.calls += 1
        return losses

    poisoned.calls = 0
    monkeypatch.setattr(INADELoss, "generator_losses", poisoned)
    saved = {}
    real_save = ckpt.save_public

    def spy(folder, label, *nets):  # the files as they are right after each save
        out = real_save(folder, label, *nets)
        saved.update({p.name: p.read_bytes() for p in Path(folder).iterdir() if p.suffix in (".pt", ".pth")})
        return out

    monkeypatch.setattr(ckpt, "save_public", spy)
    argv = TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--max_steps", "6", "--save_latest_freq", "4",
                   "--display_freq", "1000", "--save_epoch_freq", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: training diverged at step 4: ")
    assert ("the loss GAN is NaN or inf (losses: GAN nan" if where == "loss" else
            "the gradient of G/E is NaN or inf (losses: GAN ") in lines[0]
    assert "step 2) is kept" in lines[0] and "--continue_train" in lines[0]
    folder = tmp_path / "run"
    assert load_checkpoint(folder / "latest.pt")["step"] == 2
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".pt", ".pth")} == saved
    assert not (folder / "1_net_G.pth").exists(), "the epoch-1 file (step 4) was not written"


def test_no_save_writes_a_nan_tensor(tmp_path):
    opt, cfg, _ = tiny_options(tmp_path, "--max_steps", "1")
    tr = quiet_trainer(opt, cfg)
    tr.folder.mkdir(parents=True)
    with torch.no_grad():
        next(tr.E.parameters()).view(-1)[0] = float("inf")  # E is written last by save_public
    with pytest.raises(UserError, match="not saving .*latest.pt: tensor E.*holds NaN or inf"):
        tr.save()
    with pytest.raises(UserError, match=r"epoch_net_\*.pth: not written: tensor E\..* holds NaN or inf"):
        ckpt.save_public(tr.folder, "epoch", tr.G, tr.D, tr.E)
    with pytest.raises(UserError, match="best.pt: not written: tensor w holds NaN"):
        atomic_save({"w": torch.tensor([1.0, float("nan")])}, tr.folder / "best.pt")
    assert list(tr.folder.iterdir()) == [], "no file, not even G's or a temporary one"


# ---------------------------------------------------------------------------
# orphan temporary files, unwritable folder, the import circle
# ---------------------------------------------------------------------------


def test_orphan_temporaries_of_a_killed_save_are_removed(tmp_path):
    folder = tmp_path / "run"
    (folder / "samples").mkdir(parents=True)
    (folder / "web").mkdir()
    orphans = [folder / ".latest.pt.k2_9xq0a.tmp", folder / ".latest_net_G.pth.abcdefgh.tmp",
               folder / ".3_net_D.pth.0123_789.tmp", folder / "samples" / ".step_0000004.png.zzzzzzzz.tmp",
               folder / "web" / ".index.html.a1b2c3d4.tmp"]
    kept = [folder / ".latest.pt.short.tmp", folder / "latest.pt.abcdefgh.tmp", folder / ".notes.ABCDEFGH.tmp",
            folder / "notes.tmp", folder / ".latest.pt.abcdefgh.tmp.bak", folder / "latest.pt"]
    for p in orphans + kept:
        p.write_bytes(b"x")
    (folder / ".dir.abcdefgh.tmp").mkdir()  # a folder is never ours
    assert sorted(ckpt.remove_orphan_temporaries(folder)) == sorted(orphans)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in orphans)


def _disk_full(*args, **kwargs):
    """What torch.save into a file object raises on a full disk (seen on a tmpfs; tests/test_disk_full.py
    checks the real one where it can mount one): its zip writer's RuntimeError, the OSError as context."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 542400 vs 542288") from None


RUNTIME_ERRORS = {  # id: (extra options, setup(tmp_path, monkeypatch), what the line must name)
    "checkpoints_dir-under-a-file": (["--checkpoints_dir", "{tmp}/a_file/ck"],
                                     lambda tmp, mp: (tmp / "a_file").write_text("x"),
                                     ["--checkpoints_dir {tmp}/a_file/ck: cannot write"]),
    "disk-full-at-the-first-save": ([], lambda tmp, mp: mp.setattr(torch, "save", _disk_full),
                                    ["{tmp}/run: cannot write latest.pt and latest_net_*.pth (No space left on device)", "are intact"]),
    "batchSize-larger-than-the-data": (["--batchSize", "16"], None,
                                       ["--batchSize 16: the data set has only 8 samples"]),
    "continue_train-latest.pt-is-a-folder": (["--continue_train"],
                                             lambda tmp, mp: (tmp / "run" / "latest.pt").mkdir(parents=True),
                                             ["{tmp}/run/latest.pt: a folder, not a checkpoint file"]),
}


@pytest.mark.parametrize("case", list(RUNTIME_ERRORS))
def test_train_runtime_user_errors_are_one_line(tmp_path, capsys, monkeypatch, case):
    extra, setup, needles = RUNTIME_ERRORS[case]
    if setup is not None:
        setup(tmp_path, monkeypatch)
    argv = TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--max_steps", "1", "--display_freq", "1000",
                   *(a.format(tmp=tmp_path) for a in extra)]
    code = main(argv)
    err = capsys.readouterr().err
    assert_user_error(subprocess.CompletedProcess(argv, code, "", err), *(n.format(tmp=tmp_path) for n in needles))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return names | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_no_import_circle_between_official_and_training():
    """inade.official and inade.training.checkpoint share inade.utils.checkpoint_io, which imports neither."""
    official = _imports(ROOT / "inade" / "official.py")
    shared = _imports(ROOT / "inade" / "utils" / "checkpoint_io.py")
    assert not any(m.startswith("inade.training") for m in official), official
    assert not any(m.startswith(("inade.training", "inade.official")) for m in shared), shared
    assert "inade.utils.checkpoint_io" in official and "inade.official" in _imports(ROOT / "inade/training/checkpoint.py")


@pytest.mark.parametrize("kind", ["missing", "folder", "fifo", "device"])
def test_a_path_that_is_not_a_file_is_named_for_what_it_is(tmp_path, kind):
    """A pipe or a device is never opened (reading /dev/zero or a FIFO would never end)."""
    path = {"missing": tmp_path / "nothere.pt", "folder": tmp_path, "fifo": tmp_path / "pipe.pt",
            "device": Path("/dev/zero")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    expected = {"missing": "no such file", "folder": "a folder", "fifo": "not a regular file",
                "device": "not a regular file"}[kind]
    with pytest.raises(UserError, match=f"{re.escape(str(path))}: {expected}"):
        load_checkpoint(path)


def test_an_encoder_file_that_does_not_fit_is_named_as_itself(tmp_path, capsys):
    """inade-synth --encoder FILE that does not fit: the line names FILE and --encoder, not the generator's
    checkpoint (it used to say '…/latest.pt: does not fit the model')."""
    from inade.cli import main as synth_main  # noqa: PLC0415

    cfg = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32)
    torch.manual_seed(0)
    G = inade.Generator(cfg)
    torch.save({"G": G.state_dict(), "config": cfg.to_dict()}, tmp_path / "latest.pt")
    torch.save(G.state_dict(), tmp_path / "wrong_net_E.pth")  # a generator's weights given as the encoder
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "label.png")
    argv = ["random", "--checkpoint", str(tmp_path / "latest.pt"), "--encoder", str(tmp_path / "wrong_net_E.pth"),
            "--label", str(tmp_path / "label.png"), "--out", str(tmp_path / "out.png")]
    code = synth_main(argv)
    err = capsys.readouterr().err
    line = assert_user_error(subprocess.CompletedProcess(argv, code, "", err),
                             f"--encoder {tmp_path / 'wrong_net_E.pth'}: does not fit")
    assert "latest.pt: does not fit" not in line and not (tmp_path / "out.png").exists()
