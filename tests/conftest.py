"""Shared test fixtures: the command line in process (``cli``) and in a fresh interpreter
(``cli_process``), as a user runs it.

Most tests check what a command does (its logic): they call ``harness.cli.main.main`` in
this process with ``cli``, which costs no interpreter start-up and no re-import of NumPy,
torch or JAX. ``cli_process`` is for the contract of ``python -m harness`` itself (exit
codes, messages, output) and for what needs a process of its own: fresh imports, a cold
in-memory cache, signals, worker processes, ``sitecustomize`` or ``PYTHONPATH`` tricks.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.openmp import idle_threads_sleep

#: the ``pytester`` fixture, for the tests that run pytest sessions (the plugin's)
pytest_plugins = ("pytester",)

REPO = Path(__file__).resolve().parent.parent

# pytest-xdist runs one worker per core: a framework's own pool of threads in each worker only
# oversubscribes the cores (torch's small calls ran three times slower on two shared cores).
# Set before any test imports torch; the subprocesses of tests inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# After each parallel region GNU OpenMP's threads (torch's CPU kernels) spin for a while
# before they sleep, on the cores the worker's next calls (and the other worker) need: when
# the compiled oracle ran on numba's OpenMP threads, test_mutants' torch run took 9-20 s of
# CPU instead of 3 after test_oracle_compiled in the same worker. Passive threads sleep at
# once. Read when OpenMP is loaded, so set here, as the command line and the plugin set it
# (harness/openmp.py; a light import, no framework).
idle_threads_sleep()

# Every pytest-xdist worker and every subprocess of a test starts a fresh interpreter. With
# PYTHONDONTWRITEBYTECODE set, each one compiled the harness again, and pytest rewrote the
# asserts of every module of hypothesis and of this harness again (both are pytest plugins):
# 8 s of CPU a run. The suite's processes write bytecode as Python does by default, into
# ``__pycache__`` folders beside the sources (which .gitignore lists); the workers and the
# subprocesses inherit the setting, this process takes it from here on. A bytecode folder
# of the suite's own (PYTHONPYCACHEPREFIX) is no substitute: under a prefix Python reads
# bytecode from there only, so the bytecode pip wrote at install for torch, sympy, JAX,
# NumPy and the standard library went unread, and on a fresh machine every process compiled
# them again until the folder filled (11 s of CPU, 6 s of wall on a cold run).
if os.environ.get("PYTHONDONTWRITEBYTECODE"):
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    sys.dont_write_bytecode = False


# JAX compiles every program of a test (the adapters', the examples', the wrapped functions')
# with XLA again in every process, each run of the suite: that was about half the CPU of the
# JAX tests. JAX's persistent compilation cache keeps the compiled programs on disk, keyed by
# the program, the options and the jax and jaxlib versions; a program is still traced (the
# tests that count traces are unaffected) and a hit is the executable XLA would build. Its
# default threshold caches only compilations over a second, none of the tests': 0 caches all.
# Set before any test imports JAX (its configuration reads them then); subprocesses inherit
# them; values already set are kept.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(Path(tempfile.gettempdir()) / f"lossconf-tests-jax-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# lossconf's own caches (validated case files, expected values) go to a folder of the test
# suite's, not to the developer's ~/.cache/lossconf: a test run neither fills the user's
# folder nor reads what a user's runs left there. The folder is kept between runs like JAX's
# above: its entries are keyed by the case's content, the dtype and the oracle's and the
# loader's source (docs/performance.md), so a value is never read for another revision, and
# tests that need a cold cache set a folder of their own. A value already set is kept.
os.environ.setdefault(
    "LOSSCONF_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"lossconf-tests-cache-{os.getuid()}")
)


class _WorkerExit:
    """A pytest-xdist worker whose session has ended exits without tearing its interpreter
    down: freeing every module and object of torch, JAX, numba and the harness one by one took
    about 2 s of CPU a worker at the end of every run, on cores the other worker still used.

    The exit handler is registered when pytest configures the worker, before any test runs,
    so it runs after every handler registered later (they run in the reverse order): those that
    stop or wait for the processes a worker started (multiprocessing's, the rank launcher's,
    concurrent.futures') have run by then, and their CPU is still spent and counted. Of those
    registered earlier, logging's is called here; execnet's stops the gateways a worker
    opened, and it opens none. A worker whose session did not end (an internal error) exits
    as usual."""

    def __init__(self) -> None:
        self.session_ended = False

    def __call__(self) -> None:
        if not self.session_ended:
            return
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # a worker's exit status when its session ended; the controller ignores it


_worker_exit = _WorkerExit()


def pytest_configure(config: pytest.Config) -> None:
    # a pytest-xdist worker has its controller's ``workerinput``; a pytest run in a subprocess
    # of a test, which inherits the worker's environment, does not
    if hasattr(config, "workerinput"):
        atexit.register(_worker_exit)


def pytest_unconfigure(config: pytest.Config) -> None:
    _worker_exit.session_ended = True


#: the units of work that take longest (a file, or the files of ``SAME_WORKER_AS`` together,
#: next to each other here; seconds of CPU and of waiting, summed per file), in that order,
#: before every other file (which keep their order). pytest-xdist's ``loadfile`` hands a
#: worker a unit at a time, in collection order (pyproject: ``--no-loadscope-reorder``; its
#: default order, most tests first, put these files last): longest first, no worker is left
#: running one of them at the end while the other has nothing to do.
LONGEST_FIRST = (
    "test_verdict_stability.py", "test_oracle_compiled.py", "test_streaming.py", "test_deltas.py",
    "test_jax_compilation_cache.py", "test_jax_function_compiles.py",
    "test_jax_function_padding.py", "test_examples_conform.py", "test_user_adapters.py",
    "test_keras_adapter.py", "test_wrappers_say_what_they_wrap.py", "test_adapters.py",
    "test_fuzz.py", "test_benchmarks.py", "test_cli.py", "test_vocab_parallel.py",
    "test_performance_guards.py", "test_frozen_suite.py", "test_oracle_fast.py",
    "test_torch_samples.py", "test_mutants.py", "test_faulty_adapters.py", "test_dialects.py",
    "test_packaging.py", "test_compare.py", "test_pytest_plugin.py", "test_error_model.py",
    "test_docs.py",
)  # fmt: skip


#: what no test file may import at collection: every pytest-xdist worker collects every file,
#: so such an import costs each worker its seconds of CPU (torch 1.5 s, JAX 1.4 s, ml_dtypes
#: 0.6 s), wherever the tests that need it run; a test imports it, or a module-level
#: ``importlib.util.find_spec`` decides a skip (tests/test_performance_guards.py checks)
NOT_AT_COLLECTION = ("torch", "jax", "jaxlib", "ml_dtypes", "numba", "tensorflow", "keras")
#: {test file: the modules of NOT_AT_COLLECTION its collection imported}
IMPORTED_AT_COLLECTION: dict[str, list[str]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    before = [m for m in NOT_AT_COLLECTION if m in sys.modules]
    yield
    new = [m for m in NOT_AT_COLLECTION if m in sys.modules and m not in before]
    if new:
        IMPORTED_AT_COLLECTION[collector.nodeid] = new


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


#: files that run in the worker of the file named, as one unit of work: they need the same
#: costly state, which a process builds once. numba's kernels (``test_deltas.py`` loads
#: the delta kernels and numba itself): compiling them took 14 s of CPU in each worker that
#: ran one of these files on a fresh clone (numba's cache is keyed by the sources'
#: modification times), 21 s for both files in one process instead of 37 s apart. JAX: its
#: import, 1.4 s, and the programs it traces and compiles. The committed scoreboard's reports,
#: decoded once a process (1.3 s of CPU) for the scoreboard's tests and the docs' figure.
SAME_WORKER_AS = {
    "test_scoreboard.py": "test_docs.py",
    **dict.fromkeys(("test_streaming.py", "test_deltas.py"), "test_oracle_compiled.py"),
    **dict.fromkeys(
        ("test_jax_function_compiles.py", "test_jax_function_padding.py",
         "test_examples_conform.py", "test_user_adapters.py", "test_keras_adapter.py",
         "test_wrappers_say_what_they_wrap.py", "test_adapters.py"),
        "test_jax_compilation_cache.py",
    ),
}  # fmt: skip


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pytest-xdist's ``loadfile`` with the files of ``SAME_WORKER_AS`` in one unit each."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedStateScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            name = scope.rpartition("/")[2]
            with_file = SAME_WORKER_AS.get(name)
            return scope[: -len(name)] + with_file if with_file else scope

    return SharedStateScheduling(config, log)


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> Completed:
    """``python -m harness ARGS`` in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli_process():
    """``python -m harness ARGS`` in a subprocess: for the process contract only."""
    return run_cli


@pytest.fixture(scope="module")
def made_once() -> dict:
    """What a test file makes once and several of its tests check, with fixtures of a
    narrower scope (such as ``cli``): a fixture of the file fills it on first use, by name."""
    return {}


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path_factory):
    """``python -m harness ARGS`` in this process: ``main(ARGS)`` with its output captured.

    ``cwd`` and ``env`` apply during the call; ``path`` entries are put in front of
    ``sys.path`` (as PYTHONPATH would). Afterwards ``sys.path`` is restored and the modules
    imported from temporary folders (user adapters, test packages) are forgotten, so one
    test's ``mine.py`` never answers for another's.
    """
    from harness.cli.main import main

    scratch = str(tmp_path_factory.getbasetemp())

    def _cli(
        *args: str,
        cwd: Path | None = None,
        env: dict | None = None,
        path: tuple[Path, ...] = (),
    ) -> Completed:
        saved_path = sys.path[:]
        capsys.readouterr()  # what the test printed before is not the command's
        with monkeypatch.context() as m:
            if cwd is not None:
                m.chdir(cwd)
            for key, value in (env or {}).items():
                m.setenv(key, value)
            sys.path[:0] = [str(p) for p in path]
            importlib.invalidate_caches()  # files written just now must be found
            before = set(sys.modules)
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse: --help, or a usage error
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
            finally:
                sys.path[:] = saved_path
                _forget_modules_under(scratch, sys.modules.keys() - before)
        out, err = capsys.readouterr()
        return Completed(int(code), out, err)

    return _cli


def _forget_modules_under(folder: str, new: set[str]) -> None:
    """Forget the modules that the call imported (``new``) from under ``folder``, and every
    user module lossconf named (``lossconf_user_*``). Only the new ones are looked at: with
    torch and JAX imported, a look at each of the ~5000 modules took milliseconds a call."""
    for name in [*new, *(n for n in sys.modules if n.startswith("lossconf_user_"))]:
        origin = getattr(sys.modules.get(name), "__file__", None) or ""
        if origin.startswith(folder) or name.startswith("lossconf_user_"):
            sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def imported_before_any_inner_session():
    """For tests that run pytest sessions in process (``pytester``): pytester forgets the
    modules an inner session imported first, and C extensions (PyYAML's loader, jsonschema's
    rpds) do not survive being imported again. So what a plugin run imports lazily is
    imported here, before the first inner session (a session fixture is set up before
    pytester's function-scoped one)."""
    import jsonschema  # noqa: F401
    import mpmath  # noqa: F401

    import harness.execution.runner
    import harness.execution.session
    import harness.gate.expectations
    import harness.reports.repro  # noqa: F401


@pytest.fixture
def write(tmp_path):
    """Write a dedented text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return _write


@pytest.fixture(scope="session", autouse=True)
def every_json_report_is_strict(tmp_path_factory):
    """At the end of the session: every JSON report of the current schema_version written
    under the session's temporary folder is strict JSON, valid against the shipped schema and
    read alike by jq (tests/report_validation.py)."""
    yield
    from report_validation import check_reports_under

    found, problems = check_reports_under(tmp_path_factory.getbasetemp())
    assert not problems, f"{len(problems)} of {found} JSON reports fail:\n" + "\n".join(problems)
