"""Allocates without bound (1 GiB at a time, touched) until it fails.

Correct (NumPy reference) except on a reduction='sum' call, where it allocates until memory runs out.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import numpy as np

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class EatsMemory(NumpyAdapter):
    name = "eats-memory"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            hoard = []
            while True:
                hoard.append(np.ones(2**27))
        return super().run(inputs)
