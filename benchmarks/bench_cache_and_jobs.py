"""Targets 5 and 7: the disk cache (a second run), and ``--jobs N`` on this machine.

    python benchmarks/bench_cache_and_jobs.py

Cache: the whole built-in suite through the numpy adapter (``python -m harness -q``)
with an empty ``LOSSCONF_CACHE_DIR`` (the built-in files' frozen data read,
``harness/cases/frozen.py``, and every other ``expected: oracle`` value computed), then
again with the folder the first run filled. A generated case (``--rows`` x ``--classes`` float32 logits, ``expected: oracle``;
by default as large as a case whose gradient the cache keeps: from
``harness.oracle.cache.LARGE_ELEMENTS`` logits on, only the loss is kept and every run
recomputes the gradient block by block) is timed the same way.
Jobs: the whole suite with a warm cache, serially and with ``--jobs 2``, best of
``--repeat`` (wall time: the point of workers). Prints markdown table rows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from child_env import add_option, child_env

LARGE = """\
cases:
  - name: large_oracle
    why: "LLM-scale logits: expected values from the streaming oracle, cached on disk"
    dtype: [float32]
    logits: {{generate: normal, shape: [{rows}, {classes}], seed: 1, std: 4.0}}
    target: {{generate: labels, shape: [{rows}], seed: 2, classes: {classes}, ignore_fraction: 0.25}}
    label_smoothing: 0.1
    expected: oracle
"""


EXPECTED = """
import time
from pathlib import Path
from harness.oracle import cache as expected_cache
from harness.cases.loader import load_paths
case = load_paths([Path({path!r})]).cases[0]
case.logits  # made before timing
t = time.perf_counter(); expected_cache.oracle_expected(case.content_hash, "float32", lambda: case.problem("float32")); computed = time.perf_counter() - t
expected_cache._memory.clear()
t = time.perf_counter(); expected_cache.oracle_expected(case.content_hash, "float32", lambda: case.problem("float32")); read = time.perf_counter() - t
assert expected_cache.stats["disk_hits"] == 1
print(computed, read)
"""


IN_PROCESS = """
import sys, time
from dataclasses import replace
from harness.execution import parallel
from harness.cli.main import build_parser
from harness.cli.options import config_from
from harness.execution.session import execute, prepare

def main():
    config = config_from(build_parser().parse_args(["-q", *sys.argv[1:]]))
    plan = prepare(config)
    serial, jobs = [], []
    for _ in range({repeat}):
        t = time.perf_counter(); execute(replace(plan, results=[]), config); serial.append(time.perf_counter() - t)
        t = time.perf_counter(); parallel.run_parallel(plan, config, {jobs}, prepare=prepare, execute=execute); jobs.append(time.perf_counter() - t)
    print(min(serial), min(jobs))

if __name__ == "__main__":
    main()
"""


def wall(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr.decode())
    return time.perf_counter() - t


def _last_line(proc: subprocess.CompletedProcess, what: str) -> list[str]:
    """The words of the last line a measuring subprocess printed; exit with its error if it
    failed (instead of a ValueError from unpacking nothing)."""
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return lines[-1].split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--classes", type=int, default=32768)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--cases",
        action="append",
        default=[],
        help="run these case files or folders instead of the built-in suite",
    )
    ap.add_argument(
        "--no-torch", action="store_true", help="leave out the torch adapter's --jobs row"
    )
    add_option(ap)
    args = ap.parse_args()
    selection = [a for path in args.cases for a in ("--cases", path)]
    suite = "selected cases" if args.cases else "built-in suite"
    with tempfile.TemporaryDirectory() as tmp:
        # the children read Python's bytecode cache, as on a usual install (child_env.py)
        env = child_env(args.keep_bytecode_env, LOSSCONF_CACHE_DIR=str(Path(tmp) / "cache"))
        large = Path(tmp) / "large.yaml"
        large.write_text(LARGE.format(rows=args.rows, classes=args.classes))
        print("| run | first run s (empty cache) | second run s (cache filled) | speed-up |")
        print("|---|---|---|---|")
        for label, cmd in (
            (f"{suite}, numpy adapter", ["-q", *selection]),
            (f"generated {args.rows} x {args.classes} float32, `expected: oracle`",
             ["-q", "--cases", str(large)]),
        ):  # fmt: skip
            first, second = wall(cmd, env), wall(cmd, env)
            print(f"| {label} | {first:.2f} | {second:.2f} | {first / second:.1f}x |")

        fresh = {**env, "LOSSCONF_CACHE_DIR": str(Path(tmp) / "fresh")}
        code = EXPECTED.format(path=str(large))
        out = subprocess.run(
            [sys.executable, "-c", code], env=fresh, capture_output=True, text=True
        )
        computed, read = map(float, _last_line(out, "the expected values of the large case"))
        print(
            f"| expected values of that case alone (oracle / disk) | {computed:.2f} | {read:.2f} "
            f"| {computed / read:.1f}x |"
        )

        print()
        print(
            f"| --jobs, warm cache, {os.cpu_count()} CPUs | serial s | --jobs {args.jobs} s | speed-up |"
        )
        print("|---|---|---|---|")
        torch_args = ["--adapter", "torch", "-k", "weight"]
        for label, extra in (
            (f"numpy adapter, {'selected cases' if args.cases else 'whole suite'}", selection),
            ("torch adapter, -k weight", [*torch_args, *selection]),
        ):
            if args.no_torch and "torch" in extra:
                continue
            serial, parallel = [], []
            for _ in range(args.repeat):
                serial.append(wall(["-q", *extra], env))
                parallel.append(wall(["-q", "--jobs", str(args.jobs), *extra], env))
            s, p = min(serial), min(parallel)
            print(f"| {label} | {s:.2f} | {p:.2f} | {s / p:.2f}x |")
        script = Path(tmp) / "in_process.py"
        script.write_text(IN_PROCESS.format(repeat=args.repeat, jobs=args.jobs))
        out = subprocess.run(
            [sys.executable, str(script), *selection], env=env, capture_output=True, text=True
        )
        s, p = map(float, _last_line(out, "the in-process --jobs measurement"))
        print(
            f"| numpy adapter, execution phase only (in process) | {s:.2f} | {p:.2f} | {s / p:.2f}x |"
        )


if __name__ == "__main__":
    main()
