"""Hypothesis strategies over the cross-entropy call space of docs/semantics.md, as case-file fields.

``case_fields(space)`` draws one valid call as the mapping a YAML case holds
(``logits``, ``target``, ``weight``, ``reduction``, ``ignore_index``,
``label_smoothing``, ``dtype``, ``grad_output``), ready for
``harness.cases.build.build_case``: what is tested is exactly what a written
case file loads.

Values are chosen so they shrink well and read well:

- literal values are small integers times powers of two (at most 8 significant
  bits), so they are exact in every dtype, including bfloat16, and the written
  case needs one set of expected values;
- each case draws a *scale*: ``plain`` (|x| <= 8, the shrink target), ``ties``
  (few distinct values), ``offset`` (a large power of two plus small steps:
  cancellation in the max shift), ``huge`` (multiples of 2**(K-8) up to the
  dtype's largest finite value: overflow without a max shift) and ``spread``
  (magnitudes from 1/8 to near overflow in one row);
- a few logits may be replaced by -inf (or +inf / NaN with ``nonfinite``);
- for float16 and bfloat16, now and then a large class count (256..4096) given
  by a seeded ``normal`` recipe, to expose low-precision accumulation.

Shapes: (N, C), unbatched (C,), K-dimensional (N, C, d1[, d2]) and, unless the
adapter declares ``empty`` unsupported, an empty batch or spatial extent.
Features an adapter declares ``unsupported`` are never generated.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from harness.cases.generate import build, fingerprint
from harness.dtypes import DTYPE_NAMES, FORMATS

#: largest K such that 255 * 2**(K - 8) is finite in the dtype (the ``huge`` scale)
HUGE_EXPONENT = {"float64": 1024, "float32": 128, "bfloat16": 128, "float16": 16}
#: explicit fraction bits: ``offset`` values 2**j + m/8 stay exact for j <= bits - 4
MANTISSA_BITS = {"float64": 52, "float32": 23, "bfloat16": 7, "float16": 10}
SCALES = ("plain", "ties", "offset", "huge", "spread")
LARGE_CLASSES = (256, 4096)


@dataclass(frozen=True)
class Space:
    """What may be generated: dtypes, features the adapter lacks, and size limits."""

    dtypes: tuple[str, ...] = DTYPE_NAMES
    unsupported: frozenset[str] = frozenset()
    max_classes: int = 6
    max_batch: int = 3
    nonfinite: bool = True  # +inf and NaN logits besides -inf
    large_classes: bool = True  # the half-precision large-C cases

    def allows(self, feature: str) -> bool:
        return feature not in self.unsupported


def _rarely(draw, one_in: int) -> bool:
    """True about once in ``one_in`` draws; shrinks to False."""
    return draw(st.integers(0, one_in - 1)) == one_in - 1


# Strategy objects are built once and reused (module constants, or cached per parameter):
# hypothesis validates each new object on its first draw, and its own strategy cache keys on
# the argument objects (a fresh ``.map`` never hits; a list argument is not even hashable,
# hence the tuples given to ``sampled_from``). Built afresh for every draw, they cost 10 to 20%
# of the CPU of a search that finds nothing. What is drawn, and how it shrinks, is the same.
_SMALL = st.integers(-64, 64).map(lambda m: m / 8)
_TIES = st.integers(-1, 1).map(lambda m: m / 2)
_PROBABILITY = st.integers(0, 8).map(lambda m: m / 8)
_WEIGHT = st.integers(1, 32).map(lambda m: m / 8)
_GRAD_OUTPUT = st.integers(-8, 8).map(lambda m: m / 4)


@functools.lru_cache(maxsize=4096)
def _fixed_list(strategy: st.SearchStrategy, size: int) -> st.SearchStrategy[list]:
    return st.lists(strategy, min_size=size, max_size=size)


def _values(draw, strategy: st.SearchStrategy, size: int) -> list:
    return draw(_fixed_list(strategy, size))


@functools.cache
def _offset(j: int) -> st.SearchStrategy[float]:
    return _SMALL.map(lambda v: 2.0**j + v)


@functools.cache
def _huge(k: int) -> st.SearchStrategy[float]:
    return st.integers(-255, 255).map(lambda m: math.ldexp(m, k - 8))


@functools.cache
def _spread(kmax: int) -> st.SearchStrategy[float]:
    return st.tuples(st.integers(-15, 15), st.integers(-3, kmax - 4)).map(
        lambda me: math.ldexp(me[0], me[1])
    )


def _element(scale: str, dtype: str, draw) -> st.SearchStrategy[float]:
    """The strategy for one finite logit of a case of ``scale``."""
    if scale == "plain":
        return _SMALL
    if scale == "ties":
        return _TIES
    if scale == "offset":
        return _offset(draw(st.integers(1, MANTISSA_BITS[dtype] - 4)))
    kmax = HUGE_EXPONENT[dtype]
    if scale == "huge":
        # k = kmax about half the time; one integer choice, so shrinking lowers k steadily
        # (a separate "just kmax" branch is a shrinking dead end)
        return _huge(min(draw(st.integers(8, 2 * kmax - 8)), kmax))
    # spread: each element its own magnitude, from 1/8 to near overflow
    return _spread(kmax)


def _nested(flat: list, shape: tuple[int, ...]) -> object:
    """A flat list as nested lists of ``shape`` (a scalar for shape ())."""
    return np.array(flat, dtype=object).reshape(shape).tolist()


def _empty(shape: tuple[int, ...], value: float | int) -> dict:
    """An empty array as a recipe: a literal [] cannot say (0, C)."""
    return {"generate": "full", "shape": list(shape), "value": value}


def _index_targets(draw, space: Space, c: int, positions: int) -> tuple[list, int]:
    """Class indices for ``positions`` places, some ignored, and the ignore_index."""
    if not space.allows("ignore_index"):
        return _values(draw, st.integers(0, c - 1), positions), -100
    # -100 (default) first, then an ignore_index that is a real class, -1, or C
    kind = draw(st.sampled_from(("default", "class", "minus_one", "beyond")))
    ignore_index = {"default": -100, "minus_one": -1, "beyond": c}.get(kind)
    if ignore_index is None:
        ignore_index = draw(st.integers(0, c - 1))
    raw = _values(draw, st.integers(0, c), positions)  # c stands for "ignored"
    return [ignore_index if v == c else v for v in raw], ignore_index


@st.composite
def case_fields(draw, space: Space) -> dict:
    """One valid call as case-file fields (no name, why or expected)."""
    dtype = draw(st.sampled_from(space.dtypes))
    if dtype in ("float16", "bfloat16") and space.large_classes and _rarely(draw, 8):
        return draw(_large_class_case(space, dtype))
    layouts = ("2d", *(f for f in ("unbatched", "kdim") if space.allows(f)))
    layout = draw(st.sampled_from(layouts))
    c = draw(st.integers(1, space.max_classes))
    if layout == "unbatched":
        shape: tuple[int, ...] = (c,)
    else:
        n = draw(st.integers(1, space.max_batch))
        spatial: tuple[int, ...] = ()
        if layout == "kdim":
            spatial = tuple(draw(st.lists(st.integers(1, 2), min_size=1, max_size=2)))
        if space.allows("empty") and _rarely(draw, 12):
            if spatial and draw(st.booleans()):
                spatial = (*spatial[:-1], 0)
            else:
                n = 0
        shape = (n, c, *spatial)
    index_shape = () if len(shape) == 1 else (shape[0], *shape[2:])
    size, positions = math.prod(shape), math.prod(index_shape)

    scale = draw(st.sampled_from(SCALES))
    flat = _values(draw, _element(scale, dtype, draw), size)
    specials = ("-inf", "inf", "nan") if space.nonfinite else ("-inf",)
    if size and _rarely(draw, 4):
        value = float(draw(st.sampled_from(specials)))
        for i in draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=3)):
            flat[i] = value

    fields: dict = {"dtype": dtype}
    fields["logits"] = _nested(flat, shape) if size else _empty(shape, 0.0)
    probability = space.allows("probability_target") and draw(st.booleans())
    if probability:
        probs = _values(draw, _PROBABILITY, size)
        fields["target"] = _nested(probs, shape) if size else _empty(shape, 0.0)
        ignore_index = (
            -100 if not space.allows("ignore_index") else draw(st.sampled_from((-100, -1)))
        )
    else:
        labels, ignore_index = _index_targets(draw, space, c, positions)
        fields["target"] = _nested(labels, index_shape) if positions else _empty(index_shape, 0)
    if ignore_index != -100:
        fields["ignore_index"] = ignore_index
    if space.allows("weight") and draw(st.booleans()):
        fields["weight"] = _values(draw, _WEIGHT, c)
    if space.allows("label_smoothing"):
        eps = draw(st.integers(0, 20)) / 20
        if eps:
            fields["label_smoothing"] = eps
    assume(
        summed_loss_bound(
            np.array(flat).reshape(-1),
            shape,
            fields.get("weight"),
            probability or "label_smoothing" in fields,
        )
        <= FORMATS[dtype].max / 4
    )
    reduction = draw(st.sampled_from(_reductions(space)))
    fields["reduction"] = reduction
    if reduction == "none" and space.allows("grad_output") and _rarely(draw, 4):
        loss_shape = () if len(shape) == 1 else index_shape
        ups = _values(draw, _GRAD_OUTPUT, positions)
        fields["grad_output"] = _nested(ups, loss_shape) if positions else _empty(loss_shape, 0.0)
    return fields


def summed_loss_bound(
    flat: np.ndarray, shape: tuple[int, ...], weight: list | None, wide_target: bool
) -> float:
    """An upper bound on the sum over positions of every loss term (NLL and smoothing sum).

    Calls above a quarter of the dtype's largest value are not generated: every
    implementation seen accumulates the reduction in the dtype, so such a sum is
    inf even when the exact mean is finite (the fuzzer found this in torch float32).
    ``wide_target``: probability targets or smoothing, where C terms add up per position.
    """
    if flat.size == 0:
        return 0.0
    c = shape[0] if len(shape) == 1 else shape[1]
    x = flat.reshape(shape)
    rows = x.reshape(1, c) if x.ndim == 1 else np.moveaxis(x, 1, -1).reshape(-1, c)
    ok = np.isfinite(rows)
    hi = np.where(ok, rows, -np.inf).max(axis=1)
    lo = np.where(ok, rows, np.inf).min(axis=1)
    with np.errstate(over="ignore"):  # float64 spreads past 1.8e308 are inf: rejected
        spread = np.where(hi >= lo, hi - lo, 0.0)
    w_max = max(weight) if weight else 1.0
    with np.errstate(over="ignore"):
        terms = w_max * (spread + math.log(c) + 1.0) * (c if wide_target else 1)
        return float(np.sum(terms))


def _reductions(space: Space) -> tuple[str, ...]:
    allowed = tuple(r for r in ("mean", "sum", "none") if space.allows(f"reduction_{r}"))
    if not allowed:
        raise ValueError("the adapter declares every reduction unsupported: nothing to fuzz")
    return allowed


@st.composite
def _large_class_case(draw, space: Space, dtype: str) -> dict:
    """Half precision with 256..4096 classes: logits from a seeded ``normal`` recipe."""
    c = draw(st.integers(*LARGE_CLASSES))
    n = draw(st.integers(1, 2))
    recipe = {
        "generate": "normal",
        "shape": [n, c],
        "seed": draw(st.integers(0, 2**16)),
        "mean": float(draw(st.sampled_from((0, 8, 64)))),
        "std": float(draw(st.sampled_from((1, 4, 16)))),
    }
    recipe["sha256"] = fingerprint(build(recipe))
    fields: dict = {"dtype": dtype, "logits": recipe}
    fields["target"] = _values(draw, st.integers(0, c - 1), n)
    if space.allows("label_smoothing") and draw(st.booleans()):
        fields["label_smoothing"] = 0.1
    fields["reduction"] = draw(st.sampled_from(_reductions(space)))
    return fields
