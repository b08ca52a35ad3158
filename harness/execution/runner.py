"""Running cases through adapters: every case x every adapter x each dtype of the case.

``run_one`` never raises for anything an adapter does: an exception, a wrong
type, shape or dtype all become a Result with status ``error``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from harness.adapters import (
    KERNEL_FEATURES,
    Adapter,
    CallInputs,
    LinearCallInputs,
    LinearOutput,
    Output,
    Unsupported,
)
from harness.cases.generate import FingerprintMismatch
from harness.cases.model import ERROR_KINDS, Case
from harness.cases.tolerance import Tolerance
from harness.dtypes import FORMATS, carrier
from harness.errors import InternalError, UsageError
from harness.execution import peak_memory, streaming
from harness.execution.compare import Errors, compare
from harness.execution.results import Result, Status
from harness.execution.watchdog import CallTimedOut, Watchdog
from harness.oracle.deltas import Deltas
from harness.oracle.dialect import DIALECTS, Dialect, dialect_named
from harness.oracle.problem import Expected


class BadOutput(Exception):
    """An adapter returned something that is not a usable array."""


def _summary(a: np.ndarray) -> object:
    """A short JSON-friendly form of a value for reports: a float, or a shape description."""
    if a.ndim == 0:
        v = float(a)
        return v if math.isfinite(v) else repr(v)
    return f"array{list(a.shape)}"


#: each dtype's carrier (``harness.dtypes.carrier``), looked up once per output array
_CARRIERS = {name: carrier(name) for name in FORMATS}


def to_array(
    value: object, what: str, dtype: str, shape: tuple[int, ...], *, float64: bool = True
) -> np.ndarray:
    """Check an adapter's output and return it as float64 of ``shape`` (the output itself when
    it is float64: read only; ``float64=False``: as it is, in the dtype's carrier, for
    ``compare``, which converts what it needs, or a large gradient, converted block by
    block later)."""
    if type(value) is np.ndarray and value.dtype == _CARRIERS[dtype] and value.shape == shape:
        # the common case, in a few attribute reads: a floating array of the right kind
        arr = value
    else:
        arr = _checked_array(value, what, dtype, shape)
    if dtype == "bfloat16" and not _holds_bfloat16(arr):
        raise BadOutput(f"{what} holds float32 values that are not bfloat16 numbers")
    if not float64 or arr.dtype == np.float64:
        return arr  # compared, never written to: a float64 output needs no copy
    return arr.astype(np.float64)


def _holds_bfloat16(arr: np.ndarray) -> bool:
    """Whether float32 ``arr`` holds only bfloat16 numbers: the low 16 bits of each are 0
    (bfloat16 is float32's upper half); NaN counts as one (``harness.dtypes.is_exact``)."""
    bits = arr.view(np.uint32)
    # every low half 0: two calls, the common case (a ufunc's reduce: no Python wrapper)
    if not np.logical_or.reduce(bits << 16, axis=None):
        return True
    low_bits = np.bitwise_and(bits, 0xFFFF)
    return bool(np.all((low_bits == 0) | np.isnan(arr)))


def _checked_array(value: object, what: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a NumPy array of ``dtype``'s carrier and ``shape``, else BadOutput."""
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
    return arr


def unsupported_by_declaration(
    case: Case, adapter: Adapter, dtype: str, features: frozenset[str] | None = None
) -> list[str]:
    """What the case needs that the adapter lacks: features and dtypes it declares
    ``unsupported``, and opt-in ``KERNEL_FEATURES`` it does not list in ``supports``."""
    if features is None:
        features = case.features()
    unsupported = adapter.unsupported
    if (
        dtype not in unsupported
        and features.isdisjoint(unsupported)
        and (features.isdisjoint(KERNEL_FEATURES) or features & KERNEL_FEATURES <= adapter.supports)
    ):
        return []  # the common case, without building the sets below
    needed = (features - {"grad"}) | {dtype}
    not_opted_in = (needed & KERNEL_FEATURES) - adapter.supports
    return sorted((needed & adapter.unsupported) | not_opted_in)


def _lacking_source(adapter: Adapter, lacking: list[str]) -> str:
    """Where the unsupported claims come from, for the message."""
    opt_in = sorted((set(lacking) & KERNEL_FEATURES) - adapter.unsupported)
    if not opt_in:
        return adapter.unsupported_source
    why = f"{', '.join(opt_in)}: not in the adapter's 'supports' (kernel fields are opt-in)"
    return why if len(opt_in) == len(lacking) else f"{adapter.unsupported_source}; {why}"


#: the input arrays of a plain call, as ``snapshot`` checks them
CALL_ARRAYS = ("logits", "target", "weight", "grad_output")


def snapshot(
    inputs: CallInputs | LinearCallInputs, *, logits: bool = True
) -> dict[str, np.ndarray]:
    """Copies of the input arrays, to find in-place writes after the call (a copy and a
    bitwise comparison cost less than two checksums: about 6 ms for 2M float32 values).
    ``logits=False``: all but the logits (a large case checks them by a checksum)."""
    names = LinearCallInputs.ARRAYS if isinstance(inputs, LinearCallInputs) else CALL_ARRAYS
    arrays = {name: getattr(inputs, name) for name in names if logits or name != "logits"}
    return {k: v.copy() for k, v in arrays.items() if isinstance(v, np.ndarray)}


#: unsigned integers of each float's width, to compare floats bit by bit
_BITS = {8: np.uint64, 4: np.uint32, 2: np.uint16}
#: arrays up to this size are first compared as bytes (a copy of a larger one costs more)
_BYTES_AT_ONCE = 1 << 16


def mutations(
    inputs: CallInputs | LinearCallInputs,
    before: dict[str, np.ndarray],
    gradient: object | None = None,
) -> str:
    """'' when the inputs are bitwise unchanged, else a message naming each changed array.

    ``gradient``: the gradient an adapter that declares ``inplace_backward`` returned; its
    logits array may then hold exactly that gradient (bitwise, in the logits' dtype) instead
    of the logits, and nothing else."""
    if gradient is None:  # the common case first: every array the same, bitwise
        for name, old in before.items():
            new = getattr(inputs, name)
            # a copy shares its original's dtype object: ``is`` says equal, at no cost
            if not (
                new.dtype is old.dtype
                and new.shape == old.shape
                and old.nbytes <= _BYTES_AT_ONCE
                and old.tobytes() == new.tobytes()
            ):
                break
        else:
            return ""
    changed = []
    for name, old in before.items():
        new = getattr(inputs, name)
        if name == "logits" and gradient is not None and _holds(new, gradient):
            continue
        if new.shape != old.shape or new.dtype != old.dtype:
            changed.append(f"{name!r} (now shape {new.shape}, dtype {new.dtype})")
            continue
        if old.nbytes <= _BYTES_AT_ONCE and old.tobytes() == new.tobytes():
            continue  # bitwise equal: one copy and a memcmp each, cheaper than the ufuncs
        if old.dtype.kind == "f":  # bitwise: NaN payloads and -0.0 count
            old, new = old.view(_BITS[old.itemsize]), new.view(_BITS[old.itemsize])
        n = int(np.count_nonzero(old != new))
        if n:
            changed.append(f"{name!r} ({n} of {old.size} elements)")
    if not changed:
        return ""
    if gradient is not None:
        return (
            f"modified its input {', '.join(changed)} in place: with inplace_backward the "
            "logits may hold exactly the returned gradient, and no other input may change"
        )
    return (
        f"modified its input {', '.join(changed)} in place: an implementation must not "
        "write to its inputs (copy them first)"
    )


def _holds(array: np.ndarray, gradient: object) -> bool:
    """Whether ``array`` holds ``gradient`` bitwise (same shape, in the array's dtype)."""
    try:
        g = np.asarray(gradient)
    except Exception:  # a framework object that will not convert: not the gradient
        return False
    if g.shape != array.shape or g.dtype != array.dtype:
        return False
    bits = f"u{array.itemsize}"
    return bool(np.array_equal(array.reshape(-1).view(bits), g.reshape(-1).view(bits)))


def adapter_dialect(adapter: Adapter) -> Dialect:
    """The dialect ``adapter`` declares (its ``semantics``); UsageError for an unknown name."""
    found = DIALECTS.get(adapter.semantics)  # a look-up: every call asks
    if found is not None:
        return found
    try:
        return dialect_named(adapter.semantics, f"adapter {adapter.name!r}: semantics")
    except ValueError as e:
        raise UsageError(str(e)) from None


def _call(
    adapter: Adapter, inputs: CallInputs | LinearCallInputs, watchdog: Watchdog | None
) -> object:
    def call() -> object:
        if isinstance(inputs, LinearCallInputs):
            return adapter.run_linear(inputs)
        return adapter.run(inputs)

    if watchdog is None:
        return call()
    return watchdog.call(adapter, call)


def new_result(case: Case, adapter: Adapter, dtype: str, dialect: Dialect) -> Result:
    """The record of one call before it runs: passing until something says otherwise."""
    return Result(
        case_id=case.id,
        adapter=adapter.name,
        dtype=dtype,
        status=Status.PASS,
        case_hash=case.content_hash,
        tags=case.tags,
        semantics=dialect.name,
    )


@dataclass(slots=True)
class _Prepared:
    """One call before it runs: its result record, and its inputs unless the result is
    already settled."""

    result: Result
    dialect: Dialect
    inputs: CallInputs | LinearCallInputs | None = None
    #: the inputs were made block by block (harness.execution.streaming), with this checksum
    large: bool = False
    digest: streaming.LogitsDigest | None = None
    #: the large case's expected gradient, computed while its logits were made
    ahead: streaming.Ahead | None = None


def _prepare(case: Case, adapter: Adapter, dtype: str, *, stream: bool) -> _Prepared:
    """The result record of one call and its inputs; inputs None when the result is settled
    before any call: ``unsupported`` by the adapter's declaration or by its dialect, or an
    ``error`` for inputs that cannot be made. ``stream``: a large case's inputs may be made
    block by block (``harness.execution.streaming``)."""
    dialect = adapter_dialect(adapter)
    prepared = _Prepared(new_result(case, adapter, dtype, dialect), dialect)
    result = prepared.result
    try:
        features = case.features()
        result.features = case.sorted_features
        lacking = unsupported_by_declaration(case, adapter, dtype, features)
        undefined = (
            [] if features.isdisjoint(dialect.undefined)
            else sorted((features & dialect.undefined) - set(lacking))
        )  # fmt: skip
        # grad_output only shapes the gradient: without it the loss is still checked
        no_grad_output = "grad_output" in lacking
        if no_grad_output:
            lacking.remove("grad_output")
        want_grad = "grad" not in adapter.unsupported and not no_grad_output
        # fused cases never stream; nor a case whose values a dialect changes (its expected
        # values are computed whole, under the dialect)
        fused = case.fused
        prepared.large = (
            stream
            and not fused
            and streaming.applies(case)
            and features.isdisjoint(dialect.differs_on)
        )
        inputs: CallInputs | LinearCallInputs
        if fused:
            inputs = case.linear_inputs(dtype, want_grad=want_grad)
        elif prepared.large:  # made in the dtype block by block, checksummed as they are made
            inputs, prepared.digest, prepared.ahead = streaming.fresh_inputs(case, dtype, want_grad)
        else:
            inputs = case.inputs(dtype, want_grad=want_grad)
    except FingerprintMismatch as e:  # a large recipe, made only now (see validation)
        result.status = Status.ERROR
        result.message = f"the case's inputs cannot be made: {e}"
        return prepared
    except Exception as e:  # the safety net: a bug of ours, never an adapter's result
        raise InternalError.during(f"making its {dtype} inputs", case.file, case.name, e) from e
    if lacking:
        result.status = Status.UNSUPPORTED
        result.message = f"needs {', '.join(lacking)} ({_lacking_source(adapter, lacking)})"
        return prepared
    if undefined:
        result.status = Status.UNSUPPORTED
        result.message = (
            f"needs {', '.join(undefined)}, which the {dialect.name} semantics do not define"
        )
        return prepared
    if not want_grad and case.expect_error is None:
        why = "takes no grad_output" if no_grad_output else "gives no gradient"
        result.notes.append(f"loss only: the adapter {why}")
    prepared.inputs = inputs
    return prepared


def begin(
    case: Case, adapter: Adapter, dtype: str
) -> tuple[Result, CallInputs | LinearCallInputs | None]:
    """The result record of one call and the call's inputs, made whole in memory (as
    ``harness.execution.vocab_parallel`` needs them to cut shards); inputs None when the
    result is already settled (``unsupported`` by declaration or by the adapter's dialect,
    or inputs that cannot be made). ``run_one`` does the same, streaming the inputs of a
    large case."""
    prepared = _prepare(case, adapter, dtype, stream=False)
    return prepared.result, prepared.inputs


def run_one(
    case: Case,
    adapter: Adapter,
    dtype: str,
    *,
    timeout: float | None = None,
    watchdog: Watchdog | None = None,
) -> Result:
    """One call of ``adapter`` on ``case`` in ``dtype``, checked; never raises for the adapter.

    ``timeout`` (seconds): stop waiting and report ``timeout`` (see ``harness.execution.watchdog``).
    ``watchdog``: the run's adapter threads, which ``run`` passes; without it a call with a
    timeout gets a thread of its own and no warm-up allowance.
    Inputs written to by the adapter make the result ``error``, whatever it returned.
    """
    if timeout is not None and watchdog is None:
        with Watchdog(timeout, warm_up=timeout) as lone:
            return run_one(case, adapter, dtype, watchdog=lone)
    prepared = _prepare(case, adapter, dtype, stream=True)
    result, dialect, inputs = prepared.result, prepared.dialect, prepared.inputs
    large, digest = prepared.large, prepared.digest
    if inputs is None:
        return result
    # a small case's kept cast arrays are what its fresh inputs were copied from; a large
    # case's logits are checked by their checksum
    if large:
        before = snapshot(inputs, logits=False)
    else:
        before = case.kept_inputs(dtype) or snapshot(inputs)
    output = _call_and_check(
        case, adapter, dtype, inputs, watchdog, result, dialect, check=not large
    )
    if digest is not None and result.status is not Status.TIMEOUT:
        assert isinstance(inputs, CallInputs)  # only logits cases stream
        pristine = inputs
        kept = prepared.ahead.kept if prepared.ahead is not None else None
        if not digest.matches(inputs.logits):  # written to: made again, to say where
            pristine = streaming.pristine_inputs(case, dtype, inputs.want_grad)
            before["logits"] = pristine.logits
            kept = None  # computed from the logits as made: computed again
        if result.status is Status.PASS:  # the call returned: its values, block by block
            _check_values(
                case, dtype, inputs, output, result, dialect, pristine=pristine, kept=kept
            )  # fmt: skip
    if result.status is not Status.TIMEOUT:  # a timed-out call may still be writing
        # a fused linear call has no logits array to write the gradient into
        inplace = adapter.inplace_backward and not case.fused
        written = getattr(output, "grad", None) if inplace else None
        mutated = mutations(inputs, before, written)
        if mutated:
            was = f"{result.status.value}: {result.message}" if result.message else "pass"
            result.message = f"{mutated} (otherwise: {was})"
            result.status = Status.ERROR
            result.torch_status = None  # an error under every dialect
    return result


def _call_and_check(
    case: Case,
    adapter: Adapter,
    dtype: str,
    inputs: CallInputs | LinearCallInputs,
    watchdog: Watchdog | None,
    result: Result,
    dialect: Dialect,
    *,
    check: bool = True,
) -> object:
    """Call the adapter and check what it returned into ``result`` (``check=False``: leave
    the values to the caller); returns the output (None when the call raised or timed out)."""
    peak_memory.reset()
    start = time.perf_counter()
    try:
        if watchdog is not None:
            output = _call(adapter, inputs, watchdog)
        elif isinstance(inputs, LinearCallInputs):
            output = adapter.run_linear(inputs)
        else:
            output = adapter.run(inputs)
    except CallTimedOut as e:
        assert watchdog is not None
        result.seconds = time.perf_counter() - start
        result.status = Status.TIMEOUT
        limit = watchdog.seconds
        result.message = f"--timeout {limit:g}: {e} (abandoned in its thread, not killed)"
        return None
    except (Unsupported, NotImplementedError) as e:
        result.seconds = time.perf_counter() - start
        result.status = Status.UNSUPPORTED
        result.message = f"raised by the adapter: {type(e).__name__}: {e}".rstrip(": ")
        return None
    except Exception as e:
        result.seconds = time.perf_counter() - start
        if case.expect_error is not None:
            result.status = Status.RAISED
            result.message = f"raised {type(e).__name__}: {e}"
        else:
            result.status = Status.ERROR
            result.message = f"raised {type(e).__name__}: {e}"
        return None
    finally:
        result.peak_rss_bytes = peak_memory.peak_bytes()
    result.seconds = time.perf_counter() - start
    if case.expect_error is not None:
        result.status = Status.MISSING_ERROR
        got = getattr(output, "loss", output)
        result.message = (
            f"returned {_safe_repr(got)} instead of raising: expected an error for "
            f"{case.expect_error} ({ERROR_KINDS[case.expect_error]})"
        )
        return output
    if not check:
        return output
    if isinstance(inputs, LinearCallInputs):
        _check_linear_values(case, dtype, inputs, output, result)
    else:
        _check_values(case, dtype, inputs, output, result, dialect)
    return output


def _safe_repr(value: object) -> str:
    try:
        text = repr(np.asarray(value).tolist()) if not isinstance(value, str) else repr(value)
    except Exception:
        text = f"a {type(value).__name__}"
    return text if len(text) < 80 else text[:77] + "..."


def check_values(
    case: Case, dtype: str, inputs: CallInputs, output: object, result: Result
) -> None:
    """Compare an adapter's ``output`` with the expected values of ``case`` in ``dtype``; sets
    ``result``'s status, message, errors and loss summaries (``inputs.want_grad``: whether
    the gradient is checked), under the dialect ``result.semantics`` names."""
    dialect = dialect_named(result.semantics, f"adapter {result.adapter!r}: semantics")
    _check_values(case, dtype, inputs, output, result, dialect)


def check_linear_values(
    case: Case, dtype: str, inputs: LinearCallInputs, output: object, result: Result
) -> None:
    """``check_values`` for a fused linear call (``LinearOutput``)."""
    _check_linear_values(case, dtype, inputs, output, result)


def _check_values(
    case: Case,
    dtype: str,
    inputs: CallInputs,
    output: object,
    result: Result,
    dialect: Dialect,
    pristine: CallInputs | None = None,
    kept: Deltas | None = None,
) -> None:
    """``pristine``: a large case's unmodified inputs, whose expected values are computed and
    compared block by block (``harness.execution.streaming``); ``kept``: their expected
    gradient, computed while they were made (``streaming.Ahead``)."""
    if pristine is not None and _check_streamed(
        case, dtype, inputs, output, result, pristine, kept
    ):
        return
    try:
        expected = case.expected_for(dtype, dialect)
    except Exception as e:  # the safety net: a bug of ours, never an adapter's result
        raise InternalError.during(
            f"computing its {dtype} expected values", case.file, case.name, e
        ) from e
    result.expected_loss = _summary(expected.loss)
    if not isinstance(output, Output):
        result.status = Status.ERROR
        result.message = f"returned a {type(output).__name__}: expected adapters.Output(loss, grad)"
        return
    tol = case.tolerance(dtype)
    # in the dtype's carrier: compare reads them as float64 (a copy only where it needs one)
    try:
        loss = to_array(output.loss, "loss", dtype, expected.loss.shape, float64=False)
        grad = None
        if inputs.want_grad and expected.grad is not None:
            if output.grad is None:
                raise BadOutput(
                    "grad is None (declare 'grad' in unsupported to be checked for loss only)"
                )
            grad = to_array(output.grad, "grad", dtype, expected.grad.shape, float64=False)
        z_loss = None
        if expected.z_loss is not None:  # the case sets return_z_loss
            if output.z_loss is None:
                raise BadOutput("z_loss is None: the case sets return_z_loss (Output.z_loss)")
            z_loss = to_array(output.z_loss, "z_loss", dtype, expected.z_loss.shape, float64=False)
    except BadOutput as e:
        result.status = Status.ERROR
        result.message = str(e)
        return
    result.got_loss = _summary(loss)
    got = (loss, grad, z_loss)
    messages, result.loss_errors, result.grad_errors = _verdict(got, expected, dtype, tol)
    if messages:
        result.status = Status.FAIL
        result.message = "; ".join(messages)
    if not case.features().isdisjoint(dialect.differs_on):  # PyTorch's differ: its verdict beside
        torch_expected = case.expected_for(dtype)
        torch_messages, _, _ = _verdict(got, torch_expected, dtype, tol)
        result.torch_status = Status.FAIL if torch_messages else Status.PASS
        result.torch_message = "; ".join(torch_messages)


def _verdict(
    got: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    expected: Expected,
    dtype: str,
    tol: Tolerance,
) -> tuple[list[str], Errors, Errors | None]:
    """Compare the (loss, grad, z_loss) an adapter returned (grad and z_loss None where not
    checked) with ``expected``: the messages of what differed (none: it conforms) and the
    errors of the loss and of the gradient."""
    loss, grad, z_loss = got
    assert expected.loss_bound is not None  # expected_for gives the bounds with the values
    lc = compare(
        loss, expected.loss, expected.loss_bound, dtype, "loss",
        rtol=tol.loss_rtol, atol=tol.loss_atol,
    )  # fmt: skip
    # a comparison carries a message exactly when it fails
    messages = [lc.message] if lc.message is not None else []
    grad_errors = None
    if grad is not None:  # only where the expected values have a gradient (with its bound)
        assert expected.grad is not None and expected.grad_bound is not None
        gc = compare(
            grad, expected.grad, expected.grad_bound, dtype, "grad",
            rtol=tol.grad_rtol, atol=tol.grad_atol,
        )  # fmt: skip
        grad_errors = gc.errors
        if gc.message is not None:
            messages.append(gc.message)
    if z_loss is not None:  # compared like the loss, against its own bound
        assert expected.z_loss is not None and expected.z_loss_bound is not None
        zc = compare(
            z_loss, expected.z_loss, expected.z_loss_bound, dtype, "z_loss",
            rtol=tol.loss_rtol, atol=tol.loss_atol,
        )  # fmt: skip
        if zc.message is not None:
            messages.append(zc.message)
    return messages, lc.errors, grad_errors


def _check_linear_values(
    case: Case, dtype: str, inputs: LinearCallInputs, output: object, result: Result
) -> None:
    """``_check_values`` for a fused linear call: the loss, the three gradients (each against
    its own bounds; the result's ``grad_errors`` is the worst of them) and the z-loss."""
    try:
        expected = case.linear_expected_for(dtype)
    except Exception as e:  # the safety net: a bug of ours, never an adapter's result
        raise InternalError.during(
            f"computing its {dtype} expected values", case.file, case.name, e
        ) from e
    assert expected.loss_bound is not None
    result.expected_loss = _summary(expected.loss)
    if not isinstance(output, LinearOutput):
        result.status = Status.ERROR
        result.message = (
            f"returned a {type(output).__name__}: expected adapters.LinearOutput(loss, "
            "grad_hidden, grad_classifier, grad_bias)"
        )
        return
    tol = case.tolerance(dtype)
    checks: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    try:
        loss = to_array(output.loss, "loss", dtype, expected.loss.shape)
        if inputs.want_grad:
            for name in expected.GRADIENTS:
                want = getattr(expected, name)
                if want is None:  # no bias, or a case without gradients
                    if name == "grad_bias" and output.grad_bias is not None:
                        raise BadOutput("grad_bias is not None, but the case has no bias")
                    continue
                got = getattr(output, name)
                if got is None:
                    raise BadOutput(
                        f"{name} is None (declare 'grad' in unsupported to be checked for "
                        "loss only)"
                    )
                bound = getattr(expected, f"{name}_bound")
                checks.append((name, to_array(got, name, dtype, want.shape), want, bound))
        if expected.z_loss is not None:
            if output.z_loss is None:
                raise BadOutput("z_loss is None: the case sets return_z_loss (Output.z_loss)")
            assert expected.z_loss_bound is not None
            z = to_array(output.z_loss, "z_loss", dtype, expected.z_loss.shape)
            checks.append(("z_loss", z, expected.z_loss, expected.z_loss_bound))
    except BadOutput as e:
        result.status = Status.ERROR
        result.message = str(e)
        return
    result.got_loss = _summary(loss)
    lc = compare(
        loss, expected.loss, expected.loss_bound, dtype, "loss",
        rtol=tol.loss_rtol, atol=tol.loss_atol,
    )  # fmt: skip
    result.loss_errors = lc.errors
    messages = [lc.message] if lc.message is not None else []
    for name, got, want, bound in checks:
        loss_like = name == "z_loss"
        c = compare(
            got, want, bound, dtype, name,
            rtol=tol.loss_rtol if loss_like else tol.grad_rtol,
            atol=tol.loss_atol if loss_like else tol.grad_atol,
        )  # fmt: skip
        if not loss_like and (
            result.grad_errors is None or c.errors.max_ratio > result.grad_errors.max_ratio
        ):
            result.grad_errors = c.errors
        if c.message is not None:
            messages.append(c.message)
    if messages:
        result.status = Status.FAIL
        result.message = "; ".join(messages)


def run(
    cases: Iterable[Case],
    adapters: list[Adapter],
    *,
    on_result: Callable[[Result], None] | None = None,
    timeout: float | None = None,
    call: Callable[..., Result] | None = None,
) -> Iterator[Result]:
    """Yield results case by case; adapters in the given order, dtypes in the case's order.

    ``call(case, adapter, dtype, timeout=...)`` runs one (default ``run_one``, with each
    adapter's calls on one thread of its own under ``timeout``; ``--isolate`` passes
    ``harness.execution.isolate.IsolatedPool.run_one``).
    """
    watchdog = Watchdog(timeout) if timeout is not None and call is None else None
    try:
        for case in cases:
            for adapter in adapters:
                for dtype in case.dtypes:
                    if call is None:
                        r = run_one(case, adapter, dtype, timeout=timeout, watchdog=watchdog)
                    else:
                        r = call(case, adapter, dtype, timeout=timeout)
                    if on_result is not None:
                        on_result(r)
                    yield r
    finally:
        if watchdog is not None:
            watchdog.close()


def _check_streamed(
    case: Case,
    dtype: str,
    inputs: CallInputs,
    output: object,
    result: Result,
    pristine: CallInputs,
    kept: Deltas | None,
) -> bool:
    """``_check_values`` of a large case, with the same results; False where the streaming
    oracle does not apply (the caller then takes the plain path)."""
    tol = case.tolerance(dtype)
    grad = None
    try:
        if isinstance(output, Output) and inputs.want_grad and output.grad is not None:
            grad = to_array(output.grad, "grad", dtype, case.logits_shape, float64=False)
    except BadOutput:
        grad = None  # reported below, in the plain path's order
    if grad is not None:
        streamed = streaming.check_gradient(
            case, dtype, pristine, grad, tol.grad_rtol, tol.grad_atol, kept=kept
        )  # fmt: skip
        if streamed is None:
            return False
        expected, grad_comparison = streamed
    else:
        found = streaming.expected_loss(case, dtype, pristine)
        if found is None:
            return False
        expected, grad_comparison = found, None
    assert expected.loss_bound is not None
    result.expected_loss = _summary(expected.loss)
    if not isinstance(output, Output):
        result.status = Status.ERROR
        result.message = f"returned a {type(output).__name__}: expected adapters.Output(loss, grad)"
        return True
    try:
        loss = to_array(output.loss, "loss", dtype, expected.loss.shape)
        if inputs.want_grad and output.grad is None:
            raise BadOutput(
                "grad is None (declare 'grad' in unsupported to be checked for loss only)"
            )
        if inputs.want_grad and grad is None:  # the check that failed above, for its message
            to_array(output.grad, "grad", dtype, case.logits_shape, float64=False)
    except BadOutput as e:
        result.status = Status.ERROR
        result.message = str(e)
        return True
    result.got_loss = _summary(loss)
    lc = compare(
        loss, expected.loss, expected.loss_bound, dtype, "loss",
        rtol=tol.loss_rtol, atol=tol.loss_atol,
    )  # fmt: skip
    result.loss_errors = lc.errors
    messages = [lc.message] if lc.message is not None else []
    if grad_comparison is not None:
        result.grad_errors = grad_comparison.errors
        if grad_comparison.message is not None:
            messages.append(grad_comparison.message)
    if messages:
        result.status = Status.FAIL
        result.message = "; ".join(messages)
    return True
