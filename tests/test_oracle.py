"""The oracle against hand computations (the seed article's formulas) and known identities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.oracle import cross_entropy
from harness.oracle.problem import Problem


def hand_loss(row, y):
    """The article's formula: -x[y] + log(sum_j exp(x[j]))."""
    return -row[y] + math.log(sum(math.exp(v) for v in row))


def test_article_single_row():
    x = np.array([[0.3, -1.2, 2.0, 0.7, -0.4]])
    r = cross_entropy(Problem(x, np.array([3]), False))
    assert float(r.loss) == pytest.approx(hand_loss(x[0], 3), rel=1e-15)


def test_article_batch_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5))
    y = np.array([1, 4, 0])
    r = cross_entropy(Problem(x, y, False))
    want = sum(hand_loss(x[i], y[i]) for i in range(3)) / 3
    assert float(r.loss) == pytest.approx(want, rel=1e-14)


def test_article_weighted_mean_divides_by_sum_of_target_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3))
    y = np.array([0, 2, 2, 1])
    w = np.array([0.5, 3.0, 1.5])
    r = cross_entropy(Problem(x, y, False, weight=w))
    want = sum(w[y[i]] * hand_loss(x[i], y[i]) for i in range(4)) / sum(w[y])
    assert float(r.loss) == pytest.approx(want, rel=1e-14)


def test_gradient_is_softmax_minus_onehot():
    x = np.array([[1.0, 2.0, 3.0]])
    r = cross_entropy(Problem(x, np.array([1]), False, reduction="sum"))
    p = np.exp(x) / np.exp(x).sum()
    p[0, 1] -= 1
    np.testing.assert_allclose(r.grad, p, rtol=1e-15)


def test_gradient_matches_finite_differences_with_smoothing_weights_and_ignore():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5))
    y = np.array([1, -100, 4, 0])
    w = rng.uniform(0.5, 2.0, size=5)
    kw = dict(weight=w, label_smoothing=0.3)
    r = cross_entropy(Problem(x, y, False, **kw))
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (
            float(cross_entropy(Problem(up, y, False, **kw), want_grad=False).loss)
            - float(cross_entropy(Problem(down, y, False, **kw), want_grad=False).loss)
        ) / (2 * h)
    np.testing.assert_allclose(r.grad, fd, atol=1e-8)
    assert np.all(r.grad[1] == 0.0)


def test_huge_logits_do_not_overflow():
    x = np.array([[1e300, 0.0, -1e300]])
    r = cross_entropy(Problem(x, np.array([0]), False))
    assert float(r.loss) == 0.0
    r = cross_entropy(Problem(x, np.array([1]), False))
    assert float(r.loss) == 1e300


def test_all_ignored_mean_is_nan_with_zero_gradient():
    x = np.array([[1.0, 2.0], [0.5, -0.5]])
    r = cross_entropy(Problem(x, np.array([-100, -100]), False))
    assert math.isnan(float(r.loss))
    assert np.all(r.grad == 0.0)


def test_probability_targets_equal_index_targets_for_one_hot():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4))
    y = np.array([3, 0, 2])
    onehot = np.eye(4)[y]
    a = cross_entropy(Problem(x, y, False, label_smoothing=0.2))
    b = cross_entropy(Problem(x, onehot, True, label_smoothing=0.2))
    assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-15)
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-14, atol=1e-17)


def test_kdim_equals_flattened():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 4))
    y = rng.integers(0, 3, size=(2, 4))
    a = cross_entropy(Problem(x, y, False, reduction="none"))
    flat = np.moveaxis(x, 1, -1).reshape(-1, 3)
    b = cross_entropy(Problem(flat, y.reshape(-1), False, reduction="none"))
    np.testing.assert_array_equal(a.loss.reshape(-1), b.loss)
    np.testing.assert_array_equal(np.moveaxis(a.grad, 1, -1).reshape(-1, 3), b.grad)


def test_non_finite_rules():
    ninf = -math.inf
    # -inf on a non-target class: finite loss; on the target: inf loss, finite gradient
    r = cross_entropy(Problem(np.array([[1.0, ninf, 3.0]]), np.array([0]), False))
    assert math.isfinite(float(r.loss))
    r = cross_entropy(Problem(np.array([[1.0, ninf, 3.0]]), np.array([1]), False))
    assert float(r.loss) == math.inf and np.all(np.isfinite(r.grad))
    # with smoothing any -inf logit makes the loss inf
    r = cross_entropy(
        Problem(np.array([[1.0, ninf, 3.0]]), np.array([0]), False, label_smoothing=0.1)
    )
    assert float(r.loss) == math.inf
    # a whole row of -inf: nan loss and nan gradient, even when ignored
    x = np.array([[ninf, ninf], [0.0, 1.0]])
    r = cross_entropy(Problem(x, np.array([-100, 1]), False))
    assert np.all(np.isnan(r.grad[0])) and np.all(np.isfinite(r.grad[1]))


def test_streaming_oracle_agrees_with_exact():
    from harness.oracle.stream import cross_entropy_streaming

    rng = np.random.default_rng(5)
    x = rng.normal(scale=3.0, size=(6, 7, 2))
    y = rng.integers(0, 7, size=(6, 2))
    y[0, 0] = -100
    for kw in (
        dict(),
        dict(weight=rng.uniform(0.1, 2, 7), label_smoothing=0.1),
        dict(reduction="none"),
    ):
        p = Problem(x, y, False, **kw)
        a, b = cross_entropy(p), cross_entropy_streaming(p)
        np.testing.assert_allclose(b.loss, a.loss, rtol=1e-15)
        np.testing.assert_allclose(b.grad, a.grad, rtol=1e-13, atol=1e-17)


def test_smoothing_with_zero_total_weight_reduces_terms_separately():
    # PyTorch: (1 - eps) * (0 / 0) + eps / C * (s / 0) = nan, not the inf of (sum / 0)
    x = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    p = Problem(x, np.array([0, 0]), False, weight=np.array([0.0, 1.0, 1.0]), label_smoothing=0.25)
    assert math.isnan(float(cross_entropy(p).loss))


def test_remembered_exponentials_are_mpmath_s_at_each_precision():
    """The reference keeps its exponentials (``exact._exp``): a value seen at one precision
    is not given back at another, equal numbers share one entry, NaN is never kept."""
    import mpmath

    from harness.oracle import exact

    x = mpmath.mpf(1) / 3  # at 53 bits: the float64 nearest 1/3
    with mpmath.workprec(53):
        assert exact._exp(x) == mpmath.exp(x)
    with mpmath.workprec(200):
        precise = exact._exp(x)
        assert precise == mpmath.exp(x) and precise != mpmath.mpf(float(precise))
        third = exact._exp(mpmath.mpf(1) / 3)  # another number: 1/3 to 200 bits
        assert third == mpmath.exp(mpmath.mpf(1) / 3) != precise
        assert exact._exp(mpmath.mpf(2) / 6) is third  # the same number, made another way
        assert mpmath.isnan(exact._exp(mpmath.mpf("nan")))
        assert exact._exp(mpmath.mpf("-inf")) == 0 and exact._exp(mpmath.mpf("inf")) == mpmath.inf
