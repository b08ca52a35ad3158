"""A wrong implementation for the fuzzer's tests: log-softmax without the max shift.

Everything else is the NumPy reference (rows with NaN or +inf, or only -inf, are
NaN, as PyTorch has them); only ``log(sum(exp(x)))`` is computed directly, so a
logit above about 709 overflows exp() to inf and the loss and gradient become
NaN, and a row whose logits all lie below about -745 underflows to log(0).
Cases with moderate logits pass.
"""

from __future__ import annotations

from unittest import mock

import numpy as np

from harness.adapters import Adapter, CallInputs, Output, numpy_ref
from harness.dtypes import cast


def naive_log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (P, C) float64 as log(sum(exp(x))): the textbook overflow."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        bad = ~np.isfinite(np.where(np.isneginf(x), 0.0, x)).all(axis=1) | np.isneginf(x).all(
            axis=1
        )
        out = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    out[bad] = np.nan  # the non-finite rules stay right: only the shift is missing
    return out


class NoMaxShift(Adapter):
    name = "no-max-shift"
    description = "NumPy reference with an unshifted log-sum-exp (deliberately wrong)"

    def version(self) -> str:
        return "test target"

    def run(self, inputs: CallInputs) -> Output:
        # the one deliberate bug; the rest of the reference stays as it is
        with mock.patch.object(numpy_ref, "_log_softmax", naive_log_softmax):
            loss, grad = numpy_ref.cross_entropy(inputs)
        return Output(cast(loss, inputs.dtype), None if grad is None else cast(grad, inputs.dtype))
