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
shared, so wall time is noisy); the best of each is reported. Prints one markdown table row.

``--breakdown`` (the default; ``--no-breakdown`` skips it): then what each step of the harness's own costs per call, measured as the
CPU time the harness saves when that one step is skipped (a measurement only: the run is
then not checked), best of ``--repeat`` runs interleaved with whole ones; prints a second
table.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("-k", dest="keywords", action="append")
    ap.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also what each step of the harness costs (default: on)",
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
    print(
        "| adapter | calls | harness CPU s | bare loop CPU s | ratio (CPU) "
        "| overhead per call | harness wall s | bare wall s | ratio (wall) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {adapter.name} | {len(calls)} | {h:.3f} | {b:.3f} | {h / b:.2f} "
        f"| {(h - b) / len(calls) * 1e6:.0f} us | {hw:.3f} | {bw:.3f} | {hw / bw:.2f} |"
    )
    assert len(results) >= len(calls)
    if args.breakdown:
        print()
        print(breakdown(cases, adapter, args.repeat, len(calls)))


def breakdown(cases, adapter, repeat: int, n_calls: int) -> str:
    """The harness's CPU time with each step skipped in turn, against whole runs interleaved
    with those, and what that saves per call."""
    import contextlib

    from harness.cases.model import Case
    from harness.execution import peak_memory, runner
    from harness.execution.compare import Comparison, Errors

    kept: dict = {}
    make_inputs = Case.inputs

    def same_inputs(case, dtype, *, want_grad=True):  # the arrays of the first call, reused
        key = (id(case), dtype, want_grad)
        if key not in kept:
            kept[key] = make_inputs(case, dtype, want_grad=want_grad)
        return kept[key]

    passed = Comparison(True, Errors(0.0, 0.0, 0.0, 0.0), None)
    steps = {
        "fresh inputs (a copy of the cast arrays per call)": [(Case, "inputs", same_inputs)],
        "the in-place write check": [(runner, "mutations", lambda *a: "")],
        "the peak-memory reading (two system calls)": [
            (peak_memory, "reset", lambda: None),
            (peak_memory, "peak_bytes", lambda: 0),
        ],
        "the output checks (type, shape, dtype, bfloat16) and float64 conversion": [
            (runner, "to_array", lambda value, *a, **k: value)
        ],
        "the comparisons (NaN/inf rules, test ratios, ulp statistics)": [
            (runner, "compare", lambda *a, **k: passed)
        ],
    }
    lines = [
        "| step of the harness | harness CPU s | without the step | saves per call |",
        "|---|---|---|---|",
    ]
    for name, patches in steps.items():
        with_it, without = [], []
        for _ in range(repeat):  # interleaved with whole runs: the machine's speed drifts
            with_it.append(_timed(lambda: list(run_all(cases, adapter))))
            with contextlib.ExitStack() as stack:
                for owner, attr, value in patches:
                    stack.enter_context(_patched(owner, attr, value))
                if not without:  # the first time: the reused inputs are made untimed
                    list(run_all(cases, adapter))
                without.append(_timed(lambda: list(run_all(cases, adapter))))
        saved = (min(with_it) - min(without)) / n_calls * 1e6
        lines.append(f"| {name} | {min(with_it):.3f} | {min(without):.3f} | {saved:.0f} us |")
    return "\n".join(lines)


def run_all(cases, adapter):
    from harness.execution.runner import run

    return run(cases, [adapter])


def _timed(f) -> float:
    t = time.process_time()
    f()
    return time.process_time() - t


def _patched(owner, attr: str, value):
    import contextlib

    @contextlib.contextmanager
    def patch():
        old = getattr(owner, attr)
        setattr(owner, attr, value)
        try:
            yield
        finally:
            setattr(owner, attr, old)

    return patch()


if __name__ == "__main__":
    main()
