"""Ten training iterations across an epoch end, in float64: ``train.py``'s loop against the
public code's own loop, on the COCO-Stuff samples that ship with the public code.

* ours: :class:`inade.training.trainer.Trainer` built from ``train.py``'s options
  (``--dataset_mode coco --label_nc 182 --contain_dontcare_label --preprocess_mode
  resize_and_crop``, flips on, ``--niter 0 --niter_decay 2``) and its ``run()``;
* the public code (tzt101/INADE, a checkout given as ``INADE_PUBLIC_CODE=DIR``; skipped
  without one): its ``data.create_dataloader`` (``--dataset_mode custom`` on the same
  files), ``trainers.pix2pix_trainer.Pix2PixTrainer``, ``util.iter_counter.IterationCounter``
  and ``update_learning_rate`` after each epoch, as its ``train.py`` runs them.

Same initial weights (the public code's own initialisation, loaded into ours), the same
random VGG19 in torchvision's layout, the same data order, crops and flips (ours drive the
public loader: its batch sampler takes our sampler's epoch order, its ``get_params`` our
crop and flip of each sample), the same noise (the latents our trainer draws, fed to the
public generator row by row of the public code's raw instance ids). Both run in float64
(the public code's ``FloatTensor`` one-hot maps made float64 in memory). Asserted after
every iteration: each loss and every weight and buffer within 1e-6 relative, each Adam
update within 1e-4·lr, the learning rates equal. Then the same comparison with a planted
mistake in ours must fail.

In memory only, never in the checkout: the public ``CustomDataset.get_paths`` returns three
lists where its ``initialize`` unpacks four (it raises as published); where torchvision does
not import, :class:`StandInTransforms` stands in for the five transforms its data path uses
(:func:`test_stand_in_transforms_equal_torchvision` checks them against torchvision's own
where torchvision imports). ``python -m pytest -s tests/test_public_training.py`` prints the
per-iteration table (``docs/evidence/public_training_loop.txt`` is one run of it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PUBLIC = os.environ.get("INADE_PUBLIC_CODE")
PUBLIC_OK = bool(PUBLIC) and (Path(PUBLIC) / "models" / "networks" / "normalization.py").is_file() and (
    Path(PUBLIC) / "datasets" / "coco_stuff" / "train_inst").is_dir()
pytestmark = pytest.mark.skipif(
    not PUBLIC_OK, reason="needs a checkout of the public code (tzt101/INADE, with datasets/coco_stuff): "
    "INADE_PUBLIC_CODE=DIR" + (f" ({PUBLIC} is not one)" if PUBLIC else " is not set"))

STEPS = 10  # 6 steps per epoch (13 files, batch 2, the last one dropped): crosses the end of epoch 1
CROP, LOAD = 32, 40
OURS_ARGS = [
    "--dataset_mode", "coco", "--label_nc", "182", "--contain_dontcare_label", "--preprocess_mode", "resize_and_crop",
    "--load_size", str(LOAD), "--crop_size", str(CROP), "--batchSize", "2", "--niter", "0", "--niter_decay", "2",
    "--ngf", "4", "--ndf", "4", "--noise_nc", "4", "--z_dim", "8", "--use_vae", "--nThreads", "0", "--gpu_ids", "-1",
    "--no_progress", "--max_steps", str(STEPS), "--display_freq", "100000", "--save_latest_freq", "100000",
    "--save_epoch_freq", "0",
]
LOSS_NAMES = {"D_Fake": "D_fake"}  # public name -> ours where they differ
# Losses and weights within RTOL relative (weights: of the tensor's largest value, with an absolute
# floor ATOL, two millionths of the smallest Adam step here, for tensors that are rounding noise: a
# conv bias before a batch norm has a zero gradient up to rounding); each Adam update within ADAM_TOL * lr.
RTOL, ATOL, ADAM_TOL = 1e-6, 1e-10, 1e-4
# Buffers that count and do not compute: the public code's SynchronizedBatchNorm2d on one device
# leaves num_batches_tracked at 0, ours counts (neither reads it: momentum is 0.1).
UNCOMPARED = ("num_batches_tracked",)


# ---------------------------------------------------------------------------
# torchvision's transforms, where torchvision does not import
# ---------------------------------------------------------------------------


class StandInTransforms(types.ModuleType):
    """What the public data path uses of ``torchvision.transforms``, on PIL images as torchvision
    does it: ``Resize([h, w], interpolation)`` is ``img.resize((w, h), interpolation)``,
    ``ToTensor`` gives ``uint8 / 255`` as float32 ``[C, H, W]`` (int32 for mode ``I``, no
    scaling), ``Normalize(mean, std)`` is ``(t - mean) / std`` in the tensor's dtype."""

    def __init__(self):
        super().__init__("torchvision.transforms")

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, img):
            for t in self.transforms:
                img = t(img)
            return img

    class Lambda:
        def __init__(self, fn):
            self.fn = fn

        def __call__(self, img):
            return self.fn(img)

    class Resize:
        def __init__(self, size, interpolation=Image.BILINEAR):
            if not (isinstance(size, (list, tuple)) and len(size) == 2):
                raise NotImplementedError("the stand-in resizes to [h, w] only (what the public data path asks)")
            self.size, self.interpolation = list(size), interpolation

        def __call__(self, img):
            return img.resize((self.size[1], self.size[0]), self.interpolation)

    class ToTensor:
        def __call__(self, pic):
            if pic.mode == "I":
                return torch.from_numpy(np.array(pic, np.int32, copy=True))[None]
            if pic.mode not in ("L", "RGB", "P"):
                raise NotImplementedError(f"the stand-in ToTensor reads modes L, RGB, P and I, not {pic.mode}")
            a = torch.from_numpy(np.array(pic, np.uint8, copy=True)).view(pic.size[1], pic.size[0], len(pic.getbands()))
            return a.permute(2, 0, 1).contiguous().to(torch.float32).div(255)

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, t):
            mean = torch.as_tensor(self.mean, dtype=t.dtype).view(-1, 1, 1)
            std = torch.as_tensor(self.std, dtype=t.dtype).view(-1, 1, 1)
            return t.clone().sub_(mean).div_(std)


def real_torchvision_transforms():
    """torchvision's own ``transforms`` module, or ``None`` where torchvision does not import."""
    try:
        import torchvision.transforms as tvt  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - absent, or a build that does not load beside this torch
        return None
    return tvt if getattr(tvt, "__file__", None) else None


@contextlib.contextmanager
def public_code_imported(vgg_features):
    """The public code importable on the CPU (:func:`bench.official_style.public_code_on_cpu`), with
    the stand-in transforms where torchvision does not import, and its ``CustomDataset`` mended;
    every module it brought in is removed afterwards (``data``, ``util``, ``models`` … are generic names)."""
    from bench import official_style  # noqa: PLC0415

    before, path, root = set(sys.modules), list(sys.path), Path(PUBLIC).resolve()
    stand_ins = set()
    try:
        with official_style.public_code_on_cpu(PUBLIC, vgg_features):
            if real_torchvision_transforms() is None:
                sys.modules["torchvision.transforms"] = sys.modules["torchvision"].transforms = StandInTransforms()
                stand_ins = {"torchvision", "torchvision.transforms", "dill"}
            custom = importlib.import_module("data.custom_dataset")
            assert Path(custom.__file__).resolve().is_relative_to(Path(PUBLIC).resolve()), custom.__file__
            get_paths = custom.CustomDataset.get_paths
            custom.CustomDataset.get_paths = lambda self, opt: (*get_paths(self, opt), [])  # its 4th list: sketches
            yield
    finally:  # only its modules and the stand-ins: an extension module (triton's) cannot be imported twice
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            if name in stand_ins or (file and Path(file).resolve().is_relative_to(root)):
                del sys.modules[name]
        sys.path[:] = path


# ---------------------------------------------------------------------------
# The shared initial weights
# ---------------------------------------------------------------------------


def ours_options(root: Path, folder: Path):
    from inade.training.options import parse_options  # noqa: PLC0415

    opt, cfg, _ = parse_options(OURS_ARGS + ["--dataroot", str(root), "--checkpoints_dir", str(folder), "--name", "ours"])
    return opt, cfg


def public_options(cfg, opt, root: Path, folder: Path):
    """The public code's options for the same run (``--dataset_mode custom`` on the same files)."""
    from bench.bench_train_step import public_train_options  # noqa: PLC0415

    return public_train_options(
        cfg, dataset_mode="custom", label_dir=str(root / "train_label"), image_dir=str(root / "train_img"),
        instance_dir=str(root / "train_inst"), batchSize=opt.batchSize, serial_batches=False, nThreads=0,
        max_dataset_size=sys.maxsize, no_pairing_check=False, preprocess_mode=cfg.preprocess_mode,
        load_size=cfg.load_size, no_flip=False, niter=opt.niter, niter_decay=opt.niter_decay,
        D_steps_per_G=opt.D_steps_per_G, checkpoints_dir=str(folder), name="public", save_epoch_freq=1000,
        phase="train")


def initial_weights(cfg, opt, root, folder, vgg):
    """``(public trainer, weights)``: the public code's ``Pix2PixTrainer`` (its own initialisation)
    in float64, and its G, E, D and the VGG19 features ``vgg`` (the ones its VGG loss was given)
    as state dicts for ours."""
    from trainers.pix2pix_trainer import Pix2PixTrainer  # noqa: PLC0415 - under public_code_imported

    with contextlib.redirect_stdout(sys.stderr):
        trainer = Pix2PixTrainer(public_options(cfg, opt, root, folder))
    model = trainer.pix2pix_model
    model.double()  # the optimisers hold the same parameters, now float64
    model.FloatTensor = torch.DoubleTensor  # its one-hot maps (in memory: float64 end to end)
    model.criterionGAN.Tensor = torch.DoubleTensor
    weights = {"G": model.netG.state_dict(), "E": model.netIE.state_dict(), "D": model.netD.state_dict(),
               "vgg": {f"features.{k}": v.double() for k, v in vgg.state_dict().items()}}
    return trainer, {k: {n: t.detach().clone() for n, t in v.items()} for k, v in weights.items()}


def snapshot(*modules) -> dict:
    return {f"{name}.{k}": v.detach().clone() for name, m in modules for k, v in m.state_dict().items()}


# ---------------------------------------------------------------------------
# Our loop, as train.py runs it
# ---------------------------------------------------------------------------

PLANTS = {
    "lr decayed an epoch early": lambda mp: _plant_early_decay(mp),
    "flipped image, map not flipped": lambda mp: _plant_unflipped_maps(mp),
    "edges from the wrong map": lambda mp: _plant_label_edges(mp),
}


def _plant_early_decay(mp):
    import inade.training.trainer as trainer_module  # noqa: PLC0415

    rates = trainer_module.rates_at_step
    mp.setattr(trainer_module, "rates_at_step", lambda step, spe, **kw: rates(step + spe, spe, **kw))


def _plant_unflipped_maps(mp):
    import inade.data.folders as folders  # noqa: PLC0415

    apply = folders.apply_to_index_map
    mp.setattr(folders, "apply_to_index_map", lambda ids, g: apply(ids, dataclasses.replace(g, flip=False)))


def _plant_label_edges(mp):
    import inade.models.losses as losses  # noqa: PLC0415

    semantics = losses.discriminator_semantics
    mp.setattr(losses, "discriminator_semantics", lambda label, inst, cfg, dtype: semantics(label, label, cfg, dtype))


def run_ours(root: Path, folder: Path, weights: dict, plant: str | None = None) -> dict:
    """``Trainer.run()`` for ``STEPS`` iterations in float64, recording after each iteration the
    losses, the learning rates used, every weight and buffer, the batch and the latents drawn."""
    import inade  # noqa: PLC0415
    from inade.models.losses import VGGLoss  # noqa: PLC0415
    from inade.models.vgg import VGG19  # noqa: PLC0415
    from inade.training.trainer import Trainer  # noqa: PLC0415

    with pytest.MonkeyPatch.context() as mp:
        if plant is not None:
            PLANTS[plant](mp)
        opt, cfg = ours_options(root, folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no VGG19 weights file: the shared random VGG is set below
            tr = Trainer(opt, cfg, log=lambda *a: None)
        for m in (tr.G, tr.E, tr.D):
            m.double()
        inade.load_official(tr.G, weights["G"])
        inade.load_official(tr.E, weights["E"])
        tr.D.load_state_dict(weights["D"])
        vgg = VGG19()
        vgg.load_torchvision_state_dict(weights["vgg"])
        tr.crit.vgg_loss = VGGLoss(vgg.double())
        tr.write_grid = lambda: None  # sample grids: not part of the comparison
        rec = {"steps": [], "initial": snapshot(("G", tr.G), ("E", tr.E), ("D", tr.D)), "sampler": tr.sampler,
               "seed": opt.seed, "params": {f"{name}.{k}" for name, m in (("G", tr.G), ("E", tr.E), ("D", tr.D))
                                            for k, _ in m.named_parameters()}}
        draw, step = tr.latents, tr.train_step

        def latents(indices, num_instances, which):
            noise, z = (t.double() for t in draw(indices, num_instances, which))
            rec["latents"][which] = (noise, z)
            return noise, z

        def train_step(batch):
            rec["latents"] = {}
            batch = {**batch, "image": batch["image"].double()}  # float64 end to end
            losses = step(batch)
            rec["steps"].append({
                "losses": {k: float(v) for k, v in losses.items()},
                "lr": tuple(o.param_groups[0]["lr"] for o in (tr.opt_G, tr.opt_D)),
                "state": snapshot(("G", tr.G), ("E", tr.E), ("D", tr.D)),
                "indices": batch["index"].tolist(), "instance": batch["instance"].clone(),
                "latents": rec.pop("latents"), "epoch": (tr.step - 1) // tr.steps_per_epoch,
            })
            return losses

        tr.latents, tr.train_step = latents, train_step
        tr.run()
    assert len(rec["steps"]) == STEPS
    return rec


# ---------------------------------------------------------------------------
# The public code's loop, driven by our order, crops, flips and noise
# ---------------------------------------------------------------------------


def public_noise(ours_noise, ours_inst, public_inst, rows):
    """Our noise ``[B, L, 2, C]`` (rows = our instance ids) as the public generator takes it,
    ``[B, rows, 2, C]`` with rows = the public code's raw ids (pixel by pixel the same map), and
    the raw ids that take two of our instances (then no noise is the same)."""
    B, _, two, C = ours_noise.shape
    out = torch.zeros(B, rows, two, C, dtype=ours_noise.dtype)
    split = []
    for b in range(B):
        pairs = torch.unique(torch.stack([public_inst[b].reshape(-1), ours_inst[b].reshape(-1)]), dim=1)
        raw, ours = pairs.tolist()
        split += sorted({r for r in raw if raw.count(r) > 1})
        out[b, raw] = ours_noise[b, ours]
    return out, split


class _Latents(torch.nn.Module):
    """The public generator with its ``noise`` and ``noise_ins`` (z) given (it would draw them)."""

    def __init__(self, netG):
        super().__init__()
        self.netG, self.latents = netG, None

    def forward(self, *args, **kwargs):
        noise, z = self.latents
        return self.netG(*args, noise=noise, noise_ins=z, **kwargs)


def run_public(trainer, opt, cfg, ours: dict) -> dict:
    """The public ``train.py`` loop (IterationCounter epochs, its data loader, G step every
    ``D_steps_per_G``-th batch of an epoch, D step, ``update_learning_rate(epoch)`` at each epoch
    end) for ``STEPS`` iterations, its loader fed our order, crops and flips, its generator our noise."""
    import data as public_data  # noqa: PLC0415 - under public_code_imported
    import data.pix2pix_dataset as p2p  # noqa: PLC0415
    from inade.data import augmentation_seed  # noqa: PLC0415
    from inade.data.transforms import plan_geometry  # noqa: PLC0415
    from inade.training.latents import D_PASS, G_PASS  # noqa: PLC0415
    from util.iter_counter import IterationCounter  # noqa: PLC0415

    popt = trainer.opt
    drive = {"epoch": 0, "index": None}
    getitem = p2p.Pix2pixDataset.__getitem__

    def get_params(o, size):  # our crop and flip of (epoch, index); size is PIL's (w, h)
        rng = np.random.default_rng(augmentation_seed(ours["seed"], drive["epoch"], drive["index"]))
        g = plan_geometry((size[1], size[0]), cfg.preprocess_mode, cfg.output_size, cfg.load_size, True, rng)
        assert g.resize == (o.load_size, o.load_size), (g, o.load_size)  # resize_and_crop: both square
        return {"crop_pos": (g.crop[1], g.crop[0]), "flip": g.flip}

    def indexed_getitem(self, index):
        drive["index"] = index
        return getitem(self, index)

    model = trainer.pix2pix_model
    model.netG = _Latents(model.netG)
    rec = {"steps": []}
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(sys.stderr):
        mp.setattr(p2p, "get_params", get_params)
        mp.setattr(p2p.Pix2pixDataset, "__getitem__", indexed_getitem)
        dataloader = public_data.create_dataloader(popt)
        paths = dataloader.dataset.image_paths
        counter = IterationCounter(popt, len(dataloader))
        k = 0
        for epoch in counter.training_epochs():
            drive["epoch"] = epoch - 1
            dataloader.batch_sampler.sampler = ours["sampler"].order(epoch - 1).tolist()  # our order
            counter.record_epoch_start(epoch)
            for i, data_i in enumerate(dataloader, start=counter.epoch_iter):
                counter.record_one_iteration()
                mine = ours["steps"][k]
                indices = [paths.index(p) for p in data_i["path"]]
                assert indices == mine["indices"], f"step {k}: public batch {indices}, ours {mine['indices']}"
                data_i["image"] = data_i["image"].double()
                rows = int(data_i["instance"].max()) + 1
                lr = tuple(o.param_groups[0]["lr"] for o in (trainer.optimizer_G, trainer.optimizer_D))
                split = []
                for which in (G_PASS, D_PASS):
                    noise, z = mine["latents"][which]
                    noise, s = public_noise(noise, mine["instance"], data_i["instance"][:, 0], rows)
                    split += s
                    mine.setdefault("public_latents", {})[which] = (noise, z)
                if i % popt.D_steps_per_G == 0:
                    model.netG.latents = mine["public_latents"][G_PASS]
                    trainer.run_generator_one_step(data_i)
                model.netG.latents = mine["public_latents"][D_PASS]
                trainer.run_discriminator_one_step(data_i)
                losses = {LOSS_NAMES.get(n, n): float(v.sum()) for n, v in trainer.get_latest_losses().items()}
                rec["steps"].append({"losses": losses, "lr": lr, "split": sorted(set(split)),
                                     "state": snapshot(("G", model.netG.netG), ("E", model.netIE), ("D", model.netD))})
                k += 1
                if k == STEPS:
                    return rec
            trainer.update_learning_rate(epoch)
            counter.record_epoch_end()
    return rec


# ---------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / (max |b| + ATOL / RTOL)``: relative to the tensor's scale, absolute (ATOL)
    for a tensor of rounding noise."""
    if not b.numel():
        return 0.0
    return float((a - b).abs().max()) / (float(b.abs().max()) + ATOL / RTOL)


def compare(ours: dict, public: dict) -> tuple[list[str], list[str]]:
    """``(table, failures)``: per iteration the learning rates, the largest relative loss and
    weight differences and the largest Adam-update difference in units of lr; failures name the
    iteration and what is apart."""
    table = [f"{'it':>3} {'epoch':>5} {'lr_G':>10} {'lr_D':>10} {'loss rel':>9} {'weight rel':>10} "
             f"{'update/lr':>9}  worst loss / weight"]
    failures = []
    before_o, before_p = ours["initial"], public["initial"]
    for k, (o, p) in enumerate(zip(ours["steps"], public["steps"])):
        if p["split"]:
            failures.append(f"iteration {k + 1}: the public code's raw ids {p['split'][:8]} are several of our "
                            "instances (their noise rows cannot be the same)")
        if o["lr"] != p["lr"]:
            failures.append(f"iteration {k + 1}: learning rates (G, D) ours {o['lr']}, public {p['lr']}")
        if set(o["losses"]) != set(p["losses"]):
            failures.append(f"iteration {k + 1}: losses ours {sorted(o['losses'])}, public {sorted(p['losses'])}")
        loss_rel = {n: abs(o["losses"][n] - v) / max(abs(v), 1e-30) for n, v in p["losses"].items() if n in o["losses"]}
        weight_rel = {n: relative(o["state"][n].double(), v.double()) for n, v in p["state"].items()
                      if not n.endswith(UNCOMPARED)}
        update = {}
        for n, v in p["state"].items():
            if n in ours["params"]:  # what Adam updates (not the norms' statistics nor spectral norm's u, v)
                lr = p["lr"][1] if n.startswith("D.") else p["lr"][0]  # the reference's (a planted mistake may give 0)
                du = (o["state"][n] - before_o[n]) - (v - before_p[n])
                update[n] = float(du.abs().max()) / lr
        worst_loss, worst_weight = max(loss_rel, key=loss_rel.get), max(weight_rel, key=weight_rel.get)
        worst_update = max(update, key=update.get)
        table.append(f"{k + 1:>3} {o['epoch'] + 1:>5} {o['lr'][0]:>10.4g} {o['lr'][1]:>10.4g} "
                     f"{loss_rel[worst_loss]:>9.1e} {weight_rel[worst_weight]:>10.1e} {update[worst_update]:>9.1e}  "
                     f"{worst_loss} / {worst_weight}")
        if loss_rel[worst_loss] > RTOL:
            failures.append(f"iteration {k + 1}: loss {worst_loss} ours {o['losses'][worst_loss]:.10g}, public "
                            f"{p['losses'][worst_loss]:.10g}")
        if weight_rel[worst_weight] > RTOL:
            failures.append(f"iteration {k + 1}: {worst_weight} {weight_rel[worst_weight]:.2e} apart (relative)")
        if update[worst_update] > ADAM_TOL:
            failures.append(f"iteration {k + 1}: Adam update of {worst_update} {update[worst_update]:.2e} lr apart")
        before_o, before_p = o["state"], p["state"]
    if len(ours["steps"]) != len(public["steps"]):
        failures.append(f"iterations: ours {len(ours['steps'])}, public {len(public['steps'])}")
    return table, failures


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The shared weights, our run without a planted mistake, and the public run driven by it."""
    from inade.models.vgg import _features  # noqa: PLC0415

    root, folder = Path(PUBLIC) / "datasets" / "coco_stuff", tmp_path_factory.mktemp("runs")
    opt, cfg = ours_options(root, folder)
    torch.manual_seed(0)
    vgg = _features()  # a random VGG19 in torchvision's layout, for both
    with public_code_imported(vgg):
        trainer, weights = initial_weights(cfg, opt, root, folder, vgg)
        ours = run_ours(root, folder / "ours", weights)
        public = run_public(trainer, opt, cfg, ours)
    public["initial"] = {f"{n}.{k}": v for n in ("G", "E", "D") for k, v in weights[n].items()}
    return {"root": root, "weights": weights, "ours": ours, "public": public}


def print_table(title: str, table: list[str], failures: list[str]) -> None:
    print(f"\n{title}\n" + "\n".join(table) + ("\n" + "\n".join(failures[:6]) if failures else "\nall within tolerance"))


def test_ten_iterations_equal_the_public_training(reference):
    """On the shipped samples as they are: their instance maps have raw ids that span classes
    (COCO's stuff pixels keep their label value as id, objects are numbered 0, 1, …)."""
    table, failures = compare(reference["ours"], reference["public"])
    print_table(f"ours against the public code on {reference['root']}, {STEPS} iterations, float64", table, failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_planted_mistake_fails_the_comparison(reference, plant, tmp_path):
    ours = run_ours(reference["root"], tmp_path, reference["weights"], plant=plant)
    table, failures = compare(ours, reference["public"])
    print_table(f"planted: {plant}", table, failures)
    assert failures, f"the comparison did not notice: {plant}"


# ---------------------------------------------------------------------------
# The stand-in transforms against torchvision's own
# ---------------------------------------------------------------------------


def test_stand_in_transforms_equal_torchvision():
    """The stand-in's label (nearest, no normalisation) and image (bicubic, normalised) pipelines
    give torchvision's tensors bit for bit on the shipped samples."""
    tvt = real_torchvision_transforms()
    if tvt is None:
        pytest.skip("torchvision does not import here: the stand-in transforms are not checked against it")
    src = Path(PUBLIC) / "datasets" / "coco_stuff"
    ours = StandInTransforms()
    for f in sorted((src / "train_label").glob("*.png"))[:4]:
        for path, method, normalize in ((f, Image.NEAREST, False), (src / "train_inst" / f.name, Image.NEAREST, False),
                                        (src / "train_img" / f.with_suffix(".jpg").name, Image.BICUBIC, True)):
            img = Image.open(path)
            img = img.convert("RGB") if normalize else img
            pipelines = []
            for t in (tvt, ours):
                steps = [t.Resize([LOAD, LOAD + 9], interpolation=method), t.Lambda(lambda im: im.crop((3, 5, 35, 37))),
                         t.Lambda(lambda im: im.transpose(Image.FLIP_LEFT_RIGHT)), t.ToTensor()]
                if normalize:
                    steps.append(t.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
                pipelines.append(t.Compose(steps)(img))
            assert pipelines[0].dtype == pipelines[1].dtype and torch.equal(pipelines[0], pipelines[1]), path
