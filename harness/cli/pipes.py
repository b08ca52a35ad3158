"""Output into a closed pipe: ``python -m harness --list | head`` stops the output, not the
command.

Once the reader of stdout (or stderr) has gone, Python raises BrokenPipeError at the next
write, and again when the interpreter flushes the stream on exit. ``closed_pipes_dropped``
drops whatever is written after that, points the file descriptor at the null device so the
final flush succeeds, and lets the command finish: a run still writes its ``--report``
files and exits with its own code.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO


class _DropAfterClosedPipe:
    """A text stream that passes writes to ``stream`` until its reader goes, then drops them."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self._reader_went()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._reader_went()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def __getattr__(self, attr: str) -> object:  # encoding, errors, buffer, ...
        return getattr(self.stream, attr)

    def _reader_went(self) -> None:
        self.reader_gone = True
        try:
            fd = self.stream.fileno()
        except (OSError, ValueError):  # not a file (pytest's capture): nothing to redirect
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)  # what is still buffered, and the flush on exit, go nowhere
        finally:
            os.close(devnull)


@contextlib.contextmanager
def closed_pipes_dropped() -> Iterator[None]:
    """Within the block, writes to a stdout or stderr whose reader has gone are dropped."""
    saved = sys.stdout, sys.stderr
    out, err = _DropAfterClosedPipe(sys.stdout), _DropAfterClosedPipe(sys.stderr)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        out.flush()  # what is still buffered, before the interpreter's own flush on exit
        err.flush()
        if sys.stdout is out:
            sys.stdout = saved[0]
        if sys.stderr is err:
            sys.stderr = saved[1]
