"""Simulates a CUDA device-side assert: after one failure, every later call in the process fails.

On a GPU, ``device-side assert triggered`` leaves the CUDA context unusable:
every later call raises the same error until the process exits. Correct
(NumPy reference) until a reduction='sum' call, which "triggers the assert".
Under --isolate the harness restarts the worker after such an error, so later
results are clean; without it, every later result of this adapter is an error.
"""

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter


class PoisonedContext(NumpyAdapter):
    name = "poisoned-context"
    poisoned = False

    def run(self, inputs: CallInputs) -> Output:
        if inputs.reduction == "sum" or self.poisoned:
            self.poisoned = True
            raise RuntimeError(
                "CUDA error: device-side assert triggered\n"
                "CUDA kernel errors might be asynchronously reported at some other API call"
            )
        return super().run(inputs)
