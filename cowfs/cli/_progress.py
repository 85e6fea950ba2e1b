"""Per-blob progress bars for transfers (pull/push) on a TTY: one line per layer."""

from __future__ import annotations

import threading
import time
from typing import TextIO

from ..registry.pull import TransferEvent
from ._common import human_size


class MultiBar:
    """Redraws one line per blob in place (ANSI cursor movement); thread-safe."""

    def __init__(self, out: TextIO, width: int = 28) -> None:
        self.out = out
        self.width = width
        self.lines: dict[int, str] = {}
        self.drawn = 0
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, ev: TransferEvent) -> None:
        with self.lock:
            total = ev.total or 0
            frac = min(1.0, ev.done / total) if total else (1.0 if ev.status in (
                "exists", "mounted", "done") else 0.0)
            bar = "#" * int(frac * self.width)
            size = f"{human_size(ev.done)}/{human_size(total)}" if total else ""
            self.lines[ev.index] = (f"{ev.digest.removeprefix('sha256:')[:12]} "
                                    f"{ev.status:<11} [{bar:<{self.width}}] {size}")
            now = time.monotonic()
            if ev.status in ("downloading", "uploading") and now - self.last < 0.1:
                return
            self.last = now
            self._draw()

    def _draw(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        for i in sorted(self.lines):
            self.out.write(self.lines[i] + "\x1b[K\n")
        self.drawn = len(self.lines)
        self.out.flush()
