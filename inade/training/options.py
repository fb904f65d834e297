"""Command-line options of ``train.py`` and ``python -m inade.test``: the public code's names (tzt101/INADE,
SPADE's ``options/``) for everything the two share, so its training commands run
unchanged, plus a few of our own (``--amp``, ``--compile``, ``--seed``, ...).

Defaults come from the dataset's preset (:func:`inade.config`, chosen by
``--dataset_mode``), then from the command line. Options of the public code that
do not apply here are accepted and ignored (one note lists them); a value that asks
for something not built is refused. The rule lives once here (:func:`add_base_options`,
:func:`check_base_options`) for both entry points; a bad option or value is one line
``error: …`` naming it (:class:`inade.utils.arguments.ArgumentParser`).

Two deliberate differences from the public code, both documented in
``docs/TRAINING.md``: the encoder is on by default (``--no_vae`` turns it off;
the public code needs ``--use_vae``, which its README passes), and
``--batchSize`` is the *global* batch: under ``torchrun`` every process takes
``batchSize / world_size`` samples.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import inade
from inade.config import PREPROCESS_MODES, Config
from inade.utils.arguments import (ArgumentParser, _number, adam_beta, at_least, count_or_all, device, folder_name,
                                   gpu_ids, non_negative_finite, positive_finite)
from inade.utils.errors import UserError

# dataset_mode -> preset of inade.config
PRESET_OF_MODE = {
    "synthetic": "synthetic",
    "cityscapes": "cityscapes",
    "ade20k": "ade20k",
    "celeba": "celeba",
    "deepfashion": "deepfashion",
    "coco": "cocostuff",
}
# The public custom data set's folders (data/custom_dataset.py): --dataset_mode custom reads them
# (paired by file name; --instance_dir optional), else the folder layout under --dataroot.
CUSTOM_FOLDERS = {"label_dir": "label maps (PNG)", "image_dir": "images",
                  "instance_dir": "instance maps (PNG; optional: one instance per class without)"}
CONFIG_FIELDS = {f.name for f in dataclasses.fields(Config)} - {"name", "dataset_mode"}

# Training defaults that depend on the dataset (others: the public code's).
SYNTHETIC_DEFAULTS = dict(
    batchSize=8, niter=6, niter_decay=6, synthetic_size=512, display_freq=1024, print_freq=256,
    save_latest_freq=2048, save_epoch_freq=0, nThreads=0,
)
PUBLIC_DEFAULTS = dict(
    batchSize=1, niter=50, niter_decay=0, display_freq=100, print_freq=100, save_latest_freq=5000,
    save_epoch_freq=10, nThreads=0, synthetic_size=512,
)
# Model/loss defaults of the synthetic run that differ from the preset: the public
# code's learning rate (2e-4) needs thousands of steps to move its small initial
# weights (Xavier gain 0.02); 2e-3 (G 1e-3, D 4e-3 with TTUR) learns the scenes'
# colours within a few hundred steps on a CPU.
SYNTHETIC_CONFIG_DEFAULTS = dict(lr=0.002)
# ---------------------------------------------------------------------------
# The public code's options, shared by train.py and python -m inade.test
# ---------------------------------------------------------------------------
#
# The rule, the same for both entry points: an option of the public parsers
# (tzt101/INADE options/base_options.py, train_options.py, test_options.py) is
# honoured where it means something here, refused (one line) when its value asks for
# something not built (ALLOWED_VALUES), and otherwise accepted with a note that it is
# ignored (IGNORED_BY). tests/data/public_options.txt lists the public names.

# Values of public options that ask for a model we do not build.
ALLOWED_VALUES = {
    "norm_mode": ("inade",),  # the public default is spade; INADE is what this project implements
    "netG": ("spade",),  # the public code's INADE generator is its SPADEGenerator with norm_mode inade
    "model": ("pix2pix",),
    "output_nc": (3,),
    "eval_dims": (2048,),
}
WHY_REFUSED = {
    "norm_mode": "this program runs INADE (norm_mode inade)",
    "netG": "only the INADE generator is built (the public code's spade generator with --norm_mode inade)",
    "model": "only the pix2pix model (the public code's only one) is built",
    "output_nc": "the generator writes RGB images",
    "eval_dims": "FID uses Inception's 2048-d pool3 features",
}
# Public options that change nothing here, per entry point (a note names each one given).
_IGNORED_BOTH = ("model", "norm_E", "netG", "nef", "display_winsize", "load_from_opt_file", "cache_filelist_write",
                 "cache_filelist_read", "no_pairing_check", "coco_no_portraits")
IGNORED_BY = {
    "train": _IGNORED_BOTH + ("debug", "optimizer", "netD_subarch"),
    # The test reads weights (no initialisation, no discriminator), never flips and reads in order.
    # --load_size: outside training the loader reads at the model's size (inade.data.build_dataset),
    # which is what the public test's defaults (load_size = crop_size = 256) amount to.
    "test": _IGNORED_BOTH + ("norm_D", "init_type", "init_variance", "train_eval", "eval_dims", "eval_epoch_freq",
                             "serial_batches", "no_flip", "load_size"),
}
IGNORED = IGNORED_BY["train"]


def resize_size(text: str) -> int:
    """argparse type of the FID script's ``--resize_size``: ``-1`` (no resize) or a size ``>= 1``."""
    v = _number(text, int)
    if v != -1 and v < 1:
        raise argparse.ArgumentTypeError(f"must be -1 (no resize) or >= 1, got {text}")
    return v


def add_base_options(p: argparse.ArgumentParser, *, entry: str) -> None:
    """The public code's ``BaseOptions`` (every name, the same meaning), for ``entry``
    ``train`` or ``test``. Defaults are ``None`` ("not given"): each entry point fills
    its own (the dataset preset, the checkpoint's configuration, the public default)."""
    S = None
    g = p.add_argument_group("experiment")
    g.add_argument("--name", type=folder_name, default=S,
                   help="experiment name: <checkpoints_dir>/<name> (train: default inade_<dataset_mode>)")
    g.add_argument("--checkpoints_dir", type=str, default="./checkpoints", help="where experiments are saved")
    g.add_argument("--gpu_ids", type=gpu_ids, default=S,
                   help="e.g. 0; -1 for CPU" + (" (default: GPU 0 when there is one). Several GPUs: use torchrun"
                                               if entry == "train" else " (default -1)"))
    g.add_argument("--phase", type=str, default="train" if entry == "train" else "test")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, data order and noise" if entry == "train"
                   else "seed of the styles (style k of layout i comes from (seed, i, k))")
    g = p.add_argument_group("data")
    g.add_argument("--dataset_mode", type=str, default="synthetic" if entry == "train" else S,
                   help="synthetic | cityscapes | ade20k | celeba | deepfashion | coco | folder"
                   + ("" if entry == "train" else " (default: the checkpoint's)"))
    g.add_argument("--dataroot", type=str, default=S, help="the dataset's folder (not needed for synthetic)")
    for name, what in CUSTOM_FOLDERS.items():  # the public custom data set's options (its modify_commandline_options)
        g.add_argument(f"--{name}", type=str, default=S, help=f"--dataset_mode custom: the folder of {what}")
    g.add_argument("--batchSize", type=at_least(1), default=S,
                   help="global batch size (split over torchrun processes)" if entry == "train" else "images per forward")
    g.add_argument("--preprocess_mode", type=str, default=S, choices=PREPROCESS_MODES)
    g.add_argument("--load_size", type=at_least(1), default=S)
    g.add_argument("--crop_size", type=at_least(1), default=S)
    g.add_argument("--aspect_ratio", type=positive_finite, default=S)
    g.add_argument("--label_nc", type=at_least(1), default=S)
    g.add_argument("--contain_dontcare_label", action="store_true", default=S)
    g.add_argument("--output_nc", type=int, default=S)
    g.add_argument("--no_instance", action="store_true", default=S, help="one instance per class region (no instance maps)")
    g.add_argument("--add_sketch", action="store_true", default=S,
                   help="every norm also reads an edge map beside the label (the public code's 2021-12 update)")
    g.add_argument("--no_flip", action="store_true", default=S)
    g.add_argument("--serial_batches", action="store_true", help="take samples in order (no shuffling)")
    g.add_argument("--nThreads", type=at_least(0), default=S, help="data loading worker processes")
    g.add_argument("--max_dataset_size", type=at_least(1), default=S, help="use only the first files of the split")
    g.add_argument("--synthetic_size", type=at_least(1), default=S,
                   help="scenes in the synthetic " + ("training set" if entry == "train" else "test split (default 64)"))
    g.add_argument("--load_from_opt_file", action="store_true", default=S, help=argparse.SUPPRESS)
    g.add_argument("--cache_filelist_write", action="store_true", default=S, help=argparse.SUPPRESS)
    g.add_argument("--cache_filelist_read", action="store_true", default=S, help=argparse.SUPPRESS)
    g.add_argument("--display_winsize", type=int, default=S, help=argparse.SUPPRESS)
    g = p.add_argument_group("model" if entry == "train" else "model (for a public-code checkpoint; ours hold their own)")
    g.add_argument("--model", type=str, default=S, help=argparse.SUPPRESS)
    g.add_argument("--netG", type=str, default=S, help=argparse.SUPPRESS)
    g.add_argument("--ngf", type=at_least(1), default=S)
    g.add_argument("--z_dim", type=at_least(1), default=S)
    g.add_argument("--noise_nc", type=at_least(1), default=S)
    g.add_argument("--num_upsampling_layers", type=str, default=S, choices=("normal", "more", "most"))
    g.add_argument("--norm_G", type=str, default=S)
    g.add_argument("--norm_D", type=str, default=S)
    g.add_argument("--norm_E", type=str, default=S, help=argparse.SUPPRESS)
    g.add_argument("--norm_mode", type=str, default="inade", help="only inade is implemented")
    g.add_argument("--init_type", type=str, default=S)
    g.add_argument("--init_variance", type=positive_finite, default=S)
    g.add_argument("--nef", type=int, default=S, help=argparse.SUPPRESS)
    g.add_argument("--use_vae", action="store_true", default=S,
                   help="train with the noise-remapping encoder (default on)" if entry == "train"
                   else "styles from the encoder on the real test image (remapped noise)")
    g.add_argument("--use_amp", action="store_true",
                   help="mixed precision (same as --amp bf16 where supported, else fp16)" if entry == "train"
                   else "synthesise under autocast (bf16 on the CPU and where supported, else fp16)")
    g = p.add_argument_group("evaluation during training (inade.metrics.train_eval)" if entry == "train"
                             else "training-only options of the public base parser (ignored here)")
    g.add_argument("--train_eval", action="store_true", default=S if entry == "test" else False,
                   help="FID on the test split every --eval_epoch_freq epochs; keeps best_net_G.pth and best.pt "
                        "for the best FID" if entry == "train" else argparse.SUPPRESS)
    g.add_argument("--eval_epoch_freq", type=at_least(1), default=10 if entry == "train" else S,
                   help="epochs between FID evaluations" if entry == "train" else argparse.SUPPRESS)
    g.add_argument("--eval_dims", type=int, default=2048 if entry == "train" else S,
                   help="Inception features (pool3 only: 2048)" if entry == "train" else argparse.SUPPRESS)
    for name in ("no_pairing_check", "coco_no_portraits"):  # the public dataset option setters'
        p.add_argument(f"--{name}", action="store_true", default=S, help=argparse.SUPPRESS)


def check_base_options(opt, entry: str) -> list[str]:
    """The shared rule after parsing: refuse values that ask for something not built
    (one line naming the option), return a note for each ignored option given."""
    for name, allowed in ALLOWED_VALUES.items():
        value = getattr(opt, name, None)
        if value is not None and value not in allowed:
            raise UserError(f"--{name} {value!r} is not supported: {WHY_REFUSED[name]}")
    mode = getattr(opt, "dataset_mode", None)
    given = [f"--{n}" for n in CUSTOM_FOLDERS if getattr(opt, n, None)]
    if given and mode is not None and mode != "custom":
        raise UserError(f"{given[0]} is an option of --dataset_mode custom (the public code's custom data set), "
                        f"not of --dataset_mode {mode}")
    return [f"--{n} is accepted for compatibility and ignored" for n in IGNORED_BY[entry]
            if getattr(opt, n, None) not in (None, False)]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train.py",
        description="Train INADE (CVPR 2021). With no arguments: the built-in synthetic set on the CPU, "
        "a few minutes. Option names are the public code's (tzt101/INADE).",
    )
    S = None  # "not given": the preset or the public default decides
    add_base_options(p, entry="train")
    g = p.add_argument_group("training")
    g.add_argument("--continue_train", action="store_true",
                   help="resume from <name>/latest.pt (exact) or the public code's latest_net_*.pth (weights only)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a fresh run even though <checkpoints_dir>/<name> holds a checkpoint (it will be replaced)")
    g.add_argument("--which_epoch", type=str, default="latest",
                   help="which public-format checkpoint to continue from (<which_epoch>_net_G.pth)")
    g.add_argument("--no_vae", dest="use_vae", action="store_false", default=S, help="train without the encoder")
    g.add_argument("--netD", type=str, default=S)
    g.add_argument("--ndf", type=at_least(1), default=S)
    g.add_argument("--num_D", type=at_least(1), default=S)
    g.add_argument("--n_layers_D", type=at_least(1), default=S)
    g.add_argument("--niter", type=at_least(0), default=S,
                   help="epochs at the starting learning rate (the first decay comes at the end of epoch niter + 1)")
    g.add_argument("--niter_decay", type=at_least(0), default=S,
                   help="epochs of linear decay after niter: lr falls by lr/niter_decay at the end of each, as the "
                        "public code's update_learning_rate (the last epoch runs at lr/niter_decay)")
    g.add_argument("--lr_decay_every_iter", action="store_true",
                   help="ours: decay at every iteration instead of at epoch ends, reaching 0 at the end of epoch "
                        "niter + niter_decay (not the public code's schedule)")
    g.add_argument("--lr", type=positive_finite, default=S, help="base learning rate (TTUR: G lr/2, D 2 lr)")
    g.add_argument("--beta1", type=adam_beta, default=S)
    g.add_argument("--beta2", type=adam_beta, default=S)
    g.add_argument("--no_TTUR", action="store_true", default=S, help="G and D at lr, Adam betas (0.5, 0.999)")
    g.add_argument("--D_steps_per_G", type=at_least(1), default=1)
    g.add_argument("--gan_mode", type=str, default=S, help="only hinge is implemented")
    g.add_argument("--lambda_feat", type=non_negative_finite, default=S)
    g.add_argument("--lambda_vgg", type=non_negative_finite, default=S)
    g.add_argument("--lambda_kld", type=non_negative_finite, default=S)
    g.add_argument("--no_ganFeat_loss", action="store_true", default=S)
    g.add_argument("--no_vgg_loss", action="store_true", default=S)
    g.add_argument("--vgg_weights", type=str, default=S, help="torchvision vgg19-dcbb9e9d.pth (default $INADE_VGG19_WEIGHTS or torch hub cache)")
    g.add_argument("--amp", type=str, default="none", choices=("none", "bf16", "fp16"), help="autocast dtype")
    g.add_argument("--compile", action="store_true", help="torch.compile the networks")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only (torch.use_deterministic_algorithms): bit-identical runs and resumes "
                        "with several threads, about 10%% slower on the CPU")
    g.add_argument("--max_steps", type=at_least(1), default=S, help="stop after this many iterations (default: niter + niter_decay epochs)")
    g = p.add_argument_group("outputs")
    g.add_argument("--display_freq", type=at_least(1), default=S, help="sample grid every this many images")
    g.add_argument("--print_freq", type=at_least(1), default=S, help="log line every this many images (when stderr is not a terminal)")
    g.add_argument("--save_latest_freq", type=at_least(1), default=S, help="checkpoint every this many images")
    g.add_argument("--save_epoch_freq", type=at_least(0), default=S, help="keep <epoch>_net_*.pth every this many epochs (0: never)")
    g.add_argument("--no_progress", action="store_true", help="plain log lines instead of a progress bar")
    g.add_argument("--tf_log", action="store_true",
                   help="TensorBoard summaries (losses, learning rates, img/s, FID, sample grids) in <name>/logs; "
                        "needs the tensorboard package")
    g.add_argument("--no_html", action="store_true", help="no results page <name>/web/index.html")
    g.add_argument("--results_dir", type=str, default=S,
                   help="with --train_eval: each evaluation's test images also go to "
                        "<results_dir>/<name>/test_<epoch>/images/synthesized_image/ (the public code's place)")
    g = p.add_argument_group("evaluation during training (more)")
    g.add_argument("--eval_stats", type=str, default=None,
                   help="reference statistics: .npz (mu, sigma) or a folder with m.npy, s.npy "
                        "(default datasets/train_mu_si/<dataset_mode>, the public code's)")
    g.add_argument("--inception_weights", type=str, default=None,
                   help="pt_inception-2015-12-05-6726825d.pth (default $INADE_INCEPTION_WEIGHTS)")
    g.add_argument("--eval_how_many", type=at_least(1), default=None, help="test images per evaluation (default all)")
    g.add_argument("--eval_method", type=str, default="sqrtm", choices=("sqrtm", "eigh"),
                   help="matrix square root of the FID (sqrtm = pytorch-fid)")
    for name in ("debug", "optimizer", "netD_subarch"):
        p.add_argument(f"--{name}", default=S, nargs="?", const=True, help=argparse.SUPPRESS)
    return p


# Options that describe this invocation or this machine, not the run: --continue_train never
# takes them from the checkpoint.
NOT_RESTORED = ("continue_train", "overwrite", "which_epoch", "checkpoints_dir", "name", "gpu_ids", "nThreads",
                "no_progress", "compile")


def parse_options(argv=None, *, resume: bool = True):
    """``(opt, cfg, notes)``: training options (a Namespace with every default filled
    in), the model :class:`Config`, and human-readable notes about ignored options.
    A bad option or value raises :class:`UserError` naming it.

    With ``--continue_train`` (and ``resume``), the run's own options saved in its ``latest.pt``
    (``--max_steps``, ``--niter``, ``--batchSize``, the data set, the model …) are the defaults:
    an option given again on the command line wins, and one note names those taken."""
    p = build_parser()
    given = p.parse_args(argv)
    saved = {}
    if resume and given.continue_train:
        name = given.name or f"inade_{given.dataset_mode}"
        saved = saved_run_options(Path(given.checkpoints_dir) / name / "latest.pt")
    if not saved:
        return _options(p, argv)
    try:  # what this command line alone gives, to name the options the checkpoint changed
        fresh = vars(_options(build_parser(), argv)[0])
    except UserError:
        fresh = {}
    dests = {a.dest for a in p._actions}
    p.set_defaults(**{k: v for k, v in saved.items() if k in dests and k not in NOT_RESTORED})
    opt, cfg, notes = _options(p, argv)
    taken = [k for k in sorted(vars(opt)) if k not in NOT_RESTORED and getattr(opt, k) != fresh.get(k)]
    if taken:
        notes.append("--continue_train: the run's own options from its latest.pt: "
                     + ", ".join(_as_typed(k, getattr(opt, k)) for k in taken)
                     + " (give one again to change it)")
    return opt, cfg, notes


def _as_typed(name: str, value) -> str:
    """An option as a command line gives it (``--use_vae False`` is ``--no_vae``)."""
    if value is True:
        return f"--{name}"
    if name == "use_vae" and value is False:
        return "--no_vae"
    return f"--{name} {value}"


def saved_run_options(path: Path) -> dict:
    """The ``options`` a ``train.py`` checkpoint saved (empty when there is no ``latest.pt``: the
    public code's weight files hold no options). A damaged file is a :class:`UserError` naming it."""
    if not path.is_file():
        return {}
    from inade.utils.checkpoint_io import load_checkpoint  # noqa: PLC0415 - torch, only when resuming

    state = load_checkpoint(path)
    options = state.get("options") if isinstance(state, dict) else None
    return dict(options) if isinstance(options, dict) else {}


def _options(parser: argparse.ArgumentParser, argv):
    """:func:`parse_options` for one parser (whose defaults may be a checkpoint's)."""
    opt = parser.parse_args(argv)
    notes = check_base_options(opt, "train")
    mode = opt.dataset_mode  # as typed (custom stays custom: the errors name it)
    cfg = make_config(opt)
    for key, value in (SYNTHETIC_DEFAULTS if mode == "synthetic" else PUBLIC_DEFAULTS).items():
        if getattr(opt, key) is None:
            setattr(opt, key, value)
    if opt.name is None:
        opt.name = f"inade_{mode}"
    if opt.use_amp and opt.amp == "none":
        opt.amp = "auto"
    if cfg.gan_mode != "hinge":
        raise UserError(f"--gan_mode {cfg.gan_mode!r} is not supported (hinge only, as INADE trains)")
    if cfg.netD != "multiscale":
        raise UserError(f"--netD {cfg.netD!r} is not supported (multiscale only)")
    if opt.niter + opt.niter_decay == 0:
        raise UserError("--niter 0 --niter_decay 0: no epoch to train (give one of them a positive number)")
    if mode == "custom" and (opt.label_dir is None) != (opt.image_dir is None):
        missing = "--image_dir" if opt.image_dir is None else "--label_dir"
        raise UserError(f"--dataset_mode custom needs {missing} too (the public code's custom data set: "
                        "--label_dir and --image_dir, --instance_dir optional)")
    if mode == "custom" and opt.label_dir is None and opt.dataroot is None:
        raise UserError("--dataset_mode custom needs --label_dir and --image_dir (--instance_dir optional), "
                        "or --dataroot <a folder with labels/ and images/>")
    if mode not in ("synthetic", "custom") and opt.dataroot is None:
        raise UserError(f"--dataset_mode {mode} needs --dataroot <the dataset's folder>")
    return opt, cfg, notes


def make_config(opt) -> Config:
    """The dataset preset with the model/loss options given on the command line."""
    overrides = {k: getattr(opt, k) for k in CONFIG_FIELDS if getattr(opt, k, None) is not None}
    if overrides.get("no_TTUR"):
        overrides.setdefault("beta1", 0.5)
        overrides.setdefault("beta2", 0.999)
    if opt.dataset_mode == "synthetic":
        overrides = {**SYNTHETIC_CONFIG_DEFAULTS, **overrides}
    try:
        if opt.dataset_mode in PRESET_OF_MODE:
            return inade.config(PRESET_OF_MODE[opt.dataset_mode], **overrides)
        if "label_nc" not in overrides:
            raise UserError(f"--dataset_mode {opt.dataset_mode} needs --label_nc (classes in the label maps)")
        return Config(name="custom", dataset_mode=opt.dataset_mode, **overrides)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None


def format_options(opt, cfg) -> str:
    """The options as the public code's ``opt.txt`` lists them, model options included."""
    rows = {k: v for k, v in vars(opt).items() if v is not None and k != "name"}
    rows.update({k: v for k, v in cfg.to_dict().items() if k != "name"})
    rows["preset"] = cfg.name
    lines = ["----------------- Options ---------------", f"{'name':>25}: {opt.name}"]
    lines += [f"{k:>25}: {v}" for k, v in sorted(rows.items())]
    lines.append("----------------- End -------------------")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    o, c, n = parse_options(sys.argv[1:])
    print(format_options(o, c))
