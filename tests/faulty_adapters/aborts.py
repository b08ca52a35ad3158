"""Calls abort(), as a failed C assert does: SIGABRT.

Correct (NumPy reference) except on a reduction='sum' call, where the process aborts.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import os

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class Aborts(NumpyAdapter):
    name = "aborts"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            os.abort()
        return super().run(inputs)
