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

Every compile is a first one: JAX's persistent compilation cache, which the JAX adapters
keep in lossconf's cache folder, is pointed at a new empty folder (``--jax-cache DIR``
uses DIR instead: a second run on the same DIR reads the programs the first one kept).
``--warm`` runs the benchmark twice in child processes on one new folder and prints the
second run's table: what a later run of the same adapters costs.

``--floor`` (with the built-in adapter first, then a wrapped function) adds a second
table: a floor under any wrapper that calls the function as each case specifies it.
Whatever it pads, such a wrapper must compile at least one program for each distinct
(dtype, reduction, weight or not, rank of the logits) among the calls that compiled,
because the function's traced code may branch on each of them (a Python ``if`` on the
reduction, a dtype test, ``ndim``). The function's programs are those of the name
compiled most often in its run (JAX's compile log: ``jit(run)`` for ``from_jax``); the
floor adds up, for each distinct key, the cheapest of its programs' compiles in this run
(XLA's compile alone: tracing and lowering come on top), and is divided by the built-in
adapter's wall time.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--adapter", action="append", help="adapter spec, repeatable (default: jax)"
    )
    parser.add_argument("-k", default="", help="only case ids containing this")
    parser.add_argument(
        "--floor", action="store_true", help="also print the floor under any wrapper (above)"
    )
    parser.add_argument("--jax-cache", help="JAX's persistent cache folder (default: a new one)")
    parser.add_argument(
        "--warm", action="store_true", help="the second of two runs on one cache folder"
    )
    args = parser.parse_args()
    if args.warm:
        with tempfile.TemporaryDirectory() as folder:
            again = [a for a in sys.argv[1:] if a != "--warm"] + ["--jax-cache", folder]
            command = [sys.executable, __file__, *again]
            subprocess.run(command, check=True, capture_output=True)  # keeps the programs
            print(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        return
    # before JAX is imported: its options are read from the environment then
    fresh = None if args.jax_cache else tempfile.TemporaryDirectory()
    os.environ["JAX_COMPILATION_CACHE_DIR"] = args.jax_cache or fresh.name  # type: ignore[union-attr]
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

    import jax

    from harness.cases.loader import load_paths
    from harness.execution.registry import load
    from harness.execution.results import CONFORMING
    from harness.execution.runner import run

    compiles: collections.Counter = collections.Counter()
    #: the call running now, as (dtype, reduction, weight or not, rank), and each compile
    #: of the adapter's run, from JAX's compile log: (that key, program name, seconds)
    current: list[tuple] = [()]
    programs: list[tuple[tuple, str, float]] = []

    def listen(name: str, seconds: float, **_: object) -> None:
        if name == "/jax/core/compile/backend_compile_duration":
            compiles["n"] += 1
            compiles["seconds"] += seconds

    class CompileLog(logging.Handler):
        FINISHED = re.compile(r"Finished XLA compilation of (\S+) in ([0-9.e-]+) sec")

        def emit(self, record: logging.LogRecord) -> None:
            found = self.FINISHED.search(record.getMessage())
            if found:
                programs.append((current[0], found[1], float(found[2])))

    if args.floor:
        jax.config.update("jax_log_compiles", True)
        log = logging.getLogger("jax")  # the compile log's records, of several modules
        log.addHandler(CompileLog())
        log.propagate = False  # read here, not printed

    jax.monitoring.register_event_duration_secs_listener(listen)

    def hit(name: str, **_: object) -> None:
        if name == "/jax/compilation_cache/cache_hits":
            compiles["read back"] += 1

    jax.monitoring.register_event_listener(hit)
    cases = [c for c in load_paths().cases if args.k in c.id]
    for case in cases:
        for dtype in case.dtypes:
            if case.expect_error is None:  # off the clock, as loading the cases is
                case.linear_expected_for(dtype) if case.fused else case.expected_for(dtype)
    jax.jit(lambda x: x + 1)(1.0).block_until_ready()  # JAX's own start-up, off the clock
    specs = args.adapter or ["jax"]
    several = len(specs) > 1
    print(
        "| adapter | results | not conforming | XLA compiles (read from JAX's cache) "
        "| compile s | CPU s | wall s |" + (" wall / first |" if several else "")
    )
    print("|---|---|---|---|---|---|---|" + ("---|" if several else ""))
    first = None
    floors: list[tuple[str, float, list[tuple[tuple, str, float]]]] = []
    for spec in specs:
        adapter = load(spec)
        adapter.load()
        compiles.clear()
        programs.clear()
        plain_run = adapter.run

        def traced_run(inputs: Any, plain_run: Any = plain_run) -> Any:
            current[0] = (
                inputs.dtype,
                inputs.reduction,
                inputs.weight is not None,
                inputs.logits.ndim,
            )
            return plain_run(inputs)

        adapter.run = traced_run  # type: ignore[method-assign]
        wall, cpu = time.perf_counter(), time.process_time()
        results = list(run(cases, [adapter]))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        first = first or wall
        floors.append((spec, wall, list(programs)))
        bad = sum(r.status not in CONFORMING for r in results)
        print(
            f"| {spec} | {len(results)} | {bad} | {compiles['n']} ({compiles['read back']}) "
            f"| {compiles['seconds']:.1f} | {cpu:.1f} | {wall:.1f} |"
            + (f" {wall / first:.2f} |" if several else ""),
            flush=True,
        )
    if args.floor:
        print_floor(floors)


def print_floor(floors: list[tuple[str, float, list[tuple[tuple, str, float]]]]) -> None:
    """The floor table (module docstring): each adapter after the first against the first."""
    (_, base_wall, _), *wrapped = floors
    print()
    print(
        "| adapter | its program | compiles of it | distinct (dtype, reduction, weight, rank) "
        "| floor s (cheapest compile per kind, summed) | floor / first's wall |"
    )
    print("|---|---|---|---|---|---|")
    for spec, _, programs in wrapped:
        if not programs:
            print(f"| {spec} | none compiled | 0 | 0 | 0 | 0 |")
            continue
        name, _ = collections.Counter(n for _, n, _ in programs).most_common(1)[0]
        cheapest: dict[tuple, float] = {}
        for key, n, seconds in programs:
            if n == name and key:
                cheapest[key] = min(seconds, cheapest.get(key, seconds))
        count = sum(n == name for _, n, _ in programs)
        floor = sum(cheapest.values())
        print(
            f"| {spec} | `{name}` | {count} | {len(cheapest)} | {floor:.1f} "
            f"| {floor / base_wall:.2f} |"
        )


if __name__ == "__main__":
    main()
