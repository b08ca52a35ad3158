"""A process that imports torch once and forks vocab-parallel rank processes on request.

A rank started as a fresh interpreter imports torch first: about 2 s of CPU, R times at
every start of a group of R ranks, and again at every restart after a rank crashed, hung
or raised alone. The launcher (``python -m harness.execution.rank_launcher PRELOAD...``)
imports the modules it is given once (torch, torch.distributed and the harness's rank
code; nothing that starts a GPU context), then forks each rank on request: a rank is
ready in milliseconds plus its own work (loading its adapters, joining the process
group). One launcher serves every group of a process (``shared``): it exits when its
pipe to the parent closes, at the latest when the parent exits.

Where forking after torch's import is not known to be safe (anywhere but Linux: CPython's
multiprocessing stopped forking on macOS, whose system libraries start threads),
``METHOD`` is ``spawn``: there is no launcher process, and each child is a fresh
interpreter (``python -m harness.execution.rank_launcher --child ...``) that imports what
it needs itself, as every rank did before the launcher.

multiprocessing's ``forkserver`` does the same as the launcher, but runs the parent's
main script again in every child (its "safe importing of the main module" rule), which a
script that calls ``harness.run(..., world_size=R)`` without an ``if __name__ ==
"__main__"`` guard does not survive; this launcher never imports the main module.

The parent's end (``Launcher``): ``fork(entry, args, log)`` returns a ``Forked``: the pid
and a ``Connection`` to the child, which calls ``entry(connection, *args)`` (``entry`` is
"module:function") with the parent's current directory, environment and ``sys.path``,
its stdout and stderr written to the file ``log``. ``Forked.kill()`` and
``Forked.wait(seconds)`` go through the launcher, the child's parent (or the spawned
child's ``Popen``): only it may reap the child, so a pid is never signalled after it was
reaped (and perhaps reused).

Messages on the launcher's pipes (parent -> launcher -> parent)::

    ("fork", entry, args, log, address, cwd, environ, path)  -> ("forked", pid)
    ("kill", pid)                                            -> ("exited", returncode)
    ("wait", pid, seconds)   (killed after ``seconds``)      -> ("exited", returncode)

returncode as ``subprocess.Popen.returncode``: the exit code, or -N for signal N.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

#: how long a forked child may take to connect back to the parent
CONNECT_SECONDS = 30.0
#: how long the launcher may take to answer (its first answer waits for its imports)
ANSWER_SECONDS = 180.0
#: how children start: forked by the launcher on Linux; elsewhere each is a fresh
#: interpreter (``spawn``), where forking after torch's import is not known to be safe
#: (CPython's multiprocessing stopped forking on macOS: system libraries start threads)
METHOD = "fork" if sys.platform.startswith("linux") and hasattr(os, "fork") else "spawn"


class LauncherError(Exception):
    """The launcher could not start, or stopped answering."""


class Forked:
    """One child of the launcher, as the parent sees it (``proc``: a spawned child's)."""

    def __init__(
        self,
        launcher: Launcher,
        pid: int,
        conn: Connection,
        proc: subprocess.Popen | None = None,
    ) -> None:
        self.launcher, self.pid, self.conn, self.proc = launcher, pid, conn, proc
        self.returncode: int | None = None  # set once the launcher has reaped it

    @property
    def alive(self) -> bool:
        """Not reaped, and its connection has said nothing unasked (EOF when it died)."""
        if self.returncode is not None or self.conn.closed:
            return False
        try:
            return not self.conn.poll(0)
        except OSError:
            return False

    def kill(self) -> int:
        """SIGKILL (unless it has exited already), reap; its returncode."""
        self.conn.close()
        if self.returncode is None and self.proc is not None:
            self.proc.kill()
            self.returncode = self.proc.wait()
        elif self.returncode is None:
            self.returncode = self.launcher.request(("kill", self.pid))
        return self.returncode

    def wait(self, seconds: float) -> int:
        """Reap it once it exits, killing it after ``seconds``; its returncode."""
        if self.returncode is None and self.proc is not None:
            try:
                self.returncode = self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.returncode = self.proc.wait()
        elif self.returncode is None:
            self.returncode = self.launcher.request(("wait", self.pid, seconds))
        return self.returncode


class Launcher:
    """The parent's end of one launcher process (``method='spawn'``: none; each child is an
    interpreter of its own, started by ``fork`` too)."""

    def __init__(self, preload: tuple[str, ...], method: str | None = None) -> None:
        self.preload, self.method = preload, method or METHOD
        self.owner = os.getpid()  # a forked copy of this process must not share the pipes
        self._folder = tempfile.mkdtemp(prefix="lossconf-launcher-")  # mode 0700
        self._address = os.path.join(self._folder, "socket")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self._address)
        self._listener.listen(64)
        self.proc: subprocess.Popen | None = None
        if self.method == "spawn":
            return
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(to_child_r), str(to_parent_w), *preload],
            pass_fds=(to_child_r, to_parent_w),
            stdin=subprocess.DEVNULL,
            # what the ranks print goes to their log files; the launcher's own warnings (of
            # an import) would only clutter the run's output
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(to_parent_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(to_parent_r, writable=False)

    @property
    def alive(self) -> bool:
        if self.proc is None:
            return self._listener.fileno() != -1
        return self.proc.poll() is None and not self._send.closed

    def request(self, message: tuple) -> Any:
        """Send one request and return the launcher's answer (LauncherError if it died)."""
        try:
            self._send.send(message)
            if not self._recv.poll(ANSWER_SECONDS):
                assert self.proc is not None
                self.proc.kill()
                self.close()
                raise LauncherError(f"the rank launcher did not answer within {ANSWER_SECONDS:g} s")
            kind, value = self._recv.recv()
        except (EOFError, OSError) as e:
            self.close()
            raise LauncherError(f"the rank launcher stopped: {type(e).__name__}: {e}") from e
        if kind == "error":
            raise LauncherError(value)
        return value

    def fork(self, entry: str, args: tuple, log: str) -> Forked:
        """A child that runs ``entry(connection, *args)``, connected to this process."""
        proc = None
        if self.method == "spawn":
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", __name__, "--child", self._address, entry],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            pid = proc.pid
        else:
            pid = self.request(
                ("fork", entry, args, log, self._address, os.getcwd(), dict(os.environ), sys.path)
            )
        self._listener.settimeout(CONNECT_SECONDS)
        try:
            sock, _ = self._listener.accept()
        except OSError as e:  # it died before connecting: reap it, say how
            if proc is not None:
                proc.kill()
                rc = proc.wait()
            else:
                rc = self.request(("kill", pid))
            raise LauncherError(f"a started process (exit {rc}) did not connect: {e}") from e
        sock.settimeout(None)
        conn = Connection(sock.detach())
        if proc is not None:  # a spawned child takes what a forked one inherits
            conn.send((args, sys.path))
        return Forked(self, pid, conn, proc)

    def close(self) -> None:
        """End the launcher (its pipe closes); children still connected exit on their own."""
        if os.getpid() != self.owner:  # inherited through a fork: the owner closes it
            return
        self._listener.close()
        if self.proc is not None:
            self._send.close()
            self._recv.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._folder, ignore_errors=True)


_shared: Launcher | None = None


def shared(preload: tuple[str, ...]) -> Launcher:
    """This process's launcher with ``preload`` imported, started on first use (and again
    after it died or when another preload is asked for)."""
    global _shared
    if _shared is not None and _shared.owner != os.getpid():
        _shared = None  # inherited through a fork: its pipes are the parent's
    if _shared is not None and (not _shared.alive or _shared.preload != preload):
        _shared.close()
        _shared = None
    if _shared is None:
        _shared = Launcher(preload)
        atexit.register(_shared.close)
    return _shared


# -- the launcher process -------------------------------------------------------------------
def _serve(inbox: Connection, outbox: Connection) -> None:
    """Answer the parent's requests until its pipe closes."""
    reaped: dict[int, int] = {}
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            return
        kind, *rest = message
        try:
            if kind == "fork":
                outbox.send(("forked", _fork(inbox, outbox, *rest)))
            elif kind == "kill":
                outbox.send(("exited", _reap(rest[0], 0.0, reaped)))
            else:
                outbox.send(("exited", _reap(rest[0], rest[1], reaped)))
        except Exception as e:  # a fork that failed (no memory, no processes): say so
            outbox.send(("error", f"{type(e).__name__}: {e}"))


def _reap(pid: int, seconds: float, reaped: dict[int, int]) -> int:
    """Wait up to ``seconds`` for the child ``pid`` to exit, then SIGKILL it; its returncode."""
    if pid in reaped:
        return reaped[pid]
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    reaped[pid] = os.waitstatus_to_exitcode(status)
    return reaped[pid]


def _fork(
    inbox: Connection,
    outbox: Connection,
    entry: str,
    args: tuple,
    log: str,
    address: str,
    cwd: str,
    environ: dict[str, str],
    path: list[str],
) -> int:
    """Fork a child that runs ``entry``; its pid (the child never returns from here)."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        inbox.close()
        outbox.close()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        sys.path[:] = path
        conn = _connect(address)
    except BaseException:  # to its log, when that was opened
        traceback.print_exc()
    else:
        code = _child(entry, args, conn)
    finally:
        os._exit(code)


def _connect(address: str) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    return Connection(sock.detach())


def _child(entry: str, args: tuple, conn: Connection) -> int:
    """Run ``entry(conn, *args)``; the child's exit code (1, with a traceback, if it raised)."""
    try:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)(conn, *args)
        return 0
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main(argv: list[str]) -> int:
    """``python -m harness.execution.rank_launcher READ_FD WRITE_FD MODULE...``, or a spawned
    child: ``... --child ADDRESS ENTRY`` (its arguments and sys.path come through the
    connection)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if argv[0] == "--child":
        conn = _connect(argv[1])
        args, path = conn.recv()
        sys.path[:] = path
        return _child(argv[2], args, conn)
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    for name in argv[2:]:
        # a module that is missing: the children import it again and say so
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _serve(inbox, outbox)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
