"""Training progress: a tqdm bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Shows step/total, loss, latest eval accuracy, lr, tokens/s and ETA.

    ``enabled=False`` (non-zero ranks, quiet mode) prints nothing. On a
    terminal a tqdm bar is drawn; otherwise one line is printed every
    ``every_s`` seconds and at the end, so logs of batch jobs stay short.
    """

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True,
                 stream: TextIO | None = None, every_s: float = 10.0):
        self.total = total
        self.step = initial
        self.start_step = initial
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self.started = time.monotonic()
        # The first line comes every_s after the first step, not at it: start-up (thread pools,
        # caches, a resume's data position) is slow, and a line from it showed "864 tok/s ETA 23:19".
        self._last_line = self.started
        self._first_update: tuple[float, int] | None = None
        self._eval_acc: float | None = None
        self._eval_step: int | None = None
        self._bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, file=self.stream, unit="step",
                             dynamic_ncols=True, smoothing=0.05)

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    @property
    def eval_acc(self) -> float | None:
        return self._eval_acc

    @eval_acc.setter
    def eval_acc(self, value: float | None) -> None:
        """The latest held-out accuracy; remembered with the step it was measured at."""
        self._eval_acc, self._eval_step = value, self.step

    def _fields(self, loss: float, lr: float, tokens_per_s: float) -> str:
        acc = "-" if self._eval_acc is None else f"{self._eval_acc:.4f}"
        if self._eval_acc is not None and self._eval_step != self.step:
            acc += f" (step {self._eval_step})"  # not this step's: the last line must not look current
        return f"loss {loss:.4f}  eval_acc {acc}  lr {lr:.2e}  {tokens_per_s:,.0f} tok/s"

    def update(self, step: int, *, loss: float, lr: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        done = step - self.step
        self.step = step
        if self._bar is not None:
            self._bar.set_postfix_str(self._fields(loss, lr, tokens_per_s), refresh=False)
            self._bar.update(done)
            return
        now = time.monotonic()
        if self._first_update is None:
            self._first_update = (now, step)  # the speed is measured from here, after start-up
            self._last_line = now
        if now - self._last_line >= self.every_s or step >= self.total:
            self._last_line = now
            t0, s0 = self._first_update
            rate = (step - s0) / (now - t0) if now > t0 and step > s0 else 0.0
            eta = _eta(0) if step >= self.total else _eta((self.total - step) / rate) if rate > 0 else "?"
            print(f"step {step}/{self.total}  {self._fields(loss, lr, tokens_per_s)}  ETA {eta}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def more_time(hours: float) -> str:
    """"2.5 more hours", "12 more minutes", or "less than a minute more" (never "0.0 more hours")."""
    if hours >= 1.0:
        return f"{hours:,.1f} more hours"
    minutes = hours * 60.0
    if minutes >= 1.0:
        return f"{minutes:.0f} more minute{'s' if round(minutes) != 1 else ''}"
    return "less than a minute more"
