"""``optax``: the raw optax losses, with only what they do natively.

``optax.softmax_cross_entropy_with_integer_labels`` (class-index targets) and
``optax.softmax_cross_entropy`` (probability targets) return one loss per
position: reduction 'none' with ``axis=1`` for (N, C, d1, ..., dK) input
(optax >= 0.2.4) and the last axis for unbatched (C,) input. They have no
reduction, no class weights, no ignore_index, no label smoothing, and they do
not raise for out-of-range labels (they return NaN), so those features are
declared ``unsupported``: this adapter shows what "unsupported" looks like in a
report. The gradient is JAX autodiff (see ``harness.adapters.jax_ce.run_with_vjp``);
half precision is computed as given, in the input dtype, as a user would call it.
"""

from __future__ import annotations

import inspect
from typing import Any

from harness.adapters import Adapter, CallInputs, Output
from harness.adapters.jax_ce import jax_version, keep_compiled_programs, run_with_vjp


def per_position(x: Any, target: Any, weight: Any) -> Any:
    """optax's per-position loss for logits (C,) or (N, C, ...); ``weight`` is always None here."""
    import jax.numpy as jnp
    import optax

    axis = 0 if x.ndim == 1 else 1
    if jnp.issubdtype(target.dtype, jnp.floating):
        return optax.softmax_cross_entropy(x, target, axis=axis)
    return optax.softmax_cross_entropy_with_integer_labels(x, target, axis=axis)


class OptaxAdapter(Adapter):
    """Raw optax softmax cross-entropy: per-position losses only."""

    name = "optax"
    description = "raw optax softmax_cross_entropy[_with_integer_labels], native features only"
    requires = ("jax", "optax")
    unsupported = frozenset(
        {
            "weight",
            "ignore_index",
            "label_smoothing",
            "reduction_mean",
            "reduction_sum",
            "invalid_input",
        }
    )
    unsupported_source = "declared by adapters/optax_raw.py: optax has no such option"

    def load(self) -> None:
        import optax

        keep_compiled_programs()

        if "axis" not in inspect.signature(optax.softmax_cross_entropy).parameters:
            # optax < 0.2.4: no axis argument, so no K-dimensional or unbatched input
            self.unsupported = self.unsupported | {"kdim", "unbatched"}

    def version(self) -> str:
        import optax

        return f"optax {optax.__version__} ({jax_version()})"

    def device(self) -> str:
        import jax

        return str(jax.devices()[0].platform)

    def run(self, inputs: CallInputs) -> Output:
        return run_with_vjp(per_position, inputs, {}, upcast=False)
