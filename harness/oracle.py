"""The oracle: expected cross-entropy loss and gradient, independent of any framework.

Small cases are computed in 200-bit binary floating point with mpmath from the
exact float64 values of the (already cast) inputs, then rounded to float64 once
at the end. Differences of logits are formed exactly, so every intermediate
carries a relative error below about 2**-190 and the float64 results are
correctly rounded unless they lie within that distance of a rounding boundary.

Cases with more than ``EXACT_LIMIT`` logits use the streaming oracle in
``harness.oracle_stream`` (float64, one pass over chunks of rows); its error
bound is stated there.

Non-finite values follow PyTorch's IEEE arithmetic, which the suite conforms to:

- a row containing NaN or +inf, or made only of -inf, has log-probabilities NaN;
- a -inf logit has log-probability -inf, and probability 0;
- ``0 * -inf`` is NaN (a zero probability target on a -inf logit gives NaN);
- without label smoothing only the target's log-probability enters the loss;
- ignored positions contribute exactly 0 to the loss and to the upstream gradient,
  yet a NaN row still gives NaN gradients (``0 * nan``), as in PyTorch;
- a ``mean`` over zero total weight divides by zero (0/0 = NaN); with label
  smoothing the NLL and smoothing sums are divided separately, then mixed.

Shapes: logits (C,), (N, C) or (N, C, d1, ..., dK); class-index target (),
(N,) or (N, d1, ..., dK); probability target the shape of logits; weight (C,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

mpmath = None  # imported by the first exact computation: starting the CLI does not pay for it

PRECISION_BITS = 200
# Above this many logits the mpmath oracle (about 10 us per element) gives way
# to the streaming one.
EXACT_LIMIT = 200_000


@dataclass(frozen=True)
class OracleResult:
    """Expected values in float64: ``loss`` has the reduced shape, ``grad`` the logits' shape."""

    loss: np.ndarray
    grad: np.ndarray | None


@dataclass(frozen=True)
class Problem:
    """One cross-entropy call, with inputs already cast to the case dtype and held in float64."""

    logits: np.ndarray
    target: np.ndarray
    probability_target: bool
    weight: np.ndarray | None = None
    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    grad_output: np.ndarray | None = None

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Logits as (P, C) and the target as (P,) or (P, C): class axis last, positions flattened."""
        x = np.asarray(self.logits, dtype=np.float64)
        t = np.asarray(self.target)
        if x.ndim == 1:
            x, t = x[None, :], t[None, ...]
        c = x.shape[1]
        x = np.moveaxis(x, 1, -1).reshape(-1, c)
        if self.probability_target:
            t = np.moveaxis(t.astype(np.float64), 1, -1).reshape(-1, c)
        else:
            t = t.astype(np.int64).reshape(-1)
        return x, t

    def loss_shape(self) -> tuple[int, ...]:
        if self.reduction != "none" or self.logits.ndim == 1:
            return ()
        return (self.logits.shape[0], *self.logits.shape[2:])

    def upstream(self) -> np.ndarray | None:
        """grad_output as one value per position (P,), for reduction 'none'."""
        if self.grad_output is None:
            return None
        return np.asarray(self.grad_output, dtype=np.float64).reshape(-1)

    def grad_from_rows(self, g: np.ndarray) -> np.ndarray:
        """Inverse of ``rows`` for a (P, C) gradient."""
        x = self.logits
        if x.ndim == 1:
            return g.reshape(x.shape)
        moved = (x.shape[0], *x.shape[2:], x.shape[1])
        return np.moveaxis(g.reshape(moved), -1, 1)


def cross_entropy(problem: Problem, *, want_grad: bool = True) -> OracleResult:
    """Expected loss (and gradient w.r.t. logits) of ``problem``, rounded to float64."""
    if problem.logits.size > EXACT_LIMIT:
        from harness.oracle_stream import cross_entropy_streaming

        return cross_entropy_streaming(problem, want_grad=want_grad)
    _import_mpmath()
    with mpmath.workprec(PRECISION_BITS):
        return _exact(problem, want_grad)


def _import_mpmath() -> None:
    global mpmath
    import mpmath


def _mpf_row(values: np.ndarray) -> list:
    return [mpmath.mpf(float(v)) for v in values]


def _log_softmax(x: list) -> list:
    """Log-probabilities of one row under PyTorch's non-finite rules."""
    nan, ninf = mpmath.mpf("nan"), mpmath.mpf("-inf")
    if any(mpmath.isnan(v) or v == mpmath.inf for v in x):
        return [nan] * len(x)
    finite = [v for v in x if v != ninf]
    if not finite:
        return [nan] * len(x)
    m = max(finite)
    # exact differences: x - m needs no rounding at any magnitude
    shifted = [mpmath.fsub(v, m, exact=True) if v != ninf else ninf for v in x]
    log_z = mpmath.log(mpmath.fsum(mpmath.exp(d) for d in shifted if d != ninf))
    return [d - log_z if d != ninf else ninf for d in shifted]


def _divide(num, den):
    """IEEE division in mpmath: x/0 is +-inf, 0/0 and nan/0 are NaN."""
    if den == 0:
        if num == 0 or mpmath.isnan(num):
            return mpmath.mpf("nan")
        return mpmath.mpf("inf") if num > 0 else mpmath.mpf("-inf")
    return num / den


def _exact(p: Problem, want_grad: bool) -> OracleResult:
    x, t = p.rows()
    n_pos, c = x.shape
    eps = mpmath.mpf(float(p.label_smoothing))
    w = _mpf_row(p.weight) if p.weight is not None else [mpmath.mpf(1)] * c
    upstream = p.upstream()

    per_pos = []  # loss of each position
    # index targets with smoothing: the NLL and smoothing terms of each position,
    # reduced separately and then mixed, as PyTorch does (it matters for 0/0)
    nll_pos, smooth_pos = [], []
    coeffs = []  # dLoss_n / dl_{n,c} before the reduction factor, or None if ignored
    logp = []
    denominator = mpmath.mpf(0)
    for n in range(n_pos):
        lrow = _log_softmax(_mpf_row(x[n]))
        logp.append(lrow)
        if p.probability_target:
            y = _mpf_row(t[n])
            if p.label_smoothing != 0:
                y = [(1 - eps) * v + eps / c for v in y]
            a = [w[j] * y[j] for j in range(c)]
            per_pos.append(-mpmath.fsum(a[j] * lrow[j] for j in range(c)))
            coeffs.append(a)
            denominator += 1
            continue
        label = int(t[n])
        if label == p.ignore_index:
            per_pos.append(mpmath.mpf(0))
            nll_pos.append(mpmath.mpf(0))
            smooth_pos.append(mpmath.mpf(0))
            coeffs.append(None)
            continue
        wy = w[label]
        denominator += wy
        loss = -wy * lrow[label]
        a = [mpmath.mpf(0)] * c
        a[label] = wy
        if p.label_smoothing != 0:
            smooth = -mpmath.fsum(w[j] * lrow[j] for j in range(c))
            nll_pos.append(loss)
            smooth_pos.append(smooth)
            loss = (1 - eps) * loss + eps / c * smooth
            a = [(1 - eps) * a[j] + eps / c * w[j] for j in range(c)]
        per_pos.append(loss)
        coeffs.append(a)

    if p.reduction == "none":
        loss_out = np.array([float(v) for v in per_pos], dtype=np.float64).reshape(p.loss_shape())
        scale = (
            [mpmath.mpf(float(u)) for u in upstream]
            if upstream is not None
            else [mpmath.mpf(1)] * n_pos
        )
    else:

        def reduce(values: list):
            total = mpmath.fsum(values) if values else mpmath.mpf(0)
            return _divide(total, denominator) if p.reduction == "mean" else total

        if p.label_smoothing != 0 and not p.probability_target:
            total = (1 - eps) * reduce(nll_pos) + eps / c * reduce(smooth_pos)
        else:
            total = reduce(per_pos)
        factor = _divide(mpmath.mpf(1), denominator) if p.reduction == "mean" else mpmath.mpf(1)
        loss_out = np.array(float(total), dtype=np.float64)
        scale = [factor] * n_pos

    if not want_grad:
        return OracleResult(loss_out, None)

    grad = np.zeros((n_pos, c), dtype=np.float64)
    for n in range(n_pos):
        a = coeffs[n]
        lrow = logp[n]
        g = [mpmath.mpf(0)] * c if a is None else [-scale[n] * aj for aj in a]
        if a is not None and not p.probability_target and p.label_smoothing == 0:
            # PyTorch writes the NLL gradient only at the target class
            label = int(t[n])
            g = [mpmath.mpf(0)] * c
            g[label] = -scale[n] * a[label]
        g_sum = mpmath.fsum(g)
        for j in range(c):
            grad[n, j] = float(g[j] - mpmath.exp(lrow[j]) * g_sum)
    return OracleResult(loss_out, p.grad_from_rows(grad))
