"""A dependency-free progress line: step, epoch, losses, images per second, time left.

On a terminal the line is redrawn in place (carriage return, at most a few times
a second); elsewhere (a log file, CI) one full line is printed every
``print_every`` images.
"""
from __future__ import annotations

import sys
import time


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Args:
        total_steps: the run's last step.
        start_step: where this process started (resume).
        images_per_step: the global batch.
        live: redraw one line in place (default: when ``stream`` is a terminal).
        print_every: images between lines when not live.
    """

    def __init__(self, total_steps: int, start_step: int, images_per_step: int, *, live: bool | None = None,
                 print_every: int = 100, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.total, self.start, self.per_step = total_steps, start_step, images_per_step
        self.live = self.stream.isatty() if live is None else live
        self.print_every, self.enabled = print_every, enabled
        self.t0 = self.last_draw = time.perf_counter()
        self.window = []  # (time, step) of recent steps, for the rate

    def rate(self, step: int) -> float:
        """Images per second over the last few seconds."""
        now = time.perf_counter()
        self.window.append((now, step))
        while len(self.window) > 2 and now - self.window[0][0] > 10.0:
            self.window.pop(0)
        (t_a, s_a), (t_b, s_b) = self.window[0], self.window[-1]
        if t_b <= t_a:
            return (step - self.start) * self.per_step / max(now - self.t0, 1e-9)
        return (s_b - s_a) * self.per_step / (t_b - t_a)

    def line(self, step: int, epoch: int, epochs: int, losses: dict[str, float]) -> str:
        ips = self.rate(step)
        left = (self.total - step) * self.per_step / ips if ips > 0 else 0.0
        width = 20
        filled = int(width * step / max(1, self.total))
        bar = "#" * filled + "." * (width - filled)
        loss_text = " ".join(f"{k} {v:.3f}" for k, v in losses.items())
        return (f"epoch {epoch}/{epochs} [{bar}] {step}/{self.total} | {loss_text} | "
                f"{ips:.1f} img/s | {_hms(time.perf_counter() - self.t0)}<{_hms(left)}")

    def update(self, step: int, epoch: int, epochs: int, losses: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.live:
            now = time.perf_counter()
            if now - self.last_draw < 0.25 and step != self.total:
                self.rate(step)
                return
            self.last_draw = now
            self.stream.write("\r" + self.line(step, epoch, epochs, losses) + "\x1b[K")
        else:
            prev = (step - 1) * self.per_step // self.print_every
            if step * self.per_step // self.print_every == prev and step != self.total:
                self.rate(step)
                return
            self.stream.write(self.line(step, epoch, epochs, losses) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print ``text`` on its own line (breaking a live line)."""
        if not self.enabled:
            return
        self.stream.write(("\n" if self.live else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.live:
            self.stream.write("\n")
            self.stream.flush()
