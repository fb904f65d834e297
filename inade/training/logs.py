"""What a training run leaves to be watched by: the public code's ``loss_log.txt``, a
machine-readable ``metrics.jsonl``, TensorBoard summaries (``--tf_log``), and a results
page ``web/index.html`` with ``curves.png``.

In ``checkpoints/<name>/`` (the public code's places, tzt101/INADE ``util/visualizer.py``):

* ``loss_log.txt``: a header line per run, then one line per ``--print_freq`` images::

      ================ Training Loss (Mon Dec  7 15:52:03 2026) ================
      (epoch: 1, iters: 256, time: 0.031) GAN: 0.912 GAN_Feat: 1.204 VGG: 2.871 KLD: 0.412 D_fake: 0.853 D_real: 0.902 lr_G: 1.000e-04 lr_D: 4.000e-04 img/s: 32.1 step: 32

  as the public code writes it (``iters``: images into the epoch, ``time``: seconds per image,
  ``, FID: …`` inside the brackets once ``--train_eval`` has measured one), with the learning
  rates, the images per second and the global step added at the end. An evaluation adds the
  public line ``(epoch: 2, curr FID: 81.234, previous best FID: 90.100) step: 128``.
* ``metrics.jsonl``: the same, one JSON object a line: ``{"step", "epoch", "iters", "time",
  "img_s", "lr_G", "lr_D", <every loss>}``, and ``{"step", "epoch", "FID", "best_FID"}`` per evaluation.
* ``logs/`` (``--tf_log``): TensorBoard scalars ``loss/<name>``, ``lr/G``, ``lr/D``,
  ``speed/img_s``, ``FID``, and the sample grid as the image ``samples`` at every ``--display_freq``.
* ``curves.png`` (losses, learning rates, FID or speed against the step; matplotlib) and
  ``web/index.html`` (the curves, the latest records as a table, then the sample grids newest
  first with the step and losses under each; not with ``--no_html``), redrawn at every save.

Every step is logged once even across ``kill -9`` and ``--continue_train``: on start the
lines past the step the run starts from are dropped (the files rewritten atomically) and
TensorBoard's writer purges the events past it (``purge_step``). A record goes to TensorBoard
(flushed), then ``loss_log.txt``, then ``metrics.jsonl``, each line appended and flushed at once,
so a record in ``metrics.jsonl`` is in all three; all are synced to disk before each checkpoint.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import time
from pathlib import Path

from inade.utils.errors import UserError
from inade.utils.files import atomic_path, write_text_atomic

LOSS_LOG = "loss_log.txt"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
WEB = "web"
TENSORBOARD = "logs"
SAMPLES = "samples"
TABLE_ROWS = 50  # latest records shown as a table on the page
_STEP_AT_END = re.compile(r"\bstep: (\d+)\s*$")
_GRID_NAME = re.compile(r"^step_(\d+)\.png$")


# ----------------------------------------------------------------------------------
# Lines
# ----------------------------------------------------------------------------------
def header_line(now: float | None = None) -> str:
    """The public code's line at the start of every run."""
    return "================ Training Loss (%s) ================" % time.strftime("%c", time.localtime(now))


_BOOKKEEPING = ("step", "epoch", "iters", "time", "img_s", "lr_G", "lr_D", "FID", "best_FID")


def losses_of(record: dict) -> dict[str, float]:
    """The losses of a ``metrics.jsonl`` loss record (every key that is not bookkeeping)."""
    return {k: v for k, v in record.items() if k not in _BOOKKEEPING}


def loss_line(record: dict, fid: float | None = None) -> str:
    """A ``loss_log.txt`` line of a loss record (see the module docstring); ``fid``: the latest FID."""
    head = f"(epoch: {record['epoch']}, iters: {record['iters']}, time: {record['time']:.3f}"
    head += f", FID: {fid:.3f}) " if fid is not None else ") "
    body = "".join(f"{k}: {v:.3f} " for k, v in losses_of(record).items())
    return (f"{head}{body}lr_G: {record['lr_G']:.3e} lr_D: {record['lr_D']:.3e} "
            f"img/s: {record['img_s']:.1f} step: {record['step']}")


def fid_line(record: dict) -> str:
    """The public code's evaluation line of an FID record, with the step."""
    return (f"(epoch: {record['epoch']}, curr FID: {record['FID']:.3f}, previous best FID: "
            f"{record['best_FID']:.3f}) step: {record['step']}")


def line_step(line: str) -> int | None:
    """The step a ``loss_log.txt`` line ends with (None for a header or a public-code line)."""
    m = _STEP_AT_END.search(line)
    return int(m.group(1)) if m else None


def _whole_lines(path: Path) -> list[str]:
    """The complete lines of ``path`` (a last line cut short by a kill is left out)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return lines[:-1]  # the text after the last newline is empty or cut short


def read_metrics(folder: str | os.PathLike) -> list[dict]:
    """The records of ``folder/metrics.jsonl`` in order (a line cut short by a kill is skipped)."""
    out = []
    for line in _whole_lines(Path(folder) / METRICS):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return out


def drop_after(folder: str | os.PathLike, step: int) -> int:
    """Rewrite (atomically) ``loss_log.txt`` and ``metrics.jsonl`` without the lines past ``step``
    and without a line cut short; returns how many lines were dropped. Lines without a step
    (headers, a public-code log) are kept."""
    folder, dropped = Path(folder), 0
    for name, step_of in ((LOSS_LOG, line_step), (METRICS, _json_step)):
        path = folder / name
        if not path.exists():
            continue
        raw = path.read_bytes()
        lines = _whole_lines(path)
        kept = [ln for ln in lines if (s := step_of(ln)) is None or s <= step]
        text = "".join(ln + "\n" for ln in kept)
        if text.encode("utf-8") != raw:
            dropped += len(lines) - len(kept) + (not raw.endswith(b"\n") and bool(raw))
            write_text_atomic(path, text)
    return dropped


def _json_step(line: str) -> int | None:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None if not line.strip() else 1 << 62  # an empty line is kept, a damaged one dropped
    return rec.get("step") if isinstance(rec, dict) and isinstance(rec.get("step"), int) else None


# ----------------------------------------------------------------------------------
# The picture and the page
# ----------------------------------------------------------------------------------
def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def draw_curves(path: str | os.PathLike, records: list[dict], title: str = "") -> Path | None:
    """``curves.png``: generator losses, discriminator losses, learning rates, and FID (when
    measured, else images/s) against the step. None when matplotlib is missing or nothing is logged."""
    losses = [r for r in records if "lr_G" in r]
    fids = [r for r in records if "FID" in r]
    if not losses or not have_matplotlib():
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(10, 6.4), dpi=100)  # fixed margins: a constrained layout doubles the drawing time
    fig.subplots_adjust(left=0.07, right=0.98, top=0.91, bottom=0.08, hspace=0.22, wspace=0.17)
    FigureCanvasAgg(fig)
    (g_ax, d_ax), (lr_ax, last_ax) = fig.subplots(2, 2, sharex=True)
    steps = [r["step"] for r in losses]
    names = list(dict.fromkeys(k for r in losses for k in losses_of(r)))
    for ax, keep, what in ((g_ax, lambda k: not k.startswith("D_"), "generator losses"),
                           (d_ax, lambda k: k.startswith("D_"), "discriminator losses")):
        for k in filter(keep, names):
            ax.plot(*zip(*[(r["step"], r[k]) for r in losses if k in r]), label=k, lw=1.2)
        ax.set_title(what, fontsize=10)
        if ax.lines:
            ax.legend(fontsize=8, loc="upper right")
    lr_ax.plot(steps, [r["lr_G"] for r in losses], label="lr_G", lw=1.2)
    lr_ax.plot(steps, [r["lr_D"] for r in losses], label="lr_D", lw=1.2)
    lr_ax.set_title("learning rates", fontsize=10)
    lr_ax.legend(fontsize=8, loc="upper right")
    if fids:
        last_ax.plot([r["step"] for r in fids], [r["FID"] for r in fids], "o-", color="C3", lw=1.2)
        last_ax.set_title("FID (test split)", fontsize=10)
    else:
        last_ax.plot(steps, [r["img_s"] for r in losses], color="C2", lw=1.2)
        last_ax.set_title("images / s", fontsize=10)
    for ax in (lr_ax, last_ax):
        ax.set_xlabel("step")
    for ax in (g_ax, d_ax, lr_ax, last_ax):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def grids(folder: str | os.PathLike, upto: int | None = None) -> list[tuple[int, Path]]:
    """``(step, path)`` of the run's sample grids (``samples/step_<step>.png``), newest first;
    with ``upto``, only those of steps up to it (a resumed run's grids past its start are stale)."""
    found = []
    for p in (Path(folder) / SAMPLES).glob("step_*.png"):
        m = _GRID_NAME.match(p.name)
        if m and (upto is None or int(m.group(1)) <= upto):
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _losses_text(rec: dict | None) -> str:
    if rec is None:
        return "no losses logged yet"
    shown = " · ".join(f"{k} {v:.3f}" for k, v in losses_of(rec).items())
    return f"losses at step {rec['step']}: {shown} · lr_G {rec['lr_G']:.2e} · lr_D {rec['lr_D']:.2e}"


_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;"
          "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}"
          "img.grid{width:100%;max-width:1100px;image-rendering:pixelated}figure{margin:1.5em 0}figcaption{font-size:13px;"
          "color:#444}.note{color:#666;font-size:13px}")


def write_page(folder: str | os.PathLike, records: list[dict], *, name: str, upto: int | None = None,
               refresh: int = 0) -> Path:
    """``web/index.html``: curves (when ``curves.png`` exists), the latest records as a table, and the
    sample grids newest first, each with its step and the losses logged at or before it."""
    folder = Path(folder)
    web = folder / WEB
    losses = [r for r in records if "lr_G" in r]
    fids = {r["step"]: r for r in records if "FID" in r}
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(name)}: training</title>", f"<style>{_STYLE}</style>"]
    if refresh:
        parts.append(f'<meta http-equiv="refresh" content="{int(refresh)}">')
    parts += ["</head><body>", f"<h1>Experiment name = {e(name)}</h1>"]
    last = losses[-1] if losses else None
    parts.append(f'<p class="note">{len(losses)} records, last at step {last["step"] if last else "—"}; '
                 f'written {e(time.strftime("%Y-%m-%d %H:%M:%S"))}; full log: <a href="../{LOSS_LOG}">{LOSS_LOG}</a>, '
                 f'<a href="../{METRICS}">{METRICS}</a></p>')
    if (folder / CURVES).exists():
        parts.append(f'<h2>Curves</h2><a href="../{CURVES}"><img id="curves" src="../{CURVES}" alt="training curves" '
                     'style="max-width:100%"></a>')
    else:
        parts.append('<p class="note">No curves: install matplotlib (pip install "inade[logs]", or pip install '
                     'matplotlib), then python -m inade.training.report on this run\'s folder redraws this page.</p>')
    parts.append(_table(losses[-TABLE_ROWS:][::-1], fids))
    shown = grids(folder, upto)
    parts.append(f"<h2>Sample grids ({len(shown)}, newest first)</h2>")
    for step, path in shown:
        rec = _at_or_before(losses, step)
        epoch = f" · epoch {rec['epoch']}" if rec else ""
        src = e(f"../{SAMPLES}/{path.name}")
        parts.append(f'<figure id="step-{step}"><h3>step {step}{epoch}</h3><a href="{src}"><img class="grid" src="{src}" '
                     f'alt="sample grid at step {step}"></a><figcaption>{e(_losses_text(rec))}</figcaption></figure>')
    parts.append("</body></html>")
    return write_text_atomic(web / "index.html", "\n".join(parts) + "\n")


def _at_or_before(records: list[dict], step: int) -> dict | None:
    best = None
    for r in records:
        if r["step"] <= step:
            best = r
    return best


def _table(rows: list[dict], fids: dict) -> str:
    if not rows:
        return '<p class="note">Nothing logged yet.</p>'
    names = list(dict.fromkeys(k for r in rows for k in losses_of(r)))
    head = ["step", "epoch", *names, "lr_G", "lr_D", "img/s"] + (["FID"] if fids else [])
    out = [f"<h2>Latest records</h2><table id=\"records\"><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>"]
    for r in rows:
        cells = [str(r["step"]), str(r["epoch"])] + [f"{r[k]:.3f}" if k in r else "" for k in names]
        cells += [f"{r['lr_G']:.2e}", f"{r['lr_D']:.2e}", f"{r['img_s']:.1f}"]
        if fids:
            cells.append(f"{fids[r['step']]['FID']:.2f}" if r["step"] in fids else "")
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</table>"


def redraw(folder: str | os.PathLike, *, name: str | None = None, upto: int | None = None, refresh: int = 0,
           html_page: bool = True) -> list[dict]:
    """Redraw ``curves.png`` and (``html_page``) ``web/index.html`` from ``metrics.jsonl``; returns the records."""
    folder = Path(folder)
    records = [r for r in read_metrics(folder) if upto is None or r["step"] <= upto]
    name = name or folder.name
    draw_curves(folder / CURVES, records, title=name)
    if html_page:
        write_page(folder, records, name=name, upto=upto, refresh=refresh)
    return records


# ----------------------------------------------------------------------------------
# The run's log
# ----------------------------------------------------------------------------------
def tensorboard_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``, or a :class:`UserError` saying what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
    except ImportError:
        raise UserError('--tf_log needs the tensorboard package, which comes with the "logs" extra: pip install '
                        '"inade[logs]" (in a clone: pip install -e ".[logs]"; or pip install tensorboard)') from None
    return SummaryWriter


class TrainingLog:
    """The log files of one run, written by the first process only.

    Args:
        folder: ``checkpoints/<name>``.
        name: the experiment name (the page's title).
        tf_log: write TensorBoard summaries to ``folder/logs``.
        html_page: write ``web/index.html`` (the public ``--no_html`` switches it off).
        images_per_step: the global batch (``iters`` and ``time`` count images, as the public code).
    """

    def __init__(self, folder: str | os.PathLike, *, name: str, tf_log: bool = False, html_page: bool = True,
                 images_per_step: int = 1):
        self.folder, self.name = Path(folder), name
        self.tf_log, self.html_page, self.per_step = tf_log, html_page, images_per_step
        self.writer = None
        self._files: dict[str, object] = {}
        self.records: list[dict] = []
        self.fid: float | None = None
        self.step = 0
        self._clock = (time.perf_counter(), 0)
        if tf_log:
            tensorboard_writer_class()  # a missing package stops the run before it starts

    def start(self, step: int) -> int:
        """Begin at ``step`` (0, or the checkpoint's): drop what was logged past it, write the
        header, open the TensorBoard writer. Returns how many lines were dropped."""
        dropped = drop_after(self.folder, step)
        self.records = read_metrics(self.folder)
        fids = [r for r in self.records if "FID" in r]
        self.fid = fids[-1]["FID"] if fids else None
        self.step = step
        self._line(LOSS_LOG, header_line())
        if self.tf_log:
            # events past ``step`` (of a run that was stopped before saving them) are hidden
            self.writer = tensorboard_writer_class()(log_dir=str(self.folder / TENSORBOARD), purge_step=step + 1)
        self._clock = (time.perf_counter(), step)
        return dropped

    def _line(self, name: str, text: str) -> None:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = open(self.folder / name, "a", encoding="utf-8")  # noqa: SIM115
        f.write(text + "\n")
        f.flush()  # a kill -9 loses no whole line

    def record(self, step: int, epoch: int, losses: dict[str, float], lr_G: float, lr_D: float,
               steps_per_epoch: int) -> dict:
        """Log the losses of ``step`` (floats; averaged over the processes by the caller)."""
        now = time.perf_counter()
        t0, s0 = self._clock
        images = max(step - s0, 1) * self.per_step
        seconds = max(now - t0, 1e-9)
        self._clock = (now, step)
        rec = {"step": step, "epoch": epoch, "iters": (step - (epoch - 1) * steps_per_epoch) * self.per_step,
               "time": seconds / images, "img_s": images / seconds, "lr_G": lr_G, "lr_D": lr_D}
        rec.update({k: float(v) for k, v in losses.items()})
        if self.writer is not None:
            for k, v in losses_of(rec).items():
                self.writer.add_scalar(f"loss/{k}", v, step)
            self.writer.add_scalar("lr/G", lr_G, step)
            self.writer.add_scalar("lr/D", lr_D, step)
            self.writer.add_scalar("speed/img_s", rec["img_s"], step)
            self.writer.flush()  # on disk before the lines: a record in metrics.jsonl is everywhere
        self._line(LOSS_LOG, loss_line(rec, self.fid))
        self._line(METRICS, json.dumps(rec))  # last
        self.records.append(rec)
        return rec

    def record_fid(self, step: int, epoch: int, value: float, best_before: float) -> dict:
        """Log an evaluation (``best_before``: the best FID before it, ``inf`` for none)."""
        rec = {"step": step, "epoch": epoch, "FID": float(value),
               "best_FID": float(best_before) if math.isfinite(best_before) else float(value)}
        if self.writer is not None:
            self.writer.add_scalar("FID", float(value), step)
            self.writer.flush()
        self._line(LOSS_LOG, fid_line(rec))
        self._line(METRICS, json.dumps(rec))
        self.records.append(rec)
        self.fid = float(value)
        return rec

    def grid(self, step: int, path: Path | None) -> None:
        """A sample grid was written at ``step``: TensorBoard image, and the page."""
        if path is not None and self.writer is not None:
            from inade.data.images import read_image  # noqa: PLC0415

            self.writer.add_image("samples", read_image(path), step, dataformats="HWC")
            self.writer.flush()
        self.step = step
        if self.html_page:
            write_page(self.folder, self.records, name=self.name, upto=step, refresh=60)

    def flush(self) -> None:
        """Everything logged so far to the files (TensorBoard queues its events)."""
        if self.writer is not None:
            self.writer.flush()

    def save(self, step: int) -> None:
        """Before a checkpoint of ``step`` is written: the logs on disk (synced, so the checkpoint
        never gets ahead of them), then the curves and the page."""
        for f in self._files.values():
            os.fsync(f.fileno())
        self.flush()
        draw_curves(self.folder / CURVES, self.records, title=self.name)
        if self.html_page:
            write_page(self.folder, self.records, name=self.name, upto=step, refresh=60)

    def finish(self, step: int) -> None:
        """The run ended at ``step``: the page without its auto-refresh; the files closed."""
        if self.html_page:
            write_page(self.folder, self.records, name=self.name, upto=step)
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
