"""Progress on stderr: a bar on a terminal, a line every ``interval`` seconds in a log.

On a terminal the bar appears for runs that take more than ``delay`` seconds and is erased
when the run ends, so short runs stay clean. When stderr is not a terminal (a CI log, a
file) a bar's carriage returns would garble the log, and a long run printing nothing looks
hung: every ``interval`` seconds one line says how far the run is, how long it has taken
and about how long is left. Nothing at all with ``-q`` (``enabled=False``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def duration(seconds: float) -> str:
    """``45s``, ``2m30s``, ``1h02m``: a whole number of the two largest units."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Call ``update(label)`` once per result; ``close()`` at the end."""

    #: seconds between two lines in a log (not a terminal)
    interval = 30.0

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        interactive: bool | None = None,
        delay: float = 1.0,
        width: int = 30,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``interactive``: draw a bar (default: whether ``stream`` is a terminal)."""
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        if interactive is None:
            interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.interactive = interactive
        self.delay = delay
        self.width = width
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.done = 0
        self.drawn = False
        self._last = -1.0
        self._next_line = self.start + self.interval

    def update(self, label: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        now = self.clock()
        if not self.interactive:
            if now >= self._next_line:
                self._log_line(now)
            return
        if now - self.start < self.delay:
            return
        if self.done < self.total and now - self._last < 0.1:
            return  # at most ten redraws a second
        self._last = now
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total} {label}"[:100]
        self.stream.write("\r" + text.ljust(100))
        self.stream.flush()
        self.drawn = True

    def _log_line(self, now: float) -> None:
        elapsed = now - self.start
        left = elapsed / self.done * (self.total - self.done)
        self.stream.write(
            f"lossconf: {self.done}/{self.total} results ({100 * self.done // self.total}%), "
            f"{duration(elapsed)} elapsed, about {duration(left)} left\n"
        )
        self.stream.flush()
        self._next_line = now + self.interval

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
            self.drawn = False
