"""Raises an unexpected exception.

Correct (NumPy reference) except on a reduction='sum' call, where it raises RuntimeError.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class Raises(NumpyAdapter):
    name = "raises"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            raise RuntimeError("kernel launch failed: out of shared memory")
        return super().run(inputs)
