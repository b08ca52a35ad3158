"""Arrays given by a seeded recipe instead of literals, for large cases.

A case field may hold a mapping instead of a nested list::

    logits: {generate: normal, shape: [64, 32000], seed: 1, std: 4.0, sha256: 9f1c...}
    target: {generate: labels, shape: [64], seed: 2, classes: 32000,
             ignore_fraction: 0.25, ignore_index: -100}

Recipes use NumPy's PCG64 generator (``numpy.random.default_rng(seed)``), and only
arithmetic that gives the same bits on every machine (``portable_exp``, not ``np.exp``;
``math.fsum``, not ``np.sum``).
``sha256`` (``fingerprint``: the first 16 hex digits of the sha256 of the values, floats
rounded to float32, integers as int64) is checked every time the array is made, so a change
in NumPy's random streams can never silently change a case; ``python -m harness regen``
fills in ``sha256: FILL``.

Why float32: NumPy's normal generator (a ziggurat) takes its rare tail draws (about 1 in
4000 values beyond 3.65 standard deviations) from the C library's ``log1p``, which rounds
differently from one C library to another (glibc 2.36's ``log1p`` is not correctly rounded
on about 7% of the inputs it gets there). So the same seed gives the same values on every
machine except for the last bits of a few tail values, which rounding to float32 removes
(unless a value lies within a float64 ulp of a float32 rounding boundary: about one value in
2**28). A float64 digest failed to load the built-in suite under a C library that rounds
``log1p`` otherwise (``tests/test_generate.py``). The stream itself is still
checked: any other change of the draws changes the digest. The float64 digests of case files
written before are accepted too (``fingerprint_matches``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

RECIPES = {
    "normal": "Gaussian values: mean (0), std (1)",
    "uniform": "uniform values in [low, high) (0, 1)",
    "labels": "class indices in [0, classes), a fraction ignore_fraction set to ignore_index",
    "probabilities": "rows of a softmax of Gaussian values over axis 1 (classes)",
    "full": "every element equal to value (an integer value gives int64): empty shapes too",
}


#: keys every recipe may have
COMMON_KEYS = ("generate", "shape", "seed", "sha256")
#: recipe -> the parameters it takes (with their defaults in ``build``); the case schema's
#: recipe properties are COMMON_KEYS and these (tests/test_loader_fuzz.py checks it)
PARAMETERS: dict[str, tuple[str, ...]] = {
    "normal": ("mean", "std"),
    "uniform": ("low", "high"),
    "labels": ("classes", "ignore_fraction", "ignore_index"),
    "probabilities": ("std",),
    "full": ("value",),
}


class FingerprintMismatch(ValueError):
    pass


#: ln 2 in two parts (fdlibm's): the high part's low bits are zero, so k * _LN2_HI is exact
#: for the |k| < 2**11 of a float64 exponent
_LN2_HI, _LN2_LO, _INV_LN2 = 6.93147180369123816490e-01, 1.90821492927058770002e-10, 1 / math.log(2)
#: 1/n! for n = 13 down to 0: exp(r) by Horner's rule on |r| <= ln(2)/2 (r**14/14! < 2**-64)
_TAYLOR = [1 / math.factorial(n) for n in range(13, -1, -1)]


def portable_exp(x: np.ndarray) -> np.ndarray:
    """exp(x) for finite float64 x, within a few ulp, and the same bits on every machine.

    ``np.exp`` is not: NumPy's SIMD exponentials differ in the last bit between versions and
    instruction sets (NumPy 1.26 and 2.4 differ on this machine), and a recipe's values are
    fingerprinted. This one is made of additions, multiplications, ``rint`` and ``ldexp``,
    which IEEE 754 rounds exactly, each done by its own ufunc (nothing fused), in a fixed
    order: x = k ln 2 + r (Cody and Waite), a Taylor polynomial in r, times 2**k."""
    x = np.asarray(x, dtype=np.float64)
    k = np.rint(x * _INV_LN2)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = np.full_like(r, _TAYLOR[0])
    for c in _TAYLOR[1:]:
        p = p * r + c
    # k below the float64 range: ldexp's result is 0 (or a subnormal), exactly rounded
    return np.ldexp(p, np.clip(k, -2000, 2000).astype(np.int64))


def fingerprint(a: np.ndarray) -> str:
    """The fingerprint a recipe's ``sha256`` field holds (see the module's docstring)."""
    return hashlib.sha256(_fingerprinted(a).data).hexdigest()[:16]


def exact_fingerprint(a: np.ndarray) -> str:
    """The digest of the float64 (int64) bytes, which case files written before held."""
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()[:16]


def fingerprint_matches(a: np.ndarray, want: str) -> bool:
    """``want`` is the fingerprint, or the float64 digest of an older file (hashed only then)."""
    return want == fingerprint(a) or want == exact_fingerprint(a)


def _fingerprinted(a: np.ndarray) -> np.ndarray:
    """What a fingerprint hashes: float values rounded to float32 (C order), others as they are."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind != "f":
        return a
    with np.errstate(over="ignore"):  # beyond float32's range: infinities, hashed as such
        return a.astype(np.float32)


def build(spec: dict) -> np.ndarray:
    """Make the array a recipe describes (no fingerprint check)."""
    kind = spec["generate"]
    shape = tuple(int(s) for s in spec["shape"])
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    if kind == "normal":
        return rng.normal(float(spec.get("mean", 0.0)), float(spec.get("std", 1.0)), shape)
    if kind == "uniform":
        return rng.uniform(float(spec.get("low", 0.0)), float(spec.get("high", 1.0)), shape)
    if kind == "labels":
        out = rng.integers(0, int(spec["classes"]), shape, dtype=np.int64)
        frac = float(spec.get("ignore_fraction", 0.0))
        if frac:
            out[rng.random(shape) < frac] = int(spec.get("ignore_index", -100))
        return out
    if kind == "probabilities":
        axis = 1 if len(shape) >= 2 else 0  # the class axis: (C,), (N, C) or (N, C, d1, ...)
        z = rng.normal(0.0, float(spec.get("std", 1.0)), shape)
        if z.size == 0:
            return z
        z = portable_exp(z - z.max(axis=axis, keepdims=True))
        # each row's sum exactly rounded (fsum): NumPy's sums change order between versions
        # (1.26 and 2.4 round a sum of 10,000 differently)
        rows = np.moveaxis(z, axis, -1)
        sums = [math.fsum(row) for row in rows.reshape(-1, rows.shape[-1]).tolist()]
        total = np.array(sums).reshape(*rows.shape[:-1], 1)
        return z / np.moveaxis(total, -1, axis)
    if kind == "full":
        value = spec.get("value", 0.0)
        return np.full(shape, value, dtype=np.int64 if isinstance(value, int) else np.float64)
    raise ValueError(f"unknown recipe {kind!r}; expected one of {', '.join(RECIPES)}")


def materialize(source: np.ndarray | dict, dtype: DTypeLike | None) -> np.ndarray:
    """The array of a case field: a literal array as is, or a recipe built and fingerprint-checked."""
    if isinstance(source, np.ndarray):
        return source
    array = build(source)
    want = source.get("sha256")
    if want is not None and not fingerprint_matches(array, want):
        raise FingerprintMismatch(
            f"generated array has fingerprint {fingerprint(array)}, the case says {want}: "
            f"NumPy {np.__version__} makes a different stream for {source!r}"
        )
    return array if dtype is None else array.astype(dtype)


#: float64 elements per block when a recipe is made block by block (8 MiB)
BLOCK_ELEMENTS = 1 << 20
#: recipes whose values come from one sequential stream, so blocks of leading rows drawn one
#: after another are the rows of one draw of the whole shape
_BLOCKWISE = ("normal", "uniform", "full")


def blocks(spec: dict) -> Iterator[np.ndarray]:
    """The array a recipe describes, as float64 blocks of whole leading rows, in order; the
    fingerprint is checked after the last block (``FingerprintMismatch``), as ``materialize``.

    ``normal`` and ``uniform`` draw each block from the same generator in turn, which gives the
    bits of one draw of the whole shape (``tests/test_streaming.py`` checks it); other recipes
    are made whole and cut."""
    shape = tuple(int(s) for s in spec["shape"])
    want = spec.get("sha256")
    # hashed only to be checked (a second of sha256 for a 512 MiB float32 case): the
    # fingerprint, and the float64 digest that case files written before hold
    digests = (hashlib.sha256(), hashlib.sha256()) if want is not None else None
    if spec["generate"] not in _BLOCKWISE or len(shape) == 0:
        whole = build(spec)
        pieces: Iterator[np.ndarray] = iter([whole])
    else:
        pieces = _row_blocks(spec, shape)
    for piece in pieces:
        if digests is not None:
            digests[0].update(_fingerprinted(piece).data)
            digests[1].update(np.ascontiguousarray(piece).data)
        yield piece
    if digests is not None and want not in [d.hexdigest()[:16] for d in digests]:
        raise FingerprintMismatch(
            f"generated array has fingerprint {digests[0].hexdigest()[:16]}, the case says {want}: "
            f"NumPy {np.__version__} makes a different stream for {spec!r}"
        )


def _row_blocks(spec: dict, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    per_row = math.prod(shape[1:])
    step = max(1, BLOCK_ELEMENTS // max(1, per_row))
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    kind = spec["generate"]
    for lo in range(0, shape[0], step):
        rows = (min(step, shape[0] - lo), *shape[1:])
        if kind == "normal":
            yield rng.normal(float(spec.get("mean", 0.0)), float(spec.get("std", 1.0)), rows)
        elif kind == "uniform":
            yield rng.uniform(float(spec.get("low", 0.0)), float(spec.get("high", 1.0)), rows)
        else:
            yield build({**spec, "shape": list(rows)})


def materialize_blockwise(
    source: np.ndarray | dict,
    carrier: DTypeLike,
    convert_into: Callable[[np.ndarray, np.ndarray], None],
    on_block: Callable[[np.ndarray], None] | None = None,
    on_start: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """A case field made directly in ``carrier``: each float64 block converted into its rows of
    the result by ``convert_into(block, rows)``, so no float64 copy of the whole array is ever
    held (for a recipe). ``on_block`` sees each converted block in order (whole leading rows,
    C order); ``on_start`` the result before its first block is made (a recipe's: its values
    not yet written)."""
    if isinstance(source, np.ndarray):
        out = np.empty(source.shape, dtype=carrier)
        convert_into(source, out)
        if on_start is not None:
            on_start(out)
        if on_block is not None:
            on_block(out)
        return out
    shape = tuple(int(s) for s in source["shape"])
    out = np.empty(shape, dtype=carrier)
    if on_start is not None:
        on_start(out)
    flat = out.reshape(-1)
    at = 0
    for block in blocks(source):
        part = flat[at : at + block.size].reshape(block.shape)
        convert_into(block, part)
        at += block.size
        if on_block is not None:
            on_block(part)
    return out
