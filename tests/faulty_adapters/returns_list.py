"""Returns the loss as a Python list.

Correct (NumPy reference) except on a reduction='sum' call, where the loss is a list.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class ReturnsList(NumpyAdapter):
    name = "returns-list"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            out = super().run(inputs)
            return Output([float(out.loss)], out.grad)
        return super().run(inputs)
