"""A results folder of python -m inade.test is one run: reruns replace it whole, a failure or
kill -9 leaves the previous complete results, test_run.json lists exactly the files present,
and inade.metrics refuses a folder that disagrees with it (one line)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

import inade
from _cli import ROOT, save_generator_checkpoint
from inade.metrics import results
from inade.metrics.__main__ import main as metrics_main
from inade.test import main as inade_test_main
from inade.utils.errors import UserError

CFG = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    save_generator_checkpoint(d / "exp" / "latest.pt", CFG)
    return d


def _args(ckpt_dir, res, *extra):
    return ["--name", "exp", "--checkpoints_dir", str(ckpt_dir), "--results_dir", str(res), "--synthetic_size", "40",
            "--no_progress", *extra]


def _temps(out):
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def _files(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "test_run.json")


def test_rerun_leaves_only_the_new_runs_files(ckpt_dir, tmp_path):
    out = tmp_path / "res" / "exp" / "test_latest"
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "4", "--samples", "3")) == 0
    first = results.verify(out)
    assert len(first["files"]) == 4 * 5 + 2
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "2", "--seed", "1")) == 0
    meta = results.verify(out)
    assert _files(out) == sorted(meta["files"]) and len(meta["files"]) == 2 * 3 + 2
    assert not (out / "images" / "synthesized_image_1").exists() and meta["seed"] == 1
    assert _temps(out) == []


def test_failure_half_way_keeps_the_previous_results(ckpt_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "res" / "exp" / "test_latest"
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "3")) == 0
    before = results.file_table(out)
    calls = []

    def write_then_fail(path, rgb, _real=inade.data.write_image):
        calls.append(path)
        if len(calls) == 5:
            raise UserError(f"{path}: no space left on device")
        return _real(path, rgb)

    monkeypatch.setattr(inade.data, "write_image", write_then_fail)
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "6", "--samples", "2")) == 2
    assert "no space left" in capsys.readouterr().err
    assert results.file_table(out) == before and results.verify(out)["layouts"] == 3
    assert _temps(out) == []


def test_refuses_to_replace_a_folder_it_did_not_write(ckpt_dir, tmp_path, capsys):
    out = tmp_path / "res" / "exp" / "test_latest"
    out.mkdir(parents=True)
    (out / "my_notes.txt").write_text("mine")
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "1")) == 2
    assert "not written by python -m inade.test" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["my_notes.txt"] and _temps(out) == []


def test_unwritable_results_dir_is_one_line(ckpt_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert inade_test_main(_args(ckpt_dir, tmp_path / "file" / "res", "--how_many", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--results_dir" in err and "\n" not in err


@pytest.fixture(scope="module")
def done(ckpt_dir, tmp_path_factory):
    res = tmp_path_factory.mktemp("done")
    assert inade_test_main(_args(ckpt_dir, res, "--how_many", "2")) == 0
    return res / "exp" / "test_latest"


def _extra_image(out):
    shutil.copy(out / "images" / "synthesized_image" / "00000.png", out / "images" / "synthesized_image" / "00007.png")


def _edited_image(out):
    (out / "images" / "real_image" / "00001.png").write_bytes(b"\x89PNG not the same")


def _missing_image(out):
    (out / "images" / "input_label" / "00000.png").unlink()


def _broken_json(out):
    (out / "test_run.json").write_text('{"files": {')


def _not_a_manifest(out):
    (out / "test_run.json").write_text("[1, 2]")


TAMPER = {"extra-image-of-another-run": (_extra_image, "00007.png"), "edited-image": (_edited_image, "00001.png"),
          "missing-image": (_missing_image, "00000.png"), "broken-test_run.json": (_broken_json, "test_run.json"),
          "test_run.json-not-an-object": (_not_a_manifest, "test_run.json")}


@pytest.mark.parametrize("tamper,needle", list(TAMPER.values()), ids=list(TAMPER))
def test_metrics_refuse_a_folder_that_disagrees_with_test_run_json(done, tmp_path, tamper, needle, capsys):
    out = tmp_path / "test_latest"
    shutil.copytree(done, out)
    assert metrics_main(["all", str(out), "--no_generator"]) == 0  # the complete folder is accepted
    capsys.readouterr()
    tamper(out)
    assert metrics_main(["all", str(out), "--no_generator"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err
    if tamper is _extra_image:  # fid on the image folder checks the results folder around it too
        assert metrics_main(["fid", str(out / "images" / "real_image"), str(out / "images" / "synthesized_image")]) == 2
        assert "00007.png" in capsys.readouterr().err


def test_a_run_killed_while_its_results_moved_in_is_restored(done, tmp_path):
    out = tmp_path / "test_latest"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shutil.copytree(done, tmp_path / f".test_latest.{dead.pid}.old.tmp")  # the previous results, set aside
    (tmp_path / f".test_latest.{dead.pid}.abc123.tmp").mkdir()  # the new, half-moved ones
    results.remove_stale(out)
    assert results.verify(out)["layouts"] == 2 and _temps(out) == []


def test_kill_9_at_random_moments_leaves_no_mix(ckpt_dir, tmp_path):
    """kill -9 while the images are being written (twice, at random moments), then a full rerun."""
    res = tmp_path / "res"
    out = res / "exp" / "test_latest"
    assert inade_test_main(_args(ckpt_dir, res, "--how_many", "2")) == 0
    previous = results.file_table(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rng = random.Random()
    delays = []
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "inade.test", *_args(ckpt_dir, res, "--samples", "2")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not any((p / "images").exists() for p in out.parent.glob(".test_latest.*.tmp")):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before writing"
            time.sleep(0.02)
        delays.append(rng.uniform(0.0, 0.4))
        time.sleep(delays[-1])
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if finished:  # a fast machine: the run completed before the kill; its results replaced the previous
            previous = results.file_table(out)
            assert sorted(previous) == sorted(results.verify(out)["files"])
        assert results.file_table(out) == previous, delays  # the previous complete results, untouched
    assert inade_test_main(_args(ckpt_dir, res, "--how_many", "3")) == 0
    meta = results.verify(out)
    assert _files(out) == sorted(meta["files"]) and meta["layouts"] == 3
    assert _temps(out) == [], delays  # the killed runs' folders are gone


# --- foreign files, the marker, --overwrite, a second writer (issue 25) -------------------------------


def _first_run(ckpt_dir, res):
    assert inade_test_main(_args(ckpt_dir, res, "--how_many", "2")) == 0
    return res / "exp" / "test_latest"


def _notes_in_images(out):
    (out / "images" / "my_notes.txt").write_text("mine")
    return "my_notes.txt"


def _figure_at_the_top(out):
    (out / "figure.png").write_bytes(b"\x89PNG a figure of mine")
    return "figure.png"


def _edited_listed_image(out):
    (out / "images" / "real_image" / "00001.png").write_bytes(b"\x89PNG edited by the user")
    return "00001.png"


def _a_folder_of_the_user(out):
    (out / "images" / "mine").mkdir()
    (out / "images" / "mine" / "a.txt").write_text("mine")
    return "a.txt"


FOREIGN = {"notes-in-images": _notes_in_images, "figure-at-the-top": _figure_at_the_top,
           "an-edited-listed-image": _edited_listed_image, "a-folder-of-the-user": _a_folder_of_the_user}


@pytest.mark.parametrize("add", list(FOREIGN.values()), ids=list(FOREIGN))
def test_a_file_it_did_not_write_is_never_deleted(ckpt_dir, tmp_path, capsys, monkeypatch, add):
    """Only files the folder's own test_run.json lists (same size and SHA-256) are replaced; anything else
    stops the run before the model loads, naming the file; --overwrite replaces it and says what it removed."""
    out = _first_run(ckpt_dir, tmp_path / "res")
    needle = add(out)
    before = results.file_table(out)
    capsys.readouterr()
    loaded = []
    monkeypatch.setattr("inade.test.load_generator", lambda *a, **k: loaded.append(1) or (_ for _ in ()).throw(AssertionError))
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and needle in err and "--overwrite" in err, err
    assert loaded == [] and results.file_table(out) == before and _temps(out) == []
    monkeypatch.undo()
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "1", "--overwrite")) == 0
    err = capsys.readouterr().err
    assert "removed" in err and needle in err, err
    assert _files(out) == sorted(results.verify(out)["files"])


def test_files_of_inade_metrics_all_are_not_foreign(ckpt_dir, tmp_path, capsys):
    out = _first_run(ckpt_dir, tmp_path / "res")
    assert metrics_main(["all", str(out), "--no_generator"]) == 0
    assert (out / "metrics.json").is_file() and (out / "metrics.md").is_file()
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "1")) == 0
    assert not (out / "metrics.json").exists()  # they described the previous run


MARKERS = {"empty-object": "{}", "empty-files": '{"files": {}}', "files-a-list": '{"files": []}',
           "rows-not-objects": '{"files": {"a.txt": 4}}', "wrong-hash": None, "path-outside": None}


@pytest.mark.parametrize("marker", list(MARKERS))
def test_a_users_folder_holding_a_file_named_test_run_json_is_not_deleted(ckpt_dir, tmp_path, capsys, marker):
    out = tmp_path / "res" / "exp" / "test_latest"
    out.mkdir(parents=True)
    (out / "a.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "b.txt").write_text("mine too")
    text = MARKERS[marker]
    if marker == "wrong-hash":
        text = json.dumps({"files": {"a.txt": {"bytes": 4, "sha256": "0" * 64}, "sub/b.txt": {"bytes": 8, "sha256": "0" * 64}}})
    elif marker == "path-outside":
        text = json.dumps({"files": {"../../../x": {"bytes": 1, "sha256": "0" * 64}}})
    (out / "test_run.json").write_text(text)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert inade_test_main(_args(ckpt_dir, tmp_path / "res", "--how_many", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and str(out) in err, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before and _temps(out) == []


def test_a_second_test_run_into_the_same_folder_stops_naming_the_first(ckpt_dir, tmp_path, capsys):
    """Two inade.test runs into one results folder: the second stops with one line naming the first's pid;
    kill -9 of the first frees the folder (the kernel drops its lock)."""
    res = tmp_path / "res"
    out = _first_run(ckpt_dir, res)
    previous = results.file_table(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "inade.test", *_args(ckpt_dir, res, "--samples", "3")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any((p / "images").exists() for p in out.parent.glob(".test_latest.*.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    capsys.readouterr()
    assert inade_test_main(_args(ckpt_dir, res, "--how_many", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pid {proc.pid}" in err and "inade.test" in err, err
    proc.kill()
    proc.wait()
    assert results.file_table(out) == previous
    assert inade_test_main(_args(ckpt_dir, res, "--how_many", "1")) == 0
    assert results.verify(out)["layouts"] == 1 and _temps(out) == []


def test_which_epoch_cannot_lead_outside_the_results_dir(done, ckpt_dir, tmp_path, capsys):
    """<results_dir>/<name>/<phase>_<which_epoch> is replaced whole: a '/' in --which_epoch would reach
    (and replace) a folder elsewhere, here a user's backup of complete results."""
    backup = tmp_path / "backup"
    shutil.copytree(done, backup)
    before = results.file_table(backup)
    argv = _args(ckpt_dir, tmp_path / "res", "--how_many", "1", "--checkpoint", str(ckpt_dir / "exp" / "latest.pt"),
                 "--which_epoch", "latest/../../../backup")
    assert inade_test_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "--which_epoch" in err, err
    assert results.file_table(backup) == before and sorted(results.verify(backup)["files"]) == sorted(before)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_the_lock_file_is_never_followed_or_opened_as_a_pipe(ckpt_dir, tmp_path, capsys, kind):
    """Where the lock file of a results folder goes (.test_latest.lock beside it) a symbolic link to a user's
    file, a FIFO or a folder: one line naming it, the link's target unchanged, nothing hangs."""
    res = tmp_path / "res"
    (res / "exp").mkdir(parents=True)
    lock = res / "exp" / ".test_latest.lock"
    mine = tmp_path / "my_file.txt"
    mine.write_text("mine")
    {"symlink": lambda: lock.symlink_to(mine), "fifo": lambda: os.mkfifo(lock), "folder": lock.mkdir}[kind]()
    assert inade_test_main(_args(ckpt_dir, res, "--how_many", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(lock) in err, err
    assert mine.read_text() == "mine" and not (res / "exp" / "test_latest").exists()
