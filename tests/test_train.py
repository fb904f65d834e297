"""Training: options, schedule, latents, end-to-end steps, exact resume (also after
Ctrl-C), two processes equal one, atomic checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import inade
from inade.training import checkpoint as ckpt
from inade.training.latents import D_PASS, G_PASS, draw_latents
from inade.training.options import parse_options
from inade.training.schedule import learning_rates, lr_factor, rates_at_step, split_lr
from inade.training.trainer import Trainer, main
from inade.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# A tiny model on 32x32 synthetic scenes: a few steps take seconds on a CPU.
TINY = ["--crop_size", "32", "--ngf", "4", "--noise_nc", "4", "--z_dim", "8", "--ndf", "4", "--batchSize", "2",
        "--synthetic_size", "8", "--niter", "1", "--niter_decay", "1", "--nThreads", "0", "--no_progress",
        "--gpu_ids", "-1"]


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model's ops are small: one thread is faster and steadier on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_options(tmp_path, *extra):
    return parse_options(TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", *extra])


def quiet_trainer(opt, cfg):
    return Trainer(opt, cfg, log=lambda *a: None)


def states_equal(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


# ---------------------------------------------------------------------------
# options and schedule
# ---------------------------------------------------------------------------


def test_public_training_command_parses():
    """The public README's command (and SPADE-style flags) run unchanged."""
    opt, cfg, notes = parse_options([
        "--name", "inade_cityscapes", "--dataset_mode", "cityscapes", "--norm_mode", "inade", "--use_vae",
        "--dataroot", "/data/cityscapes", "--batchSize", "8", "--niter", "100", "--niter_decay", "100",
        "--gpu_ids", "0", "--lambda_kld", "0.05", "--no_html", "--tf_log", "--model", "pix2pix",
        "--display_freq", "200", "--save_latest_freq", "1000", "--continue_train",
    ])
    assert opt.name == "inade_cityscapes" and opt.batchSize == 8 and opt.niter == opt.niter_decay == 100
    assert cfg.label_nc == 35 and cfg.num_upsampling_layers == "more" and cfg.use_vae
    assert opt.continue_train and opt.display_freq == 200
    assert opt.tf_log and opt.no_html  # honoured: TensorBoard summaries, no results page
    assert any("--model" in n for n in notes) and not any("--tf_log" in n or "--no_html" in n for n in notes)
    lr_G, lr_D, betas = learning_rates(cfg)
    assert (lr_G, lr_D, betas) == (1e-4, 4e-4, (0.0, 0.9))


def test_no_ttur_gives_public_betas_and_one_lr():
    _, cfg, _ = parse_options(["--no_TTUR", "--lr", "0.001"])
    assert learning_rates(cfg) == (0.001, 0.001, (0.5, 0.999))
    _, cfg, _ = parse_options(["--no_TTUR", "--beta1", "0.1"])
    assert learning_rates(cfg)[2] == (0.1, 0.999)


def test_defaults_and_errors():
    opt, cfg, _ = parse_options([])
    assert opt.dataset_mode == "synthetic" and opt.name == "inade_synthetic" and cfg.label_nc == 6
    with pytest.raises(UserError, match="--dataroot"):
        parse_options(["--dataset_mode", "ade20k"])
    with pytest.raises(UserError, match="norm_mode"):
        parse_options(["--norm_mode", "spade"])
    with pytest.raises(UserError, match="label_nc"):
        parse_options(["--dataset_mode", "folder", "--dataroot", "/x"])
    opt, cfg, _ = parse_options(["--no_vae"])
    assert not cfg.use_vae


def public_epoch_rates(lr, niter, niter_decay, no_TTUR=False):
    """The public code's rates per epoch: constant, then ``lr / niter_decay`` less after each
    epoch ``e > niter`` ends (its ``update_learning_rate(epoch)`` after every epoch)."""
    rates, old = [], lr
    split = (lambda r: (r, r)) if no_TTUR else (lambda r: (r / 2, r * 2))
    for epoch in range(1, niter + niter_decay + 1):
        rates.append(split(old))
        if epoch > niter:
            old = old - lr / niter_decay
    return rates


@pytest.mark.parametrize("niter,niter_decay,no_TTUR", [(2, 3, False), (0, 4, False), (1, 7, True), (3, 0, False)])
def test_lr_is_the_public_epoch_end_schedule(niter, niter_decay, no_TTUR):
    """Every iteration's rates equal the public code's (bit for bit), from the step alone."""
    want = public_epoch_rates(2e-4, niter, niter_decay, no_TTUR)
    got = [rates_at_step(s, 5, lr=2e-4, no_TTUR=no_TTUR, niter=niter, niter_decay=niter_decay)
           for s in range(5 * (niter + niter_decay))]
    assert got == [r for r in want for _ in range(5)]
    if niter_decay:  # the first niter + 1 epochs at lr, the last at lr / niter_decay
        assert got[5 * (niter + 1) - 1] == split_lr(2e-4, no_TTUR) and got[-1][0] == pytest.approx(
            split_lr(2e-4 / niter_decay, no_TTUR)[0])


def test_lr_decay_every_iter_is_an_option():
    f = [lr_factor(s, steps_per_epoch=10, niter=2, niter_decay=2) for s in range(40)]
    assert f[:21] == [1.0] * 21
    assert f[25] == pytest.approx(0.75) and f[30] == pytest.approx(0.5) and f[39] == pytest.approx(0.05)
    assert lr_factor(40, 10, 2, 2) == 0.0 and lr_factor(500, 10, 2, 0) == 1.0
    assert rates_at_step(25, 10, lr=2e-4, no_TTUR=False, niter=2, niter_decay=2, every_iter=True) == (
        pytest.approx(0.75e-4), pytest.approx(3e-4))
    opt, _, _ = parse_options(["--lr_decay_every_iter", "--niter", "0", "--niter_decay", "2"])
    assert opt.lr_decay_every_iter and opt.niter == 0
    assert not parse_options([])[0].lr_decay_every_iter
    with pytest.raises(UserError, match="--niter 0 --niter_decay 0"):
        parse_options(["--niter", "0", "--niter_decay", "0"])


def test_d_steps_per_g_counts_within_the_epoch(tmp_path):
    """The public loop takes a G step when the batch's index within its epoch is a multiple of
    --D_steps_per_G (4 steps per epoch, 3: G at steps 0, 3, then 4, 7 of the next epoch)."""
    opt, cfg, _ = tiny_options(tmp_path, "--D_steps_per_G", "3", "--no_vgg_loss", "--max_steps", "8",
                               "--display_freq", "1000", "--save_latest_freq", "1000")
    tr = quiet_trainer(opt, cfg)
    g_steps = []
    step = tr.train_step
    tr.train_step = lambda b: (out := step(b), "GAN" in out and g_steps.append(tr.step - 1))[0]
    tr.run()
    assert g_steps == [0, 3, 4, 7]


def test_resumed_run_lands_on_the_same_rate(tmp_path):
    """--continue_train from a mid-epoch latest.pt (as a kill -9 leaves it) lands on the rate the
    uninterrupted run has at that step: the rate comes from the step, not from saved state."""
    args = ["--niter", "0", "--niter_decay", "3", "--no_vgg_loss", "--display_freq", "1000",
            "--save_latest_freq", "10"]  # 4 steps per epoch; a save after step 5 (10 images)
    opt, cfg, _ = tiny_options(tmp_path / "a", *args, "--max_steps", "7")
    straight = quiet_trainer(opt, cfg)
    seen = []
    step = straight.train_step
    straight.train_step = lambda b: (step(b), seen.append(straight.opt_G.param_groups[0]["lr"]))[0]
    straight.run()
    assert seen == [cfg.lr / 2] * 4 + [(cfg.lr - cfg.lr / 3) / 2] * 3  # epoch 2 runs one decay lower
    assert torch.load(tmp_path / "a" / "run" / "latest.pt", weights_only=True)["step"] == 7

    opt, cfg, _ = tiny_options(tmp_path / "b", *args, "--max_steps", "5")
    quiet_trainer(opt, cfg).run()  # stops at step 5, mid-epoch 2
    opt, cfg, _ = tiny_options(tmp_path / "b", *args, "--max_steps", "7", "--continue_train")
    resumed = quiet_trainer(opt, cfg)
    resumed.resume()
    assert resumed.step == 5 and resumed.rates() == straight.rates(5) == rates_at_step(
        5, 4, lr=cfg.lr, no_TTUR=False, niter=0, niter_decay=3)
    resumed.train_step(next(iter(resumed.loader)))
    assert [g.param_groups[0]["lr"] for g in (resumed.opt_G, resumed.opt_D)] == list(straight.rates(5))


def test_latents_depend_only_on_sample_and_step():
    n1, z1 = draw_latents([5, 9], 3, 4, 8, seed=0, step=7, which=G_PASS)
    n2, z2 = draw_latents([9], 6, 4, 8, seed=0, step=7, which=G_PASS)  # other batch, more rows
    assert torch.equal(n1[1], n2[0, :3]) and torch.equal(z1[1], z2[0])
    n3, _ = draw_latents([5], 3, 4, 8, seed=0, step=8, which=G_PASS)
    n4, _ = draw_latents([5], 3, 4, 8, seed=0, step=7, which=D_PASS)
    assert not torch.equal(n1[0], n3[0]) and not torch.equal(n1[0], n4[0])


# ---------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------


def test_trains_end_to_end_and_writes_outputs(tmp_path):
    opt, cfg, _ = tiny_options(tmp_path, "--max_steps", "3", "--display_freq", "4")
    tr = quiet_trainer(opt, cfg)
    before = {k: v.clone() for k, v in tr.G.state_dict().items()}
    tr.run()
    assert tr.step == 3
    out = tmp_path / "run"
    for f in ("latest.pt", "latest_net_G.pth", "latest_net_D.pth", "latest_net_E.pth", "opt.txt"):
        assert (out / f).exists(), f
    assert states_equal(before, tr.G.state_dict()), "the generator's weights changed"
    # our checkpoint: loadable with weights_only, finite, at step 3
    state = torch.load(out / "latest.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3 and state["config"]["ngf"] == 4
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    # the public-format files load into fresh modules through load_official
    G2 = inade.load_official(inade.Generator(cfg), out / "latest_net_G.pth")
    assert not states_equal(tr.G.state_dict(), G2.state_dict())
    inade.load_official(inade.NoiseEncoder(cfg), out / "latest_net_E.pth")
    # sample grids: one at 4 images (step 2), one at the end
    from inade.data import read_image

    grids = sorted((out / "samples").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_0000002.png", "step_0000003.png"]
    img = read_image(grids[-1])
    assert img.shape == (4 * 2 * 34 - 2, 8 * 34 - 2, 3)


def test_train_py_cli_runs(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, "--checkpoints_dir", str(tmp_path), "--max_steps", "1", "--no_vae"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "checkpoint (full resume)" in r.stderr and str(tmp_path / "inade_synthetic" / "latest.pt") in r.stderr
    # the closing lines point at the test images, then the metrics of that results folder
    test_line = f"python -m inade.test --checkpoints_dir {tmp_path} --name inade_synthetic"
    metrics_line = "python -m inade.metrics all results/inade_synthetic/test_latest"
    assert test_line in r.stderr and metrics_line in r.stderr and r.stderr.index(test_line) < r.stderr.index(metrics_line)
    assert "inade.eval" not in r.stderr
    assert (tmp_path / "inade_synthetic" / "latest_net_G.pth").exists()
    assert not (tmp_path / "inade_synthetic" / "latest_net_E.pth").exists()


# ---------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------


def _final_state(tr):
    return {**{f"G.{k}": v for k, v in tr.G.state_dict().items()}, **{f"D.{k}": v for k, v in tr.D.state_dict().items()},
            **{f"E.{k}": v for k, v in tr.E.state_dict().items()}}


@pytest.fixture
def two_threads_deterministic():
    """Two threads (where CPU index_put_ accumulation order varies) and --deterministic's global switch,
    undone afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield ["--deterministic"]
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(n)


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, two_threads_deterministic):
    """Ctrl-C after step 2 saves; --continue_train to step 5 gives the weights of 5 uninterrupted steps
    (bit for bit: all randomness is keyed by seed, step and sample; steps cross an epoch boundary)."""
    steps = ["--max_steps", "5", "--display_freq", "1000", "--save_latest_freq", "1000", *two_threads_deterministic]
    opt, cfg, _ = tiny_options(tmp_path / "a", *steps)
    straight = quiet_trainer(opt, cfg)
    straight.run()

    opt, cfg, _ = tiny_options(tmp_path / "b", *steps)
    first = quiet_trainer(opt, cfg)
    step = first.train_step

    def interrupting_step(batch):
        out = step(batch)
        if first.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does
        return out

    first.train_step = interrupting_step
    first.run()
    assert first.step == 2, "stopped after the step during which Ctrl-C came"
    saved = torch.load(tmp_path / "b" / "run" / "latest.pt", map_location="cpu", weights_only=True)
    assert saved["step"] == 2

    opt, cfg, _ = tiny_options(tmp_path / "b", *steps, "--continue_train")
    resumed = quiet_trainer(opt, cfg)
    resumed.resume()
    assert resumed.step == 2
    resumed.run()
    assert resumed.step == 5
    assert states_equal(_final_state(straight), _final_state(resumed)) == []
    a, b = straight.opt_G.state_dict()["state"], resumed.opt_G.state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)


def test_continue_train_takes_the_runs_own_options(tmp_path):
    """A run with --max_steps 3 stopped at step 1, resumed with only --continue_train and --name
    (as the interrupted run's last line says), goes to step 3 with the run's data set and model;
    an option given again wins; one note names the options taken."""
    opt, cfg, _ = tiny_options(tmp_path, "--max_steps", "3", "--display_freq", "1000", "--no_vgg_loss", "--no_vae")
    first = quiet_trainer(opt, cfg)
    first.total_steps = 1  # stopped early, as by Ctrl-C after step 1
    first.run()
    assert first.step == 1

    bare = ["--checkpoints_dir", str(tmp_path), "--name", "run", "--continue_train"]
    opt, cfg, notes = parse_options(bare)
    assert (opt.max_steps, opt.batchSize, opt.crop_size, opt.synthetic_size, opt.use_vae) == (3, 2, 32, 8, False)
    assert cfg.ngf == 4 and cfg.no_vgg_loss
    note = [n for n in notes if n.startswith("--continue_train:")]
    assert len(note) == 1 and "--max_steps 3" in note[0] and "--ngf 4" in note[0] and "--no_vae" in note[0], notes
    assert "--name" not in note[0] and "--checkpoints_dir" not in note[0]
    resumed = quiet_trainer(opt, cfg)
    resumed.resume()
    assert resumed.step == 1
    resumed.run()
    assert resumed.step == 3

    opt, cfg, notes = parse_options(bare + ["--max_steps", "5"])  # given again: the command line wins
    assert opt.max_steps == 5 and "--max_steps" not in " ".join(notes)
    opt, _, _ = parse_options(bare, resume=False)  # the torch-free parse alone: this command line only
    assert opt.max_steps is None and opt.crop_size is None


def test_continue_train_from_public_files(tmp_path):
    opt, cfg, _ = tiny_options(tmp_path, "--max_steps", "1")
    tr = quiet_trainer(opt, cfg)
    tr.run()
    (tmp_path / "run" / "latest.pt").unlink()  # only the public code's files are left
    opt, cfg, _ = tiny_options(tmp_path, "--max_steps", "1", "--continue_train")
    tr2 = quiet_trainer(opt, cfg)
    tr2.resume()
    assert tr2.step == 0 and states_equal(tr.G.state_dict(), tr2.G.state_dict()) == []
    assert states_equal(tr.D.state_dict(), tr2.D.state_dict()) == []


def test_continue_train_without_checkpoint_is_a_clear_error(tmp_path):
    opt, cfg, _ = tiny_options(tmp_path, "--continue_train")
    with pytest.raises(FileNotFoundError, match="latest_net_G.pth"):
        quiet_trainer(opt, cfg).resume()


# ---------------------------------------------------------------------------
# progress line
# ---------------------------------------------------------------------------


def test_progress_prints_whole_lines_when_not_a_terminal():
    import io
    import re

    from inade.training.progress import Progress

    out = io.StringIO()
    p = Progress(total_steps=12, start_step=2, images_per_step=8, print_every=32, stream=out)  # StringIO: not a tty
    for step in range(3, 13):
        p.update(step, epoch=1 + (step > 6), epochs=2, losses={"G_GAN": torch.tensor(0.5), "D_fake": 0.25})
    p.message("SIGINT: stopping")
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [int(re.search(r"\] (\d+)/12", line).group(1)) for line in lines[:-1]] == [4, 8, 12]  # every 32 images
    assert re.fullmatch(r"epoch 2/2 \[#{20}\] 12/12, G_GAN 0\.500 D_fake 0\.250 \| [\d.]+ img/s \| \d\d:\d\d<\d\d:\d\d", lines[2])
    assert lines[-1] == "SIGINT: stopping"


def test_progress_is_a_tqdm_bar_on_a_terminal():
    import io

    from tqdm import tqdm

    from inade.training.progress import Progress

    out = io.StringIO()
    p = Progress(total_steps=5, start_step=0, images_per_step=2, live=True, stream=out)
    assert isinstance(p.bar, tqdm)
    for step in range(1, 6):
        p.update(step, 1, 1, {"G_GAN": 0.5})
    assert p.bar.n == 5
    p.close()
    text = out.getvalue()
    assert "\r" in text and "5/5, G_GAN 0.500 |" in text and "img/s" in text
    silent = io.StringIO()
    q = Progress(5, 0, 2, live=True, stream=silent, enabled=False)  # processes other than the first
    q.update(1, 1, 1, {})
    q.message("x")
    q.close()
    assert silent.getvalue() == ""


# ---------------------------------------------------------------------------
# user errors: one line "error: ...", exit code 2
# ---------------------------------------------------------------------------


def _error_line(capsys) -> str:
    """The one ``error: …`` line of stderr (and nothing like a traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert "Traceback" not in err and "weights_only" not in err, err
    return lines[0]


def _folder_dataset(root, n: int, bad: int) -> None:
    """``n`` samples with classes 0 and 1; sample ``bad`` has class 5 instead."""
    from PIL import Image

    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for k in range(n):
        Image.fromarray(torch.full((32, 32, 3), 100, dtype=torch.uint8).numpy()).save(root / "images" / f"{k}.png")
        label = torch.zeros(32, 32, dtype=torch.uint8)
        label[8:20, 8:20] = 5 if k == bad else 1
        Image.fromarray(label.numpy()).save(root / "labels" / f"{k}.png")


@pytest.mark.parametrize("workers", [0, 1])
def test_train_class_outside_label_nc_is_one_line(tmp_path, capsys, workers):
    """The label check runs while loading a batch, also inside a data worker (the sample grid reads
    samples 0-3, the bad one is 5): still one line naming the file."""
    _folder_dataset(tmp_path / "data", n=6, bad=5)
    argv = TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--dataset_mode", "folder", "--dataroot",
                   str(tmp_path / "data"), "--label_nc", "3", "--load_size", "32", "--nThreads", str(workers),
                   "--max_steps", "3", "--no_vgg_loss", "--display_freq", "1000", "--save_latest_freq", "1000"]
    assert main(argv) == 2
    assert "labels/5.png has class 5, outside 0 ... 2 (label_nc=3" in _error_line(capsys)


def test_train_corrupt_checkpoints_are_one_line_saying_what_is_wrong(tmp_path, capsys):
    opt, cfg, _ = tiny_options(tmp_path, "--max_steps", "1")
    quiet_trainer(opt, cfg).run()
    latest = tmp_path / "run" / "latest.pt"
    good = latest.read_bytes()
    resume = TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--continue_train", "--max_steps", "1"]
    cases = [
        (good[: len(good) // 2], "latest.pt: not a complete PyTorch checkpoint (empty, truncated or corrupt)"),
        (b"\x00garbage", "latest.pt: not a PyTorch checkpoint"),
        (None, "latest.pt: holds a Python object (fractions.Fraction)"),
    ]
    for data, message in cases:
        if data is None:  # a pickled object the weights-only reader refuses (torch would suggest weights_only=False)
            import fractions

            torch.save({"format": ckpt.FORMAT, "step": fractions.Fraction(1, 3)}, latest)
        else:
            latest.write_bytes(data)
        assert main(resume) == 2
        assert message in _error_line(capsys)
    # a checkpoint of another model: it does not fit this run
    opt, cfg, _ = tiny_options(tmp_path / "other", "--max_steps", "1", "--ngf", "8")
    quiet_trainer(opt, cfg).run()
    latest.write_bytes((tmp_path / "other" / "run" / "latest.pt").read_bytes())
    assert main(resume) == 2
    assert "latest.pt: does not fit this run (it was trained with ngf=8 (this run: 4))" in _error_line(capsys)
    # the public-format files: a corrupt one is named too
    latest.unlink()
    (tmp_path / "run" / "latest_net_G.pth").write_bytes(b"")
    assert main(resume) == 2
    assert "latest_net_G.pth: not a complete PyTorch checkpoint" in _error_line(capsys)


def test_train_missing_dataroot_and_checkpoint_are_one_line(tmp_path, capsys):
    assert main(["--dataset_mode", "ade20k"]) == 2
    assert _error_line(capsys) == "error: --dataset_mode ade20k needs --dataroot <the dataset's folder>"
    assert main(["--dataset_mode", "ade20k", "--dataroot", str(tmp_path / "nope"), *TINY[-2:]]) == 2
    assert "nope is not a folder" in _error_line(capsys)
    assert main(TINY + ["--checkpoints_dir", str(tmp_path), "--name", "run", "--continue_train"]) == 2
    assert "--continue_train: neither" in _error_line(capsys)
    assert main(["--gpu_ids", "first"]) == 2
    assert "--gpu_ids: expects GPU numbers" in _error_line(capsys)
    # option values come before any folder state: a folder holding a model changes nothing
    (Path("checkpoints") / "inade_synthetic" / "latest.pt").parent.mkdir(parents=True)
    (Path("checkpoints") / "inade_synthetic" / "latest.pt").write_bytes(b"")
    assert main(["--gpu_ids", "first"]) == 2
    assert "--gpu_ids: expects GPU numbers" in _error_line(capsys)


def test_train_py_user_error_exit_code(tmp_path):
    """The real entry point: exit code 2 and one line on stderr."""
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset_mode", "coco", "--dataroot", str(tmp_path / "x"),
                        "--gpu_ids", "-1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("error: dataroot ") and r.stderr.count("\n") == 1, r.stderr


# ---------------------------------------------------------------------------
# atomic checkpoints
# ---------------------------------------------------------------------------


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    ckpt.atomic_save({"step": 1, "w": torch.arange(4)}, path)

    def failing_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        ckpt.atomic_save({"step": 2, "w": torch.zeros(4)}, path)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"], "no temporary file left behind"


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1))
    ckpt.set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


# ---------------------------------------------------------------------------
# two processes
# ---------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys, torch
    from inade.training.options import parse_options
    from inade.training.distributed import setup, cleanup
    from inade.training.trainer import Trainer

    out, argv = sys.argv[1], sys.argv[2:]
    opt, cfg, _ = parse_options(argv)
    dist, device, _ = setup(opt.gpu_ids)
    tr = Trainer(opt, cfg, dist, device, log=lambda *a: None)
    tr.run()
    if dist.is_main:
        nets = {"G": tr.G, "E": tr.E, "D": tr.D}
        torch.save({
            "params": {f"{n}.{k}": p.detach().clone() for n, m in nets.items() for k, p in m.named_parameters()},
            "grads": {f"{n}.{k}": p.grad.clone() for n, m in nets.items() for k, p in m.named_parameters() if p.grad is not None},
            "buffers": {f"G.{k}": b.clone() for k, b in tr.G.named_buffers() if "running" in k},
            "steps": tr.step,
        }, out)
    cleanup(dist)
    """
)


def test_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU): after one step, gradients, weights and the synchronised
    INADE batch statistics equal those of one process on the global batch of 4."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    # The public learning rate: weights whose gradient sign rounding flips move little, so the
    # discriminator pass (which runs the updated G) sees the same statistics too.
    args = TINY + ["--batchSize", "4", "--max_steps", "1", "--checkpoints_dir", str(tmp_path), "--display_freq", "1000",
                   "--lr", "0.0002"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt"), *args, "--name", "one"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "two.pt"), *args, "--name", "two"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert a["steps"] == b["steps"] == 1
    assert (tmp_path / "two" / "latest.pt").exists()
    for k in a["grads"]:
        torch.testing.assert_close(b["grads"][k], a["grads"][k], rtol=1e-4, atol=1e-6, msg=k)
    for k in a["buffers"]:
        torch.testing.assert_close(b["buffers"][k], a["buffers"][k], rtol=1e-4, atol=2e-5, msg=k)
    # Adam's first step moves each weight by lr * sign(grad): equal wherever the sign is certain,
    # and at most two steps apart where a gradient is so small that rounding can flip its sign.
    lr_G, lr_D, _ = learning_rates(parse_options(args)[1])
    for k, w in a["params"].items():
        g = a["grads"].get(k)
        sure = g.abs() > 1e-6 if g is not None else torch.ones_like(w, dtype=torch.bool)
        torch.testing.assert_close(b["params"][k][sure], w[sure], rtol=0, atol=1e-6, msg=k)
        assert (b["params"][k] - w).abs().max() <= 2.01 * (lr_D if k.startswith("D.") else lr_G), k
    # the one metrics.jsonl record (process 0 alone writes) holds the mean over the processes: the
    # losses of one process on the whole batch (the KL, a sum over the batch, included)
    from inade.training.logs import losses_of, read_metrics  # noqa: PLC0415

    (one_logged,), (two_logged,) = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert losses_of(two_logged).keys() == losses_of(one_logged).keys() >= {"GAN", "KLD", "D_fake", "D_real"}
    for k, v in losses_of(one_logged).items():
        assert two_logged[k] == pytest.approx(v, rel=1e-3, abs=1e-6), k


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_losses_keep_the_models_precision_outside_autocast(tmp_path, amp):
    """A float64 model's losses (VGG's L1 and the KL included) are float64; only under autocast
    are they summed in float32."""
    from inade.models.losses import VGGLoss  # noqa: PLC0415
    from inade.models.vgg import VGG19  # noqa: PLC0415

    opt, cfg, _ = tiny_options(tmp_path, "--max_steps", "1")
    tr = quiet_trainer(opt, cfg)
    tr.amp_dtype = torch.bfloat16 if amp == "bf16" else None  # (--amp bf16 is refused on a CPU without bf16)
    tr.crit.vgg_loss = VGGLoss(VGG19())  # random weights: the dtype is what counts here
    if amp == "none":
        for m in (tr.G, tr.E, tr.D, tr.crit):
            m.double()
        latents = tr.latents
        tr.latents = lambda *a: tuple(t.double() for t in latents(*a))
    b = next(iter(tr.loader))
    b["image"] = b["image"].to(torch.float64 if amp == "none" else torch.float32)
    losses = tr.train_step(b)
    assert {"VGG", "KLD", "GAN", "D_real"} <= set(losses)
    if amp == "none":
        assert {k: v.dtype for k, v in losses.items()} == dict.fromkeys(losses, torch.float64)
    else:  # summed in float32 where autocast's bfloat16 would round them (the hinge terms stay autocast's)
        assert losses["VGG"].dtype == losses["KLD"].dtype == torch.float32


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps_are_finite(tmp_path, amp, monkeypatch):
    monkeypatch.setattr("inade.utils.cpu.cpu_has_bf16", lambda: True)  # the numerics, also on a CPU without bf16
    opt, cfg, _ = tiny_options(tmp_path, "--max_steps", "2", "--amp", amp)
    tr = quiet_trainer(opt, cfg)
    b = next(iter(tr.loader))
    losses = tr.train_step(b)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert all(torch.isfinite(p).all() for p in tr.G.parameters())
    assert tr.scaler_G.is_enabled() == (amp == "fp16")


def test_trains_on_a_real_layout_with_workers(tmp_path):
    """A plain folder dataset (images/, labels/, instances/) through the same loop, two data workers."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "labels", "instances"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "data" / "images" / f"{k}.jpg")
        label = np.zeros((40, 48), dtype=np.uint8)
        label[10:30, 5:20], label[5:15, 30:45] = 1, 2
        inst = label.astype(np.uint16) * 1000 + (np.arange(48)[None] > 12)  # raw ids, two objects of class 1
        Image.fromarray(label).save(tmp_path / "data" / "labels" / f"{k}.png")
        Image.fromarray(inst).save(tmp_path / "data" / "instances" / f"{k}.png")
    opt, cfg, _ = tiny_options(tmp_path, "--dataset_mode", "folder", "--dataroot", str(tmp_path / "data"),
                               "--label_nc", "3", "--load_size", "36", "--nThreads", "2", "--max_steps", "2", "--no_vgg_loss")
    tr = quiet_trainer(opt, cfg)
    tr.run()
    assert tr.step == 2 and (tmp_path / "run" / "latest.pt").exists()
    assert all(torch.isfinite(p).all() for p in tr.G.parameters())
