"""Returns torch tensors that still require grad.

Correct (NumPy reference) except on a reduction='sum' call, where the loss is a torch tensor with requires_grad=True.
Used by tests/test_faulty_adapters.py with tests/faulty_adapters/cases.yaml.
"""

import torch

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class TorchRequiresGrad(NumpyAdapter):
    name = "torch-requires-grad"

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum":
            out = super().run(inputs)
            return Output(torch.tensor(float(out.loss), requires_grad=True), out.grad)
        return super().run(inputs)
