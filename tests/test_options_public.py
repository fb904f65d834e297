"""The public code's options on our entry points, and option values refused as one line.

Every option name of the public parsers (tests/data/public_options.txt, made from
tzt101/INADE's options/*.py) is accepted by ``python -m inade.test`` (base + test) and
``train.py`` (base + train) under one rule: honoured, refused for a value that asks for
something not built, or accepted with a note that it is ignored. Bad values of
``train.py``, ``inade.test``, ``inade.metrics`` and ``inade.eval`` exit 2 with one
``error:`` line naming the option (in-process through each ``main``; a few as subprocesses).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from _cli import assert_user_error, run_cli
from inade.metrics.__main__ import main as metrics_main
from inade.test import main as inade_test_main
from inade.test import parse_test_options
from inade.training.options import IGNORED_BY, build_parser, parse_options
from inade.training.trainer import main as train_main
from inade.utils.errors import UserError

PUBLIC = Path(__file__).parent / "data" / "public_options.txt"


def public_options(parser: str) -> list[str]:
    """Option names (without ``--``) of the public ``base`` + ``parser`` options."""
    rows = [line.split() for line in PUBLIC.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [name[2:] for file, name in rows if file in ("base", parser)]


# A value the public code would take for each option that is not a flag.
VALUES = {
    "name": "exp", "gpu_ids": "-1", "checkpoints_dir": "ckpts", "model": "pix2pix", "norm_G": "spectralspadesyncbatch3x3",
    "norm_D": "spectralinstance", "norm_E": "spectralinstance", "phase": "test", "batchSize": "2",
    "preprocess_mode": "resize_and_crop", "load_size": "72", "crop_size": "64", "aspect_ratio": "1.0", "label_nc": "6",
    "output_nc": "3", "dataroot": "data", "dataset_mode": "synthetic", "nThreads": "1", "max_dataset_size": "10",
    "display_winsize": "256", "netG": "spade", "ngf": "16", "init_type": "xavier", "init_variance": "0.02",
    "z_dim": "256", "norm_mode": "inade", "noise_nc": "16", "nef": "16", "eval_dims": "2048", "eval_epoch_freq": "5",
    "results_dir": "res", "which_epoch": "best", "how_many": "5", "display_freq": "100", "print_freq": "100",
    "save_latest_freq": "100", "save_epoch_freq": "10", "niter": "5", "niter_decay": "0", "optimizer": "adam",
    "beta1": "0.5", "beta2": "0.999", "lr": "0.0002", "D_steps_per_G": "1", "ndf": "16", "lambda_feat": "10",
    "lambda_vgg": "10", "gan_mode": "hinge", "netD": "multiscale", "lambda_kld": "0.05",
}


def _argv(parser, name: str) -> list[str]:
    action = next(a for a in parser._actions if f"--{name}" in a.option_strings)
    return [f"--{name}"] if action.nargs in (0, "?") else [f"--{name}", VALUES[name]]


def test_public_option_list_is_the_public_parsers():
    test, train = public_options("test"), public_options("train")
    assert len(test) == 44 and len(set(test)) == 44 and len(train) == 67 and len(set(train)) == 67
    assert {"norm_mode", "how_many", "results_dir", "which_epoch"} <= set(test)
    assert {"results_dir", "continue_train", "lr"} <= set(train)


@pytest.mark.parametrize("entry", ["test", "train"])
def test_every_public_option_is_accepted(entry):
    """Each option alone, with a value the public code takes: parsed, and an ignored one says so."""
    from inade.test import build_parser as test_parser  # noqa: PLC0415

    parser = test_parser() if entry == "test" else build_parser()
    for name in public_options(entry):
        argv = _argv(parser, name)
        if entry == "test":
            opt, notes = parse_test_options(argv)
        else:
            opt, _, notes = parse_options(argv)
        ignored = any(f"--{name} " in n for n in notes)
        assert ignored == (name in IGNORED_BY[entry]), (name, notes)
        if not ignored:  # honoured: the value reached the options
            assert getattr(opt, name) is not None and getattr(opt, name) is not False, name


def dataset_options() -> dict[str, str]:
    """The options the public data sets add: ``{option: data set}`` (``data/<set>`` rows)."""
    rows = [line.split() for line in PUBLIC.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {name[2:]: file[len("data/"):] for file, name in rows if file.startswith("data/")}


# Each data set's option with its data set: honoured (the value reaches the options), or ignored with a note.
DATASET_ARGV = {"custom": ["--dataset_mode", "custom", "--label_nc", "3", "--label_dir", "L", "--image_dir", "I"],
                "pix2pix": [], "coco": ["--dataset_mode", "coco", "--dataroot", "D"]}


@pytest.mark.parametrize("entry", ["test", "train"])
def test_every_public_dataset_option_is_accepted(entry):
    """The options of data/*_dataset.py: the custom set's folders honoured (refused with a reason
    for another data set), --no_pairing_check and --coco_no_portraits noted as ignored."""
    options = dataset_options()
    assert set(options) == {"label_dir", "image_dir", "instance_dir", "no_pairing_check", "coco_no_portraits"}
    for name, dataset in options.items():
        flag = name in ("no_pairing_check", "coco_no_portraits")
        argv = DATASET_ARGV[dataset] + ([f"--{name}"] if flag else [f"--{name}", "V"])
        if entry == "test":
            argv = [a for a in argv if a not in ("--label_nc", "3")]
            opt, notes = parse_test_options(argv)
        else:
            opt, _, notes = parse_options(argv)
        ignored = any(f"--{name} " in n for n in notes)
        assert ignored == (name in IGNORED_BY[entry]) == flag, (name, notes)
        assert getattr(opt, name) == (True if flag else "V"), name
        if not flag:  # another data set: refused, naming custom
            with pytest.raises(UserError, match=f"--{name} is an option of --dataset_mode custom"):
                (parse_test_options if entry == "test" else parse_options)(["--dataset_mode", "ade20k", "--dataroot", "D",
                                                                            f"--{name}", "V"])


def test_public_readme_commands_parse():
    opt, notes = parse_test_options(["--name", "inade_celeba", "--norm_mode", "inade", "--batchSize", "1", "--gpu_ids", "-1",
                                     "--which_epoch", "best", "--dataset_mode", "celeba", "--dataroot", "DATA", "--use_vae"])
    assert (opt.name, opt.which_epoch, opt.dataset_mode, opt.use_vae, notes) == ("inade_celeba", "best", "celeba", True, [])
    opt, cfg, _ = parse_options(["--name", "exp", "--dataset_mode", "celeba", "--norm_mode", "inade", "--use_vae",
                                 "--dataroot", "DATA", "--results_dir", "res", "--train_eval"])
    assert opt.results_dir == "res" and opt.train_eval and cfg.label_nc == 19


TRAIN, TEST = "train", "test"
# (entry point, arguments, the text the one error line must contain)
REFUSED = {
    "train-lr-nan": (TRAIN, ["--lr", "nan"], "--lr"),
    "train-lr-inf": (TRAIN, ["--lr", "inf"], "--lr"),
    "train-lr-negative": (TRAIN, ["--lr", "-0.001"], "--lr"),
    "train-lr-zero": (TRAIN, ["--lr", "0"], "--lr"),
    "train-beta1-one": (TRAIN, ["--beta1", "1"], "--beta1"),
    "train-beta1-negative": (TRAIN, ["--beta1", "-0.1"], "--beta1"),
    "train-beta2-above-one": (TRAIN, ["--beta2", "1.5"], "--beta2"),
    "train-nThreads-negative": (TRAIN, ["--nThreads", "-1"], "--nThreads"),
    "train-synthetic_size-zero": (TRAIN, ["--synthetic_size", "0"], "--synthetic_size"),
    "train-D_steps_per_G-zero": (TRAIN, ["--D_steps_per_G", "0"], "--D_steps_per_G"),
    "train-max_steps-negative": (TRAIN, ["--max_steps", "-5"], "--max_steps"),
    "train-max_steps-zero": (TRAIN, ["--max_steps", "0"], "--max_steps"),
    "train-batchSize-zero": (TRAIN, ["--batchSize", "0"], "--batchSize"),
    "train-lambda_vgg-nan": (TRAIN, ["--lambda_vgg", "nan"], "--lambda_vgg"),
    "train-norm_mode-spade": (TRAIN, ["--norm_mode", "spade"], "--norm_mode"),
    "train-netG-pix2pixhd": (TRAIN, ["--netG", "pix2pixhd"], "--netG"),
    "train-model-other": (TRAIN, ["--model", "cycle_gan"], "--model"),
    "train-output_nc-1": (TRAIN, ["--output_nc", "1"], "--output_nc"),
    "train-eval_dims-768": (TRAIN, ["--eval_dims", "768"], "--eval_dims"),
    "train-preprocess_mode-bad": (TRAIN, ["--preprocess_mode", "zoom"], "--preprocess_mode"),
    "train-unknown-option": (TRAIN, ["--bogus"], "--bogus"),
    "train-unknown-option-case": (TRAIN, ["--batchsize", "4"], "--batchsize (did you mean --batchSize?)"),
    "train-custom-no-folders": (TRAIN, ["--dataset_mode", "custom", "--label_nc", "3"], "--dataset_mode custom needs"),
    "test-label_dir-not-custom": (TEST, ["--dataset_mode", "cityscapes", "--label_dir", "L"], "--label_dir"),
    "metrics-unknown-option": ("metrics", ["fid", "a", "b", "--batchsize", "4"], "did you mean --batch_size?"),
    "train-name-parent": (TRAIN, ["--name", ".."], "--name"),
    "train-name-path": (TRAIN, ["--name", "../elsewhere/exp"], "--name"),
    "test-name-absolute": (TEST, ["--name", "/tmp/exp"], "--name"),
    "test-norm_mode-spade": (TEST, ["--norm_mode", "spade"], "--norm_mode"),
    "test-netG-pix2pixhd": (TEST, ["--netG", "pix2pixhd"], "--netG"),
    "test-how_many-minus-inf": (TEST, ["--how_many=-inf"], "--how_many"),
    "test-how_many-minus-one": (TEST, ["--how_many", "-1"], "--how_many"),
    "test-how_many-zero": (TEST, ["--how_many", "0"], "--how_many"),
    "test-how_many-nan": (TEST, ["--how_many", "nan"], "--how_many"),
    "test-how_many-fraction": (TEST, ["--how_many", "2.5"], "--how_many"),
    "test-batchSize-zero": (TEST, ["--batchSize", "0"], "--batchSize"),
    "test-nThreads-negative": (TEST, ["--nThreads", "-2"], "--nThreads"),
    "test-synthetic_size-zero": (TEST, ["--synthetic_size", "0"], "--synthetic_size"),
    "test-samples-zero": (TEST, ["--samples", "0"], "--samples"),
    "test-max_dataset_size-zero": (TEST, ["--max_dataset_size", "0"], "--max_dataset_size"),
    "test-gpu_ids-banana": (TEST, ["--gpu_ids", "banana"], "--gpu_ids"),
    "test-unknown-option": (TEST, ["--bogus", "1"], "--bogus"),
    "metrics-fid-device-banana": ("metrics", ["fid", "a", "b", "--device", "banana"], "--device"),
    "metrics-fid-batch_size-zero": ("metrics", ["fid", "a", "b", "--batch_size", "0"], "--batch_size"),
    "metrics-fid-resize_size-zero": ("metrics", ["fid", "a", "b", "--resize_size", "0"], "--resize_size"),
    "metrics-fid-resize_ratio-inf": ("metrics", ["fid", "a", "b", "--resize_ratio", "inf"], "--resize_ratio"),
    "metrics-all-samples-one": ("metrics", ["all", "r", "--samples", "1"], "--samples"),
    "metrics-all-layouts-zero": ("metrics", ["all", "r", "--layouts", "0"], "--layouts"),
    "metrics-lpips-batch_size-zero": ("metrics", ["lpips", "a", "b", "--batch_size", "0"], "--batch_size"),
    "metrics-synthetic-samples-one": ("metrics", ["synthetic", "--checkpoint", "c.pt", "--samples", "1"], "--samples"),
    "metrics-synthetic-device-banana": ("metrics", ["synthetic", "--checkpoint", "c.pt", "--device", "banana"], "--device"),
    "metrics-no-command": ("metrics", [], "command"),
}
MAINS = {TRAIN: train_main, TEST: inade_test_main, "metrics": metrics_main}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    return lines[0]


@pytest.mark.parametrize("entry,argv,needle", list(REFUSED.values()), ids=list(REFUSED))
def test_refused_values_are_one_line(entry, argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written anywhere else, whatever happens
    assert MAINS[entry](argv) == 2
    assert needle in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,needle", [
    (["train.py", "--lr", "nan"], "--lr"),
    (["-m", "inade.test", "--norm_mode", "spade"], "--norm_mode"),
    (["-m", "inade.eval", "--checkpoint", "c.pt", "--device", "banana"], "--device"),
], ids=["train.py-lr-nan", "inade.test-norm_mode-spade", "inade.eval-alias-device-banana"])
def test_refused_values_as_a_user_sees_them(args, needle, tmp_path):
    from _cli import ROOT  # noqa: PLC0415

    if args[0] == "train.py":
        args = [str(ROOT / "train.py"), *args[1:]]
    assert_user_error(run_cli(args, cwd=tmp_path, timeout=120), needle)
