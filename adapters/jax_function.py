"""Calling a user's JAX cross-entropy (``from_jax``) with few XLA compiles.

XLA compiles a jitted function once per input shape, dtype and static argument.
Called as given, a function compiled a program for every distinct shape, dtype,
reduction, weight, ignore_index and label_smoothing value of the suite's calls.
What the function sees of a case stays as it is: its dtype, its reduction, whether
it gets a weight, the rank of its input. The rest is bounded:

- ``ignore_index`` and ``label_smoothing`` are passed as traced (weakly typed)
  JAX scalars, so one program serves every value. A function that branches on
  them in Python (``if label_smoothing > 0:``) fails to trace; it then gets
  that option as a Python value, and compiles once per value (the adapter
  remembers which options it needs concrete; one that cannot be traced at all
  runs eagerly on exact shapes);
- the upstream gradient is always an array (ones when a case gives none);
- positions are padded to a few bucket sizes (``jax_ce.bucket``) along the
  batch axis and every spatial axis, with copies of the last position whose
  targets are ``ignore_index``: an ignored position adds nothing to a sum, a
  mean or its denominator and gets no gradient. With ``reduction='none'`` the
  padded positions' losses are dropped and their upstream gradient is 0, so
  their targets may be anything;
- classes are padded with logits of -inf (probability 0, no gradient) and
  weight 0, when the targets are class indices and label smoothing is 0.

Where the semantics do not allow it, the call keeps its exact shape: probability
targets with 'mean' or 'sum' (a padded row counts in the mean's N, and with
smoothing adds eps/C); classes when label smoothing is on (its eps/C and class
sum see every class); positions with 'mean' or 'sum' of a function without
``ignore_index`` (or that declares it unsupported), or an ignore_index beyond
int32 outside float64; an empty batch; invalid input (the function must raise on
what the case gives). ``pad=False`` calls every case on its exact shape.

Padding relies on the function treating ignored positions and -inf logits of
non-target classes as PyTorch does; the suite checks both with cases of their
own (``ignore_index/*``, ``numerics/neg_inf_*``). A function that gets either
wrong fails those, and padded calls of other cases may fail with them:
``pad=False`` tells the two apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.adapters import CallInputs, Output
from harness.adapters.jax_ce import (
    MIN_CLASSES,
    _not_traceable_errors,
    bucket,
    jax_dtype,
    round_to,
    x64_scope,
)
from harness.adapters.numpy_ref import validate

#: Bucket minimums: the batch of a 2-D input, every other position axis.
MIN_BATCH, MIN_AXIS = 64, 4
#: The options that may travel as traced values, and the order in which they are made
#: concrete when a function fails to trace: each alone, then both.
TRACEABLE = ("ignore_index", "label_smoothing")
_CONCRETE_STEPS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"label_smoothing"}),
    frozenset({"ignore_index"}),
    frozenset(TRACEABLE),
)
_INT32 = np.iinfo(np.int32)


def _ignorable(inputs: CallInputs, ignores: bool) -> bool:
    """Whether padded positions can be ignored ones: the function takes ignore_index, and
    the value survives JAX's int32 targets (all values do under float64's x64 mode)."""
    fits = _INT32.min <= int(inputs.ignore_index) <= _INT32.max
    return ignores and (fits or inputs.dtype == "float64")


def padded_shape(inputs: CallInputs, *, ignores: bool) -> tuple[int, ...] | None:
    """The logits' shape to call with, or None for the exact shape (see the module doc).

    ``ignores``: the function takes ``ignore_index`` and does not declare it unsupported.
    """
    x = inputs.logits
    if x.size == 0:
        return None
    try:
        validate(x, np.asarray(inputs.target), inputs)
    except Exception:  # invalid input: the function must see exactly what the case gives
        return None
    index = not inputs.probability_target
    shape = list(x.shape)
    class_axis = 0 if x.ndim == 1 else 1
    if index and float(inputs.label_smoothing) == 0.0:
        shape[class_axis] = bucket(x.shape[class_axis], MIN_CLASSES)
    if x.ndim >= 2 and (inputs.reduction == "none" or (index and _ignorable(inputs, ignores))):
        for axis in (0, *range(2, x.ndim)):
            minimum = MIN_BATCH if axis == 0 and x.ndim == 2 else MIN_AXIS
            shape[axis] = bucket(x.shape[axis], minimum)
    return None if tuple(shape) == x.shape else tuple(shape)


@dataclass(frozen=True)
class Arrays:
    """One call's NumPy arguments (padded or exact) and the real shapes to cut back to."""

    logits: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None
    upstream: np.ndarray | None  # the 'none' loss's cotangent; None for 'mean' and 'sum'
    logits_shape: tuple[int, ...]
    loss_shape: tuple[int, ...]  # the real loss's: () for 'mean' and 'sum'
    padded_loss_shape: tuple[int, ...]


def arrays(inputs: CallInputs, shape: tuple[int, ...] | None, *, ignores: bool) -> Arrays:
    """The call's arrays, padded to ``shape`` (None: exact)."""
    x, t = inputs.logits, np.asarray(inputs.target)
    loss_shape: tuple[int, ...] = ()
    if inputs.reduction == "none" and x.ndim > 1:
        loss_shape = x.shape[:1] + x.shape[2:]
    upstream = None
    if inputs.reduction == "none":
        given = inputs.grad_output
        upstream = np.ones(loss_shape, x.dtype) if given is None else np.asarray(given, x.dtype)
    if shape is None:
        return Arrays(x, t, inputs.weight, upstream, x.shape, loss_shape, loss_shape)
    class_axis = 0 if x.ndim == 1 else 1
    # positions padded, the class axis as it is (its padding is -inf logits, below)
    positions = tuple(
        n if a == class_axis else s for a, (s, n) in enumerate(zip(shape, x.shape, strict=True))
    )
    padded = _pad_constant(_pad_edge(x, positions), shape, -np.inf)
    target_shape = tuple(s for a, s in enumerate(positions) if a != class_axis)
    if x.ndim == 1:  # unbatched: a 0-d target, only classes are padded
        target = t
    elif inputs.probability_target:
        target = _pad_edge(t, positions)
    elif _ignorable(inputs, ignores):
        target = _pad_constant(t, target_shape, inputs.ignore_index)
    else:  # 'none' only (padded_shape): the padded positions' losses are dropped
        target = _pad_edge(t, target_shape)
    weight = inputs.weight
    if weight is not None:
        weight = _pad_constant(weight, (shape[class_axis],), 0)
    padded_loss = loss_shape
    if upstream is not None and x.ndim > 1:
        upstream = _pad_constant(upstream, target_shape, 0)
        padded_loss = upstream.shape
    return Arrays(padded, target, weight, upstream, x.shape, loss_shape, padded_loss)


def _pad_edge(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` grown to ``shape`` at the end of each axis with copies of its last entry there
    (``np.pad(mode='edge')``, without its cost per call: a gather per grown axis)."""
    for axis, (s, n) in enumerate(zip(shape, a.shape, strict=True)):
        if s != n:
            a = np.take(a, np.minimum(np.arange(s), n - 1), axis=axis)
    return a


def _pad_constant(a: np.ndarray, shape: tuple[int, ...], value: float) -> np.ndarray:
    """``a`` grown to ``shape`` at the end of each axis with ``value`` (``np.pad``'s
    constant mode)."""
    if a.shape == shape:
        return a
    out = np.full(shape, value, dtype=a.dtype)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out


def cut(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The leading ``shape`` block of a padded result."""
    return a[tuple(slice(0, n) for n in shape)]


@functools.lru_cache(maxsize=512)
def _program(
    fn: Callable[..., Any], concrete: tuple, traced: tuple[str, ...], want_grad: bool, jit: bool
) -> Any:
    """``(x, target, weight, upstream, *traced values) -> (loss, grad or None)``.

    ``concrete``: (name, value) options passed as Python values; ``traced``: names of
    the options passed as the trailing arguments. Jitted when ``jit``: one program per
    shape, dtype and concrete options.
    """
    import jax
    import jax.numpy as jnp

    fixed = dict(concrete)

    def run(x: Any, target: Any, weight: Any, upstream: Any, *values: Any) -> tuple[Any, Any]:
        options = {**fixed, **dict(zip(traced, values, strict=True))}

        def loss_of(logits: Any) -> Any:
            return fn(logits, target, weight, **options)

        if not want_grad:
            return loss_of(x), None
        loss, pullback = jax.vjp(loss_of, x)
        fits = upstream is not None and jnp.shape(upstream) == jnp.shape(loss)
        cotangent = upstream.astype(loss.dtype) if fits else jnp.ones_like(loss)
        (grad,) = pullback(cotangent)
        return loss, grad

    return jax.jit(run) if jit else run


class JaxCaller:
    """Calls one function for ``from_jax``: padding, traced options, eager fallback.

    ``fn(x, target, weight, **options)``; ``ignores``: whether padded positions may be
    ignored ones (the function takes ignore_index); ``pad``: pad at all; ``jit``: jit at all.
    """

    def __init__(self, fn: Callable[..., Any], *, ignores: bool, pad: bool, jit: bool) -> None:
        self.fn = fn
        self.ignores = ignores
        self.pad = pad
        self.step = 0 if jit else len(_CONCRETE_STEPS)  # past the last step: eager

    @property
    def eager(self) -> bool:
        return self.step >= len(_CONCRETE_STEPS)

    def __call__(self, inputs: CallInputs, options: dict[str, Any]) -> Output:
        with x64_scope(inputs.dtype == "float64"):
            while True:
                try:
                    return self._call(inputs, options)
                except _not_traceable_errors():
                    if self.eager:
                        raise
                    self.step += 1  # this function needs more of its options concrete

    def _call(self, inputs: CallInputs, options: dict[str, Any]) -> Output:
        shape = None
        if self.pad and not self.eager:
            shape = padded_shape(inputs, ignores=self.ignores)
        a = arrays(inputs, shape, ignores=self.ignores)
        # dtypes are converted on the host (bfloat16: ml_dtypes' NumPy type): an eager
        # JAX conversion would compile a program per shape
        dtype = np.dtype(jax_dtype(inputs.dtype))
        x = a.logits.astype(dtype)
        weight = None if a.weight is None else a.weight.astype(dtype)
        target = a.target.astype(dtype) if inputs.probability_target else a.target
        upstream = None if a.upstream is None else a.upstream.astype(dtype)
        concrete_names = _CONCRETE_STEPS[min(self.step, len(_CONCRETE_STEPS) - 1)]
        if "ignore_index" in options and not _ignorable(inputs, True):
            concrete_names |= {"ignore_index"}  # a traced int32 cannot hold it
        traced: tuple[str, ...] = ()
        if not self.eager:
            traced = tuple(k for k in TRACEABLE if k in options and k not in concrete_names)
        concrete = tuple(sorted((k, v) for k, v in options.items() if k not in traced))
        program = _program(self.fn, concrete, traced, inputs.want_grad, not self.eager)
        loss, grad = program(x, target, weight, upstream, *(options[k] for k in traced))
        loss = round_to(loss, inputs.dtype)
        if loss.shape == a.padded_loss_shape:  # else the runner reports the wrong shape
            loss = cut(loss, a.loss_shape)
        out_grad = None
        if grad is not None:
            out_grad = cut(round_to(grad, inputs.dtype), a.logits_shape)
        return Output(loss=loss, grad=out_grad)
