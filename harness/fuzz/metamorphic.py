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
  (softmax minus a distribution with the same total), where the gradient is finite
  and the logits hold no NaN or +inf.

How close is close enough comes from the same error model as every verdict
(``harness.oracle.error_model``): a correct implementation's value is within
``THRESHOLD x bound`` of its exact value, the bound computed for the call that
produced it. Two outputs whose exact values are equal may therefore differ by
``THRESHOLD x (bound_a + bound_b)``, element by element; a side derived from
several outputs (``sum(none) / D``, a gradient row's sum) carries the sum of
their bounds. A bound needs only magnitudes, so each is computed from the
adapter's own output (``error_bounds(problem, dtype, loss, grad)`` on the call's
problem): the relation stays oracle-free. The float64 arithmetic of the check
itself (a correctly rounded ``math.fsum``, one division) adds a few float64
roundings of the result, and a case's ``tolerance:`` field adds its room to
each side. Messages give the *test ratio* ``|difference| / allowed``: at most
1 holds.

A check raises ``NotApplicable`` when the call does not exercise the property
(C = 1, no exact shift in the dtype, ...); ``measure`` returns the largest test
ratio and a ``Violation`` when the relation fails (``check`` just the latter).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from harness.adapters import Adapter, CallInputs, Output, Unsupported
from harness.cases.model import Case
from harness.cases.tolerance import Tolerance
from harness.dtypes import cast, is_exact
from harness.execution.runner import BadOutput, to_array
from harness.oracle.error_model import THRESHOLD, Bounds, error_bounds
from harness.oracle.problem import Problem, class_axis_back, class_last

#: float64's unit roundoff: what the check's own float64 arithmetic may add, per rounding
F64_U = 2.0**-53


class NotApplicable(Exception):
    """The call does not exercise the property (or the adapter declines it)."""


@dataclass
class Violation:
    """A failed relation: ``message`` in words, ``variants`` the calls involved, by role."""

    prop: str
    message: str
    variants: dict[str, CallInputs] = field(default_factory=dict)
    ratio: float = math.inf  # the largest test ratio (> 1)


@dataclass(frozen=True)
class Checked:
    """What a property found: the largest test ratio, and the violation when it exceeds 1."""

    ratio: float
    violation: Violation | None = None


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


def bounds_of(inputs: CallInputs, out: Outcome) -> Bounds:
    """Error bounds of the exact values ``out`` approximates: the call's own problem, with the
    output's magnitudes standing in for the exact ones (non-finite elements count as 0)."""
    return error_bounds(Problem.of_call(inputs), inputs.dtype, out.loss, out.grad)


def _base(adapter: Adapter, case: Case, dtype: str) -> tuple[CallInputs, Outcome]:
    """The case's own call and output; a failing original call is the oracle check's business."""
    if case.fused:
        raise NotApplicable("a fused linear case: the properties transform logits")
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


# ---------------------------------------------------------------- comparing two sides


@dataclass(frozen=True)
class Side:
    """One side of a relation: values, the error bound of the exact values they approximate,
    and a name for messages ('original', 'sum(none) / 2.0', ...)."""

    name: str
    values: np.ndarray | float
    bound: np.ndarray | float


def _index(shape: tuple[int, ...], flat: int) -> str:
    if not shape:
        return ""
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]"


def relation(
    what: str,
    a: Side,
    b: Side,
    *,
    slack: np.ndarray | float = 0.0,
    rtol: float = 0.0,
    atol: float = 0.0,
) -> tuple[float, str | None]:
    """(largest test ratio, message or None) for ``a`` and ``b``, whose exact values are equal.

    Each side is within ``THRESHOLD x bound`` of the common exact value (plus ``atol +
    rtol |exact|`` from a case's tolerance field), so they may differ by
    ``THRESHOLD x (bound_a + bound_b) + 2 atol + rtol (|a| + |b|) + slack``; ``slack``
    is what the check's own float64 arithmetic adds. NaN matches NaN and an infinity
    the same infinity; any other non-finite pair is a mismatch (ratio inf). A NaN bound
    allows no difference.
    """
    shape = np.shape(a.values)
    va = np.asarray(a.values, dtype=np.float64).reshape(-1)
    vb = np.asarray(b.values, dtype=np.float64).reshape(-1)
    if va.size == 0:
        return 0.0, None
    ba = np.broadcast_to(np.asarray(a.bound, dtype=np.float64).reshape(-1), va.shape)
    bb = np.broadcast_to(np.asarray(b.bound, dtype=np.float64).reshape(-1), va.shape)
    extra = np.broadcast_to(np.asarray(slack, dtype=np.float64).reshape(-1), va.shape)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        same = (va == vb) | (np.isnan(va) & np.isnan(vb))
        finite = np.isfinite(va) & np.isfinite(vb)
        diff = np.where(finite, np.abs(va - vb), 0.0)
        allowed = THRESHOLD * (ba + bb) + extra
        if atol or rtol:
            allowed = allowed + 2.0 * atol + rtol * np.where(finite, np.abs(va) + np.abs(vb), 0.0)
        # a NaN bound (the model cannot say) allows nothing: only equal values hold
        allowed = np.where(np.isnan(allowed), 0.0, allowed)
        ratio = np.zeros_like(diff)
        np.divide(diff, allowed, out=ratio, where=allowed > 0)
        ratio[(allowed <= 0) & (diff > 0)] = np.inf
        ratio[same] = 0.0
        ratio[~same & ~finite] = np.inf  # a non-finite mismatch
    worst = float(ratio.max())
    if worst <= 1.0:
        return worst, None
    bad = ratio > 1.0
    i = int(np.argmax(ratio))
    head = f"{what}{_index(shape, i)}: {a.name} {float(va[i])!r}, {b.name} {float(vb[i])!r}"
    if not (finite[i] or same[i]):
        why = "non-finite mismatch"
    else:
        why = (
            f"test ratio {ratio[i]:.3g}: |diff| {diff[i]:.3g} > allowed {allowed[i]:.3g}"
            f" = {THRESHOLD:g} x (bound {ba[i]:.3g} + {bb[i]:.3g})"
            + (f" + float64 slack {extra[i]:.3g}" if extra[i] else "")
            + (" + tolerance override" if atol or rtol else "")
        )
    more = f" ({int(bad.sum())} of {va.size} elements off)" if va.size > 1 else ""
    return worst, f"{head} ({why}){more}"


def _compare_outcomes(
    prop: str,
    a: Outcome,
    bounds_a: Bounds,
    b: Outcome,
    bounds_b: Bounds,
    tol: Tolerance,
    variants: dict,
    name_b: str,
) -> Checked:
    """Loss and gradient of the original call (``a``) against a variant's (``b``), aligned."""
    ratios, problems = [], []
    r, m = relation(
        "loss",
        Side("original", a.loss, bounds_a.loss),
        Side(name_b, b.loss, bounds_b.loss),
        rtol=tol.loss_rtol,
        atol=tol.loss_atol,
    )
    ratios.append(r)
    problems.append(m)
    if (
        a.grad is not None
        and b.grad is not None
        and bounds_a.grad is not None
        and bounds_b.grad is not None  # bounds have a gradient where the output has one
    ):
        r, m = relation(
            "grad",
            Side("original", a.grad, bounds_a.grad),
            Side(name_b, b.grad, bounds_b.grad),
            rtol=tol.grad_rtol,
            atol=tol.grad_atol,
        )
        ratios.append(r)
        problems.append(m)
    return _checked(prop, ratios, problems, variants)


def _checked(prop: str, ratios: list[float], problems: list, variants: dict) -> Checked:
    worst = max(ratios, default=0.0)
    found = [p for p in problems if p]
    if not found:
        return Checked(worst)
    return Checked(worst, Violation(prop, "; ".join(found), variants, worst))


# ---------------------------------------------------------------- the properties


def _rows(x: np.ndarray) -> np.ndarray:
    """(C,) or (N, C, d...) as (P, C), class axis last (a copy: callers write to it)."""
    rows = class_last(x)
    return rows.copy() if np.shares_memory(rows, x) else rows


def _unrows(rows: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(class_axis_back(rows, like.shape))


def shift_invariance(adapter: Adapter, case: Case, dtype: str) -> Checked:
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
    checked = _compare_outcomes(
        "shift_invariance", base, bounds_of(inputs, base), other, bounds_of(shifted, other),
        case.tolerance(dtype), variants, "shifted",
    )  # fmt: skip
    if checked.violation is not None:
        checked.violation.message += f"; {shift!r} added to the logits of position {p}"
    return checked


def class_permutation(adapter: Adapter, case: Case, dtype: str) -> Checked:
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
    bounds = bounds_of(rolled, other)
    # back to the original class order, bounds with them (a gradient has a bound)
    if other.grad is not None and bounds.grad is not None:
        other = Outcome(other.loss, np.roll(other.grad, k, axis=axis))
        bounds = Bounds(bounds.loss, np.roll(bounds.grad, k, axis=axis))
    checked = _compare_outcomes(
        "class_permutation", base, bounds_of(inputs, base), other, bounds,
        case.tolerance(dtype), variants, "classes rolled",
    )  # fmt: skip
    if checked.violation is not None:
        checked.violation.message += f"; classes rolled by {k}"
    return checked


def _denominator(inputs: CallInputs) -> float:
    """The mean's denominator, correctly rounded to float64: sum of w[y] over kept positions,
    or P for probabilities."""
    x, t = inputs.logits, inputs.target
    if inputs.probability_target:
        return float(x.size // (x.shape[0] if x.ndim == 1 else x.shape[1]))
    labels = t.reshape(-1)
    kept = labels[labels != inputs.ignore_index]
    if inputs.weight is None:
        return float(kept.size)
    return math.fsum(inputs.weight.astype(np.float64)[kept])


def _total(values: np.ndarray) -> float:
    """The sum of ``values``, correctly rounded (math.fsum); NaN or inf as IEEE sums give them."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    try:
        return math.fsum(flat)
    except (ValueError, OverflowError):  # inf - inf, or partial sums past float64's range
        with np.errstate(invalid="ignore", over="ignore"):
            return float(np.sum(flat))


def reduction_consistency(adapter: Adapter, case: Case, dtype: str) -> Checked:
    """sum = sum(none) and mean = sum(none) / denominator, for the loss and the gradient.

    Each per-position loss l_i is within THRESHOLD x b_i of its exact value, so
    sum(none) / D is within THRESHOLD x sum(b_i) / |D| of the exact mean; the check
    forms it with a correctly rounded sum, a correctly rounded D and one division
    (three float64 roundings of the result, allowed as slack).
    """
    if case.reduction == "none" or "reduction_none" in adapter.unsupported:
        raise NotApplicable("needs mean or sum, and none")
    prop = "reduction_consistency"
    inputs, base = _base(adapter, case, dtype)
    none = replace(inputs, reduction="none", grad_output=None)
    variants = {"original": inputs, "reduction_none": none}
    per = _variant(adapter, prop, none, variants)
    tol = case.tolerance(dtype)
    b_base, b_none = bounds_of(inputs, base), bounds_of(none, per)
    mean = inputs.reduction == "mean"
    den = _denominator(inputs) if mean else 1.0
    name = f"sum(none) / {den!r}" if mean else "sum(none)"
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        want = np.divide(_total(per.loss), den)
        want_bound = _total(b_none.loss) / abs(den) if den else 0.0
        slack = 4.0 * F64_U * abs(float(want)) if np.isfinite(want) else 0.0
    ratios, problems = [], []
    r, m = relation(
        "loss",
        Side(inputs.reduction, base.loss, b_base.loss),
        Side(name, want, want_bound),
        slack=slack,
        rtol=tol.loss_rtol,
        atol=tol.loss_atol,
    )
    ratios.append(r)
    problems.append(m)
    if (
        base.grad is not None
        and per.grad is not None
        and b_base.grad is not None
        and b_none.grad is not None  # bounds have a gradient where the output has one
        and den != 0
    ):
        name_g = f"grad(none) / {den!r}" if mean else "grad(none)"
        with np.errstate(invalid="ignore", over="ignore"):
            want_g = per.grad / den
            slack_g = 4.0 * F64_U * np.abs(np.where(np.isfinite(want_g), want_g, 0.0))
        r, m = relation(
            "grad",
            Side(inputs.reduction, base.grad, b_base.grad),
            Side(name_g, want_g, b_none.grad / abs(den)),
            slack=slack_g,
            rtol=tol.grad_rtol,
            atol=tol.grad_atol,
        )
        ratios.append(r)
        problems.append(m)
    return _checked(prop, ratios, problems, variants)


def kdim_flatten(adapter: Adapter, case: Case, dtype: str) -> Checked:
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
    b = bounds_of(flat, other)
    loss = other.loss.reshape(base.loss.shape)
    bounds = Bounds(b.loss.reshape(base.loss.shape), None if b.grad is None else _unrows(b.grad, x))
    grad = None if other.grad is None else _unrows(other.grad, x)
    return _compare_outcomes(
        "kdim_flatten", base, bounds_of(inputs, base), Outcome(loss, grad), bounds,
        case.tolerance(dtype), variants, "flattened",
    )  # fmt: skip


def grad_rows_sum_zero(adapter: Adapter, case: Case, dtype: str) -> Checked:
    """sum_c grad[n, c] = 0 for every position whose gradient is finite and whose logits hold no
    NaN or +inf (a -inf logit has probability 0 and takes part like any other).

    Each entry is within THRESHOLD x b_c of its exact value and the exact values sum to
    0, so the row's (correctly rounded) sum is within THRESHOLD x sum_c b_c of 0.
    """
    if "grad" in adapter.unsupported:
        raise NotApplicable("no gradient")
    inputs, base = _base(adapter, case, dtype)
    if base.grad is None or base.grad.size == 0:
        raise NotApplicable("no gradient")
    g = _rows(base.grad)
    x = _rows(inputs.logits.astype(np.float64))
    ok = np.all(np.isfinite(g), axis=1) & ~np.any(np.isnan(x) | np.isposinf(x), axis=1)
    if not np.any(ok):
        raise NotApplicable("no finite row")
    tol = case.tolerance(dtype)
    b_grad = bounds_of(inputs, base).grad
    assert b_grad is not None  # bounds have a gradient where the output has one
    b = _rows(b_grad)
    sums = np.array([_total(row) if k else 0.0 for row, k in zip(g, ok, strict=True)])
    allowed = np.array(
        [THRESHOLD * _total(row) if k else 0.0 for row, k in zip(b, ok, strict=True)]
    )
    allowed = np.where(np.isnan(allowed), 0.0, allowed)  # a NaN bound allows nothing
    # the exact sum of the rounded values is within one rounding of fsum's result
    allowed += F64_U * np.abs(sums)
    if tol.grad_atol or tol.grad_rtol:
        allowed += g.shape[1] * tol.grad_atol + tol.grad_rtol * np.abs(g).sum(axis=1)
    ratio = np.zeros_like(sums)
    np.divide(np.abs(sums), allowed, out=ratio, where=allowed > 0)
    ratio[(allowed <= 0) & (sums != 0)] = np.inf
    ratio[~ok] = 0.0
    worst = float(ratio.max())
    if worst <= 1.0:
        return Checked(worst)
    p = int(np.argmax(ratio))
    return Checked(
        worst,
        Violation(
            "grad_rows_sum_zero",
            f"grad row of position {p} sums to {float(sums[p])!r} (test ratio {ratio[p]:.3g}: "
            f"allowed {allowed[p]:.3g} = {THRESHOLD:g} x the sum of its bounds "
            f"{_total(b[p]):.3g}): {g[p].tolist()}",
            {"original": inputs},
            worst,
        ),
    )


Check = Callable[[Adapter, Case, str], Checked]

#: name -> check; each is fuzzed and reported on its own
PROPERTIES: dict[str, Check] = {
    "shift_invariance": shift_invariance,
    "class_permutation": class_permutation,
    "reduction_consistency": reduction_consistency,
    "kdim_flatten": kdim_flatten,
    "grad_rows_sum_zero": grad_rows_sum_zero,
}


def measure(name: str, adapter: Adapter, case: Case, dtype: str) -> Checked:
    """Run property ``name``; a variant that raises is a violation (ratio inf), not an exception.

    Raises ``NotApplicable`` when the call does not exercise the property.
    """
    try:
        return PROPERTIES[name](adapter, case, dtype)
    except _Raised as r:
        return Checked(math.inf, r.violation)


def check(name: str, adapter: Adapter, case: Case, dtype: str) -> Violation | None:
    """The violation of property ``name`` on this call, or None when the relation holds."""
    return measure(name, adapter, case, dtype).violation
