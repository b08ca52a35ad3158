"""Returns a transposed gradient.

Correct (NumPy reference) except on a reduction='sum' call, where the gradient is (C, N).
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class WrongGradShape(NumpyAdapter):
    name = "wrong-grad-shape"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            out = super().run(inputs)
            return Output(out.loss, out.grad.T)
        return super().run(inputs)
