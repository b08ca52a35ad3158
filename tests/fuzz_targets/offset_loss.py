"""A wrong implementation for the fuzzer's tests: every loss value 1/2 too large.

Each element of the loss (per position for ``none``, the reduced value
otherwise) is the NumPy reference's plus 0.5; the gradient, a constant's
derivative being 0, is the reference's. Shifts, class permutations and
flattening change both sides alike and the gradient rows still sum to zero, so
those relations hold; the oracle comparison (and ``sum = sum(none)``) sees the
bug. The fuzzer's tests use it as a stand-in reference implementation that
passes a property yet fails the cases a finding would write.
"""

from __future__ import annotations

from harness import Adapter, CallInputs, Output
from harness.adapters.numpy_ref import cross_entropy
from harness.dtypes import cast

OFFSET = 0.5


class OffsetLoss(Adapter):
    name = "offset-loss"
    description = "NumPy reference with 0.5 added to the loss (deliberately wrong)"

    def version(self) -> str:
        return "test target"

    def run(self, inputs: CallInputs) -> Output:
        loss, grad = cross_entropy(inputs)
        grad = None if grad is None else cast(grad, inputs.dtype)
        return Output(cast(loss + OFFSET, inputs.dtype), grad)
