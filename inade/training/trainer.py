"""The INADE training loop (``train.py``), readable top to bottom.

One iteration, as the public code does it (tzt101/INADE ``pix2pix_model.py``):

1. generator step: the encoder maps the real image to per-instance ``(μ, log σ²)``,
   the generator synthesises from the remapped noise, and ``G`` and ``E`` descend on
   hinge GAN + feature matching (+ VGG) + KL, with ``D`` frozen;
2. discriminator step: a fresh fake from the updated ``G`` (no gradients), and ``D``
   descends on the hinge loss of fake and real.

Adam with TTUR (``G`` at lr/2, ``D`` at 2·lr, betas (0, 0.9)), constant for
``niter`` epochs then the public code's epoch-end linear decay over ``niter_decay``
epochs (:mod:`inade.training.schedule`). All
randomness of a step -- the data order, each sample's crop and flip, each
sample's noise and ``z`` -- is a function of the seed, the step and the sample's
index, so a resumed run and a multi-process run reproduce a single uninterrupted
process exactly (up to the order of floating-point sums).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

import torch

import inade
from inade.data import EpochSampler, SyntheticScenes, build_dataset
from inade.data.folders import data_root
from inade.models.discriminator import Discriminator
from inade.models.losses import INADELoss, loss_dtype
from inade.training import checkpoint as ckpt
from inade.training.distributed import (Distributed, any_process, cleanup, mean_over_processes, setup,
                                        sync_norm_statistics, wrap)
from inade.training.grids import save_grid
from inade.training.latents import D_PASS, G_PASS, draw_latents
from inade.training.logs import TrainingLog
from inade.training.options import format_options, parse_options
from inade.training.progress import Progress
from inade.training.schedule import learning_rates, rates_at_step
from inade.utils.errors import UserError, exit_status, one_line, run_command
from inade.utils.files import exclusive_lock, write_text_atomic

GRID_LAYOUTS = 4
GRID_STYLES = 6


def _ignore_stop_signals(_worker_id: int) -> None:
    """Data workers ignore Ctrl-C and SIGTERM (a terminal, Slurm or systemd signal the whole process group):
    the main process finishes its step, saves and shuts them down (a worker killed by it was a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_deterministic(device: torch.device) -> None:
    """Deterministic algorithms only. Without this, CPU ``index_put_`` with accumulation (the
    backward of the norms' class-table lookup) adds in thread order, so two runs with several
    threads drift apart by rounding; with one thread they agree anyway."""
    import os  # noqa: PLC0415

    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def resolve_amp(name: str, device: torch.device, log=None) -> torch.dtype | None:
    """Autocast dtype for ``--amp`` (``auto``: bfloat16 where supported, else float16).

    Only where bfloat16 pays: on a CPU without bfloat16 arithmetic
    (:func:`inade.utils.cpu.cpu_has_bf16`) ``bf16`` is a :class:`UserError` saying how much
    slower it would run, and ``auto`` stays in float32 (``None``) with a note to ``log``."""
    from inade.utils.cpu import cpu_has_bf16, no_bf16_reason  # noqa: PLC0415

    if name == "none":
        return None
    cpu_bf16 = device.type != "cpu" or cpu_has_bf16()
    if name == "auto":
        if not cpu_bf16:
            if log is not None:
                log(f"note: mixed precision off, running in float32: {no_bf16_reason()}")
            return None
        bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float16
    if name == "bf16" and not cpu_bf16:
        raise UserError(f"--amp bf16: {no_bf16_reason()}; use --amp none (float32), or --amp auto to use bfloat16 "
                        "only where the CPU has it")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


@contextlib.contextmanager
def _writing(folder: Path, what: str):
    """A failed write (full disk, folder removed, permission taken away) is one line naming the
    folder and the files; the files being replaced are intact (every write is atomic)."""
    try:
        yield
    except OSError as err:
        raise UserError(f"{folder}: cannot write {what} ({err.strerror or type(err).__name__}); the files already "
                        "there are intact") from None


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and
    save; a second Ctrl-C aborts at once."""

    def __init__(self, log):
        self.requested, self.log, self._old = False, log, {}
        self.signum = None  # the first signal received: the exit status is 128 + it

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = self.signum or signum
        self.log(f"\n{signal.Signals(signum).name}: stopping after this step and saving (Ctrl-C again to abort)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """Builds the data, networks, optimisers; runs and checkpoints the loop.

    Args:
        opt: options from :func:`inade.training.options.parse_options`.
        cfg: the model :class:`inade.Config`.
        dist: this process's place in a ``torchrun`` job (default: alone).
        device: where to train.
    """

    stopped_by = None  # the signal that stopped run() early (the program then exits 128 + it)

    def __init__(self, opt, cfg, dist: Distributed | None = None, device: torch.device | str = "cpu", log=None):
        self.opt, self.cfg = opt, cfg
        self.dist = dist or Distributed()
        self.device = torch.device(device)
        if log is None:
            log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if self.dist.is_main else (lambda *a: None)
        self.log = log
        self.amp_dtype = resolve_amp(opt.amp, self.device, self.log)  # before any work: bf16 may be refused
        self.folder = Path(opt.checkpoints_dir) / opt.name
        self.logs = TrainingLog(self.folder, name=opt.name, tf_log=bool(getattr(opt, "tf_log", False)),
                                html_page=not getattr(opt, "no_html", False),
                                images_per_step=opt.batchSize) if self.dist.is_main else None
        if getattr(opt, "deterministic", False):
            make_deterministic(self.device)

        # Part 1. Data: a sampler that splits each global batch across processes.
        self.dataset = build_dataset(cfg, data_root(opt), opt.phase, synthetic_size=opt.synthetic_size,
                                     seed=opt.seed, max_dataset_size=opt.max_dataset_size)
        world = self.dist.world_size
        if opt.batchSize % world:
            raise UserError(f"--batchSize {opt.batchSize} must be a multiple of the {world} processes")
        self.local_batch = opt.batchSize // world
        if len(self.dataset) < opt.batchSize:
            raise UserError(f"--batchSize {opt.batchSize}: the data set has only {len(self.dataset)} samples "
                            "(one global batch must fit in it)")
        self.sampler = EpochSampler(len(self.dataset), self.local_batch, seed=opt.seed, rank=self.dist.rank,
                                    world_size=world, shuffle=not opt.serial_batches)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.local_batch, sampler=self.sampler, num_workers=opt.nThreads,
            pin_memory=self.device.type == "cuda", worker_init_fn=_ignore_stop_signals if opt.nThreads else None,
            persistent_workers=opt.nThreads > 0,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.epochs = opt.niter + opt.niter_decay
        self.total_steps = self.epochs * self.steps_per_epoch
        if opt.max_steps is not None:
            self.total_steps = min(self.total_steps, opt.max_steps)

        # Part 2. Networks (same initial weights in every process), losses, optimisers.
        torch.manual_seed(opt.seed)
        self.G = inade.Generator(cfg).to(self.device)
        self.E = inade.NoiseEncoder(cfg).to(self.device) if cfg.use_vae else None
        self.D = Discriminator(cfg).to(self.device)
        if self.dist.enabled:
            sync_norm_statistics(self.G, self.dist.group)
        self.crit = INADELoss(cfg, vgg_weights=opt.vgg_weights).to(self.device)
        lr_G, lr_D, betas = learning_rates(cfg)
        g_params = list(self.G.parameters()) + (list(self.E.parameters()) if self.E is not None else [])
        self.opt_G = torch.optim.Adam(g_params, lr=lr_G, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr_D, betas=betas)
        fp16 = self.amp_dtype == torch.float16
        self.scaler_G = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.scaler_D = torch.amp.GradScaler(self.device.type, enabled=fp16)

        # Part 3. What each step calls: DDP wrappers for the updated networks,
        # the bare modules where no gradient flows to them.
        self.G_train, self.D_train = wrap(self.G, self.dist, self.device), wrap(self.D, self.dist, self.device)
        self.E_train = wrap(self.E, self.dist, self.device) if self.E is not None else None
        self.G_fake, self.E_fake, self.D_frozen = self.G, self.E, self.D
        if opt.compile:
            self.G_train, self.D_train, self.D_frozen = (torch.compile(m) for m in (self.G_train, self.D_train, self.D))
            self.G_fake = torch.compile(self.G)
            if self.E is not None:
                self.E_train, self.E_fake = torch.compile(self.E_train), torch.compile(self.E)
        self.step = 0
        self._finite = []  # (what, finite?) of this step's losses and gradients, see check_finite
        self.last_saved_step = None
        self.last_grid_step = None
        self.grid_batch = self._grid_layouts() if self.dist.is_main else None
        self.fid_tracker = None
        if getattr(opt, "train_eval", False) and self.dist.is_main:
            from inade.metrics.train_eval import FIDTracker  # noqa: PLC0415

            self.fid_tracker = FIDTracker(opt, cfg, self.folder, self.device, self.log)

    # ------------------------------------------------------------------------------
    # One iteration
    # ------------------------------------------------------------------------------
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def latents(self, indices, num_instances: int, which: int):
        noise, z = draw_latents(indices, num_instances, self.cfg.noise_nc, self.cfg.z_dim,
                                seed=self.opt.seed, step=self.step, which=which)
        return noise.to(self.device, non_blocking=True), z.to(self.device, non_blocking=True)

    def generator_step(self, label, inst, real, noise, z, sketch=None) -> dict:
        """Update ``G`` (and ``E``) on the GAN, feature-matching, VGG and KL losses; ``D`` frozen."""
        self.D.requires_grad_(False)
        with self.autocast():
            enc = self.E_train(real, inst, noise.shape[1]) if self.E is not None else None
            fake = self.G_train(label, inst, noise=noise, z=z, remap=enc, sketch=sketch)
            enc = tuple(t.to(loss_dtype(t)) for t in enc) if enc is not None else None  # float32 only under autocast
            losses = self.crit.generator_losses(self.D_frozen, label, inst, fake, real, enc)
        if "KLD" in losses and self.dist.enabled:
            # The KL is a sum over the batch; DDP averages gradients over processes.
            losses["KLD"] = losses["KLD"] * self.dist.world_size
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler_G.scale(sum(losses.values())).backward()
        self._note_finite(losses, "G" + ("/E" if self.E is not None else ""), self.opt_G, self.scaler_G)
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        self.D.requires_grad_(True)
        return {k: v.detach() for k, v in losses.items()}

    def discriminator_step(self, label, inst, real, noise, z, sketch=None) -> dict:
        """Update ``D`` on the hinge loss of a fresh fake (from the updated ``G``) and the real image."""
        with torch.no_grad(), self.autocast():
            enc = self.E_fake(real, inst, noise.shape[1]) if self.E is not None else None
            fake = self.G_fake(label, inst, noise=noise, z=z, remap=enc, sketch=sketch)
        with self.autocast():
            losses = self.crit.discriminator_losses(self.D_train, label, inst, fake, real)
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler_D.scale(sum(losses.values())).backward()
        self._note_finite(losses, "D", self.opt_D, self.scaler_D)
        self.scaler_D.step(self.opt_D)
        self.scaler_D.update()
        return {k: v.detach() for k, v in losses.items()}

    def rates(self, step: int | None = None) -> tuple[float, float]:
        """``(lr_G, lr_D)`` of iteration ``step`` (default: the next one), from the step alone
        (:func:`inade.training.schedule.rates_at_step`), so a resumed run lands on the same rate."""
        return rates_at_step(self.step if step is None else step, self.steps_per_epoch, lr=self.cfg.lr,
                             no_TTUR=self.cfg.no_TTUR, niter=self.opt.niter, niter_decay=self.opt.niter_decay,
                             every_iter=getattr(self.opt, "lr_decay_every_iter", False))

    def train_step(self, batch) -> dict:
        """One iteration on this process's share of the global batch; returns its losses."""
        label = batch["label"].to(self.device, non_blocking=True)
        inst = batch["instance"].to(self.device, non_blocking=True)
        real = batch["image"].to(self.device, non_blocking=True)
        sketch = batch["sketch"].to(self.device, non_blocking=True) if "sketch" in batch else None  # --add_sketch
        indices = batch["index"].tolist()
        num_instances = int(batch["instance"].max()) + 1
        for opt, lr in zip((self.opt_G, self.opt_D), self.rates()):
            for group in opt.param_groups:
                group["lr"] = lr
        losses, self._finite = {}, []
        if self.step % self.steps_per_epoch % self.opt.D_steps_per_G == 0:  # the public code counts within the epoch
            losses.update(self.generator_step(label, inst, real, *self.latents(indices, num_instances, G_PASS),
                                              sketch=sketch))
        losses.update(self.discriminator_step(label, inst, real, *self.latents(indices, num_instances, D_PASS),
                                              sketch=sketch))
        self.step += 1
        self.check_finite(losses)
        return losses

    def _note_finite(self, losses: dict, nets: str, optimizer, scaler) -> None:
        """Record, on the device (no sync), whether this sub-step's losses and, outside fp16's
        GradScaler, its gradients are finite; :meth:`check_finite` reads them after the step."""
        for k, v in losses.items():
            self._finite.append((f"loss {k}", torch.isfinite(v.detach().float()).all()))
        if scaler.is_enabled():  # fp16: the scaler skips a step whose scaled gradients overflow (normal)
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self._finite.append((f"gradient of {nets}", torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()))

    def check_finite(self, losses: dict) -> None:
        """Stop (:class:`UserError`) when a loss, or a gradient outside fp16's GradScaler, was NaN or
        inf in this step (in any process), naming the step, the first bad value and the losses.

        One device-to-host sync per step. Nothing is saved after a bad step: the last checkpoint stays."""
        flags = self._finite
        ok = bool(torch.stack([f for _, f in flags]).all()) if flags else True
        if not any_process(not ok, self.dist, self.device):
            return
        shown = ", ".join(f"{k} {float(v):.4g}" for k, v in losses.items())
        if ok:
            what = "a loss or gradient is NaN or inf in another process"
        else:
            first = next(name for name, f in flags if not bool(f))
            what = f"the {first} is NaN or inf (losses: {shown})"
        if self.last_saved_step is not None:
            then = (f"the last checkpoint ({self.folder / 'latest.pt'}, step {self.last_saved_step}) is kept as it "
                    "was: resume with --continue_train and a lower --lr")
        else:
            then = "this run saved nothing: start again with a lower --lr"
        raise UserError(f"training diverged at step {self.step}: {what}; {then} (see docs/TRAINING.md)")

    # ------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train until ``total_steps`` (or Ctrl-C), saving along the way; returns the output folder."""
        opt = self.opt
        if self.dist.is_main:
            self.prepare_folder()
            with _writing(self.folder, "loss_log.txt and metrics.jsonl"):
                if dropped := self.logs.start(self.step):
                    self.log(f"note: dropped {dropped} log line(s) past step {self.step} (the run they belong to "
                             "was stopped before it saved them)")
        gb = opt.batchSize
        progress = Progress(self.total_steps, self.step, gb, print_every=opt.print_freq,
                            live=False if opt.no_progress else None, enabled=self.dist.is_main)
        self.log(self.describe())
        t0, start = time.perf_counter(), self.step
        interrupted = False
        with StopRequest(progress.message if self.dist.is_main else (lambda *a: None)) as stop:
            try:
                while self.step < self.total_steps and not interrupted:
                    epoch, first = divmod(self.step, self.steps_per_epoch)
                    self.sampler.set_epoch(epoch, first)
                    for batch in self.loader:
                        losses = self.train_step(batch)
                        progress.update(self.step, self.step // self.steps_per_epoch + (self.step % self.steps_per_epoch > 0),
                                        self.epochs, losses)
                        self.log_step(losses)
                        self.after_step(progress)
                        if any_process(stop.requested, self.dist, self.device):
                            interrupted = True
                            break
                        if self.step >= self.total_steps:
                            break
            finally:
                progress.close()
                if self.logs is not None:
                    self.logs.flush()
        if interrupted:  # another process's signal stops this one too: SIGTERM, as torchrun's agent sends
            self.stopped_by = stop.signum or signal.SIGTERM
        self.save(progress)
        if self.dist.is_main:
            if self.last_grid_step != self.step:
                self.write_grid()
            with _writing(self.folder, "web/index.html"):
                self.logs.finish(self.step)
            seconds = time.perf_counter() - t0
            done = self.step - start
            how = "interrupted" if interrupted else "finished"
            self.log(f"{how} at step {self.step}/{self.total_steps}: {done} steps, {done * gb} images in "
                     f"{seconds:.1f} s ({done * gb / max(seconds, 1e-9):.1f} img/s)")
            self.log(self.outputs_text(interrupted))
        return self.folder

    def prepare_folder(self) -> None:
        """Create the output folder (an unwritable one is a :class:`UserError` naming
        ``--checkpoints_dir``), remove the temporary files of a save that ``kill -9`` cut
        short, and write ``opt.txt``."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            removed = ckpt.remove_orphan_temporaries(self.folder)
            write_text_atomic(self.folder / "opt.txt", format_options(self.opt, self.cfg) + "\n")
        except OSError as err:
            why = err.strerror or type(err).__name__
            raise UserError(f"--checkpoints_dir {self.opt.checkpoints_dir}: cannot write {self.folder} ({why})") from None
        if removed:
            self.log(f"note: removed {len(removed)} temporary file(s) of an interrupted save in {self.folder}: "
                     + ", ".join(p.name for p in removed))

    def log_step(self, losses: dict) -> None:
        """``loss_log.txt``, ``metrics.jsonl`` and TensorBoard every ``--print_freq`` images and at the
        last step, with the losses averaged over the processes (every process calls this)."""
        gb, freq = self.opt.batchSize, self.opt.print_freq
        if (self.step * gb) // freq == ((self.step - 1) * gb) // freq and self.step != self.total_steps:
            return
        values = mean_over_processes(losses, self.dist)
        if self.logs is not None:
            epoch = (self.step - 1) // self.steps_per_epoch + 1
            with _writing(self.folder, "loss_log.txt and metrics.jsonl"):
                self.logs.record(self.step, epoch, values, self.opt_G.param_groups[0]["lr"],
                                 self.opt_D.param_groups[0]["lr"], self.steps_per_epoch)

    def after_step(self, progress: Progress) -> None:
        """Grids, checkpoints and epoch snapshots at their frequencies (counted in images, as the public code)."""
        opt, gb = self.opt, self.opt.batchSize

        def crossed(freq):
            return (self.step * gb) // freq > ((self.step - 1) * gb) // freq

        if crossed(opt.display_freq) and self.dist.is_main:
            self.write_grid()
        if crossed(opt.save_latest_freq) and self.step < self.total_steps:
            self.save(progress)
        if self.step % self.steps_per_epoch == 0:
            epoch = self.step // self.steps_per_epoch
            keep = opt.save_epoch_freq > 0 and (epoch % opt.save_epoch_freq == 0 or epoch == self.epochs)
            if keep and self.dist.is_main:
                with _writing(self.folder, f"{epoch}_net_*.pth"):
                    ckpt.save_public(self.folder, str(epoch), self.G, self.D, self.E)
            if getattr(self.opt, "train_eval", False) and epoch % self.opt.eval_epoch_freq == 0:
                if self.fid_tracker is not None:
                    best = self.fid_tracker.best
                    fid = self.fid_tracker.evaluate(self, epoch)
                    with _writing(self.folder, "loss_log.txt and metrics.jsonl"):
                        self.logs.record_fid(self.step, epoch, fid, best)
                if self.dist.enabled:
                    torch.distributed.barrier()

    # ------------------------------------------------------------------------------
    # Checkpoints and samples
    # ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        plain = (bool, int, float, str, type(None))
        return {
            "format": ckpt.FORMAT,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "G": ckpt.cpu_state_dict(self.G),
            "E": ckpt.cpu_state_dict(self.E) if self.E is not None else None,
            "D": ckpt.cpu_state_dict(self.D),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "scaler_G": self.scaler_G.state_dict(),
            "scaler_D": self.scaler_D.state_dict(),
            "rng": ckpt.rng_state(),
            "config": self.cfg.to_dict(),
            "options": {k: v for k, v in vars(self.opt).items() if isinstance(v, plain)},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != ckpt.FORMAT:
            raise ValueError(f"not a train.py checkpoint (format {state.get('format')!r}, expected {ckpt.FORMAT!r})")
        if (state["E"] is None) != (self.E is None):
            raise ValueError("the checkpoint was trained " + ("without" if state["E"] is None else "with")
                             + " the encoder: pass the same --use_vae/--no_vae")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.E is not None:
            self.E.load_state_dict(state["E"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.scaler_G.load_state_dict(state["scaler_G"])
        self.scaler_D.load_state_dict(state["scaler_D"])
        self.step = int(state["step"])
        ckpt.set_rng_state(state["rng"])
        if state.get("steps_per_epoch") != self.steps_per_epoch:
            self.log(f"note: the checkpoint had {state.get('steps_per_epoch')} steps per epoch, this run has "
                     f"{self.steps_per_epoch} (batch size or dataset changed): the data order differs from an uninterrupted run")

    def resume(self) -> None:
        """``--continue_train``: ``latest.pt`` when present, else the public code's weight files."""
        full = self.folder / "latest.pt"
        if full.exists():
            state = ckpt.load_checkpoint(full)
            try:
                self.load_state_dict(state)
            except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as err:
                differ = ckpt.config_differences(state.get("config") if isinstance(state, dict) else None, self.cfg)
                why = f"it was trained with {', '.join(differ)}" if differ else one_line(err)
                raise UserError(f"{full}: does not fit this run ({why})") from err
            if self.dist.is_main:  # a kill between the files of one save leaves them a save apart: align them
                with _writing(self.folder, "latest_net_*.pth"):
                    ckpt.save_public(self.folder, "latest", self.G, self.D, self.E)
            self.log(f"resumed from {full} at step {self.step}")
        else:
            ckpt.load_public(self.folder, self.opt.which_epoch, self.G, self.D, self.E, log=self.log)
            self.log(f"continuing from {self.folder}/{self.opt.which_epoch}_net_*.pth (weights only; optimisers start fresh)")

    def save(self, progress: Progress | None = None) -> None:
        """``latest.pt`` and the public ``latest_net_*.pth`` (process 0 writes; all wait)."""
        if self.dist.is_main:
            state = self.state_dict()
            bad = ckpt.first_non_finite(state)
            if bad is not None:  # belt and braces: check_finite stops a diverging run before this
                raise UserError(f"step {self.step}: not saving {self.folder / 'latest.pt'}: tensor {bad} holds NaN or "
                                "inf values; the files on disk are kept as they were")
            with _writing(self.folder, "the logs, curves.png and web/index.html"):
                self.logs.save(self.step)  # the logs reach the disk before the checkpoint that follows them
            with _writing(self.folder, "latest.pt and latest_net_*.pth"):
                ckpt.atomic_save(state, self.folder / "latest.pt", checked=True)
                ckpt.save_public(self.folder, "latest", self.G, self.D, self.E)
            self.last_saved_step = self.step
        if self.dist.enabled:
            torch.distributed.barrier()

    def _grid_layouts(self):
        k = min(GRID_LAYOUTS, len(self.dataset))
        if isinstance(self.dataset, SyntheticScenes):  # held-out scenes
            source = SyntheticScenes(k, crop_size=self.dataset.size[1], aspect_ratio=self.dataset.size[1] / self.dataset.size[0],
                                     seed=self.opt.seed, phase="test")
        else:
            source = self.dataset
        return torch.utils.data.default_collate([source[(i, 0)] for i in range(k)])

    def write_grid(self) -> Path | None:
        self.last_grid_step = self.step
        if getattr(self.cfg, "add_sketch", False):  # the grids' Synthesizer draws no sketches
            return None
        b = self.grid_batch
        path = self.folder / "samples" / f"step_{self.step:07d}.png"
        with self.autocast(), _writing(self.folder, path.name):
            save_grid(path, self.G, self.cfg, b["label"].to(self.device), b["instance"].to(self.device),
                      b["image"].to(self.device), num_styles=GRID_STYLES, seed=self.opt.seed)
        if self.logs is not None:
            with _writing(self.folder, "web/index.html"):
                self.logs.grid(self.step, path)
        return path

    # ------------------------------------------------------------------------------
    # Text
    # ------------------------------------------------------------------------------
    def describe(self) -> str:
        n = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        amp = {None: "float32", torch.bfloat16: "bfloat16 autocast", torch.float16: "float16 autocast + GradScaler"}
        return (
            f"INADE on {self.opt.dataset_mode} ({len(self.dataset)} samples, {tuple(self.cfg.output_size)} px), "
            f"{self.device} x{self.dist.world_size}, {amp[self.amp_dtype]}\n"
            f"G {n(self.G) / 1e6:.2f} M, E {n(self.E) / 1e6:.2f} M, D {n(self.D) / 1e6:.2f} M parameters; "
            f"batch {self.opt.batchSize}, {self.steps_per_epoch} steps/epoch, {self.epochs} epochs "
            f"({self.opt.niter} + {self.opt.niter_decay} decay), steps {self.step} -> {self.total_steps}\n"
            f"outputs: {self.folder}"
        )

    def outputs_text(self, interrupted: bool) -> str:
        f = self.folder
        lines = [
            f"checkpoint (full resume): {f / 'latest.pt'}" + ("  -> continue with --continue_train" if interrupted else ""),
            f"public-format weights:    {f / 'latest_net_G.pth'}, {f / 'latest_net_D.pth'}"
            + (f", {f / 'latest_net_E.pth'}" if self.E is not None else ""),
            f"sample grids:             {f / 'samples'}/ (rows: random styles; one instance resampled)",
            f"test images:              python -m inade.test --checkpoints_dir {self.opt.checkpoints_dir} "
            f"--name {self.opt.name}  (writes results/{self.opt.name}/test_latest/)",
            f"then the metrics:         python -m inade.metrics all results/{self.opt.name}/test_latest",
        ]
        return "\n".join(lines)


def main(argv=None) -> int:
    """``train.py``: 0 when the run ends; a user error (missing dataroot or file, a class id
    outside ``label_nc``, an unreadable checkpoint, a bad option) prints one line
    ``error: …`` on stderr and returns 2."""
    return run_command(_train, argv)


def refuse_to_overwrite(opt) -> None:
    """A fresh run (no ``--continue_train``) into a folder that holds a trained model stops
    before writing anything, unless ``--overwrite`` (then the files are replaced only when
    the new run saves)."""
    if opt.continue_train or getattr(opt, "overwrite", False):
        return
    folder = Path(opt.checkpoints_dir) / opt.name
    found = ckpt.existing_checkpoints(folder)
    if found:
        raise UserError(f"{folder} already holds a trained model ({', '.join(p.name for p in found[:3])}"
                        f"{' ...' if len(found) > 3 else ''}): resume it with --continue_train, start a new one "
                        "with another --name, or replace it with --overwrite")


LOCK = ".train.lock"


@contextlib.contextmanager
def hold_experiment(opt, dist: Distributed):
    """One ``train.py`` per experiment folder: process 0 holds ``<folder>/.train.lock`` (a kernel lock,
    dropped when the process ends in any way, ``kill -9`` included) while it runs; a second ``train.py``
    into the folder, ``--continue_train`` or not, stops with one line naming the running one."""
    if not dist.is_main:  # under torchrun process 0 writes every file, and holds the folder for all
        yield
        return
    folder = Path(opt.checkpoints_dir) / opt.name
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise UserError(f"--checkpoints_dir {opt.checkpoints_dir}: cannot write {folder} ({why})") from None
    try:
        with exclusive_lock(folder / LOCK, f"{folder}: another train.py is training this experiment (two would "
                            "overwrite each other's checkpoints); wait for it to end or stop it (Ctrl-C saves it)"):
            yield
    finally:
        if created:  # a run that stopped before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                folder.rmdir()


def _train(argv=None) -> int:
    opt, cfg, notes = parse_options(argv)
    dist, device, note = setup(opt.gpu_ids)  # every option value (the device too) before any folder state
    held = contextlib.ExitStack()
    try:
        held.enter_context(hold_experiment(opt, dist))
        refuse_to_overwrite(opt)
        trainer = Trainer(opt, cfg, dist, device)
        for line in notes + ([note] if note else []):
            trainer.log(f"note: {line}")
        if opt.continue_train:
            trainer.resume()
        trainer.run()
    finally:
        held.close()
        cleanup(dist)
    return exit_status(trainer.stopped_by) if trainer.stopped_by else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
