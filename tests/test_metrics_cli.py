"""python -m inade.metrics: fid / stats / lpips / all, and the one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import inade
from inade.metrics import testing as mt
from inade.metrics.__main__ import main
import inade.test as synth_cli

CFG = inade.config("synthetic", ngf=4, noise_nc=4, z_dim=8, crop_size=32)


def _images(folder, n, size=(20, 16), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    (d / "v0.1").mkdir()
    return {
        "inception": mt.save(mt.inception_state(), d / "pt_inception-2015-12-05-6726825d.pth"),
        "alex": mt.save(mt.backbone_state("alex"), d / "alexnet-owt-7be5be79.pth"),
        "lin": mt.save(mt.lpips_lin_state("alex"), d / "v0.1" / "alex.pth").parent,
    }


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for k in ("INADE_INCEPTION_WEIGHTS", "INADE_ALEXNET_WEIGHTS", "INADE_VGG16_WEIGHTS", "INADE_LPIPS_WEIGHTS"):
        monkeypatch.delenv(k, raising=False)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ")
    return err[-1]


def test_fid_errors_are_one_line(tmp_path, weights, capsys):
    real, fake = _images(tmp_path / "real", 2), _images(tmp_path / "fake", 2, size=(24, 16))
    assert main(["fid", str(real), str(fake)]) == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in _error(capsys)
    assert main(["fid", str(real), str(fake), "--inception_weights", str(weights["alex"])]) == 2
    assert "alexnet-owt-7be5be79.pth does not fit the FID Inception-v3" in _error(capsys)
    w = ["--inception_weights", str(weights["inception"])]
    assert main(["fid", str(real), str(fake), *w]) == 2
    assert "size mismatch" in _error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["fid", str(real), str(tmp_path / "empty"), *w]) == 2
    assert "empty folder" in _error(capsys)
    (real / "bad.png").write_bytes(b"nope")
    assert main(["stats", str(real), str(tmp_path / "s.npz"), *w]) == 2
    assert "bad.png" in _error(capsys)
    assert main(["fid", str(tmp_path / "none.npz"), str(fake), *w]) == 2
    assert "none.npz" in _error(capsys)


def test_stats_command_writes_the_public_layout(tmp_path, weights):
    imgs = _images(tmp_path / "imgs", 2)
    w = ["--inception_weights", str(weights["inception"]), "--batch_size", "1"]
    assert main(["stats", str(imgs), str(tmp_path / "train_mu_si" / "synthetic"), *w]) == 0
    mu, sigma = (np.load(tmp_path / "train_mu_si" / "synthetic" / f) for f in ("m.npy", "s.npy"))
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048) and mu.dtype == np.float64
    np.testing.assert_allclose(sigma, sigma.T)


def test_lpips_command(tmp_path, weights, capsys):
    a, b = _images(tmp_path / "a", 2, size=(64, 64)), _images(tmp_path / "b", 2, size=(64, 64), seed=1)
    w = ["--alexnet_weights", str(weights["alex"]), "--lpips_weights", str(weights["lin"])]
    assert main(["lpips", str(a), str(a), *w]) == 0
    assert "LPIPS (alex, v0.1): 0.0000 over 2 pairs" in capsys.readouterr().out
    assert main(["lpips", str(a), str(b), *w]) == 0
    (b / "0.png").unlink()
    assert main(["lpips", str(a), str(b), *w]) == 2
    assert "no image named 0.png" in _error(capsys)


def test_all_on_inade_test_output(tmp_path, weights, capsys):
    torch.manual_seed(0)
    exp = tmp_path / "ckpt" / "exp"
    exp.mkdir(parents=True)
    torch.save({"G": inade.Generator(CFG).state_dict(), "E": None, "config": CFG.to_dict(), "options": {"seed": 0}},
               exp / "latest.pt")
    assert synth_cli.main(["--name", "exp", "--checkpoints_dir", str(tmp_path / "ckpt"), "--results_dir", str(tmp_path / "r"),
                      "--how_many", "2", "--synthetic_size", "3", "--samples", "2", "--no_progress"]) == 0
    res = tmp_path / "r" / "exp" / "test_latest"
    seg = tmp_path / "seg.pt"
    with pytest.warns(DeprecationWarning):
        torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, CFG.label_nc, 1)), str(seg))
    capsys.readouterr()
    assert main(["all", str(res), "--layouts", "1", "--samples", "2", "--max_regions", "2", "--segmenter", str(seg),
                 "--alexnet_weights", str(weights["alex"]), "--lpips_weights", str(weights["lin"])]) == 0
    out = json.loads((res / "metrics.json").read_text())
    m = out["metrics"]
    for k in ("L1 diversity", "LPIPS", "L1 mISD", "L1 mOID", "L1 mCSD", "L1 mOCD", "mISD", "mOID", "mIoU", "accuracy"):
        assert k in m and np.isfinite(m[k]), k
    assert m["L1 mISD"] >= 0 and 0 <= m["accuracy"] <= 1
    assert "FID" in out["skipped"] and "pt_inception" in out["skipped"]["FID"]
    md = (res / "metrics.md").read_text()
    assert "| L1 mISD ↑ |" in md and "| FID | — (needs pt_inception" in md
    assert main(["all", str(tmp_path / "nothere")]) == 2
    assert "results folder not found" in _error(capsys)


def _lpips_tiny(tmp_path, weights):
    a, b = _images(tmp_path / "a", 1, size=(24, 24)), _images(tmp_path / "b", 1, size=(24, 24), seed=1)
    return ["lpips", str(a), str(b), "--alexnet_weights", str(weights["alex"]), "--lpips_weights", str(weights["lin"])]


def _stats_unwritable(tmp_path, weights):
    (tmp_path / "file").write_text("x")
    return ["stats", str(_images(tmp_path / "i", 1)), str(tmp_path / "file" / "s.npz"), "--inception_weights", "w.pth"]


def _json_unwritable(tmp_path, weights):
    (tmp_path / "file").write_text("x")
    i = str(_images(tmp_path / "i", 1))
    return ["fid", i, i, "--json", str(tmp_path / "file" / "fid.json"), "--inception_weights", "w.pth"]


def _stats_corrupt(tmp_path, weights):
    (tmp_path / "ref.npz").write_bytes(b"PK\x03\x04 not a zip")
    return ["fid", str(tmp_path / "ref.npz"), str(_images(tmp_path / "i", 1)), "--inception_weights", "w.pth"]


def _stats_nan(tmp_path, weights):
    np.savez(tmp_path / "ref.npz", mu=np.full(4, np.nan), sigma=np.eye(4))
    return ["fid", str(tmp_path / "ref.npz"), str(_images(tmp_path / "i", 1)), "--inception_weights", "w.pth"]


def _stats_folder_corrupt(tmp_path, weights):
    (tmp_path / "mu_si").mkdir()
    (tmp_path / "mu_si" / "m.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "mu_si" / "s.npy").write_bytes(b"")
    return ["fid", str(tmp_path / "mu_si"), str(_images(tmp_path / "i", 1)), "--inception_weights", "w.pth"]


RUNTIME = {
    "lpips-on-images-too-small": (_lpips_tiny, "at least 31x31"),
    "stats-output-unwritable": (_stats_unwritable, "s.npz"),
    "fid-json-unwritable": (_json_unwritable, "--json"),
    "fid-statistics-corrupt": (_stats_corrupt, "ref.npz"),
    "fid-statistics-nan": (_stats_nan, "ref.npz"),
    "fid-statistics-folder-corrupt": (_stats_folder_corrupt, "mu_si"),
}


@pytest.mark.parametrize("make,needle", list(RUNTIME.values()), ids=list(RUNTIME))
def test_runtime_user_errors_are_one_line(make, needle, tmp_path, weights, capsys):
    """Each fails before a network loads where it can (the weight file named here does not exist)."""
    assert main(make(tmp_path, weights)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err and needle in err, err
