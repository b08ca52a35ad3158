"""Returns None instead of an Output.

Correct (NumPy reference) except on a reduction='sum' call, where it returns None.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class ReturnsNone(NumpyAdapter):
    name = "returns-none"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            return None
        return super().run(inputs)
