"""``keras``: Keras 3's cross-entropy losses on a chosen backend, under Keras's own semantics.

``keras@backend=jax`` (the default), ``keras@backend=torch`` or ``keras@backend=tensorflow``:
Keras reads its backend once, when first imported (``KERAS_BACKEND``), so one process runs one
backend; ``load`` refuses another. The call is mapped as a Keras user writes it:

- class-index targets: ``keras.losses.SparseCategoricalCrossentropy(from_logits=True,
  ignore_class=ignore_index)``; with label smoothing (which that loss lacks), the targets
  one-hot encoded by ``keras.ops.one_hot`` into ``CategoricalCrossentropy(from_logits=True,
  label_smoothing=eps)``;
- probability targets: ``CategoricalCrossentropy(from_logits=True, label_smoothing=eps)``;
- ``reduction``: 'mean' is Keras's ``"sum_over_batch_size"``, 'sum' and 'none' the same names
  (anything else is passed on, and Keras raises);
- class weights: Keras losses take none, only a ``sample_weight`` per position, so the
  weights go in as ``sample_weight = weight[target]`` (``keras.ops.take``), Keras's own recipe;
- the class axis is moved last (``axis=-1``, Keras's layout) and unbatched (C,) input is
  given as one row, (1, C): layout only, the values are Keras's;
- the loss is computed in the case's dtype (the loss's ``dtype=``), float64 with JAX's 64-bit
  mode on for the call;
- the gradient is the backend's autodiff (``jax.vjp``, torch autograd, TensorFlow's
  GradientTape) with a cotangent of 1, or ``grad_output`` for reduction 'none'.

Keras's semantics differ from PyTorch's by design (sample weights ``w[y]``, a mean over the
kept positions, ``divide_no_nan``): the adapter declares ``semantics = "keras"``
(``harness.oracle.dialect.KERAS``), so each result is judged under Keras's rules and, beside
that, under PyTorch's. What it cannot express raises ``Unsupported``: class weights with
probability targets (there is no target class to weight), and label smoothing with an ignored
target (``CategoricalCrossentropy`` has no ``ignore_class``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from harness.adapters import Adapter, CallInputs, Output, Unsupported
from harness.adapters.jax_ce import jax_dtype, x64_scope
from harness.adapters.torch_ce import torch_dtype

BACKENDS = ("jax", "torch", "tensorflow")
REDUCTIONS = {"mean": "sum_over_batch_size", "sum": "sum", "none": "none"}


class KerasAdapter(Adapter):
    """Keras 3 (Sparse)CategoricalCrossentropy with from_logits=True, on ``backend``."""

    name = "keras"
    description = "Keras 3 losses (SparseCategoricalCrossentropy, CategoricalCrossentropy)"
    semantics = "keras"
    #: what ``--list`` checks: keras and its default backend
    requires: tuple[str, ...] = ("keras", "jax")
    unsupported_source = "declared by adapters/keras_loss.py"

    def __init__(self, backend: str = "jax") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.requires = ("keras", "tensorflow" if backend == "tensorflow" else backend)

    def load(self) -> None:
        if "keras" not in sys.modules:
            os.environ["KERAS_BACKEND"] = self.backend  # read once, when keras is imported
        import keras

        running = keras.backend.backend()
        if running != self.backend:
            raise RuntimeError(
                f"keras is already imported with the {running} backend in this process; "
                f"run keras@backend={self.backend} in a process of its own (--isolate)"
            )

    def version(self) -> str:
        import keras

        framework = "tensorflow" if self.backend == "tensorflow" else self.backend
        module = __import__(framework)
        return f"keras {keras.__version__} ({framework} {module.__version__})"

    def run(self, inputs: CallInputs) -> Output:
        x, target, unbatched = _class_last(inputs)
        loss_fn, weight_index = self._loss(inputs)
        upstream = None
        if inputs.reduction == "none" and inputs.grad_output is not None:
            upstream = np.asarray(inputs.grad_output).reshape(target.shape[: x.ndim - 1])

        def loss_of(logits: Any) -> Any:
            import keras

            y_true: Any = target
            if not inputs.probability_target and inputs.label_smoothing != 0:
                y_true = keras.ops.one_hot(target, x.shape[-1], dtype=inputs.dtype)
            sample_weight = None
            if inputs.weight is not None:
                # Keras's recipe for class weights: a per-position sample weight w[y]
                weight = keras.ops.convert_to_tensor(inputs.weight, dtype=inputs.dtype)
                sample_weight = keras.ops.take(weight, weight_index)
            return loss_fn(y_true, logits, sample_weight=sample_weight)

        loss, grad = _value_and_grad(self.backend, loss_of, x, upstream, inputs)
        loss = np.asarray(loss)
        if unbatched and inputs.reduction == "none":
            loss = loss.reshape(())
        if grad is not None:
            grad = _class_axis_back(np.asarray(grad), inputs.logits.shape)
        return Output(_carrier(loss, inputs.dtype), _carrier(grad, inputs.dtype))

    def _loss(self, inputs: CallInputs) -> tuple[Any, np.ndarray | None]:
        """The Keras loss object, and the class index of each position's weight."""
        import keras

        reduction = REDUCTIONS.get(inputs.reduction, inputs.reduction)
        eps = float(inputs.label_smoothing)
        if inputs.probability_target:
            if inputs.weight is not None:
                raise Unsupported("keras losses have no class weights for probability targets")
            loss = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=eps, reduction=reduction, dtype=inputs.dtype
            )
            return loss, None
        target = np.asarray(inputs.target)
        kept = target != inputs.ignore_index
        # an ignored position's weight is masked out; unbatched input is one row
        weight_index = np.atleast_1d(np.where(kept, target, 0))
        if eps == 0:
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True,
                ignore_class=int(inputs.ignore_index),
                reduction=reduction,
                dtype=inputs.dtype,
            )
            return loss, weight_index
        if not np.all(kept):
            raise Unsupported(
                "label smoothing with an ignored target: keras's CategoricalCrossentropy "
                "(the loss that smooths) has no ignore_class"
            )
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=eps, reduction=reduction, dtype=inputs.dtype
        )
        return loss, weight_index


def _class_last(inputs: CallInputs) -> tuple[np.ndarray, np.ndarray, bool]:
    """Logits with the class axis last ((1, C) for unbatched input), the target to match
    (probabilities moved the same way), and whether the input was unbatched."""
    x, t = np.asarray(inputs.logits), np.asarray(inputs.target)
    if x.ndim == 1:
        return x[None, :], t[None, ...], True
    x = np.moveaxis(x, 1, -1)
    if inputs.probability_target and t.ndim == x.ndim:
        t = np.moveaxis(t, 1, -1)
    return np.ascontiguousarray(x), np.ascontiguousarray(t), False


def _class_axis_back(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 1:
        return grad.reshape(shape)
    return np.moveaxis(grad, -1, 1)


def _carrier(value: Any, dtype: str) -> Any:
    """A backend's array as the case dtype's NumPy carrier (bfloat16 as float32)."""
    if value is None:
        return None
    a = np.asarray(value)
    return a.astype(np.float32) if dtype == "bfloat16" else a


def _value_and_grad(
    backend: str, loss_of: Any, x: np.ndarray, upstream: np.ndarray | None, inputs: CallInputs
) -> tuple[Any, Any]:
    """The loss and, when wanted, its vector-Jacobian product w.r.t. the logits ``x`` (the
    cotangent: 1, or ``upstream`` for reduction 'none'), by the backend's autodiff."""
    how = {"jax": _jax_vjp, "torch": _torch_vjp, "tensorflow": _tensorflow_vjp}[backend]
    return how(loss_of, x, upstream, inputs)


def _jax_vjp(loss_of: Any, x: np.ndarray, upstream: Any, inputs: CallInputs) -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp

    with x64_scope(inputs.dtype == "float64"):
        xs = jnp.asarray(x, dtype=jax_dtype(inputs.dtype))
        if not inputs.want_grad:
            return np.asarray(loss_of(xs)), None
        loss, vjp = jax.vjp(loss_of, xs)
        cot = jnp.ones_like(loss) if upstream is None else jnp.asarray(upstream, loss.dtype)
        (grad,) = vjp(cot)
        return np.asarray(loss), np.asarray(grad)


def _torch_vjp(loss_of: Any, x: np.ndarray, upstream: Any, inputs: CallInputs) -> tuple[Any, Any]:
    import torch

    def tensor(a: np.ndarray) -> Any:
        return torch.from_numpy(np.array(a, order="C")).to(torch_dtype(inputs.dtype))

    def to_numpy(t: Any) -> np.ndarray:
        t = t.detach()
        return (t.float() if inputs.dtype == "bfloat16" else t).numpy()

    xs = tensor(x).requires_grad_(inputs.want_grad)
    loss = loss_of(xs)
    if not inputs.want_grad:
        return to_numpy(loss), None
    cot = torch.ones_like(loss) if upstream is None else tensor(upstream)
    (grad,) = torch.autograd.grad(loss, xs, cot)
    return to_numpy(loss), to_numpy(grad)


def _tensorflow_vjp(
    loss_of: Any, x: np.ndarray, upstream: Any, inputs: CallInputs
) -> tuple[Any, Any]:
    import tensorflow as tf

    def to_numpy(t: Any) -> np.ndarray:
        return (tf.cast(t, tf.float32) if inputs.dtype == "bfloat16" else t).numpy()

    xs = tf.Variable(tf.cast(tf.constant(x), inputs.dtype))
    with tf.GradientTape() as tape:
        loss = loss_of(xs)
    if not inputs.want_grad:
        return to_numpy(loss), None
    cot = tf.ones_like(loss) if upstream is None else tf.cast(upstream, loss.dtype)
    return to_numpy(loss), to_numpy(tape.gradient(loss, xs, output_gradients=cot))
