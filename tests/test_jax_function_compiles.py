"""``from_jax`` functions compile a bounded number of XLA programs (issue 14, item 5).

Positions are padded with ignored copies and classes with -inf logits where the
semantics allow; ignore_index and label_smoothing travel as traced values unless the
function branches on them in Python. Each trace of the wrapped function is counted
(a jitted function runs its Python body once per compile). In process: logic.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
from conftest import REPO

from harness import CallInputs, from_jax
from harness.adapters.numpy_ref import cross_entropy as reference
from harness.dtypes import cast

# jax is imported by the fixture below, when a test of this file runs: importing it here
# cost every pytest-xdist worker its seconds at collection, and a worker that had imported
# it started --jobs workers by spawning instead of forking (harness.execution.parallel)
if importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed", allow_module_level=True)
jax: Any = None
jnp: Any = None


@pytest.fixture(autouse=True, scope="module")
def _import_jax() -> None:
    global jax, jnp
    import jax as module

    jax, jnp = module, module.numpy


RNG = np.random.default_rng(14)


def traceable_ce(input, target, weight=None, ignore_index=-100, reduction="mean",
                 label_smoothing=0.0):  # fmt: skip
    """PyTorch's cross-entropy in jax.numpy without Python branches on values."""
    c = input.shape[0] if input.ndim == 1 else input.shape[1]
    rows = jnp.moveaxis(input if input.ndim > 1 else input[None], 1, -1).reshape(-1, c)
    lp = jax.nn.log_softmax(rows.astype(jnp.float32), axis=-1)
    labels = target.reshape(-1)
    w = jnp.ones(c, lp.dtype) if weight is None else weight.astype(lp.dtype)
    keep = labels != ignore_index
    safe = jnp.where(keep, labels, 0)
    wy = jnp.where(keep, w[safe], 0)
    nll = jnp.where(keep, -wy * jnp.take_along_axis(lp, safe[:, None], axis=1)[:, 0], 0)
    smoothing = label_smoothing > 0
    smooth = jnp.where(keep & smoothing, -(w * lp).sum(axis=1), 0)
    per_row = (1 - label_smoothing) * nll + jnp.where(smoothing, label_smoothing / c * smooth, 0)
    if reduction == "none":
        return per_row.reshape(target.shape).astype(input.dtype)
    if reduction == "sum":
        return per_row.sum().astype(input.dtype)
    return (per_row.sum() / wy.sum()).astype(input.dtype)


def counted(fn, seen):
    """``fn`` with the shapes of every trace (or eager call) recorded in ``seen``."""

    def ce(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        seen.append((input.shape, str(input.dtype), reduction))
        return fn(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                  label_smoothing=label_smoothing)  # fmt: skip

    return ce


def _call(n: int, c: int, **kw) -> CallInputs:
    dtype = kw.pop("dtype", "float32")
    args = {
        "logits": cast(RNG.normal(size=(n, c)), dtype),
        "target": RNG.integers(0, c, size=n),
        "weight": None,
        "reduction": "mean",
        "ignore_index": -100,
        "label_smoothing": 0.0,
        "dtype": dtype,
    }
    args.update(kw)
    return CallInputs(**args)


def _check(adapter, inputs: CallInputs) -> None:
    out = adapter.run(inputs)
    loss, grad = reference(inputs)
    np.testing.assert_allclose(np.asarray(out.loss, np.float64), loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.grad, np.float64), grad, rtol=2e-5, atol=1e-6)


def test_batch_sizes_and_option_values_share_one_program():
    seen: list = []
    adapter = from_jax(counted(traceable_ce, seen))
    for n in range(1, 10):
        for ignore_index, label_smoothing in [(-100, 0.0), (1, 0.0), (-100, 0.1), (2, 0.25)]:
            target = RNG.integers(0, 5, size=n)
            target[0] = ignore_index if ignore_index >= 0 else target[0]
            _check(adapter, _call(n, 5, target=target, ignore_index=ignore_index,
                                  label_smoothing=label_smoothing))  # fmt: skip
    # 36 calls: classes padded to 8 without smoothing, kept at 5 with it; 64 positions
    assert sorted(set(seen)) == [((64, 5), "float32", "mean"), ((64, 8), "float32", "mean")]
    assert len(seen) == 2


def test_positions_pad_with_ignored_copies_in_every_spatial_axis_and_none_drops_them():
    seen: list = []
    adapter = from_jax(counted(traceable_ce, seen))
    for shape in [(2, 3, 3), (3, 3, 4), (2, 3, 3, 2), (3, 3, 2, 3)]:
        logits = RNG.normal(size=shape).astype(np.float32)
        target = RNG.integers(0, 3, size=shape[:1] + shape[2:])
        for reduction in ("mean", "none"):
            grad_output = None
            if reduction == "none":
                grad_output = RNG.normal(size=target.shape).astype(np.float32)
            _check(adapter, CallInputs(logits, target, None, reduction, -100, 0.0, "float32",
                                       grad_output=grad_output))  # fmt: skip
    assert sorted(set(seen)) == [
        ((4, 8, 4), "float32", "mean"), ((4, 8, 4), "float32", "none"),
        ((4, 8, 4, 4), "float32", "mean"), ((4, 8, 4, 4), "float32", "none"),
    ]  # fmt: skip


def test_where_the_semantics_do_not_allow_padding_the_call_keeps_its_shape():
    seen: list = []

    def no_ignore_index(input, target, weight=None, reduction="mean"):
        seen.append((input.shape, str(input.dtype), reduction))
        return traceable_ce(input, target, weight, reduction=reduction)

    adapter = from_jax(no_ignore_index)
    # no ignore_index: mean and sum keep their positions (classes still pad); none pads
    _check(adapter, _call(5, 3, reduction="sum"))
    _check(adapter, _call(5, 3, reduction="none"))
    # invalid input is passed as given (a target out of bounds): the function must raise
    adapter.run(_call(5, 3, target=np.array([0, 1, 7, 0, 1]), reduction="sum"))
    assert seen == [
        ((5, 8), "float32", "sum"), ((64, 8), "float32", "none"), ((5, 3), "float32", "sum"),
    ]  # fmt: skip

    prob_seen: list = []

    def probabilities(input, target, weight=None, ignore_index=-100, reduction="mean",
                      label_smoothing=0.0):  # fmt: skip
        prob_seen.append(input.shape)
        lp = jax.nn.log_softmax(input, axis=1)
        per_row = -(target * lp).sum(axis=1)
        return {"none": per_row, "sum": per_row.sum(), "mean": per_row.mean()}[reduction]

    adapter = from_jax(probabilities)
    for reduction in ("mean", "none"):
        target = np.full((5, 3), 1 / 3, np.float32)
        _check(adapter, _call(5, 3, target=target, reduction=reduction))
    assert prob_seen == [(5, 3), (64, 3)]  # a padded row would count in the mean's N


def test_a_python_branch_on_label_smoothing_makes_it_static():
    seen: list = []

    def branches(input, target, weight=None, ignore_index=-100, reduction="mean",
                 label_smoothing=0.0):  # fmt: skip
        seen.append(label_smoothing)
        if label_smoothing > 0:  # Python control flow: needs a concrete value
            return traceable_ce(input, target, weight, ignore_index=ignore_index,
                                reduction=reduction, label_smoothing=label_smoothing)  # fmt: skip
        return traceable_ce(input, target, weight, ignore_index=ignore_index, reduction=reduction)

    adapter = from_jax(branches)
    for n in (3, 4, 5):
        for ls in (0.0, 0.1, 0.0):
            _check(adapter, _call(n, 4, label_smoothing=ls))
    concrete = [v for v in seen if isinstance(v, float)]
    assert sorted(set(concrete)) == [0.0, 0.1]  # one program per value, then reused
    assert len(concrete) == 2


def test_padding_gives_the_exact_shapes_values_on_suite_cases():
    import harness

    files = [REPO / "cases" / f"{name}.yaml" for name in ("seed", "numerics", "weights",
                                                           "ignore_index")]  # fmt: skip
    cases = [
        c
        for c in harness.load_cases(files)
        if c.expect_error is None
        and c.id in {
            "seed/weighted_mean", "numerics/neg_inf_non_target", "numerics/neg_inf_row",
            "numerics/neg_inf_ignored_row", "weights/zero_total_weight_mean_nan",
            "ignore_index/all_ignored_mean_nan", "ignore_index/kdim_all_ignored_mean_nan",
        }
    ]  # fmt: skip
    assert len(cases) == 7
    padded, exact = from_jax(traceable_ce), from_jax(traceable_ce, pad=False)
    for case in cases:
        inputs = case.inputs("float32")
        a, b = padded.run(inputs), exact.run(inputs)
        np.testing.assert_array_equal(np.asarray(a.loss), np.asarray(b.loss), err_msg=case.id)
        np.testing.assert_allclose(np.asarray(a.grad), np.asarray(b.grad), rtol=1e-6,
                                   err_msg=case.id)  # fmt: skip
