"""Calls os._exit(3), as a library's fatal-error path might.

Correct (NumPy reference) except on a reduction='sum' call, where the process exits with code 3.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import os

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class Exits(NumpyAdapter):
    name = "exits"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            os._exit(3)
        return super().run(inputs)
