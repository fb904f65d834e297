"""python -m inade.test: our checkpoint and the public code's files, the output layout, --samples,
batch-size independence, and one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import inade
from inade.test import main

CFG = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    G, E = inade.Generator(CFG), inade.NoiseEncoder(CFG)
    exp = d / "exp"
    exp.mkdir()
    torch.save({"G": G.state_dict(), "E": E.state_dict(), "config": CFG.to_dict(), "options": {"seed": 0}},
               exp / "latest.pt")
    torch.save(G.state_dict(), exp / "7_net_G.pth")
    torch.save(E.state_dict(), exp / "7_net_E.pth")
    return d


def _run(ckpt_dir, tmp_path, *args):
    return main(["--name", "exp", "--checkpoints_dir", str(ckpt_dir), "--results_dir", str(tmp_path / "res"),
                 "--how_many", "3", "--synthetic_size", "5", "--no_progress", *args])


def test_writes_the_public_layout_and_styles(ckpt_dir, tmp_path, capsys):
    assert _run(ckpt_dir, tmp_path, "--samples", "2", "--batchSize", "2") == 0
    out = tmp_path / "res" / "exp" / "test_latest"
    img = out / "images"  # the public code's layout: <results_dir>/<name>/test_<epoch>/images/<visual>/
    names = ["00000.png", "00001.png", "00002.png"]
    for sub in ("synthesized_image", "synthesized_image_1", "real_image", "input_label"):
        assert sorted(p.name for p in (img / sub).iterdir()) == names, sub
    assert (out / "index.html").read_text().count("<tr>") == 4 and (out / "grid.png").is_file()
    a = np.asarray(Image.open(img / "synthesized_image" / "00000.png"))
    b = np.asarray(Image.open(img / "synthesized_image_1" / "00000.png"))
    assert a.shape == (32, 32, 3) and not np.array_equal(a, b)  # two styles differ
    label = np.asarray(Image.open(img / "input_label" / "00000.png"))
    assert label.ndim == 2 and label.max() < CFG.label_nc
    meta = json.loads((out / "test_run.json").read_text())
    assert meta["images"] == 6 and meta["layouts"] == 3 and meta["images_per_second"] > 0
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "test_run.json")
    assert sorted(meta["files"]) == on_disk and len(on_disk) == 4 * 3 + 2  # every file, with its size and hash
    assert "images/s" in capsys.readouterr().err
    # batch size does not change any image (beyond float rounding: one grey level)
    assert _run(ckpt_dir, tmp_path / "b1", "--samples", "2", "--batchSize", "1") == 0
    out1 = tmp_path / "b1" / "res" / "exp" / "test_latest"
    for n in names:
        x = np.asarray(Image.open(img / "synthesized_image_1" / n)).astype(int)
        y = np.asarray(Image.open(out1 / "images" / "synthesized_image_1" / n)).astype(int)
        assert np.abs(x - y).max() <= 1


def test_public_files_and_use_vae(ckpt_dir, tmp_path):
    """<which_epoch>_net_G.pth + _net_E.pth with the model options on the command line."""
    model = ["--config", "synthetic", "--ngf", "4", "--noise_nc", "4", "--z_dim", "8", "--crop_size", "32"]
    assert _run(ckpt_dir, tmp_path, "--which_epoch", "7", "--use_vae", *model) == 0
    out = tmp_path / "res" / "exp" / "test_7"
    meta = json.loads((out / "test_run.json").read_text())
    assert meta["checkpoint"].endswith("7_net_G.pth") and meta["encoder"].endswith("7_net_E.pth")
    assert len(list((out / "images" / "synthesized_image").iterdir())) == 3
    # the same weights through our checkpoint give the same images without the encoder
    assert _run(ckpt_dir, tmp_path / "p", "--which_epoch", "7", *model) == 0
    assert _run(ckpt_dir, tmp_path / "o") == 0
    a = np.asarray(Image.open(tmp_path / "p" / "res" / "exp" / "test_7" / "images" / "synthesized_image" / "00001.png"))
    b = np.asarray(Image.open(tmp_path / "o" / "res" / "exp" / "test_latest" / "images" / "synthesized_image" / "00001.png"))
    np.testing.assert_array_equal(a, b)
    # without the model options the preset (ngf 16) does not fit: one-line error
    assert _run(ckpt_dir, tmp_path / "q", "--which_epoch", "7", "--config", "synthetic") == 2


def test_errors_are_one_line(ckpt_dir, tmp_path, capsys):
    assert _run(ckpt_dir, tmp_path, "--which_epoch", "99") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "99_net_G.pth" in err and "\n" not in err
    assert main(["--name", "nothere", "--checkpoints_dir", str(tmp_path)]) == 2
    assert "no such experiment folder" in capsys.readouterr().err
    # our checkpoint holds its configuration: a model option that disagrees is refused, not ignored
    assert _run(ckpt_dir, tmp_path, "--ngf", "8") == 2
    assert "--ngf 8 disagrees with the checkpoint" in capsys.readouterr().err
    assert _run(ckpt_dir, tmp_path, "--add_sketch") == 2
    assert "--add_sketch disagrees" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_public_readme_test_command_on_a_public_layout_checkpoint(tmp_path):
    """The public README's command, verbatim but --gpu_ids -1, on <checkpoints_dir>/<name>/best_net_G.pth and
    best_net_E.pth; the images land where the public code puts them (util/visualizer.py save_images,
    util/html.py: <results_dir>/<name>/test_<which_epoch>/images/<visual>/<stem>.png beside index.html)."""
    from _cli import run_cli  # noqa: PLC0415

    cfg = inade.config("synthetic")
    exp = tmp_path / "checkpoints" / "inade_synthetic"
    exp.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(inade.Generator(cfg).state_dict(), exp / "best_net_G.pth")
    torch.save(inade.NoiseEncoder(cfg).state_dict(), exp / "best_net_E.pth")
    command = ("-m inade.test --name inade_synthetic --norm_mode inade --batchSize 1 --gpu_ids -1 --which_epoch best "
               "--dataset_mode synthetic --dataroot DATA").split()
    proc = run_cli(command, cwd=tmp_path, timeout=240)  # (the encoder's path, --use_vae: test_public_files_and_use_vae)
    assert proc.returncode == 0, proc.stderr.decode()
    web = tmp_path / "results" / "inade_synthetic" / "test_best"
    for visual in ("synthesized_image", "input_label", "real_image"):
        assert sorted(p.name for p in (web / "images" / visual).iterdir()) == [f"{i:05d}.png" for i in range(64)]
    assert Image.open(web / "images" / "synthesized_image" / "00063.png").size == cfg.output_size[::-1]
    assert (web / "index.html").is_file()
    meta = json.loads((web / "test_run.json").read_text())
    assert meta["checkpoint"].endswith("best_net_G.pth") and meta["layouts"] == 64
