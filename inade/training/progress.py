"""The training progress line (tqdm): epoch, bar, step, losses, images per second, time spent and left.

On a terminal a tqdm bar is redrawn in place (at most four times a second);
elsewhere (a log file, CI) the same line, formatted by tqdm, is printed once
every ``print_every`` images, so a log holds whole lines rather than carriage
returns. A line reads::

    epoch 2/12 [######              ] 30/96, G_GAN 0.512 D_fake 0.301 | 12.1 img/s | 00:12<00:40
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

BAR_FORMAT = "{desc} [{bar:20}] {n_fmt}/{total_fmt}{postfix} | {elapsed}<{remaining}"
ASCII = " #"


class Progress:
    """Progress of a training run, as tqdm draws it.

    Args:
        total_steps: the run's last step.
        start_step: where this process started (resume).
        images_per_step: the global batch.
        live: a bar redrawn in place (default: when ``stream`` is a terminal).
        print_every: images between lines when not live.
        stream: where to write (default stderr).
        enabled: write nothing when False (processes other than the first).
    """

    def __init__(self, total_steps: int, start_step: int, images_per_step: int, *, live: bool | None = None,
                 print_every: int = 100, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.total, self.start, self.per_step = total_steps, start_step, images_per_step
        self.live = self.stream.isatty() if live is None else live
        self.print_every, self.enabled = print_every, enabled
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and self.live:
            self.bar = tqdm(total=total_steps, initial=start_step, file=self.stream, bar_format=BAR_FORMAT,
                            ascii=ASCII, mininterval=0.25, dynamic_ncols=True, leave=True)

    def images_per_second(self, step: int) -> float:
        """Images per second: tqdm's smoothed rate when live, else the mean since the start."""
        rate = self.bar.format_dict.get("rate") if self.bar is not None else None
        if rate is None:
            rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        return rate * self.per_step

    def postfix(self, step: int, losses: dict[str, float]) -> str:
        """``, <loss> <value> ... | <rate> img/s`` (tqdm puts the postfix after the step count)."""
        loss_text = " ".join(f"{k} {float(v):.3f}" for k, v in losses.items())
        return f", {loss_text} | {self.images_per_second(step):.1f} img/s"

    def line(self, step: int, epoch: int, epochs: int, losses: dict[str, float]) -> str:
        """The progress line for ``step`` (without a newline)."""
        return tqdm.format_meter(
            n=step, total=self.total, elapsed=time.perf_counter() - self.t0, prefix=f"epoch {epoch}/{epochs}",
            bar_format=BAR_FORMAT.replace("{postfix}", self.postfix(step, losses)), ascii=ASCII, initial=self.start,
        )

    def update(self, step: int, epoch: int, epochs: int, losses: dict[str, float]) -> None:
        """Record that ``step`` is done (losses of that step); draws or prints when due."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(f"epoch {epoch}/{epochs}", refresh=False)
            self.bar.set_postfix_str(self.postfix(step, losses)[2:], refresh=False)
            self.bar.update(step - self.bar.n)
            return
        crossed = step * self.per_step // self.print_every > (step - 1) * self.per_step // self.print_every
        if crossed or step == self.total:
            self.stream.write(self.line(step, epoch, epochs, losses) + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """Print ``text`` on its own line (above a live bar)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the live bar (its last state stays on screen)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
