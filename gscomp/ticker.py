"""When a long job without a terminal prints a progress line.

On a terminal, training and encoding draw rich progress bars. Redirected to a log file (nohup,
Slurm, CI), a bar shows only its final state, so a run was silent until it ended; it prints plain
lines instead, at a pace a log can take: none for a short job, then one every ``every`` seconds
and one whenever the work moves on to another part (``key``).
"""
from __future__ import annotations

import time


class Ticker:
    def __init__(self, first: float = 5.0, every: float = 30.0):
        self.first, self.every = first, every
        self.t0 = time.monotonic()
        self._last = None  # when the last line was printed
        self._key = None  # the part of the work the last call was in

    def due(self, key=None) -> bool:
        """True when a line should be printed now (and counts it as printed)."""
        now = time.monotonic()
        moved, self._key = key != self._key, key
        if now - self.t0 < self.first:
            return False
        if self._last is None or moved or now - self._last >= self.every:
            self._last = now
            return True
        return False

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


__all__ = ["Ticker"]
