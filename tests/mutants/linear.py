"""Fused linear cross-entropy from overridable steps, and the mutants of its steps.

``LinearStepwise`` forms the logits ``hidden @ classifier.T + bias`` in the accumulation
dtype of ``Stepwise`` (float32 below float64), rounds them to the case dtype, runs
``Stepwise`` on them for the loss and G = dLoss/dlogits (rounded to the dtype, as a kernel
that stores it does), and forms the three gradients from G in the accumulation dtype. Each
mutant overrides the one step its bug lives in.

Shapes: hidden rows (P, H), classifier (V, H), bias (V,), G (P, V), ``keep`` (P,) the
positions whose (shifted) target is not ignored.
"""

from __future__ import annotations

import numpy as np

from harness import CallInputs
from harness.adapters import LinearCallInputs, LinearOutput
from harness.dtypes import cast
from tests.mutants.stepwise import Stepwise


class LinearStepwise(Stepwise):
    name = "linear_stepwise"
    description = "correct fused linear cross-entropy from overridable steps"

    # -- the steps a mutant may override ------------------------------------------------

    def logits(self, rows: np.ndarray, w: np.ndarray, b: np.ndarray | None, dtype: str):
        """(P, V) logits in the accumulation dtype, rounded to ``dtype``."""
        acc = self.acc(dtype)
        z = rows.astype(acc) @ w.astype(acc).T
        if b is not None:
            z = z + b.astype(acc)
        return cast(z.astype(np.float64), dtype)

    def leaked(self, g: np.ndarray, logits: np.ndarray, keep: np.ndarray, inputs) -> np.ndarray:
        """The G a step uses for the classifier and bias gradients (correct: G itself)."""
        return g

    def grad_hidden(self, g, w, acc):
        return g.astype(acc) @ w.astype(acc)

    def grad_classifier(self, g, rows, acc):
        return g.astype(acc).T @ rows.astype(acc)

    def grad_bias(self, g, acc):
        return g.astype(acc).sum(axis=0)

    # -- the driver -----------------------------------------------------------------------

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        d = inputs.dtype
        acc = self.acc(d)
        h = np.asarray(inputs.hidden, dtype=np.float64)
        w = np.asarray(inputs.classifier, dtype=np.float64)
        b = None if inputs.bias is None else np.asarray(inputs.bias, dtype=np.float64)
        rows = h.reshape(-1, h.shape[-1])
        logits = self.logits(rows, w, b, d)
        t = self.shifted(np.asarray(inputs.target), inputs.shift, inputs.ignore_index)
        go = inputs.grad_output
        call = CallInputs(
            logits=logits, target=t.reshape(-1), weight=inputs.weight,
            reduction=inputs.reduction, ignore_index=inputs.ignore_index,
            label_smoothing=inputs.label_smoothing, dtype=d,
            grad_output=None if go is None else np.asarray(go).reshape(-1),
            want_grad=inputs.want_grad, softcap=inputs.softcap,
            logit_scale=inputs.logit_scale, z_loss=inputs.z_loss,
            return_z_loss=inputs.return_z_loss,
        )  # fmt: skip
        out = self.run(call)
        shape = t.shape if inputs.reduction == "none" else ()
        result = LinearOutput(
            loss=np.reshape(out.loss, shape),
            z_loss=None if out.z_loss is None else np.reshape(out.z_loss, shape),
        )
        if out.grad is None or not inputs.want_grad:
            return result
        g = np.asarray(out.grad, dtype=np.float64)
        keep = t.reshape(-1) != inputs.ignore_index
        self._t = np.where(keep, t.reshape(-1), 0)
        leaked = self.leaked(g, np.asarray(logits, dtype=np.float64), keep, inputs)
        with np.errstate(invalid="ignore", over="ignore"):
            result.grad_hidden = cast(self.grad_hidden(g, w, acc).astype(np.float64), d).reshape(
                h.shape
            )
            result.grad_classifier = cast(
                self.grad_classifier(leaked, rows, acc).astype(np.float64), d
            )
            if b is not None:
                result.grad_bias = cast(self.grad_bias(leaked, acc).astype(np.float64), d)
        return result


def _softmax_part(logits: np.ndarray, keep: np.ndarray, inputs, t: np.ndarray) -> np.ndarray:
    """What an ignored row's gradient is without the mask: softmax times the upstream factor
    (1 / the kept weight total for a mean, 1 for a sum, grad_output for none); ``t`` the
    shifted targets (P,)."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    factor = np.ones(len(keep))
    if inputs.reduction == "none" and inputs.grad_output is not None:
        factor = np.asarray(inputs.grad_output, dtype=np.float64).reshape(-1)
    elif inputs.reduction == "mean":
        w = np.ones(logits.shape[1]) if inputs.weight is None else np.asarray(inputs.weight)
        total = float(w[t[keep]].sum())
        factor = np.full(len(keep), 1.0 / total if total else 0.0)
    return p * factor[:, None]


class ClassifierGradMissesIgnoredMask(LinearStepwise):
    """The classifier gradient takes the softmax of the ignored rows too (the ignored-row mask
    applied to the loss and the hidden-state gradient, but not in the kernel's dW pass)."""

    name = "classifier_grad_misses_ignored_mask"

    def leaked(self, g, logits, keep, inputs):
        self._leak = np.where(keep[:, None], g, _softmax_part(logits, keep, inputs, self._t))
        return g

    def grad_classifier(self, g, rows, acc):
        return super().grad_classifier(self._leak, rows, acc)


class BiasGradSumsIgnoredRows(LinearStepwise):
    """The bias gradient sums G over every row, the ignored ones' softmax included."""

    name = "bias_grad_sums_ignored_rows"

    def leaked(self, g, logits, keep, inputs):
        self._leak = np.where(keep[:, None], g, _softmax_part(logits, keep, inputs, self._t))
        return g

    def grad_bias(self, g, acc):
        return super().grad_bias(self._leak, acc)


class LogitsAccumulatedInDtype(LinearStepwise):
    """The logits' dot products accumulated in the case dtype, one product at a time (a
    half-precision matmul without float32 accumulation)."""

    name = "logits_accumulated_in_dtype"

    def logits(self, rows, w, b, dtype):
        if dtype not in ("float16", "bfloat16"):
            return super().logits(rows, w, b, dtype)
        z = np.zeros((rows.shape[0], w.shape[0]))
        for k in range(rows.shape[1]):
            z = cast(z + cast(rows[:, k : k + 1] * w[:, k][None, :], dtype), dtype)
        if b is not None:
            z = cast(z + b, dtype)
        return cast(z.astype(np.float64), dtype)


LINEAR_MUTANTS: tuple[type[LinearStepwise], ...] = (
    ClassifierGradMissesIgnoredMask,
    BiasGradSumsIgnoredRows,
    LogitsAccumulatedInDtype,
)
