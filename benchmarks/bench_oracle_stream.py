"""Target 4: the streaming oracle on LLM-scale logits, against one bare float64 logsumexp pass.

Each measurement runs in a fresh subprocess so ``ru_maxrss`` is its own peak:

    python benchmarks/bench_oracle_stream.py                 # 4096 x 131072 float32 (2 GiB)
    python benchmarks/bench_oracle_stream.py --rows 512      # a quicker, smaller run

The logits are float32 N(0, 4^2) made in place; targets are class indices with a
quarter ignored, class weights and label smoothing 0.1 (the most work per row).
The baseline is one bare NumPy float64 log-sum-exp pass over the same array, in
the same row chunks (max, subtract, exp, sum, log): the least work any float64
oracle must do. Prints one markdown table row per mode.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def make_inputs(rows: int, classes: int):
    from harness.oracle.problem import Problem

    rng = np.random.default_rng(0)
    x = np.empty((rows, classes), dtype=np.float32)
    for lo in range(0, rows, 64):  # in pieces: never a float64 copy of the whole array
        x[lo : lo + 64] = rng.standard_normal((min(64, rows - lo), classes), dtype=np.float32) * 4
    t = rng.integers(0, classes, rows)
    t[rng.random(rows) < 0.25] = -100
    w = rng.uniform(0.5, 2.0, classes)
    return x, Problem(x, t, False, weight=w, label_smoothing=0.1)


def logsumexp_pass(x: np.ndarray) -> np.ndarray:
    """One bare float64 log-sum-exp over rows, chunked like the streaming oracle."""
    from harness.oracle.stream import chunk_rows

    out = np.empty(x.shape[0])
    step = chunk_rows(x.shape[1])
    buf = np.empty((min(step, x.shape[0]), x.shape[1]))  # reused, as in the oracle
    for lo in range(0, x.shape[0], step):
        d = buf[: min(step, x.shape[0] - lo)]
        np.copyto(d, x[lo : lo + step])
        m = d.max(axis=1)
        d -= m[:, None]
        np.exp(d, out=d)
        out[lo : lo + step] = m + np.log(d.sum(axis=1))
    return out


def measure(mode: str, rows: int, classes: int) -> dict:
    from harness.oracle.stream import cross_entropy_streaming

    x, problem = make_inputs(rows, classes)
    start = time.perf_counter()
    if mode == "baseline":
        logsumexp_pass(x)
    elif mode == "loss":
        cross_entropy_streaming(problem, want_grad=False)
    elif mode == "grad64":
        cross_entropy_streaming(problem)
    elif mode == "grad32":
        cross_entropy_streaming(problem, grad_dtype=np.float32)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"mode": mode, "seconds": seconds, "peak_bytes": peak, "logits_bytes": x.nbytes}


MODES = {
    "baseline": "bare float64 logsumexp pass",
    "loss": "streaming oracle, loss only",
    "grad32": "streaming oracle, loss + float32 grad",
    "grad64": "streaming oracle, loss + float64 grad (default)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=131072)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.rows, args.classes)))
        return
    results = {}
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--child", mode, f"--rows={args.rows}",
               f"--classes={args.classes}"]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out)
    base = results.get("baseline", {}).get("seconds")
    print(
        f"| {args.rows} x {args.classes} float32 | seconds | x baseline | peak RSS / logits bytes |"
    )
    print("|---|---|---|---|")
    for mode, r in results.items():
        ratio = f"{r['seconds'] / base:.2f}" if base else "-"
        print(
            f"| {MODES[mode]} | {r['seconds']:.2f} | {ratio} | {r['peak_bytes'] / r['logits_bytes']:.2f} |"
        )


if __name__ == "__main__":
    main()
