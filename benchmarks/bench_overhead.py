"""Target 3: the harness's cost per call, against a bare loop over the same calls.

    python benchmarks/bench_overhead.py --adapter numpy
    python benchmarks/bench_overhead.py --adapter torch

Harness: ``harness.execution.runner.run`` over the whole built-in suite (cases already
loaded, expected values already computed: both are measured by other scripts),
i.e. per call the fresh inputs, the input-mutation check, the adapter, the
output checks, the tolerance comparison with ulp statistics and the Result.
Baseline: the same calls on arrays prepared beforehand, each output compared
with ``np.abs(got - want) <= atol + rtol * np.abs(want)`` (a call that raises is
caught). Calls the adapter declares unsupported are skipped by both. Both are
timed ``--repeat`` times, interleaved, in process CPU time (the machine is
shared, so wall time is noisy); the best of each is reported, and the median and range of
the ratios of each harness run to the bare loop run after it. Prints one markdown table row.

``--counts`` (the default; ``--no-counts`` skips it): then the calls each makes per adapter
call, NumPy's and Python's, counted by cProfile over one more run of each (counts, not
times: they do not depend on the machine's load); prints a second table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def prepared_calls(cases, adapter):
    """(inputs, expected, tolerance, fused) for every call the harness makes; a fused linear
    case's inputs and expected values are those of ``run_linear``."""
    from harness.execution.runner import unsupported_by_declaration

    calls = []
    want_grad = "grad" not in adapter.unsupported
    for case in cases:
        for dtype in case.dtypes:
            if unsupported_by_declaration(case, adapter, dtype):
                continue
            if case.fused:
                inputs = case.linear_inputs(dtype, want_grad=want_grad)
                expected = None if case.expect_error else case.linear_expected_for(dtype)
            else:
                inputs = case.inputs(dtype, want_grad=want_grad)
                expected = None if case.expect_error else case.expected_for(dtype)
            calls.append((inputs, expected, case.tolerance(dtype), case.fused))
    return calls


#: the gradients of each kind of call: (the output's field, the expected value's field)
GRADS = {
    False: (("grad", "grad"),),
    True: (
        ("grad_hidden", "grad_hidden"),
        ("grad_classifier", "grad_classifier"),
        ("grad_bias", "grad_bias"),
    ),
}


def _off(got, want, atol: float, rtol: float) -> int:
    got = np.asarray(got, dtype=np.float64)
    return int(np.any(np.abs(got - want) > atol + rtol * np.abs(want)))


def bare_loop(adapter, calls) -> int:
    """Call and compare; returns the number of mismatches (so nothing is optimised away)."""
    bad = 0
    for inputs, expected, tol, fused in calls:
        try:
            out = adapter.run_linear(inputs) if fused else adapter.run(inputs)
        except Exception:
            continue
        if expected is None:
            continue
        with np.errstate(invalid="ignore"):
            bad += _off(out.loss, expected.loss, tol.loss_atol, tol.loss_rtol)
            for got_field, want_field in GRADS[fused]:
                got, want = getattr(out, got_field), getattr(expected, want_field)
                if got is not None and want is not None:
                    bad += _off(got, want, tol.grad_atol, tol.grad_rtol)
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="numpy")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("-k", dest="keywords", action="append")
    ap.add_argument(
        "--counts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the calls the harness and the bare loop make per call (default: on)",
    )
    args = ap.parse_args()

    from harness.cases.loader import load_paths
    from harness.cases.select import select
    from harness.execution.registry import load
    from harness.execution.runner import run

    cases = select(load_paths().cases, args.keywords, None)
    adapter = load(args.adapter)
    calls = prepared_calls(cases, adapter)  # also computes every expected value once
    list(run(cases, [adapter]))  # warm-up: imports, first-call initialisation

    harness_s, bare_s, harness_w, bare_w = [], [], [], []
    for _ in range(args.repeat):  # interleaved, best of each: the machine is shared
        t, w = time.process_time(), time.perf_counter()
        results = list(run(cases, [adapter]))
        harness_s.append(time.process_time() - t)
        harness_w.append(time.perf_counter() - w)
        t, w = time.process_time(), time.perf_counter()
        bare_loop(adapter, calls)
        bare_s.append(time.process_time() - t)
        bare_w.append(time.perf_counter() - w)
    h, b = min(harness_s), min(bare_s)
    hw, bw = min(harness_w), min(bare_w)
    # each harness run against the bare loop run just after it: how far the ratio of the
    # best runs may be off on a shared machine
    pairs = sorted(x / y for x, y in zip(harness_s, bare_s, strict=True))
    spread = f"{statistics.median(pairs):.2f} ({pairs[0]:.2f} to {pairs[-1]:.2f})"
    print(
        "| adapter | calls | harness CPU s | bare loop CPU s | ratio (CPU) "
        "| overhead per call | harness wall s | bare wall s | ratio (wall) "
        "| ratio (CPU) of each pair of runs: median (range) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {adapter.name} | {len(calls)} | {h:.3f} | {b:.3f} | {h / b:.2f} "
        f"| {(h - b) / len(calls) * 1e6:.0f} us | {hw:.3f} | {bw:.3f} | {hw / bw:.2f} "
        f"| {spread} |"
    )
    assert len(results) >= len(calls)
    if args.counts:
        print()
        print(call_counts(cases, adapter, calls))


def call_counts(cases, adapter, calls) -> str:
    """What the harness and the bare loop call, per call of the adapter: NumPy functions and
    methods, Python functions, and all function calls (the adapter's own are in both), as
    counted by cProfile over one run of each: counts, not times, so they do not depend on
    the machine's load."""
    import cProfile
    import pstats

    from harness.execution.runner import run

    def counts(f) -> dict[str, int]:
        profile = cProfile.Profile()
        profile.runcall(f)
        out = {"numpy": 0, "python": 0, "all": 0}
        for (file, _, name), (_, ncalls, *_rest) in pstats.Stats(profile).stats.items():
            out["all"] += ncalls
            if "numpy" in file or "numpy" in name:
                out["numpy"] += ncalls
            elif file != "~":
                out["python"] += ncalls
        return out

    harness = counts(lambda: list(run(cases, [adapter])))
    bare = counts(lambda: bare_loop(adapter, calls))
    collections = {
        "harness": collections_in(lambda: list(run(cases, [adapter]))),
        "bare loop": collections_in(lambda: bare_loop(adapter, calls)),
    }
    n = len(calls)
    lines = [
        "| per adapter call | harness | bare loop | the harness's own |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("numpy", "NumPy calls (functions, ufuncs, array methods)"),
        ("python", "Python function calls"),
        ("all", "all function calls"),
    ):
        h, b = harness[key] / n, bare[key] / n
        lines.append(f"| {label} | {h:.1f} | {b:.1f} | {h - b:.1f} |")
    lines.append("")
    lines.append(
        "Garbage collections in one run (by generation): "
        + "; ".join(f"{who} {found}" for who, found in collections.items())
        + " (the harness keeps each call's result record for the report; the bare loop keeps "
        "nothing)"
    )
    return "\n".join(lines)


def collections_in(f) -> str:
    """The garbage collections that one call of ``f`` sets off, by generation (a count: it
    does not depend on the machine's load), as 'gen0 a, gen1 b, gen2 c'."""
    import gc

    found = [0, 0, 0]

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            found[info["generation"]] += 1

    gc.collect()  # every run starts from the same young generations
    gc.callbacks.append(count)
    try:
        f()
    finally:
        gc.callbacks.remove(count)
    return ", ".join(f"gen{g} {n}" for g, n in enumerate(found))


if __name__ == "__main__":
    main()
