"""Returns float32 values for a float64 case.

Correct (NumPy reference) except on a reduction='sum' call, where the loss is float32.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import numpy as np

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class WrongDtype(NumpyAdapter):
    name = "wrong-dtype"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            out = super().run(inputs)
            return Output(np.float32(out.loss), out.grad)
        return super().run(inputs)
