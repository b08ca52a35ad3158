"""Streaming oracle for large cases: chunks of rows in NumPy extended precision.

Used by ``harness.oracle.cross_entropy`` above ``EXACT_LIMIT`` logits. Each chunk
of rows is promoted to ``np.longdouble`` (80-bit x87 on x86-64 Linux: 64-bit
significand; float64 elsewhere), so memory stays at a few chunk copies rather
than a float64 or extended copy of the whole array. Per-row log-sum-exp is
shifted by the row maximum. With a 64-bit significand the loss and gradient
carry a relative error of about C * 2**-64 before the final rounding to
float64, i.e. within an ulp of float64 for C up to about 2**11 and within a few
float64 ulps for C up to 2**18. The same non-finite rules as the exact oracle apply.
"""

from __future__ import annotations

import numpy as np

from harness.oracle import OracleResult, Problem

CHUNK_BYTES = 64 * 2**20


def _chunk_rows(c: int) -> int:
    itemsize = np.dtype(np.longdouble).itemsize
    return max(1, CHUNK_BYTES // max(1, c * itemsize))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in the dtype of ``x`` with PyTorch's non-finite rules."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        bad = np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1) | np.isneginf(x).all(axis=1)
        m = np.max(np.where(np.isneginf(x), -np.inf, x), axis=1)
        m = np.where(bad, 0, m)
        d = x - m[:, None]
        lse = np.log(np.sum(np.exp(d), axis=1))
        out = d - lse[:, None]
        out[bad] = np.nan
    return out


def cross_entropy_streaming(p: Problem, *, want_grad: bool = True) -> OracleResult:
    x_all, t_all = p.rows()
    n_pos, c = x_all.shape
    ld = np.longdouble
    eps = ld(p.label_smoothing)
    w = np.asarray(p.weight, dtype=ld) if p.weight is not None else np.ones(c, dtype=ld)
    upstream = p.upstream()
    per_pos = np.zeros(n_pos, dtype=ld)
    denominator = ld(0)
    step = _chunk_rows(c)
    # pass 1: per-position losses and the mean's denominator
    for lo in range(0, n_pos, step):
        hi = min(n_pos, lo + step)
        lp = _log_softmax(x_all[lo:hi].astype(ld))
        per_pos[lo:hi], den = _chunk_loss(p, lp, t_all[lo:hi], w, eps, c)
        denominator += den
    with np.errstate(invalid="ignore", divide="ignore"):
        if p.reduction == "none":
            loss = per_pos.astype(np.float64).reshape(p.loss_shape())
            scale = np.ones(n_pos, dtype=ld) if upstream is None else upstream.astype(ld)
        else:
            total = per_pos.sum()
            factor = ld(1)
            if p.reduction == "mean":
                total = total / denominator
                factor = ld(1) / denominator
            loss = np.array(float(total), dtype=np.float64)
            scale = np.full(n_pos, factor, dtype=ld)
    if not want_grad:
        return OracleResult(loss, None)
    grad = np.empty((n_pos, c), dtype=np.float64)
    for lo in range(0, n_pos, step):
        hi = min(n_pos, lo + step)
        lp = _log_softmax(x_all[lo:hi].astype(ld))
        grad[lo:hi] = _chunk_grad(p, lp, t_all[lo:hi], w, eps, c, scale[lo:hi])
    return OracleResult(loss, p.grad_from_rows(grad))


def _coefficients(p: Problem, t: np.ndarray, w: np.ndarray, eps, c: int):
    """Per-row class coefficients a[n, c] with loss_n = -sum_c a[n, c] * l[n, c], and a mask of kept rows."""
    ld = np.longdouble
    if p.probability_target:
        y = t.astype(ld)
        if p.label_smoothing != 0:
            y = (1 - eps) * y + eps / c
        return w[None, :] * y, np.ones(len(t), dtype=bool)
    keep = t != p.ignore_index
    safe = np.where(keep, t, 0)
    a = np.zeros((len(t), c), dtype=ld)
    a[np.arange(len(t)), safe] = np.where(keep, w[safe], 0)
    if p.label_smoothing != 0:
        a = (1 - eps) * a + (eps / c) * w[None, :] * keep[:, None]
    return a, keep


def _chunk_loss(p: Problem, lp, t, w, eps, c):
    a, keep = _coefficients(p, t, w, eps, c)
    with np.errstate(invalid="ignore"):
        if p.probability_target:
            return -(a * lp).sum(axis=1), np.longdouble(len(t))
        safe = np.where(keep, t, 0)
        rows = np.arange(len(t))
        wy = np.where(keep, w[safe], 0)
        nll = -wy * lp[rows, safe]
        if p.label_smoothing != 0:
            smooth = -(w[None, :] * lp).sum(axis=1)
            nll = (1 - eps) * nll + eps / c * smooth
        return np.where(keep, nll, 0), wy.sum()


def _chunk_grad(p: Problem, lp, t, w, eps, c, scale):
    a, keep = _coefficients(p, t, w, eps, c)
    with np.errstate(invalid="ignore", over="ignore"):
        g = np.where(keep[:, None], -scale[:, None] * a, 0)
        if not p.probability_target and p.label_smoothing == 0:
            # only the target class receives gradient (no 0 * inf elsewhere)
            g = _target_only(g, t, keep)
        return (g - np.exp(lp) * g.sum(axis=1, keepdims=True)).astype(np.float64)


def _target_only(g, t, keep):
    out = np.zeros_like(g)
    rows = np.arange(len(t))[keep]
    out[rows, t[keep]] = g[rows, t[keep]]
    return out
