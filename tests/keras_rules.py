"""Keras's weighting and reduction rules written out in NumPy, as a test adapter.

Not Keras: an independent statement of the rules the ``keras`` dialect claims Keras follows
(keras 3.15.1, keras/src/losses/loss.py and losses.py), computed in float64 from
``log_softmax`` and rounded to the case dtype once:

- a position's loss is ``-sum_c q[c] l[c]`` with ``q = (1 - eps) onehot(y) + eps / C`` (the
  probabilities, smoothed the same way, for probability targets), times the sample weight
  ``w[y]``; an ignored position's loss and gradient are 0, whatever its logits;
- ``mean`` divides the sum by the number of kept positions (``sum_over_batch_size`` with
  Keras's mask), and a zero divisor gives 0 (``divide_no_nan``).

It needs no framework, so the dialect's machinery (the oracle, both verdicts, the reports, the
gate) is tested in the main suite; tests/test_keras_adapter.py holds Keras itself to the same
rules where Keras is installed.
"""

from __future__ import annotations

import numpy as np

from harness import Adapter, CallInputs, Output
from harness.dtypes import cast


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Rows of log-probabilities; NaN for a row with a NaN or +inf, or only -inf."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(np.where(np.isfinite(x), x, -np.inf), axis=1, keepdims=True)
        bad = np.isnan(x).any(axis=1) | (x == np.inf).any(axis=1) | ~np.isfinite(m[:, 0])
        m = np.where(np.isfinite(m), m, 0.0)
        z = np.exp(x - m)
        out = x - m - np.log(z.sum(axis=1, keepdims=True))
    out[bad] = np.nan
    return out


class KerasRules(Adapter):
    """Keras's rules in NumPy (class-last rows; weights as sample weights ``w[y]``)."""

    name = "keras-rules"
    semantics = "keras"
    unsupported = frozenset({"invalid_input"})

    def version(self) -> str:
        return f"numpy {np.__version__}"

    def run(self, inputs: CallInputs) -> Output:
        x = np.asarray(inputs.logits, dtype=np.float64)
        shape = x.shape
        rows = x[None, :] if x.ndim == 1 else np.moveaxis(x, 1, -1).reshape(-1, shape[1])
        c = rows.shape[1]
        eps = float(inputs.label_smoothing)
        if inputs.probability_target:
            t = np.asarray(inputs.target, dtype=np.float64)
            q = t[None, :] if t.ndim == 1 else np.moveaxis(t, 1, -1).reshape(-1, c)
            q = (1 - eps) * q + eps / c
            if inputs.weight is not None:  # no target class: the dialect weights per class
                q = q * np.asarray(inputs.weight, dtype=np.float64)
            kept = np.ones(rows.shape[0], bool)
            sw = np.ones(rows.shape[0])
        else:
            y = np.asarray(inputs.target).reshape(-1)
            kept = y != inputs.ignore_index
            safe = np.where(kept, y, 0)
            one_hot = np.zeros((safe.size, c))
            one_hot[np.arange(safe.size), safe] = 1.0
            q = (1 - eps) * one_hot + eps / c
            w = np.ones(c) if inputs.weight is None else np.asarray(inputs.weight, np.float64)
            sw = np.where(kept, w[safe], 0.0)
        logp = _log_softmax(np.where(kept[:, None], rows, 0.0))  # ignored rows: logits zeroed
        with np.errstate(invalid="ignore"):
            if inputs.probability_target or eps != 0:  # every class has a coefficient
                terms = q * logp
            else:  # only the target's log-probability enters
                terms = np.where(q != 0, q * logp, 0.0)
            per = np.where(kept, -np.sum(terms, axis=1) * sw, 0.0)
            a = q * sw[:, None]  # d loss_n / d logp[n, c] = -a[n, c]
        n_kept = int(np.count_nonzero(kept))
        if inputs.reduction == "none":
            loss = per.reshape(() if x.ndim == 1 else (shape[0], *shape[2:]))
            g = (
                np.ones(per.shape)
                if inputs.grad_output is None
                else np.asarray(inputs.grad_output, np.float64).reshape(-1)
            )
        elif inputs.reduction == "sum":
            loss, g = np.sum(per), np.ones(per.shape)
        else:
            loss = np.sum(per) / n_kept if n_kept else np.float64(0.0)
            g = np.full(per.shape, 1.0 / n_kept if n_kept else 0.0)
        with np.errstate(invalid="ignore"):
            p = np.exp(logp)
            grad_rows = g[:, None] * (a.sum(axis=1, keepdims=True) * p - a)
        grad_rows[~kept] = 0.0
        if x.ndim == 1:
            grad = grad_rows.reshape(shape)
        else:
            grad = np.moveaxis(grad_rows.reshape(shape[0], *shape[2:], c), -1, 1)
        return Output(cast(np.asarray(loss), inputs.dtype), cast(grad, inputs.dtype))
