"""Progress of a long loop that a person can see: a tqdm bar on a terminal, and one plain line
every ``every`` seconds when the output goes to a log (CI, ``nohup``, a scheduler), where a bar
shows nothing until it ends. Lines go to stderr and end with a newline, so they never overwrite
or hide an error printed after them. The line's shape matches the corpus builder's progress log
(``pipelines.transforms``): counts, rate, ``ETA 1m05s``.
"""
from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m05s``; infinity -> ``unknown``."""
    if seconds == float("inf"):
        return "unknown"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """``update(n)`` per step, ``note(text)`` for the latest figures (loss), ``line(text)`` for an
    event that should always show (an evaluation). ``show``: None -> a bar when stderr is a
    terminal, plain lines otherwise; False -> nothing (other ranks)."""

    def __init__(self, total: int, initial: int = 0, label: str = "train", unit: str = "step",
                 show: bool | None = None, every: float = 30.0, stream=None, clock=time.monotonic):
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.total, self.done, self.label, self.unit, self.every = total, initial, label, unit, every
        self.enabled = show is not False
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = tqdm(total=total, initial=initial, disable=not (self.enabled and tty), unit=unit,
                        dynamic_ncols=True, file=self.stream)
        self.plain = self.enabled and not tty  # every 0: a line per update
        self.clock = clock
        self.start = self.last = clock()
        self.first = initial
        self.figures = ""

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        now = self.clock()
        if self.plain and now - self.last >= self.every:
            self.last = now
            self._print(self.status(now))

    def note(self, **figures) -> None:
        self.figures = ", ".join(f"{k} {v}" for k, v in figures.items())
        self.bar.set_postfix(figures)

    def line(self, text: str) -> None:
        """An event line (shown with the bar too, above it)."""
        if not self.enabled:
            return
        if self.bar.disable:
            self._print(f"{self.label}: {text}")
        else:
            self.bar.write(f"{self.label}: {text}", file=self.stream)

    def status(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = (self.done - self.first) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100 * self.done / self.total if self.total else 100.0
        text = (f"{self.label}: {self.unit} {self.done:,}/{self.total:,} ({pct:.0f}%), "
                f"{rate:.2f} {self.unit}s/s, elapsed {duration(elapsed)}, ETA {duration(eta)}")
        return text + (f", {self.figures}" if self.figures else "")

    def close(self) -> None:
        self.bar.close()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
