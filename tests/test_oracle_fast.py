"""The fast oracle (double-double NumPy with error bounds, mpmath where undecided)
against the 200-bit mpmath oracle: bit-identical results on random and adversarial inputs.

``LOSSCONF_ORACLE_EXAMPLES`` raises the number of hypothesis examples per test
(the default keeps this file to a few seconds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.oracle import cross_entropy
from harness.oracle import fast as oracle_fast
from harness.oracle.dialect import DIALECTS, Dialect
from harness.oracle.exact import cross_entropy_mpmath
from harness.oracle.problem import Problem

EXAMPLES = int(os.environ.get("LOSSCONF_ORACLE_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize="LOSSCONF_ORACLE_EXAMPLES" not in os.environ,
)


def assert_bit_identical(a: np.ndarray | None, b: np.ndarray | None) -> None:
    """Same shape, same values (NaN equal to NaN) and the same sign on every zero."""
    if a is None or b is None:
        assert a is None and b is None
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype == np.float64
    assert np.array_equal(a, b, equal_nan=True), (a, b)
    zero = a == 0
    assert np.array_equal(np.signbit(a[zero]), np.signbit(b[zero])), "signed zero differs"


def check(p: Problem, want_grad: bool = True) -> None:
    want = cross_entropy_mpmath(p, want_grad=want_grad)
    got = cross_entropy(p, want_grad=want_grad)
    assert_bit_identical(want.loss, got.loss)
    assert_bit_identical(want.grad, got.grad)
    assert_bit_identical(want.z_loss, got.z_loss)


@contextlib.contextmanager
def blocks_of(elements: int):
    """The fast oracle working in blocks of ``elements`` logits (column blocks of wide rows)."""
    saved = oracle_fast.CHUNK_ELEMENTS
    oracle_fast.CHUNK_ELEMENTS = elements
    try:
        yield
    finally:
        oracle_fast.CHUNK_ELEMENTS = saved


# ---------------------------------------------------------------- strategies
SPECIALS = [-math.inf, math.inf, math.nan, 5e-324, -2.5e-310, 0.0, -0.0]


@st.composite
def logits(draw, shape):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(
        st.sampled_from(["normal", "float32", "wide", "huge", "ties", "confident", "subnormal"])
    )
    scale = {"normal": 3.0, "float32": 1e8, "wide": 300.0, "huge": 1e300}.get(kind, 1.0)
    x = rng.normal(size=shape) * scale
    if kind == "float32":
        x = np.clip(x, -3e38, 3e38).astype(np.float32).astype(np.float64)
    elif kind == "ties":
        x = np.round(x * 2) / 2
    elif kind == "subnormal":
        x = x * 1e-310
    if kind == "confident" or draw(st.booleans()):
        # one class far above the rest: p_y > 0.99999 for it
        cls = rng.integers(0, shape[1], size=(shape[0], *shape[2:]))
        np.put_along_axis(x, np.expand_dims(cls, 1), draw(st.sampled_from([12.0, 40.0, 745.0])), 1)
    for _ in range(draw(st.integers(0, 2))):
        idx = tuple(int(rng.integers(0, s)) for s in shape)
        x[idx] = draw(st.sampled_from(SPECIALS))
    if draw(st.integers(0, 9)) == 0:
        x[0] = -math.inf  # a whole row of -inf
    return x


@st.composite
def problems(draw, max_classes: int = 6, dialect: Dialect | None = None):
    """Problems of every shape, target kind and option; under ``dialect``, or one drawn."""
    c = draw(st.integers(1, max_classes))
    layout = draw(st.sampled_from(["unbatched", "batch", "kdim", "empty"]))
    n = draw(st.integers(1, 4))
    if layout == "unbatched":
        shape = (c,)
    elif layout == "batch":
        shape = (n, c)
    elif layout == "kdim":
        shape = (n, c, *draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    else:
        shape = draw(st.sampled_from([(0, c), (2, c, 0)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if layout == "empty":
        x = np.zeros(shape)
    elif layout == "unbatched":
        x = draw(logits((1, c))).reshape(c)
    else:
        x = draw(logits(shape))
    probability = draw(st.booleans())
    pos_shape = () if len(shape) == 1 else (shape[0], *shape[2:])
    kw: dict = {}
    if draw(st.booleans()):
        w = rng.normal(size=c) * draw(st.sampled_from([1.0, 1e-3, 1e5]))
        if draw(st.booleans()):
            w = np.abs(w)
        if draw(st.booleans()):
            w[rng.integers(0, c)] = 0.0
        kw["weight"] = w
    kw["label_smoothing"] = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 1e-9, 0.3333]))
    kw["reduction"] = draw(st.sampled_from(["none", "sum", "mean"]))
    if probability:
        t = rng.random(size=shape)
        mode = draw(st.sampled_from(["normalised", "unnormalised", "negative", "onehot"]))
        if mode == "normalised":
            t = t / np.maximum(t.sum(axis=1 if len(shape) > 1 else 0, keepdims=True), 1e-300)
        elif mode == "negative":
            t = t - 0.6
        elif mode == "onehot":
            t = (t == t.max(axis=1 if len(shape) > 1 else 0, keepdims=True)).astype(np.float64)
    else:
        t = rng.integers(0, c, size=pos_shape)
        if draw(st.booleans()) and t.size:
            ignore = draw(st.sampled_from([-100, 0, -3]))
            kw["ignore_index"] = ignore
            flat = t.reshape(-1)
            flat[rng.random(flat.size) < 0.4] = ignore
            if draw(st.integers(0, 4)) == 0:
                flat[:] = ignore
    if kw["reduction"] == "none" and draw(st.booleans()):
        u = rng.normal(size=pos_shape) * draw(st.sampled_from([1.0, 1e-20, 1e20]))
        if draw(st.booleans()) and u.size:
            u.reshape(-1)[0] = draw(st.sampled_from([0.0, -0.0, math.inf, math.nan]))
        kw["grad_output"] = u
    kw["dialect"] = dialect or draw(st.sampled_from(list(DIALECTS.values())))
    return Problem(x, t, probability, **kw)


@st.composite
def kernel_problems(draw, max_classes: int = 6):
    """``problems`` with the kernel authors' fields: softcap, logit_scale, z_loss, return_z_loss
    (caps from tight to loose: |a x / s| beyond 300 has a sech**2 below exp(-600))."""
    p = draw(problems(max_classes))
    return dataclasses.replace(
        p,
        softcap=draw(st.sampled_from([None, 30.0, 1.0, 1e-3, 5e4])),
        logit_scale=draw(st.sampled_from([1.0, 1.0, 0.125, 3.0, 1e-9])),
        z_loss=draw(st.sampled_from([0.0, 1e-4, 0.5, 3.0])),
        return_z_loss=draw(st.booleans()),
    )


# ---------------------------------------------------------------- properties
@SETTINGS
@given(problems())
def test_fast_oracle_is_bit_identical_to_mpmath(p):
    check(p)


@SETTINGS
@given(kernel_problems())
def test_kernel_fields_are_bit_identical_to_mpmath(p):
    check(p)


@SETTINGS
@given(kernel_problems(max_classes=7), st.integers(1, 5))
def test_kernel_fields_in_column_blocks(p, chunk):
    with blocks_of(chunk):
        check(p, want_grad=chunk % 2 == 1)


@SETTINGS
@given(problems(max_classes=3))
def test_loss_only_is_bit_identical_to_mpmath(p):
    check(p, want_grad=False)


@pytest.mark.parametrize("name", sorted(DIALECTS))
@SETTINGS
@given(data=st.data())
def test_fast_oracle_is_bit_identical_to_mpmath_under_each_dialect(name, data):
    # the dialect changes the weighting and the reduction in both oracles alike
    check(data.draw(problems(dialect=DIALECTS[name])))


@SETTINGS
@given(problems(max_classes=7), st.integers(1, 5))
def test_column_blocks_give_the_same_values(p, chunk):
    """Rows wider than a block are processed in column blocks: the same values."""
    with blocks_of(chunk):
        check(p)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.2]), st.sampled_from(["none", "mean"]))
def test_near_rounding_boundaries_fall_back_and_agree(seed, smoothing, reduction):
    """Logits whose loss lies within 2**-60 of a float64 rounding boundary."""
    rng = np.random.default_rng(seed)
    c = 4
    x = rng.normal(size=(3, c))
    t = rng.integers(0, c, size=3)
    exact = cross_entropy_mpmath(Problem(x, t, False, reduction="none"), want_grad=False)
    # shift the target logit by a multiple of the loss's ulp: ties and near-ties
    for n in range(3):
        ulp = math.ulp(float(exact.loss[n]))
        x[n, t[n]] -= ulp * rng.integers(0, 3) / 2
    check(Problem(x, t, False, reduction=reduction, label_smoothing=smoothing))


def test_ordinary_inputs_never_need_mpmath():
    rng = np.random.default_rng(0)
    before = dict(oracle_fast.stats)
    for kw in (
        dict(),
        dict(weight=rng.uniform(-1, 2, 50), reduction="sum"),
        dict(label_smoothing=0.1, reduction="none", grad_output=rng.normal(size=64)),
    ):
        for probability in (False, True):
            x = rng.normal(size=(64, 50)) * 3
            t = rng.dirichlet(np.ones(50), size=64) if probability else rng.integers(0, 50, 64)
            check(Problem(x, t, probability, **kw))
    assert oracle_fast.stats["rows_mpmath"] == before["rows_mpmath"]
    assert oracle_fast.stats["whole_mpmath"] == before["whole_mpmath"]


def test_ordinary_kernel_inputs_never_need_mpmath():
    """Gemma-style softcaps, a logit scale and z-loss on ordinary logits: all in double-double."""
    rng = np.random.default_rng(2)
    before = dict(oracle_fast.stats)
    for kw in (
        dict(softcap=30.0),
        dict(softcap=30.0, z_loss=1e-4, return_z_loss=True, reduction="sum"),
        dict(logit_scale=0.5, z_loss=1e-4, label_smoothing=0.1, weight=rng.uniform(0, 2, 50)),
        dict(softcap=2.0, reduction="none", z_loss=0.1, return_z_loss=True),
    ):
        for probability in (False, True):
            x = rng.normal(size=(64, 50)) * 8
            t = rng.dirichlet(np.ones(50), size=64) if probability else rng.integers(0, 50, 64)
            check(Problem(x, t, probability, **kw))
    assert oracle_fast.stats["rows_mpmath"] == before["rows_mpmath"]
    assert oracle_fast.stats["whole_mpmath"] == before["whole_mpmath"]


def test_large_classes_and_chunking(monkeypatch):
    """Wide float32 rows (C = 6000) in blocks of 700 columns give the mpmath values."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2, 6000)) * 4).astype(np.float32)
    t = rng.integers(0, 6000, size=2)
    p = Problem(x.astype(np.float64), t, False, label_smoothing=0.05)
    want = cross_entropy_mpmath(p)
    monkeypatch.setattr(oracle_fast, "CHUNK_ELEMENTS", 700)
    got = cross_entropy(Problem(x, t, False, label_smoothing=0.05))  # float32 carrier
    assert_bit_identical(want.loss, got.loss)
    assert_bit_identical(want.grad, got.grad)


def test_exp_and_log_are_within_their_stated_bounds():
    import mpmath

    rng = np.random.default_rng(2)
    a = np.concatenate([rng.uniform(-600, 1, 400), -np.logspace(-300, 2.7, 100), [0.0, -600.0]])
    al = np.where(np.abs(a) > 1e-290, a * rng.uniform(-(2**-53), 2**-53, a.size), 0.0)
    ah, al = oracle_fast._two_sum(a, al)
    eh, el = oracle_fast._exp_dd(ah, al)
    z = 1 + rng.random(300) * rng.choice([1e-15, 1.0, 1e5], 300)
    lh, ll, lerr = oracle_fast._log_dd(z, np.zeros_like(z))
    with mpmath.workprec(200):
        for i in range(a.size):
            v = mpmath.exp(mpmath.mpf(ah[i]) + mpmath.mpf(al[i]))
            assert abs((mpmath.mpf(eh[i]) + mpmath.mpf(el[i])) / v - 1) < oracle_fast.EPS_EXP
        for i in range(z.size):
            v = mpmath.log(mpmath.mpf(z[i]))
            assert abs(mpmath.mpf(lh[i]) + mpmath.mpf(ll[i]) - v) < lerr[i]


@pytest.mark.parametrize(
    "x, t, kw",
    [
        ([[1e300, 0.0, -1e300]], [1], {}),
        ([[1.7e308, -1.7e308, 0.0]], [1], {}),  # x - max overflows float64
        ([[0.0, -800.0, -1e8]], [0], dict(reduction="none")),  # p far below float64 range
        ([[0.0, -800.0, -1e8]], [0], dict(label_smoothing=0.5)),
        ([[3.0, 3.0, 3.0]], [2], dict(label_smoothing=1.0)),  # gradient exactly 0
        ([[1.0, -math.inf, 2.0], [0.0, 1.0, 2.0]], [1, 0], dict(reduction="sum")),
        ([[1.0, 2.0]], [0], dict(weight=np.array([1e-310, 1.0]))),
        ([[1.0, 2.0], [2.0, 1.0]], [0, 1], dict(weight=np.array([1.0, -1.0]))),  # 0 total weight
        ([[1.0, 2.0], [2.0, 1.0]], [0, 1], dict(weight=np.array([1e300, 1e-300]))),
        ([[5.0]], [0], dict(reduction="none")),  # one class: loss exactly 0
        # exact midpoints between two float64 (3 (1 + 2**-52) needs 54 bits): ties to even
        (
            [[1.0, -math.inf, 2.0], [0.0, 0.0, -math.inf]],
            [1, 0],
            dict(
                reduction="none",
                weight=np.array([3.0, 3.0, 1.0]),
                grad_output=np.array([1 + 2.0**-52] * 2),
            ),
        ),
    ],
)
def test_adversarial_examples(x, t, kw):
    check(Problem(np.array(x, dtype=np.float64), np.array(t), False, **kw))


def test_rounding_test_accepts_only_values_whose_interval_rounds_to_one_float():
    """The Ziv test itself: decided only when every number within the bound rounds to h."""
    cert = oracle_fast._certified
    for h in (1.0, -1.0, 1.5, 2.0**-500, -(2.0**300), 0.75):
        up = np.nextafter(h, np.inf) - h
        down = h - np.nextafter(h, -np.inf)  # half of up at a power of two above 0
        hh = np.array([h] * 8)
        lo = np.array(
            [0.0, 0.49 * up, 0.49 * up, -0.49 * down, -0.49 * down, 0.5 * up, -0.5 * down, 0.0]
        )
        err = np.array(
            [
                0.4 * min(up, down),
                0.009 * up,
                0.02 * up,
                0.009 * down,
                0.02 * down,
                0.0,
                0.0,
                np.nan,
            ]
        )
        assert cert(hh, lo, err).tolist() == [
            True,
            True,
            False,
            True,
            False,
            False,
            False,
            False,
        ], h
    # zero, subnormal, huge and non-finite values are never decided here
    for h in (0.0, 5e-324, 2.0**-1000, 1.7e308, np.inf, np.nan):
        assert not cert(np.array([h]), np.array([0.0]), np.array([0.0]))[0]


@pytest.mark.parametrize(
    "weights",
    [
        [0.5, 3.0, 1.0e-3],  # a few bits apart: the per-class sum of the denominator
        [1.0e-300, 1.0, 3.7e5],  # spread beyond 200 bits: the sequence of additions
        [0.1, -2.5, 0.0],  # negative and zero weights
    ],
)
def test_weighted_mean_denominator_over_many_positions(weights: list[float]) -> None:
    """The ``mean``'s divisor over thousands of targets, summed per class where every
    partial sum is exact, is the mpmath oracle's sequential sum, bit for bit."""
    rng = np.random.default_rng(7)
    n = 3000
    target = rng.integers(0, 3, n)
    target[::7] = -100
    p = Problem(rng.normal(size=(n, 3)), target, False, weight=np.array(weights), reduction="mean")
    check(p)
    used = np.array([w for w in weights if w != 0])
    assert oracle_fast._sums_exactly(used, n) is (weights[0] != 1.0e-300)


def test_sums_exactly_counts_the_bits() -> None:
    """The test's arithmetic at its edge: log2(terms) + the exponents' spread + 54 bits."""
    assert oracle_fast._sums_exactly(np.array([1.0, 2.0**-140]), 4)  # 2 + 141 + 54 = 197
    assert not oracle_fast._sums_exactly(np.array([1.0, 2.0**-146]), 4)  # 2 + 147 + 54 = 203
    assert not oracle_fast._sums_exactly(np.array([1.0, np.inf]), 4)
    assert oracle_fast._sums_exactly(np.array([]), 4)


def test_exp_tables_are_the_double_double_roundings_of_the_powers():
    """``_tables``' entries (built by repeated fixed-point products) are the double-double
    roundings of 2**(j/4096) and 2**(j/2**24) that mpmath's ``exp`` gives directly, at 300
    bits: every 7th entry and the last of each table."""
    import mpmath

    (t1h, t1l, t2h, t2l), pieces, inv = oracle_fast._tables()
    with mpmath.workprec(300):
        for step, hi, lo in ((mpmath.ln2 / 4096, t1h, t1l), (mpmath.ln2 / 2**24, t2h, t2l)):
            for j in [*range(0, 4096, 7), 4095]:
                v = mpmath.exp(j * step)
                h = float(v)
                assert (hi[j], lo[j]) == (h, float(v - h)), j
        assert inv == float(2**24 / mpmath.ln2)
        step = mpmath.ln2 / 2**24  # in four pieces: three of 19 bits, then a float64
        assert abs(mpmath.fsum([mpmath.mpf(p) for p in pieces]) - step) < step * 2.0**-100
