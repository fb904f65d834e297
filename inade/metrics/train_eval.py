"""FID during training: the public code's ``--train_eval`` / ``--eval_epoch_freq``.

Every ``eval_epoch_freq`` epochs the generator (eval mode, encoder off, as the public
code) synthesises the test split, the images are quantised to uint8 as a saved PNG
would be, and their FID against the given statistics (the training split's, as the
public code's ``datasets/train_mu_si/<dataset_mode>/{m,s}.npy``, or a pytorch-fid
``.npz``) is computed. The noise of test layout ``i`` is the same at every evaluation,
so the curve compares generators, not noise draws. A new best FID keeps
``best_net_{G,D,E}.pth`` (the public names) and ``best.pt`` (our full checkpoint).
The curve goes to the log, to ``fid.json`` (with the best) and ``fid_curve.png``.
With ``--results_dir`` each evaluation's test images also go where the public code puts them,
``<results_dir>/<name>/test_<epoch>/images/synthesized_image/<stem>.png``, as one complete
results folder (:mod:`inade.metrics.results`), so ``python -m inade.metrics fid`` can re-check it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from inade.metrics.fid import frechet_distance, inception_features, load_statistics, statistics
from inade.metrics.inception import load_inception
from inade.metrics.weights import MetricsError
from inade.training import checkpoint as ckpt
from inade.training.latents import style_seed
from inade.utils.errors import UserError
from inade.utils.files import atomic_path, write_text_atomic


def default_stats_path(dataset_mode: str) -> Path:
    """The public code's location of the training split's statistics."""
    return Path("datasets") / "train_mu_si" / dataset_mode


class FIDTracker:
    """Loads the network and statistics once (so a missing file fails before training starts).

    Args:
        opt: training options (``eval_epoch_freq``, ``eval_stats``, ``inception_weights``,
            ``eval_how_many``, ``eval_method``, ``dataroot``, ``seed``, ``continue_train``).
        cfg: the model configuration; folder: the experiment folder; device; log.
    """

    def __init__(self, opt, cfg, folder: Path, device, log=print):
        from inade.data import build_dataset  # noqa: PLC0415
        from inade.data.folders import data_root  # noqa: PLC0415

        self.opt, self.cfg, self.folder, self.device, self.log = opt, cfg, Path(folder), torch.device(device), log
        self.freq = int(getattr(opt, "eval_epoch_freq", 10) or 10)
        if self.freq < 1:
            raise UserError(f"--eval_epoch_freq must be >= 1, got {self.freq}")
        stats = getattr(opt, "eval_stats", None) or default_stats_path(cfg.dataset_mode)
        try:
            self.reference = load_statistics(stats)
            self.net = load_inception(getattr(opt, "inception_weights", None), self.device)
        except MetricsError as e:
            raise UserError(f"--train_eval: {e}") from None
        self.stats_path = stats
        self.data = build_dataset(cfg, data_root(opt), "test", synthetic_size=getattr(opt, "synthetic_size", 512) or 512,
                                  seed=opt.seed)
        how_many = getattr(opt, "eval_how_many", None)
        self.count = len(self.data) if not how_many else min(len(self.data), int(how_many))
        self.history: list[dict] = []
        self.best = math.inf
        record = self.folder / "fid.json"
        if getattr(opt, "continue_train", False) and record.is_file():
            saved = json.loads(record.read_text())
            self.history, self.best = saved.get("history", []), float(saved.get("best_fid", math.inf))

    def due(self, epoch: int) -> bool:
        return epoch % self.freq == 0

    @torch.no_grad()
    def images(self, G) -> torch.Tensor:
        """The test split synthesised by ``G`` as uint8 ``[N, 3, H, W]`` (fixed noise per layout)."""
        from inade.data.images import to_uint8  # noqa: PLC0415

        was = G.training
        G.eval()
        out = []
        try:
            for i in range(self.count):
                item = self.data[i]
                label, inst = item["label"][None].to(self.device), item["instance"][None].to(self.device)
                L = int(inst.max()) + 1
                g = torch.Generator().manual_seed(style_seed(self.opt.seed, i, 0))
                noise = torch.randn(1, L, 2, self.cfg.noise_nc, generator=g).to(self.device)
                z = torch.randn(1, self.cfg.z_dim, generator=g).to(self.device)
                img = G(label, inst, noise=noise, z=z)[0]
                out.append(torch.from_numpy(to_uint8(img)).permute(2, 0, 1))
        finally:
            G.train(was)
        return torch.stack(out)

    def write_images(self, images: torch.Tensor, out: Path, epoch: int, step: int) -> Path:
        """The evaluation's images (uint8 ``[N, 3, H, W]``) as one results folder at ``out``."""
        from inade.data import write_image  # noqa: PLC0415
        from inade.metrics import results  # noqa: PLC0415

        results.check_replaceable(out)
        with results.fresh_folder(out) as tmp:
            for i, img in enumerate(images):
                samples = getattr(self.data, "samples", None)  # a folder data set: the source file's name
                stem = Path(samples[i].image).stem if samples is not None else f"{i:05d}"
                write_image(tmp / results.IMAGES / "synthesized_image" / f"{stem}.png", img.permute(1, 2, 0).numpy())
            results.write_manifest(tmp, {"name": self.opt.name, "epoch": epoch, "step": step, "phase": "test",
                                         "dataset_mode": self.cfg.dataset_mode, "images": len(images),
                                         "writer": "train.py --train_eval"})
        return out

    def evaluate(self, trainer, epoch: int) -> float:
        """FID of ``trainer.G`` now; keeps the best checkpoints and writes the curve."""
        images = self.images(trainer.G)
        results_dir = getattr(self.opt, "results_dir", None)
        if results_dir:
            self.write_images(images, Path(results_dir) / self.opt.name / f"test_{epoch}", epoch, trainer.step)
        feats = inception_features(images, self.net, batch_size=16)
        s = statistics(feats)
        r = self.reference
        if r.mu.shape != s.mu.shape:
            raise UserError(f"--train_eval: {self.stats_path} holds {r.mu.shape[0]}-d statistics, "
                            f"the network gives {s.mu.shape[0]} features")
        value = frechet_distance(r.mu, r.sigma, s.mu, s.sigma, method=getattr(self.opt, "eval_method", "sqrtm"))
        improved = value < self.best
        if improved:
            self.best = value
            ckpt.save_public(self.folder, "best", trainer.G, trainer.D, trainer.E)
            ckpt.atomic_save(trainer.state_dict(), self.folder / "best.pt")
        self.history.append({"epoch": epoch, "step": trainer.step, "fid": value})
        self.log(f"epoch {epoch}: FID {value:.3f} on {self.count} test images"
                 f"{' (best so far: saved best_net_G.pth, best.pt)' if improved else f' (best {self.best:.3f})'}")
        write_text_atomic(self.folder / "fid.json", json.dumps(
            {"best_fid": self.best, "history": self.history, "images": self.count}, indent=2) + "\n")
        plot_curve(self.folder / "fid_curve.png", self.history)
        return value


def plot_curve(path: Path, history: list[dict], size=(480, 300)) -> Path:
    """FID against epoch as a PNG line plot (Pillow), the best point marked."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    W, H = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 56, W - 16, 24, H - 36
    d.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    d.text((left, 4), "FID (test split) by epoch", fill=(0, 0, 0))
    if history:
        xs = [h["epoch"] for h in history]
        ys = [h["fid"] for h in history]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
        pad = 0.05 * (y1 - y0)
        y0, y1 = y0 - pad, y1 + pad

        def pt(x, y):
            return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

        pts = [pt(x, y) for x, y in zip(xs, ys)]
        if len(pts) > 1:
            d.line(pts, fill=(40, 90, 200), width=2)
        for p in pts:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=(40, 90, 200))
        b = int(np.argmin(ys))
        bx, by = pts[b]
        d.ellipse([bx - 5, by - 5, bx + 5, by + 5], outline=(200, 40, 40), width=2)
        for v, y in ((y1, top), (y0, bottom)):
            d.text((4, y - 6), f"{v:.1f}", fill=(0, 0, 0))
        d.text((left, bottom + 6), f"epoch {x0}", fill=(0, 0, 0))
        d.text((right - 60, bottom + 6), f"epoch {max(xs)}", fill=(0, 0, 0))
        d.text((left + 8, top + 6), f"best {ys[b]:.2f} (epoch {xs[b]})", fill=(200, 40, 40))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
