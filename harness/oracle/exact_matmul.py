"""Matrix products without rounding error that matters, from float64 BLAS calls.

``exact_matmul(a, b)`` returns ``a @ b`` as a double-double ``(hi, lo)`` pair whose
sum is within about 2**-100 of ``sum_k |a_ik b_kj|`` of the exact product, plus a
truncation bound it returns (0 whenever the inputs' digits are exhausted, which is
the case for float32, bfloat16 and float16 inputs of moderate range).

How: the error-free splitting of Ozaki, Ogita, Oishi and Rump ("Error-free
transformations of matrix multiplication by using fast routines of matrix
multiplication", Numer. Algorithms 2012). Each row of ``a`` (each column of ``b``)
is split into slices whose entries are integer multiples of one power of two per
row, with at most ``beta`` significant bits each; ``beta`` is chosen so that a
length-k dot product of two slices, ``k * 2**(2 beta)`` units at most, fits in the
53 bits of a float64. Every partial sum BLAS forms is then an exact float64, in any
order, and the product of two slices is exact. The slice products are added in
double-double (TwoSum), so only their final sum is rounded. Splitting stops when
the rest of a row is 0 or below ``2**-STOP_BITS`` of the row's largest entry; the
rest's share, ``|rest_a| |b| + |a| |rest_b|``, is the returned bound.

Shapes: a (m, k), b (k, n); returns hi, lo, bound of shape (m, n).
"""

from __future__ import annotations

import math

import numpy as np

#: splitting stops once a row's rest is below 2**-STOP_BITS of the row's largest entry
STOP_BITS = 110
#: and in any case after this many slices (the rest is then in the bound)
MAX_SLICES = 8
#: slices whose unit is below 2**MIN_UNIT_EXPONENT are not taken (their products could
#: underflow); the rest is then in the bound
MIN_UNIT_EXPONENT = -480


def slice_bits(k: int) -> int:
    """Significant bits per slice for a contraction of length ``k``: 2 beta + log2 k <= 53."""
    return (53 - math.ceil(math.log2(max(k, 2)))) // 2


def split(a: np.ndarray, axis: int, beta: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``a = sum(slices) + rest``, each slice's entries along ``axis`` integer multiples of one
    power of two with at most ``beta`` bits (Rump's ExtractVector with sigma = 0.75 * 2**t:
    sigma + x stays in one binade, so fl(sigma + x) - sigma is exact)."""
    rest = np.array(a, dtype=np.float64, copy=True)
    top = np.max(np.abs(rest), axis=axis, keepdims=True)
    floor = np.ldexp(top, -STOP_BITS)
    slices = []
    for _ in range(MAX_SLICES):
        m = np.max(np.abs(rest), axis=axis, keepdims=True)
        live = (m > floor) & (m > 0)
        if not live.any():
            break
        _, e = np.frexp(np.where(live, m, 1.0))  # m < 2**e
        t = e + 53 - beta
        if int(np.min(np.where(live, t, 0))) - 53 < MIN_UNIT_EXPONENT:
            live &= t - 53 >= MIN_UNIT_EXPONENT
            if not live.any():
                break
        sigma = np.where(live, np.ldexp(0.75, t), 0.0)
        q = (sigma + rest) - sigma  # multiples of 2**(t - 53), |q| <= 2**e
        q = np.where(live, q, 0.0)
        slices.append(q)
        rest = rest - q  # exact: q is rest rounded to a coarser grid
    return slices, rest


def two_sum(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s + e = x + y exactly, s = fl(x + y) (Knuth)."""
    s = x + y
    z = s - x
    return s, (x - (s - z)) + (y - z)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a @ b`` as ``(hi, lo, bound)``: |hi + lo - exact| <= bound + 2**-100 sum_k |a_ik b_kj|
    (bound: the share of the rests left unsplit; 0 when they are 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    k = a.shape[1]
    beta = slice_bits(k)
    a_slices, a_rest = split(a, 1, beta)
    b_slices, b_rest = split(b, 0, beta)
    hi = np.zeros((a.shape[0], b.shape[1]))
    lo = np.zeros_like(hi)
    for sa in a_slices:
        for sb in b_slices:
            hi, err = two_sum(hi, sa @ sb)  # the product is exact: every partial sum fits
            lo += err
    bound = np.zeros_like(hi)
    if a_rest.any() or b_rest.any():
        abs_b = np.abs(b)
        # rounded up: each product and sum of a float64 matmul of k terms is within (1 + k u)
        grow = 1.0 + (k + 2) * 2.0**-52
        bound = grow * (np.abs(a_rest) @ abs_b + np.abs(a - a_rest) @ np.abs(b_rest))
    return hi, lo, bound
