"""The cost of robustness: --isolate against an in-process run, and the input-mutation check.

    python benchmarks/bench_isolation.py            # cases/seed.yaml, 3 repeats

Each run is a fresh ``python -m harness -q`` process; the median wall time of
``--repeats`` runs is printed as a markdown table row per mode, then the time
of the mutation check (copy before the call, bitwise compare after) for one
(64, 32000) float32 input.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "-q", *args], cwd=REPO, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cases", default="cases/seed.yaml")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print("| mode | median wall time (s) |\n|---|---|")
    for label, extra in [("in process", []), ("--isolate", ["--isolate"])]:
        times = [wall(["--cases", a.cases, *extra]) for _ in range(a.repeats)]
        print(f"| {label} | {statistics.median(times):.2f} |")

    from harness.adapters import CallInputs
    from harness.execution.runner import mutations, snapshot

    x = np.random.default_rng(0).normal(size=(64, 32000)).astype(np.float32)
    inputs = CallInputs(x, np.zeros(64, np.int64), None, "mean", -100, 0.0, "float32")
    start = time.perf_counter()
    for _ in range(20):
        assert mutations(inputs, snapshot(inputs)) == ""
    ms = (time.perf_counter() - start) / 20 * 1e3
    print(f"\nmutation check, (64, 32000) float32 logits: {ms:.1f} ms per call")


if __name__ == "__main__":
    main()
