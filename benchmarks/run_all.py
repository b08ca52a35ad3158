"""Run every benchmark in turn (one at a time: two memory-heavy ones must not overlap).

    python benchmarks/run_all.py            # the figures of docs/performance.md (about 10 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # smaller sizes, about 2 minutes

Each script prints markdown table rows; this prints them under a heading per target
with the load average, since the figures depend on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (target, script, full arguments, quick arguments)
BENCHMARKS = [
    ("1, 2: start-up and loading", "bench_startup.py", [], ["--repeat", "3"]),
    ("3: overhead, numpy", "bench_overhead.py", ["--adapter", "numpy"], ["--adapter", "numpy", "--repeat", "2"]),
    ("3: overhead, torch", "bench_overhead.py", ["--adapter", "torch"], ["--adapter", "torch", "--repeat", "1", "-k", "seed"]),
    ("4: oracle (correctly rounded), cold first run", "bench_oracle.py", [], ["--rows", "256", "--repeat", "1"]),
    ("4b: streaming float64 approximation (opt-in)", "bench_oracle_stream.py", [], ["--rows", "256"]),
    ("5, 7: disk cache and --jobs", "bench_cache_and_jobs.py", [], ["--rows", "256", "--repeat", "1"]),
    ("6: torch adapter, largest case", "bench_torch_large.py", [], ["--rows", "256", "--repeat", "2"]),
    ("8: the pytest plugin against the CLI", "bench_plugin.py", [], ["--repeat", "1", "-k", "seed"]),
]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("-k", help="run only benchmarks whose script name contains this")
    args = ap.parse_args()
    failed = 0
    for target, script, full, quick in BENCHMARKS:
        if args.k and args.k not in script:
            continue
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"\n### target {target}  (load average {os.getloadavg()[0]:.1f})")
        print(
            f"`python benchmarks/{script} {' '.join(quick if args.quick else full)}`\n", flush=True
        )
        failed += subprocess.run(cmd, cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
