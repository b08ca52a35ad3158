"""Issue 12's last target: the test suite, as ``.ci/run`` runs it, within 60 s on 2 cores.

    python benchmarks/bench_tests.py              # a cold run, then a warm one
    python benchmarks/bench_tests.py --repeat 2   # the warm run twice (the best is kept)
    python benchmarks/bench_tests.py tests/test_generate.py   # pytest's arguments: a part

Runs ``python -m pytest -q`` (the README's test command: pytest-xdist, one worker per core,
``pyproject.toml``) in the repository root:

- cold: every cache the test suite keeps between runs empty, as on a fresh machine or a
  fresh clone: lossconf's (``LOSSCONF_CACHE_DIR``), JAX's compiled programs
  (``JAX_COMPILATION_CACHE_DIR``) and numba's compiled kernels (``NUMBA_CACHE_DIR``; in a
  fresh clone numba finds none either: its entries are keyed by the source files'
  modification times), each a new temporary folder; and the repository's bytecode
  (``__pycache__/*.pyc`` under its folders of Python sources: a clone has none), removed;
- warm: the same folders again, as a second ``.ci/run`` on the same machine finds them.

Prints pytest's summary line, the wall time and the CPU time (user + system of pytest and
every process it started) of each run, and the machine's load average before and after:
the target is for a quiet machine. Then where the kept warm run's CPU went: the costliest
files (the CPU of their tests in the worker, set-up and tear-down of fixtures included, and
of the subprocesses they waited for; ``pytest_plugins/cpu_per_test.py``, loaded in every
worker, records it), the rest of the files, and what no test accounts for (the workers'
start-up and collection, pytest-xdist's controller, the forked or detached processes no test
waited for).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from child_env import child_env, run_timed

REPO = Path(__file__).resolve().parent.parent
#: the caches tests/conftest.py keeps between runs, and numba's
CACHES = (
    "LOSSCONF_CACHE_DIR",
    "JAX_COMPILATION_CACHE_DIR",
    "NUMBA_CACHE_DIR",
)
#: the repository's folders of Python sources, whose bytecode a cold run starts without
SOURCES = ("harness", "adapters", "tests", "examples", "benchmarks", "tools")
#: the per-test recorder, a pytest plugin (-p cpu_per_test)
PLUGINS = Path(__file__).resolve().parent / "pytest_plugins"
#: the files listed one by one under the runs (the rest are summed)
TOP_FILES = 10

#: {test file: [tests, CPU s in the worker, CPU s of its subprocesses, wall s]}; the key
#: PROCESSES: [pytest processes, their own CPU s (start-up and collection included), 0, 0]
PerFile = dict[str, list[float]]
PROCESSES = "#process"


def remove_bytecode() -> int:
    """Remove the repository's bytecode files (as a fresh clone has none); how many."""
    found = [p for name in SOURCES for p in (REPO / name).rglob("__pycache__/*.pyc")]
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def run(env: dict[str, str], pytest_args: list[str]) -> tuple[float, float, str, PerFile]:
    """Wall and CPU seconds of one test run, pytest's summary line, and the run per file."""
    with tempfile.TemporaryDirectory(prefix="lossconf-bench-tests-log-") as log:
        path = os.pathsep.join([str(PLUGINS), *filter(None, [env.get("PYTHONPATH")])])
        env = {**env, "PYTHONPATH": path, "LOSSCONF_BENCH_TEST_LOG": log}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "cpu_per_test", *pytest_args]
        wall, cpu, proc = run_timed(cmd, env, REPO)
        per_file: PerFile = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
        for record in Path(log).glob("*.tsv"):
            for line in record.read_text().splitlines():
                nodeid, *seconds = line.split("\t")
                row = per_file[nodeid.split("::")[0]]  # or PROCESSES
                row[0] += 1
                for i, value in enumerate(seconds, 1):
                    row[i] += float(value)
    lines = proc.stdout.strip().splitlines()
    summary = next((line for line in reversed(lines) if re.search(r" in [\d.]+s", line)), "")
    if proc.returncode != 0:
        raise SystemExit(f"pytest exit {proc.returncode}:\n" + "\n".join(lines[-30:]))
    return wall, cpu, summary.strip("= "), dict(per_file)


def breakdown(cpu: float, per_file: PerFile) -> list[str]:
    """Markdown rows: the costliest files by CPU, the others, what no test accounts for."""
    per_file = dict(per_file)
    processes, processes_cpu = per_file.pop(PROCESSES, [0, 0.0])[:2]
    order = sorted(per_file.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))
    rows = ["| test file | tests | CPU s in the worker | CPU s of subprocesses | wall s |",
            "|---|---|---|---|---|"]  # fmt: skip
    for name, (n, own, children, wall) in order[:TOP_FILES]:
        rows.append(f"| `{name}` | {n:.0f} | {own:.1f} | {children:.1f} | {wall:.1f} |")
    if len(order) > TOP_FILES:
        rest = [sum(v[i] for _, v in order[TOP_FILES:]) for i in range(4)]
        rows.append(
            f"| the other {len(order) - TOP_FILES} files | {rest[0]:.0f} | {rest[1]:.1f} | "
            f"{rest[2]:.1f} | {rest[3]:.1f} |"
        )
    in_tests = sum(v[1] for v in per_file.values())
    waited = sum(v[2] for v in per_file.values())
    rows.append(
        f"| no test: the {processes:.0f} pytest processes' start-up and collection, and "
        f"pytest-xdist's controller | | {processes_cpu - in_tests:.1f} | | |"
    )
    rows.append(
        "| no test: processes no test waited for (reaped when a worker exits, such as "
        f"kept pools of worker processes) | | | {cpu - processes_cpu - waited:.1f} | |"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="warm runs (best kept)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (default: none)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lossconf-bench-tests-") as tmp:
        env = child_env(**{name: str(Path(tmp) / name.lower()) for name in CACHES})
        env.pop("PYTEST_ADDOPTS", None)
        remove_bytecode()
        rows = [("cold: empty caches", *run(env, args.pytest_args))]
        warm = min((run(env, args.pytest_args) for _ in range(args.repeat)), key=lambda r: r[0])
        rows.append(("warm: the caches of the cold run", *warm))
    load_after = os.getloadavg()[0]
    command = " ".join(["python -m pytest -q", *args.pytest_args])
    print(f"| `{command}` | wall s | CPU s | pytest's summary |")
    print("|---|---|---|---|")
    for name, wall, cpu, summary, _ in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {summary} |")
    print()
    print(f"load average {load_before:.1f} before, {load_after:.1f} after; {os.cpu_count()} CPUs")
    print()
    print("The warm run's CPU by test file (a test's CPU includes its fixtures'):")
    print()
    print("\n".join(breakdown(warm[1], warm[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
