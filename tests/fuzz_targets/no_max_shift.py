"""A wrong implementation for the fuzzer's tests: log-softmax without the max shift.

Everything else is the NumPy reference; only ``log(sum(exp(x)))`` is computed
directly, so any logit above about 709 overflows exp() to inf and the loss and
gradient become NaN. Cases with moderate logits pass.
"""

from __future__ import annotations

from unittest import mock

import numpy as np

from adapters import Adapter, CallInputs, Output, numpy_ref
from harness.dtypes import cast


def naive_log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (P, C) float64 as log(sum(exp(x))): the textbook overflow."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


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
