"""``tensorflow``: TensorFlow's raw softmax cross-entropy ops, with only what they do natively.

``tf.nn.sparse_softmax_cross_entropy_with_logits`` (class-index targets) and
``tf.nn.softmax_cross_entropy_with_logits`` (probability targets) return one loss per
position, with the class axis last: the adapter moves the class axis of (N, C, d1, ..., dK)
input last and gives unbatched (C,) input as one row (layout only). They have no reduction,
no class weights, no ignore_index and no label smoothing, so those features are declared
``unsupported``, as for ``optax`` (an invalid reduction name is ``unsupported`` too: there is
no argument to pass it to). Out-of-range class indices raise on the CPU (the op checks them
there), so invalid input is left to the op. The gradient is TensorFlow's autodiff
(``tf.GradientTape`` with ``output_gradients`` of 1, or ``grad_output``); every dtype is
computed as given, in the input dtype, as a user would call the op.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.adapters import Adapter, CallInputs, Output, Unsupported

TF_DTYPES = ("float64", "float32", "float16", "bfloat16")


class TensorFlowAdapter(Adapter):
    """Raw tf.nn.(sparse_)softmax_cross_entropy_with_logits: per-position losses only."""

    name = "tensorflow"
    description = "raw tf.nn.sparse_softmax_cross_entropy_with_logits, native features only"
    requires = ("tensorflow",)
    unsupported = frozenset(
        {"weight", "ignore_index", "label_smoothing", "reduction_mean", "reduction_sum"}
    )
    unsupported_source = "declared by adapters/tensorflow_raw.py: tf.nn has no such option"

    def load(self) -> None:
        import tensorflow  # noqa: F401

    def version(self) -> str:
        import tensorflow as tf

        return f"tensorflow {tf.__version__}"

    def device(self) -> str:
        return "cpu"

    def run(self, inputs: CallInputs) -> Output:
        import tensorflow as tf

        if inputs.reduction != "none":  # an invalid reduction name too: there is no argument
            raise Unsupported(f"tf.nn ops take no reduction (asked: {inputs.reduction!r})")
        x = np.asarray(inputs.logits)
        t = np.asarray(inputs.target)
        unbatched = x.ndim == 1
        if unbatched:
            x, t = x[None, :], t[None, ...]
        else:
            x = np.moveaxis(x, 1, -1)
            if inputs.probability_target and t.ndim == x.ndim:
                t = np.moveaxis(t, 1, -1)
        dtype = tf.dtypes.as_dtype(inputs.dtype)
        with tf.device("/CPU:0"):
            xs = tf.Variable(tf.cast(tf.constant(np.ascontiguousarray(x)), dtype))
            with tf.GradientTape() as tape:
                if inputs.probability_target:
                    labels = tf.cast(tf.constant(np.ascontiguousarray(t)), dtype)
                    loss = tf.nn.softmax_cross_entropy_with_logits(labels, xs, axis=-1)
                else:
                    labels = tf.constant(np.ascontiguousarray(t))
                    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, xs)
            grad = None
            if inputs.want_grad:
                if inputs.grad_output is None:
                    cot = tf.ones_like(loss)
                else:
                    cot = tf.cast(tf.reshape(tf.constant(inputs.grad_output), loss.shape), dtype)
                grad = _to_numpy(tape.gradient(loss, xs, output_gradients=cot), inputs.dtype)
                grad = grad.reshape(inputs.logits.shape) if unbatched else np.moveaxis(grad, -1, 1)
        value = _to_numpy(loss, inputs.dtype)
        return Output(value.reshape(()) if unbatched else value, grad)


def _to_numpy(tensor: Any, dtype: str) -> np.ndarray:
    """A TensorFlow tensor in the carrier of ``dtype`` (bfloat16 as exact float32)."""
    import tensorflow as tf

    if dtype == "bfloat16":
        tensor = tf.cast(tensor, tf.float32)
    return np.asarray(tensor.numpy())
