"""``mlx``: ``mlx.nn.losses.cross_entropy`` on mlx's CPU device, gradient by ``mlx.core.vjp``.

PyTorch's call maps onto mlx's arguments as a user would write it:

- logits (C,), (N, C) or (N, C, d1, ..., dK) go in as they are, with ``axis=0`` for
  unbatched input and ``axis=1`` otherwise; class-index targets (int64) and
  probability targets (the logits' shape and dtype) both go to ``targets`` (mlx
  tells them apart by their number of dimensions).
- ``reduction`` and ``label_smoothing`` are passed through; mlx computes its own
  reductions (``mx.mean`` of the per-position losses) and its own smoothing
  (``(1 - eps) * x[y]`` plus ``eps`` times the mean of the logits, subtracted from lse).
- ``weight``: mlx has no class weights, only ``weights`` "for each target" (the loss's
  shape), which multiply each position's loss. A class weight of class-index targets
  is spelled ``weights=weight[target]`` (``mx.take``); probability targets have no such
  spelling, so those calls raise ``Unsupported``.
- ``ignore_index``: mlx has none (declared unsupported; a call with an ignore_index other
  than PyTorch's default -100, or a target equal to it, raises ``Unsupported``).

mlx checks the shapes, the reduction name and that ``0 <= label_smoothing < 1`` itself;
it does not check that class indices lie in [0, C).

Dtypes: float64 (mlx runs it on the CPU only, which is the device used here), float32,
float16 and bfloat16 go in as themselves (bfloat16 from float32 carriers holding exact
bfloat16 values, ``astype(mx.bfloat16)``) and are computed in that dtype, as a user
calls it. Results come back through ``astype(mx.float32)`` for bfloat16 (exact).

mlx is imported inside ``load``/``run`` only, so ``--list`` never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.adapters import Adapter, CallInputs, Output, Unsupported

#: PyTorch's default ignore_index: a call with another one cannot be expressed in mlx
IGNORE_INDEX = -100


def mlx_dtype(dtype: str) -> Any:
    """The mlx dtype for a lossconf dtype name."""
    import mlx.core as mx

    return {
        "float64": mx.float64,
        "float32": mx.float32,
        "float16": mx.float16,
        "bfloat16": mx.bfloat16,
    }[dtype]


def to_mlx(a: np.ndarray, dtype: str) -> Any:
    """A carrier array as an mlx array of ``dtype`` (exact: the carrier holds ``dtype`` values)."""
    import mlx.core as mx

    return mx.array(np.array(a, order="C")).astype(mlx_dtype(dtype))


def to_numpy(a: Any, dtype: str) -> np.ndarray:
    """An mlx result as a NumPy array in the carrier of ``dtype`` (bfloat16 -> exact float32)."""
    import mlx.core as mx

    if dtype == "bfloat16":
        a = a.astype(mx.float32)  # exact: every bfloat16 is a float32
    return np.array(a)


class MlxAdapter(Adapter):
    """``mlx.nn.losses.cross_entropy`` on the CPU, gradient by ``mx.vjp``."""

    name = "mlx"
    description = "mlx.nn.losses.cross_entropy (CPU), gradient by mlx.core.vjp"
    requires = ("mlx",)
    unsupported = frozenset({"ignore_index"})
    unsupported_source = (
        "declared by adapters/mlx_ce.py: mlx.nn.losses.cross_entropy has no ignore_index"
    )

    def load(self) -> None:
        import mlx.core as mx
        import mlx.nn  # noqa: F401

        mx.set_default_device(mx.cpu)

    def version(self) -> str:
        import mlx.core as mx

        return f"mlx {mx.__version__}"

    def device(self) -> str:
        return "cpu"

    def run(self, inputs: CallInputs) -> Output:
        ignores = not inputs.probability_target and np.any(inputs.target == inputs.ignore_index)
        if inputs.ignore_index != IGNORE_INDEX or ignores:
            # the runner already skips the cases declared to need it; this also covers an
            # invalid call (ignore_index >= 0 with probability targets), which mlx cannot express
            raise Unsupported(f"ignore_index={inputs.ignore_index}: mlx has no ignore_index")
        if inputs.weight is not None and inputs.probability_target:
            raise Unsupported(
                "mlx's weights are per position: a class weight of probability targets has no "
                "mlx spelling"
            )
        import mlx.core as mx
        import mlx.nn as nn

        dtype = inputs.dtype
        x = to_mlx(inputs.logits, dtype)
        axis = 0 if x.ndim == 1 else 1
        if inputs.probability_target:
            targets = to_mlx(inputs.target, dtype)
        else:
            targets = mx.array(np.array(inputs.target, order="C"))
        weights = None
        if inputs.weight is not None:
            weights = mx.take(to_mlx(inputs.weight, dtype), targets)

        def loss_of(logits: Any) -> Any:
            return nn.losses.cross_entropy(
                logits,
                targets,
                weights=weights,
                axis=axis,
                label_smoothing=inputs.label_smoothing,
                reduction=inputs.reduction,
            )

        if not inputs.want_grad:
            loss = loss_of(x)
            mx.eval(loss)
            return Output(loss=to_numpy(loss, dtype))
        if inputs.reduction == "none" and inputs.grad_output is not None:
            cotangent = to_mlx(inputs.grad_output, dtype)
        elif inputs.reduction == "none":  # the gradient of the sum: ones of the loss's shape
            cotangent = mx.ones(x.shape[:axis] + x.shape[axis + 1 :], dtype=x.dtype)
        else:
            cotangent = mx.array(1.0, dtype=x.dtype)
        (loss,), (grad,) = mx.vjp(lambda logits: [loss_of(logits)], [x], [cotangent])
        mx.eval(loss, grad)
        return Output(loss=to_numpy(loss, dtype), grad=to_numpy(grad, dtype))
