"""JAX adapters over the whole built-in suite: XLA compiles, compile time, CPU and wall time.

    python benchmarks/bench_jax_compiles.py
    python benchmarks/bench_jax_compiles.py --adapter jax --adapter examples/jax_fn.py:cross_entropy
    python benchmarks/bench_jax_compiles.py --adapter path/to/old_jax_ce.py:JaxAdapter -k seed

Runs ``harness.execution.runner.run`` in-process on the selected cases (``-k``: a
substring of the case id), one adapter after the other, and counts XLA backend
compiles through ``jax.monitoring`` (eager primitives included), with their
total duration. Loading the cases, computing expected values and a first JAX
call happen before the clock starts. Prints a markdown table, a row per
adapter; with several, the last column is the wall time over the first one's.
"""

from __future__ import annotations

import argparse
import collections
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--adapter", action="append", help="adapter spec, repeatable (default: jax)"
    )
    parser.add_argument("-k", default="", help="only case ids containing this")
    args = parser.parse_args()

    import jax

    from harness.cases.loader import load_paths
    from harness.execution.registry import load
    from harness.execution.results import CONFORMING
    from harness.execution.runner import run

    compiles: collections.Counter = collections.Counter()

    def listen(name: str, seconds: float, **_: object) -> None:
        if name == "/jax/core/compile/backend_compile_duration":
            compiles["n"] += 1
            compiles["seconds"] += seconds

    jax.monitoring.register_event_duration_secs_listener(listen)
    cases = [c for c in load_paths().cases if args.k in c.id]
    for case in cases:
        for dtype in case.dtypes:
            if case.expect_error is None:
                case.expected_for(dtype)
    jax.jit(lambda x: x + 1)(1.0).block_until_ready()  # JAX's own start-up, off the clock
    specs = args.adapter or ["jax"]
    several = len(specs) > 1
    print(
        "| adapter | results | not conforming | XLA compiles | compile s | CPU s | wall s |"
        + (" wall / first |" if several else "")
    )
    print("|---|---|---|---|---|---|---|" + ("---|" if several else ""))
    first = None
    for spec in specs:
        adapter = load(spec)
        adapter.load()
        compiles.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        results = list(run(cases, [adapter]))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        first = first or wall
        bad = sum(r.status not in CONFORMING for r in results)
        print(
            f"| {spec} | {len(results)} | {bad} | {compiles['n']} "
            f"| {compiles['seconds']:.1f} | {cpu:.1f} | {wall:.1f} |"
            + (f" {wall / first:.2f} |" if several else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
