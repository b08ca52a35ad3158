"""Targets 5 and 7: the disk cache (a second run), and ``--jobs N`` on this machine.

    python benchmarks/bench_cache_and_jobs.py

Cache: the whole built-in suite through the numpy adapter (``python -m harness -q``)
with an empty ``LOSSCONF_CACHE_DIR`` (every file parsed and validated, every
``expected: oracle`` value computed), then again with the folder the first run
filled. A large generated case (``--rows`` x ``--classes`` float32 logits,
``expected: oracle``, streaming oracle) is timed the same way.
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


def wall(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr.decode())
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=32768)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LOSSCONF_CACHE_DIR": str(Path(tmp) / "cache")}
        large = Path(tmp) / "large.yaml"
        large.write_text(LARGE.format(rows=args.rows, classes=args.classes))
        print("| run | first run s (empty cache) | second run s (cache filled) | speed-up |")
        print("|---|---|---|---|")
        for label, cmd in (
            ("built-in suite, numpy adapter", ["-q"]),
            (f"generated {args.rows} x {args.classes} float32, `expected: oracle`",
             ["-q", "--cases", str(large)]),
        ):  # fmt: skip
            first, second = wall(cmd, env), wall(cmd, env)
            print(f"| {label} | {first:.2f} | {second:.2f} | {first / second:.1f}x |")

        serial, parallel = [], []
        for _ in range(args.repeat):
            serial.append(wall(["-q"], env))
            parallel.append(wall(["-q", "--jobs", str(args.jobs)], env))
        s, p = min(serial), min(parallel)
        print()
        print(
            f"| built-in suite, warm cache, {os.cpu_count()} CPUs | serial s | --jobs {args.jobs} s | speed-up |"
        )
        print("|---|---|---|---|")
        print(f"| numpy adapter | {s:.2f} | {p:.2f} | {s / p:.2f}x |")


if __name__ == "__main__":
    main()
