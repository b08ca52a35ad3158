"""A progress bar on stderr for runs that take more than a second.

Drawn only when the stream is a terminal and the run is not quiet; nothing
appears for runs that finish within ``delay`` seconds, so short runs and CI
logs stay clean. The bar is erased when the run ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Call ``update(label)`` once per result; ``close()`` at the end."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        delay: float = 1.0,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.delay = delay
        self.width = width
        self.clock = clock
        self.start = clock()
        self.done = 0
        self.drawn = False
        self._last = -1.0

    def update(self, label: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        now = self.clock()
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

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
            self.drawn = False
