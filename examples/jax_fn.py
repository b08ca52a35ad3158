"""A cross-entropy written in JAX, made an adapter with the ``@from_jax`` decorator.

Index targets with class weights, ignore_index, label smoothing and the three
reductions, in PyTorch's semantics (docs/semantics.md); log-softmax by
``jax.nn.log_softmax`` (max-shifted, so huge logits do not overflow). float16 and
bfloat16 are computed in float32 and rounded back, as a careful kernel does
(sums of many half-precision terms lose the small ones, or overflow). A 'mean'
divides the NLL and smoothing sums by the sum of the kept targets' weights
separately, as PyTorch does, so IEEE's 0/0 = nan and x/0 = inf give its results
when that sum is 0. No Python ``if`` looks at ``label_smoothing`` or
``ignore_index``, so lossconf passes them as traced values and one compiled program
serves every value. lossconf takes the gradient with ``jax.vjp`` and jits the
function. ``cross_entropy`` stays callable as a function.

What it leaves out, declared so the report says ``unsupported`` instead of ``fail``:
probability targets (it raises ``NotImplementedError``), and invalid input (the
checks need concrete values, which a jitted function does not have).

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
    half = input.dtype in (jnp.float16, jnp.bfloat16)
    x = input.astype(jnp.float32) if half else input
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    rows = jnp.moveaxis(x if x.ndim > 1 else x[None], 1, -1).reshape(-1, c)
    labels = target.reshape(-1)
    lp = jax.nn.log_softmax(rows, axis=-1)
    w = jnp.ones(c, rows.dtype) if weight is None else weight.astype(rows.dtype)
    keep = labels != ignore_index
    safe = jnp.where(keep, labels, 0)
    wy = jnp.where(keep, w[safe], 0)
    nll = jnp.where(keep, -wy * jnp.take_along_axis(lp, safe[:, None], axis=1)[:, 0], 0)
    # -sum_c w[c] lp[c] is inf for a -inf logit: selected away without smoothing, never * 0
    smoothing = label_smoothing > 0
    eps = jnp.where(smoothing, label_smoothing, 0.0)
    smooth = jnp.where(keep & smoothing, -(w * lp).sum(axis=1), 0)
    if reduction == "none":
        out = ((1 - eps) * nll + eps / c * smooth).reshape(target.shape)
    elif reduction == "sum":
        out = (1 - eps) * nll.sum() + eps / c * smooth.sum()
    else:
        den = wy.sum()
        smooth_den = jnp.where(smoothing, den, 1)  # no 0/0 on the unused branch's gradient
        out = (1 - eps) * (nll.sum() / den) + jnp.where(
            smoothing, eps / c * (smooth.sum() / smooth_den), 0
        )
    return out.astype(input.dtype)
