"""A cross-entropy written in JAX, made an adapter with the ``@from_jax`` decorator.

Index targets with class weights, ignore_index, label smoothing and the three
reductions, in PyTorch's semantics; log-softmax by ``jax.nn.log_softmax``
(max-shifted, so huge logits do not overflow). lossconf takes the gradient with
``jax.vjp`` and jits the function. Probability targets raise
``NotImplementedError`` (reported unsupported); invalid-input checks would need
concrete values, which a jitted function does not have, so they are declared
unsupported. ``cross_entropy`` stays callable as a function.

    python -m harness --adapter examples/jax_fn.py:cross_entropy
"""

import jax
import jax.numpy as jnp

from harness import from_jax


@from_jax(name="jax-example", unsupported={"invalid_input"})
def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):  # fmt: skip
    """Logits (C,), (N, C) or (N, C, d1..dK); int targets of the shape without the class axis."""
    if jnp.issubdtype(target.dtype, jnp.floating):
        raise NotImplementedError("probability targets")
    c = input.shape[0] if input.ndim == 1 else input.shape[1]
    rows = jnp.moveaxis(input if input.ndim > 1 else input[None], 1, -1).reshape(-1, c)
    labels = target.reshape(-1)
    lp = jax.nn.log_softmax(rows, axis=-1)
    w = jnp.ones(c, rows.dtype) if weight is None else weight
    keep = labels != ignore_index
    safe = jnp.where(keep, labels, 0)
    wy = jnp.where(keep, w[safe], 0)
    per_row = -wy * jnp.take_along_axis(lp, safe[:, None], axis=1)[:, 0]
    if label_smoothing > 0:
        smooth = jnp.where(keep, -(w * lp).sum(axis=1), 0)
        per_row = (1 - label_smoothing) * per_row + label_smoothing / c * smooth
    per_row = jnp.where(keep, per_row, 0)
    if reduction == "none":
        return per_row.reshape(target.shape)
    if reduction == "sum":
        return per_row.sum()
    den = wy.sum()
    return jnp.where(den == 0, jnp.nan, per_row.sum() / jnp.where(den == 0, 1, den))
