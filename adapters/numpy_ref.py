"""``numpy``: a clean vectorised cross-entropy in NumPy, with an analytic gradient.

It is a peer under test like any other adapter, not the oracle. Every input
dtype is computed in float64 (log-sum-exp shifted by the row maximum, so huge
logits do not overflow) and the results are rounded once to the input dtype.

Gradient, for loss_n = -sum_c a[n, c] * l[n, c] with l = log_softmax(x_n):
    d loss / d x[n, j] = u_n * (sum_c a[n, c] * p[n, j] - a[n, j]),  p = softmax(x_n)
where u_n is the upstream factor of position n (grad_output, 1, or 1/denominator).

Kernel fields (docs/kernel-features.md): the loss is that of z = s * tanh(a * x / s)
(or a * x), plus zl * lse(z_n)**2 per kept position (a mean divides those by the kept
count); the gradient w.r.t. z gains 2 * zl * lse_n * p[n, j] times the z-loss's upstream
factor, and the chain rule multiplies by dz/dx = a * sech(a * x / s)**2. ``shift`` k moves the
targets k positions back along their last axis and ignores the last k positions.

Fused linear cross-entropy (``run_linear``): the logits ``hidden @ classifier.T + bias`` in
float64, the loss and G = dLoss/dlogits as above, then ``G @ classifier``, ``G.T @ hidden``
and ``G.sum(0)``, all in float64, rounded once to the input dtype.
"""

from __future__ import annotations

import numpy as np

from harness.adapters import (
    KERNEL_FEATURES,
    Adapter,
    CallInputs,
    LinearCallInputs,
    LinearOutput,
    Output,
)
from harness.dtypes import carrier, cast

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


def _class_last(a: np.ndarray, c: int) -> np.ndarray:
    """(P, C) rows of 1-D, (N, C) or (N, C, d1, ...) values: a view for 1-D and 2-D ones (the
    common case skips ``np.moveaxis``, some microseconds a call)."""
    if a.ndim == 1:
        return a.reshape(1, c)
    if a.ndim == 2:
        return a
    return np.moveaxis(a, 1, -1).reshape(-1, c)


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


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp (P,) of (P, C) float64, shifted by the row maximum: NaN with a
    NaN, +inf with a +inf, -inf for a row of -inf only."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(x, axis=1, initial=-np.inf)
        finite = np.isfinite(m)
        d = x - np.where(finite, m, 0.0)[:, None]
        lse = np.where(finite, m + np.log(np.exp(d).sum(axis=1)), m)
    return lse


def _shifted(t: np.ndarray, shift: int, ignore_index: int) -> np.ndarray:
    """Targets for causal language modelling: t[..., i + shift] at i, ignore_index at the end."""
    if shift == 0:
        return t
    out = np.full_like(t, ignore_index)
    out[..., :-shift] = t[..., shift:]
    return out


def _transform(x: np.ndarray, inputs: CallInputs) -> tuple[np.ndarray, np.ndarray | None]:
    """The logits the loss sees, z = s tanh(a x / s) (or a x), and dz/dx (None: 1)."""
    a = float(inputs.logit_scale)
    if inputs.softcap is None and a == 1.0:
        return x, None
    with np.errstate(invalid="ignore", over="ignore"):
        z = a * x
        if inputs.softcap is None:
            return z, np.full_like(x, a)
        s = float(inputs.softcap)
        u = z / s
        # sech**2 rather than 1 - tanh**2: no cancellation where tanh is close to +-1
        return s * np.tanh(u), a / np.cosh(u) ** 2


def cross_entropy(inputs: CallInputs) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss and gradient in float64, shapes as the oracle's."""
    return cross_entropy_with_z_loss(inputs)[:2]


#: logits per block of rows: the float64 temporaries of a block take a few times 8 MiB
BLOCK_ELEMENTS = 1 << 20


def cross_entropy_with_z_loss(
    inputs: CallInputs, out_dtype: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Loss, gradient and (for ``return_z_loss``) the z-loss term, in float64.

    The rows (positions) are computed in blocks of about ``BLOCK_ELEMENTS`` logits, converted
    to float64 block by block; the gradient is written block by block into one array of
    ``out_dtype``'s carrier (float64 when None), so a large case needs its logits, that
    array and a few blocks."""
    x = np.asarray(inputs.logits)
    t = np.asarray(inputs.target)
    validate(x, t, inputs)
    t = _shifted(t, inputs.shift, inputs.ignore_index)
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    eps = max(0.0, float(inputs.label_smoothing))
    # (P, C) in the logits' own dtype: a view for 1-D and 2-D logits
    rows = _class_last(x, c)
    prob = np.issubdtype(t.dtype, np.floating)
    w = np.ones(c) if inputs.weight is None else np.asarray(inputs.weight, dtype=np.float64)
    n_pos = rows.shape[0]
    zl = float(inputs.z_loss)

    y_rows = None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if prob:
            y_rows = _class_last(t, c)
            keep = np.ones(n_pos, dtype=bool)
            denominator = float(n_pos)
        else:
            labels = t.reshape(-1).astype(np.int64)
            keep = labels != inputs.ignore_index
            safe = np.where(keep, labels, 0)
            wy = np.where(keep, w[safe], 0.0)
            denominator = wy.sum()
        n_kept = float(np.count_nonzero(keep))
        if inputs.reduction == "none":
            u = (
                np.ones(n_pos)
                if inputs.grad_output is None
                else np.asarray(inputs.grad_output, dtype=np.float64).reshape(-1)
            )
            u_z = u
        elif inputs.reduction == "sum":
            u = u_z = np.ones(n_pos)
        else:
            u = np.full(n_pos, 1.0 / denominator if denominator != 0 else np.inf)
            u_z = np.full(n_pos, 1.0 / n_kept if n_kept else np.inf)

    per_pos = np.zeros(n_pos)
    smooth = np.zeros(n_pos) if eps and not prob else None
    z_pos = np.zeros(n_pos)
    grad_rows = None
    if inputs.want_grad:
        kind = np.float64 if out_dtype is None else carrier(out_dtype)
        grad_rows = np.empty((n_pos, c), dtype=kind)
    step = max(1, BLOCK_ELEMENTS // max(1, c))
    for lo in range(0, n_pos, step):
        hi = min(n_pos, lo + step)
        xb, slope = _transform(np.asarray(rows[lo:hi], dtype=np.float64), inputs)
        lp = _log_softmax(xb)
        lse = _logsumexp(xb) if zl else np.zeros(hi - lo)
        r = np.arange(hi - lo)
        kb = keep[lo:hi]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if y_rows is not None:
                y = np.asarray(y_rows[lo:hi], dtype=np.float64)
                if eps:
                    y = (1 - eps) * y + eps / c
                a = w * y
                per_pos[lo:hi] = -(a * lp).sum(axis=1)
            else:
                sb, wb = safe[lo:hi], wy[lo:hi]
                per_pos[lo:hi] = np.where(kb, -wb * lp[r, sb], 0.0)
                a = np.zeros_like(xb)
                a[r, sb] = wb
                if smooth is not None:
                    smooth[lo:hi] = np.where(kb, -(w * lp).sum(axis=1), 0.0)
                    a = (1 - eps) * a + (eps / c) * w * kb[:, None]
            # the z-loss: zl * lse**2 per kept position, a mean over the kept count
            if zl:
                z_pos[lo:hi] = np.where(kb, zl * lse * lse, 0.0)
            if grad_rows is not None:
                g = -u[lo:hi, None] * a
                if y_rows is None and not eps:
                    # only the target class receives upstream gradient
                    g = _at_target(g, safe[lo:hi], kb)
                g[~kb] = 0.0
                gr = g - np.exp(lp) * g.sum(axis=1, keepdims=True)
                if zl:
                    k = np.where(kb, u_z[lo:hi] * 2.0 * zl * lse, 0.0)
                    gr = gr + k[:, None] * np.exp(lp)
                if slope is not None:
                    gr = gr * slope
                grad_rows[lo:hi] = gr if out_dtype is None else cast(gr, out_dtype)

    parts = None  # (nll, smooth) per position, for smoothing with class indices
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if smooth is not None:
            parts = (per_pos, smooth)
            per_pos = (1 - eps) * per_pos + eps / c * smooth
        shape = () if x.ndim == 1 else (x.shape[0], *x.shape[2:])
        if inputs.reduction == "none":
            # one loss per position: (N, d1, ..., dK), or () for unbatched input
            loss = (per_pos + z_pos).reshape(shape)
            z_out = z_pos.reshape(shape)
        elif inputs.reduction == "sum":
            z_out = np.array(z_pos.sum())
            loss = np.array(_mixed(per_pos, 1.0, parts, eps, c) + (z_out if zl else 0.0))
        else:
            z_out = np.array(z_pos.sum() / n_kept)
            loss = np.array(_mixed(per_pos, denominator, parts, eps, c) + (z_out if zl else 0.0))

    grad = None
    if grad_rows is not None:
        if x.ndim <= 2:  # (P, C) already: the rows themselves
            grad = grad_rows.reshape(x.shape)
        else:
            moved = (x.shape[0], *x.shape[2:], c)
            grad = np.moveaxis(grad_rows.reshape(moved), -1, 1)
    return loss, grad, (z_out if inputs.return_z_loss else None)


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
    supports = KERNEL_FEATURES

    def version(self) -> str:
        return f"numpy {np.__version__}"

    def run(self, inputs: CallInputs) -> Output:
        # the gradient comes rounded to the dtype, block by block
        loss, grad, z_loss = cross_entropy_with_z_loss(inputs, inputs.dtype)
        out_z = None if z_loss is None else cast(z_loss, inputs.dtype)
        return Output(loss=cast(loss, inputs.dtype), grad=grad, z_loss=out_z)

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        h = np.asarray(inputs.hidden, dtype=np.float64)
        w = np.asarray(inputs.classifier, dtype=np.float64)
        rows = h.reshape(-1, h.shape[-1])
        logits = rows @ w.T
        if inputs.bias is not None:
            logits += np.asarray(inputs.bias, dtype=np.float64)
        t = _shifted(np.asarray(inputs.target), inputs.shift, inputs.ignore_index)
        go = inputs.grad_output
        call = CallInputs(
            logits=logits,
            target=t.reshape(-1),
            weight=inputs.weight,
            reduction=inputs.reduction,
            ignore_index=inputs.ignore_index,
            label_smoothing=inputs.label_smoothing,
            dtype="float64",
            grad_output=None if go is None else np.asarray(go).reshape(-1),
            want_grad=inputs.want_grad,
            softcap=inputs.softcap,
            logit_scale=inputs.logit_scale,
            z_loss=inputs.z_loss,
            return_z_loss=inputs.return_z_loss,
        )
        loss, g, z_loss = cross_entropy_with_z_loss(call)
        shape = t.shape if inputs.reduction == "none" else ()
        d = inputs.dtype
        out = LinearOutput(
            loss=cast(np.reshape(loss, shape), d),
            z_loss=None if z_loss is None else cast(np.reshape(z_loss, shape), d),
        )
        if g is not None and inputs.want_grad:
            with np.errstate(invalid="ignore", over="ignore"):
                out.grad_hidden = cast((g @ w).reshape(h.shape), d)
                out.grad_classifier = cast(g.T @ rows, d)
                if inputs.bias is not None:
                    out.grad_bias = cast(g.sum(axis=0), d)
        return out
