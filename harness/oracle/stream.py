"""Streaming float64 approximation of the oracle: one float64 pass over chunks of rows.

Opt-in only (``cross_entropy_streaming``): ``harness.oracle.exact.cross_entropy`` is
correctly rounded at every size and no longer uses this module. It is kept as a
cheaper approximation with the error bound stated below. The logits may be
held in their carrier dtype (float16, float32 or float64): each chunk of rows is
converted to float64 in one reused buffer of ``CHUNK_BYTES``, so the memory is
the inputs, the output gradient and a few chunk buffers, never a float64 copy
of the whole array.

Per chunk, one pass: ``m`` = row max, ``d = x - m``, ``e = exp(d)``, ``s = sum(e)``.
The ``mean`` denominator depends only on the targets and weights, so it is known
before the pass and a row's loss and gradient are finished while its chunk is in
cache. With ``a[n, c]`` the class coefficients (``loss_n = -sum_c a[n, c] l[n, c]``,
``A_n = sum_c a[n, c]``) and ``u_n`` the upstream factor::

    loss_n = sum_c a[n, c] (m - x[n, c]) + A_n log(s)     (every term >= 0 for a >= 0)
    grad[n, j] = u_n (A_n e[n, j] / s - a[n, j])

Cancellation is avoided where it can be: for class-index targets the sum of the
other classes ``s' = s - e_y`` is summed separately, the loss of a row whose
target is near the max is ``log1p(s' / e_y)`` and the target's gradient without
smoothing is ``-u w_y s' / s``.

Precision guarantee (float64 arithmetic; the exact mode is correctly rounded):
``d`` is exact for float16/bfloat16/float32 inputs (a difference of two float32
numbers fits in float64) and within half an ulp for float64 inputs; ``exp``,
``log`` and ``log1p`` are within a few ulp; ``s`` is a pairwise sum of positive
terms. Each per-position loss and each gradient entry without smoothing thus has
a relative error below about ``(log2(C) + 8) * 2**-53`` (about 25 float64 ulp at
C = 131072); the reductions use ``math.fsum`` (correctly rounded sums). With
label smoothing or probability targets a gradient entry ``u (A p_j - a_j)``
can cancel: its error is below ``(log2(C) + 8) * 2**-53 * |u A p_j|``. For
float32, float16 and bfloat16 cases this is below 1e-8 of an ulp of the case
dtype, so the comparisons are unaffected; for float64 cases it is tens of
float64 ulps instead of the exact mode's half an ulp, far inside the float64
tolerance. Non-finite values follow the same rules as the exact oracle (see
``harness.oracle.exact``); ``tests/test_performance_guards.py`` checks the two modes agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from harness.oracle.problem import Expected, Problem, class_axis_back, class_last

#: Bytes of one float64 chunk buffer (a few of them are alive at once).
CHUNK_BYTES = 8 * 2**20


@dataclass(frozen=True)
class _Rows:
    """The problem in rows: logits (P, C) in their own dtype, targets (P,) or (P, C)."""

    logits: np.ndarray
    target: np.ndarray
    shape: tuple[int, ...]  # the logits' original shape


def _as_rows(p: Problem) -> _Rows:
    """A (P, C) view of the logits, copying only for K-dimensional input (classes on axis 1)."""
    x = class_last(p.logits)  # in the logits' own dtype
    t = np.asarray(p.target)
    t = class_last(t) if p.probability_target else t.astype(np.int64, copy=False).reshape(-1)
    return _Rows(x, t, np.shape(p.logits))


def _upstream_factors(p: Problem, rows: _Rows, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-position upstream factor u (P,) and the mean's denominator, from targets alone."""
    n_pos = rows.logits.shape[0]
    if p.probability_target:
        denominator = float(n_pos)
    else:
        t = rows.target
        keep = t != p.ignore_index
        denominator = math.fsum(w[t[keep]])
    with np.errstate(divide="ignore", invalid="ignore"):
        if p.reduction == "none":
            upstream = p.upstream()  # None without grad_output
            u = np.ones(n_pos) if upstream is None else upstream.astype(np.float64)
        elif p.reduction == "mean":
            u = np.full(n_pos, np.float64(1.0) / np.float64(denominator))
        else:
            u = np.ones(n_pos)
    return u, denominator


def chunk_rows(c: int) -> int:
    return max(1, CHUNK_BYTES // max(1, 8 * c))


def iter_chunks(
    p: Problem, *, want_grad: bool = True
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """Yield ``(lo, hi, loss_rows, grad_rows)`` per chunk of positions, in float64.

    ``loss_rows`` is (hi - lo,); ``grad_rows`` is (hi - lo, C) in a buffer reused by
    the next chunk (copy it to keep it), or None. For 2-D and 1-D logits the rows
    are the logits' rows; K-dimensional logits are flattened class-last.
    """
    rows = _as_rows(p)
    x, t = rows.logits, rows.target
    n_pos, c = x.shape
    w = np.ones(c) if p.weight is None else np.asarray(p.weight, dtype=np.float64)
    u_all, _ = _upstream_factors(p, rows, w)
    eps = float(p.label_smoothing)
    w_total = math.fsum(w) if eps else 0.0
    step = chunk_rows(c)
    buf = np.empty((min(step, n_pos), c))
    for lo in range(0, n_pos, step):
        hi = min(n_pos, lo + step)
        e = buf[: hi - lo]
        np.copyto(e, x[lo:hi], casting="unsafe")
        loss, grad = _chunk(p, e, t[lo:hi], u_all[lo:hi], w, w_total, eps, want_grad)
        yield lo, hi, loss, grad


def _chunk(p, e, t, u, w, w_total, eps, want_grad):
    """Loss (r,) and gradient (r, C) of one chunk; ``e`` (r, C) holds the float64 logits and is overwritten."""
    r, c = e.shape
    idx = np.arange(r)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = e.max(axis=1)  # NaN propagates; +inf or all -inf give a non-finite max
        bad = ~np.isfinite(m)
        m[bad] = 0.0
        e -= m[:, None]  # e = d = x - m <= 0
        if p.probability_target:
            y = t.astype(np.float64)
            if eps:
                y = (1 - eps) * y + eps / c
            a = w * y
            big_a = a.sum(axis=1)
            keep = np.ones(r, dtype=bool)
            # sum_c a_c (m - x_c) = -sum_c a_c d_c
            linear = -np.einsum("ij,ij->i", a, e)
        else:
            keep = t != p.ignore_index
            safe = np.where(keep, t, 0)
            wy = np.where(keep, w[safe], 0.0)
            d_y = e[idx, safe].copy()
            if eps:
                big_a = (1 - eps) * wy + (eps / c) * w_total
                # sum_c w_c (m - x_c); einsum, not BLAS gemv: threaded gemv is 10x slower here
                smooth = -np.einsum("ij,j->i", e, w)
        np.exp(e, out=e)
        if p.probability_target:
            s = e.sum(axis=1)
            loss = linear + big_a * np.log(s)
        else:
            e_y = e[idx, safe].copy()
            e[idx, safe] = 0.0
            s_other = e.sum(axis=1)
            e[idx, safe] = e_y
            s = s_other + e_y
            # near the max log1p keeps the digits; elsewhere both terms are >= 0
            nll = np.where(e_y >= 0.5, np.log1p(s_other / e_y), -d_y + np.log(s))
            nll = wy * nll
            if eps:
                nll = (1 - eps) * nll + (eps / c) * (smooth + w_total * np.log(s))
            loss = np.where(keep, nll, 0.0)
        loss[bad & keep] = np.nan
        if not want_grad:
            return loss, None
        uk = np.where(keep, u, 0.0)
        if p.probability_target or eps:
            coef = uk * big_a / s
            e *= coef[:, None]
            if p.probability_target:
                e -= uk[:, None] * a
            else:
                e -= (uk * (eps / c))[:, None] * w
                e[idx, safe] -= uk * (1 - eps) * wy
        else:
            coef = uk * wy / s
            e *= coef[:, None]
            e[idx, safe] = np.where(keep, -(uk * wy) * s_other / s, e[idx, safe])
        e[~keep & ~bad] = 0.0
        e[bad] = np.nan
    return loss, e


def cross_entropy_streaming(
    p: Problem, *, want_grad: bool = True, grad_dtype: np.dtype | type = np.float64
) -> Expected:
    """Expected loss (float64, reduced shape) and gradient (logits' shape, ``grad_dtype``).

    ``grad_dtype`` float32 halves the gradient's memory for LLM-scale cases (the
    float64 values are rounded once); the default keeps float64 like the exact oracle.
    """
    rows = _as_rows(p)
    n_pos, c = rows.logits.shape
    per_pos = np.empty(n_pos)
    grad_rows = np.empty((n_pos, c), dtype=grad_dtype) if want_grad else None
    for lo, hi, loss, grad in iter_chunks(p, want_grad=want_grad):
        per_pos[lo:hi] = loss
        if grad_rows is not None:
            grad_rows[lo:hi] = grad
    if p.reduction == "none":
        loss_out = per_pos.reshape(p.loss_shape())
    else:
        total = _fsum(per_pos)
        if p.reduction == "mean":
            w = np.ones(c) if p.weight is None else np.asarray(p.weight, dtype=np.float64)
            _, denominator = _upstream_factors(p, rows, w)
            with np.errstate(divide="ignore", invalid="ignore"):
                total = np.float64(total) / np.float64(denominator)
        loss_out = np.array(total, dtype=np.float64)
    if grad_rows is None:
        return Expected(loss_out, None)
    return Expected(loss_out, class_axis_back(grad_rows, rows.shape))


def _fsum(values: np.ndarray) -> float:
    """Correctly rounded sum; IEEE rules for non-finite values (fsum raises on inf - inf)."""
    if not np.all(np.isfinite(values)):
        return float(np.sum(values))
    return math.fsum(values)
