"""The arrays ``from_jax`` pads a call's inputs to (``harness.adapters.jax_function.arrays``)
are ``np.pad``'s: positions grown with copies of the last one (or, for class-index targets
a function may ignore, with targets of ``ignore_index``), classes with logits of -inf and
weights of 0, the 'none' loss's upstream gradient with 0. Checked on every call that pads
of five built-in files (every rank, both target kinds, weights, ignored positions, 'none'
with and without grad_output), in NumPy alone (no JAX needed)."""

from __future__ import annotations

import numpy as np
import pytest

from harness import builtin_suite, load_cases
from harness.adapters.jax_function import _ignorable, arrays, padded_shape

FILES = ("seed", "shapes", "targets", "ignore_index", "reductions")


def np_pad_arrays(inputs, shape, ignores):
    """The padded call arrays made with ``np.pad``, as the reference."""
    x, t = inputs.logits, np.asarray(inputs.target)
    class_axis = 0 if x.ndim == 1 else 1
    widths = [(0, s - n) for s, n in zip(shape, x.shape, strict=True)]
    positions = [(0, 0) if a == class_axis else w for a, w in enumerate(widths)]
    classes = [w if a == class_axis else (0, 0) for a, w in enumerate(widths)]
    padded = np.pad(np.pad(x, positions, mode="edge"), classes, constant_values=-np.inf)
    target_widths = [w for a, w in enumerate(positions) if a != class_axis]
    if x.ndim == 1:
        target = t
    elif inputs.probability_target:
        target = np.pad(t, positions, mode="edge")
    elif _ignorable(inputs, ignores):
        target = np.pad(t, target_widths, constant_values=inputs.ignore_index)
    else:
        target = np.pad(t, target_widths, mode="edge")
    weight = inputs.weight
    if weight is not None:
        weight = np.pad(weight, [classes[class_axis]], constant_values=0)
    upstream = None
    if inputs.reduction == "none":
        loss_shape = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
        given = inputs.grad_output
        upstream = np.ones(loss_shape, x.dtype) if given is None else np.asarray(given, x.dtype)
        if x.ndim > 1:
            upstream = np.pad(upstream, target_widths)
    return padded, target, weight, upstream


@pytest.mark.parametrize("ignores", [True, False], ids=["ignore_index", "no_ignore_index"])
def test_padded_arrays_are_np_pad_s_on_every_padded_suite_call(ignores):
    checked = 0
    files = [builtin_suite() / f"{name}.yaml" for name in FILES]
    for case in load_cases(files):
        if case.fused or case.expect_error is not None:
            continue
        for dtype in case.dtypes:
            inputs = case.inputs(dtype)
            shape = padded_shape(inputs, ignores=ignores)
            if shape is None:
                continue
            got = arrays(inputs, shape, ignores=ignores)
            want = np_pad_arrays(inputs, shape, ignores)
            for name, g, w in zip(("logits", "target", "weight", "upstream"),
                                  (got.logits, got.target, got.weight, got.upstream),
                                  want, strict=True):  # fmt: skip
                if w is None:
                    assert g is None, (case.id, dtype, name)
                    continue
                assert g.dtype == w.dtype and g.shape == w.shape, (case.id, dtype, name)
                np.testing.assert_array_equal(g, w, err_msg=f"{case.id} {dtype} {name}")
            checked += 1
    assert checked > 100
