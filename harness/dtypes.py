"""Floating dtypes a case can run in, and how their values cross the NumPy boundary.

NumPy has no bfloat16, so bfloat16 values travel in float32 arrays that hold
exactly representable bfloat16 numbers (the *carrier*); an adapter casts them
to its framework's bfloat16 without loss. Rounding float64 to bfloat16 is done
here bit-exactly (round to nearest, ties to even), so no extra package is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.dtype_names import DTYPE_NAMES


@dataclass(frozen=True)
class FloatFormat:
    name: str
    carrier: np.dtype  # the NumPy dtype arrays of this format travel in
    mantissa_bits: int  # explicit fraction bits
    min_exponent: int  # exponent of the smallest normal number
    max: float  # largest finite value


FORMATS: dict[str, FloatFormat] = {
    "float64": FloatFormat(
        "float64", np.dtype(np.float64), 52, -1022, float(np.finfo(np.float64).max)
    ),
    "float32": FloatFormat(
        "float32", np.dtype(np.float32), 23, -126, float(np.finfo(np.float32).max)
    ),
    "float16": FloatFormat("float16", np.dtype(np.float16), 10, -14, 65504.0),
    "bfloat16": FloatFormat("bfloat16", np.dtype(np.float32), 7, -126, 3.3895313892515355e38),
}

assert tuple(FORMATS) == DTYPE_NAMES, "a format for each name of harness.dtype_names, in order"


def carrier(dtype: str) -> np.dtype:
    """The NumPy dtype that holds values of ``dtype``."""
    return FORMATS[dtype].carrier


def _round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), kept in float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = np.isnan(x)
    lsb = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lsb) >> 16) << 16
    out = rounded.astype(np.uint32).view(np.float32).copy()
    out[nan] = np.float32("nan")
    return out.reshape(np.shape(x))  # ascontiguousarray makes a 0-d array 1-d


def cast(values: np.ndarray, dtype: str) -> np.ndarray:
    """Cast float64 ``values`` to ``dtype``, returned in its carrier dtype.

    float64 -> bfloat16 goes through float32 first; that double rounding can
    differ from a direct rounding only for values within 2**-24 relative of a
    bfloat16 tie, which cases avoid by using short decimals.
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore"):
        if dtype == "bfloat16":
            return _round_to_bfloat16(values.astype(np.float32))
        return values.astype(FORMATS[dtype].carrier)


def cast_into(values: np.ndarray, dtype: str, out: np.ndarray) -> None:
    """``cast(values, dtype)`` written into ``out`` (of the carrier dtype and the same shape),
    without a temporary array of the result where the carrier rounds by itself."""
    if dtype == "bfloat16":
        out[...] = cast(values, dtype)
        return
    with np.errstate(over="ignore"):
        np.copyto(out, values, casting="unsafe")


def is_exact(values: np.ndarray, dtype: str) -> bool:
    """True when every float64 value is representable in ``dtype`` (NaN counts as exact)."""
    values = np.asarray(values, dtype=np.float64)
    back = cast(values, dtype).astype(np.float64)
    same = (back == values) | (np.isnan(back) & np.isnan(values))
    return bool(np.all(same))


def scalar_ulp(value: float, dtype: str) -> float:
    """``ulp`` of one float, without NumPy (the same value)."""
    fmt = FORMATS[dtype]
    a = abs(value)
    exponent = math.frexp(a)[1] - 1 if math.isfinite(a) and a > 0 else fmt.min_exponent
    return math.ldexp(1.0, max(exponent, fmt.min_exponent) - fmt.mantissa_bits)


def ulp(values: np.ndarray, dtype: str) -> np.ndarray:
    """Spacing of ``dtype`` at each float64 value (the gap to the next number up in magnitude)."""
    fmt = FORMATS[dtype]
    values = np.asarray(values, dtype=np.float64)
    a = np.abs(values.reshape(-1))
    # floor(log2|v|) read from the exponent bits (exact, unlike rounding log2); zero,
    # subnormal and non-finite values get the format's smallest normal exponent
    k = (a.view(np.int64) >> 52) - 1023
    k[k == 1024] = fmt.min_exponent
    np.maximum(k, fmt.min_exponent, out=k)
    k -= fmt.mantissa_bits
    # normal powers of two are built from their bits; subnormal ones (float64) by ldexp
    normal = k.min(initial=0) >= -1022
    out = ((k + 1023) << 52).view(np.float64) if normal else np.ldexp(1.0, k)
    return out.reshape(values.shape)
