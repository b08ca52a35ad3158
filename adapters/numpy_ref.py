"""``numpy``: a clean vectorised cross-entropy in NumPy, with an analytic gradient.

It is a peer under test like any other adapter, not the oracle. Every input
dtype is computed in float64 (log-sum-exp shifted by the row maximum, so huge
logits do not overflow) and the results are rounded once to the input dtype.

Gradient, for loss_n = -sum_c a[n, c] * l[n, c] with l = log_softmax(x_n):
    d loss / d x[n, j] = u_n * (sum_c a[n, c] * p[n, j] - a[n, j]),  p = softmax(x_n)
where u_n is the upstream factor of position n (grad_output, 1, or 1/denominator).
"""

from __future__ import annotations

import numpy as np

from harness.adapters import Adapter, CallInputs, Output
from harness.dtypes import cast

REDUCTIONS = ("none", "mean", "sum")


def validate(x: np.ndarray, t: np.ndarray, inputs: CallInputs) -> None:
    """Raise the errors PyTorch raises for invalid arguments."""
    if inputs.reduction not in REDUCTIONS:
        raise ValueError(f"reduction={inputs.reduction!r} must be one of {REDUCTIONS}")
    if inputs.label_smoothing > 1.0:
        raise ValueError(f"label_smoothing={inputs.label_smoothing} must be in [0, 1]")
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    if inputs.weight is not None and inputs.weight.shape != (c,):
        raise ValueError(f"weight of shape {inputs.weight.shape}, expected ({c},)")
    if np.issubdtype(t.dtype, np.floating):
        if t.shape != x.shape:
            raise ValueError(f"probability target of shape {t.shape}, expected {x.shape}")
        if inputs.ignore_index >= 0:
            raise ValueError("ignore_index is not supported with probability targets")
        return
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target of dtype {t.dtype}: expected integers or floating point")
    expected = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
    if t.shape != expected:
        raise ValueError(f"target of shape {t.shape}, expected {expected}")
    bad = (t != inputs.ignore_index) & ((t < 0) | (t >= c))
    if np.any(bad):
        raise IndexError(f"target {t[bad].flat[0]} is out of bounds for {c} classes")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (P, C) float64; rows with NaN/+inf or all -inf are NaN."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        bad = ~np.isfinite(np.where(np.isneginf(x), 0.0, x)).all(axis=1) | np.isneginf(x).all(
            axis=1
        )
        m = np.where(bad, 0.0, np.max(x, axis=1))
        d = x - m[:, None]
        out = d - np.log(np.exp(d).sum(axis=1))[:, None]
    out[bad] = np.nan
    return out


def cross_entropy(inputs: CallInputs) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss and gradient in float64, shapes as the oracle's."""
    x = np.asarray(inputs.logits, dtype=np.float64)
    t = np.asarray(inputs.target)
    validate(x, t, inputs)
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    eps = max(0.0, float(inputs.label_smoothing))
    rows = np.moveaxis(x.reshape(1, c) if x.ndim == 1 else x, 1, -1).reshape(-1, c)
    prob = np.issubdtype(t.dtype, np.floating)
    w = np.ones(c) if inputs.weight is None else np.asarray(inputs.weight, dtype=np.float64)
    lp = _log_softmax(rows)
    n_pos = rows.shape[0]

    parts = None  # (nll, smooth) per position, for smoothing with class indices
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if prob:
            y = np.moveaxis(t.reshape(1, c) if t.ndim == 1 else t, 1, -1).reshape(-1, c)
            y = y.astype(np.float64)
            if eps:
                y = (1 - eps) * y + eps / c
            a = w * y
            per_pos = -(a * lp).sum(axis=1)
            keep = np.ones(n_pos, dtype=bool)
            denominator = float(n_pos)
        else:
            labels = t.reshape(-1).astype(np.int64)
            keep = labels != inputs.ignore_index
            safe = np.where(keep, labels, 0)
            wy = np.where(keep, w[safe], 0.0)
            idx = np.arange(n_pos)
            per_pos = np.where(keep, -wy * lp[idx, safe], 0.0)
            a = np.zeros_like(rows)
            a[idx, safe] = wy
            if eps:
                smooth = np.where(keep, -(w * lp).sum(axis=1), 0.0)
                parts = (per_pos, smooth)
                per_pos = (1 - eps) * per_pos + eps / c * smooth
                a = (1 - eps) * a + (eps / c) * w * keep[:, None]
            denominator = wy.sum()

        if inputs.reduction == "none":
            # one loss per position: (N, d1, ..., dK), or () for unbatched input
            loss = per_pos.reshape(() if x.ndim == 1 else (x.shape[0], *x.shape[2:]))
            u = (
                np.ones(n_pos)
                if inputs.grad_output is None
                else np.asarray(inputs.grad_output, dtype=np.float64).reshape(-1)
            )
        elif inputs.reduction == "sum":
            loss = np.array(_mixed(per_pos, 1.0, parts, eps, c))
            u = np.ones(n_pos)
        else:
            loss = np.array(_mixed(per_pos, denominator, parts, eps, c))
            u = np.full(n_pos, 1.0 / denominator if denominator != 0 else np.inf)

        grad = None
        if inputs.want_grad:
            g = -u[:, None] * a
            if not prob and not eps:
                # only the target class receives upstream gradient
                g = _at_target(g, safe, keep)
            g[~keep] = 0.0
            gr = g - np.exp(lp) * g.sum(axis=1, keepdims=True)
            if x.ndim == 1:
                grad = gr.reshape(x.shape)
            else:
                moved = (x.shape[0], *x.shape[2:], c)
                grad = np.moveaxis(gr.reshape(moved), -1, 1)
    return loss, grad


def _mixed(
    per_pos: np.ndarray,
    denominator: float,
    parts: tuple[np.ndarray, np.ndarray] | None,
    eps: float,
    c: int,
) -> float:
    """A reduced loss; with smoothing on class indices the NLL and smoothing sums are
    divided separately, then mixed, as PyTorch does (0/0 and x/0 differ)."""
    if parts is not None:
        nll, smooth = parts
        return (1 - eps) * (nll.sum() / denominator) + eps / c * (smooth.sum() / denominator)
    return per_pos.sum() / denominator


def _at_target(g: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = np.zeros_like(g)
    rows = np.nonzero(keep)[0]
    out[rows, labels[rows]] = g[rows, labels[rows]]
    return out


class NumpyAdapter(Adapter):
    name = "numpy"
    description = "vectorised NumPy reference (float64 accumulation, analytic gradient)"

    def version(self) -> str:
        return f"numpy {np.__version__}"

    def run(self, inputs: CallInputs) -> Output:
        loss, grad = cross_entropy(inputs)
        out_grad = None if grad is None else cast(grad, inputs.dtype)
        return Output(loss=cast(loss, inputs.dtype), grad=out_grad)
