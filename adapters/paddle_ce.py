"""``paddle``: ``paddle.nn.functional.cross_entropy`` on the CPU, gradient by ``paddle.grad``.

PyTorch's call maps one to one onto paddle's arguments, with the class axis given
explicitly: ``axis=1`` for (N, C) and (N, C, d1, ..., dK) logits, ``axis=0`` for
unbatched (C,) logits. Class-index targets (int64, the logits' shape without the class
axis) go in as ``label``; probability targets (the logits' shape) as ``label`` with
``soft_label=True``. ``weight``, ``ignore_index``, ``reduction`` and ``label_smoothing``
are passed as they are: paddle reduces, weighs, ignores and smooths by itself (its
``label_smoothing`` turns class indices into smoothed one-hot soft labels). With soft
labels paddle's ``reduction='none'`` loss keeps the class axis as size 1; the adapter
reshapes it to PyTorch's shape (``Tensor.reshape``, inside the graph), nothing else.

Dtypes: paddle's CPU kernel ``cross_entropy_with_softmax`` is registered for float64 and
float32 only ("The kernel with key (CPU, ..., float16) ... is not registered"), so
float16 and bfloat16 are declared unsupported.

The gradient w.r.t. the logits is ``paddle.grad`` with ``grad_output`` (or ones) as the
upstream gradient of ``reduction='none'``. Dygraph (eager) mode, paddle's default.

paddle is imported inside ``load``/``run`` only, so ``--list`` never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.adapters import Adapter, CallInputs, Output


def to_paddle(a: np.ndarray) -> Any:
    """A NumPy array as a paddle CPU tensor of the same dtype (float64, float32 or int64)."""
    import paddle

    return paddle.to_tensor(np.array(a, order="C"), place=paddle.CPUPlace())


class PaddleAdapter(Adapter):
    """``paddle.nn.functional.cross_entropy`` (CPU), gradient by ``paddle.grad``."""

    name = "paddle"
    description = "paddle.nn.functional.cross_entropy (CPU), gradient by paddle.grad"
    requires = ("paddle",)
    unsupported = frozenset({"float16", "bfloat16"})
    unsupported_source = (
        "declared by adapters/paddle_ce.py: paddle's CPU cross_entropy_with_softmax kernel "
        "is registered for float64 and float32 only"
    )

    def load(self) -> None:
        import paddle

        paddle.set_device("cpu")

    def version(self) -> str:
        import paddle

        return f"paddle {paddle.__version__}"

    def device(self) -> str:
        return "cpu"

    def run(self, inputs: CallInputs) -> Output:
        import paddle
        import paddle.nn.functional as F

        x = to_paddle(inputs.logits)
        x.stop_gradient = not inputs.want_grad
        label = to_paddle(inputs.target)
        weight = None if inputs.weight is None else to_paddle(inputs.weight)
        loss = F.cross_entropy(
            x,
            label,
            weight=weight,
            ignore_index=inputs.ignore_index,
            reduction=inputs.reduction,
            soft_label=inputs.probability_target,
            axis=0 if x.ndim == 1 else 1,
            label_smoothing=inputs.label_smoothing,
        )
        if inputs.reduction == "none":
            # soft labels (probability targets, or any label_smoothing) keep the class axis
            # as size 1 (paddle's documented shape): PyTorch's shape has none
            loss = loss.reshape(list(x.shape[:1]) + list(x.shape[2:]) if x.ndim > 1 else [])
        if not inputs.want_grad:
            return Output(loss=loss.numpy())
        upstream = None
        if inputs.reduction == "none":
            upstream = (
                to_paddle(inputs.grad_output)
                if inputs.grad_output is not None
                else paddle.ones_like(loss)
            )
        (grad,) = paddle.grad([loss], [x], grad_outputs=None if upstream is None else [upstream])
        return Output(loss=loss.numpy(), grad=grad.numpy())
