"""Targets 1 and 2: start-up of ``--list`` / ``--help``, and loading the built-in suite.

    python benchmarks/bench_startup.py

Start-up: wall and CPU time of ``python -m harness --list`` and ``--help`` in fresh
interpreters, best of ``--repeat``, with a warm cache folder (a second run on
the machine) and a cold one (an empty ``LOSSCONF_CACHE_DIR``: the built-in files are read
from their frozen data, ``harness/cases/frozen.py``). Loading:
``harness.cases.loader.load_paths()`` in a fresh interpreter, best of ``--repeat``: the
built-in suite with an empty cache folder (from its frozen data), and a copy of its files
elsewhere (a user's files, which never read frozen data) with a cold cache (every file
parsed and validated) and a warm one (the pickled load cache); and cases per second. Also
checks that no framework (torch, jax) was imported. Prints markdown table rows. The children
run with Python's bytecode cache on (``child_env.py``); an untimed first run writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from child_env import add_option, child_env, run_timed

ROOT = Path(__file__).resolve().parent.parent

LOAD = """
import json, sys, time
t0 = time.perf_counter(); c0 = time.process_time()
from harness.cases.loader import load_paths
t1 = time.perf_counter()
cases = load_paths([sys.argv[1]] if sys.argv[1:] else None).cases
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "cases": len(cases),
                  "frameworks": [m for m in ("torch", "jax") if m in sys.modules]}))
"""


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU (user + sys of the child) seconds of one command."""
    wall, cpu, proc = run_timed(cmd, env)
    proc.check_returncode()
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    add_option(ap)
    args = ap.parse_args()
    py = sys.executable
    # writes the bytecode of every module the runs import, in a cache folder of its own
    with tempfile.TemporaryDirectory() as first:
        for flag in ("--list", "--help"):
            env = child_env(args.keep_bytecode_env, LOSSCONF_CACHE_DIR=first)
            subprocess.run([py, "-m", "harness", flag], env=env, check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for label in ("cold", "warm"):
            for flag in ("--list", "--help"):
                samples = []
                for _ in range(args.repeat if label == "warm" else 1):
                    # cold: a fresh, empty cache folder for every sample
                    folder = (
                        tempfile.mkdtemp(dir=tmp) if label == "cold" else os.path.join(tmp, "w")
                    )
                    env = child_env(args.keep_bytecode_env, LOSSCONF_CACHE_DIR=folder)
                    if label == "warm" and not samples:
                        subprocess.run([py, "-m", "harness", flag], env=env, capture_output=True)
                    samples.append(timed([py, "-m", "harness", flag], env))
                wall = min(s[0] for s in samples)
                cpu = min(s[1] for s in samples)
                rows.append(
                    f"| `python -m harness {flag}` | {label} cache | {wall:.3f} | {cpu:.3f} |"
                )
        print("| command | cache | wall s (best) | CPU s (best) |")
        print("|---|---|---|---|")
        print("\n".join(rows))

        print()
        print("| load built-in suite | cases | import s | load s | cases/s | frameworks imported |")
        print("|---|---|---|---|---|---|")
        copy = os.path.join(tmp, "copy")  # the suite's files elsewhere: no frozen data
        shutil.copytree(ROOT / "cases", copy, ignore=shutil.ignore_patterns("frozen"))
        for label, where in (
            ("built-in, empty cache (frozen data)", []),
            ("a copy of its files, cold cache", [copy]),
            ("a copy of its files, warm cache", [copy]),
        ):
            runs = []
            for _ in range(args.repeat):
                # cold: a fresh, empty cache folder for every sample
                warm = label.endswith("warm cache")
                folder = os.path.join(tmp, "w") if warm else tempfile.mkdtemp(dir=tmp)
                env = child_env(args.keep_bytecode_env, LOSSCONF_CACHE_DIR=folder)
                if warm and not runs:
                    subprocess.run(
                        [py, "-c", LOAD, *where], env=env, check=True, capture_output=True
                    )
                cmd = [py, "-c", LOAD, *where]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True)
                runs.append(json.loads(out.stdout))
            best = min(runs, key=lambda r: r["load_s"])
            print(
                f"| {label} | {best['cases']} | {best['import_s']:.3f} | {best['load_s']:.3f} "
                f"| {best['cases'] / best['load_s']:.0f} | {best['frameworks'] or 'none'} |"
            )
    print()
    print(frozen_size())


def frozen_size() -> str:
    """The built-in suite's frozen data (``cases/frozen/``): files and bytes, as stored and
    compressed (zlib level 6: about what git's objects and a wheel's zip hold)."""
    files = sorted((ROOT / "cases" / "frozen").rglob("*.arrays"))
    data = [f.read_bytes() for f in files]
    yaml_bytes = sum(p.stat().st_size for p in (ROOT / "cases").rglob("*.yaml"))
    raw, packed = sum(map(len, data)), sum(len(zlib.compress(d, 6)) for d in data)
    return (
        "| frozen data (cases/frozen/) | files | bytes | compressed | the case files' bytes |\n"
        "|---|---|---|---|---|\n"
        f"| built-in suite | {len(files)} | {raw / 2**20:.1f} MiB | {packed / 2**20:.1f} MiB "
        f"| {yaml_bytes / 2**20:.1f} MiB |"
    )


if __name__ == "__main__":
    main()
