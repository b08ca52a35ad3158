"""Dereferences a null pointer: the interpreter dies of SIGSEGV.

Correct (NumPy reference) except on a reduction='sum' call, where it reads address 0.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import ctypes

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class Segfault(NumpyAdapter):
    name = "segfault"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            ctypes.string_at(0)
        return super().run(inputs)
