"""``jax``: PyTorch's cross-entropy semantics written on jax.numpy and optax.

The per-position terms: -l[n, y_n] picked from ``jax.nn.log_softmax`` (optax's
``softmax_cross_entropy_with_integer_labels`` computes lse(x) - x[y], which
cancels catastrophically for huge logits), and ``optax.softmax_cross_entropy``
for -sum_c a[c] l[n, c] (stable: it uses log_softmax); class
weights, ignore_index, label smoothing and the reductions are composed on top
exactly as docs/semantics.md states them. Shapes: logits (C,), (N, C) or
(N, C, d1, ..., dK) are moved class-last and flattened to (P, C) rows.

The gradient comes from JAX's autodiff: ``jax.vjp`` with a cotangent of 1 for
the sum or mean (``jax.grad``) or ``grad_output`` for ``reduction='none'``.

Few compiles: XLA compiles a jitted program per input shape (about 0.7 s each
here), and a corpus has hundreds of shapes. The adapter flattens on the host to
(P, C) rows and pads P and C up to a few bucket sizes (``bucket``: every case
with at most 64 positions and 8 classes shares one shape); masks of the real
rows and classes travel as arguments and keep padding out of every value (see
``rows_loss``). ignore_index, label smoothing, C and the reduction are run-time
arguments too, so one program serves each padded shape, compute dtype and
target kind (indices or probabilities): 13 programs for the 3034 results of the
built-in suite, against 670 (one per shape, dtype and option set) before.
Float16, bfloat16 and float32 share the float32 programs.

Dtypes: float64 cases run inside ``jax.enable_x64(True)`` (a context manager, so
the setting does not leak to other adapters or later calls); other dtypes run
in JAX's default 32-bit mode. float16 and bfloat16 inputs are computed in
float32 and the results rounded back on the host (round to nearest even;
``jnp.bfloat16`` is ml_dtypes' NumPy type), as a careful implementation does
(PyTorch on CPU accumulates half sums in half). bfloat16 arrives as float32
carrying exact bfloat16 values and returns the same way.

Argument checks (the errors PyTorch raises) are shared with the NumPy adapter
(``harness.adapters.numpy_ref.validate``): they run on concrete NumPy inputs, which a
traced JAX function could not do.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.adapters import Adapter, CallInputs, Output
from harness.adapters.numpy_ref import validate
from harness.cache_folder import cache_dir

HALF = ("float16", "bfloat16")


def keep_compiled_programs() -> None:
    """Keep XLA's compiled programs between runs, in the ``jax/`` folder of lossconf's cache
    (JAX's persistent compilation cache), unless one is configured already.

    Compiling is most of a JAX adapter's first run (one program per shape class, dtype and
    option the function sees); a later run reads the programs back. JAX keys an entry by
    the program, the compile options, the jax and jaxlib versions and the device, so what
    is read is the executable XLA would build again: it changes no value. Left as it is
    when ``JAX_COMPILATION_CACHE_DIR`` (or jax's option) names a folder, and off with
    ``LOSSCONF_CACHE_DIR=off``. Called by the JAX adapters' ``load``, before they compile.
    """
    import jax

    folder = cache_dir()
    if folder is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    if getattr(jax.config, "jax_compilation_cache_dir", None):  # set in Python by the user
        return
    jax.config.update("jax_compilation_cache_dir", str(folder / "jax"))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        # JAX keeps only programs that took a second to compile; a case's take a fraction
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@contextlib.contextmanager
def x64_scope(enabled: bool) -> Iterator[None]:
    """Enable JAX's 64-bit mode inside the block only (restored on exit)."""
    if not enabled:
        yield
        return
    import jax

    scope = getattr(jax, "enable_x64", None)
    if scope is None:  # jax < 0.6
        # absent from the jax that mypy checks against (>= 0.6): unused-ignore where present
        from jax.experimental import enable_x64 as scope_factory  # type: ignore[attr-defined,unused-ignore]

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


#: How many times each mode's program was traced (= compiled): tests check reuse.
TRACES: collections.Counter = collections.Counter()

#: Padded sizes: at least these, then powers of two up to ``COARSE``, then multiples of it.
MIN_ROWS, MIN_CLASSES, COARSE = 64, 8, 1024


def bucket(n: int, minimum: int) -> int:
    """The padded size for ``n``: ``minimum``, a power of two up to ``COARSE``, else a multiple of it.

    Few sizes means few XLA programs: every case with at most 64 positions and 8
    classes shares one shape; a huge vocabulary wastes under ``COARSE`` columns.
    """
    if n <= minimum:
        return minimum
    if n <= COARSE:
        return 1 << (n - 1).bit_length()
    return -(-n // COARSE) * COARSE


def rows_loss(
    rows: Any,
    labels: Any,
    probs: Any,
    weight: Any,
    row_mask: Any,
    class_mask: Any,
    ignore_index: Any,
    eps: Any,
    n_classes: Any,
    is_mean: Any,
) -> tuple[Any, Any]:
    """PyTorch's cross-entropy of padded rows, differentiable w.r.t. ``rows``.

    Args:
        rows: (P, C) logits, class axis last; padding may hold anything finite.
        labels: (P,) int class indices, or None for probability targets ``probs`` (P, C).
        weight: (C,) class weights (ones when the call has none); padding may hold anything.
        row_mask: (P,) bool, the real positions; class_mask: (C,) bool, the real classes.
        ignore_index, eps (label smoothing, >= 0), n_classes (the real class count
        C, as a float: smoothing's eps / C) and is_mean (bool: divide the scalar
        by the mean's denominator) are 0-d arrays, so one program serves them all.
    Returns:
        (per-position losses (P,), 0 at padded rows; the sum or mean, a scalar).

    Padding never changes a value: padded classes are left out of the
    log-softmax and every class sum (``where=``), padded rows are masked like
    ignored ones, so they add 0 to the loss, the mean's denominator and the
    gradient (``jnp.where`` gives its unselected branch a zero cotangent, and an
    unused denominator is 1, so no 0/0 or 0 * inf reaches a used gradient).
    """
    import jax
    import jax.numpy as jnp
    import optax

    prob = probs is not None
    TRACES["probability" if prob else "index"] += 1  # runs only while tracing
    w = weight  # padded classes are left out below (where=classes; labels are real)
    classes = class_mask[None, :]
    if prob:
        y = (1 - eps) * probs + eps / n_classes
        per_pos = jnp.where(row_mask, optax.softmax_cross_entropy(rows, w * y, where=classes), 0)
        denominator = jnp.where(is_mean, row_mask.sum().astype(rows.dtype), 1)
        return per_pos, per_pos.sum() / denominator

    keep = row_mask & (labels != ignore_index)
    safe = jnp.where(keep, labels, 0)
    wy = jnp.where(keep, w[safe], 0)
    # -l[y] from log_softmax, not optax.softmax_cross_entropy_with_integer_labels:
    # its lse(x) - x[y] cancels catastrophically for huge logits
    # (numerics/huge_1e8_float32: 8.0 for 8.000336)
    lp = jax.nn.log_softmax(rows, axis=-1, where=classes)
    nll = jnp.where(keep, wy * -jnp.take_along_axis(lp, safe[:, None], axis=-1)[:, 0], 0)
    # s_n = -sum_c w[c] l[n, c]; it is inf for any -inf logit, so without smoothing
    # it is selected away (where), never multiplied by eps = 0
    smooth = optax.softmax_cross_entropy(rows, jnp.broadcast_to(w, rows.shape), where=classes)
    smooth = jnp.where(keep, smooth, 0)
    smoothing = eps > 0
    per_pos = (1 - eps) * nll + jnp.where(smoothing, eps / n_classes * smooth, 0)
    # PyTorch reduces the NLL and smoothing sums separately, then mixes them; a
    # plain division keeps IEEE's 0/0 = nan (all ignored, empty) and x/0 = inf,
    # and gives PyTorch's gradient: 0 at ignored rows, nan at kept rows of weight 0
    denominator = jnp.where(is_mean, wy.sum(), 1)
    smooth_den = jnp.where(smoothing, denominator, 1)
    total = (1 - eps) * (nll.sum() / denominator) + jnp.where(
        smoothing, eps / n_classes * (smooth.sum() / smooth_den), 0
    )
    return per_pos, total


@functools.lru_cache(maxsize=1)
def _rows_loss_and_grad() -> Callable[..., Any]:
    """The jitted ``(rows, ..., is_mean, upstream, scalar_upstream) -> (per_pos, total, grad)``.

    Built once: jit caches one program per padded shape, dtype, x64 setting and
    target kind (indices or probabilities). The gradient is the vjp with
    cotangents ``upstream`` (P,) for the per-position losses (grad_output or
    ones for 'none', zeros otherwise) and ``scalar_upstream`` for the sum or
    mean (1, or 0 for 'none').
    """
    import jax

    def loss_and_grad(rows: Any, *args: Any) -> tuple[Any, Any, Any]:
        *loss_args, upstream, scalar_upstream = args
        (per_pos, total), pullback = jax.vjp(lambda r: rows_loss(r, *loss_args), rows)
        (grad,) = pullback((upstream, scalar_upstream))
        return per_pos, total, grad

    return jax.jit(loss_and_grad)


def cross_entropy(
    x: Any,
    target: Any,
    weight: Any = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Any:
    """``torch.nn.functional.cross_entropy`` in JAX, unpadded; differentiable w.r.t. ``x``.

    Args:
        x: logits (C,), (N, C) or (N, C, d1, ..., dK), floating.
        target: class indices of shape x.shape without the class axis (int), or
            probabilities of x's shape (floating).
        weight: (C,) class weights or None.
    Returns:
        a scalar for 'mean'/'sum'; the per-position losses (N, d1, ..., dK) (or ()
        for unbatched input) for 'none'.
    """
    import jax.numpy as jnp

    x, target = jnp.asarray(x), jnp.asarray(target)
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    rows = jnp.moveaxis(x.reshape(1, c) if x.ndim == 1 else x, 1, -1).reshape(-1, c)
    probs = labels = None
    if jnp.issubdtype(target.dtype, jnp.floating):
        t = target.reshape(1, c) if target.ndim == 1 else target
        probs = jnp.moveaxis(t, 1, -1).reshape(-1, c).astype(x.dtype)
    else:
        labels = target.reshape(-1)
    per_pos, total = rows_loss(
        rows,
        labels,
        probs,
        jnp.ones(c, x.dtype) if weight is None else jnp.asarray(weight, x.dtype),
        jnp.ones(rows.shape[0], bool),
        jnp.ones(c, bool),
        jnp.asarray(ignore_index),
        jnp.asarray(max(0.0, float(label_smoothing)), x.dtype),  # PyTorch: eps < 0 is 0
        jnp.asarray(c, x.dtype),
        jnp.asarray(reduction == "mean"),
    )
    if reduction == "none":
        return per_pos.reshape(() if x.ndim == 1 else x.shape[:1] + x.shape[2:])
    return total


@dataclass(frozen=True)
class PaddedCall:
    """One call's arguments for ``_rows_loss_and_grad``, padded to bucket sizes.

    ``args``: rows (P', C') and the rest in ``rows_loss``'s order, then the
    cotangents; ``n_rows`` P and ``n_classes`` C are the real sizes.
    """

    args: tuple
    n_rows: int
    n_classes: int


def pad_call(inputs: CallInputs, compute: np.dtype) -> PaddedCall:
    """Flatten valid ``inputs`` to class-last rows, padded to bucket sizes, in NumPy.

    Valid (``validate``) class indices lie in [0, C) or equal ignore_index, so an
    ignore_index beyond int32 can become -1.
    """
    x = np.asarray(inputs.logits)
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    rows = np.moveaxis(x.reshape(1, c) if x.ndim == 1 else x, 1, -1).reshape(-1, c)
    p = rows.shape[0]
    pp, cc = bucket(p, MIN_ROWS), bucket(c, MIN_CLASSES)

    def padded(a: np.ndarray, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        out = np.zeros(shape, dtype)
        out[tuple(slice(0, n) for n in a.shape)] = a
        return out

    labels = probs = None
    ignore_index = int(inputs.ignore_index)
    t = np.asarray(inputs.target)
    if inputs.probability_target:
        t = np.moveaxis(t.reshape(1, c) if t.ndim == 1 else t, 1, -1).reshape(-1, c)
        probs = padded(t, (pp, cc), compute)
    else:
        t = t.reshape(-1)
        if not np.iinfo(np.int32).min <= ignore_index <= np.iinfo(np.int32).max:
            t, ignore_index = np.where(t == ignore_index, -1, t), -1
        labels = padded(t, (pp,), np.int32)
    none = inputs.reduction == "none"
    weight = np.ones(c) if inputs.weight is None else np.asarray(inputs.weight)
    upstream = np.zeros(p)  # the per-position losses are only read for 'none'
    if none:
        upstream = np.ones(p) if inputs.grad_output is None else np.asarray(inputs.grad_output)
    args = (
        padded(rows, (pp, cc), compute),
        labels,
        probs,
        padded(weight, (cc,), compute),
        padded(np.ones(p, bool), (pp,), bool),
        padded(np.ones(c, bool), (cc,), bool),
        np.int32(ignore_index),
        compute.type(max(0.0, float(inputs.label_smoothing))),  # PyTorch: eps < 0 is 0
        compute.type(c),
        np.bool_(inputs.reduction == "mean"),
        padded(upstream.reshape(-1), (pp,), compute),
        compute.type(not none),
    )
    return PaddedCall(args, p, c)


def unpad_grad(grad: np.ndarray, call: PaddedCall, shape: tuple[int, ...]) -> np.ndarray:
    """The (P', C') padded gradient of ``call`` back in the logits' ``shape``."""
    g = grad[: call.n_rows, : call.n_classes]
    if len(shape) == 1:
        return g.reshape(shape)
    moved = (shape[0], *shape[2:], shape[1])
    return np.moveaxis(g.reshape(moved), -1, 1)


def round_to(a: Any, dtype: str) -> np.ndarray:
    """A computed array rounded to ``dtype``, in its carrier (bfloat16 as exact float32)."""
    import jax.numpy as jnp

    a = np.asarray(a)
    if dtype == "bfloat16":  # jnp.bfloat16 is ml_dtypes' NumPy type: round to nearest even
        return a.astype(jnp.bfloat16).astype(np.float32)
    return a.astype(np.dtype(dtype))


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
        import optax  # noqa: F401

        keep_compiled_programs()

    def version(self) -> str:
        import optax

        return f"{jax_version()}, optax {optax.__version__}"

    def device(self) -> str:
        import jax

        return str(jax.devices()[0].platform)

    def run(self, inputs: CallInputs) -> Output:
        x = np.asarray(inputs.logits)
        validate(x, np.asarray(inputs.target), inputs)
        dtype = inputs.dtype
        compute = np.dtype("float32" if dtype in HALF else dtype)
        with x64_scope(dtype == "float64"):
            call = pad_call(inputs, compute)
            per_pos, total, grad = _rows_loss_and_grad()(*call.args)
            per_pos, total, grad = np.asarray(per_pos), np.asarray(total), np.asarray(grad)
        loss = total
        if inputs.reduction == "none":
            loss = per_pos[: call.n_rows].reshape(() if x.ndim == 1 else x.shape[:1] + x.shape[2:])
        out_grad = round_to(unpad_grad(grad, call, x.shape), dtype) if inputs.want_grad else None
        return Output(loss=round_to(loss, dtype), grad=out_grad)
