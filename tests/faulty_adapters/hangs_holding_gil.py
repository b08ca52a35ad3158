"""Sleeps inside a C call that holds the GIL: only --isolate can stop it.

Correct (NumPy reference) except on a reduction='sum' call, where it calls libc sleep() through ctypes.PyDLL, which keeps the GIL.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import ctypes

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class HangsHoldingGil(NumpyAdapter):
    name = "hangs-holding-gil"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            ctypes.PyDLL(None).sleep(3600)
        return super().run(inputs)
