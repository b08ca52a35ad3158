"""Sleeps for an hour (releases the GIL: a thread watchdog can report it).

Correct (NumPy reference) except on a reduction='sum' call, where it sleeps for an hour.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import time

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class Hangs(NumpyAdapter):
    name = "hangs"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            time.sleep(3600)
        return super().run(inputs)
