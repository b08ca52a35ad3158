"""A correct cross-entropy built from small overridable steps: the parent of every mutant.

Each step is a method, so a mutant overrides exactly the step its bug lives in
and inherits the rest. The computation runs in float64 for float64 input and in
float32 otherwise (a float32-accumulating implementation, which the suite's
half-precision tolerances must accept), and rounds once to the input dtype.

Shapes: logits (C,), (N, C) or (N, C, d1, ..., dK) become rows (P, C) with the
class axis last; class-index targets become labels (P,), soft targets (P, C).

The kernel fields (docs/kernel-features.md) are steps too: ``shifted`` (the targets
for causal language modelling), ``transform`` (logit_scale and softcap, with dz/dx),
``z_denominator`` (what a mean of the z-loss terms divides by).
"""

from __future__ import annotations

import numpy as np

from harness import Adapter, CallInputs, Output
from harness.adapters import KERNEL_FEATURES
from harness.adapters.numpy_ref import validate as reference_validate
from harness.dtypes import cast


class Stepwise(Adapter):
    name = "stepwise"
    description = (
        "correct cross-entropy from overridable steps (float32 accumulation below float64)"
    )
    supports = KERNEL_FEATURES

    def version(self) -> str:
        return f"numpy {np.__version__}"

    # -- the steps a mutant may override ------------------------------------------------

    def acc(self, dtype: str) -> np.dtype:
        """The dtype every intermediate is computed in."""
        return np.dtype(np.float64 if dtype == "float64" else np.float32)

    def validate(self, x: np.ndarray, t: np.ndarray, inputs: CallInputs) -> None:
        reference_validate(x, t, inputs)

    def to_rows(self, a: np.ndarray) -> np.ndarray:
        """(C,) / (N, C, d1, ...) -> (P, C): class axis last, positions flattened."""
        if a.ndim == 1:
            return a.reshape(1, -1)
        c = a.shape[1]
        return np.moveaxis(a, 1, -1).reshape(-1, c)

    def from_rows(self, g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if len(shape) == 1:
            return g.reshape(shape)
        moved = (shape[0], *shape[2:], shape[1])
        return np.moveaxis(g.reshape(moved), -1, 1)

    def row_sum(self, v: np.ndarray) -> np.ndarray:
        """Sum over the class axis of (P, C)."""
        return v.sum(axis=1)

    def total(self, v: np.ndarray) -> np.ndarray:
        """Sum of a (P,) vector."""
        return v.sum()

    def log_softmax(self, rows: np.ndarray) -> np.ndarray:
        """Shifted log-sum-exp; rows with NaN/+inf or all -inf are NaN (PyTorch's IEEE result)."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            bad = np.isnan(rows).any(axis=1) | np.isposinf(rows).any(axis=1)
            bad |= np.isneginf(rows).all(axis=1)
            m = np.where(bad, 0, rows.max(axis=1, initial=-np.inf))
            d = rows - m[:, None]
            out = d - np.log(self.row_sum(np.exp(d)))[:, None]
        out[bad] = np.nan
        return out

    def keep(self, labels: np.ndarray, ignore_index: int) -> np.ndarray:
        return labels != ignore_index

    def smoothed(self, nll, lp, safe, keep, w, eps, c):
        """Smoothed per-position loss and the coefficients a with loss_n = -sum_c a[n, c] l[n, c]."""
        share = eps / c
        smooth = np.where(keep, -self.row_sum(w * lp), 0)
        a = np.zeros_like(lp)
        a[np.arange(len(lp)), safe] = np.where(keep, w[safe], 0)
        a = (1 - eps) * a + share * w * keep[:, None]
        return (1 - eps) * nll + share * smooth, a

    def soft_targets(self, y: np.ndarray, eps, c: int) -> np.ndarray:
        return (1 - eps) * y + eps / c if eps else y

    def soft_coefficients(self, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        return w * y

    def soft_denominator(self, y: np.ndarray, w: np.ndarray, n_pos: int):
        return y.dtype.type(n_pos)

    def index_denominator(self, wy: np.ndarray, keep: np.ndarray):
        return self.total(wy)

    def mean(self, total, denominator):
        return total / denominator

    def mean_upstream(self, denominator, keep: np.ndarray, wy: np.ndarray) -> np.ndarray:
        """The factor d loss / d loss_n of each position for the mean (P,)."""
        return np.full(len(keep), 1 / denominator)

    def mask_ignored_grad(self, g: np.ndarray, keep: np.ndarray) -> np.ndarray:
        g[~keep] = 0
        return g

    def loss_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return () if x.ndim == 1 else (x.shape[0], *x.shape[2:])

    def shifted(self, t: np.ndarray, shift: int, ignore_index: int) -> np.ndarray:
        """Targets for causal language modelling: t[..., i + shift] at i, ignored at the end."""
        if shift == 0:
            return t
        out = np.full_like(t, ignore_index)
        out[..., : t.shape[-1] - shift] = t[..., shift:]
        return out

    def transform(self, rows: np.ndarray, inputs: CallInputs) -> tuple[np.ndarray, np.ndarray]:
        """z = s tanh(a x / s) (or a x) and dz/dx, in the rows' dtype."""
        acc = rows.dtype.type
        a = acc(inputs.logit_scale)
        z = rows * a if inputs.logit_scale != 1.0 else rows
        if inputs.softcap is None:
            return z, np.full_like(rows, a)
        s = acc(inputs.softcap)
        t = np.tanh(z / s)
        return s * t, a * (1 - t * t)

    def logsumexp(self, rows: np.ndarray) -> np.ndarray:
        """Row-wise log-sum-exp, shifted by the maximum (inf and NaN as PyTorch has them)."""
        m = rows.max(axis=1, initial=-np.inf)
        finite = np.isfinite(m)
        d = rows - np.where(finite, m, 0)[:, None]
        return np.where(finite, m + np.log(self.row_sum(np.exp(d))), m)

    def z_denominator(self, keep: np.ndarray):
        """What a mean of the z-loss terms divides by: the number of kept positions."""
        return np.float64(np.count_nonzero(keep))

    # -- the computation ----------------------------------------------------------------

    def run(self, inputs: CallInputs) -> Output:
        x = np.asarray(inputs.logits)
        t = np.asarray(inputs.target)
        self.validate(x, t, inputs)
        self.dtype = inputs.dtype
        acc = self.acc(inputs.dtype)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            loss, grad, z_loss = self.compute(x.astype(acc), t, inputs, acc)
        return Output(
            loss=cast(np.asarray(loss, dtype=np.float64), inputs.dtype),
            grad=None if grad is None else cast(np.asarray(grad, dtype=np.float64), inputs.dtype),
            z_loss=None
            if z_loss is None
            else cast(np.asarray(z_loss, dtype=np.float64), inputs.dtype),
        )

    def compute(self, x: np.ndarray, t: np.ndarray, inputs: CallInputs, acc: np.dtype):
        c = x.shape[0] if x.ndim == 1 else x.shape[1]
        rows = self.to_rows(x)
        slope = None
        if inputs.softcap is not None or inputs.logit_scale != 1.0:
            rows, slope = self.transform(rows, inputs)
        if not inputs.probability_target:
            t = self.shifted(t, inputs.shift, inputs.ignore_index)
        n_pos = rows.shape[0]
        w = np.ones(c, acc) if inputs.weight is None else np.asarray(inputs.weight).astype(acc)
        eps = acc.type(max(0.0, float(inputs.label_smoothing)))
        lp = self.log_softmax(rows)
        zl = acc.type(inputs.z_loss)
        keep = np.ones(n_pos, dtype=bool)
        wy = np.ones(n_pos, acc)
        target_only = False
        if inputs.probability_target:
            y = self.soft_targets(self.to_rows(t.astype(acc)), eps, c)
            a = self.soft_coefficients(y, w)
            per_pos = -self.row_sum(a * lp)
            denominator = self.soft_denominator(y, w, n_pos)
        else:
            labels = t.reshape(-1).astype(np.int64)
            keep = self.keep(labels, inputs.ignore_index)
            safe = np.where(keep, labels, 0)
            wy = np.where(keep, w[safe], 0).astype(acc)
            idx = np.arange(n_pos)
            nll = np.where(keep, -wy * lp[idx, safe], 0).astype(acc)
            if eps:
                per_pos, a = self.smoothed(nll, lp, safe, keep, w, eps, c)
            else:
                per_pos = nll
                a = np.zeros_like(lp)
                a[idx, safe] = wy
                target_only = True
            denominator = self.index_denominator(wy, keep)

        # the z-loss: zl * lse**2 per kept position, a mean over z_denominator
        lse = self.logsumexp(rows) if zl else np.zeros(n_pos, acc)
        z_pos = np.where(keep, zl * lse * lse, 0).astype(acc) if zl else np.zeros(n_pos, acc)
        if inputs.reduction == "none":
            loss = per_pos.reshape(self.loss_shape(x))
            u = (
                np.ones(n_pos, acc)
                if inputs.grad_output is None
                else np.asarray(inputs.grad_output).astype(acc).reshape(-1)
            )
            u_z = u
            z_out = z_pos.reshape(self.loss_shape(x))
        elif inputs.reduction == "sum":
            loss = self.total(per_pos)
            u = u_z = np.ones(n_pos, acc)
            z_out = self.total(z_pos)
        elif eps and not inputs.probability_target:
            # PyTorch divides the NLL and smoothing sums separately (0/0 vs x/0 differ)
            rest = per_pos - (1 - eps) * nll
            loss = (1 - eps) * self.mean(self.total(nll), denominator) + self.mean(
                self.total(rest), denominator
            )
            u = self.mean_upstream(denominator, keep, wy).astype(acc)
        else:
            loss = self.mean(self.total(per_pos), denominator)
            u = self.mean_upstream(denominator, keep, wy).astype(acc)
        if inputs.reduction == "mean":
            z_den = self.z_denominator(keep)
            z_out = self.total(z_pos) / acc.type(z_den)
            u_z = np.full(n_pos, 1 / acc.type(z_den), acc)
        if zl:
            loss = loss + z_out
        z_out = z_out if inputs.return_z_loss else None
        if not inputs.want_grad:
            return loss, None, z_out
        g = -u[:, None] * a
        if target_only:
            only = np.zeros_like(g)
            kept = np.nonzero(keep)[0]
            only[kept, labels[kept]] = g[kept, labels[kept]]
            g = only
        g = self.mask_ignored_grad(g, keep)
        grad_rows = g - np.exp(lp) * self.row_sum(g)[:, None]
        if zl:
            k = np.where(keep, u_z * 2 * zl * lse, 0).astype(acc)
            grad_rows = grad_rows + k[:, None] * np.exp(lp)
        if slope is not None:
            grad_rows = grad_rows * slope
        return loss, self.from_rows(grad_rows, x.shape), z_out
