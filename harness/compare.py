"""Comparing an adapter's values with the expected ones, element by element.

NaN matches only NaN, an infinity only the same infinity, and a finite value
must be within ``atol + rtol * |expected|``. Errors are measured on the pairs
where both are finite: the largest absolute error, relative error and error in
units in the last place (ulp) of the case dtype.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from harness.dtypes import ulp


@dataclass(frozen=True)
class Errors:
    max_abs: float
    max_rel: float
    max_ulp: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    ok: bool
    errors: Errors
    message: str | None  # the worst mismatch, in words


def _index(shape: tuple[int, ...], flat: int) -> str:
    if not shape:
        return ""
    return "[" + ", ".join(str(i) for i in np.unravel_index(flat, shape)) + "]"


def compare(
    got: np.ndarray, expected: np.ndarray, dtype: str, rtol: float, atol: float, what: str
) -> Comparison:
    """Compare float64 arrays of equal shape; ``what`` names them in the message ('loss', 'grad')."""
    g = np.asarray(got, dtype=np.float64).reshape(-1)
    e = np.asarray(expected, dtype=np.float64).reshape(-1)
    e_nan, g_nan = np.isnan(e), np.isnan(g)
    e_fin, g_fin = np.isfinite(e), np.isfinite(g)
    special_ok = np.where(e_nan, g_nan, np.where(e_fin, g_fin, g == e))
    both = e_fin & g_fin
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.where(both, np.abs(g - e), 0.0)
        limit = atol + rtol * np.abs(e)
        rel = np.where(both & (diff > 0), diff / np.abs(e), 0.0)
        ulps = np.where(both, diff / ulp(e, dtype), 0.0)
    within = ~both | (diff <= limit)
    bad = ~(special_ok & within)
    if bool(np.any(~special_ok)):
        errors = Errors(float("inf"), float("inf"), float("inf"))
    else:
        errors = Errors(
            float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), float(ulps.max(initial=0.0))
        )
    if not np.any(bad):
        return Comparison(True, errors, None)
    n_bad = int(bad.sum())
    if np.any(~special_ok):
        i = int(np.argmax(~special_ok))
        why = "non-finite mismatch"
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            i = int(np.argmax(np.where(bad, diff / limit, -1.0)))
        why = f"|diff| {diff[i]:.3g} > {limit[i]:.3g} = atol + rtol*|expected|; {ulps[i]:.3g} ulp"
    shape = np.shape(expected)
    more = f" ({n_bad} of {e.size} elements off)" if e.size > 1 else ""
    message = f"{what}{_index(shape, i)}: expected {e[i]!r}, got {g[i]!r} ({why}){more}"
    return Comparison(False, errors, message)
