"""The oracle's fast path: double-double NumPy arithmetic with an error bound per value.

``harness.oracle.exact.cross_entropy`` calls ``cross_entropy_fast``. Every output value
(a loss, a gradient entry) is computed in vectorised double-double arithmetic
(about 100 significant bits: error-free transformations TwoSum and Dekker's
TwoProduct, a table-driven ``exp`` and a Newton-refined ``log``) together with a
rigorous bound on its error. The bound covers both the distance to the exact
value and the distance to what the 200-bit mpmath oracle
(``harness.oracle.exact.cross_entropy_mpmath``) computes, whose own error is below
2**-150 of the same magnitudes. When every number within the bound rounds to
the same float64 (and that float64 is normal and finite), that float64 is the
correctly rounded value and also the mpmath oracle's value. Otherwise the
position (row) is recomputed in mpmath with the oracle's own code (Ziv's
strategy); a reduced loss that is not decided is recomputed by the mpmath
oracle as a whole. The results are therefore bit-identical to the mpmath
oracle, at every size (``tests/test_oracle_fast.py`` checks it on random and
adversarial inputs).

Error bounds, with ``u = 2**-53`` (the analysis, then the generous constants used):

- TwoSum, FastTwoSum and Dekker's TwoProduct are exact barring overflow and
  underflow; a double-double sum or product has a relative error below
  ``7 u**2 < 2**-103`` (Joldes, Muller, Popescu 2017); ``EPS_OP = 2**-100``.
- ``exp``: ``a = k ln2/2**24 + r`` with ``ln2/2**24`` in four pieces (the first
  three of 19 bits, so ``k * piece`` is exact for ``|k| < 2**34``), ``r`` kept
  to an absolute error below ``2**-97.5``; ``exp(a) = 2**K T1[j1] T2[j2] exp(r)``
  with two 4096-entry double-double tables (from mpmath at 160 bits) and
  ``exp(r) = 1 + r + r**2/2 + r**3/6`` (``|r| < 2**-25``, truncation below
  ``2**-106``): relative error below ``2**-96.5``; ``EPS_EXP = 2**-93``. Valid for
  ``-600 <= a <= 1``; a logit more than 600 below the row's maximum has
  ``exp < e**-600``, counted as 0 with that absolute error.
- The compiled path's one-table ``exp`` (``harness.oracle._kernel._exp_tile_fast``; see
  ``harness.oracle.compiled``), of ``a = ah + al`` with ``-600 <= ah <= 0`` and
  ``|al| <= 2**-44``: ``a = k ln2/4096 + r`` with ``|k| < 2**22`` and ln2/4096 in three pieces
  ``q1 + q2 + q3`` (30, 30 and 53 bits: ``k q1`` and ``k q2`` are exact, ``ah - k q1`` is
  exact by Sterbenz's lemma, TwoSum takes off ``k q2``), so ``r = rh + rl`` within
  ``2**-95.9``, ``|rh| < 2**-13.52``, ``|rl| < 2**-43.99``. Then ``exp(r) - 1 = rh + w/2 + c``
  with ``w + we = rh**2`` exactly (TwoProduct), ``t = w rh (1/6 + rh (1/24 + rh (1/120 +
  rh/720)))`` (|t| < 2**-43.1, truncation below ``2**-106.9``, rounding below 5u |t| <
  2**-93.8) and ``c = t + we/2 + rl (1 + rh + w/2 + t + rl/2)`` (the terms left out below
  ``2**-102``): c within ``2**-92.8``, |c| < 2**-42.5. ``exp(a) = 2**K (Th + Tl)(1 + ph +
  pl)`` with one 4096-entry double-double table ``2**(j/4096)`` (from mpmath, within
  ``2**-106``), ``ph + pe = rh + w/2`` (FastTwoSum) and ``pl = pe + c`` (rounding below
  ``2**-95.5``); ``Th ph`` exact (TwoProduct) and added to ``Th`` exactly (FastTwoSum), the
  rest in one fused multiply-add (rounding below ``2**-94.5``; its addend within ``2**-102``;
  ``Tl pl``, below ``2**-95.5``, left out): relative error below ``2**-92.0`` (observed:
  ``2**-94.1``); ``EPS_EXP_FAST = 2**-91``. About half the operations of ``exp_dd``, and two
  table look-ups in one cache line instead of four in two.
- ``log z`` for ``1 <= z``: ``y = log(z_hi)`` in float64 plus one Newton step
  ``y + d - d**2/2`` with ``d = z exp(-y) - 1``: absolute error below
  ``EPS_EXP + 4 EPS_OP + |d|**3`` plus z's relative error.

- Kernel fields: ``a x`` is exact (TwoProduct); with a softcap, ``u = a x / s`` within
  ``2 EPS_OP`` (double-double division), ``E = exp(-2|u|)`` within ``EPS_EXP + 4 EPS_OP |u|``,
  ``tanh |u| = (1 - E) / (1 + E)`` within ``2 |dE| + 8 EPS_OP`` absolute and
  ``sech(u)**2 = 4 E / (1 + E)**2`` within ``3 (EPS_EXP + 4 EPS_OP |u|) + 12 EPS_OP``
  relative (``_transform``). The capped logits z carry an absolute bound into
  ``z - max``, and from there into every exponential (``exp(d + e) = exp(d) (1 + e)``
  for tiny ``e``); the z-loss ``c lse**2`` and its gradient ``2 c lse p_j`` are products
  of bounded double-doubles. Rows with a non-finite logit, and slopes whose
  ``exp(-2|u|)`` is below ``exp(-600)``, are recomputed in mpmath.

Intermediates that overflow become inf or NaN and fail the test; certified
values are at least 2**-900 in magnitude and every bound carries 2**-1000 of
absolute slack, more than gradual underflow of intermediates can add. Values
that are exactly 0 in mpmath (ignored positions, ``s w_y = 0``, a -inf logit off
the target) are set structurally, as +0.0.

Recomputed in mpmath, position by position: rows with NaN or +inf logits or
only -inf; -inf logits with label smoothing or probability targets; a
non-finite ``grad_output``; a row whose ``x - max`` overflows; any value not
decided (for instance a gradient entry of a logit more than 600 below the row's
maximum without smoothing, ties that make an entry exactly 0, a loss of 0).
As a whole: empty inputs, labels outside [0, C), weights or probability targets
beyond 2**900 or non-finite, a ``mean`` whose total weight is 0 (unless every
position is ignored: NaN loss, zero gradient; 0 and zero gradient under a dialect with
``divide_no_nan``), a reduced loss that is not decided, and class weights applied as
sample weights under label smoothing (``Problem.target_weighted``, the ``keras``
dialect: the smoothing terms would need a weight per row rather than per class).

Dialects (``harness.oracle.dialect``) enter where the terms are weighted and reduced:
the ``mean``'s divisor (``_denominator``), its factor and 0/0 (``exact.factor``,
``exact.mean``), and an ignored row's gradient.

Memory: rows are processed in blocks of ``CHUNK_ELEMENTS`` logits (whole rows
when they fit, column blocks of wide rows, converted to float64 block by
block; the exponentials of a row are kept for the gradient pass), so a large
case needs its logits, the float64 gradient and two float64 row buffers.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from harness.oracle import compiled, pages
from harness.oracle import exact as ref
from harness.oracle.bounds import (
    _ABS_SLACK,
    _HALF_MARGIN,
    _MAX_OK,
    _MIN_OK,
    _SPLITTER,
    E_TINY,
    EPS_EXP,
    EPS_OP,
    TINY_D,
)
from harness.oracle.lazy_mpmath import mpmath
from harness.oracle.problem import Expected, Problem, class_last

#: float64 elements per block of work (64 KiB temporaries: they stay in cache and on the heap)
CHUNK_ELEMENTS = 8192
#: counts for this process (tests and benchmarks read them): problems, positions
#: recomputed in mpmath, problems recomputed whole in mpmath, positions the compiled kernel
#: computed a second time with the precise exponential (``harness.oracle.compiled``)
stats = {"problems": 0, "rows": 0, "rows_mpmath": 0, "whole_mpmath": 0, "rows_precise": 0}


# ---------------------------------------------------------------- error-free transformations
def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


def _split(a):
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _dd_mul(ah, al, bh, bl):
    p, e = _two_prod(ah, bh)
    e = e + (ah * bl + al * bh)
    return _fast_two_sum(p, e)


def _dd_add(ah, al, bh, bl):
    """Accurate double-double sum (relative error < 3u**2 even under cancellation)."""
    s, e = _two_sum(ah, bh)
    t, f = _two_sum(al, bl)
    e = e + t
    s, e = _fast_two_sum(s, e)
    e = e + f
    return _fast_two_sum(s, e)


def _sums_exactly(values: np.ndarray, terms: int) -> bool:
    """Whether every sum of up to ``terms`` of ``values`` (float64, finite), in any order, is
    exact in ``ref.PRECISION_BITS`` bits: each is a multiple of the smallest value's ulp and
    at most ``terms`` times the largest, so it needs log2(terms) + the exponents' spread + 53
    bits. Then the mpmath oracle's sequential sum of the weights equals the sum of count x
    weight per class, bit for bit."""
    v = np.abs(values[values != 0])
    if v.size == 0:
        return True
    if not np.all(np.isfinite(v)):
        return False
    top = math.frexp(float(v.max()))[1]
    bottom = math.frexp(float(v.min()))[1]
    return math.ceil(math.log2(max(terms, 2))) + (top - bottom) + 54 <= ref.PRECISION_BITS


def _to_dd(v) -> tuple[float, float]:
    hi = float(v)
    return hi, float(v - hi) if math.isfinite(hi) else 0.0


# ---------------------------------------------------------------- exp and log
def preload_tables() -> None:
    """Compute the exponential's tables now (a few hundredths of a second), e.g. on a thread
    beside other work (``harness.execution.streaming``), instead of at the first large case."""
    _tables()
    one_table_exp()


#: fractional bits of the fixed-point powers ``_tables`` multiplies
_TABLE_BITS = 200


def _dd_of_fixed(v: int) -> tuple[float, float]:
    """``v / 2**_TABLE_BITS`` (between 1 and 2) as a double-double: its value rounded to
    float64, and the rest rounded (Python rounds an int to the nearest float64)."""
    hi = math.ldexp(float(v), -_TABLE_BITS)
    return hi, math.ldexp(float(v - int(math.ldexp(hi, _TABLE_BITS))), -_TABLE_BITS)


@functools.lru_cache(maxsize=1)
def _tables():
    """The double-double exponential's tables, ``2**(j/4096)`` and ``2**(j/2**24)`` for j
    in [0, 4096) as (hi, lo) arrays, each the double-double rounding of the power; then
    ln2/2**24 in four pieces and 2**24/ln2. The powers are products of one step each
    (``2**(1/4096)``, ``2**(1/2**24)``) in 200-bit fixed point: the j-th is within j * 2**-199
    of the exact power, far below what its low part keeps (``tests/test_oracle_fast.py``
    checks entries against mpmath's ``exp``); integers, as mpmath's floats cost 0.03 s."""
    mp = mpmath
    with mp.workprec(_TABLE_BITS + 40):
        ln2 = mp.ln2
        out = []
        for step in (ln2 / 4096, ln2 / 2**24):
            base = int(mp.nint(mp.exp(step) * 2**_TABLE_BITS))
            v, hi, lo = 1 << _TABLE_BITS, np.empty(4096), np.empty(4096)
            for j in range(4096):
                hi[j], lo[j] = _dd_of_fixed(v)
                v = (v * base) >> _TABLE_BITS
            out += [hi, lo]
    with mp.workprec(160):
        piece, rest = [], ln2 / 2**24
        for _ in range(3):
            with mp.workprec(19):
                p = +rest
            piece.append(float(p))
            rest -= p
        piece.append(float(rest))
        inv = float(2**24 / ln2)
    return out, piece, inv


@functools.lru_cache(maxsize=1)
def one_table_exp() -> tuple[np.ndarray, np.ndarray]:
    """The compiled path's one-table exponential (``harness.oracle._kernel._exp_tile_fast``):
    its table (4096, 2), ``2**(j/4096)`` as (hi, lo) side by side (one cache line per
    look-up), and its argument reduction (4,): ln2/4096 in three pieces, the first two of 30
    bits (so that ``k * piece`` is exact for ``|k| < 2**23``), then 4096/ln2."""
    (t1h, t1l, _, _), _, _ = _tables()
    mp = mpmath
    with mp.workprec(200):
        rest, out = mp.ln2 / 4096, []
        for _ in range(2):
            with mp.workprec(30):
                p = +rest
            out.append(float(p))
            rest -= p
        out += [float(rest), float(4096 / mp.ln2)]
    return np.ascontiguousarray(np.stack([t1h, t1l], axis=1)), np.array(out)


def _exp_dd(ah, al):
    """exp(ah + al) as a double-double, relative error < EPS_EXP, for -600 <= ah <= 1."""
    (t1h, t1l, t2h, t2l), (l1, l2, l3, l4), inv = _tables()
    k = np.rint(ah * inv)
    s, e1 = _two_sum(ah, -k * l1)
    s, e2 = _two_sum(s, -k * l2)
    s, e3 = _two_sum(s, -k * l3)
    s, e4 = _two_sum(s, al)
    rh, rl = _fast_two_sum(s, (((e1 + e2) + e3) + e4) - k * l4)
    ki = k.astype(np.int64)
    j2 = ki & 4095
    j1 = (ki >> 12) & 4095
    scale = ((ki >> 24) + 1023) << 52
    tail = rh * rh * (0.5 + rh * (1.0 / 6))
    eh, el = _fast_two_sum(rh, rl + tail)
    mh, ml = _dd_mul(t1h[j1], t1l[j1], t2h[j2], t2l[j2])
    p, pe = _two_prod(mh, eh)
    pe = pe + (mh * el + ml * eh)
    s, e = _two_sum(mh, p)
    s, e = _fast_two_sum(s, e + (ml + pe))
    f = scale.view(np.float64)
    return s * f, e * f


def _log_dd(zh, zl):
    """log(zh + zl) for z >= 1 (arrays): (hi, lo, absolute error bound before z's own error)."""
    y0 = np.log(zh)
    wh, wl = _exp_dd(-y0, np.zeros_like(y0))
    ph, pl = _dd_mul(zh, zl, wh, wl)
    d = (ph - 1.0) + pl
    lh, ll = _two_sum(y0, d - 0.5 * d * d)
    lh, ll = _fast_two_sum(lh, ll)
    err = EPS_EXP + 4 * EPS_OP * (1 + np.abs(lh)) + np.abs(d) ** 3
    err = np.where(np.abs(d) < 2.0**-30, err, np.inf)
    return lh, ll, err


def _dd_div(nh, nl, dh, dl):
    """(nh + nl) / (dh + dl) as a double-double, relative error below 15 u**2 + 56 u**3
    (Joldes, Muller, Popescu 2017, DWDivDW2); bounds here use 2 EPS_OP."""
    th = nh / dh
    ch, cl1 = _two_prod(dh, th)
    rh, rl = _fast_two_sum(ch, dl * th)
    rh, rl = _fast_two_sum(rh, rl + cl1)
    tl = ((nh - rh) + (nl - rl)) / dh
    return _fast_two_sum(th, tl)


def _sum_last(h: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Pairwise double-double sum over the last axis: (hi, lo, bound factor).

    Returns the sum and a bound ``EPS_OP * levels`` relative to ``sum |terms|``.
    """
    levels = 0
    while h.shape[-1] > 1:
        n = h.shape[-1]
        if n % 2:
            h = np.concatenate([h, np.zeros_like(h[..., :1])], axis=-1)
            low = np.concatenate([low, np.zeros_like(low[..., :1])], axis=-1)
        s, e = _two_sum(h[..., 0::2], h[..., 1::2])
        low = (low[..., 0::2] + low[..., 1::2]) + e
        h = s
        levels += 1
    h, low = _fast_two_sum(h[..., 0], low[..., 0])
    return h, low, (levels + 2) * EPS_OP


def _certified(h, low, err):
    """True where every value within ``err`` of ``h + low`` rounds to ``h`` (normal, finite)."""
    a = np.abs(h)
    err = err + _ABS_SLACK
    with np.errstate(invalid="ignore", over="ignore"):
        up = np.nextafter(h, np.inf) - h
        down = h - np.nextafter(h, -np.inf)
        return (
            (a >= _MIN_OK)
            & (a < _MAX_OK)
            & (low + err < _HALF_MARGIN * up)
            & (low - err > -_HALF_MARGIN * down)
        )


def _finite(h, low, err):
    return np.isfinite(h) & np.isfinite(low) & np.isfinite(err) & (np.abs(h) < _MAX_OK)


def _transform(p: Problem, x):
    """The logits the loss sees for finite ``x``: z = s tanh(a x / s) (z = a x without a cap)
    as ``(zh, zl, z_err)`` with an absolute bound, and dz/dx = a sech(a x / s)**2 as
    ``(gh, gl, g_rel)`` with a relative bound.

    tanh |u| = (1 - E) / (1 + E) and sech(u)**2 = 4 E / (1 + E)**2 with E = exp(-2 |u|): E's
    relative error is EPS_EXP plus 2 |u| EPS_OP from u's own (a x exact, / s within 2 EPS_OP);
    a change d in E moves tanh by at most 2 d, and each double-double step adds 2 EPS_OP of
    its result. Where |u| > 300, E < exp(-600) is counted as 0 (absolute error E_TINY): the
    slope is then 0 here, its gradient entries are not certified and the row is recomputed.
    """
    zero = np.zeros_like(x)
    a = np.full_like(x, float(p.logit_scale))
    ph, pl = _two_prod(x, a)  # exact
    if p.softcap is None:
        return ph, pl, zero, a, zero, zero
    cap = float(p.softcap)
    sv = np.full_like(x, cap)
    uh, ul = _dd_div(ph, pl, sv, zero)
    neg = uh < 0
    vh, vl = np.where(neg, -uh, uh), np.where(neg, -ul, ul)  # |u|
    big = vh > 300
    eh, el = _exp_dd(np.where(big, 0.0, -2 * vh), np.where(big, 0.0, -2 * vl))
    eh, el = np.where(big, 0.0, eh), np.where(big, 0.0, el)
    e_rel = EPS_EXP + 4 * EPS_OP * vh
    e_abs = eh * e_rel * (1 + 2.0**-40) + np.where(big, E_TINY, 0.0)
    one = np.ones_like(x)
    nh, nl = _dd_add(one, zero, -eh, -el)  # 1 - E in [0, 1]
    dh, dl = _dd_add(one, zero, eh, el)  # 1 + E in [1, 2]
    th, tl = _dd_div(nh, nl, dh, dl)  # tanh |u| in [0, 1]
    t_err = 2 * e_abs + 8 * EPS_OP
    zh, zl = _dd_mul(th, tl, sv, zero)
    zh, zl = np.where(neg, -zh, zh), np.where(neg, -zl, zl)
    z_err = cap * t_err * (1 + 2.0**-40) + 2 * EPS_OP * np.abs(zh)
    qh, ql = _dd_mul(dh, dl, dh, dl)
    gh, gl = _dd_div(4 * eh, 4 * el, qh, ql)
    gh, gl = _dd_mul(gh, gl, a, zero)
    return zh, zl, z_err, gh, gl, 3 * e_rel + 12 * EPS_OP


# ---------------------------------------------------------------- the problem in rows
def _rows(p: Problem):
    """Logits (P, C) in their own dtype; the target (P,) as int64 or (P, C) as float64."""
    x = class_last(p.logits)
    t = np.asarray(p.target)
    t = class_last(t.astype(np.float64)) if p.probability_target else t.astype(np.int64).ravel()
    return x, t


def _globally_fast(p: Problem, x, t) -> bool:
    if x.size == 0 or p.reduction not in ("none", "sum", "mean"):
        return False
    if p.target_weighted:
        return False  # a dialect's sample weights under label smoothing: the mpmath oracle's
    if p.kernel:
        a, cap, cz = float(p.logit_scale), p.softcap, float(p.z_loss)
        if not (2.0**-500 < a < 2.0**500 and 0 <= cz < 2.0**500):
            return False
        if cap is not None and not 2.0**-500 < float(cap) < 2.0**500:
            return False
    eps = float(p.label_smoothing)
    if not (eps == 0 or 2.0**-900 < eps <= 1):
        return False
    if p.weight is not None:
        w = np.asarray(p.weight, dtype=np.float64)
        if w.shape != (x.shape[1],) or not np.all(np.abs(w) < 2.0**900):
            return False
    if p.probability_target:
        return t.shape == x.shape and bool(np.all(np.abs(t) < 2.0**900))
    c = x.shape[1]
    if t.shape != (x.shape[0],):
        return False  # a target of the wrong shape: the mpmath oracle's behaviour
    used = t[t != p.ignore_index]
    return bool(np.all((used >= 0) & (used < c)))


@functools.lru_cache(maxsize=1)
def _warm_allocator() -> None:
    """Free one 4 MiB buffer, once, before a large case.

    The chunks' temporaries are small (CHUNK_ELEMENTS float64) and short-lived.
    With glibc's initial thresholds the heap top is trimmed and refaulted again
    and again (about one page fault per 16 logits, half the run time on large
    cases); freeing a buffer this size raises glibc's dynamic mmap and trim
    thresholds (to 4 and 8 MiB), after which the temporaries reuse the same
    memory. Elsewhere it has no effect.
    """
    buffer = np.ones(1 << 19)
    del buffer


def cross_entropy_fast(p: Problem, *, want_grad: bool = True) -> Expected:
    """The oracle's result, bit-identical to ``harness.oracle.exact.cross_entropy_mpmath``."""
    x, t = _rows(p)
    stats["problems"] += 1
    stats["rows"] += x.shape[0]
    if not _globally_fast(p, x, t):
        stats["whole_mpmath"] += 1
        return ref.cross_entropy_mpmath(p, want_grad=want_grad)
    if x.size > 1 << 20:
        _warm_allocator()
    with mpmath.workprec(ref.PRECISION_BITS), np.errstate(all="ignore"):
        result = _Fast(p, x, t, want_grad).run()
    if result is None:
        stats["whole_mpmath"] += 1
        return ref.cross_entropy_mpmath(p, want_grad=want_grad)
    return result


class RowBlocks:
    """The oracle on a (P, C) problem, block of rows by block of rows, for a caller that uses
    each block of the gradient as it is made and never holds the whole of it
    (``harness.execution.streaming``). Same arithmetic, same values as ``cross_entropy_fast``::

        blocks = RowBlocks(problem)        # problem.logits (P, C), in their carrier dtype
        if blocks.possible:
            for lo in range(0, P, blocks.rows_per_block):
                grad, pending = blocks.block(lo, min(P, lo + blocks.rows_per_block))
            loss, late = blocks.finish()   # late: {row: final gradient row} of pending rows

    ``grad`` (rows, C) float64 holds the gradient of those rows, except where ``pending`` (rows,)
    is True: those rows are recomputed in mpmath by ``finish``; its memory is reused by the
    next ``block``. ``possible`` is False where
    ``cross_entropy_fast`` would call the mpmath oracle on the whole problem, or the problem is
    not 2-D (``cross_entropy_fast`` then gives the answer).
    """

    def __init__(self, p: Problem, *, want_grad: bool = True, target_elements: int = 1 << 20):
        self.p = p
        x, t = _rows(p)
        self.possible = p.logits.ndim == 2 and not p.kernel and _globally_fast(p, x, t)
        self._fast: _Fast | None = None
        self._grad: np.ndarray | None = None
        self.rows_per_block = 1
        self._threads = compiled.ThreadChoice()
        if self.possible:
            stats["problems"] += 1
            stats["rows"] += x.shape[0]
            if x.size > 1 << 20:
                _warm_allocator()
            with mpmath.workprec(ref.PRECISION_BITS), np.errstate(all="ignore"):
                fast = _Fast(p, x, t, want_grad)
                self.possible = fast.start()
            self._fast = fast
            step = fast.step
            self.rows_per_block = step * max(1, target_elements // (step * fast.c))

    @property
    def compiled(self) -> bool:
        """Whether the blocks run in the compiled kernel (``harness.oracle.compiled``)."""
        return self._fast is not None and self._fast.use_compiled

    def block(self, lo: int, hi: int) -> tuple[np.ndarray | None, np.ndarray]:
        """Rows [lo, hi) (``lo`` a multiple of ``rows_per_block``): their gradient (None when
        not wanted) and which of them are pending."""
        fast = self._fast
        assert fast is not None and self.possible
        fast.grad = None
        if fast.want_grad:
            # the same memory from block to block (fresh memory costs a page fault per 4 KiB)
            if self._grad is None or self._grad.shape[0] < hi - lo:
                self._grad = np.empty((hi - lo, fast.c))
            fast.grad = self._grad[: hi - lo]
            fast.grad_zeroed = False
            if not fast.use_compiled:  # the compiled kernel writes every row it certifies
                fast.grad.fill(0.0)
        fast.grad_row0 = lo
        with mpmath.workprec(ref.PRECISION_BITS), np.errstate(all="ignore"):
            if fast.use_compiled:
                with self._threads.timed(hi - lo):
                    fast.rows(lo, hi)
            else:
                fast.rows(lo, hi)
        grad, fast.grad = fast.grad, None
        return grad, fast.fallback[lo:hi].copy()

    def factors(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi)'s gradient factors in one float64 each: the row's scale (the mean's
        1/D, or its upstream gradient) times its target's weight; 0 for an ignored row. An
        approximation (the oracle's are double-double): ``harness.oracle.deltas`` needs one
        formed the same way each time, not a correct one."""
        fast = self._fast
        assert fast is not None and self.possible
        ignored = fast.ignored[lo:hi]
        wy = fast.w[np.where(ignored, 0, fast.t[lo:hi])]
        return np.where(ignored, 0.0, fast.sh[lo:hi] * wy)

    def finish(self) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The loss, and the final gradient row of each pending row (when wanted)."""
        fast = self._fast
        assert fast is not None and self.possible
        reduced = self.p.reduction != "none"
        with mpmath.workprec(ref.PRECISION_BITS), np.errstate(all="ignore"):
            settled = fast.settle(reduced)
        if settled is None:  # a reduced loss not decided: the mpmath oracle's, as a whole
            stats["whole_mpmath"] += 1
            return ref.cross_entropy_mpmath(self.p, want_grad=False).loss, self._late({})
        loss, rows_mp = settled
        return loss, self._late(rows_mp)

    def _late(self, rows_mp: dict) -> dict[int, np.ndarray]:
        fast = self._fast
        assert fast is not None
        if not fast.want_grad:
            return {}
        late = {}
        for n in np.nonzero(fast.fallback)[0].tolist():
            got = rows_mp.get(n)
            late[n] = np.asarray(got[1] if got is not None else fast._mp_row(n)[1], np.float64)
        return late


class _Acc:
    """Per-row double-double sums accumulated over column blocks, with their magnitudes."""

    def __init__(self, n: int):
        self.n = n
        self.sums: dict = {}
        self.err: dict = {}

    def add(self, key, h, low, factor, mag) -> None:
        if key not in self.sums:
            self.sums[key] = [h, low, factor, mag]
            return
        s = self.sums[key]
        s[0], s[1] = _dd_add(s[0], s[1], h, low)
        s[2] = max(s[2], factor)
        s[3] = s[3] + mag

    def get(self, key):
        if key not in self.sums:
            z = np.zeros(self.n)
            return z, z, 0.0, z
        return tuple(self.sums[key])


class _Fast:
    def __init__(self, p: Problem, x, t, want_grad: bool):
        mp = mpmath
        self.p, self.x, self.t, self.want_grad = p, x, t, want_grad
        self.n_pos, self.c = x.shape
        c = self.c
        self.w = np.asarray(p.weight, dtype=np.float64) if p.weight is not None else np.ones(c)
        self._w_mp: list | None = None  # the weights in mpmath, made when first needed
        self.eps_mp = mp.mpf(float(p.label_smoothing))
        self.smoothing = p.label_smoothing != 0
        eps = self.eps_mp
        self.c1 = _to_dd(1 - eps)  # as mpmath rounds them: within 2**-200 of the exact values
        self.ce = _to_dd(eps / c)
        self.ignored = np.zeros(self.n_pos, bool) if p.probability_target else t == p.ignore_index
        wh, wl, wf = _sum_last(self.w[None, :], np.zeros((1, c)))
        self.w_total = (float(wh[0]), float(wl[0]), wf, float(np.sum(np.abs(self.w))))
        self.kernel = p.kernel
        self.zscale_mp: list | None = None  # the z-loss's factor per position (reduced, kernel)
        self.z_out: np.ndarray | None = None

    @property
    def w_mp(self) -> list:
        if self._w_mp is None:
            one = mpmath.mpf(1)
            self._w_mp = ref.mpf_row(self.w) if self.p.weight is not None else [one] * self.c
        return self._w_mp

    # ------------------------------------------------------------ scales
    def _denominator(self):
        mp = mpmath
        if self.p.probability_target:
            return mp.mpf(self.n_pos)
        if self.p.weight is None or self.p.dialect.mean_divisor == "kept_positions":
            return mp.mpf(int(np.count_nonzero(~self.ignored)))
        den = mp.mpf(0)
        labels = self.t[~self.ignored]
        used, counts = np.unique(labels, return_counts=True)
        if _sums_exactly(self.w[used], labels.size):
            # every partial sum of the sequence below is exact: so is count x weight per class
            for n, v in zip(counts.tolist(), ref.mpf_row(self.w[used]), strict=True):
                den += n * v
            return den
        w = dict(zip(used.tolist(), ref.mpf_row(self.w[used]), strict=True))
        for label in labels.tolist():
            den += w[label]  # the mpmath oracle's own sequence of 200-bit additions
        return den

    def run(self) -> Expected | None:
        if not self.start():
            if self.p.reduction == "mean" and np.all(self.ignored) and not self.kernel:
                return self._all_ignored_mean()
            return None  # inf or nan factors: the mpmath oracle decides
        self.grad = pages.zeros((self.n_pos, self.c)) if self.want_grad else None
        self.grad_zeroed = True
        self.rows(0, self.n_pos)
        return self._finish(self.p.reduction != "none")

    def start(self) -> bool:
        """Set the scales and the per-position buffers; False for a ``mean`` over a total
        weight of 0 (the callers decide: all ignored, or the mpmath oracle)."""
        p = self.p
        den = self._denominator() if p.reduction == "mean" else None
        self.den = den
        reduced = p.reduction != "none"
        n_kept = self.n_pos if p.probability_target else int(np.count_nonzero(~self.ignored))
        if p.reduction == "mean" and (den == 0 or (self.kernel and n_kept == 0)):
            return False
        upstream = p.upstream()
        if reduced:
            factor = ref.factor(p, den)
            self.scale_mp: list | None = [factor] * self.n_pos
            fh, fl = _to_dd(factor)
            self.sh = np.full(self.n_pos, fh)
            self.sl = np.full(self.n_pos, fl)
        elif upstream is not None:
            self.sh = upstream.astype(np.float64)
            self.sl = np.zeros(self.n_pos)
            self.scale_mp = None
        else:
            self.sh, self.sl = np.ones(self.n_pos), np.zeros(self.n_pos)
            self.scale_mp = None

        if reduced:
            zf = ref.factor(p, mpmath.mpf(n_kept))
            self.zscale_mp = [zf] * self.n_pos
            zh, zl = _to_dd(zf)
            self.zsh, self.zsl = np.full(self.n_pos, zh), np.full(self.n_pos, zl)
        else:
            self.zsh, self.zsl = self.sh, self.sl
        n, c = self.n_pos, self.c
        self.zt = [np.zeros(n), np.zeros(n), np.zeros(n)]  # z-loss terms: hi, lo, err
        # per position: loss terms (value, bound); nll and smooth for index targets with smoothing
        self.loss = [np.zeros(n), np.zeros(n), np.zeros(n)]  # hi, lo, err
        self.nll = [np.zeros(n), np.zeros(n), np.zeros(n)]
        self.smooth = [np.zeros(n), np.zeros(n), np.zeros(n)]
        self.loss_ok = np.ones(n, bool)
        self.fallback = np.zeros(n, bool)
        # the gradient rows being written: the whole (P, C) gradient, or (RowBlocks) the
        # block of rows starting at row ``grad_row0``
        self.grad = None
        self.grad_row0 = 0
        # whether ``grad`` holds zeros where nothing is written (the compiled kernel then
        # leaves zero rows unwritten: their memory is never touched)
        self.grad_zeroed = False
        self.step = max(1, CHUNK_ELEMENTS // c)
        self.use_compiled = compiled.applies(p, self.x)
        self.scratch: np.ndarray | None = None  # the compiled kernel's, made on first use
        return True

    def rows(self, lo: int, hi: int) -> None:
        """Rows [lo, hi), ``lo`` a multiple of ``self.step``: in the compiled kernel, or in
        chunks of ``self.step`` rows."""
        if self.use_compiled:
            self._compiled(lo, hi)
            return
        for a in range(lo, hi, self.step):
            self._chunk(a, min(hi, a + self.step))

    def _compiled(self, lo: int, hi: int) -> None:
        """Rows [lo, hi) in the compiled kernel (``harness.oracle.compiled``): the same
        values, bounds and fallbacks as ``_chunk``, one loop per row instead of array passes."""
        p = self.p
        (t1h, t1l, t2h, t2l), pieces, inv = _tables()
        loss = np.zeros((hi - lo, 3))
        bad = np.zeros(hi - lo, bool)
        again = np.zeros(hi - lo, bool)
        r0 = self.grad_row0
        grad = self.grad[lo - r0 : hi - r0] if self.grad is not None else np.zeros((1, 1))
        if self.scratch is None:
            self.scratch = compiled.scratch(self.c)
        compiled.rows(
            self.x[lo:hi],
            self.t[lo:hi],
            int(p.ignore_index),
            self.w,
            np.ascontiguousarray(self.sh[lo:hi]),
            np.ascontiguousarray(self.sl[lo:hi]),
            self.grad is not None,
            self.grad_zeroed,
            np.stack([t1h, t1l, t2h, t2l]),
            np.array(pieces),
            inv,
            *one_table_exp(),
            loss,
            grad,
            bad,
            again,
            self.scratch,
        )
        stats["rows_precise"] += int(np.count_nonzero(again))
        for k in range(3):
            self.loss[k][lo:hi] = loss[:, k]
        self.fallback[lo:hi] |= bad
        if p.reduction == "none":
            ignored = self.ignored[lo:hi]
            wy = self.w[np.where(ignored, 0, self.t[lo:hi])]
            ok = _certified(loss[:, 0], loss[:, 1], loss[:, 2]) | (wy == 0)
            self.loss_ok[lo:hi] = ok | ignored

    def _all_ignored_mean(self) -> Expected:
        loss = np.array(float(ref.mean(self.p, mpmath.mpf(0), mpmath.mpf(0))))
        if not self.want_grad:
            return Expected(loss, None)
        grad = np.zeros((self.n_pos, self.c))
        if self.p.dialect.ignored_rows == "zeroed":
            return Expected(loss, self.p.grad_from_rows(grad))
        step = max(1, CHUNK_ELEMENTS // self.c)
        for lo in range(0, self.n_pos, step):
            xc = np.asarray(self.x[lo : lo + step], dtype=np.float64)
            bad = np.any(~(xc < np.inf), axis=1) | np.all(xc == -np.inf, axis=1)
            grad[lo : lo + step][bad] = np.nan
        return Expected(loss, self.p.grad_from_rows(grad))

    # ------------------------------------------------------------ one chunk of rows
    def _chunk(self, lo: int, hi: int) -> None:
        p = self.p
        xc = self.x[lo:hi]  # the carrier dtype: converted to float64 block by block
        ign = self.ignored[lo:hi]
        nan_row = ~np.all(xc < np.inf, axis=1) | np.all(xc == -np.inf, axis=1)
        has_ninf = np.any(xc == -np.inf, axis=1)
        general = p.probability_target or self.smoothing
        scale_ok = np.isfinite(self.sh[lo:hi])
        # ignored rows: loss 0, gradient 0 (NaN in a NaN row), exactly as in mpmath
        if self.kernel:
            # the logits are transformed first: any row with a non-finite logit goes to mpmath
            slow = ~np.all(np.isfinite(xc), axis=1) | (~ign & ~scale_ok)
        else:
            if self.grad is not None and p.dialect.ignored_rows == "kept":  # gradient wanted
                r0 = self.grad_row0
                self.grad[lo - r0 : hi - r0][ign & nan_row] = np.nan
            slow = ~ign & (nan_row | ~scale_ok | (has_ninf if general else False))
        self.fallback[lo:hi] |= slow
        rows = np.nonzero(~ign & ~slow)[0]
        if rows.size == 0:
            return
        xr = xc if rows.size == xc.shape[0] else xc[rows]
        self._rows_fast(lo + rows, xr)

    def _rows_fast(self, idx, xr) -> None:
        """Rows ``idx`` (logits ``xr``, all finite or -inf), in column blocks of CHUNK_ELEMENTS."""
        p, c, n = self.p, self.c, idx.size
        kz = _transform(p, np.asarray(xr, dtype=np.float64)) if self.kernel else None
        if kz is not None:
            m = np.max(kz[0], axis=1)[:, None]
        else:
            m = np.max(xr, axis=1).astype(np.float64)[:, None]
        d_max = np.zeros(n)  # the largest error of a difference z - m in each row (kernel)
        width = max(1, min(c, CHUNK_ELEMENTS // n))
        blocks = [(c0, min(c, c0 + width)) for c0 in range(0, c, width)]
        slack = (2 * len(blocks) + 2) * EPS_OP  # block sums and the dd additions across blocks
        e_hi, e_lo = np.empty((n, c)), np.empty((n, c))
        zh, zl, zf = np.zeros(n), np.zeros(n), 0.0
        n_tiny = np.zeros(n, np.int64)
        overflow = np.zeros(n, bool)
        acc = _Acc(n)
        for c0, c1 in blocks:
            if kz is None:
                xb = np.asarray(xr[:, c0:c1], dtype=np.float64)
                dh, dl = _two_sum(xb, -m)
                ninf = xb == -np.inf
            else:
                zb = np.zeros((n, c1 - c0))
                dh, dl = _dd_add(kz[0][:, c0:c1], kz[1][:, c0:c1], zb - m, zb)
                d_err = kz[2][:, c0:c1] + EPS_OP * np.abs(dh)
                d_max = np.maximum(d_max, np.max(d_err, axis=1))
                ninf = np.zeros(zb.shape, bool)
            tiny = (dh < TINY_D) | ninf
            overflow |= np.any(~np.isfinite(dh) & ~ninf, axis=1)
            n_tiny += np.count_nonzero(tiny & ~ninf, axis=1)
            dh = np.where(ninf, -np.inf, dh)
            dl = np.where(ninf, 0.0, dl)
            eh, el = _exp_dd(np.where(tiny, 0.0, dh), np.where(tiny, 0.0, dl))
            eh[tiny] = 0.0
            el[tiny] = 0.0
            e_hi[:, c0:c1], e_lo[:, c0:c1] = eh, el
            bh, bl, bf = _sum_last(eh, el)
            zh, zl = _dd_add(zh, zl, bh, bl)
            zf = max(zf, bf)
            if self.smoothing and not p.probability_target:
                w = self.w[c0:c1]
                wdh, wdl = _two_prod(dh, np.broadcast_to(w, dh.shape))
                acc.add("wd", *_sum_last(wdh, wdl + dl * w), np.sum(np.abs(wdh), axis=1))
                if kz is not None:
                    acc.err["wd"] = acc.err.get("wd", 0.0) + np.sum(np.abs(w) * d_err, axis=1)
            elif p.probability_target:
                a_h, a_l, a_err = self._prob_coeffs(idx, c0, c1)
                adh, adl = _dd_mul(a_h, a_l, dh, dl)
                mag = np.sum(np.abs(adh), axis=1) + np.sum(a_err * np.abs(dh), axis=1)
                acc.add("ad", *_sum_last(adh, adl), mag)
                acc.add("A", *_sum_last(a_h, a_l), np.sum(np.abs(a_h), axis=1))
                acc.err["A"] = acc.err.get("A", 0.0) + np.sum(a_err, axis=1)
                if kz is not None:
                    ad_err = np.sum((np.abs(a_h) + a_err) * d_err, axis=1)
                    acc.err["ad"] = acc.err.get("ad", 0.0) + ad_err
        self.fallback[idx[d_max > 2.0**-60]] = True  # the bounds below take d small
        d_max = d_max * (1 + 2.0**-40)  # exp(d + e) = exp(d) (1 + e (1 + ...)) for tiny e
        z_rel = EPS_EXP + zf + slack + n_tiny * E_TINY + d_max  # z >= 1: its relative error
        lzh, lzl, lz_err = _log_dd(zh, zl)
        lz_err = lz_err + 2 * z_rel
        # 1/z by one Newton step from 1/z_hi
        q0 = 1.0 / zh
        rh, rl = _dd_mul(zh, zl, q0, np.zeros_like(q0))
        r = (1.0 - rh) - rl
        izh, izl = _fast_two_sum(q0, q0 * r)
        p_rel = EPS_EXP + z_rel + 2 * r * r + 8 * EPS_OP + d_max  # relative error of p = e / z
        row = dict(lzh=lzh, lzl=lzl, lz_err=lz_err, slack=slack, kz=kz)
        if p.probability_target:
            self._prob_loss(idx, acc, row)
        else:
            self._index_loss(idx, xr, m, acc, row)
        if kz is not None:
            self._z_terms(idx, m, row)
        self.fallback[idx[overflow]] = True
        if self.grad is None:  # the gradient is not wanted
            return
        bad = np.zeros(n, bool)
        for c0, c1 in blocks:
            eh, el = e_hi[:, c0:c1], e_lo[:, c0:c1]
            tiny = eh == 0  # exp of anything >= TINY_D is far from 0
            ninf = np.asarray(xr[:, c0:c1]) == -np.inf
            if p.probability_target or self.smoothing or kz is not None:
                gh, ok = self._general_grad(idx, c0, c1, eh, el, tiny, izh, izl, p_rel, row)
            else:
                gh, ok = self._nll_grad(idx, c0, c1, eh, el, tiny, ninf, izh, izl, p_rel, row)
            self.grad[idx - self.grad_row0, c0:c1] = gh
            bad |= ~np.all(ok, axis=1)
        self.fallback[idx[bad]] = True

    def _index_loss(self, idx, xr, m, acc, row) -> None:
        """Per-position loss terms of class-index targets (and the rows' grad factors)."""
        p = self.p
        y = self.t[idx]
        r = np.arange(idx.size)
        wy = self.w[y]
        lzh, lzl, lz_err = row["lzh"], row["lzl"], row["lz_err"]
        kz = row["kz"]
        if kz is None:
            xy = np.asarray(xr[r, y], dtype=np.float64)
            target_ninf = xy == -np.inf
            dyh, dyl = _two_sum(np.where(target_ninf, 0.0, xy), -m[:, 0])
            dy_err = 0.0
        else:  # transformed logits: finite, z - m within its bound
            target_ninf = np.zeros(idx.size, bool)
            dyh, dyl = _dd_add(kz[0][r, y], kz[1][r, y], -m[:, 0], np.zeros(idx.size))
            dy_err = kz[2][r, y] + EPS_OP * np.abs(dyh)
        lyh, lyl = _dd_add(dyh, dyl, -lzh, -lzl)
        ly_err = lz_err + dy_err + EPS_OP * np.abs(lyh)
        nh, nl = _dd_mul(lyh, lyl, -wy, np.zeros_like(wy))
        n_err = np.abs(wy) * ly_err + 2 * EPS_OP * np.abs(nh)
        inf_loss = np.where(wy == 0, np.nan, np.where(wy > 0, np.inf, -np.inf))
        nh = np.where(wy == 0, 0.0, nh)  # 0 * l_y is 0 in mpmath, unsigned
        nh = np.where(target_ninf, inf_loss, nh)
        nl = np.where(target_ninf, 0.0, nl)
        n_err = np.where(target_ninf, 0.0, n_err)
        if self.smoothing:
            # smooth = -sum_j w_j l_j = W log z - sum_j w_j d_j   (no -inf here)
            sh_, sl_, sf, mag = acc.get("wd")
            wh, wl, wf, wmag = self.w_total
            th, tl = _dd_mul(lzh, lzl, np.full_like(lzh, wh), np.full_like(lzh, wl))
            smh, sml = _dd_add(th, tl, -sh_, -sl_)
            s_err = (
                acc.err.get("wd", 0.0)
                + (sf + row["slack"] + 4 * EPS_OP) * mag
                + wmag * (lz_err + (wf + 4 * EPS_OP) * np.abs(lzh))
                + 2 * EPS_OP * (np.abs(th) + np.abs(smh))
            )
            c1h, c1l = self.c1
            ceh, cel = self.ce
            ah, al = _dd_mul(nh, nl, np.full_like(nh, c1h), np.full_like(nh, c1l))
            bh, bl = _dd_mul(smh, sml, np.full_like(nh, ceh), np.full_like(nh, cel))
            lh, ll = _dd_add(ah, al, bh, bl)
            l_err = (
                abs(c1h) * n_err + ceh * s_err + 4 * EPS_OP * (np.abs(ah) + np.abs(bh) + np.abs(lh))
            )
            self.nll[0][idx], self.nll[1][idx], self.nll[2][idx] = nh, nl, n_err
            self.smooth[0][idx], self.smooth[1][idx], self.smooth[2][idx] = smh, sml, s_err
            self.fallback[idx] |= ~(_finite(nh, nl, n_err) & _finite(smh, sml, s_err))
            # a_j = ce w_j + [j = y] c1 w_y, so A = ce W + c1 w_y
            yh, yl = _dd_mul(np.full_like(wy, c1h), np.full_like(wy, c1l), wy, np.zeros_like(wy))
            cwh, cwl = _dd_mul(np.array(ceh), np.array(cel), np.array(wh), np.array(wl))
            Ah, Al = _dd_add(yh, yl, np.full_like(yh, cwh), np.full_like(yh, cwl))
            amag = np.abs(yh) + ceh * wmag
            row["A"] = (Ah, Al, (wf + 12 * EPS_OP) * amag + 8 * EPS_OP * np.abs(Ah))
            row["y_coeff"] = (yh, yl)
        else:
            lh, ll, l_err = nh, nl, n_err
        self.loss[0][idx], self.loss[1][idx], self.loss[2][idx] = lh, ll, l_err
        exact = (target_ninf | (wy == 0)) & (not self.smoothing)
        if p.reduction == "none":
            self.loss_ok[idx] = _certified(lh, ll, l_err) | exact
        else:  # a term lost to overflow: the position is recomputed
            self.fallback[idx] |= ~(_finite(lh, ll, l_err) | exact)
        if self.want_grad and not self.smoothing and kz is not None:
            # the general gradient: a_j = w_y at the target, 0 elsewhere; A = w_y
            zero = np.zeros_like(wy)
            row["A"] = (wy, zero, zero)
            row["y_coeff"] = (wy, zero)
        elif self.want_grad and not self.smoothing:
            sh, sl = self.sh[idx], self.sl[idx]
            qh, ql = _dd_mul(sh, sl, wy, np.zeros_like(wy))
            row["q"] = (qh, ql, 4 * EPS_OP * np.abs(qh))
            row["zero_q"] = (sh == 0) | (wy == 0)  # s w_y = 0: every g is 0, so is the gradient

    def _nll_grad(self, idx, c0, c1, eh, el, tiny, ninf, izh, izl, p_rel, row):
        """No smoothing: grad_j = e_j (s w_y / z) (j != y), -s w_y (1 - p_y) at the target."""
        qh, ql, q_err = row["q"]
        zero_q = row["zero_q"]
        # one product per logit: e_j times the row's q / z (relative error below p_rel + 6 EPS_OP)
        ch, cl = _dd_mul(izh, izl, qh, ql)
        gh, gl = _dd_mul(eh, el, ch[:, None], cl[:, None])
        g_rel = (p_rel + 8 * EPS_OP)[:, None]
        g_err = np.abs(gh) * g_rel + np.where(tiny & ~ninf, E_TINY * np.abs(qh)[:, None], 0.0)
        y = self.t[idx]
        sel = np.nonzero((y >= c0) & (y < c1))[0]
        ys = y[sel] - c0
        at_y = np.zeros(gh.shape, bool)
        if sel.size:
            py_h, py_l = _dd_mul(eh[sel, ys], el[sel, ys], izh[sel], izl[sel])
            ty = tiny[sel, ys]
            py_h, py_l = np.where(ty, 0.0, py_h), np.where(ty, 0.0, py_l)
            py_err = py_h * p_rel[sel] + np.where(ty & ~ninf[sel, ys], E_TINY, 0.0)
            oh, ol = _dd_add(np.ones_like(py_h), np.zeros_like(py_h), -py_h, -py_l)
            o_err = py_err + 2 * EPS_OP * (1 + py_h)
            yh, yl = _dd_mul(oh, ol, -qh[sel], -ql[sel])
            y_err = np.abs(qh[sel]) * o_err + np.abs(oh) * q_err[sel] + 4 * EPS_OP * np.abs(yh)
            gh[sel, ys], gl[sel, ys], g_err[sel, ys] = yh, yl, y_err
            at_y[sel, ys] = True
        gh[zero_q] = 0.0
        ok = _certified(gh, gl, g_err)
        # exactly 0 in mpmath: -inf logits off the target (p = 0, g = 0) and rows with s w_y = 0
        ninf_off = ninf & ~zero_q[:, None] & ~at_y
        ok |= ninf_off | zero_q[:, None]
        gh[ninf_off] = 0.0
        return gh, ok

    def _z_terms(self, idx, m, row) -> None:
        """Kernel fields, rows ``idx``: the z-loss terms c lse**2 (lse = m + log z), the
        z-loss's factor k = 2 c lse (times its reduction factor) on p_j in the gradient, and,
        for reduction 'none', each position's loss as cross-entropy + z-loss."""
        p = self.p
        zero = np.zeros(idx.size)
        cz = float(p.z_loss)
        lse_h, lse_l = _dd_add(m[:, 0], zero, row["lzh"], row["lzl"])
        lse_err = row["lz_err"] + EPS_OP * np.abs(lse_h)
        sq_h, sq_l = _dd_mul(lse_h, lse_l, lse_h, lse_l)
        zh, zl = _dd_mul(sq_h, sq_l, zero + cz, zero)
        z_err = cz * (2 * np.abs(lse_h) + lse_err) * lse_err + 4 * EPS_OP * np.abs(zh)
        kh, kl = _dd_mul(lse_h, lse_l, zero + 2 * cz, zero)
        kh, kl = _dd_mul(kh, kl, self.zsh[idx], self.zsl[idx])
        k_err = 2 * cz * np.abs(self.zsh[idx]) * lse_err * (1 + 2.0**-40) + 6 * EPS_OP * np.abs(kh)
        row["k"] = (kh, kl, k_err)
        self.zt[0][idx], self.zt[1][idx], self.zt[2][idx] = zh, zl, z_err
        if cz == 0:
            return  # no z-loss term at all (a return_z_loss of exactly 0)
        if p.reduction == "none":
            lh, ll, le = self.loss[0][idx], self.loss[1][idx], self.loss[2][idx]
            th, tl = _dd_add(lh, ll, zh, zl)
            te = le + z_err + EPS_OP * np.abs(th)
            self.loss[0][idx], self.loss[1][idx], self.loss[2][idx] = th, tl, te
            self.loss_ok[idx] = _certified(th, tl, te)
            if p.return_z_loss:
                self.fallback[idx] |= ~_certified(zh, zl, z_err)
        else:
            self.fallback[idx] |= ~_finite(zh, zl, z_err)

    def _kernel_grad(self, c0, c1, eh, el, tiny, izh, izl, p_rel, row, a_h, a_l, a_err, sh, sl):
        """Kernel fields: g_j = (e_j (s A + k) / z - s a_j) dz_j/dx_j, with k the z-loss's factor."""
        kz = row["kz"]
        Ah, Al, A_err = row["A"]
        kh, kl, k_err = row["k"]
        bh, bl = _dd_mul(sh, sl, Ah, Al)
        b_abs = np.abs(bh)
        bh, bl = _dd_add(bh, bl, kh, kl)
        b_err = np.abs(sh) * A_err * (1 + 2.0**-40) + k_err + 4 * EPS_OP * (b_abs + np.abs(kh))
        ch, cl = _dd_mul(izh, izl, bh, bl)
        th, tl = _dd_mul(eh, el, ch[:, None], cl[:, None])
        p_max = np.where(tiny, E_TINY, eh * izh[:, None] * (1 + 2.0**-50))  # >= p_j
        sah, sal = _dd_mul(a_h, a_l, sh[:, None], sl[:, None])
        uh, ul = _dd_add(th, tl, -sah, -sal)
        u_err = (
            np.abs(th) * (p_rel + 8 * EPS_OP)[:, None]
            + np.where(tiny, E_TINY * np.abs(bh)[:, None], 0.0)
            + p_max * b_err[:, None]
            + np.abs(sh)[:, None] * a_err * (1 + 2.0**-40)
            + 4 * EPS_OP * (np.abs(th) + np.abs(sah) + np.abs(uh))
        )
        slh, sll = kz[3][:, c0:c1], kz[4][:, c0:c1]
        gh, gl = _dd_mul(uh, ul, slh, sll)
        g_err = (
            np.abs(slh) * u_err * (1 + 2.0**-40)
            + np.abs(gh) * kz[5][:, c0:c1]
            + 4 * EPS_OP * np.abs(gh)
        )
        # exactly 0 in mpmath: no cross-entropy coefficient (s = 0 or a = 0) and no z-loss
        no_ce = (sh == 0) | ((Ah == 0) & (Al == 0) & np.all(a_h == 0, axis=1))
        zero = no_ce & (kh == 0) & (kl == 0)
        ok = _certified(gh, gl, g_err) | zero[:, None]
        gh[zero] = 0.0
        return gh, ok

    def _prob_coeffs(self, idx, c0, c1):
        """Probability targets, a block of a_j = w_j y_j (y_j = t_j or c1 t_j + ce) with bounds."""
        tt = self.t[idx, c0:c1]
        w = self.w[c0:c1]
        if self.smoothing:
            c1h, c1l = self.c1
            ceh, cel = self.ce
            yh, yl = _dd_mul(tt, np.zeros_like(tt), np.full_like(tt, c1h), np.full_like(tt, c1l))
            y_mag = np.abs(yh) + ceh
            yh, yl = _dd_add(yh, yl, np.full_like(tt, ceh), np.full_like(tt, cel))
            y_err = 6 * EPS_OP * y_mag
        else:
            yh, yl, y_err, y_mag = tt, np.zeros_like(tt), np.zeros_like(tt), np.abs(tt)
        a_h, a_l = _dd_mul(yh, yl, np.broadcast_to(w, yh.shape), np.zeros_like(yh))
        return a_h, a_l, np.abs(w) * y_err + 4 * EPS_OP * np.abs(w) * y_mag

    def _prob_loss(self, idx, acc, row) -> None:
        """loss = -sum_j a_j l_j = A log z - sum_j a_j d_j."""
        lzh, lzl, lz_err = row["lzh"], row["lzl"], row["lz_err"]
        sh_, sl_, sf, mag = acc.get("ad")
        Ah, Al, Af, amag = acc.get("A")
        A_err = acc.err["A"] + (Af + row["slack"] + 2 * EPS_OP) * amag
        row["A"] = (Ah, Al, A_err)
        th, tl = _dd_mul(lzh, lzl, Ah, Al)
        lh, ll = _dd_add(th, tl, -sh_, -sl_)
        l_err = (
            acc.err.get("ad", 0.0)
            + (sf + row["slack"] + 6 * EPS_OP) * mag
            + amag * lz_err
            + A_err * np.abs(lzh)
            + 4 * EPS_OP * (np.abs(th) + np.abs(lh))
        )
        self.loss[0][idx], self.loss[1][idx], self.loss[2][idx] = lh, ll, l_err
        if self.p.reduction == "none":
            self.loss_ok[idx] = _certified(lh, ll, l_err)
        else:
            self.fallback[idx] |= ~_finite(lh, ll, l_err)

    def _general_grad(self, idx, c0, c1, eh, el, tiny, izh, izl, p_rel, row):
        """grad_j = s (p_j A - a_j) = s (e_j (A / z) - a_j): smoothing or probability targets."""
        if self.p.probability_target:
            a_h, a_l, a_err = self._prob_coeffs(idx, c0, c1)
        else:
            ceh, cel = self.ce
            w = self.w[c0:c1]
            awh, awl = _dd_mul(np.full_like(w, ceh), np.full_like(w, cel), w, np.zeros_like(w))
            a_h = np.repeat(awh[None, :], idx.size, axis=0)
            a_l = np.repeat(awl[None, :], idx.size, axis=0)
            a_err = np.repeat(4 * EPS_OP * np.abs(awh)[None, :], idx.size, axis=0)
            y = self.t[idx]
            sel = np.nonzero((y >= c0) & (y < c1))[0]
            if sel.size:
                ys = y[sel] - c0
                yh, yl = row["y_coeff"][0][sel], row["y_coeff"][1][sel]
                th, tl = _dd_add(yh, yl, a_h[sel, ys], a_l[sel, ys])
                a_err[sel, ys] = 8 * EPS_OP * (np.abs(yh) + np.abs(a_h[sel, ys]))
                a_h[sel, ys], a_l[sel, ys] = th, tl
        Ah, Al, A_err = row["A"]
        sh, sl = self.sh[idx], self.sl[idx]
        if row["kz"] is not None:
            return self._kernel_grad(
                c0, c1, eh, el, tiny, izh, izl, p_rel, row, a_h, a_l, a_err, sh, sl
            )
        # one product per logit: e_j times the row's A / z (relative error below p_rel + 6 EPS_OP)
        ch, cl = _dd_mul(izh, izl, Ah, Al)
        th, tl = _dd_mul(eh, el, ch[:, None], cl[:, None])
        p_max = np.where(tiny, E_TINY, eh * izh[:, None] * (1 + 2.0**-50))  # >= p_j
        uh, ul = _dd_add(th, tl, -a_h, -a_l)
        u_err = (
            np.abs(th) * (p_rel + 8 * EPS_OP)[:, None]
            + np.where(tiny, E_TINY * np.abs(Ah)[:, None], 0.0)
            + p_max * A_err[:, None]
            + a_err
            + 4 * EPS_OP * (np.abs(th) + np.abs(a_h))
        )
        gh, gl = _dd_mul(uh, ul, sh[:, None], sl[:, None])
        g_err = np.abs(sh)[:, None] * u_err * (1 + 4 * EPS_OP) + 4 * EPS_OP * np.abs(gh)
        zero = sh == 0
        ok = _certified(gh, gl, g_err) | zero[:, None]
        gh[zero] = 0.0
        return gh, ok

    # ------------------------------------------------------------ reductions and fallbacks
    def _finish(self, reduced: bool) -> Expected | None:
        settled = self.settle(reduced)
        if settled is None:
            return None
        loss_out, rows_mp = settled
        if self.grad is None:  # the gradient is not wanted
            return Expected(loss_out, None, z_loss=self.z_out)
        for n, (_, g, _) in rows_mp.items():
            self.grad[n] = g
        return Expected(loss_out, self.p.grad_from_rows(self.grad), z_loss=self.z_out)

    def settle(self, reduced: bool) -> tuple[np.ndarray, dict] | None:
        """The loss, after recomputing the undecided positions in mpmath; with those positions'
        (terms, gradient row, z-loss term). None: a reduced loss not decided (the mpmath oracle decides)."""
        p = self.p
        redo = self.fallback | (~self.loss_ok if not reduced else False)
        rows_mp = {}
        loss_out: np.ndarray | None
        stats["rows_mpmath"] += int(np.count_nonzero(redo))
        for n in np.nonzero(redo)[0].tolist():
            rows_mp[n] = self._mp_row(n)
        if not reduced:
            out = np.where(self.loss_ok & ~self.fallback, self.loss[0], 0.0)
            for n, (terms, _, z) in rows_mp.items():
                out[n] = float(terms[0] + z if p.z_loss != 0 else terms[0])
            loss_out = out.reshape(p.loss_shape())
            if p.return_z_loss:
                zo = np.where(self.fallback, 0.0, self.zt[0])
                for n, (_, _, z) in rows_mp.items():
                    zo[n] = float(z)
                self.z_out = zo.reshape(p.loss_shape())
        else:
            loss_out = self._reduced(rows_mp)
            if loss_out is None:
                return None
        return loss_out, rows_mp

    def _mp_row(self, n: int):
        """Position ``n`` by the mpmath oracle's own code: its terms and gradient row."""
        p = self.p
        x = np.asarray(self.x[n], dtype=np.float64)
        f = ref.row_forward(p, x, self.t[n], self.w_mp, self.eps_mp, self.c)
        grad = None
        if self.want_grad:
            scale = self.scale_mp[n] if self.scale_mp is not None else mpmath.mpf(float(self.sh[n]))
            z_scale = self.zscale_mp[n] if self.zscale_mp is not None else scale
            grad = [float(v) for v in ref.row_backward(p, f, scale, z_scale, self.t[n], self.c)]
        return f.terms, grad, f.z

    def _reduced(self, rows_mp) -> np.ndarray | None:
        p = self.p
        split = self.smoothing and not p.probability_target
        parts = [self.nll, self.smooth] if split else [self.loss]
        totals = []
        for k, part in enumerate(parts):
            h, low, e = (part[0].copy(), part[1].copy(), part[2].copy())
            for n, (terms, _, _) in rows_mp.items():
                v = terms[1 + k] if split else terms[0]
                h[n], low[n] = _to_dd(v)
                e[n] = abs(h[n]) * 2.0**-104
            if not np.all(np.isfinite(h)) or np.any(np.abs(h) > 2.0**900):
                if self.kernel:
                    return None  # the mpmath oracle adds the z-loss's terms to the IEEE total
                return self._nonfinite_total(parts, rows_mp, split)
            sh, sl, sf = _sum_last(h[None, :], low[None, :])
            err = float(np.sum(e)) + sf * float(np.sum(np.abs(h)))
            totals.append((float(sh[0]), float(sl[0]), err))
        if p.reduction == "mean":
            fh, fl = _to_dd(ref.factor(p, self.den))
            totals = [
                (
                    *_dd_mul(np.array(h), np.array(low), np.array(fh), np.array(fl)),
                    abs(fh) * e * (1 + 2.0**-50) + 4 * EPS_OP * abs(fh * h),
                )
                for h, low, e in totals
            ]
        if split:
            (ah, al, ae), (bh, bl, be) = totals
            c1h, c1l = self.c1
            ceh, cel = self.ce
            xh, xl = _dd_mul(np.array(ah), np.array(al), np.array(c1h), np.array(c1l))
            yh, yl = _dd_mul(np.array(bh), np.array(bl), np.array(ceh), np.array(cel))
            th, tl = _dd_add(xh, xl, yh, yl)
            te = (
                abs(c1h) * ae
                + ceh * be
                + 4 * EPS_OP * (abs(float(xh)) + abs(float(yh)) + abs(float(th)))
            )
        else:
            th, tl, te = totals[0]
        th, tl = np.array(th, dtype=np.float64), np.array(tl, dtype=np.float64)
        if self.kernel:
            z = self._z_total(rows_mp)
            if z is None:
                return None
            zh, zl, ze = z
            if p.return_z_loss:
                if p.z_loss == 0:
                    self.z_out = np.array(0.0)
                elif _certified(zh, zl, ze):
                    self.z_out = np.array(float(zh))
                else:
                    return None
            if p.z_loss != 0:
                xh, xl = th, tl
                th, tl = _dd_add(xh, xl, zh, zl)
                te = te + ze + EPS_OP * (abs(float(xh)) + abs(float(zh)) + abs(float(th)))
        if not _certified(th, tl, np.array(te)):
            return None
        return np.array(float(th), dtype=np.float64)

    def _z_total(self, rows_mp):
        """The z-loss terms reduced (a sum, or a mean over the kept positions)."""
        h, low, e = self.zt[0].copy(), self.zt[1].copy(), self.zt[2].copy()
        for n, (_, _, z) in rows_mp.items():
            h[n], low[n] = _to_dd(z)
            e[n] = abs(h[n]) * 2.0**-104
        if not np.all(np.isfinite(h)) or np.any(np.abs(h) > 2.0**900):
            return None
        sh, sl, sf = _sum_last(h[None, :], low[None, :])
        zh, zl = np.array(sh[0]), np.array(sl[0])
        err = float(np.sum(e)) + sf * float(np.sum(np.abs(h)))
        if self.p.reduction == "mean":
            fh, fl = self.zsh[:1], self.zsl[:1]
            xh = zh
            zh, zl = _dd_mul(zh, zl, fh[0], fl[0])
            err = abs(float(fh[0])) * err * (1 + 2.0**-50) + 4 * EPS_OP * abs(float(fh[0] * xh))
        return zh, zl, np.array(err)

    def _nonfinite_total(self, parts, rows_mp, split):
        """A reduction with an infinite or NaN term: the IEEE rules mpmath follows."""
        mp = mpmath
        vals = []
        for k, part in enumerate(parts):
            v = part[0].astype(np.float64).copy()
            for n, (terms, _, _) in rows_mp.items():
                t = terms[1 + k] if split else terms[0]
                v[n] = float(t) if (mp.isnan(t) or mp.isinf(t)) else 0.0
            v[np.isfinite(v)] = 0.0  # finite terms cannot change a non-finite total
            pos, neg = bool(np.any(v == np.inf)), bool(np.any(v == -np.inf))
            if np.any(np.isnan(v)) or (pos and neg):
                total = math.nan
            elif pos or neg:
                total = math.inf if pos else -math.inf
            else:
                total = 0.0  # finite
            if self.p.reduction == "mean" and self.den is not None and self.den < 0:
                total = -total
            vals.append(total)
        if all(math.isfinite(v) for v in vals):
            return None  # finite but huge terms: the mpmath oracle sums them
        if split:
            c1 = float(1 - self.eps_mp)  # 0 exactly when eps = 1; eps / C > 0
            return np.array(c1 * vals[0] + 1.0 * vals[1], dtype=np.float64)
        return np.array(vals[0], dtype=np.float64)
