"""Returns per-row losses where a scalar is due.

Correct (NumPy reference) except on a reduction='sum' call, where the loss keeps shape (N,).
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import numpy as np

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class WrongLossShape(NumpyAdapter):
    name = "wrong-loss-shape"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            out = super().run(inputs)
            return Output(np.full(inputs.logits.shape[0], out.loss), out.grad)
        return super().run(inputs)
