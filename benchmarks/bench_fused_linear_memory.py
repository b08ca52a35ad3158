"""Peak memory and time of the large fused linear cross-entropy cases (docs/fused-linear.md).

    python benchmarks/bench_fused_linear_memory.py                  # the V = 131072 case
    python benchmarks/bench_fused_linear_memory.py --case NAME ...  # others of the file

Each case x dtype runs in a fresh ``python -m harness --adapter torch`` process (the oracle,
the adapter's call and the comparison, as a user's run does, with the disk cache off so the
oracle is computed); the figure is that process's peak RSS (its ``ru_maxrss``),
divided by the classifier's float32 bytes (V x H x 4), and its wall time. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = REPO / "benchmarks" / "cases" / "fused_linear_large.yaml"
SIZES = {  # case -> (V, H)
    "v128k_h512_bias_ignored": (131072, 512),
    "v32000_h4096_sequences_shift": (32000, 4096),
    "v262144_h256_softcap_z_loss_sum": (262144, 256),
}


def run(case: str, dtype: str) -> tuple[float, int, str]:
    """(seconds, peak RSS bytes, the run's last line) of one case x dtype in a child process
    (its own rusage, from os.wait4)."""
    env = {**os.environ, "LOSSCONF_CACHE_DIR": "off"}
    command = [
        sys.executable, "-m", "harness", "--adapter", "torch", "--cases", str(CASES),
        "--case", f"fused_linear_large/{case}", "--dtype", dtype, "-q",
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = out.read().strip().splitlines()
    return seconds, usage.ru_maxrss * 1024, lines[-1] if lines else f"exit {child.returncode}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", choices=sorted(SIZES))
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    print(f"| case ({args.dtype}, torch) | seconds | peak RSS (GiB) | peak RSS / classifier "
          "float32 bytes | result |")  # fmt: skip
    print("|---|---|---|---|---|")
    for case in args.case or ["v128k_h512_bias_ignored"]:
        v, h = SIZES[case]
        seconds, peak, last = run(case, args.dtype)
        print(
            f"| {case} | {seconds:.1f} | {peak / 2**30:.2f} | {peak / (v * h * 4):.1f} | {last} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
