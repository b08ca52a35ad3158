"""Running cases through adapters: every case x every adapter x each dtype of the case.

``run_one`` never raises for anything an adapter does: an exception, a wrong
type, shape or dtype all become a Result with status ``error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from adapters import Adapter, CallInputs, Output, Unsupported
from harness.case import ERROR_KINDS, Case
from harness.compare import compare
from harness.dtypes import carrier, is_exact
from harness.results import Result, Status


class BadOutput(Exception):
    """An adapter returned something that is not a usable array."""


def _summary(a: np.ndarray) -> object:
    """A short JSON-friendly form of a value for reports: a float, or a shape description."""
    if a.ndim == 0:
        v = float(a)
        return v if np.isfinite(v) else repr(v)
    return f"array{list(a.shape)}"


def to_array(value: object, what: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Check an adapter's output and return it as float64 of ``shape``."""
    if value is None:
        raise BadOutput(f"{what} is None")
    if isinstance(value, (list, tuple)):
        raise BadOutput(f"{what} is a {type(value).__name__}: expected a NumPy array or float")
    try:
        arr = np.asarray(value)
    except Exception as e:  # a framework object that will not convert
        raise BadOutput(
            f"{what} is a {type(value).__module__}.{type(value).__name__} that NumPy cannot read "
            f"({type(e).__name__}: {e}); return a NumPy array"
        ) from None
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        raise BadOutput(f"{what} has dtype {arr.dtype}: expected a floating array")
    if arr.shape != shape:
        raise BadOutput(f"{what} has shape {arr.shape}, expected {shape}")
    if arr.dtype != carrier(dtype):
        raise BadOutput(
            f"{what} has dtype {arr.dtype}, expected {carrier(dtype)} for a {dtype} case"
        )
    if dtype == "bfloat16" and not is_exact(arr.astype(np.float64), "bfloat16"):
        raise BadOutput(f"{what} holds float32 values that are not bfloat16 numbers")
    return arr.astype(np.float64)


def _unsupported_by_declaration(case: Case, adapter: Adapter, dtype: str) -> list[str]:
    needed = (case.features() - {"grad"}) | {dtype}
    return sorted(needed & adapter.unsupported)


def run_one(case: Case, adapter: Adapter, dtype: str) -> Result:
    result = Result(
        case_id=case.id,
        adapter=adapter.name,
        dtype=dtype,
        status=Status.PASS,
        case_hash=case.content_hash,
        tags=case.tags,
        features=tuple(sorted(case.features())),
    )
    lacking = _unsupported_by_declaration(case, adapter, dtype)
    if lacking:
        result.status = Status.UNSUPPORTED
        result.message = f"needs {', '.join(lacking)} ({adapter.unsupported_source})"
        return result
    want_grad = "grad" not in adapter.unsupported
    if not want_grad and case.expect_error is None:
        result.notes.append("loss only: the adapter gives no gradient")
    inputs = case.inputs(dtype, want_grad=want_grad)
    start = time.perf_counter()
    try:
        output = adapter.run(inputs)
    except (Unsupported, NotImplementedError) as e:
        result.seconds = time.perf_counter() - start
        result.status = Status.UNSUPPORTED
        result.message = f"raised by the adapter: {type(e).__name__}: {e}".rstrip(": ")
        return result
    except Exception as e:
        result.seconds = time.perf_counter() - start
        if case.expect_error is not None:
            result.status = Status.RAISED
            result.message = f"raised {type(e).__name__}: {e}"
        else:
            result.status = Status.ERROR
            result.message = f"raised {type(e).__name__}: {e}"
        return result
    result.seconds = time.perf_counter() - start
    if case.expect_error is not None:
        result.status = Status.MISSING_ERROR
        got = getattr(output, "loss", output)
        result.message = (
            f"returned {_safe_repr(got)} instead of raising: expected an error for "
            f"{case.expect_error} ({ERROR_KINDS[case.expect_error]})"
        )
        return result
    _check_values(case, dtype, inputs, output, result)
    return result


def _safe_repr(value: object) -> str:
    try:
        text = repr(np.asarray(value).tolist()) if not isinstance(value, str) else repr(value)
    except Exception:
        text = f"a {type(value).__name__}"
    return text if len(text) < 80 else text[:77] + "..."


def _check_values(
    case: Case, dtype: str, inputs: CallInputs, output: object, result: Result
) -> None:
    expected = case.expected_for(dtype)
    result.expected_loss = _summary(expected.loss)
    if not isinstance(output, Output):
        result.status = Status.ERROR
        result.message = f"returned a {type(output).__name__}: expected adapters.Output(loss, grad)"
        return
    tol = case.tolerance(dtype)
    try:
        loss = to_array(output.loss, "loss", dtype, expected.loss.shape)
        grad = None
        if inputs.want_grad and expected.grad is not None:
            if output.grad is None:
                raise BadOutput(
                    "grad is None (declare 'grad' in unsupported to be checked for loss only)"
                )
            grad = to_array(output.grad, "grad", dtype, expected.grad.shape)
    except BadOutput as e:
        result.status = Status.ERROR
        result.message = str(e)
        return
    result.got_loss = _summary(loss)
    lc = compare(loss, expected.loss, dtype, tol.loss_rtol, tol.loss_atol, "loss")
    result.loss_errors = lc.errors
    messages = [lc.message] if not lc.ok else []
    if grad is not None:
        gc = compare(grad, expected.grad, dtype, tol.grad_rtol, tol.grad_atol, "grad")
        result.grad_errors = gc.errors
        if not gc.ok:
            messages.append(gc.message)
    if messages:
        result.status = Status.FAIL
        result.message = "; ".join(messages)


def run(
    cases: Iterable[Case],
    adapters: list[Adapter],
    *,
    on_result: Callable[[Result], None] | None = None,
) -> Iterator[Result]:
    """Yield results case by case; adapters in the given order, dtypes in the case's order."""
    for case in cases:
        for adapter in adapters:
            for dtype in case.dtypes:
                r = run_one(case, adapter, dtype)
                if on_result is not None:
                    on_result(r)
                yield r
