"""The error model (harness/oracle/error_model.py) and the test ratio (harness/execution/compare.py), in process.

Both directions: an implementation that rounds every quantity the model allows to
round, at every place it may, conforms on random and adversarial inputs; the
defects real implementations have had do not. And a baseline comparison ignores
rounding noise of a few ulp but not a wrong implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness import Output
from harness.adapters.numpy_ref import NumpyAdapter
from harness.cases.loader import load_paths
from harness.dtypes import cast, ulp
from harness.execution.compare import compare
from harness.execution.runner import run_one
from harness.gate import baseline
from harness.oracle import cross_entropy
from harness.oracle.error_model import (
    COMPUTE_DTYPE,
    THRESHOLD,
    _sum_length,
    error_bounds,
    length_factor,
    repeated_length,
    subnormal_spacing,
    unit_roundoff,
)
from harness.oracle.problem import Problem
from harness.reports import json as report_json
from tests.mutants.bugs import MeanDividesByN

DTYPES = ("float64", "float32", "float16", "bfloat16")


def test_unit_roundoff_and_subnormal_spacing_are_the_formats():
    assert unit_roundoff("float64") == 2.0**-53
    assert unit_roundoff("float32") == 2.0**-24
    assert unit_roundoff("float16") == 2.0**-11
    assert unit_roundoff("bfloat16") == 2.0**-8
    assert subnormal_spacing("float32") == float(np.finfo(np.float32).smallest_subnormal)
    assert subnormal_spacing("float16") == float(np.finfo(np.float16).smallest_subnormal)
    assert COMPUTE_DTYPE["float16"] == COMPUTE_DTYPE["bfloat16"] == "float32"
    assert length_factor(1) == 1 and length_factor(4096) == 64


def _legal(p: Problem, dtype: str, *, round_sum_to_dtype: bool = False):
    """Cross-entropy as a careful implementation may compute it, rounding at every place
    the model allows: arithmetic in the compute precision (float32 for half dtypes), and
    the log-probabilities, the probabilities recomputed from them, each product, each
    position's loss and the results stored in the case dtype.

    ``round_sum_to_dtype``: also round the sum of exponentials to the dtype before its
    log (PyTorch's CPU half-precision kernels): a defect.
    """

    def rd(a):
        return cast(np.asarray(a, dtype=np.float64), dtype).astype(np.float64)

    def rc(a):
        return cast(np.asarray(a, dtype=np.float64), COMPUTE_DTYPE[dtype]).astype(np.float64)

    x, t = p.rows()
    n, c = x.shape
    eps = p.label_smoothing
    w = np.ones(c) if p.weight is None else p.weight
    m = x.max(axis=1, keepdims=True)
    d = rc(x - m)
    s = rc(np.sum(rc(np.exp(d)), axis=1, keepdims=True))
    if round_sum_to_dtype:
        s = rd(s)
    logp = rd(rc(d - rc(np.log(s))))
    if p.probability_target:
        keep = np.ones(n, dtype=bool)
        a = rc(w * rc((1 - eps) * t + eps / c))
        den = float(n)
    else:
        keep = t != p.ignore_index
        safe = np.where(keep, t, 0)
        a = np.zeros((n, c))
        a[np.arange(n), safe] = (1 - eps) * w[safe]
        a = rc(a + eps / c * w)
        a[~keep] = 0.0
        den = float(rc(np.sum(np.where(keep, w[safe], 0.0))))
    per_pos = rd(rc(np.sum(rd(rc(-a * logp)), axis=1)))
    if p.reduction == "none":
        loss = per_pos.reshape(p.loss_shape())
        g = np.ones(n) if p.grad_output is None else p.upstream()
    elif p.reduction == "sum":
        loss = rd(rc(np.sum(per_pos)))
        g = np.ones(n)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            loss = rd(rc(rc(np.sum(per_pos)) / np.float64(den)))
            g = np.full(n, rc(1.0 / np.float64(den)))
    prob = rd(rc(np.exp(logp)))
    big_a = rc(np.sum(a, axis=1, keepdims=True))
    grad = rd(rc(rc(g[:, None] * rc(big_a * prob)) - rc(g[:, None] * a)))
    grad[~keep] = 0.0
    return np.asarray(loss), p.grad_from_rows(grad)


def _ratios(p: Problem, dtype: str, got_loss, got_grad) -> tuple[float, float]:
    exact = cross_entropy(p)
    b = error_bounds(p, dtype, exact.loss, exact.grad)
    lc = compare(got_loss, exact.loss, b.loss, dtype, "loss")
    gc = compare(got_grad, exact.grad, b.grad, dtype, "grad")
    return lc.errors.max_ratio, gc.errors.max_ratio


#: the strategies ``problems`` draws from, built once: built in it, each example built them
#: again and worked out their properties (0.3 s of CPU in 300 examples); the draws are the same
_DTYPE = st.sampled_from(DTYPES)
_ROWS, _CLASSES, _SEED = st.integers(1, 5), st.integers(1, 24), st.integers(0, 2**32 - 1)
_SPREAD = st.sampled_from([0.1, 1.0, 4.0, 12.0])
_OFFSET = st.sampled_from([0.0, 30.0, -200.0])
_SMOOTHING = st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0])
_REDUCTION = st.sampled_from(["none", "mean", "sum"])
_TARGET_SCALE = st.sampled_from([1.0, 1.0, 1.7])
_IGNORE_INDEX = st.sampled_from([-100, -1, 0])


@st.composite
def problems(draw) -> tuple[Problem, str]:
    dtype = draw(_DTYPE)
    n = draw(_ROWS)
    c = draw(_CLASSES)
    seed = draw(_SEED)
    rng = np.random.default_rng(seed)
    spread = draw(_SPREAD)
    offset = draw(_OFFSET)
    x = cast(offset + spread * rng.standard_normal((n, c)), dtype).astype(np.float64)
    if draw(st.booleans()):  # a confident target somewhere
        x[0, 0] += 12.0
        x = cast(x, dtype).astype(np.float64)
    weight = None
    if draw(st.booleans()):
        weight = cast(rng.uniform(-10, 10, c), dtype).astype(np.float64)
    eps = draw(_SMOOTHING)
    reduction = draw(_REDUCTION)
    if draw(st.booleans()):
        # probability targets, unnormalised or with negative entries now and then
        t = rng.dirichlet(np.ones(c), n) * draw(_TARGET_SCALE)
        if draw(st.booleans()):
            t[:, 0] -= 0.1
        t = cast(t, dtype).astype(np.float64)
        p = Problem(x, t, True, weight, reduction, -100, eps)
    else:
        t = rng.integers(0, c, n)
        t[0] = 0
        ii = draw(_IGNORE_INDEX)
        if ii == -1 and n > 1:
            t[-1] = -1
        p = Problem(x, t, False, weight, reduction, ii, eps)
    return p, dtype


@settings(max_examples=300, deadline=None, derandomize=True)
@given(problems())
def test_an_implementation_rounding_wherever_allowed_conforms(case):
    p, dtype = case
    if p.reduction == "mean" and not p.probability_target:
        w = np.ones(p.logits.shape[1]) if p.weight is None else p.weight
        kept = p.target[p.target != p.ignore_index]
        assume(abs(np.sum(w[kept])) > 1e-3)  # over zero total weight both sides are NaN
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        loss, grad = _legal(p, dtype)
    ratios = _ratios(p, dtype, loss, grad)
    # a 0/0 mean (every weight ignored or summing to 0) is NaN on both sides: ratio NaN
    assert not any(r > 1 for r in ratios if r == r), (dtype, ratios, p)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_half_precision_sum_of_exponentials_rounded_before_the_log_fails(dtype, reduction):
    """PyTorch's CPU float16/bfloat16 kernels round sum(exp) to the dtype before the log:
    the loss of a confident target (exact 0.0011066) comes out 0.000976 or 0."""
    x = np.array([[8.0, 0.5, -1.0, 0.25], [0.25, 8.0, -1.0, 0.5]])
    p = Problem(cast(x, dtype).astype(np.float64), np.array([0, 1]), False, None, reduction)
    loss_ratio, _ = _ratios(p, dtype, *_legal(p, dtype, round_sum_to_dtype=True))
    assert loss_ratio > (10 if dtype == "float16" and reduction == "none" else 1)
    fine, _ = _ratios(p, dtype, *_legal(p, dtype))
    assert fine <= 1


def test_a_cancelling_gradient_is_judged_by_its_terms_not_its_value():
    """p_j close to t_j: the result is tiny, an ulp of the terms |w| p_j and |w| t_j is allowed."""
    x = np.array([[4.0, 0.0, 0.0]])
    t = np.array([[0.96, 0.02, 0.02]])  # close to softmax(x) = [0.9647, 0.0177, 0.0177]
    p = Problem(x, t, True, np.array([9.0, 9.0, 9.0]), "sum")
    exact = cross_entropy(p)
    b = error_bounds(p, "float32", exact.loss, exact.grad)
    off = exact.grad.copy()
    off[0, 0] += 9 * 2.0**-24  # an ulp-of-the-terms error, a large relative error of the result
    assert abs(exact.grad[0, 0]) < 0.05
    assert compare(off, exact.grad, b.grad, "float32", "grad").ok
    off[0, 0] += 0.01  # a real error
    assert not compare(off, exact.grad, b.grad, "float32", "grad").ok


def test_subnormal_results_are_judged_by_the_subnormal_spacing():
    x = np.array([[0.0, -100.0]])  # p_1 = 3.7e-44: subnormal in float32
    p = Problem(x, np.array([0]), False, None, "sum")
    exact = cross_entropy(p)
    b = error_bounds(p, "float32", exact.loss, exact.grad)
    flushed = exact.grad.copy()
    flushed[0, 1] = float(cast(np.array(exact.grad[0, 1]), "float32"))  # rounded to a subnormal
    assert compare(flushed, exact.grad, b.grad, "float32", "grad").ok


def test_non_finite_expected_values_have_zero_bound_and_match_exactly():
    x = np.array([[0.0, -np.inf, 1.0], [np.nan, 0.0, 0.0]])
    p = Problem(x, np.array([1, 0]), False, None, "none")
    exact = cross_entropy(p)
    b = error_bounds(p, "float32", exact.loss, exact.grad)
    assert np.isinf(exact.loss[0]) and np.isnan(exact.loss[1])
    assert np.all(b.loss == 0) and np.all(b.grad[np.isnan(exact.grad)] == 0)
    assert np.all(np.isfinite(b.grad))
    assert compare(exact.loss, exact.loss, b.loss, "float32", "loss").ok


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_an_ignored_row_of_only_minus_infinity_takes_no_part(reduction):
    """Found by the fuzzer: lse = -inf of an ignored row made the bound NaN."""
    x = np.array([[-np.inf, -np.inf], [0.0, 1.0]])
    p = Problem(x, np.array([-100, 1]), False, None, reduction)
    exact = cross_entropy(p)
    b = error_bounds(p, "float32", exact.loss, exact.grad)
    assert np.all(np.isfinite(b.loss)) and np.all(b.loss > 0)
    got = cast(exact.loss, "float32").astype(np.float64)
    assert compare(got, exact.loss, b.loss, "float32", "loss").ok


def test_logits_near_the_largest_float_do_not_overflow_the_bound():
    """Found by the fuzzer: 1e308-sized logits made the loss's bound inf, then 0."""
    x = np.array([1.0252468659761645e308, 8.145797017344869e307])
    p = Problem(x, np.array([0.625, 0.75]), True, None, "sum", -100, 0.15)
    exact = cross_entropy(p)
    b = error_bounds(p, "float64", exact.loss, exact.grad)
    assert np.isfinite(exact.loss) and 0 < b.loss < np.inf and np.all(np.isfinite(b.grad))
    one_ulp = np.nextafter(exact.loss, 0.0)
    assert compare(one_ulp, exact.loss, b.loss, "float64", "loss").ok


def test_override_widens_and_is_reported():
    e, b = np.array([1.0]), np.array([1e-8])
    assert not compare(np.array([1.001]), e, b, "float32", "loss").ok
    c = compare(np.array([1.001]), e, b, "float32", "loss", rtol=2e-3)
    assert c.ok and 0 < c.errors.max_ratio <= 1


# --- baselines: noise is not a regression, a wrong implementation is ---------------------


class _Perturbed(NumpyAdapter):
    """The numpy reference with every output element moved by +-2 ulp of its dtype."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def run(self, inputs):
        out = super().run(inputs)
        return Output(self._move(out.loss, inputs.dtype), self._move(out.grad, inputs.dtype))

    def _move(self, a, dtype):
        if a is None:
            return None
        v = np.asarray(a, dtype=np.float64)
        step = ulp(v, dtype) * self.rng.choice([-2.0, 2.0], size=v.shape)
        moved = np.where(np.isfinite(v) & (v != 0), v + step, v)
        return cast(moved, dtype)


@pytest.fixture(scope="module")
def slice_of_suite():
    """Hand-written files and every third grid point: 168 of grid_index's 504 cases, every
    combination of weight, ignore_index, label_smoothing and reduction still among them (all
    of them would triple the cost of the four runs below)."""
    cases = load_paths().cases
    keep = ("seed/", "weights/", "smoothing/", "targets/", "half_precision/basic")
    grid = [c for c in cases if c.id.startswith("grid_index/")][::3]
    chosen = [c for c in cases if c.id.startswith(keep)] + grid
    return [c for c in chosen if c.expect_error is None]


def _doc(cases, adapter):
    results = [run_one(c, adapter, d) for c in cases for d in c.dtypes]
    return report_json.build(results, cases, [{"name": adapter.name}])


def test_two_ulp_noise_is_not_a_regression_but_a_wrong_mean_is(slice_of_suite):
    old = _doc(slice_of_suite, NumpyAdapter())
    assert sum(r["status"] != "pass" for r in old["results"]) == 0
    for seed in (0, 1):
        noisy = _doc(slice_of_suite, _Perturbed(seed))
        cmp = baseline.compare(old, noisy)
        assert not cmp.regressed, baseline.render(cmp)
        assert not cmp.changed and len(cmp.added) == len(cmp.removed) == 0
    wrong = MeanDividesByN()
    wrong.name = "numpy"
    cmp = baseline.compare(old, _doc(slice_of_suite, wrong))
    assert cmp.regressed and cmp.newly_failing


def test_growth_counts_only_above_a_third_of_the_limit():
    assert not baseline.grew(0.01, 0.3, 2.0)  # 30x, but well inside the limit
    assert baseline.grew(0.01, 0.7, 2.0)
    assert not baseline.grew(0.5, 0.9, 2.0)
    assert not baseline.grew(None, 0.9, 2.0)  # an old report without ratios
    assert THRESHOLD == 4.0


@given(
    values=st.lists(st.floats(0.125, 10.0, width=32), min_size=1, max_size=6, unique=True),
    copies=st.lists(st.integers(1, 40), min_size=6, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_float32_sums_of_repeated_terms_stay_within_their_length(values, copies, seed):
    """Summed one after another in float32, in any order, terms that repeat are off by at
    most u sum|t| times ``repeated_length`` (which is at most n), while ``sqrt(n)`` alone is
    exceeded by equal terms (checked below on a fixed example)."""
    terms = np.repeat(np.float32(values), copies[: len(values)])
    np.random.default_rng(seed).shuffle(terms)
    exact = math.fsum(terms.astype(np.float64))
    got = float(np.cumsum(terms, dtype=np.float32)[-1])
    length = float(repeated_length(terms))
    assert length <= terms.size
    assert abs(got - exact) <= unit_roundoff("float32") * length * exact + 1e-12


def test_repeated_length_counts_each_value_once_per_copy():
    assert float(repeated_length(np.arange(1.0, 101.0))) == pytest.approx(10.0)  # sqrt(n)
    assert float(repeated_length(np.full(32000, 0.1 / 32000))) == 32000.0  # n equal terms
    assert float(repeated_length(np.array([0.0, 0.0, 3.0]))) == 0.0  # one term: exact
    np.testing.assert_array_equal(repeated_length(np.array([[1.0, 2.0, 2.0], [5.0, 5.0, 0.0]])),
                                  [np.sqrt(5.0), 2.0])  # fmt: skip
    # 32000 equal terms summed in order in float32: far beyond sqrt(n) u, within n u
    terms = np.full(32000, np.float32(0.1 / 32000))
    err = abs(float(np.cumsum(terms, dtype=np.float32)[-1]) / math.fsum(terms) - 1)
    u = unit_roundoff("float32")
    assert math.sqrt(terms.size) * u < err < float(repeated_length(terms)) * u


def test_exact_sums_keep_the_sqrt_length_and_inexact_repeated_ones_grow():
    # a count and dyadic weights are summed exactly in float32: the spare sqrt(n) is kept
    assert _sum_length(np.ones(70000), "float32") == pytest.approx(math.sqrt(70000))
    halves = np.tile([0.5, 1.0, 1.5, 2.0], 17500)
    assert _sum_length(halves, "float32") == pytest.approx(math.sqrt(70000))
    # past 2**24 a float32 count stalls; weights such as 0.3 round at every addition
    assert _sum_length(np.ones(2**25), "float32") == 2.0**25
    tenths = np.tile(np.float32([0.3, 0.7, 1.1]).astype(np.float64), 1000)
    assert _sum_length(tenths, "float32") == pytest.approx(math.sqrt(3) * 1000)
