"""``--isolate``: run adapters in worker processes, so a crash costs one result, not the run.

Each adapter gets its own worker process (``python -m harness.execution.isolate SPEC ...``)
that loads the adapter from its ``--adapter`` SPEC and runs calls sent to it
through a pipe; the checking (``harness.execution.runner.run_one``) happens in the
worker too, and the Result comes back. When a worker dies during a call
(segfault, abort, ``os._exit``, the kernel's OOM killer) that call is reported
``crash`` with the signal or exit code and the last lines the worker printed,
and a fresh worker is started for the next call. With ``--timeout`` a call
that runs too long is reported ``timeout`` and its worker is killed (unlike
the thread watchdog of ``harness.execution.watchdog``, this stops a hung C call too);
a worker's first call after each start (compiles, lazy imports) is held to the
watchdog's warm-up allowance instead (``WARM_UP_SECONDS``).
A worker is also restarted after an error that leaves a process unusable
(``CUDA error: device-side assert triggered`` makes every later CUDA call
fail).

Memory: each worker's address space is capped with ``setrlimit(RLIMIT_AS)``
(``--memory-limit``, default 8G; ``none`` turns it off). An adapter that goes
past it gets ``MemoryError`` (an ``error`` result) or dies (``crash``), and the
machine stays usable. The cap counts virtual memory, which CUDA reserves by the
terabyte: use ``--memory-limit none`` for GPU adapters.

Cost: a worker start (a Python interpreter plus the adapter's imports: about
0.3 s for NumPy, seconds for torch or jax) per adapter and after each crash,
and a pickle round trip per call. Use it for untrusted or experimental
kernels, native extensions, GPU code, and CI runs that must always produce a
report; the default in-process run is faster to start and simpler to debug.
Worker output (stdout and stderr) is not shown; its last lines go into the
message of a ``crash``.

``IsolatedPool.run_one`` has the signature of ``harness.execution.runner.run_one`` and
is safe to call from several threads: each concurrent call gets its own
worker, started on demand (``--jobs`` reuses it so).
"""

from __future__ import annotations

import collections
import faulthandler
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from harness.errors import AdapterLoadError, InternalError, UsageError
from harness.execution.registry import load
from harness.execution.results import Result, Status
from harness.execution.runner import run_one
from harness.execution.watchdog import warm_up_limit

if TYPE_CHECKING:
    from harness.adapters import Adapter
    from harness.cases.model import Case

DEFAULT_MEMORY_LIMIT = 8 * 2**30
#: errors after which a process cannot be trusted: its worker is replaced
POISONING_ERRORS = re.compile(r"CUDA error|device-side assert|illegal memory access")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory_limit(text: str | None) -> int | None:
    """``--memory-limit``: '8G', '512M', '1.5G', a byte count, or 'none' (None: no limit)."""
    if text is None:
        return DEFAULT_MEMORY_LIMIT
    if text.strip().lower() in ("none", "0", "off"):
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"--memory-limit {text!r}: expected a size such as 4G, 512M or 'none'")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < 256 * 2**20:
        raise UsageError(
            f"--memory-limit {text!r}: below 256M a worker cannot even start Python and NumPy"
        )
    return value


def format_size(n: int | None) -> str:
    if n is None:
        return "none"
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % (_UNITS[unit] // 16) == 0:
            return f"{n / _UNITS[unit]:g}{unit}"
    return str(n)


@dataclass(frozen=True)
class IsolationSettings:
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT


def describe_exit(returncode: int) -> str:
    """'killed by SIGSEGV (signal 11)' or 'exited with code 3'."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by {name} (signal {-returncode})"
    return f"exited with code {returncode}"


def describe_death(returncode: int, lines: list[str]) -> str:
    """How a process ended, with what its last output ``lines`` say: faulthandler's report
    (the error line and the innermost frames: where it died) or else its last lines."""
    text = describe_exit(returncode)
    fatal = next((i for i, x in enumerate(lines) if x.startswith("Fatal Python error")), None)
    if fatal is not None:
        frames = [x.strip() for x in lines[fatal:] if x.strip().startswith("File ")]
        text += "; " + " | ".join([lines[fatal], *frames[:2]])
    elif lines:
        text += "; its last output: " + " | ".join(lines[-3:])
    return text


class Worker:
    """One worker process for one adapter; restarted on demand after it dies or is killed."""

    def __init__(self, spec: str, name: str, settings: IsolationSettings) -> None:
        self.spec = spec
        self.name = name
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self._last_case: object = None
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._reader: threading.Thread | None = None
        self.starts = 0
        self.calls = 0  # since the last start: the first is the worker's warm-up

    # -- life cycle -------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process (the adapter loads in the background; see ``wait_ready``)."""
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        self.proc = subprocess.Popen(
            self.command(to_child_r, to_parent_w),
            pass_fds=(to_child_r, to_parent_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.environment(),
        )
        os.close(to_child_r)
        os.close(to_parent_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(to_parent_r, writable=False)
        self._last_case = None
        self._tail.clear()
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self.starts += 1
        self.calls = 0

    def command(self, read_fd: int, write_fd: int) -> list[str]:
        """The worker's command line, given the pipe ends it reads calls from and writes to."""
        limit = self.settings.memory_limit or 0
        return [sys.executable, "-m", "harness.execution.isolate", self.spec, str(read_fd),
                str(write_fd), str(limit)]  # fmt: skip

    def environment(self) -> dict[str, str] | None:
        """The worker's environment (None: this process's)."""
        return None

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._tail.append(line)

    def wait_ready(self) -> str | None:
        """None when the adapter loaded in the worker, else why not."""
        assert self._recv is not None
        try:
            kind, value = self._recv.recv()
        except (EOFError, OSError):
            return f"the worker {self._died()} while loading the adapter"
        return None if kind == "ready" else str(value)

    def start(self) -> str | None:
        self.launch()
        problem = self.wait_ready()
        if problem is not None:
            self.stop(kill=True)
        return problem

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """End the process: close its pipe (it exits), or kill it when busy or hung."""
        if self.proc is None:
            return
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=1)
        self.proc = self._send = self._recv = None

    def _died(self) -> str:
        """'was killed by SIGSEGV (signal 11); Fatal Python error: ... | File ...'."""
        assert self.proc is not None
        rc = self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=1)  # let the last lines arrive
        return describe_death(rc, list(self._tail))

    # -- calls ------------------------------------------------------------------------------
    def run_one(self, case: Case, dtype: str, timeout: float | None) -> Result:
        """Run one call in the worker (starting it if needed) and return its Result."""
        if not self.alive:
            self.stop()
            problem = self.start()
            if problem is not None:
                return _result(case, self.name, dtype, Status.CRASH, f"restart failed: {problem}")
        assert self._send is not None and self._recv is not None
        limit = timeout if timeout is None or self.calls else warm_up_limit(timeout)
        self.calls += 1
        start = time.perf_counter()
        try:
            self._send.send(("run", None if case is self._last_case else case, dtype))
            self._last_case = case
            ready = self._recv.poll(limit)
        except (BrokenPipeError, ConnectionResetError, OSError):
            ready = True  # it died: recv below says so
        if not ready:
            self.stop(kill=True)
            r = _result(case, self.name, dtype, Status.TIMEOUT, "")
            r.message = f"--timeout {timeout:g}: the worker process was killed, and restarted"
            if limit != timeout:
                r.message += f" (its first call, allowed {limit:g} s for imports and compiles)"
            r.seconds = time.perf_counter() - start
            return r
        try:
            kind, value = self._recv.recv()
        except (EOFError, OSError):
            how, _, detail = self._died().partition("; ")
            message = f"the worker process {how} during this call (restarted for the next)"
            message += f"; {detail}" if detail else ""
            self.stop()
            r = _result(case, self.name, dtype, Status.CRASH, message)
            r.seconds = time.perf_counter() - start
            return r
        if kind == "internal_error":
            raise InternalError(value)
        result: Result = value
        if result.status is Status.ERROR and POISONING_ERRORS.search(result.message):
            result.notes.append("the worker was restarted: this error leaves a process unusable")
            self.stop(kill=True)
        return result


def _result(case: Case, adapter: str, dtype: str, status: Status, message: str) -> Result:
    try:
        features = tuple(sorted(case.features()))
    except Exception:  # the case itself is broken; the worker would have said so
        features = ()
    return Result(
        case_id=case.id,
        adapter=adapter,
        dtype=dtype,
        status=status,
        message=message,
        case_hash=case.content_hash,
        tags=case.tags,
        features=features,
    )


class IsolatedPool:
    """Workers per adapter; ``run_one(case, adapter, dtype, timeout=...)`` as in the runner."""

    def __init__(self, specs: list[str], adapters: list, settings: IsolationSettings) -> None:
        self.settings = settings
        self.spec_of = {a.name: s for a, s in zip(adapters, specs, strict=True)}
        self._idle: dict[str, list[Worker]] = {a.name: [] for a in adapters}
        self._all: list[Worker] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """One worker per adapter, started together; AdapterLoadError if one cannot load."""
        workers = [self._new(name) for name in self._idle]
        for w in workers:
            w.launch()
        for w in workers:
            problem = w.wait_ready()
            if problem is not None:
                self.close()
                raise AdapterLoadError(
                    f"--isolate: adapter {w.name!r} cannot run in a worker process "
                    f"(--memory-limit {format_size(self.settings.memory_limit)}): {problem}"
                )
            self._idle[w.name].append(w)

    def _new(self, name: str) -> Worker:
        w = Worker(self.spec_of[name], name, self.settings)
        self._all.append(w)
        return w

    def run_one(
        self, case: Case, adapter: Adapter, dtype: str, *, timeout: float | None = None
    ) -> Result:
        with self._lock:
            idle = self._idle[adapter.name]
            worker = idle.pop() if idle else self._new(adapter.name)
        try:
            result = worker.run_one(case, dtype, timeout)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM during the call: the worker may still be busy with it, so it is
            # not idle, and close() kills it instead of waiting for it to finish
            raise
        except BaseException:
            with self._lock:
                self._idle[adapter.name].append(worker)
            raise
        with self._lock:
            self._idle[adapter.name].append(worker)
        # a crash or a timeout, made here, belongs to the adapter's dialect too
        result.semantics = adapter.semantics
        return result

    def close(self) -> None:
        """Stop every worker; a busy one (interrupted run) is killed."""
        with self._lock:
            idle = {id(w) for ws in self._idle.values() for w in ws}
            workers = list(self._all)
        for w in workers:
            w.stop(kill=id(w) not in idle)

    def __enter__(self) -> IsolatedPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the worker process ---------------------------------------------------------------------
def worker_main(argv: list[str]) -> int:
    """``python -m harness.execution.isolate SPEC READ_FD WRITE_FD MEMORY_LIMIT``: serve calls until EOF."""
    spec, read_fd, write_fd, limit = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    faulthandler.enable()  # a crash prints where it happened; the parent quotes it
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        adapter = load(spec)
    except BaseException as e:
        outbox.send(("load_error", f"{type(e).__name__}: {e}"))
        return 1
    outbox.send(("ready", None))
    case: Case | None = None
    while True:
        try:
            _, new_case, dtype = inbox.recv()
        except (EOFError, OSError):
            return 0
        if new_case is not None:
            case = new_case
        assert case is not None  # the first call carries its case; later ones may repeat it
        try:
            result = run_one(case, adapter, dtype)
        except InternalError as e:  # a bug of ours: the parent stops the run with exit 2
            outbox.send(("internal_error", str(e)))
            continue
        if limit and "MemoryError" in result.message:
            result.message += f" (the worker's --memory-limit is {format_size(limit)})"
        outbox.send(("result", result))


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
