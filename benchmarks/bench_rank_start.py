"""How long a group of vocab-parallel ranks takes to start (docs/kernel-features.md).

    python benchmarks/bench_rank_start.py                 # R = 2 and 4
    python benchmarks/bench_rank_start.py --world-size 8  # others

For each R (2 and 4 unless given) and each way ranks start (``fork``: forked by the rank launcher, which
imports torch once; ``spawn``: each rank a fresh interpreter, as on macOS and as every
rank started before the launcher), a child process starts one group of R ranks of
``torch-vocab-split`` (its first start: for ``fork`` that includes the launcher's own
imports), then stops and restarts it three times, as the harness does after a rank
crashed, hung or raised alone; the figure is the first start and the fastest restart.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def measure(method: str, world_size: int) -> dict[str, float]:
    """In this process: the first start and the fastest of three restarts, in seconds."""
    from harness.execution import rank_launcher
    from harness.execution.registry import load
    from harness.execution.vocab_parallel import VocabParallelPool

    rank_launcher.METHOD = method
    specs = ["torch-vocab-split"]
    pool = VocabParallelPool(specs, [load(s) for s in specs], world_size)
    start = time.perf_counter()
    pool.start()
    first = time.perf_counter() - start
    restarts = []
    for _ in range(3):
        pool.group.stop(kill=True)
        start = time.perf_counter()
        problem = pool.group.start()
        restarts.append(time.perf_counter() - start)
        if problem is not None:
            raise SystemExit(f"the ranks did not start: {problem}")
    pool.close()
    return {"first": first, "restart": min(restarts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--world-size", type=int, action="append", help="ranks per group (repeatable)"
    )
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "R"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return 0
    print("| ranks | how they start | first start (s) | a restart (s) |")
    print("|---|---|---|---|")
    for world_size in args.world_size or (2, 4):
        for method in ("fork", "spawn"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", method, str(world_size)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            got = json.loads(out.stdout.strip().splitlines()[-1])
            how = "forked by the launcher" if method == "fork" else "fresh interpreters"
            print(f"| {world_size} | {how} | {got['first']:.2f} | {got['restart']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
