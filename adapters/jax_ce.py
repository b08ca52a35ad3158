"""``jax``: PyTorch's cross-entropy semantics written on jax.numpy and optax.

The per-position terms: -l[n, y_n] picked from ``jax.nn.log_softmax`` (optax's
``softmax_cross_entropy_with_integer_labels`` computes lse(x) - x[y], which
cancels catastrophically for huge logits), and ``optax.softmax_cross_entropy``
for -sum_c a[c] l[n, c] (stable: it uses log_softmax); class
weights, ignore_index, label smoothing and the reductions are composed on top
exactly as SEMANTICS.md states them. Shapes: logits (C,), (N, C) or
(N, C, d1, ..., dK) are moved class-last and flattened to (P, C) rows.

The gradient comes from JAX's autodiff: ``jax.vjp`` with a cotangent of ones
(which is ``jax.grad`` for a scalar loss) or ``grad_output`` for
``reduction='none'``. Loss and gradient are jitted together: XLA compiles once
per shape, dtype and option set, far faster than eager mode compiling each
primitive on first use (about 0.7 s against 3 to 5 s per new shape here).

Dtypes: float64 cases run inside ``jax.enable_x64(True)`` (a context manager, so
the setting does not leak to other adapters or later calls); other dtypes run
in JAX's default 32-bit mode. float16 and bfloat16 inputs are computed in
float32 and the results cast back, as a careful implementation does (PyTorch
on CPU accumulates half sums in half). bfloat16 arrives as float32 carrying
exact bfloat16 values; ``astype(jnp.bfloat16)`` converts it exactly and the
results return as float32 carrying bfloat16 values.

Argument checks (the errors PyTorch raises) are shared with the NumPy adapter
(``adapters.numpy_ref.validate``): they run on concrete NumPy inputs, which a
traced JAX function could not do.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from adapters import Adapter, CallInputs, Output

HALF = ("float16", "bfloat16")


@contextlib.contextmanager
def x64_scope(enabled: bool) -> Iterator[None]:
    """Enable JAX's 64-bit mode inside the block only (restored on exit)."""
    if not enabled:
        yield
        return
    import jax

    scope = getattr(jax, "enable_x64", None)
    if scope is None:  # jax < 0.6
        from jax.experimental import enable_x64 as scope_factory

        with scope_factory():
            yield
        return
    with scope(True):
        yield


def jax_dtype(dtype: str) -> Any:
    """The jax.numpy dtype for a lossconf dtype name."""
    import jax.numpy as jnp

    return {
        "float64": jnp.float64,
        "float32": jnp.float32,
        "float16": jnp.float16,
        "bfloat16": jnp.bfloat16,
    }[dtype]


def to_jax(a: np.ndarray | None, dtype: str) -> Any:
    """A carrier array as a JAX array of ``dtype`` (exact: the carrier holds ``dtype`` values)."""
    import jax.numpy as jnp

    if a is None:
        return None
    return jnp.asarray(a).astype(jax_dtype(dtype))


def to_numpy(a: Any, dtype: str) -> np.ndarray:
    """A JAX result as a NumPy array in the carrier of ``dtype`` (bfloat16 -> exact float32)."""
    import jax.numpy as jnp

    a = jnp.asarray(a).astype(jax_dtype(dtype))
    if dtype == "bfloat16":
        a = a.astype(jnp.float32)
    return np.asarray(a)


def cross_entropy(
    x: Any,
    target: Any,
    weight: Any = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Any:
    """``torch.nn.functional.cross_entropy`` in JAX; differentiable w.r.t. ``x``.

    Args:
        x: logits (C,), (N, C) or (N, C, d1, ..., dK), floating.
        target: class indices of shape x.shape without the class axis (int), or
            probabilities of x's shape (floating).
        weight: (C,) class weights or None.
    Returns:
        a scalar for 'mean'/'sum'; the per-position losses (N, d1, ..., dK) (or ()
        for unbatched input) for 'none'.
    """
    import jax
    import jax.numpy as jnp
    import optax

    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    rows = jnp.moveaxis(x.reshape(1, c) if x.ndim == 1 else x, 1, -1).reshape(-1, c)
    w = jnp.ones(c, x.dtype) if weight is None else weight.astype(x.dtype)
    eps = max(0.0, float(label_smoothing))  # PyTorch treats eps < 0 as 0
    prob = jnp.issubdtype(target.dtype, jnp.floating)
    if prob:
        t = target.reshape(1, c) if target.ndim == 1 else target
        y = jnp.moveaxis(t, 1, -1).reshape(-1, c).astype(x.dtype)
        y = (1 - eps) * y + eps / c
        per_pos = optax.softmax_cross_entropy(rows, w * y)
        denominator = jnp.asarray(rows.shape[0], x.dtype)
    else:
        labels = target.reshape(-1)
        keep = labels != ignore_index
        safe = jnp.where(keep, labels, 0)
        wy = jnp.where(keep, w[safe], 0)
        # not optax.softmax_cross_entropy_with_integer_labels: its lse(x) - x[y] cancels
        # catastrophically for huge logits (numerics/huge_1e8_float32: 8.0 for 8.000336)
        lp = jax.nn.log_softmax(rows, axis=-1)
        nll = -jnp.take_along_axis(lp, safe[:, None], axis=-1)[:, 0]
        per_pos = jnp.where(keep, wy * nll, 0)
        if eps:
            smooth = optax.softmax_cross_entropy(rows, jnp.broadcast_to(w, rows.shape))
            per_pos = (1 - eps) * per_pos + (eps / c) * jnp.where(keep, smooth, 0)
        denominator = wy.sum()

    if reduction == "none":
        shape = () if x.ndim == 1 else x.shape[:1] + x.shape[2:]
        return per_pos.reshape(shape)
    total = per_pos.sum()
    if reduction == "sum":
        return total
    # 0/0 (all ignored, or empty) is NaN with a zero gradient, as in PyTorch: the NaN
    # is a constant, and the division only sees a safe denominator.
    empty = denominator == 0
    safe_den = jnp.where(empty, 1, denominator)
    return jnp.where(empty, jnp.nan, total / safe_den)


def _not_traceable_errors() -> tuple[type[BaseException], ...]:
    """JAX's errors for Python control flow on traced values (the function needs eager mode)."""
    import jax

    names = (
        "ConcretizationTypeError",
        "TracerBoolConversionError",
        "TracerIntegerConversionError",
        "TracerArrayConversionError",
    )
    return tuple(getattr(jax.errors, n) for n in names if hasattr(jax.errors, n))


@functools.lru_cache(maxsize=256)
def _loss_and_grad(fn: Callable[..., Any], options: tuple, want_grad: bool, jit: bool) -> Any:
    """``(x, target, weight, grad_output) -> (loss, grad or None)`` for ``fn(x, target, weight, **options)``.

    Jitted when ``jit``: XLA compiles once per shape and dtype, about ten times
    faster than eager mode's compile of every primitive on first use.
    """
    import jax
    import jax.numpy as jnp

    kwargs = dict(options)

    def run(x: Any, target: Any, weight: Any, grad_output: Any) -> tuple[Any, Any]:
        def loss_of(logits: Any) -> Any:
            return fn(logits, target, weight, **kwargs)

        if not want_grad:
            return loss_of(x), None
        loss, pullback = jax.vjp(loss_of, x)
        cotangent = jnp.ones_like(loss) if grad_output is None else grad_output.astype(loss.dtype)
        (grad,) = pullback(cotangent)
        return loss, grad

    return jax.jit(run) if jit else run


def run_with_vjp(
    fn: Callable[..., Any],
    inputs: CallInputs,
    options: dict[str, Any],
    *,
    upcast: bool = True,
    jit: bool = True,
) -> Output:
    """Call ``fn(x, target, weight, **options)`` on JAX arrays and differentiate it w.r.t. x.

    ``options`` are passed as Python values (static under jit). Half-precision
    inputs are computed in float32 when ``upcast`` and the results cast back.
    float64 runs with x64 enabled. A function that cannot be traced (Python
    control flow on array values) is run eagerly instead of jitted.
    """
    import jax.numpy as jnp

    with x64_scope(inputs.dtype == "float64"):
        compute = jax_dtype("float32" if upcast and inputs.dtype in HALF else inputs.dtype)
        x = to_jax(inputs.logits, inputs.dtype).astype(compute)
        weight = to_jax(inputs.weight, inputs.dtype)
        weight = None if weight is None else weight.astype(compute)
        if inputs.probability_target:
            target = to_jax(inputs.target, inputs.dtype).astype(compute)
        else:
            target = jnp.asarray(inputs.target)
        grad_output = to_jax(inputs.grad_output, inputs.dtype)
        key = tuple(sorted(options.items()))
        args = (x, target, weight, grad_output)
        try:
            loss, grad = _loss_and_grad(fn, key, inputs.want_grad, jit)(*args)
        except _not_traceable_errors():
            if not jit:
                raise
            loss, grad = _loss_and_grad(fn, key, inputs.want_grad, False)(*args)
        out_grad = None if grad is None else to_numpy(grad, inputs.dtype)
        return Output(loss=to_numpy(loss, inputs.dtype), grad=out_grad)


def jax_version() -> str:
    import jax

    return f"jax {jax.__version__}"


class JaxAdapter(Adapter):
    """PyTorch semantics on jax.numpy/optax, gradient by jax.vjp."""

    name = "jax"
    description = "PyTorch semantics on jax.numpy + optax, gradient by JAX autodiff"
    requires = ("jax", "optax")

    def load(self) -> None:
        import jax  # noqa: F401
        import optax  # noqa: F401

    def version(self) -> str:
        import optax

        return f"{jax_version()}, optax {optax.__version__}"

    def device(self) -> str:
        import jax

        return str(jax.devices()[0].platform)

    def run(self, inputs: CallInputs) -> Output:
        from adapters.numpy_ref import validate

        validate(np.asarray(inputs.logits), np.asarray(inputs.target), inputs)

        options = {
            "ignore_index": int(inputs.ignore_index),
            "reduction": inputs.reduction,
            "label_smoothing": float(inputs.label_smoothing),
        }
        return run_with_vjp(cross_entropy, inputs, options)
