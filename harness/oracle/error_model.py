"""How far a correct implementation may be from the exact value: an error bound per element.

A conformance verdict is a *test ratio*, as in LAPACK's test programs::

    ratio = |got - expected| / (THRESHOLD * bound)        passes when ratio <= 1

``expected`` is the exact value (correctly rounded to float64, see
``harness.oracle.exact``); ``bound`` is a first-order rounding-error bound computed
here, element by element, from the magnitudes of the quantities the value is
computed from. It has two parts, because a correct implementation works at two
precisions (docs/tolerances.md explains each term)::

    bound = u_d * S_d  +  u_c * S_c  +  tiny_d * F

- ``u_d`` is the unit roundoff of the case dtype (2**-53, 2**-24, 2**-11,
  2**-8). ``S_d`` is the size of the quantities an implementation may store in
  the case dtype: the log-probabilities and probabilities that
  ``nll_loss(log_softmax(x))`` passes between its two halves, each term
  ``w * q * log p``, the per-position losses and the result. Storing them
  rounds each once.
- ``u_c`` is the unit roundoff of the compute precision: float64 for float64
  cases, float32 for the others (a correct implementation accumulates half
  precision in float32). ``S_c`` holds what arithmetic in that precision can
  lose: a log-probability ``x - lse`` loses ``u * (|x| + |lse|)`` (the
  formulation of every fused kernel), a sum of ``n`` terms loses ``sqrt(n) * u``
  of the sum of their magnitudes (the probabilistic bound of Higham and Mary,
  2019: rounding errors are not all of one sign), a probability ``exp(x - lse)``
  inherits the absolute error of its argument as a relative one.
- ``tiny_d * F``: gradual underflow. A quantity stored in the dtype below its
  smallest normal number is off by up to the subnormal spacing ``tiny_d``
  (2**-1074, 2**-149, 2**-24, 2**-133), times the factor it is later scaled by.

The sums of absolute values make the bound honest where terms cancel: a
gradient entry ``g * (A p_j - a_j)`` with ``p_j`` close to ``a_j / A`` is tiny,
but an implementation that rounds ``p_j`` loses an ulp of ``|g A p_j|``, not of
the tiny result; a ``mean`` whose weights have mixed signs divides by a
denominator that is itself the result of cancellation.

Notation, per position n (row of the (P, C) view): ``a[n, c]`` the class
coefficients (``loss_n = -sum_c a[n, c] * log p[n, c]``), ``|a|`` their
magnitudes with smoothing and weight kept apart (``(1 - eps) |w_y|`` at the
target plus ``eps / C * |w_c|`` everywhere), ``g_n`` the upstream factor (1 for
``sum``, ``1 / D`` for ``mean`` with denominator ``D``, ``grad_output[n]`` for
``none``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from harness.dtypes import FORMATS
from harness.oracle import compiled
from harness.oracle.problem import Problem, class_last

#: the test ratio's denominator is THRESHOLD x bound. The bound counts each rounding of a
#: quantity once, at first order; an implementation rounds a quantity of a given size up to
#: about four times on its way (a shift, an exp or log, a product, a store), so four
#: bounds are what a correct implementation may use. Figures: docs/tolerances.md.
THRESHOLD = 4.0

#: the precision a correct implementation computes in, per case dtype
COMPUTE_DTYPE = {
    "float64": "float64",
    "float32": "float32",
    "float16": "float32",
    "bfloat16": "float32",
}

#: rows per chunk when computing bounds: float64 temporaries of this many logits
_CHUNK_ELEMENTS = 1 << 20


def unit_roundoff(dtype: str) -> float:
    """2**-p for a format with p significand bits (half an ulp of 1)."""
    return math.ldexp(1.0, -(FORMATS[dtype].mantissa_bits + 1))


def subnormal_spacing(dtype: str) -> float:
    """The gap between subnormal numbers of ``dtype`` (its smallest positive value)."""
    fmt = FORMATS[dtype]
    return math.ldexp(1.0, fmt.min_exponent - fmt.mantissa_bits)


def length_factor(n: int | np.ndarray) -> np.ndarray | float:
    """The error growth of a sum of ``n`` terms in units of u (sqrt(n), at least 1)."""
    return np.sqrt(np.maximum(n, 1))


def repeated_length(terms: np.ndarray) -> np.ndarray:
    """The error growth of sums whose terms may repeat, per row of ``terms`` (the last axis
    holds a sum's terms), in units of u: sqrt(sum_v k_v**2) over the distinct nonzero values
    v, k_v how often v occurs; 0 for a row of at most one nonzero term (nothing is rounded).

    Adding the same value to partial sums of one binade rounds the same way every time, so
    the k_v roundings of a value add up instead of cancelling: summed in float32 one by one,
    32000 copies of 0.1 / 32000 are off by about 5000 u, against the sqrt(32000) = 179 u of
    the probabilistic bound for independent roundings. Taking the roundings of each value
    as one (k_v times one rounding) and those of distinct values as independent gives this
    length: sqrt(n) for n distinct terms, n for n equal ones (docs/tolerances.md)."""
    arr = np.abs(np.atleast_1d(np.asarray(terms, dtype=np.float64)))
    lead, n = arr.shape[:-1], arr.shape[-1]
    if arr.size == 0:
        return np.zeros(lead)
    t = arr.reshape(-1, n)
    r = t.shape[0]
    s = np.sort(t, axis=1)
    starts = np.ones((r, n), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    first = np.flatnonzero(starts)
    runs = np.diff(np.append(first, s.size)).astype(np.float64)
    nonzero = s.ravel()[first] > 0
    squares = np.bincount(first // n, weights=np.where(nonzero, runs * runs, 0.0), minlength=r)
    several = np.count_nonzero(s > 0, axis=1) > 1
    return np.where(several, np.sqrt(squares), 0.0).reshape(lead)


@dataclass(frozen=True)
class Bounds:
    """Error bounds (absolute, float64) of the expected loss and gradient, same shapes;
    ``z_loss`` that of the returned z-loss term, for a call with ``return_z_loss``."""

    loss: np.ndarray
    grad: np.ndarray | None
    z_loss: np.ndarray | None = None


def transformed_logits(problem: Problem, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z = s tanh(a x / s) (or a x) and dz/dx of (P, C) logits, in float64 (for bounds only)."""
    a = problem.logit_scale
    with np.errstate(invalid="ignore", over="ignore"):
        y = a * x
        if problem.softcap is None:
            return y, np.full_like(x, a)
        u = y / problem.softcap
        return problem.softcap * np.tanh(u), a / np.cosh(u) ** 2


def error_bounds(
    problem: Problem,
    dtype: str,
    loss: np.ndarray,
    grad: np.ndarray | None,
    z_loss: np.ndarray | None = None,
    logit_error: np.ndarray | None = None,
) -> Bounds:
    """The bound of every element of the expected ``loss`` and ``grad`` of ``problem`` in ``dtype``.

    ``problem`` holds the inputs cast to ``dtype``, in float64;
    ``loss`` and ``grad`` are the exact expected values (float64), whose magnitudes enter
    the bound; ``z_loss`` the returned z-loss term, if any (its bound comes back in
    ``Bounds.z_loss``). Non-finite inputs give non-finite expected values, compared
    exactly: their bounds are 0.

    Kernel fields (docs/tolerances.md, "Kernel fields"): the terms above are those of the
    logits the loss sees, z = s tanh(a x / s); each of the roundings that form z (a x,
    / s, tanh, s *) moves it by u_d |z|, and that moves the loss and the gradient w.r.t. z
    through their first derivatives; the gradient w.r.t. x is that w.r.t. z times
    dz/dx = a sech(a x / s)**2, whose computed value, a (1 - tanh**2), is off by about
    3 u_d |a| (absolute). The z-loss term c lse**2 is off by 2 |c| |lse| times lse's error
    plus its own rounding; its gradient 2 c lse p_j is bounded like the p_j term.

    ``logit_error`` (P, C), for logits the implementation forms itself (fused linear
    cross-entropy, ``harness.oracle.linear_bounds``): the absolute error of each logit x it
    may compute. It moves z by |dz/dx| times as much and enters exactly where the rounding
    of z does, and moves dz/dx itself by |d2z/dx2| = 2 (a / s) |dz/dx| |tanh| times as much.
    """
    rows = RowBounds(problem, dtype, want_grad=grad is not None, logit_error=logit_error)
    grad_rows = np.zeros((rows.n_pos, rows.c)) if grad is not None else None
    for lo in range(0, rows.n_pos, rows.step):
        hi = min(rows.n_pos, lo + rows.step)
        block = rows.rows(lo, hi)
        if grad_rows is not None:
            grad_rows[lo:hi] = block
    loss_bound, z_bound = rows.finish(loss, z_loss)
    grad_bound = None
    if grad is not None and grad_rows is not None:
        grad_bound = problem.grad_from_rows(rows.grad_bound(grad_rows, class_last(grad)))
    return Bounds(loss_bound, grad_bound, z_bound)


class RowBounds:
    """``error_bounds`` block of rows by block of rows, for a caller that never holds the whole
    gradient (``harness.execution.streaming``); the same values::

        rows = RowBounds(problem, dtype)                 # problem.logits may stay in their dtype
        for lo in range(0, rows.n_pos, rows.step):       # every row, in order
            part = rows.rows(lo, hi)                     # (hi - lo, C), before the gradient's own term
            bound = rows.grad_bound(part, grad[lo:hi])   # with the gradient's rows (P, C layout)
        loss_bound, z_bound = rows.finish(loss, z_loss)

    The arrays ``rows`` and ``grad_bound`` return may be reused by the next call: use
    (or copy) each before asking for the next block.
    """

    def __init__(
        self,
        problem: Problem,
        dtype: str,
        *,
        want_grad: bool = True,
        logit_error: np.ndarray | None = None,
    ):
        self.problem, self.dtype, self.want_grad = problem, dtype, want_grad
        #: (P, C) or None: the error of logits an implementation forms (``error_bounds``)
        self.logit_error = logit_error
        self.u_d = u_d = unit_roundoff(dtype)
        self.u_c = u_c = unit_roundoff(COMPUTE_DTYPE[dtype])
        self.tiny = subnormal_spacing(dtype)
        # the logits in their own dtype: converted to float64 block by block
        self.x_all = class_last(np.asarray(problem.logits))
        self.t_all = t_all = problem.target_rows()
        self.n_pos, self.c = n_pos, c = self.x_all.shape
        self.probability = probability = problem.probability_target
        self.eps = float(problem.label_smoothing)
        w = np.ones(c) if problem.weight is None else np.asarray(problem.weight, dtype=np.float64)
        self.w, self.abs_w = w, np.abs(w)

        if probability:
            keep = np.ones(n_pos, dtype=bool)
            denominator = float(n_pos)
            abs_den_terms = float(n_pos)
            den_length = float(length_factor(n_pos))
        else:
            keep = t_all != problem.ignore_index
            safe = np.where(keep, t_all, 0)
            w_target = np.where(keep, w[safe], 0.0)
            # the dialect's mean divides by the target weights or counts the kept positions
            den_terms = problem.dialect.divisor_term(w_target, keep.astype(np.float64))
            denominator = math.fsum(den_terms)
            abs_den_terms = math.fsum(np.abs(den_terms))
            den_length = _sum_length(den_terms[keep], COMPUTE_DTYPE[dtype])
        self.keep = keep
        #: the length term of the mean's denominator, a sum over the kept positions
        self.den_length = den_length
        self.n_kept = n_kept = int(np.count_nonzero(keep))

        # the upstream factor of each position and the condition of the mean's denominator
        den_condition = 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            if problem.reduction == "mean":
                g = np.full(n_pos, 1.0 / abs(denominator) if denominator else np.inf)
                den_condition = abs_den_terms / abs(denominator) if denominator else np.inf
            elif problem.reduction == "none" and (upstream := problem.upstream()) is not None:
                g = np.abs(upstream)  # upstream() is None exactly when grad_output is
            else:
                g = np.ones(n_pos)
        self.den_condition = den_condition
        self.g = np.where(keep, g, 0.0)
        # the z-loss's upstream factor: a mean divides by the number of kept positions
        self.c_z = c_z = abs(problem.z_loss)
        with np.errstate(divide="ignore"):
            gz = (
                np.full(n_pos, 1.0 / n_kept if n_kept else np.inf)
                if problem.reduction == "mean"
                else self.g
            )
        self.gz = np.where(keep, gz, 0.0) if c_z else np.zeros(n_pos)
        # each rounding that forms z moves it by u_d |z|; the parameters are rounded once (u_c)
        n_ops = (problem.logit_scale != 1.0) + 3 * (problem.softcap is not None)
        n_par = (problem.logit_scale != 1.0) + (problem.softcap is not None)
        self.tau_unit = n_ops * u_d + n_par * u_c
        self.perturbed = bool(self.tau_unit) or logit_error is not None
        self.per_pos_z = np.zeros(n_pos)  # bound of each position's z-loss term
        self.per_pos_zabs = np.zeros(n_pos)  # u_c |c lse**2|

        self.per_pos_d = np.zeros(n_pos)  # S_d of each position's loss
        self.per_pos_c = np.zeros(n_pos)  # S_c of each position's loss
        self.per_pos_abs = np.zeros(n_pos)  # |loss_n|
        self.per_pos_a = np.zeros(n_pos)  # sum_c |a|[n, c]
        #: rows per block: float64 temporaries of about _CHUNK_ELEMENTS logits
        self.step = max(1, _CHUNK_ELEMENTS // max(1, c))
        self.sqrt_c = float(length_factor(c))
        # The backward pass of log_softmax sums the upstream gradient over the classes: the
        # coefficients a_c, of which smoothing puts eps / C |w_c| on every class. Those terms
        # repeat wherever the weights do (all of them without weights, or when the target's
        # weight stands for every class), and repeated terms round alike (repeated_length).
        # One nonzero coefficient (no smoothing, a class-index target) is summed exactly.
        self.mass_length: float | None = None
        if not probability and self.eps:
            if problem.target_weighted:
                self.mass_length = float(c)
            else:
                self.mass_length = float(np.sqrt(repeated_length(self.abs_w) ** 2 + 1.0))
        #: the problems of the compiled oracle take the compiled bounds (the same values)
        self.compiled = logit_error is None and compiled.applies(problem, self.x_all)
        #: the compiled bounds' float64 blocks, reused from block to block (fresh memory
        #: for each would cost a page fault per 4 KiB, as much as the loops themselves); a
        #: set per thread, so that threads may take blocks of rows in turn
        self._local = threading.local()

    def buffer(self, name: str, r: int, c: int) -> np.ndarray:
        """An (r, c) float64 block for ``name``, the same memory from call to call of this
        thread (``harness.oracle.deltas`` decodes into one too)."""
        buffers = self._local.__dict__
        buf = buffers.get(name)
        if buf is None or buf.shape[0] < r or buf.shape[1] != c:
            buf = buffers[name] = np.empty((r, c))
        return buf[:r]

    def state(self, lo: int, hi: int) -> tuple:
        """The arguments of the compiled bound kernels for rows [lo, hi): the logits, their
        exponentials after the row's largest logit (NumPy's ``exp``) and the rows' sums
        (NumPy's pairwise ``sum``), lse, the target (-1: ignored), |w_y|, the upstream factor,
        whether the row is finite, the constants (for ``compare_state``, and what
        ``loss_terms`` takes its loss terms from; its arrays are this thread's buffers)."""
        shifts = compiled.bound_kernels()[0]
        x = self.x_all[lo:hi]
        r, c = x.shape
        z = self.buffer("z", r, c)
        m = np.empty(r)
        finite_row = np.empty(r, dtype=bool)
        shifts(x, z, m, finite_row)
        with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
            np.exp(z, out=z)
            s = z.sum(axis=1)
            lse = m + np.log(s)
        keep = self.keep[lo:hi]
        t = self.t_all[lo:hi]
        y = np.where(keep, t, -1)
        a = self.abs_w[np.where(keep, t, 0)]
        consts = np.array([self.u_d, self.u_c, self.sqrt_c, self.u_c * self.sqrt_c, self.tiny])
        return x, z, s, lse, y, a, self.g[lo:hi], finite_row, consts

    def _compiled_rows(self, lo: int, hi: int, want_grad: bool) -> np.ndarray | None:
        """``rows`` for a problem of the compiled oracle (``compiled.applies``): its only
        coefficient is |w_y| at the target, which the kernels use instead of (r, C) arrays of
        coefficients. The exponentials and their row sums are NumPy's, as in ``rows``."""
        bound_rows = compiled.bound_kernels()[1]
        state = self.state(lo, hi)
        r, c = state[0].shape
        per_pos = np.empty((4, r))
        out = self.buffer("rows", r, c) if want_grad else np.empty((1, 1))
        bound_rows(*state, want_grad, per_pos, out)
        self.per_pos_d[lo:hi] = per_pos[0]
        self.per_pos_c[lo:hi] = per_pos[1]
        self.per_pos_abs[lo:hi] = per_pos[2]
        self.per_pos_a[lo:hi] = per_pos[3]
        return out if want_grad else None

    def _grad_factor(self) -> float:
        """The relative bound of the gradient's own rounding (see ``grad_bound``)."""
        # the result itself is rounded to the dtype; the mean's 1/D carries D's error
        return self.u_d + self.u_c * self.den_condition * self.den_length

    def compare_rows(
        self,
        lo: int,
        hi: int,
        expected: np.ndarray,
        got: np.ndarray,
        skip: np.ndarray,
        rtol: float,
        atol: float,
    ) -> np.ndarray | None:
        """``rows(lo, hi)`` (each position's loss terms, kept for ``finish``), and ``got``
        compared with the ``expected`` gradient rows within ``grad_bound``'s bound, in one
        compiled pass that never stores the bound: per row not in ``skip``, (1 when every
        pair is finite and within tolerance, else 0; the largest |got - expected|, relative
        error, test ratio and |expected|), the maxima of
        ``harness.execution.compare``'s common case. None when the compiled kernels do not
        serve this problem or ``got``'s dtype (the caller uses ``rows`` and ``grad_bound``);
        after a row that is not within, the caller asks ``rows`` for the bound itself."""
        if not self.compares(got):
            return None
        return self.compare_state(self.loss_terms(lo, hi), expected, got, skip, rtol, atol)

    def compares(self, got: np.ndarray) -> bool:
        """Whether ``compare_rows`` serves this problem and an adapter's gradient ``got``."""
        return self.compiled and self.want_grad and got.dtype in (np.float32, np.float64)

    def loss_terms(self, lo: int, hi: int) -> tuple:
        """The first half of ``compare_rows`` (a problem it serves): each position's loss
        terms of rows [lo, hi), kept for ``finish``; returns the rows' state for
        ``compare_state`` (its arrays are this thread's buffers, reused by its next call)."""
        state = self.state(lo, hi)
        r = state[0].shape[0]
        per_pos = np.empty((4, r))
        compiled.bound_kernels()[1](*state, False, per_pos, np.empty((1, 1)))
        self.per_pos_d[lo:hi] = per_pos[0]
        self.per_pos_c[lo:hi] = per_pos[1]
        self.per_pos_abs[lo:hi] = per_pos[2]
        self.per_pos_a[lo:hi] = per_pos[3]
        return state

    def compare_state(
        self,
        state: tuple,
        expected: np.ndarray,
        got: np.ndarray,
        skip: np.ndarray,
        rtol: float,
        atol: float,
    ) -> np.ndarray:
        """The second half of ``compare_rows``: the rows of ``state`` compared."""
        stats = np.zeros((state[0].shape[0], 5))
        tol = np.array([THRESHOLD, rtol, atol])
        compiled.fused_kernels()[0](
            *state, self._grad_factor(), expected, got, skip, tol, stats
        )  # fmt: skip
        return stats

    def rows(self, lo: int, hi: int) -> np.ndarray | None:
        """Rows [lo, hi): each position's loss terms (kept for ``finish``) and, when the
        gradient is wanted, its bound rows without the gradient's own rounding (see
        ``grad_bound``)."""
        if self.compiled:
            return self._compiled_rows(lo, hi, self.want_grad)
        problem, c, eps, probability = self.problem, self.c, self.eps, self.probability
        u_d, u_c, tiny, sqrt_c = self.u_d, self.u_c, self.tiny, self.sqrt_c
        c_z, tau_unit, w, abs_w = self.c_z, self.tau_unit, self.w, self.abs_w
        per_pos_d, per_pos_c, per_pos_abs = self.per_pos_d, self.per_pos_c, self.per_pos_abs
        per_pos_a, per_pos_z, per_pos_zabs = self.per_pos_a, self.per_pos_z, self.per_pos_zabs
        g, gz, keep = self.g, self.gz, self.keep
        x = np.asarray(self.x_all[lo:hi], dtype=np.float64)
        x_orig = x
        perturbed, logit_error = self.perturbed, self.logit_error
        slope_rows = None
        if problem.transformed:
            x, slope_rows = transformed_logits(problem, x)
        grad_rows = None
        with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
            finite_row = np.isfinite(np.where(np.isneginf(x), 0.0, x)).all(axis=1)
            xs = np.where(np.isfinite(x), x, -np.inf)
            m = xs.max(axis=1)
            m = np.where(np.isfinite(m), m, 0.0)
            z = np.exp(xs - m[:, None])
            s = z.sum(axis=1)
            lse = m + np.log(s)
            p = z / s[:, None]
            logp = xs - lse[:, None]  # -inf where the logit is -inf
            # a row of only -inf logits has lse = -inf: NaN expected values, unless its target
            # is ignored (loss 0); its magnitude must not turn the zero coefficients into NaN
            abs_lse = np.where(np.isfinite(lse), np.abs(lse), 0.0)
            abs_x = np.abs(np.where(np.isfinite(x), x, 0.0))
            abs_logp = np.where(p > 0, np.abs(logp), 0.0)
            t = self.t_all[lo:hi]
            abs_a = _abs_coefficients(
                t, keep[lo:hi], w, abs_w, eps, c, probability, self.problem.target_weighted
            )
            # Magnitudes are multiplied by their unit roundoff before they are summed or
            # multiplied together: logits near the dtype's largest value must not overflow the
            # bound. |a_c log p_c|, with 0 * inf = 0: a class with no coefficient takes no part.
            a_logp_d = np.where(abs_a > 0, abs_a * (u_d * np.abs(logp)), 0.0).sum(axis=1)
            a_logp_c = np.where(abs_a > 0, abs_a * (u_c * np.abs(logp)), 0.0).sum(axis=1)
            sum_a = abs_a.sum(axis=1)
            # S_d: each term a_c log p_c and the position's loss (at most their sum) stored
            per_pos_d[lo:hi] = 2.0 * a_logp_d
            # S_c: x_c - lse for every class with a coefficient, log of a sum of C terms,
            # and the sum over classes of the terms
            per_pos_c[lo:hi] = (
                (abs_a * (u_c * abs_x + u_c * abs_lse[:, None])).sum(axis=1)
                + u_c * sqrt_c * sum_a
                + sqrt_c * a_logp_c
            )
            per_pos_abs[lo:hi] = a_logp_c  # u_c |loss_n|, at most
            per_pos_a[lo:hi] = sum_a
            # kernel fields: the rounding of z (tau) moves each log-probability, and lse
            tau = tau_unit * abs_x
            if logit_error is not None:
                dx = logit_error[lo:hi]
                tau = tau + (dx if slope_rows is None else np.abs(slope_rows) * dx)
            lse_tau = (p * tau).sum(axis=1)
            if perturbed:
                per_pos_c[lo:hi] += (abs_a * tau).sum(axis=1) + sum_a * lse_tau
            d_lse = u_c * (2.0 * abs_x.max(axis=1, initial=0.0) + abs_lse + sqrt_c) + lse_tau
            if c_z:
                kz = keep[lo:hi]
                per_pos_z[lo:hi] = np.where(
                    kz, c_z * abs_lse * (2.0 * d_lse + (2.0 * u_d + u_c) * abs_lse), 0.0
                )
                per_pos_zabs[lo:hi] = np.where(kz, u_c * c_z * abs_lse * abs_lse, 0.0)
            if self.want_grad:
                gg = g[lo:hi, None]
                # g (A p_j - a_j): p_j and each product rounded in the dtype; p_j recomputed
                # as exp(log p_j) from a log-probability stored in the dtype (autograd through
                # log_softmax does this) carries that rounding, u_d |log p_j|, as a relative error
                term_p = gg * sum_a[:, None] * p
                term_a = gg * abs_a
                b_d = term_p * (u_d + u_d * abs_logp) + u_d * term_a
                # p_j = exp(x_j - lse): the argument's absolute error becomes p_j's relative
                # one (lse's from its sum of C exponentials)
                b_c = term_p * (u_c * abs_x + u_c * abs_lse[:, None] + u_c * sqrt_c) + u_c * term_a
                # A, the sum over classes in the backward pass of log_softmax, is off by
                # u_c L |A|, and A p_j by as much relative (``mass_length``)
                if probability:
                    b_c = b_c + term_p * (u_c * repeated_length(abs_a)[:, None])
                elif self.mass_length is not None:
                    b_c = b_c + term_p * (u_c * self.mass_length)
                floor = 1.0 + gg * sum_a[:, None]
                bound = b_d + b_c + tiny * floor
                if c_z or perturbed:
                    bound = bound + _kernel_grad_terms(
                        p, abs_logp, abs_x, abs_lse, gg * sum_a[:, None],
                        2.0 * c_z * gz[lo:hi, None] * abs_lse[:, None], tau, lse_tau, d_lse,
                        u_d, u_c, sqrt_c, tiny,
                    )  # fmt: skip
                    if slope_rows is not None:
                        # |dL/dz| times the error of dz/dx = a (1 - tanh**2), and dz/dx's size
                        mag = term_p + term_a + 2.0 * c_z * gz[lo:hi, None] * abs_lse[:, None] * p
                        slope = np.abs(slope_rows)
                        computed = (
                            3.0 * u_d * abs(problem.logit_scale)
                            if problem.softcap is not None
                            else u_c * abs(problem.logit_scale)
                        )
                        if logit_error is not None and problem.softcap is not None:
                            # dz/dx at a logit off by dx: |d2z/dx2| dx
                            a_s = abs(problem.logit_scale)
                            u = a_s * x_orig / problem.softcap
                            curve = 2.0 * a_s / problem.softcap * slope * np.abs(np.tanh(u))
                            computed = computed + curve * logit_error[lo:hi]
                        # and the result, stored in the dtype (its underflow unscaled)
                        bound = bound * slope + mag * (u_d * slope + computed) + tiny
                grad_rows = bound
                grad_rows[~finite_row] = 0.0
            per_pos_d[lo:hi][~finite_row] = 0.0
            per_pos_c[lo:hi][~finite_row] = 0.0
            per_pos_z[lo:hi][~finite_row] = 0.0
            per_pos_zabs[lo:hi][~finite_row] = 0.0
        return grad_rows

    def grad_bound(self, rows: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """The gradient's bound on rows of ``rows(lo, hi)`` (updated in place): plus the
        rounding of the result itself, 0 where the expected ``grad`` rows are not finite."""
        factor = self._grad_factor()
        if self.compiled:
            out = self.buffer("grad", *rows.shape)
            compiled.bound_kernels()[2](rows, np.ascontiguousarray(grad), factor, out)
            return out
        with np.errstate(invalid="ignore", over="ignore"):
            own = np.abs(np.where(np.isfinite(grad), grad, 0.0))
            rows += factor * own
        bound = np.nan_to_num(rows, nan=0.0, posinf=np.inf)
        return np.where(np.isfinite(grad), bound, 0.0)

    def finish(
        self, loss: np.ndarray, z_loss: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The bounds of the loss and of the returned z-loss term, after every row."""
        problem, c_z, tiny = self.problem, self.c_z, self.tiny
        loss_bound = _loss_bound(
            problem, loss, self.per_pos_d, self.per_pos_c, self.per_pos_abs, self.per_pos_a,
            self.g, self.keep, self.n_kept, self.den_condition, self.den_length, self.u_d,
            self.u_c, tiny,
        )  # fmt: skip
        z_bound = None
        if c_z or z_loss is not None:
            z_part = _z_loss_bound(
                problem, self.per_pos_z, self.per_pos_zabs, self.gz, self.n_kept, tiny
            )
            loss_bound = loss_bound + z_part if c_z else loss_bound
            if z_loss is not None:
                own = 2.0 * self.u_d * np.abs(np.where(np.isfinite(z_loss), z_loss, 0.0))
                z_bound = np.where(np.isfinite(z_loss), z_part.reshape(np.shape(z_loss)) + own, 0.0)
        # a non-finite expected value is compared exactly: its bound is 0
        loss_bound = np.where(np.isfinite(loss), loss_bound, 0.0)
        return loss_bound, z_bound


def _kernel_grad_terms(
    p, abs_logp, abs_x, abs_lse, ce_mass, z_mass, tau, lse_tau, d_lse, u_d, u_c, sqrt_c, tiny
) -> np.ndarray:  # fmt: skip
    """The extra bound of dLoss/dz_j (r, C) from the kernel fields: the z-loss gradient
    ``z_mass * p_j`` (z_mass = 2 |c| g_z |lse|) bounded like the p_j term (a p_j stored
    below the dtype's normal range included), lse's error, and the rounding of z (``tau``)
    through the Jacobian of the softmax."""
    with np.errstate(invalid="ignore", over="ignore"):
        term_pz = z_mass * p
        out = term_pz * (u_d + u_d * abs_logp + u_c * abs_x + u_c * abs_lse[:, None] + u_c * sqrt_c)
        out += tiny * z_mass
        out += u_d * term_pz
        # lse's error (d_lse includes the rounding of z) in 2 c lse p_j
        with np.errstate(divide="ignore"):
            lse_share = np.where(abs_lse > 0, d_lse / np.where(abs_lse > 0, abs_lse, 1.0), 0.0)
        out += term_pz * lse_share[:, None]
        # d(A p_j)/dz_k = A p_j (delta_jk - p_k): z's rounding moves p_j by p_j (tau_j + sum p tau)
        out += (ce_mass + z_mass) * p * (tau + lse_tau[:, None])
    return out


def _z_loss_bound(problem, per_pos_z, per_pos_zabs, gz, n_kept, tiny) -> np.ndarray:
    """The bound of the z-loss term (per position for 'none', else reduced like the loss)."""
    if problem.reduction == "none":
        return (per_pos_z + tiny).reshape(problem.loss_shape())
    sqrt_n = float(length_factor(n_kept))
    with np.errstate(invalid="ignore", over="ignore"):
        bound = float(np.sum(gz * per_pos_z)) + sqrt_n * float(np.sum(gz * per_pos_zabs)) + tiny
    return np.array(0.0 if math.isnan(bound) else bound)


def _abs_coefficients(t, keep, w, abs_w, eps, c, probability, target_weighted) -> np.ndarray:
    """|a| for a chunk of rows (r, C): smoothing and target parts kept apart (no cancellation).
    ``target_weighted``: the smoothing part takes the target's weight |w[y_n]| on every class
    (the dialect's sample weights, ``Problem.target_weighted``)."""
    if probability:
        y = np.asarray(t, dtype=np.float64)
        y = np.where(np.isfinite(y), y, 0.0)
        return abs_w * (np.abs((1.0 - eps) * y) + eps / c)
    r = t.shape[0]
    out = np.zeros((r, c))
    rows = np.nonzero(keep)[0]
    if eps and target_weighted:
        out[rows] += (eps / c) * abs_w[t[rows]][:, None]
    elif eps:
        out += (eps / c) * abs_w
    out[rows, t[rows]] += (1.0 - eps) * abs_w[t[rows]]
    out[~keep] = 0.0
    return out


def _sum_length(terms: np.ndarray, compute: str) -> float:
    """The length term of a sum of ``terms`` in the ``compute`` precision: ``repeated_length``
    (at least 1), except where the sum is exact in any order: terms that are all multiples
    of a power of two 2**q whose sum of magnitudes is below 2**(p + q), p the format's
    significand bits (a count, integer or dyadic weights such as 0.5, 1.5), since every
    partial sum is then a float of the format; for those the sqrt(n) of distinct terms is
    kept, a spare bound."""
    terms = np.asarray(terms, dtype=np.float64)
    nonzero = terms[terms != 0]
    if nonzero.size and np.isfinite(nonzero).all():
        mantissa, exponent = np.frexp(np.abs(nonzero))
        digits = (mantissa * 2.0**53).astype(np.int64)  # exact: 53 significand bits
        trailing = np.log2((digits & -digits).astype(np.float64)).astype(np.int64)
        q = int((exponent - 53 + trailing).min())
        p = FORMATS[compute].mantissa_bits + 1
        if math.fsum(np.abs(nonzero)) < math.ldexp(1.0, p + q):
            return float(length_factor(terms.size))
    return max(1.0, float(repeated_length(terms)))


def _loss_bound(
    problem, loss, per_pos_d, per_pos_c, per_pos_abs, per_pos_a, g, keep, n_kept,
    den_condition, den_length, u_d, u_c, tiny,
) -> np.ndarray:  # fmt: skip
    """The loss's bound from each position's contributions (already multiplied by u_d, u_c)."""
    abs_loss = np.abs(np.where(np.isfinite(loss), loss, 0.0))
    if problem.reduction == "none":
        # per_pos_d already counts the position's loss, which is the result here
        bound = per_pos_d + per_pos_c + tiny * (1.0 + per_pos_a)
        return bound.reshape(np.shape(loss))
    n_terms = n_kept if not problem.probability_target else per_pos_abs.size
    gk = np.where(keep, g, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        # the sum over positions: positions of equal losses (repeated rows) round alike
        pos_length = max(float(length_factor(n_terms)), float(repeated_length(gk * per_pos_abs)))
        # per-position losses (scaled by 1/|D| for a mean) stored in the dtype, then summed;
        # the result, and a mean's denominator, rounded to the dtype
        b_d = float(np.sum(gk * per_pos_d)) + 2.0 * u_d * float(abs_loss)
        b_c = (
            float(np.sum(gk * per_pos_c))
            + pos_length * float(np.sum(gk * per_pos_abs))
            + den_length * den_condition * u_c * float(abs_loss)
        )
        floor = 1.0 + float(np.sum(gk * per_pos_a))
        bound = b_d + b_c + tiny * floor
    if math.isnan(bound):
        bound = 0.0  # a mean over zero total weight: the expected value is NaN, compared exactly
    return np.array(bound)
