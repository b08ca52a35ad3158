"""Normalises the logits in place (a classic fused-kernel shortcut).

Correct (NumPy reference) except on a reduction='sum' call, where it subtracts the row maximum from the caller's logits in place.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class MutatesInputs(NumpyAdapter):
    name = "mutates-inputs"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            out = super().run(inputs)
            inputs.logits[...] -= inputs.logits.max(axis=-1, keepdims=True)
            return out
        return super().run(inputs)
