"""A wrong implementation for the fuzzer's tests: a wrong mean denominator in one rare combination.

With class weights, label smoothing, at least one ignored target, K-dimensional
input and ``mean`` all together, it divides by the number of kept positions
instead of the sum of their weights. Every other call is the NumPy reference,
so a corpus without that exact combination never sees the bug.
"""

from __future__ import annotations

import numpy as np

from harness import Adapter, CallInputs, Output
from harness.adapters.numpy_ref import cross_entropy
from harness.dtypes import cast


def rare_combination(inputs: CallInputs) -> bool:
    t = inputs.target
    return (
        inputs.reduction == "mean"
        and inputs.weight is not None
        and inputs.label_smoothing > 0
        and inputs.logits.ndim > 2
        and not inputs.probability_target
        and bool(np.any(t == inputs.ignore_index))
    )


class WrongRareMean(Adapter):
    name = "wrong-rare-mean"
    description = "NumPy reference, wrong mean denominator for weight+ignore+smoothing+K-dim"

    def version(self) -> str:
        return "test target"

    def run(self, inputs: CallInputs) -> Output:
        loss, grad = cross_entropy(inputs)
        if rare_combination(inputs):
            labels = inputs.target[inputs.target != inputs.ignore_index]
            right = float(np.sum(inputs.weight.astype(np.float64)[labels]))
            wrong = float(labels.size)
            if wrong:
                loss = loss * right / wrong
                grad = None if grad is None else grad * right / wrong
        return Output(cast(loss, inputs.dtype), None if grad is None else cast(grad, inputs.dtype))
