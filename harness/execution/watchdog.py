"""``--timeout`` without ``--isolate``: each adapter's calls run on one long-lived thread of
its own; the harness waits at most ``seconds`` for a call, then reports ``timeout``.

One thread per adapter, not one per call: a library may tie state to the thread that
made it (tinygrad's sqlite3 cache, thread-local streams, contexts or RNGs), so a fresh
thread per call made ``--timeout`` change results (tinygrad 0.14: 181 ``error`` results,
"SQLite objects created in a thread can only be used in that same thread"). The
adapter's thread is not the caller's, so a hung call can be abandoned.

The first call of each adapter is its warm-up (a framework's lazy imports, a first
compile, a cache being filled): it is held to ``max(seconds, WARM_UP_SECONDS)``
instead of the limit, so ``--timeout`` bounds the steady state without timing out
an adapter's one slow start; a first call that hangs is still reported, later.

Limits of a thread-based timeout, which is why ``--isolate`` exists:

- the hung call is abandoned, not killed: it keeps its thread, its CPU and its
  memory until it returns or the harness exits, and may still change the
  adapter's state; the adapter's later calls run on a new thread of their own,
  so state tied to the old thread is lost to them;
- a C call that holds the GIL (``ctypes.PyDLL``, some extensions) blocks the
  harness itself, so no timeout can be reported at all.

``load()`` runs on the caller's thread, before any call. Under ``--isolate`` the
worker process is killed instead (``harness.execution.isolate``), with the same
warm-up allowance for each worker's first call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: How long an adapter's first call may take: imports and a first compile take seconds
#: (torch, jax), a cold GPU's context and autotuning can take a minute; a hang still ends.
WARM_UP_SECONDS = 300.0


class CallTimedOut(Exception):
    """The call ran past its time; it may still be running in its abandoned thread."""


def warm_up_limit(seconds: float, warm_up: float = WARM_UP_SECONDS) -> float:
    """The limit of an adapter's first call under ``--timeout seconds``."""
    return max(seconds, warm_up)


class _Job:
    """One call handed to an adapter's thread, and what came of it."""

    def __init__(self, func: Callable[[], Any]) -> None:
        self.func: Callable[[], Any] | None = func
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def _serve(jobs: queue.SimpleQueue) -> None:
    """An adapter thread's loop: run jobs in order until a ``None`` arrives."""
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            assert job.func is not None
            job.value = job.func()
        except BaseException as e:  # handed to the caller's thread
            job.error = e
        finally:
            job.func = None  # drop the call's references (the adapter, its inputs)
            job.done.set()
        del job


class _Lane:
    """One adapter's thread and its queue of calls; replaced after a call is abandoned."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.calls = 0
        self._jobs: queue.SimpleQueue | None = None

    def submit(self, func: Callable[[], Any]) -> _Job:
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            name = f"lossconf-adapter-{self.label}"
            threading.Thread(target=_serve, args=(self._jobs,), name=name, daemon=True).start()
        self.calls += 1
        job = _Job(func)
        self._jobs.put(job)
        return job

    def abandon(self) -> None:
        """Leave the busy thread to its call (it exits after it); the next call gets a new one."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None


class Watchdog:
    """The adapters' threads of one run under ``--timeout seconds``.

    ``call(adapter, func)`` runs ``func()`` on ``adapter``'s thread (started on its
    first call) and returns its value, raises its exception, or raises CallTimedOut.
    ``close()`` lets idle threads end (a busy one ends after its call).
    """

    def __init__(self, seconds: float, *, warm_up: float = WARM_UP_SECONDS) -> None:
        self.seconds = seconds
        self.warm_up = warm_up
        self._lanes: dict[int, tuple[object, _Lane]] = {}  # id -> (the adapter, kept alive)

    def call(self, adapter: object, func: Callable[[], T]) -> T:
        entry = self._lanes.get(id(adapter))
        if entry is None:
            label = str(getattr(adapter, "name", type(adapter).__name__))
            entry = self._lanes[id(adapter)] = (adapter, _Lane(label))
        lane = entry[1]
        first = lane.calls == 0
        limit = warm_up_limit(self.seconds, self.warm_up) if first else self.seconds
        job = lane.submit(func)
        if not job.done.wait(limit):
            lane.abandon()
            what = "the adapter's first call (imports, compilation) is " if first else ""
            raise CallTimedOut(f"{what}still running after {limit:g} s")
        if job.error is not None:
            raise job.error
        return job.value

    def close(self) -> None:
        for _, lane in self._lanes.values():
            lane.abandon()
        self._lanes.clear()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
