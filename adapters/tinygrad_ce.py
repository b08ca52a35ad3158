"""``tinygrad``: tinygrad's cross-entropy functions on its CPU device, gradient by
``Tensor.gradient``.

tinygrad has three functions where PyTorch has one; the call's own arguments pick
the one that takes them, as a user porting ``F.cross_entropy`` would:

- probability targets: ``Tensor.cross_entropy(Y, reduction, label_smoothing)``, class
  axis 1 (0 for unbatched input), like PyTorch's. It has no class weights.
- class-index targets without ``weight``: ``Tensor.sparse_categorical_crossentropy(Y,
  ignore_index, label_smoothing, reduction)``, the one that takes ``ignore_index``
  (always passed: PyTorch's default is -100, tinygrad's -1). Its class axis is the last,
  so (N, C, d1, ..., dK) logits are permuted class-last first (``Tensor.permute``).
- class-index targets with ``weight``: ``x.log_softmax(1).nll_loss(Y, weight,
  ignore_index, reduction)``, PyTorch's own definition of cross-entropy, the only tinygrad
  path with class weights; it has no label smoothing (a weighted call with
  ``label_smoothing > 0`` raises ``Unsupported``), and gathers along axis 1, so unbatched
  (C,) input goes in as (1, C) and its loss comes back as a scalar.

tinygrad checks neither class indices (one-hot comparisons give 0 for an index outside
[0, C)) nor probability targets against ``ignore_index``; it asserts
``0 <= label_smoothing <= 1`` and raises ValueError for an unknown reduction.

Dtypes: float64, float32, float16 and bfloat16 tensors are made from the NumPy carriers
(bfloat16 by ``cast`` from float32 carriers holding exact bfloat16 values) and computed in
that dtype, as a user calls it; bfloat16 results come back through float32 (exact).
The CPU device compiles its kernels with clang (tinygrad caches them on disk).

tinygrad is imported inside ``load``/``run`` only, so ``--list`` never imports it.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import numpy as np

from harness.adapters import Adapter, CallInputs, Output, Unsupported


def tinygrad_dtype(dtype: str) -> Any:
    """The tinygrad dtype for a lossconf dtype name."""
    from tinygrad import dtypes

    return {
        "float64": dtypes.float64,
        "float32": dtypes.float32,
        "float16": dtypes.float16,
        "bfloat16": dtypes.bfloat16,
    }[dtype]


def to_tensor(a: np.ndarray, dtype: str | None) -> Any:
    """A NumPy array as a tinygrad Tensor on the CPU, cast to ``dtype`` (None: as it is);
    exact, since the carrier holds ``dtype`` values."""
    from tinygrad import Tensor

    t = Tensor(np.array(a, order="C"), device="CPU")
    return t if dtype is None else t.cast(tinygrad_dtype(dtype))


def to_numpy(t: Any, dtype: str) -> np.ndarray:
    """A tinygrad result as a NumPy array in the carrier of ``dtype`` (bfloat16 -> float32)."""
    from tinygrad import dtypes

    if dtype == "bfloat16":
        t = t.cast(dtypes.float32)  # exact: every bfloat16 is a float32
    return np.asarray(t.numpy())


def compiler_version() -> str:
    """The C compiler tinygrad's CPU device runs (``$CC``, else clang), as its first
    ``--version`` line says, e.g. 'Debian clang version 19.1.7 (3+b1)'."""
    command = os.environ.get("CC", "clang")
    try:
        out = subprocess.run(
            [command, "--version"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"{command}: {type(e).__name__}"
    return (out.splitlines() or [command])[0].strip()


def compiles(dtype: str) -> bool:
    """Whether tinygrad can compute in ``dtype`` here: clang before 17 has no ``__bf16`` on
    x86-64, so every bfloat16 kernel fails to compile. The compiler's complaints go to
    /dev/null instead of the terminal."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                to_numpy(to_tensor(np.ones(2, np.float32), dtype).exp().sum(), dtype)
            except Exception:
                return False
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return True


def loss_of(x: Any, y: Any, weight: Any, inputs: CallInputs) -> Any:
    """The loss of logits ``x`` (C,) or (N, C, d1, ..., dK) by the tinygrad function that
    takes the call's arguments (see the module's docstring)."""
    if inputs.probability_target:
        if weight is not None:
            raise Unsupported("tinygrad's Tensor.cross_entropy has no class weights")
        return x.cross_entropy(
            y, reduction=inputs.reduction, label_smoothing=inputs.label_smoothing
        )
    if weight is None:
        if x.ndim > 2:  # class axis last
            x = x.permute(0, *range(2, x.ndim), 1)
        return x.sparse_categorical_crossentropy(
            y,
            ignore_index=inputs.ignore_index,
            label_smoothing=inputs.label_smoothing,
            reduction=inputs.reduction,
        )
    if inputs.label_smoothing > 0:
        raise Unsupported("tinygrad's nll_loss, its only weighted loss, has no label smoothing")
    unbatched = x.ndim == 1
    if unbatched:
        x, y = x.reshape(1, -1), y.reshape(1)
    loss = x.log_softmax(1).nll_loss(
        y, weight, ignore_index=inputs.ignore_index, reduction=inputs.reduction
    )
    return loss.reshape(()) if unbatched else loss


class TinygradAdapter(Adapter):
    """tinygrad's cross-entropy functions on the CPU, gradient by ``Tensor.gradient``."""

    name = "tinygrad"
    description = (
        "tinygrad Tensor.cross_entropy / sparse_categorical_crossentropy / nll_loss (CPU), "
        "gradient by Tensor.gradient"
    )
    requires = ("tinygrad",)
    unsupported_source = "declared by adapters/tinygrad_ce.py"

    def __init__(self) -> None:
        self._compiler = "clang"

    def load(self) -> None:
        import tinygrad  # noqa: F401

        self._compiler = compiler_version()
        lacking = [d for d in ("float16", "bfloat16") if not compiles(d)]
        if lacking:
            self.unsupported = self.unsupported | frozenset(lacking)
            self.unsupported_source = (
                f"declared by adapters/tinygrad_ce.py: {self._compiler} cannot compile "
                f"tinygrad's {' and '.join(lacking)} kernels here (set CC to a newer clang)"
            )

    def version(self) -> str:
        from importlib import metadata

        return f"tinygrad {metadata.version('tinygrad')}"

    def device(self) -> str:
        return f"cpu ({self._compiler})"

    def run(self, inputs: CallInputs) -> Output:
        dtype = inputs.dtype
        x = to_tensor(inputs.logits, dtype)
        y = to_tensor(inputs.target, dtype if inputs.probability_target else None)
        weight = None if inputs.weight is None else to_tensor(inputs.weight, dtype)
        loss = loss_of(x, y, weight, inputs)
        if not inputs.want_grad:
            return Output(loss=to_numpy(loss, dtype))
        upstream = None
        if inputs.reduction == "none":
            upstream = (
                to_tensor(inputs.grad_output, dtype)
                if inputs.grad_output is not None
                else loss.ones_like()
            )
        (grad,) = loss.gradient(x, gradient=upstream)
        return Output(loss=to_numpy(loss, dtype), grad=to_numpy(grad, dtype))
