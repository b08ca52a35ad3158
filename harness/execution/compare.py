"""Comparing an adapter's values with the expected ones, element by element.

NaN matches only NaN, an infinity only the same infinity, and a finite value
must be within what a correct implementation may be off by::

    allowed = THRESHOLD * bound + atol + rtol * |expected|

``bound`` is the element's rounding-error bound from ``harness.oracle.error_model``;
``atol`` and ``rtol`` are 0 unless a case's ``tolerance:`` field widens them for
a stated reason. The verdict's figure is the *test ratio* ``|got - expected| /
allowed``: at most 1 conforms. Beside it, on the pairs where both are finite:
the largest absolute error, relative error and error in units in the last
place (ulp) of the case dtype. The ulp is taken at the array's largest expected
magnitude (a normwise measure): counted element by element, a gradient entry
that is exactly 0 would turn a 1e-17 error into 1e15 "ulp" of the smallest
subnormal, which says nothing about accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.dtypes import scalar_ulp
from harness.oracle.error_model import THRESHOLD


# records made twice per call: slotted and not frozen (a frozen dataclass's __init__ sets
# each field through object.__setattr__, four times the cost); nothing changes them once made
@dataclass(slots=True)
class Errors:
    max_abs: float
    max_rel: float
    max_ulp: float
    #: the largest |got - expected| / allowed (at most 1 conforms; inf for a non-finite mismatch)
    max_ratio: float = 0.0

    def to_dict(self) -> dict:
        return {
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "max_ulp": self.max_ulp,
            "max_ratio": self.max_ratio,
        }


@dataclass(slots=True)
class Comparison:
    ok: bool
    errors: Errors
    message: str | None  # the worst mismatch, in words
    #: on a mismatch: the flat index of the element the message names, how many are off,
    #: whether that element is a non-finite mismatch, its test ratio and the message's words
    #: in parentheses (``harness.execution.streaming`` joins the comparisons of blocks)
    worst: int = -1
    n_bad: int = 0
    nonfinite: bool = False
    worst_ratio: float = 0.0
    detail: str = ""


def _index(shape: tuple[int, ...], flat: int) -> str:
    if not shape:
        return ""
    return "[" + ", ".join(str(i) for i in np.unravel_index(flat, shape)) + "]"


#: elements per block of the fast path: its float64 temporaries (256 KiB each) stay in the
#: core's cache, and few blocks make few NumPy calls (a case of 280,000 logits: 9 blocks)
BLOCK = 32768


def _ratio(d: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """d / allowed with 0/0 = 0 (an exact match where nothing is allowed) and x/0 = inf."""
    out = np.zeros_like(d)
    np.divide(d, allowed, out=out, where=allowed > 0)
    out[(allowed <= 0) & (d > 0)] = np.inf
    return out


def _max_or_0(value: float) -> float:
    """A maximum from ``np.fmax.reduce``: NaN only when every term was 0/0, i.e. 0."""
    return 0.0 if value != value else float(value)


def _all_finite_and_within(
    g: np.ndarray, e: np.ndarray, b: np.ndarray, dtype: str, rtol: float, atol: float
) -> Errors | None:
    """The errors when every pair is finite and within tolerance (the common case), else None.

    Each block takes about ten NumPy calls (most cases are a block or less): a non-finite
    difference shows in the block's largest one (NaN or inf), and within tolerance every
    ``allowed`` that is 0 has a difference of 0, whose ratio counts 0."""
    max_abs = max_rel = scale = max_ratio = 0.0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for i in range(0, e.size, BLOCK):
            # slices of a whole array when it is one block: views, nothing copied
            gb, eb, bb = g[i : i + BLOCK], e[i : i + BLOCK], b[i : i + BLOCK]
            d = np.subtract(gb, eb)  # float64, as eb is (a carrier's gb is read exactly)
            np.abs(d, out=d)
            # ufunc reductions: the ndarray methods add a Python wrapper per call
            d_max = float(np.maximum.reduce(d))
            if not math.isfinite(d_max):  # a non-finite value (or an overflowing difference)
                return None
            abs_e = np.abs(eb)
            allowed = THRESHOLD * bb
            if atol or rtol:
                allowed += atol + rtol * abs_e
            if not np.logical_and.reduce(d <= allowed):
                return None
            if d_max > 0:
                # 0/0 (an exact match where nothing is allowed, or at an expected 0) is NaN,
                # which fmax passes over: those pairs count 0
                q = np.divide(d, abs_e)
                max_abs = max(max_abs, d_max)
                max_rel = max(max_rel, _max_or_0(np.fmax.reduce(q)))
                max_ratio = max(max_ratio, _max_or_0(np.fmax.reduce(np.divide(d, allowed, out=q))))
            scale = max(scale, float(np.maximum.reduce(abs_e)))
    return Errors(max_abs, max_rel, max_abs / scalar_ulp(scale, dtype), max_ratio)


#: arrays of at most this many elements are checked with Python floats: the dozen NumPy calls
#: of ``_all_finite_and_within`` cost more than a loop over so few (the same results, bit for
#: bit: ``tests/test_compare.py``)
SMALL = 16


def _small_all_finite_and_within(
    g: np.ndarray, e: np.ndarray, b: np.ndarray, dtype: str, rtol: float, atol: float
) -> Errors | None:
    """``_all_finite_and_within`` element by element in Python floats, the same IEEE
    operations in the same order: x / 0 is inf and 0 / 0 is passed over as fmax passes NaN."""
    max_abs = max_rel = max_ratio = scale = 0.0
    widened = bool(atol or rtol)
    inf, threshold = math.inf, THRESHOLD  # locals: read once per element
    # the maxima by comparisons, not max() calls: the same values (every term is a number)
    for gv, ev, bv in zip(g.tolist(), e.tolist(), b.tolist(), strict=True):
        d = abs(gv - ev)
        abs_e = abs(ev)
        allowed = threshold * bv
        if widened:
            allowed += atol + rtol * abs_e
        # d < inf: a non-finite value (or an overflowing difference) is not within; NaN
        # fails both comparisons
        if not (d <= allowed and d < inf):
            return None
        if d > 0:
            if d > max_abs:
                max_abs = d
            rel = d / abs_e if abs_e > 0 else inf
            if rel > max_rel:
                max_rel = rel
            if d / allowed > max_ratio:  # allowed >= d > 0
                max_ratio = d / allowed
        if abs_e > scale:
            scale = abs_e
    return Errors(max_abs, max_rel, max_abs / scalar_ulp(scale, dtype), max_ratio)


#: the float64 dtype object: arrays of float64 in native byte order carry this one
_FLOAT64 = np.dtype(np.float64)


def _scalar_within(
    gv: float, ev: float, bv: float, dtype: str, rtol: float, atol: float
) -> Comparison | None:
    """The comparison of one value when it is finite and within tolerance, else None."""
    d = abs(gv - ev)
    allowed = THRESHOLD * bv + atol + rtol * abs(ev)
    if math.isfinite(d) and d <= allowed:
        rel_v = (d / abs(ev) if ev != 0 else math.inf) if d > 0 else 0.0
        ratio_v = d / allowed if d > 0 else 0.0
        return Comparison(True, Errors(d, rel_v, d / scalar_ulp(ev, dtype), ratio_v), None)
    return None


def compare(
    got: np.ndarray,
    expected: np.ndarray,
    bound: np.ndarray,
    dtype: str,
    what: str,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
) -> Comparison:
    """Compare arrays of equal shape; ``bound`` is the expected values' error bound
    (``harness.oracle.error_model``), ``what`` names them in the message ('loss', 'grad').
    ``got`` may be in any floating dtype: its values are read as float64, exactly (the
    arithmetic below is float64's, whether it converts the array first or not)."""
    scalar_asked = (
        type(expected) is np.ndarray
        and expected.size == 1
        and expected.dtype is _FLOAT64
        and type(bound) is np.ndarray
        and bound.dtype is _FLOAT64
        and type(got) is np.ndarray
        and got.size == 1
        and got.dtype.kind == "f"
    )
    if scalar_asked:  # a reduced loss, in Python floats (item(): the value, exactly, in a float)
        within = _scalar_within(got.item(), expected.item(), bound.item(), dtype, rtol, atol)
        if within is not None:
            return within
    g = np.asarray(got).reshape(-1)
    if g.dtype.kind != "f":
        g = g.astype(np.float64)
    e = np.asarray(expected, dtype=np.float64).reshape(-1)
    b = np.asarray(bound, dtype=np.float64).reshape(-1)
    if e.size == 1 and not scalar_asked:  # a reduced loss not asked above (lists, other dtypes)
        within = _scalar_within(float(g[0]), float(e[0]), float(b[0]), dtype, rtol, atol)
        if within is not None:
            return within
    if e.size <= SMALL:
        errors = _small_all_finite_and_within(g, e, b, dtype, rtol, atol)
    else:
        errors = _all_finite_and_within(g, e, b, dtype, rtol, atol)
    if errors is not None:
        return Comparison(True, errors, None)
    g = g.astype(np.float64, copy=False)
    e_nan, g_nan = np.isnan(e), np.isnan(g)
    e_fin, g_fin = np.isfinite(e), np.isfinite(g)
    special_ok = np.where(e_nan, g_nan, np.where(e_fin, g_fin, g == e))
    both = e_fin & g_fin
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.where(both, np.abs(g - e), 0.0)
        limit = np.where(e_fin, THRESHOLD * b + atol + rtol * np.abs(e), 0.0)
        ratio = _ratio(diff, limit)
        rel = np.where(both & (diff > 0), diff / np.abs(e), 0.0)
        scale = float(np.abs(np.where(e_fin, e, 0.0)).max(initial=0.0))
        ulps = diff / scalar_ulp(scale, dtype)
    within = ~both | (diff <= limit)
    bad = ~(special_ok & within)
    if bool(np.any(~special_ok)):
        errors = Errors(float("inf"), float("inf"), float("inf"), float("inf"))
    else:
        errors = Errors(
            float(diff.max(initial=0.0)),
            float(rel.max(initial=0.0)),
            float(ulps.max(initial=0.0)),
            float(ratio.max(initial=0.0)),
        )
    if not np.any(bad):
        return Comparison(True, errors, None)
    n_bad = int(bad.sum())
    if np.any(~special_ok):
        i = int(np.argmax(~special_ok))
        why = "non-finite mismatch"
    else:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            i = int(np.argmax(np.where(bad, ratio, -1.0)))
            # the element's own ulp here: the message is about this element
            own = diff[i] / scalar_ulp(float(e[i]), dtype)
        why = (
            f"test ratio {ratio[i]:.3g}: |diff| {diff[i]:.3g} > allowed {limit[i]:.3g}"
            f" = {THRESHOLD:g} x bound {b[i]:.3g}"
            + (" + tolerance override" if atol or rtol else "")
            + f"; {own:.3g} ulp"
        )
    message = mismatch_message(what, np.shape(expected), i, float(e[i]), float(g[i]), why, n_bad)
    nonfinite = bool(np.any(~special_ok))
    return Comparison(False, errors, message, i, n_bad, nonfinite, float(ratio[i]), why)


def mismatch_message(
    what: str, shape: tuple[int, ...], flat: int, expected: float, got: float, why: str, n_bad: int
) -> str:
    """The message of a failed comparison, naming its worst element (``flat`` in ``shape``)."""
    size = math.prod(shape)
    more = f" ({n_bad} of {size} elements off)" if size > 1 else ""
    return f"{what}{_index(shape, flat)}: expected {expected!r}, got {got!r} ({why}){more}"
