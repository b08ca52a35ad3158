"""Metamorphic properties: relations between an adapter's own outputs that need no oracle.

Each property transforms a call, runs the adapter on both (or on a variant of
the reduction), and checks a relation that PyTorch's semantics imply exactly:

- ``shift_invariance``: adding a constant to one position's logits changes nothing;
- ``class_permutation``: rolling the class axis (weights, targets rolled with it)
  rolls the gradient and leaves the loss unchanged;
- ``reduction_consistency``: sum = sum(none); mean = sum(none) / denominator
  (sum over non-ignored positions of w[y], or the number of positions for
  probability targets); the gradients alike;
- ``kdim_flatten``: (N, C, d1, ..., dK) equals the class-last flattened (P, C) call;
- ``grad_rows_sum_zero``: every position's gradient sums to zero over the classes
  (softmax minus a distribution with the same total), where logits and gradient are finite.

Both sides carry rounding error, so a relation holds within twice the case's
tolerance (each side is within one tolerance of the same exact value); sums
over P positions add P times the absolute tolerance. A check raises
``NotApplicable`` when the call does not exercise the property (C = 1, no
exact shift in the dtype, ...) and returns a ``Violation`` when the relation fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from adapters import Adapter, CallInputs, Output, Unsupported
from harness.case import Case
from harness.compare import compare
from harness.dtypes import cast, is_exact
from harness.runner import BadOutput, to_array
from harness.tolerance import Tolerance


class NotApplicable(Exception):
    """The call does not exercise the property (or the adapter declines it)."""


@dataclass
class Violation:
    """A failed relation: ``message`` in words, ``variants`` the calls involved, by role."""

    prop: str
    message: str
    variants: dict[str, CallInputs] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """An adapter's checked output in float64: loss of the reduced shape, grad or None."""

    loss: np.ndarray
    grad: np.ndarray | None


def _loss_shape(inputs: CallInputs) -> tuple[int, ...]:
    x = inputs.logits
    if inputs.reduction != "none" or x.ndim == 1:
        return ()
    return (x.shape[0], *x.shape[2:])


def call(adapter: Adapter, inputs: CallInputs) -> Outcome:
    """Run and check one call; raise BadOutput (or what the adapter raised) on failure."""
    try:
        out = adapter.run(inputs)
    except (Unsupported, NotImplementedError) as e:
        raise NotApplicable(f"the adapter declines: {e}") from e
    if not isinstance(out, Output):
        raise BadOutput(f"returned a {type(out).__name__}: expected adapters.Output")
    loss = to_array(out.loss, "loss", inputs.dtype, _loss_shape(inputs))
    grad = None
    if inputs.want_grad and out.grad is not None:
        grad = to_array(out.grad, "grad", inputs.dtype, inputs.logits.shape)
    return Outcome(loss, grad)


def _base(adapter: Adapter, case: Case, dtype: str) -> tuple[CallInputs, Outcome]:
    """The case's own call and output; a failing original call is the oracle check's business."""
    inputs = case.inputs(dtype, want_grad="grad" not in adapter.unsupported)
    try:
        return inputs, call(adapter, inputs)
    except NotApplicable:
        raise
    except Exception as e:
        raise NotApplicable(f"the original call fails ({type(e).__name__}); see 'oracle'") from e


def _variant(adapter: Adapter, prop: str, inputs: CallInputs, variants: dict) -> Outcome:
    """Run a transformed call; an exception there is a violation of ``prop``."""
    try:
        return call(adapter, inputs)
    except NotApplicable:
        raise
    except Exception as e:
        raise _Raised(
            Violation(prop, f"the transformed call raised {type(e).__name__}: {e}", variants)
        ) from e


class _Raised(Exception):
    def __init__(self, violation: Violation) -> None:
        self.violation = violation


def _mismatch(got, want, dtype: str, tol: Tolerance, what: str, scale: float = 2.0) -> str | None:
    """None when ``got`` matches ``want`` within ``scale`` times the tolerance, else the message."""
    rtol = tol.loss_rtol if what.startswith("loss") else tol.grad_rtol
    atol = tol.loss_atol if what.startswith("loss") else tol.grad_atol
    c = compare(got, want, dtype, scale * rtol, scale * atol, what)
    return None if c.ok else c.message


def _rows(x: np.ndarray) -> np.ndarray:
    """(C,) or (N, C, d...) as (P, C), class axis last (a copy)."""
    if x.ndim == 1:
        return x[None, :].copy()
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]).copy()


def _unrows(rows: np.ndarray, like: np.ndarray) -> np.ndarray:
    if like.ndim == 1:
        return rows.reshape(like.shape)
    moved = (like.shape[0], *like.shape[2:], like.shape[1])
    return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), -1, 1))


def _compare_outcomes(
    prop: str, a: Outcome, b: Outcome, dtype: str, tol: Tolerance, variants: dict
) -> Violation | None:
    problems = [_mismatch(b.loss, a.loss, dtype, tol, "loss")]
    if a.grad is not None and b.grad is not None:
        problems.append(_mismatch(b.grad, a.grad, dtype, tol, "grad"))
    found = [p for p in problems if p]
    if not found:
        return None
    return Violation(prop, "; ".join(found) + " (variant vs original)", variants)


def shift_invariance(adapter: Adapter, case: Case, dtype: str) -> Violation | None:
    """Add the largest constant that keeps it exact to the logits of the position with the largest |x|."""
    inputs, base = _base(adapter, case, dtype)
    rows = _rows(inputs.logits.astype(np.float64))
    if rows.size == 0:
        raise NotApplicable("empty")
    finite = np.where(np.isfinite(rows), np.abs(rows), -1.0)
    p = int(np.argmax(finite.max(axis=1)))
    row = rows[p]
    top = float(np.max(np.abs(row[np.isfinite(row)]), initial=1.0))
    exponents = range(-3, min(int(np.floor(np.log2(max(top, 1.0)))) + 5, 1024))
    # the largest exact constant first: it stresses the row most (overflow without a max shift)
    for shift in [s * 2.0**e for e in reversed(exponents) for s in (1.0, -1.0)]:
        with np.errstate(over="ignore", invalid="ignore"):
            moved = row + shift
        same_kind = np.all(np.isfinite(moved) == np.isfinite(row))
        changed = np.any(moved[np.isfinite(row)] != row[np.isfinite(row)])
        if same_kind and changed and is_exact(moved, dtype):
            break
    else:
        raise NotApplicable("no constant keeps this row exact in the dtype")
    rows[p] = moved
    shifted = replace(inputs, logits=cast(_unrows(rows, inputs.logits), dtype))
    variants = {"original": inputs, "shifted": shifted}
    other = _variant(adapter, "shift_invariance", shifted, variants)
    found = _compare_outcomes(
        "shift_invariance", base, other, dtype, case.tolerance(dtype), variants
    )
    if found is not None:
        found.message += f"; {shift!r} added to the logits of position {p}"
    return found


def class_permutation(adapter: Adapter, case: Case, dtype: str) -> Violation | None:
    """Roll the class axis by k: x'[j] = x[j + k]; targets, weights and probabilities follow."""
    inputs, base = _base(adapter, case, dtype)
    x = inputs.logits
    axis = 0 if x.ndim == 1 else 1
    c = x.shape[axis]
    if c < 2:
        raise NotApplicable("one class")
    t, ii = inputs.target, inputs.ignore_index
    for k in range(1, c):
        if inputs.probability_target:
            new_t = np.roll(t, -k, axis=axis)
            break
        kept = t != ii
        new_t = np.where(kept, (t - k) % c, ii).astype(t.dtype)
        if not np.any(kept & (new_t == ii)):  # a moved label must not land on ignore_index
            break
    else:
        raise NotApplicable("every roll moves a label onto ignore_index")
    rolled = replace(
        inputs,
        logits=np.roll(x, -k, axis=axis),
        target=new_t,
        weight=None if inputs.weight is None else np.roll(inputs.weight, -k),
    )
    variants = {"original": inputs, "classes_rolled": rolled}
    other = _variant(adapter, "class_permutation", rolled, variants)
    if other.grad is not None:
        other = Outcome(other.loss, np.roll(other.grad, k, axis=axis))
    found = _compare_outcomes(
        "class_permutation", base, other, dtype, case.tolerance(dtype), variants
    )
    if found is not None:
        found.message += f"; classes rolled by {k}"
    return found


def _denominator(inputs: CallInputs) -> float:
    """The mean's denominator in float64: sum of w[y] over kept positions, or P for probabilities."""
    x, t = inputs.logits, inputs.target
    if inputs.probability_target:
        return float(x.size // (x.shape[0] if x.ndim == 1 else x.shape[1]))
    labels = t.reshape(-1)
    kept = labels[labels != inputs.ignore_index]
    if inputs.weight is None:
        return float(kept.size)
    return float(np.sum(inputs.weight.astype(np.float64)[kept]))


def reduction_consistency(adapter: Adapter, case: Case, dtype: str) -> Violation | None:
    """sum = sum(none) and mean = sum(none) / denominator, for the loss and the gradient."""
    if case.reduction == "none" or "reduction_none" in adapter.unsupported:
        raise NotApplicable("needs mean or sum, and none")
    inputs, base = _base(adapter, case, dtype)
    none = replace(inputs, reduction="none", grad_output=None)
    variants = {"original": inputs, "reduction_none": none}
    per = _variant(adapter, "reduction_consistency", none, variants)
    tol = case.tolerance(dtype)
    positions = max(per.loss.size, 1)
    den = _denominator(inputs) if inputs.reduction == "mean" else 1.0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = np.sum(per.loss)
        want = np.divide(total, den)
        # each per-position loss is within atol + rtol * |l_i| of its exact value
        slack = (positions * tol.loss_atol + tol.loss_rtol * np.sum(np.abs(per.loss))) / den
        limit = tol.loss_atol + tol.loss_rtol * np.abs(want) + slack
        problems = []
        if not _close(base.loss, want, limit):
            problems.append(
                f"loss: {inputs.reduction} gives {float(base.loss)!r}, sum(none) / "
                f"{den!r} gives {float(want)!r} (allowed difference {float(limit):.3g})"
            )
        if base.grad is not None and per.grad is not None and den != 0:
            want_g = per.grad / den
            limit_g = (
                tol.grad_atol
                + tol.grad_rtol * np.abs(want_g)
                + (tol.grad_atol + tol.grad_rtol * np.abs(per.grad)) / den
            )
            if not _close(base.grad, want_g, limit_g):
                bad = np.argmax(~_elementwise_close(base.grad, want_g, limit_g))
                problems.append(
                    f"grad: {inputs.reduction} gives {float(base.grad.flat[bad])!r} at flat index "
                    f"{bad}, grad(none) / {den!r} gives {float(want_g.flat[bad])!r}"
                )
    if not problems:
        return None
    return Violation("reduction_consistency", "; ".join(problems), variants)


def _elementwise_close(got, want, limit) -> np.ndarray:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        same_special = (np.isnan(got) & np.isnan(want)) | (got == want)
        return same_special | (np.isfinite(got) & np.isfinite(want) & (np.abs(got - want) <= limit))


def _close(got, want, limit) -> bool:
    return bool(np.all(_elementwise_close(got, want, limit)))


def kdim_flatten(adapter: Adapter, case: Case, dtype: str) -> Violation | None:
    """(N, C, d1, ..., dK) against the same positions as a (P, C) call."""
    if case.logits.ndim <= 2:
        raise NotApplicable("not K-dimensional")
    inputs, base = _base(adapter, case, dtype)
    x, t = inputs.logits, inputs.target
    flat_t = _rows(t) if inputs.probability_target else t.reshape(-1).copy()
    flat_go = None if inputs.grad_output is None else inputs.grad_output.reshape(-1).copy()
    flat = replace(inputs, logits=_rows(x), target=flat_t, grad_output=flat_go)
    variants = {"original": inputs, "flattened": flat}
    other = _variant(adapter, "kdim_flatten", flat, variants)
    loss = other.loss.reshape(base.loss.shape)
    grad = None if other.grad is None else _unrows(other.grad, x)
    return _compare_outcomes(
        "kdim_flatten", base, Outcome(loss, grad), dtype, case.tolerance(dtype), variants
    )


def grad_rows_sum_zero(adapter: Adapter, case: Case, dtype: str) -> Violation | None:
    """sum_c grad[n, c] = 0 for every position with finite logits and gradient."""
    if "grad" in adapter.unsupported:
        raise NotApplicable("no gradient")
    inputs, base = _base(adapter, case, dtype)
    if base.grad is None or base.grad.size == 0:
        raise NotApplicable("no gradient")
    g = _rows(base.grad)
    x = _rows(inputs.logits.astype(np.float64))
    ok = np.all(np.isfinite(g), axis=1) & np.all(np.isfinite(x), axis=1)
    if not np.any(ok):
        raise NotApplicable("no finite row")
    tol = case.tolerance(dtype)
    sums = np.abs(g.sum(axis=1))
    limit = 1.01 * (g.shape[1] * tol.grad_atol + tol.grad_rtol * np.abs(g).sum(axis=1))
    bad = ok & (sums > limit)
    if not np.any(bad):
        return None
    p = int(np.argmax(bad))
    return Violation(
        "grad_rows_sum_zero",
        f"grad row of position {p} sums to {float(g[p].sum())!r} (allowed {limit[p]:.3g}): "
        f"{g[p].tolist()}",
        {"original": inputs},
    )


Check = Callable[[Adapter, Case, str], "Violation | None"]

#: name -> check; each is fuzzed and reported on its own
PROPERTIES: dict[str, Check] = {
    "shift_invariance": shift_invariance,
    "class_permutation": class_permutation,
    "reduction_consistency": reduction_consistency,
    "kdim_flatten": kdim_flatten,
    "grad_rows_sum_zero": grad_rows_sum_zero,
}


def check(name: str, adapter: Adapter, case: Case, dtype: str) -> Violation | None:
    """Run property ``name``; a variant that raises is a violation, not an exception."""
    try:
        return PROPERTIES[name](adapter, case, dtype)
    except _Raised as r:
        return r.violation
