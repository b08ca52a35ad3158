"""The compiled row kernel (``harness.oracle.compiled``, numba) against the NumPy path and
the 200-bit mpmath oracle: bit-identical results, fallbacks included; and the compiled
error bounds (``harness.oracle.error_model.RowBounds``) against the NumPy ones, bit for bit.

The kernel serves class-index targets without smoothing or kernel fields on float32 and
float64 logits; here it is made to serve problems of any size (``MIN_LOGITS = 1``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.oracle import compiled
from harness.oracle import fast as oracle_fast
from harness.oracle.dialect import KERAS, ONNX
from harness.oracle.error_model import RowBounds, error_bounds
from harness.oracle.exact import cross_entropy_mpmath
from harness.oracle.problem import Problem
from tests.test_oracle_fast import SETTINGS, assert_bit_identical, problems

# numba (and the SciPy it imports) is imported by the first test that compiles a kernel:
# importing it at collection cost every pytest-xdist worker half a second of CPU
if importlib.util.find_spec("numba") is None:
    pytest.skip("numba is not installed", allow_module_level=True)

DTYPES = ("float64", "float32", "float16", "bfloat16")


@contextlib.contextmanager
def compiled_from(size: int):
    saved = compiled.MIN_LOGITS
    compiled.MIN_LOGITS = size
    try:
        yield
    finally:
        compiled.MIN_LOGITS = saved


def three_ways(p: Problem, want_grad: bool = True) -> None:
    """mpmath, the NumPy path and the compiled kernel give the same bits."""
    want = cross_entropy_mpmath(p, want_grad=want_grad)
    with compiled_from(1 << 62):
        numpy_path = oracle_fast.cross_entropy_fast(p, want_grad=want_grad)
    with compiled_from(1):
        got = oracle_fast.cross_entropy_fast(p, want_grad=want_grad)
    for a in (numpy_path, got):
        assert_bit_identical(want.loss, a.loss)
        assert_bit_identical(want.grad, a.grad)


@st.composite
def index_problems(draw):
    """``problems`` restricted to what the kernel serves, in a float32 or float64 carrier."""
    p = draw(problems().filter(lambda p: not p.probability_target and p.logits.ndim >= 1))
    x = p.logits
    if draw(st.booleans()):
        with np.errstate(over="ignore"):
            x = x.astype(np.float32)
    return dataclasses.replace(p, logits=x, label_smoothing=0.0)


@SETTINGS
@given(index_problems(), st.booleans())
def test_compiled_kernel_is_bit_identical_to_numpy_and_mpmath(p, want_grad):
    three_ways(p, want_grad)


def test_the_kernel_serves_large_plain_problems_only():
    x = np.zeros((4, 8), np.float32)
    t = np.zeros(4, np.int64)
    with compiled_from(32):
        assert compiled.applies(Problem(x, t, False), x)
        assert not compiled.applies(Problem(x[:3], t[:3], False), x[:3])  # too small
        assert not compiled.applies(Problem(x, t, False, label_smoothing=0.1), x)
        assert not compiled.applies(Problem(x, t, False, softcap=30.0), x)
        probs = np.full((4, 8), 1 / 8)
        assert not compiled.applies(Problem(x, probs, True), x)
        x16 = x.astype(np.float16)
        assert not compiled.applies(Problem(x16, t, False), x16)
        # an ignored NaN row's gradient is the kernel's PyTorch rule: not Keras's dialect
        assert not compiled.applies(Problem(x, t, False, dialect=KERAS), x)
        assert compiled.applies(Problem(x, t, False, dialect=ONNX), x)


def test_a_wide_float32_batch_needs_no_mpmath():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(16, 20000)) * 4).astype(np.float32)
    t = rng.integers(0, 20000, 16)
    t[2] = -100
    before = dict(oracle_fast.stats)
    for kw in (dict(), dict(weight=rng.uniform(0, 2, 20000), reduction="sum")):
        with compiled_from(1):
            got = oracle_fast.cross_entropy_fast(Problem(x, t, False, **kw))
        with compiled_from(1 << 62):
            want = oracle_fast.cross_entropy_fast(Problem(x, t, False, **kw))
        assert_bit_identical(want.loss, got.loss)
        assert_bit_identical(want.grad, got.grad)
    assert oracle_fast.stats["rows_mpmath"] == before["rows_mpmath"]
    assert oracle_fast.stats["whole_mpmath"] == before["whole_mpmath"]


def test_the_thread_count_changes_no_bit():
    """The row kernel's chunks of rows on one thread and on three (more than this machine's
    cores: chunks wait for a thread), with ignored rows, a NaN row, a zero weight, a row of
    ties, and in float32 and float64: the same values."""
    rng = np.random.default_rng(21)
    for dtype in (np.float32, np.float64):
        x = (rng.normal(size=(37, 2000)) * 6).astype(dtype)
        x[4] = np.nan
        x[9] = 1.0
        t = rng.integers(0, 2000, 37)
        t[[2, 30]] = -100
        w = rng.uniform(0, 2, 2000)
        w[t[11]] = 0.0
        for kw in (dict(), dict(weight=w, reduction="none")):
            got = {}
            for threads in (1, 3):
                saved = compiled.threads()
                compiled.set_threads(threads)
                try:
                    with compiled_from(1):
                        got[threads] = oracle_fast.cross_entropy_fast(Problem(x, t, False, **kw))
                finally:
                    compiled.set_threads(saved)
            assert_bit_identical(got[1].loss, got[3].loss)
            assert_bit_identical(got[1].grad, got[3].grad)


def test_an_underflowing_upstream_times_weight_is_not_taken_for_zero():
    """s w_y below the smallest subnormal: not exactly 0, so not set to 0 structurally."""
    x = np.random.default_rng(0).normal(size=(3, 5))
    p = Problem(
        x,
        np.array([1, 2, 3]),
        False,
        reduction="none",
        grad_output=np.array([1e-300, 1.0, 0.0]),
        weight=np.full(5, 1e-300),
    )
    three_ways(p)


#: the NumPy path's values of the adversarial problems, which the tests below build once
#: per bound dtype: the values depend on the problem only, and their rows of NaN, infinities
#: and huge weights are settled in mpmath (most of these tests' time)
_VALUES: dict[tuple[bool, bytes], object] = {}


def _numpy_path_values(p: Problem, want_grad: bool = True):
    key = (want_grad, p.digest())
    if key not in _VALUES:
        with compiled_from(1 << 62):
            _VALUES[key] = oracle_fast.cross_entropy_fast(p, want_grad=want_grad)
    return _VALUES[key]


def bounds_two_ways(p: Problem, dtype: str, want_grad: bool = True, reuse: bool = False) -> None:
    """The NumPy bounds and the compiled ones: the same bits, loss and gradient. ``reuse``:
    the NumPy path's values of an equal problem computed before are taken again."""
    with compiled_from(1 << 62):
        if reuse:
            e = _numpy_path_values(p, want_grad)
        else:
            e = oracle_fast.cross_entropy_fast(p, want_grad=want_grad)
        want = error_bounds(p, dtype, e.loss, e.grad)
    with compiled_from(1):
        assert RowBounds(p, dtype).compiled == (p.logits.size > 0)
        got = error_bounds(p, dtype, e.loss, e.grad)
    assert_bit_identical(want.loss, got.loss)
    assert_bit_identical(want.grad, got.grad)


@SETTINGS
@given(index_problems(), st.sampled_from(DTYPES), st.booleans())
def test_compiled_bounds_are_bit_identical_to_numpy(p, dtype, want_grad):
    if p.kernel or p.dialect.ignored_rows != "kept":
        return  # not the compiled kernels' problems
    bounds_two_ways(p, dtype, want_grad)


def _adversarial_rows(rng: np.random.Generator, classes: int, scale: float):
    """12 rows of ``classes`` Gaussian logits times ``scale``, with a NaN (row 1), a +inf
    (row 2), a row of only -inf (3) and one -inf at every third class (4); targets drawn
    next, rows 0 and 6 ignored."""
    x = rng.normal(size=(12, classes)) * scale
    x[1, 5] = np.nan
    x[2, 7] = np.inf
    x[3, :] = -np.inf
    x[4, ::3] = -np.inf
    t = rng.integers(0, classes, 12)
    t[[0, 6]] = -100
    return x, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_compiled_bounds_on_wide_adversarial_rows(dtype, reduction):
    """Rows longer than NumPy's pairwise-summation blocks, with NaN, +-inf, rows of only
    -inf, ignored rows and zero, huge, NaN and infinite weights."""
    rng = np.random.default_rng(11)
    x, t = _adversarial_rows(rng, 1000, 30.0)
    x[5, :] = 3.5e38
    kw = {"reduction": reduction}
    if reduction == "none":
        kw["grad_output"] = rng.normal(size=12)
    for x_dtype in (np.float32, np.float64):
        with np.errstate(over="ignore"):
            xs = x.astype(x_dtype)
        for weight in (None, rng.uniform(0, 2, 1000), np.zeros(1000)):
            bounds_two_ways(Problem(xs, t, False, weight=weight, **kw), dtype, reuse=True)
        w = rng.uniform(0, 2, 1000)
        w[t[7]], w[t[8]], w[t[9]] = np.nan, np.inf, 1e300
        bounds_two_ways(Problem(xs, t, False, weight=w, **kw), dtype, reuse=True)


def test_exact_powers_of_two_and_underflowing_products():
    """Entries that are powers of two (ties: p = 1/C exactly, the ulp below is half the ulp
    above), gradients near the smallest certified magnitude (the errors of their products
    underflow: the fused multiply-add and the splitting product must both stay within the
    bound) and rows whose exponentials reach the tiny threshold."""
    rng = np.random.default_rng(5)
    x = np.zeros((6, 64))
    x[1, :8] = 5.0  # eight tied maxima: p = 1/8 on them
    x[2] = np.arange(64) * -12.0  # exponentials from 1 down to exp(-756)
    x[3] = rng.normal(size=64) * 200.0
    x[4, ::2] = -1e300
    x[5] = rng.normal(size=64)
    t = np.array([3, 0, 63, 10, 1, 7])
    for scale in (1.0, 2.0**-880, 1e-300, 2.0**-1000):
        for x_dtype in (np.float64, np.float32):
            with np.errstate(over="ignore"):
                xs = x.astype(x_dtype)
            three_ways(
                Problem(xs, t, False, reduction="none", grad_output=np.full(6, scale)),
            )
            three_ways(Problem(xs, t, False, weight=np.full(64, scale), reduction="sum"))


def _adversarial_pairs(rng: np.random.Generator, trial: int) -> tuple:
    """(got, expected, bound) blocks of (5, 300): within or just beyond their bound, exact
    matches, zeros, subnormals, ties to the allowed difference, NaN and infinities."""
    n, c = 5, 300
    e = rng.normal(size=(n, c)) * 10.0 ** rng.integers(-300, 3)
    b = np.abs(e) * 2.0**-24 + rng.choice([0.0, 1e-320, 1e-30])
    g = e + rng.normal(size=(n, c)) * b * rng.choice([0.0, 0.5, 3.0, 4.0])
    kind = trial % 8
    if kind == 1:  # exact matches where nothing is allowed, and at expected 0 (0/0)
        e[0, :50] = 0.0
        g[0, :50] = 0.0
        b[0, :100] = 0.0
        g[0, 50:100] = e[0, 50:100]
    elif kind == 2:  # subnormal values, differences and bounds
        e[1] = rng.normal(size=c) * 1e-310
        g[1] = e[1] + 5e-324 * rng.integers(-3, 4, c)
        b[1] = 5e-324 * rng.integers(0, 3, c)
    elif kind == 3:  # differences exactly at the allowed one (4 x bound), and one beyond
        b[2] = np.abs(rng.normal(size=c)) * 2.0**-30
        g[2] = e[2] + 4.0 * b[2]
        exact = (g[2] - e[2]) == 4.0 * b[2]
        g[2] = np.where(exact, g[2], e[2])
        if trial % 16 == 3:
            g[2, 7] = np.nextafter(e[2, 7] + 4.0 * b[2, 7], np.inf)
    elif kind == 4:
        e[3, 5] = np.nan
    elif kind == 5:
        g[4, 9] = np.inf
        e[4, 9] = np.inf  # the same infinity: not the common case (compare decides)
    elif kind == 6:
        g[1, 1] = -g[1, 1] * 1e300  # a difference that overflows
    return g, e, b


@pytest.mark.parametrize("got_dtype", [np.float64, np.float32])
def test_compiled_comparison_is_compares_common_case(got_dtype):
    """``within`` (and the comparison in ``bound_compare``) says "every pair finite and
    within" exactly when ``compare`` takes its common case, with the same maxima bit for bit
    (NaN 0/0 ratios, ties to the bound, subnormals, widened tolerances)."""
    from harness.execution import compare as cmp
    from harness.oracle import _kernel

    rng = np.random.default_rng(3)
    seen = set()
    for trial in range(96):
        g, e, b = _adversarial_pairs(rng, trial)
        with np.errstate(over="ignore"):
            g = g.astype(got_dtype)
        rtol, atol = [(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-9), (1e-6, 1e-300)][trial % 4]
        want = cmp._all_finite_and_within(g.reshape(-1), e.reshape(-1), b.reshape(-1),
                                          "float32", rtol, atol)  # fmt: skip
        stats = np.zeros((e.shape[0], 5))
        _kernel.within(g, e, b, np.array([cmp.THRESHOLD, rtol, atol]), stats)
        ok = bool(stats[:, 0].all())
        seen.add(ok)
        assert ok == (want is not None), trial
        if want is None:
            continue
        maxima = stats[:, 1:].max(axis=0)
        got = (maxima[0], maxima[1], maxima[0] / cmp.scalar_ulp(maxima[3], "float32"), maxima[2])
        assert (
            np.array([*got]).tobytes()
            == np.array([want.max_abs, want.max_rel, want.max_ulp, want.max_ratio]).tobytes()
        ), trial
    assert seen == {True, False}


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fused_bound_and_comparison_is_the_two_passes(dtype, reduction):
    """``RowBounds.compare_rows`` (one compiled pass, the bound never stored) gives what the
    bound rows, ``grad_bound`` and ``within`` give, bit for bit, and keeps the same loss
    terms; adversarial rows (NaN, +-inf, only -inf, ignored) and adapters a little off."""
    from harness.oracle import _kernel

    rng = np.random.default_rng(12)
    x, t = _adversarial_rows(rng, 700, 20.0)
    kw: dict = {"reduction": reduction}
    if reduction == "none":
        kw["grad_output"] = rng.normal(size=12)
    for x_dtype in (np.float32, np.float64):
        for weight in (None, rng.uniform(0, 2, 700)):
            p = Problem(x.astype(x_dtype), t, False, weight=weight, **kw)
            with compiled_from(1):
                e = oracle_fast.cross_entropy_fast(p).grad
                for off in (0.0, 1e-7, 1e-3):
                    got = (e * (1 + off)).astype(np.float32 if dtype != "float64" else e.dtype)
                    skip = np.zeros(12, bool)
                    skip[[5, 9]] = True
                    two, one = RowBounds(p, dtype), RowBounds(p, dtype)
                    bound = two.grad_bound(two.rows(0, 12).copy(), e)
                    want = np.zeros((12, 5))
                    tol = np.array([4.0, 1e-6 if off else 0.0, 0.0])
                    _kernel.within(got, e, bound, tol, want)
                    stats = one.compare_rows(0, 12, e, got, skip, tol[1], tol[2])
                    assert stats is not None
                    want[skip] = 0.0
                    assert stats.tobytes() == want.tobytes()
                    for name in ("per_pos_d", "per_pos_c", "per_pos_abs", "per_pos_a"):
                        assert getattr(one, name).tobytes() == getattr(two, name).tobytes()


def test_the_row_kernel_takes_the_faster_thread_count():
    """``ThreadChoice``: all threads first, each count timed once (the first block, which may
    load the kernel, not counted), then the faster one, the other retried now and then."""
    choice = compiled.ThreadChoice()
    picks = []
    for block in range(40):
        k = choice._pick(2)
        picks.append(k)
        if block > 0:
            choice.seconds[k] = {1: 1.0, 2: 3.0}[k]  # one thread the faster, as on a busy core
        choice.blocks += 1
    assert picks[:3] == [2, 2, 1]
    assert picks[3:16] == [1] * 13 and picks[16] == 2 and picks[17:32] == [1] * 15
    assert compiled.ThreadChoice()._pick(1) == 1


def _one_table_exp(
    x: np.ndarray, m: float, exact: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """``_exp_tile_fast``'s exp(x - m) (0 below -600) of a 1-D ``x``, tile by tile, and how
    many were below -600 (``exact``: every x - m exact, as for float32 logits of a narrow
    span of exponents)."""
    from harness.oracle import _kernel

    tab1, red = oracle_fast.one_table_exp()
    eh, el = np.empty(x.size), np.empty(x.size)
    tile = np.empty((5, _kernel._TILE))
    n_tiny = 0
    for j0 in range(0, x.size, _kernel._TILE):
        j1 = min(x.size, j0 + _kernel._TILE)
        n_tiny += _kernel._exp_tile_fast(x, j0, j1, m, exact, tab1, red, eh, el, tile)
    return eh, el, n_tiny


def test_the_one_table_exp_is_within_its_stated_bound():
    """``_exp_tile_fast`` against mpmath: relative error below EPS_EXP_FAST at the edges of
    its argument reduction (|r| largest: arguments half a step ln2/4096 from a multiple of
    it), over -600..0, near -600 (where the low part's scaling underflows), with a low part
    (a float64 maximum whose x - m is not exact) and for float32 logits."""
    import mpmath

    from harness.oracle.bounds import EPS_EXP_FAST, TINY_D

    rng = np.random.default_rng(21)
    step = math.log(2) / 4096
    k = -rng.integers(0, 600 / step, 600)
    edges = (k + rng.choice([-0.5, 0.5], k.size)) * step
    edges = edges * (1 + rng.integers(-4, 5, k.size) * 2.0**-52)  # a few ulps either side
    d = np.concatenate([
        edges[(edges <= 0) & (edges >= TINY_D)], rng.uniform(TINY_D, 0, 600),
        TINY_D + rng.uniform(0, 1e-3, 100), -np.logspace(-300, 2.7, 100), [0.0, TINY_D],
    ])  # fmt: skip
    for m in (0.0, 123.456789012345678, -1e-7 * math.pi):
        x = d + m
        dh = x - m
        eh, el, n_tiny = _one_table_exp(x, m)
        assert n_tiny == np.count_nonzero(dh < TINY_D)
        with mpmath.workprec(200):
            for i in np.nonzero(dh >= TINY_D)[0]:
                v = mpmath.exp(mpmath.mpf(x[i]) - mpmath.mpf(m))
                assert abs((mpmath.mpf(eh[i]) + mpmath.mpf(el[i])) / v - 1) < EPS_EXP_FAST, x[i]
    x32 = (rng.normal(size=3000) * 100).astype(np.float32)
    x32[x32 == 0] = 1.0
    m32 = float(x32.max())
    span = np.ptp(np.frexp(x32.astype(np.float64))[1])
    # the kernel's rows are float64: float32 logits convert to them exactly
    eh, el, _ = _one_table_exp(x32.astype(np.float64), m32, exact=bool(span <= 28))
    with mpmath.workprec(200):
        for i in np.nonzero(x32.astype(np.float64) - m32 >= TINY_D)[0]:
            v = mpmath.exp(mpmath.mpf(float(x32[i])) - mpmath.mpf(m32))
            assert abs((mpmath.mpf(eh[i]) + mpmath.mpf(el[i])) / v - 1) < EPS_EXP_FAST
    assert np.all(eh[x32.astype(np.float64) - m32 < TINY_D] == 0)


@pytest.mark.parametrize("classes", [1, 511, 512, 513, 1537])
def test_rows_of_any_width_and_of_tiny_exponentials(classes):
    """Widths around the kernel's tile (512 logits: full tiles are summed as trees, the rest
    in order) with rows whose exponentials are mostly below exp(-600), ordinary rows and
    float64 rows with low parts (x - max not exact)."""
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(4, classes)) * 3
    x[1] = -np.arange(classes) * 7.0  # from exp(0) down to far below exp(-600)
    x[2] = x[2] * 1e-9 + 1e-300  # the maximum tiny, the rest far from it in exponent
    x[3] = 1e5 + rng.normal(size=classes) * 300  # float64 low parts
    t = rng.integers(0, classes, 4)
    for x_dtype in (np.float64, np.float32):
        p = Problem(x.astype(x_dtype), t, False, reduction="none", grad_output=rng.normal(size=4))
        three_ways(p)


def test_rounding_ties_go_to_mpmath_after_the_precise_exponential():
    """Gradient entries exactly halfway between two float64 (equal logits, 2**k classes: p =
    2**-k; w (1 + 2**-30) times grad_output (1 + 2**-23) needs 54 bits) are certified by
    neither exponential: the row is computed again with the precise one, then in mpmath; rows
    beside it are not."""
    x = np.zeros((3, 1024))
    x[1] = np.random.default_rng(4).normal(size=1024)
    t = np.array([5, 6, 7])
    p = Problem(
        x, t, False, reduction="none", weight=np.full(1024, 1 + 2.0**-30),
        grad_output=np.array([1 + 2.0**-23, 1.0, 1.0]),
    )  # fmt: skip
    before = dict(oracle_fast.stats)
    three_ways(p)
    # three_ways runs the kernel once: row 0 alone is tried twice and settled in mpmath
    # (by the NumPy path too, whose count this includes)
    assert oracle_fast.stats["rows_precise"] - before["rows_precise"] == 1
    assert oracle_fast.stats["rows_mpmath"] - before["rows_mpmath"] == 2


def test_the_precise_exponential_gives_the_same_values():
    """A row computed with the precise exponential (the kernel's second try) gives the bits
    of the first try where both certify every value: rows of narrow to wide spreads."""
    from harness.oracle import _kernel

    rng = np.random.default_rng(8)
    n, c = 6, 2000
    x = rng.normal(size=(n, c)) * np.array([1.0, 10.0, 60.0, 1e-6, 0.1, 30.0])[:, None]
    y = rng.integers(0, c, n)
    (t1h, t1l, t2h, t2l), pieces, inv = oracle_fast._tables()
    tab = np.stack([t1h, t1l, t2h, t2l])
    tab1, red = oracle_fast.one_table_exp()
    out = {}
    for fast in (True, False):
        loss, grad, bad = np.zeros((n, 3)), np.zeros((n, c)), np.zeros(n, bool)
        eh, el, tile = np.empty(c), np.empty(c), np.empty((5, _kernel._TILE))
        done = [
            _kernel._row(i, x[i], False, y, -100, np.ones(c), np.ones(n), np.zeros(n), True,
                         False, tab, np.array(pieces), inv, tab1, red, fast, loss, grad, bad, eh,
                         el, tile)
            for i in range(n)
        ]  # fmt: skip
        assert done == [_kernel._DONE] * n and not bad.any()
        out[fast] = loss, grad
    assert out[True][1].tobytes() == out[False][1].tobytes()
    certified = oracle_fast._certified(*out[True][0].T) & oracle_fast._certified(*out[False][0].T)
    assert certified.all()
    assert out[True][0][:, 0].tobytes() == out[False][0][:, 0].tobytes()


def test_float32_rows_of_a_narrow_exponent_span_subtract_exactly():
    """The kernel leaves out the subtraction's TwoSum for float32 rows whose nonzero logits'
    binary exponents span at most 28 (``_scan``): there every x - max is exact in float64.
    Checked on rows of mixed magnitudes (subnormal float32 included), on both sides of 28."""
    from harness.oracle import _kernel

    rng = np.random.default_rng(13)
    seen = set()
    for trial in range(300):
        spread = rng.uniform(0, 45)
        x = rng.choice([-1.0, 1.0], 64) * 2.0 ** rng.uniform(-spread / 2, spread / 2, 64)
        x = (x * 2.0 ** rng.uniform(-140, 100)).astype(np.float32)
        x[rng.integers(0, 64, 3)] = 0.0
        # the kernel's rows are float64: float32 logits convert to them exactly
        m, finite, _, span = _kernel._scan(x.astype(np.float64), np.empty(_kernel._TILE))
        if not finite:
            continue
        assert m == x.max()
        _, lo = oracle_fast._two_sum(x.astype(np.float64), -m)
        if span <= 28:
            assert not lo.any(), trial
        seen.add(span <= 28)
    assert seen == {True, False}
