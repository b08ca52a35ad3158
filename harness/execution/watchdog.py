"""``--timeout`` without ``--isolate``: run one adapter call in a thread and stop waiting for it.

The call runs in a fresh daemon thread; the harness waits at most ``seconds``
and then reports ``timeout`` and moves on. Limits of a thread-based timeout,
which is why ``--isolate`` exists:

- the hung call is abandoned, not killed: it keeps its thread, its CPU and its
  memory until the harness exits, and may still change the adapter's state;
- a C call that holds the GIL (``ctypes.PyDLL``, some extensions) blocks the
  harness itself, so no timeout can be reported at all;
- an adapter whose state is tied to one thread (thread-local streams or
  contexts) sees each call on a different thread.

Under ``--isolate`` the worker process is killed instead (``harness.execution.isolate``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CallTimedOut(Exception):
    """The call ran past its time; it may still be running in its abandoned thread."""


def call_with_timeout(func: Callable[[], T], seconds: float) -> T:
    """``func()``, or CallTimedOut after ``seconds``; exceptions of ``func`` propagate."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = func()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name="lossconf-adapter-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CallTimedOut(f"still running after {seconds:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
