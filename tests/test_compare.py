"""harness.execution.compare and harness.cases.tolerance, in process: the test ratio, NaN and
infinity handling, shapes in messages, tolerance overrides."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness.cases.tolerance import NONE, TOLERANCE_KEYS, Tolerance, resolve
from harness.dtypes import scalar_ulp
from harness.execution import compare as compare_module
from harness.execution.compare import compare
from harness.oracle.error_model import THRESHOLD

PROFILE = settings(max_examples=100, deadline=None, derandomize=True)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
#: relative bounds: times max(1, |expected|), so that a step of a few bounds is not rounded away
bounds = st.floats(1e-12, 1.0, allow_nan=False, allow_infinity=False)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5)


def _arrays(shape, elements):
    return hnp.arrays(np.float64, shape, elements=elements)


# --- the test ratio -------------------------------------------------------------------------


@PROFILE
@given(st.data())
def test_identical_values_conform_with_zero_errors(data):
    """Any array, NaN and infinities included, matches itself exactly, fast path or not."""
    shape = data.draw(shapes)
    values = data.draw(_arrays(shape, st.floats(allow_nan=True, allow_infinity=True)))
    bound = data.draw(_arrays(shape, st.floats(0, 1, allow_nan=False)))
    c = compare(values.copy(), values, bound, "float64", "grad")
    assert c.ok and c.message is None
    assert c.errors.max_abs == c.errors.max_rel == c.errors.max_ratio == 0.0


@PROFILE
@given(expected=finite, bound=bounds, k=st.floats(0.0, 0.99))
def test_a_scalar_within_threshold_times_bound_conforms_with_its_ratio(expected, bound, k):
    bound *= max(1.0, abs(expected))
    got = expected + k * THRESHOLD * bound
    d = abs(got - expected)  # what float64 made of the step
    c = compare(np.float64(got), np.float64(expected), np.float64(bound), "float64", "loss")
    assert c.ok, c.message
    assert c.errors.max_abs == d
    assert c.errors.max_ratio == pytest.approx(d / (THRESHOLD * bound), rel=1e-12, abs=0)
    assert c.errors.max_ratio <= 1.0
    assert c.errors.max_ulp == pytest.approx(d / scalar_ulp(expected, "float64"), rel=1e-12)


@PROFILE
@given(expected=finite, bound=bounds, k=st.floats(1.01, 1e3))
def test_a_scalar_beyond_threshold_times_bound_fails_and_says_by_how_much(expected, bound, k):
    bound *= max(1.0, abs(expected))
    got = expected + k * THRESHOLD * bound
    c = compare(np.float64(got), np.float64(expected), np.float64(bound), "float64", "loss")
    assert not c.ok
    ratio = abs(got - expected) / (THRESHOLD * bound)
    assert c.errors.max_ratio == pytest.approx(ratio, rel=1e-12)
    assert c.message.startswith(f"loss: expected {expected!r}, got {got!r} (test ratio ")
    assert f"= {THRESHOLD:g} x bound" in c.message and "elements off" not in c.message


@PROFILE
@given(st.data())
def test_array_ratio_is_the_worst_element_and_the_verdict_follows_it(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    expected = data.draw(_arrays(shape, finite))
    bound = data.draw(_arrays(shape, bounds)) * np.maximum(1.0, np.abs(expected))
    k = data.draw(_arrays(shape, st.floats(-3.0, 3.0)))
    got = expected + k * THRESHOLD * bound
    c = compare(got, expected, bound, "float32", "grad")
    diff = np.abs(got - expected)
    ratios = diff / (THRESHOLD * bound)
    assert c.ok == bool(np.all(diff <= THRESHOLD * bound))
    assert c.errors.max_ratio == pytest.approx(ratios.max(), rel=1e-12)
    assert c.errors.max_abs == diff.max()
    scale = np.abs(expected).max()
    assert c.errors.max_ulp == pytest.approx(diff.max() / scalar_ulp(scale, "float32"), rel=1e-12)
    if not c.ok:
        n_bad = int(np.sum(diff > THRESHOLD * bound))
        bad = diff > THRESHOLD * bound
        worst = np.unravel_index(int(np.argmax(np.where(bad, ratios, -1))), shape)
        index = "[" + ", ".join(map(str, worst)) + "]"
        assert c.message.startswith(f"grad{index}: expected {float(expected[worst])!r}")
        more = f"({n_bad} of {expected.size} elements off)"
        assert c.message.endswith(more) if expected.size > 1 else "elements off" not in c.message


def test_blocks_of_the_fast_path_give_the_whole_array_figures(monkeypatch):
    rng = np.random.default_rng(7)
    expected = rng.normal(size=1000)
    bound = rng.uniform(1e-3, 1e-2, 1000)
    got = expected + rng.uniform(-1, 1, 1000) * THRESHOLD * bound
    whole = compare(got, expected, bound, "float64", "grad")
    monkeypatch.setattr(compare_module, "BLOCK", 7)  # 143 blocks, the last one short
    blocked = compare(got, expected, bound, "float64", "grad")
    assert whole.ok and blocked == whole
    assert whole.errors.max_ratio == pytest.approx(
        (np.abs(got - expected) / (THRESHOLD * bound)).max(), rel=1e-12
    )


#: values where the two paths could part: zeros of both signs, subnormals, values whose
#: difference overflows, NaN and the infinities
_edges = st.sampled_from(
    [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.0, -1.0, 1e308, -1e308,
     float("nan"), float("inf"), float("-inf")]
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_small_arrays_in_python_floats_give_the_numpy_path_s_figures_bit_for_bit(data):
    """Arrays of up to ``SMALL`` elements are checked in Python floats: the same result as
    the NumPy path (None, or Errors equal bit for bit) on any values, exact matches, zeros
    of the expected value, zero bounds and tolerance overrides included."""
    n = data.draw(st.integers(0, compare_module.SMALL))
    values = st.one_of(st.floats(-1e6, 1e6), _edges)
    expected = data.draw(_arrays(n, values))
    # got: equal, near (within a few bounds) or anything
    bound = data.draw(_arrays(n, st.one_of(st.floats(0, 1e-3), st.just(0.0), _edges)))
    steps = data.draw(_arrays(n, st.sampled_from([0.0, 0.5, -0.999, 1.0, 1.001, -3.0])))
    with np.errstate(all="ignore"):
        got = expected + steps * THRESHOLD * np.abs(bound)
    got = np.where(data.draw(_arrays(n, st.booleans())), data.draw(_arrays(n, values)), got)
    rtol = data.draw(st.sampled_from([0.0, 1e-6]))
    atol = data.draw(st.sampled_from([0.0, 1e-9]))
    dtype = data.draw(st.sampled_from(["float64", "float32", "float16", "bfloat16"]))
    numpy_path = compare_module._all_finite_and_within(got, expected, bound, dtype, rtol, atol)
    python_path = compare_module._small_all_finite_and_within(
        got, expected, bound, dtype, rtol, atol
    )
    if numpy_path is None:
        assert python_path is None
    else:
        assert python_path is not None
        for name in ("max_abs", "max_rel", "max_ulp", "max_ratio"):
            want, have = getattr(numpy_path, name), getattr(python_path, name)
            assert (
                type(have) is float and np.float64(have).tobytes() == np.float64(want).tobytes()
            ), (name, want, have)


def test_zero_allowance_takes_only_an_exact_match():
    zero = np.zeros(3)
    exact = compare(np.array([1.0, 0.0, -2.0]), np.array([1.0, 0.0, -2.0]), zero, "float64", "g")
    assert exact.ok and exact.errors.max_ratio == 0.0
    off = compare(np.array([1.0, 0.0, -2.0]), np.array([1.0, 5e-324, -2.0]), zero, "float64", "g")
    assert not off.ok and off.errors.max_ratio == math.inf
    assert off.message.startswith("g[1]: expected 5e-324, got 0.0 (test ratio inf")


# --- NaN and infinities ---------------------------------------------------------------------

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("got", "expected", "ok"),
    [
        (NAN, NAN, True),
        (INF, INF, True),
        (-INF, -INF, True),
        (NAN, 1.0, False),
        (1.0, NAN, False),
        (INF, 1.0, False),
        (1.0, INF, False),
        (-INF, INF, False),
        (INF, NAN, False),
        (NAN, -INF, False),
    ],
)
def test_nan_matches_only_nan_and_an_infinity_only_itself(got, expected, ok):
    for shape in ((), (3,)):  # the scalar shortcut and the array path
        g = np.array(got) if shape == () else np.array([0.5, got, 0.5])
        e = np.array(expected) if shape == () else np.array([0.5, expected, 0.5])
        c = compare(g, e, np.full(shape, 1e-3), "float64", "loss")
        assert c.ok is ok, (got, expected, shape)
        if ok:
            assert c.errors.max_ratio == 0.0
        else:
            assert "non-finite mismatch" in c.message
            assert c.errors == compare_module.Errors(INF, INF, INF, INF)
            assert c.message.startswith("loss: " if shape == () else "loss[1]: ")


def test_a_finite_mismatch_beside_a_matching_nan_reports_the_finite_figures():
    c = compare(
        np.array([NAN, 2.0, 3.0]), np.array([NAN, 2.0, 3.5]), np.full(3, 1e-3), "float64", "g"
    )
    assert not c.ok
    assert c.errors.max_abs == 0.5 and c.errors.max_ratio == pytest.approx(0.5 / 4e-3)
    assert c.message.startswith("g[2]: expected 3.5, got 3.0 (test ratio 125:")
    assert "(1 of 3 elements off)" in c.message


def test_an_overflowing_difference_is_a_failure_not_a_warning():
    big = np.finfo(np.float64).max
    with np.errstate(all="raise"):  # compare must not raise (or warn) on its own arithmetic
        c = compare(np.array([big, 1.0]), np.array([-big, 1.0]), np.ones(2), "float64", "g")
    assert not c.ok and c.errors.max_ratio == INF


# --- shapes ---------------------------------------------------------------------------------


def test_the_message_indexes_the_expected_array_shape():
    e = np.zeros((2, 3, 4))
    g = e.copy()
    g[1, 2, 3] = 1.0
    c = compare(g, e, np.full(e.shape, 1e-3), "float64", "grad")
    assert c.message.startswith("grad[1, 2, 3]: expected 0.0, got 1.0")
    assert c.message.endswith("(1 of 24 elements off)")


def test_empty_arrays_and_single_element_arrays():
    empty = compare(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), "float64", "grad")
    assert empty.ok and empty.errors.max_ratio == 0.0 and empty.errors.max_abs == 0.0
    one = compare(np.array([2.0]), np.array([1.0]), np.array([0.1]), "float64", "loss")
    assert not one.ok and one.message.startswith("loss[0]: expected 1.0, got 2.0 (test ratio 2.5")
    assert "elements off" not in one.message


def test_ulp_is_taken_at_the_largest_expected_magnitude():
    """A zero gradient entry off by 1e-17 is 1e-17 / ulp(max |expected|), not billions of ulp."""
    e = np.array([0.0, 1.0])
    g = np.array([1e-17, 1.0])
    c = compare(g, e, np.array([1e-16, 1e-16]), "float64", "grad")
    assert c.ok
    assert c.errors.max_ulp == pytest.approx(1e-17 / 2.0**-52)
    assert c.errors.max_rel == math.inf  # relative to an expected 0: unbounded, said so


# --- tolerance overrides --------------------------------------------------------------------


def test_rtol_and_atol_widen_what_is_allowed_and_the_message_says_so():
    args = (np.array(1.5), np.array(1.0), np.array(0.0), "float32", "loss")
    assert not compare(*args).ok
    assert compare(*args, rtol=0.5).ok
    assert compare(*args, rtol=0.5).errors.max_ratio == 1.0
    c = compare(*args, atol=0.25)
    assert not c.ok and c.errors.max_ratio == 2.0
    assert "allowed 0.25 = 4 x bound 0 + tolerance override" in c.message
    assert compare(*args, atol=0.25, rtol=0.25).ok


def test_tolerance_resolves_flat_then_per_dtype_overrides():
    overrides = {
        "grad_atol": 1e-3,
        "loss_rtol": 1e-2,
        "float16": {"loss_rtol": 5e-2, "grad_rtol": 1},
        "reason": "stated",
    }
    assert resolve("float32", overrides) == Tolerance(loss_rtol=1e-2, grad_atol=1e-3)
    half = resolve("float16", overrides)
    assert half == Tolerance(loss_rtol=5e-2, grad_rtol=1.0, grad_atol=1e-3)
    assert isinstance(half.grad_rtol, float)
    assert resolve("float64", {}) == NONE == Tolerance()
    assert all(getattr(NONE, k) == 0.0 for k in TOLERANCE_KEYS)


@PROFILE
@given(
    st.dictionaries(st.sampled_from(TOLERANCE_KEYS), st.floats(0, 1)),
    st.dictionaries(st.sampled_from(TOLERANCE_KEYS), st.floats(0, 1)),
    st.sampled_from(["float64", "float32", "float16", "bfloat16"]),
)
def test_a_per_dtype_value_wins_over_the_flat_one_for_that_dtype_only(flat, per, dtype):
    other = "float64" if dtype != "float64" else "float32"
    overrides = {**flat, dtype: per}
    got, untouched = resolve(dtype, overrides), resolve(other, overrides)
    for key in TOLERANCE_KEYS:
        assert getattr(got, key) == per.get(key, flat.get(key, 0.0))
        assert getattr(untouched, key) == flat.get(key, 0.0)
