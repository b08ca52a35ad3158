"""The oracle: expected cross-entropy loss and gradient, independent of any framework.

The values are those of exact arithmetic on the float64 values of the (already
cast) inputs, correctly rounded to float64, at every size:

- ``cross_entropy_mpmath`` (this module) is the reference: 200-bit binary
  floating point with mpmath, logit differences formed exactly, every
  intermediate within about 2**-190 (relative) of its exact value, rounded to
  float64 once at the end (10 to 20 us per logit);
- ``cross_entropy`` computes the same values in vectorised double-double
  NumPy arithmetic with an error bound per value (``harness.oracle.fast``) and
  recomputes, with this module's code, each position whose bound does not
  decide the rounding (Ziv's strategy): bit-identical to ``cross_entropy_mpmath``,
  about 0.1 to 0.2 us per logit on large cases.

``harness.oracle.stream`` is an opt-in float64 approximation kept for
comparison; nothing in the harness uses it.

Non-finite values follow PyTorch's IEEE arithmetic, which the suite conforms to:

- a row containing NaN or +inf, or made only of -inf, has log-probabilities NaN;
- a -inf logit has log-probability -inf, and probability 0;
- ``0 * -inf`` is NaN (a zero probability target on a -inf logit gives NaN);
- without label smoothing only the target's log-probability enters the loss;
- ignored positions contribute exactly 0 to the loss and to the upstream gradient,
  yet a NaN row still gives NaN gradients (``0 * nan``), as in PyTorch;
- a ``mean`` over zero total weight divides by zero (0/0 = NaN); with label
  smoothing the NLL and smoothing sums are divided separately, then mixed.

The kernel authors' fields (docs/kernel-features.md), here as in the fast path:
each logit x becomes z = s * tanh(a * x / s) (``logit_scale`` a, ``softcap`` s; z = a x
without a cap), formed at 200 bits, and the loss is that of z; each kept position adds
``z_loss`` * lse(z)**2, and a ``mean`` divides the sum of those terms by the number of
kept positions. The gradient w.r.t. x is dLoss/dz * dz/dx with dz/dx = a * sech(a x / s)**2
(exact at infinite x: 0). Under PyTorch's rules lse is NaN for a row holding NaN, +inf for
one holding +inf, -inf for a row of -inf only; a ``z_loss`` of 0 adds no term at all.

Shapes: logits (C,), (N, C) or (N, C, d1, ..., dK); class-index target (),
(N,) or (N, d1, ..., dK); probability target the shape of logits; weight (C,).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.oracle.lazy_mpmath import mpmath
from harness.oracle.problem import Expected, Problem

PRECISION_BITS = 200


def cross_entropy_mpmath(problem: Problem, *, want_grad: bool = True) -> Expected:
    """The reference: every value in 200-bit mpmath (10 to 20 us per logit), rounded once."""
    with mpmath.workprec(PRECISION_BITS):
        return _exact(problem, want_grad)


#: exponentials remembered (about 300 bytes each): the same rows recur in one process, in a
#: case's problems under each dtype's bound, dialect and weight, in an adapter's and the
#: reference's dialect, and in a problem's rows that several reductions share
EXP_CACHE = 1 << 16


def _exp(x):  # mpmath numbers: mpmath has no type stubs
    """mpmath's exp of ``x`` at the working precision (NaN, equal to nothing, is not kept)."""
    return _exp_at(mpmath.mp.prec, x._mpf_) if x == x else mpmath.exp(x)


@functools.lru_cache(maxsize=EXP_CACHE)
def _exp_at(prec: int, value: tuple):
    """``exp`` at ``prec`` bits (part of the key: the result is rounded to it) of the mpmath
    number whose normalised (sign, mantissa, exponent, bits) is ``value``: equal numbers have
    equal tuples, which hash in C where an mpmath number's own hash is Python code."""
    return mpmath.exp(mpmath.mp.make_mpf(value))


def mpf_row(values: np.ndarray) -> list:
    return [mpmath.mpf(float(v)) for v in values]


def log_softmax(x: list) -> list:
    """Log-probabilities of one row under PyTorch's non-finite rules."""
    return log_softmax_lse(x)[0]


def log_softmax_lse(x: list) -> tuple[list, object]:
    """Log-probabilities of one row and its log-sum-exp, under PyTorch's non-finite rules
    (lse: NaN with a NaN, +inf with a +inf, -inf for a row of -inf only)."""
    nan, ninf = mpmath.mpf("nan"), mpmath.mpf("-inf")
    if any(mpmath.isnan(v) for v in x):
        return [nan] * len(x), nan
    if any(v == mpmath.inf for v in x):
        return [nan] * len(x), mpmath.inf
    finite = [v for v in x if v != ninf]
    if not finite:
        return [nan] * len(x), ninf
    m = max(finite)
    # exact differences: x - m needs no rounding at any magnitude
    shifted = [mpmath.fsub(v, m, exact=True) if v != ninf else ninf for v in x]
    log_z = mpmath.log(mpmath.fsum(_exp(d) for d in shifted if d != ninf))
    return [d - log_z if d != ninf else ninf for d in shifted], m + log_z


def transform_row(p: Problem, x: list) -> tuple[list, list]:
    """The logits the loss sees, z = s tanh(a x / s) (or a x), and dz/dx, for one row."""
    a = mpmath.mpf(float(p.logit_scale))
    if p.softcap is None:
        return [a * v for v in x], [a] * len(x)
    s = mpmath.mpf(float(p.softcap))
    z, dz = [], []
    for v in x:
        u = a * v / s
        z.append(s * mpmath.tanh(u))
        # sech**2, not 1 - tanh**2: no cancellation where tanh is close to +-1
        dz.append(a * mpmath.sech(u) ** 2 if not mpmath.isnan(u) else mpmath.mpf("nan"))
    return z, dz


def z_term(p: Problem, lse, kept: bool):
    """The z-loss term of one position: z_loss * lse**2 (0 for an ignored one, or no z_loss)."""
    if not kept or p.z_loss == 0:
        return mpmath.mpf(0)
    return mpmath.mpf(float(p.z_loss)) * lse * lse


def _divide(num, den):
    """IEEE division in mpmath: x/0 is +-inf, 0/0 and nan/0 are NaN."""
    if den == 0:
        if num == 0 or mpmath.isnan(num):
            return mpmath.mpf("nan")
        return mpmath.mpf("inf") if num > 0 else mpmath.mpf("-inf")
    return num / den


def row_terms(p: Problem, lrow: list, target, w: list, eps, c: int):
    """One position's terms: ``(loss, nll, smooth, coeffs, weight)``.

    ``nll`` and ``smooth`` are None unless the target is a class index with label
    smoothing; ``coeffs`` is None for an ignored position; ``weight`` is what the
    position adds to the ``mean`` denominator.
    """
    if p.probability_target:
        y = mpf_row(target)
        if p.label_smoothing != 0:
            y = [(1 - eps) * v + eps / c for v in y]
        a = [w[j] * y[j] for j in range(c)]
        return -mpmath.fsum(a[j] * lrow[j] for j in range(c)), None, None, a, mpmath.mpf(1)
    label = int(target)
    if label == p.ignore_index:
        zero = mpmath.mpf(0)
        return zero, zero, zero, None, zero
    wy = w[label]
    loss = -wy * lrow[label]
    a = [mpmath.mpf(0)] * c
    a[label] = wy
    divisor = p.dialect.divisor_term(wy, mpmath.mpf(1))
    if p.label_smoothing == 0:
        return loss, None, None, a, divisor
    # the smoothing term's weights: one per class, or the target's for every class
    ws = [wy] * c if p.target_weighted else w
    smooth = -mpmath.fsum(ws[j] * lrow[j] for j in range(c))
    mixed = (1 - eps) * loss + eps / c * smooth
    a = [(1 - eps) * a[j] + eps / c * ws[j] for j in range(c)]
    return mixed, loss, smooth, a, divisor


def row_grad(p: Problem, a, lrow: list, scale, target, c: int) -> list[float]:
    """One position's gradient row, rounded to float64 (``a`` None: ignored)."""
    return [float(v) for v in row_grad_mp(p, a, lrow, scale, target, c)]


def row_grad_mp(p: Problem, a, lrow: list, scale, target, c: int) -> list:
    """One position's gradient row w.r.t. the logits the loss sees, unrounded."""
    if a is None and p.dialect.ignored_rows == "zeroed":
        return [mpmath.mpf(0)] * c  # the dialect replaces an ignored row's logits by zeros
    g = [mpmath.mpf(0)] * c if a is None else [-scale * aj for aj in a]
    if a is not None and not p.probability_target and p.label_smoothing == 0:
        # PyTorch writes the NLL gradient only at the target class
        label = int(target)
        g = [mpmath.mpf(0)] * c
        g[label] = -scale * a[label]
    g_sum = mpmath.fsum(g)
    return [g[j] - _exp(lrow[j]) * g_sum for j in range(c)]


@dataclass
class RowForward:
    """One position's forward values in mpmath: log-probabilities of the logits the loss sees,
    their lse, dz/dx (None without a transform), ``row_terms``'s terms, whether the position is
    kept (not ignored) and its z-loss term."""

    lrow: list
    lse: Any  # mpmath numbers: mpmath has no type stubs
    slope: list | None
    terms: tuple
    keep: bool
    z: Any


def row_forward(p: Problem, x_row: np.ndarray, target, w: list, eps, c: int) -> RowForward:
    """The forward pass of one position (``x_row``: its float64 logits)."""
    row = mpf_row(x_row)
    slope = None
    if p.transformed:
        row, slope = transform_row(p, row)
    lrow, lse = log_softmax_lse(row)
    terms = row_terms(p, lrow, target, w, eps, c)
    keep = p.probability_target or int(target) != p.ignore_index
    return RowForward(lrow, lse, slope, terms, keep, z_term(p, lse, keep))


def row_backward(p: Problem, f: RowForward, scale, z_scale, target, c: int) -> list:
    """One position's gradient row w.r.t. the logits x, unrounded: the cross-entropy part
    (``scale``: its factor), the z-loss part (``z_scale``: its factor), times dz/dx."""
    if not f.keep and p.dialect.ignored_rows == "zeroed":
        return [mpmath.mpf(0)] * c  # the dialect replaces an ignored row's logits by zeros
    g = row_grad_mp(p, f.terms[3], f.lrow, scale, target, c)
    if f.keep and p.z_loss != 0:
        # d(c lse**2)/dz_j = 2 c lse p_j
        k = 2 * mpmath.mpf(float(p.z_loss)) * f.lse * z_scale
        g = [g[j] + k * _exp(f.lrow[j]) for j in range(c)]
    if f.slope is not None:
        g = [g[j] * f.slope[j] for j in range(c)]
    return g


def _exact(p: Problem, want_grad: bool) -> Expected:
    x, t = p.rows()
    n_pos, c = x.shape
    eps = mpmath.mpf(float(p.label_smoothing))
    w = mpf_row(p.weight) if p.weight is not None else [mpmath.mpf(1)] * c
    upstream = p.upstream()

    rows = [row_forward(p, x[n], t[n], w, eps, c) for n in range(n_pos)]
    ce_pos = [f.terms[0] for f in rows]  # each position's cross-entropy (without z-loss)
    # index targets with smoothing: the NLL and smoothing terms of each position,
    # reduced separately and then mixed, as PyTorch does (it matters for 0/0)
    nll_pos = [f.terms[1] for f in rows if f.terms[1] is not None]
    smooth_pos = [f.terms[2] for f in rows if f.terms[2] is not None]
    z_pos = [f.z for f in rows]
    denominator = mpmath.mpf(0)
    for f in rows:
        denominator += f.terms[4]  # in order: harness.oracle.fast repeats these additions
    n_kept = mpmath.mpf(sum(f.keep for f in rows))

    z_out = None
    if p.reduction == "none":
        per_pos = [f.terms[0] + f.z if p.z_loss != 0 else f.terms[0] for f in rows]
        loss_out = np.array([float(v) for v in per_pos], dtype=np.float64).reshape(p.loss_shape())
        scale = (
            [mpmath.mpf(float(u)) for u in upstream]
            if upstream is not None
            else [mpmath.mpf(1)] * n_pos
        )
        z_scale = scale
        if p.return_z_loss:
            z_out = np.array([float(v) for v in z_pos], dtype=np.float64).reshape(p.loss_shape())
    else:
        total = _reduce(p, ce_pos, nll_pos, smooth_pos, denominator, eps, c)
        z_total = _reduce_count(p, z_pos, n_kept)
        # a z_loss of 0 adds nothing, not even the NaN of a mean over no kept position
        loss_out = np.array(float(total + z_total if p.z_loss != 0 else total), dtype=np.float64)
        scale = [factor(p, denominator)] * n_pos
        z_scale = [factor(p, n_kept)] * n_pos
        if p.return_z_loss:
            z_out = np.array(float(z_total), dtype=np.float64)

    if not want_grad:
        return Expected(loss_out, None, z_loss=z_out)

    grad = np.zeros((n_pos, c), dtype=np.float64)
    for n, f in enumerate(rows):
        grad[n] = [float(v) for v in row_backward(p, f, scale[n], z_scale[n], t[n], c)]
    return Expected(loss_out, p.grad_from_rows(grad), z_loss=z_out)


def _reduce_count(p: Problem, values: list, n_kept):
    """The z-loss terms reduced: a sum, or a mean over the kept positions (not the weights)."""
    total = mpmath.fsum(values) if values else mpmath.mpf(0)
    return mean(p, total, n_kept) if p.reduction == "mean" else total


def _reduce(p: Problem, per_pos: list, nll_pos: list, smooth_pos: list, denominator, eps, c: int):
    """The reduced loss ('sum' or 'mean') from the positions' terms."""

    def reduce(values: list):
        total = mpmath.fsum(values) if values else mpmath.mpf(0)
        return mean(p, total, denominator) if p.reduction == "mean" else total

    if p.label_smoothing != 0 and not p.probability_target:
        return (1 - eps) * reduce(nll_pos) + eps / c * reduce(smooth_pos)
    return reduce(per_pos)


def mean(p: Problem, total, denominator):
    """``total / denominator`` for a ``mean``: IEEE division, or 0 for a zero divisor where the
    dialect divides with ``divide_no_nan`` (``harness.oracle.dialect``)."""
    if denominator == 0 and p.dialect.empty_mean == "zero":
        return mpmath.mpf(0)
    return _divide(total, denominator)


def factor(p: Problem, denominator):
    """The reduction's factor on every position's gradient."""
    return mean(p, mpmath.mpf(1), denominator) if p.reduction == "mean" else mpmath.mpf(1)
