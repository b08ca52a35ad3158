"""numba code of ``harness.oracle.compiled`` (imported only when numba is installed and a
problem is large enough). The functions mirror ``harness.oracle.fast``'s, one value at a
time, but for the cheaper exponential that ``rows`` tries first (``_exp_tile_fast``, whose
error ``fast``'s module docstring bounds); the constants come from ``harness.oracle.bounds``
and are compiled in.

Two operations differ in how, not in what: the error of a product comes from one fused
multiply-add (``fma(a, b, -a b)``, exact wherever Dekker's splitting product of ``fast`` is
exact, and closer than it where the error underflows, which every bound's ``_ABS_SLACK``
covers), and powers of two and ulps are read from and written into the bits of a float64
(``fast`` uses ``frexp`` / ``nextafter``; the values are the same). Every function takes
numba's ``error_model="numpy"``: IEEE results (x / 0 is inf or NaN, as in NumPy), no
exception checks in the loops."""

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import njit, types
from numba.extending import intrinsic, overload

from harness.oracle.bounds import (
    _ABS_SLACK,
    _HALF_MARGIN,
    _MAX_OK,
    _MIN_OK,
    E_TINY,
    EPS_EXP,
    EPS_EXP_FAST,
    EPS_OP,
    TINY_D,
)

_EXPONENT_BITS = 0x7FF0000000000000
_FRACTION_BITS = 0x000FFFFFFFFFFFFF


def _intrinsic(f: Callable[..., Any]) -> Callable[..., Any]:
    """numba's ``intrinsic`` (code generated into the caller), seen by mypy as a callable."""
    return intrinsic(f)


@_intrinsic
def fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c rounded once (LLVM's ``llvm.fma.f64``: the instruction, or libm's fma)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        d = ir.DoubleType()
        f = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
        return builder.call(f, args)

    return sig, codegen


@_intrinsic
def float_bits(typingctx: Any, a: Any) -> Any:
    """The bits of a float64, as an int64."""
    sig = types.int64(types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@_intrinsic
def bits_float(typingctx: Any, i: Any) -> Any:
    """The float64 with the bits of an int64."""
    sig = types.float64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@njit(cache=True, error_model="numpy")
def two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(cache=True, error_model="numpy")
def fast_two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    return s, b - (s - a)


@njit(cache=True, error_model="numpy")
def two_prod(a: float, b: float) -> tuple[float, float]:
    p = a * b
    return p, fma(a, b, -p)


@njit(cache=True, error_model="numpy")
def dd_mul(ah: float, al: float, bh: float, bl: float) -> tuple[float, float]:
    p, e = two_prod(ah, bh)
    e = e + (ah * bl + al * bh)
    return fast_two_sum(p, e)


@njit(cache=True, error_model="numpy")
def dd_add(ah: float, al: float, bh: float, bl: float) -> tuple[float, float]:
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


@njit(cache=True, error_model="numpy")
def exp_dd(
    ah: float, al: float, tab: np.ndarray, pieces: np.ndarray, inv: float
) -> tuple[float, float]:
    # fast._exp_dd, one value: valid for -600 <= ah <= 1, relative error < EPS_EXP
    k = np.rint(ah * inv)
    s, e1 = two_sum(ah, -k * pieces[0])
    s, e2 = two_sum(s, -k * pieces[1])
    s, e3 = two_sum(s, -k * pieces[2])
    s, e4 = two_sum(s, al)
    rh, rl = fast_two_sum(s, (((e1 + e2) + e3) + e4) - k * pieces[3])
    ki = np.int64(k)
    j2 = ki & 4095
    j1 = (ki >> 12) & 4095
    tail = rh * rh * (0.5 + rh * (1.0 / 6))
    eh, el = fast_two_sum(rh, rl + tail)
    mh, ml = dd_mul(tab[0, j1], tab[1, j1], tab[2, j2], tab[3, j2])
    p, pe = two_prod(mh, eh)
    pe = pe + (mh * el + ml * eh)
    s, e = two_sum(mh, p)
    s, e = fast_two_sum(s, e + (ml + pe))
    f = bits_float(((ki >> 24) + 1023) << 52)
    return s * f, e * f


#: logits per tile of ``_exp_tile``
_TILE = 512


@njit(cache=True, error_model="numpy")
def _exp_tile(
    xi: np.ndarray,
    j0: int,
    j1: int,
    m: float,
    tab: np.ndarray,
    pieces: np.ndarray,
    inv: float,
    eh_row: np.ndarray,
    el_row: np.ndarray,
    tile: np.ndarray,
) -> int:
    """``exp_dd(x_j - m)`` for j in [j0, j1) into ``eh_row``, ``el_row`` (0 below TINY_D),
    and how many were below it. ``exp_dd``'s operations, in three loops: the two without
    table look-ups run in SIMD lanes, which LLVM does not do for one loop with the look-ups
    (gathers, which its cost model declines here). The loops index slices from 0, so that
    LLVM sees contiguous loads and stores. ``tile`` (5, _TILE): scratch."""
    p0, p1, p2, p3 = pieces[0], pieces[1], pieces[2], pieces[3]
    kk = tile[0]
    n = j1 - j0
    xs = xi[j0:j1]
    eo = eh_row[j0:j1]
    lo = el_row[j0:j1]
    for j in range(n):  # the argument's reduction, the polynomial
        dh, dl = two_sum(np.float64(xs[j]), -m)
        ah = dh if dh >= TINY_D else TINY_D
        k = np.rint(ah * inv)
        s, e1 = two_sum(ah, -k * p0)
        s, e2 = two_sum(s, -k * p1)
        s, e3 = two_sum(s, -k * p2)
        s, e4 = two_sum(s, dl)
        rh, rl = fast_two_sum(s, (((e1 + e2) + e3) + e4) - k * p3)
        tail = rh * rh * (0.5 + rh * (1.0 / 6))
        eh, el = fast_two_sum(rh, rl + tail)
        kk[j] = k
        eo[j] = eh
        lo[j] = el
    g1h, g1l, g2h, g2l = tile[1], tile[2], tile[3], tile[4]
    for j in range(n):  # the table look-ups
        ki = np.int64(kk[j])
        a = (ki >> 12) & 4095
        b = ki & 4095
        g1h[j] = tab[0, a]
        g1l[j] = tab[1, a]
        g2h[j] = tab[2, b]
        g2l[j] = tab[3, b]
    n_tiny = 0
    for j in range(n):  # the product with the tables' values, the power of two
        tiny = np.float64(xs[j]) - m < TINY_D
        ki = np.int64(kk[j])
        eh = eo[j]
        el = lo[j]
        mh, ml = dd_mul(g1h[j], g1l[j], g2h[j], g2l[j])
        p, pe = two_prod(mh, eh)
        pe = pe + (mh * el + ml * eh)
        s, e = two_sum(mh, p)
        s, e = fast_two_sum(s, e + (ml + pe))
        f = bits_float(((ki >> 24) + 1023) << 52)
        eo[j] = 0.0 if tiny else s * f
        lo[j] = 0.0 if tiny else e * f
        n_tiny += tiny
    return n_tiny


@njit(cache=True, error_model="numpy")
def _exp_tile_fast(
    xi: np.ndarray,
    j0: int,
    j1: int,
    m: float,
    exact: bool,
    tab1: np.ndarray,
    red: np.ndarray,
    eh_row: np.ndarray,
    el_row: np.ndarray,
    tile: np.ndarray,
) -> int:
    """``_exp_tile`` with one table instead of two, relative error below EPS_EXP_FAST
    (``harness.oracle.fast``'s module docstring derives it): x_j - m = k ln2/4096 + r with
    ln2/4096 in three pieces (``red``: the pieces, then 4096/ln2), ``exp(r) - 1`` by a
    polynomial of degree 6 whose leading terms r and r**2/2 are kept exact, times
    ``2**(k/4096)`` from ``tab1`` (4096, 2) (a double-double). About half of ``_exp_tile``'s
    operations, and two look-ups in one cache line instead of four in two. The same three
    loops. ``exact``: every x - m is exact in float64 (its TwoSum is left out)."""
    q1, q2, q3, inv = red[0], red[1], red[2], red[3]
    kk = tile[0]
    n = j1 - j0
    xs = xi[j0:j1]
    eo = eh_row[j0:j1]
    lo = el_row[j0:j1]
    at = tile[3].view(np.int64)  # k's table entry (converted here, in SIMD lanes)
    for j in range(n):  # k
        dh = np.float64(xs[j]) - m
        ah = dh if dh >= TINY_D else TINY_D
        k = np.rint(ah * inv)
        kk[j] = k
        at[j] = np.int64(k) & 4095
    th, tl = tile[1], tile[2]
    for j in range(n):  # the table look-ups
        b = at[j]
        th[j] = tab1[b, 0]
        tl[j] = tab1[b, 1]
    n_tiny = 0
    for j in range(n):
        if exact:
            dh, dl = np.float64(xs[j]) - m, 0.0
        else:
            dh, dl = two_sum(np.float64(xs[j]), -m)
        tiny = dh < TINY_D
        ah = dh if dh >= TINY_D else TINY_D
        k = kk[j]
        # r = rh + rl: k q1 and k q2 are exact (|k| < 2**22, q1 and q2 of 30 bits), and so
        # is ah - k q1 (Sterbenz)
        rh, e2 = two_sum(ah - k * q1, -k * q2)
        rl = (e2 + dl) - k * q3
        # exp(r) - 1 = rh + w/2 + c: w + we = rh**2 exactly, t = rh**3/6 + ... + rh**6/720,
        # c = t + we/2 + rl exp(rh) + rl**2/2 (to the orders the bound keeps)
        w, we = two_prod(rh, rh)
        t = w * rh * ((1.0 / 6) + rh * ((1.0 / 24) + rh * ((1.0 / 120) + rh * (1.0 / 720))))
        hw = 0.5 * w
        c = (t + 0.5 * we) + rl * (1.0 + (rh + ((hw + t) + 0.5 * rl)))
        # (Th + Tl)(1 + ph + pl) with ph + pl = rh + w/2 + c: Th ph exact, summed exactly
        # onto Th, the rest in one fused multiply-add
        ph, pe = fast_two_sum(rh, hw)
        pl = pe + c
        t_h = th[j]
        t_l = tl[j]
        a, ae = two_prod(t_h, ph)
        s, e1 = fast_two_sum(t_h, a)
        s, e = fast_two_sum(s, fma(t_h, pl, (e1 + ae) + (t_l + t_l * ph)))
        f = bits_float(((np.int64(k) >> 12) + 1023) << 52)
        eo[j] = 0.0 if tiny else s * f
        lo[j] = 0.0 if tiny else e * f
        n_tiny += tiny
    return n_tiny


@njit(cache=True, error_model="numpy")
def _tile_sum(eh_row: np.ndarray, el_row: np.ndarray, j0: int, j1: int,
              tile: np.ndarray) -> tuple[float, float]:  # fmt: skip
    """The sum of the exponentials [j0, j1) (all >= 0), as a double-double. A full tile is
    summed as a tree, half onto half, each level one loop in SIMD lanes (into ``tile``'s
    rows 3 and 4); a shorter one in order. Either way each addition errs by at most EPS_OP
    of its result, a partial sum of non-negative terms."""
    n = j1 - j0
    eo = eh_row[j0:j1]
    lo = el_row[j0:j1]
    if n != _TILE:
        sh = 0.0
        sl = 0.0
        for j in range(n):
            sh, sl = _sum_same_sign(sh, sl, eo[j], lo[j])
        return sh, sl
    h = _TILE // 2
    ah, al = tile[3], tile[4]
    for j in range(h):
        ah[j], al[j] = _sum_same_sign(eo[j], lo[j], eo[h + j], lo[h + j])
    while h > 1:
        h //= 2
        bh, bl = ah[h : 2 * h], al[h : 2 * h]
        for j in range(h):
            ah[j], al[j] = _sum_same_sign(ah[j], al[j], bh[j], bl[j])
    return ah[0], al[0]


@njit(cache=True, error_model="numpy")
def _sum_same_sign(ah: float, al: float, bh: float, bl: float) -> tuple[float, float]:
    """(ah + al) + (bh + bl) for two double-doubles of one sign: relative error < EPS_OP."""
    s, e = two_sum(ah, bh)
    return fast_two_sum(s, e + (al + bl))


@njit(cache=True, error_model="numpy")
def certified(h: float, low: float, err: float) -> bool:
    # fast._certified, one value
    a = abs(h)
    if not (a >= _MIN_OK and a < _MAX_OK):
        return False
    err = err + _ABS_SLACK
    bits = float_bits(a)
    # an ulp above a (a normal float64): 2**-52 times its power of two; below it, half that
    # when a is a power of two
    up = bits_float(bits & _EXPONENT_BITS) * 2.0**-52
    down = up * 0.5 if (bits & _FRACTION_BITS) == 0 else up
    if h < 0:
        up, down = down, up
    return low + err < _HALF_MARGIN * up and low - err > -_HALF_MARGIN * down


@njit(cache=True, error_model="numpy")
def _scan(xi: np.ndarray, lanes: np.ndarray) -> tuple[float, bool, bool, int]:
    """A row's largest logit (NaN passed over: -inf where there is no other), whether every
    logit is finite, whether one is NaN or +inf, and the span of the binary exponents of
    its logits other than 0 (largest less smallest). Without branches, so that it runs in
    SIMD lanes: the maxima of each position in the tiles into ``lanes`` (_TILE; a row of
    fewer logits uses as many), then theirs. Of a +0 and a -0, either may be the largest: x - m is the same number either
    way, and exp(x - m) the same value."""
    c = xi.shape[0]
    width = min(c, _TILE)  # the lanes a row of fewer logits than a tile uses
    for j in range(width):
        lanes[j] = -np.inf
    n_inf = 0  # logits not finite
    n_nan = 0  # NaN or +inf
    e_max = 0
    e_min = 0x7FF
    for j0 in range(0, c, _TILE):
        xs = xi[j0 : min(c, j0 + _TILE)]
        for j in range(xs.shape[0]):
            v = np.float64(xs[j])
            a = lanes[j]
            lanes[j] = v if v > a else a
            n_inf += not (abs(v) < np.inf)
            n_nan += not (v < np.inf)
            e = (float_bits(v) >> 52) & 0x7FF
            e_max = e if e > e_max else e_max
            e = e if v != 0 else 0x7FF
            e_min = e if e < e_min else e_min
    m = -np.inf
    for j in range(width):
        if lanes[j] > m:
            m = lanes[j]
    return m, n_inf == 0, n_nan > 0, e_max - e_min


#: ``_row``'s outcomes: the row is done (certified, or marked bad), or its values are not
#: all certified and it is computed again with the precise exponential
_DONE = 0
_AGAIN = 1


def _as_float64(xi: np.ndarray, out: np.ndarray) -> np.ndarray:
    """A row of logits as float64: ``xi`` itself when it holds float64, else ``xi``
    converted into ``out`` (exactly: every float32 is a float64). Compiled code only (its
    numba implementation below); the functions under ``row_chunk`` are compiled once, for
    float64 rows, whatever the logits' dtype."""
    raise NotImplementedError("compiled code only")


@overload(_as_float64)
def _as_float64_numba(xi: Any, out: Any) -> Callable[..., Any]:
    # numba requires the implementations' parameters, annotations included, to be these
    def same(xi: Any, out: Any) -> Any:
        return xi

    def convert(xi: Any, out: Any) -> Any:
        for j in range(xi.shape[0]):
            out[j] = xi[j]
        return out

    return same if xi.dtype == types.float64 else convert


@njit(cache=True, error_model="numpy", nogil=True)
def row_chunk(
    x: np.ndarray,
    lo: int,
    hi: int,
    y: np.ndarray,
    ignore_index: int,
    w: np.ndarray,
    sh: np.ndarray,
    sl: np.ndarray,
    want_grad: bool,
    zeroed: bool,
    tab: np.ndarray,
    pieces: np.ndarray,
    inv: float,
    tab1: np.ndarray,
    red: np.ndarray,
    loss: np.ndarray,
    grad: np.ndarray,
    bad: np.ndarray,
    again: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """Rows [lo, hi) of ``harness.oracle.compiled.rows``, in order, on the calling thread
    (which this releases: threads run chunks side by side). Per row: the NLL (hi, lo, err)
    into ``loss``; the gradient into ``grad``; ``bad`` set where anything is not certified
    or not finite (the row goes to mpmath; its gradient row is left as it was); ``again``
    set where the row was computed a second time, with the precise exponentials (below). An
    ignored row keeps loss 0 and gets gradient 0, NaN in a row holding NaN or +inf or only
    -inf (``0 * nan``). ``zeroed``: ``grad`` holds zeros, and rows of zeros are left
    unwritten (fresh memory then is never touched: no page faults for ignored rows).
    ``scratch`` (3, C): the row's exponentials (high and low parts), and the row as
    float64 where the logits are float32 (no allocation per row).

    Each row is computed with ``_exp_tile_fast``'s exponentials first; a row whose values
    are not all certified that way (about one gradient entry in 2**30 is too close to a
    rounding boundary for its bound) is computed again with ``exp_dd``'s, as ``fast``
    computes it, and only what that leaves undecided goes to mpmath. ``tab``, ``pieces``,
    ``inv``: ``exp_dd``'s tables and reduction; ``tab1``, ``red``: ``_exp_tile_fast``'s."""
    eh_row = scratch[0]
    el_row = scratch[1]
    tile = np.empty((5, _TILE))
    is32 = x.itemsize == 4
    for i in range(lo, hi):
        xi = _as_float64(x[i], scratch[2])
        for fast in (True, False):
            done = _row(
                i, xi, is32, y, ignore_index, w, sh, sl, want_grad, zeroed, tab, pieces, inv,
                tab1, red, fast, loss, grad, bad, eh_row, el_row, tile,
            )  # fmt: skip
            if done == _DONE:
                break
            again[i] = True
            if not fast:
                bad[i] = True


@njit(cache=True, error_model="numpy")
def _row(
    i: int,
    xi: np.ndarray,
    is32: bool,
    y: np.ndarray,
    ignore_index: int,
    w: np.ndarray,
    sh: np.ndarray,
    sl: np.ndarray,
    want_grad: bool,
    zeroed: bool,
    tab: np.ndarray,
    pieces: np.ndarray,
    inv: float,
    tab1: np.ndarray,
    red: np.ndarray,
    fast: bool,
    loss: np.ndarray,
    grad: np.ndarray,
    bad: np.ndarray,
    eh_row: np.ndarray,
    el_row: np.ndarray,
    tile: np.ndarray,
) -> int:
    """Row i of ``row_chunk`` (``xi``: its logits as float64; ``is32``: they were float32)
    with ``_exp_tile_fast``'s exponentials (``fast``) or ``exp_dd``'s (``eh_row``,
    ``el_row``: scratch of C values; ``tile``: the tiles' scratch): ``_DONE``, or ``_AGAIN``
    where a value is not certified (with ``fast``, the loss too)."""
    c = xi.shape[0]
    yi = y[i]
    m, finite, nan_row, span = _scan(xi, tile[0])
    # float32 logits whose exponents span at most 28: every x - m is exact in float64 (two
    # 24-bit significands at most 28 places apart), and ``_exp_tile_fast`` need not take
    # the rounding error of the subtraction
    exact = is32 and span <= 28
    if yi == ignore_index:
        v = np.nan if nan_row or m == -np.inf else 0.0
        if want_grad and not (zeroed and v == 0):  # the caller need not clear the rows
            for j in range(c):
                grad[i, j] = v
        return _DONE
    if not finite or not (abs(sh[i]) < np.inf):
        bad[i] = True
        return _DONE
    # the exponentials tile by tile, and z their sum: each tile's sum (``_tile_sum``) added
    # to the total. Every term is >= 0, so each of the C - 1 additions errs by at most
    # EPS_OP of a partial sum <= z, in whatever order they are made
    n_tiny = 0
    zh = 0.0
    zl = 0.0
    for j0 in range(0, c, _TILE):
        j1 = min(c, j0 + _TILE)
        if fast:
            n_tiny += _exp_tile_fast(xi, j0, j1, m, exact, tab1, red, eh_row, el_row, tile)
        else:
            n_tiny += _exp_tile(xi, j0, j1, m, tab, pieces, inv, eh_row, el_row, tile)
        th, tl = _tile_sum(eh_row, el_row, j0, j1, tile)
        zh, zl = _sum_same_sign(zh, zl, th, tl)
    eps_e = EPS_EXP_FAST if fast else EPS_EXP  # the exponentials' relative error
    # z >= 1: its relative error (C - 1 additions: EPS_OP per term)
    z_rel = eps_e + (c + 2) * EPS_OP + n_tiny * E_TINY
    # log z: y0 = log(z_hi), one Newton step (fast._log_dd)
    y0 = math.log(zh)
    wh, wl = exp_dd(-y0, 0.0, tab, pieces, inv)
    ph, pl = dd_mul(zh, zl, wh, wl)
    d = (ph - 1.0) + pl
    lzh, lzl = two_sum(y0, d - 0.5 * d * d)
    lzh, lzl = fast_two_sum(lzh, lzl)
    if not abs(d) < 2.0**-30:
        return _AGAIN
    lz_err = EPS_EXP + 4 * EPS_OP * (1 + abs(lzh)) + abs(d) ** 3 + 2 * z_rel
    # the loss: -w_y (x_y - m - log z)
    wy = w[yi]
    dyh, dyl = two_sum(xi[yi], -m)
    lyh, lyl = dd_add(dyh, dyl, -lzh, -lzl)
    ly_err = lz_err + EPS_OP * abs(lyh)
    nh, nl = dd_mul(lyh, lyl, -wy, 0.0)
    n_err = abs(wy) * ly_err + 2 * EPS_OP * abs(nh)
    if wy == 0:
        nh, nl, n_err = 0.0, 0.0, 0.0
    loss[i, 0] = nh
    loss[i, 1] = nl
    loss[i, 2] = n_err
    if not (abs(nh) < _MAX_OK and abs(nl) < np.inf and n_err < np.inf):
        bad[i] = True
        return _DONE
    # a loss not certified alone (whether it must be is the caller's to decide: a reduced
    # loss is certified as a total) might be with the precise exponentials
    if fast and wy != 0 and not certified(nh, nl, n_err):
        return _AGAIN
    if not want_grad:
        return _DONE
    # 1/z by one Newton step from 1/z_hi
    q0 = 1.0 / zh
    rh, rl = dd_mul(zh, zl, q0, 0.0)
    r = (1.0 - rh) - rl
    izh, izl = fast_two_sum(q0, q0 * r)
    p_rel = eps_e + z_rel + 2 * r * r + 8 * EPS_OP
    qh, ql = dd_mul(sh[i], sl[i], wy, 0.0)
    q_err = 4 * EPS_OP * abs(qh)
    if sh[i] == 0 or wy == 0:  # s w_y = 0: every entry is exactly 0 (not an underflow)
        if not zeroed:
            for j in range(c):
                grad[i, j] = 0.0
        return _DONE
    ch, cl = dd_mul(izh, izl, qh, ql)
    g_rel = p_rel + 8 * EPS_OP
    # every entry as a non-target one, without branches (the loop runs in SIMD lanes), then
    # the target's entry in place of its own
    tiny_err = E_TINY * abs(qh)
    n_bad = 0
    for j in range(c):
        gh, gl, g_err = _grad_entry(eh_row[j], el_row[j], ch, cl, g_rel, tiny_err)
        grad[i, j] = gh
        n_bad += not _certified_lanes(gh, gl, g_err)
    gh, gl, g_err = _grad_entry(eh_row[yi], el_row[yi], ch, cl, g_rel, tiny_err)
    n_bad -= not _certified_lanes(gh, gl, g_err)
    eh = eh_row[yi]
    if eh == 0:
        py_h, py_l, py_err = 0.0, 0.0, E_TINY
    else:
        py_h, py_l = dd_mul(eh, el_row[yi], izh, izl)
        py_err = py_h * p_rel
    oh, ol = dd_add(1.0, 0.0, -py_h, -py_l)
    o_err = py_err + 2 * EPS_OP * (1 + py_h)
    gh, gl = dd_mul(oh, ol, -qh, -ql)
    g_err = abs(qh) * o_err + abs(oh) * q_err + 4 * EPS_OP * abs(gh)
    grad[i, yi] = gh
    n_bad += not _certified_lanes(gh, gl, g_err)
    return _AGAIN if n_bad else _DONE


@njit(cache=True, error_model="numpy")
def _grad_entry(
    eh: float, el: float, ch: float, cl: float, g_rel: float, tiny_err: float
) -> tuple[float, float, float]:
    """A non-target gradient entry (eh + el) (ch + cl), with its error bound."""
    gh, gl = dd_mul(eh, el, ch, cl)
    if eh == 0:
        return 0.0, 0.0, tiny_err
    return gh, gl, abs(gh) * g_rel


@njit(cache=True, error_model="numpy")
def _certified_lanes(h: float, low: float, err: float) -> bool:
    """``certified`` without branches."""
    a = abs(h)
    bits = float_bits(a)
    up = bits_float(bits & _EXPONENT_BITS) * 2.0**-52
    down = up * 0.5 if (bits & _FRACTION_BITS) == 0 else up
    above = down if h < 0 else up
    below = up if h < 0 else down
    err = err + _ABS_SLACK
    return (
        (a >= _MIN_OK)
        & (a < _MAX_OK)
        & (low + err < _HALF_MARGIN * above)
        & (low - err > -_HALF_MARGIN * below)
    )


#: np.nan_to_num's value for -inf
_LOWEST = -1.7976931348623157e308

# The error bounds of ``harness.oracle.error_model.RowBounds`` for the problems the row kernel
# serves (class-index targets, no smoothing, no kernel fields): the same float64 operations in
# the same order, so the same bits. The exponentials and their row sums stay NumPy's
# (``np.exp`` has its own SIMD code; ``np.sum`` sums pairwise): see ``RowBounds._compiled_rows``.
# One thread: these loops are a few ns per logit, and threads that wait for one another
# cost more than that on a machine whose cores are busy (measured: 3 to 4 times the CPU; and
# on the streaming path, two passes over 512 x 65536 logits with another process busy on
# the other core: 2.1 s with ``bound_shifts`` and ``bound_compare`` over both cores, 1.7 s
# with them on one).


@njit(cache=True, error_model="numpy", nogil=True)
def bound_shifts(x: np.ndarray, d: np.ndarray, m_out: np.ndarray, finite: np.ndarray) -> None:
    """Per row: m the largest finite logit (0 when there is none), ``d = x - m`` with -inf for
    every non-finite logit, and whether the row holds neither NaN nor +inf. The maximum in
    SIMD lanes, as ``_scan`` takes it (each position of a tile keeps its own)."""
    n, c = x.shape
    width = min(c, _TILE)
    lanes = np.empty(max(width, 1))
    for i in range(n):
        for j in range(width):
            lanes[j] = -np.inf
        n_bad = 0  # NaN or +inf
        for j0 in range(0, c, _TILE):
            xs = x[i, j0 : min(c, j0 + _TILE)]
            for j in range(xs.shape[0]):
                v = np.float64(xs[j])
                w = v if abs(v) < np.inf else -np.inf
                a = lanes[j]
                lanes[j] = w if w > a else a
                n_bad += not (v < np.inf)
        m = -np.inf
        for j in range(width):
            if lanes[j] > m:
                m = lanes[j]
        if not (abs(m) < np.inf):
            m = 0.0
        m_out[i] = m
        finite[i] = n_bad == 0
        for j in range(c):
            v = np.float64(x[i, j])
            d[i, j] = (v if abs(v) < np.inf else -np.inf) - m


@njit(inline="always", cache=True, error_model="numpy")
def _logit_bound(
    p: float,
    xv: float,
    li: float,
    abs_lse: float,
    mass: float,
    term_a: float,
    floor: float,
    u_d: float,
    u_c: float,
    uc_sqrt_c: float,
) -> float:
    """One entry of a gradient bound row (``bound_rows``, ``bound_compare``): the logit
    ``xv`` with probability ``p`` in a row of log-sum-exp ``li``; ``term_a`` is the row's
    coefficient at this class (0 off the target)."""
    if abs(xv) < np.inf:
        xs = xv
        abs_x = abs(xv)
    else:
        xs = -np.inf
        abs_x = 0.0
    abs_logp = abs(xs - li) if p > 0 else 0.0
    term_p = mass * p
    b_d = term_p * (u_d + u_d * abs_logp) + u_d * term_a
    b_c = term_p * ((u_c * abs_x + u_c * abs_lse) + uc_sqrt_c) + u_c * term_a
    return (b_d + b_c) + floor


@njit(inline="always", cache=True, error_model="numpy")
def _grad_bound(r: float, e: float, factor: float) -> tuple[float, float]:
    """``RowBounds.grad_bound`` of one entry (``bound_grad``, ``bound_compare``): the row's
    ``r`` plus ``factor`` |e|, and the bound that gives: NaN as 0, -inf as the most negative
    float, 0 where the expected ``e`` is not finite."""
    fin = abs(e) < np.inf
    r = r + factor * (abs(e) if fin else 0.0)
    bound = r
    if bound != bound:
        bound = 0.0
    elif bound == -np.inf:
        bound = _LOWEST
    return r, bound if fin else 0.0


@njit(cache=True, error_model="numpy", nogil=True)
def bound_rows(
    x: np.ndarray,
    z: np.ndarray,
    s: np.ndarray,
    lse: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    g: np.ndarray,
    finite: np.ndarray,
    consts: np.ndarray,
    want_grad: bool,
    per_pos: np.ndarray,
    out: np.ndarray,
) -> None:
    """``RowBounds.rows`` on rows whose only coefficient is a = |w_y| at class y (y < 0: none,
    an ignored row): each position's terms into ``per_pos`` (4, rows) = S_d, S_c, u_c |loss|,
    sum |a|; the gradient's bound rows into ``out``. ``consts``: u_d, u_c, sqrt(C),
    u_c sqrt(C), the subnormal spacing."""
    u_d, u_c, sqrt_c, uc_sqrt_c, tiny = consts[0], consts[1], consts[2], consts[3], consts[4]
    n, c = x.shape
    for i in range(n):
        yi = y[i]
        ai = a[i] if yi >= 0 else 0.0
        li = lse[i]
        abs_lse = abs(li) if abs(li) < np.inf else 0.0
        a_logp_d = 0.0
        a_logp_c = 0.0
        terms_c = 0.0
        if yi >= 0:
            xv = np.float64(x[i, yi])
            xs = xv if abs(xv) < np.inf else -np.inf
            abs_xy = abs(xv) if abs(xv) < np.inf else 0.0
            logp = xs - li
            if ai > 0:
                a_logp_d = ai * (u_d * abs(logp))
                a_logp_c = ai * (u_c * abs(logp))
            terms_c = ai * (u_c * abs_xy + u_c * abs_lse)
        if finite[i]:
            per_pos[0, i] = 2.0 * a_logp_d
            per_pos[1, i] = (terms_c + uc_sqrt_c * ai) + sqrt_c * a_logp_c
        else:
            per_pos[0, i] = 0.0
            per_pos[1, i] = 0.0
        per_pos[2, i] = a_logp_c
        per_pos[3, i] = ai
        if not want_grad:
            continue
        if not finite[i]:
            for j in range(c):
                out[i, j] = 0.0
            continue
        gg = g[i]
        mass = gg * ai
        floor = tiny * (1.0 + mass)
        si = s[i]
        for j in range(c):
            term_a = gg * (ai if j == yi else 0.0)
            out[i, j] = _logit_bound(
                z[i, j] / si, np.float64(x[i, j]), li, abs_lse, mass, term_a, floor, u_d, u_c,
                uc_sqrt_c,
            )  # fmt: skip


@njit(cache=True, error_model="numpy")
def bound_grad(rows: np.ndarray, grad: np.ndarray, factor: float, out: np.ndarray) -> None:
    """``RowBounds.grad_bound``: ``rows`` plus ``factor`` |grad| (rows updated in place, as
    there), NaN as 0, -inf as the most negative float, 0 where ``grad`` is not finite."""
    n, c = rows.shape
    for i in range(n):
        for j in range(c):
            rows[i, j], out[i, j] = _grad_bound(rows[i, j], grad[i, j], factor)


@njit(cache=True, error_model="numpy")
def _pair(
    got: float, e: float, bound: float, threshold: float, rtol: float, atol: float, widened: bool
) -> tuple[bool, float, float, float, float]:
    """One pair of ``harness.execution.compare._all_finite_and_within``: (finite and within
    tolerance, |got - e|, |got - e| / |e|, the test ratio, |e|); allowed = threshold bound
    (+ atol + rtol |e| when either is not 0). 0/0 is NaN, which the maxima pass over."""
    abs_e = abs(e)
    d = abs(got - e)
    allowed = threshold * bound
    if widened:
        allowed = allowed + (atol + rtol * abs_e)
    return (d < np.inf) & (d <= allowed), d, d / abs_e, d / allowed, abs_e


@njit(cache=True, error_model="numpy")
def _larger(m: int, v: float) -> int:
    """The bits of max(m, v) for v >= 0 or NaN, NaN counting as 0 (``np.fmax`` from 0), with
    ``m`` the bits of the maximum so far: non-negative float64s order as their bits do, and
    LLVM runs an integer maximum in SIMD lanes where it does not a floating-point one
    (whose NaN rules it must keep without fast-math)."""
    b = float_bits(v if v == v else 0.0)
    return b if b > m else m


#: a row's tally before its first pair: no pair off, and the bits of four maxima of 0
_NO_PAIRS = (0, 0, 0, 0, 0)


@njit(inline="always", cache=True, error_model="numpy")
def _count(
    tally: tuple,
    got: float,
    e: float,
    bound: float,
    threshold: float,
    rtol: float,
    atol: float,
    widened: bool,
) -> tuple:
    """``tally`` (pairs off; the bits of the largest |got - e|, relative error, test ratio and
    |e|) with one more pair (``_pair``) counted in (``within``, ``bound_compare``)."""
    n_bad, max_abs, max_rel, max_ratio, scale = tally
    good, d, rel, ratio, abs_e = _pair(got, e, bound, threshold, rtol, atol, widened)
    return (
        n_bad + (0 if good else 1), _larger(max_abs, d), _larger(max_rel, rel),
        _larger(max_ratio, ratio), _larger(scale, abs_e),
    )  # fmt: skip


@njit(inline="always", cache=True, error_model="numpy")
def _store(stats: np.ndarray, i: int, tally: tuple) -> None:
    """Row ``i`` of ``within``'s ``stats`` from a row's ``tally`` (``_count``)."""
    n_bad, max_abs, max_rel, max_ratio, scale = tally
    stats[i, 0] = 1.0 if n_bad == 0 else 0.0
    stats[i, 1] = bits_float(max_abs)
    stats[i, 2] = bits_float(max_rel)
    stats[i, 3] = bits_float(max_ratio)
    stats[i, 4] = bits_float(scale)


@njit(cache=True, error_model="numpy")
def within(got: np.ndarray, expected: np.ndarray, bound: np.ndarray, tol: np.ndarray,
           stats: np.ndarray) -> None:  # fmt: skip
    """``harness.execution.compare._all_finite_and_within`` of (r, C) arrays, per row:
    ``stats[i]`` = (1 when every pair is finite and within tolerance,
    else 0; the largest |got - expected|, relative error and test ratio; the largest
    |expected|). The maxima are those of ``compare`` when every pair is within. ``tol`` =
    (threshold, rtol, atol)."""
    threshold, rtol, atol = tol[0], tol[1], tol[2]
    widened = rtol != 0.0 or atol != 0.0
    n, c = expected.shape
    for i in range(n):
        tally = _NO_PAIRS
        for j in range(c):
            tally = _count(
                tally, np.float64(got[i, j]), expected[i, j], bound[i, j], threshold, rtol, atol,
                widened,
            )  # fmt: skip
        _store(stats, i, tally)


@njit(cache=True, error_model="numpy", nogil=True)
def bound_compare(
    x: np.ndarray,
    z: np.ndarray,
    s: np.ndarray,
    lse: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    g: np.ndarray,
    finite: np.ndarray,
    consts: np.ndarray,
    factor: float,
    expected: np.ndarray,
    got: np.ndarray,
    skip: np.ndarray,
    tol: np.ndarray,
    stats: np.ndarray,
) -> None:
    """``bound_rows``' gradient rows, then ``bound_grad``, then ``within``, tile by tile of
    each row, without storing the bound beyond a tile:
    ``stats`` as ``within``'s, for the rows not in ``skip``. Each element's bound is that of
    ``bound_rows`` and ``bound_grad``, operation for operation (the same bits). Two loops per
    tile, each in SIMD lanes (LLVM does not vectorize them as one)."""
    u_d, u_c, uc_sqrt_c, tiny = consts[0], consts[1], consts[3], consts[4]
    threshold, rtol, atol = tol[0], tol[1], tol[2]
    widened = rtol != 0.0 or atol != 0.0
    n, c = x.shape
    for i in range(n):
        if skip[i]:
            continue
        tile = np.zeros(_TILE)
        yi = y[i]
        ai = a[i] if yi >= 0 else 0.0
        li = lse[i]
        abs_lse = abs(li) if abs(li) < np.inf else 0.0
        fin_row = finite[i]
        gg = g[i]
        mass = gg * ai
        floor = tiny * (1.0 + mass)
        si = s[i]
        tally = _NO_PAIRS
        for j0 in range(0, c, _TILE):
            m = min(c, j0 + _TILE) - j0
            if fin_row:  # bound_rows, into the tile
                xs_ = x[i, j0 : j0 + m]
                zs = z[i, j0 : j0 + m]
                for j in range(m):
                    term_a = gg * (ai if j0 + j == yi else 0.0)
                    tile[j] = _logit_bound(
                        zs[j] / si, np.float64(xs_[j]), li, abs_lse, mass, term_a, floor, u_d,
                        u_c, uc_sqrt_c,
                    )  # fmt: skip
            es = expected[i, j0 : j0 + m]
            gs = got[i, j0 : j0 + m]
            for j in range(m):  # bound_grad, then the comparison
                e = es[j]
                _, bound = _grad_bound(tile[j] if fin_row else 0.0, e, factor)
                tally = _count(
                    tally, np.float64(gs[j]), e, bound, threshold, rtol, atol, widened
                )  # fmt: skip
        _store(stats, i, tally)


# ---------------------------------------------------------------- expected rows as deltas
# A streamed case's expected gradient is computed while its logits are made, before the
# adapter's call, and kept as one byte an entry: the difference, in units in the last place,
# between the correctly rounded entry and an approximation that the bounds' pass after the
# call forms anyway (``harness.oracle.deltas``).


@njit(inline="always", cache=True, error_model="numpy")
def _approx(z: float, s: float, q: float, target: bool) -> float:
    """The float64 approximation of a gradient entry: ``z / s`` the probability from NumPy's
    exponential and row sum (the bounds' own, ``RowBounds``), ``q`` the row's factor."""
    p = z / s
    return (p - 1.0) * q if target else p * q


@njit(cache=True, error_model="numpy", nogil=True)
def encode_deltas(
    z: np.ndarray,
    s: np.ndarray,
    y: np.ndarray,
    q: np.ndarray,
    expected: np.ndarray,
    skip: np.ndarray,
    deltas: np.ndarray,
    checks: np.ndarray,
    escape: int,
) -> int:
    """Per row not in ``skip``: ``deltas[i, j]`` = bits(expected) - bits(approximation), the
    distance in float64 steps (same sign: the bits of same-signed floats order as their
    values), or ``escape`` (-128) where that is not within -127..127 or the signs differ;
    ``checks[i]`` the sum (modulo 2**64) of the bits of the entries not escaped. Returns the
    number of escapes."""
    n, c = z.shape
    escapes = 0
    for i in range(n):
        if skip[i]:
            continue
        yi = y[i]
        si = s[i]
        qi = q[i]
        total = np.uint64(0)
        row_escapes = 0
        for j in range(c):
            b = float_bits(expected[i, j])
            a = float_bits(_approx(z[i, j], si, qi, j == yi))
            d = b - a
            ok = (b ^ a) >= 0 and -127 <= d <= 127
            deltas[i, j] = d if ok else escape
            total += np.uint64(b) if ok else np.uint64(0)
            row_escapes += 0 if ok else 1
        checks[i] = total
        escapes += row_escapes
    return escapes


@njit(cache=True, error_model="numpy", nogil=True)
def decode_deltas(
    z: np.ndarray,
    s: np.ndarray,
    y: np.ndarray,
    q: np.ndarray,
    deltas: np.ndarray,
    skip: np.ndarray,
    checks: np.ndarray,
    escape: int,
    out: np.ndarray,
) -> int:
    """``encode_deltas`` undone into ``out`` for the rows not in ``skip`` (escaped entries are
    left for the caller to write); returns the first row whose sum of bits is not its
    ``checks`` entry (an approximation not formed as it was), or -1."""
    n, c = z.shape
    for i in range(n):
        if skip[i]:
            continue
        yi = y[i]
        si = s[i]
        qi = q[i]
        total = np.uint64(0)
        for j in range(c):
            d = deltas[i, j]
            b = float_bits(_approx(z[i, j], si, qi, j == yi)) + (0 if d == escape else d)
            out[i, j] = bits_float(b)
            total += np.uint64(0) if d == escape else np.uint64(b)
        if total != checks[i]:
            return i
    return -1
