"""Write the combinatorial grid of the built-in suite, and fill in recipe fingerprints.

The grid is target kind x weight x ignore_index x label_smoothing x reduction x
shape, each case run in float64, float32, float16 and bfloat16. Inputs are
drawn from one seeded generator per case (seeded by the case's position in the
grid) and quantised to multiples of 1/8 (logits, probabilities) and 1/4
(weights), so they are exact in every dtype and one set of expected values
serves all four. Expected values come from the oracle afterwards::

    python tools/make_corpus.py                      # writes cases/generated/grid_*.yaml
    python -m harness regen cases/generated          # fills in expected values

It also writes ``cases/generated/pairwise.yaml``: cases that together have every value
pair of ``python -m harness coverage`` a valid call can have, one dtype each, with
``expected: oracle`` (see "the pairwise set" below); and ``kernel_pairwise.yaml``, the
same for every pair of a kernel field (softcap, logit_scale, z_loss, shift;
docs/kernel-features.md) with any parameter; and ``fused_linear_pairwise.yaml``, the same
for fused linear cross-entropy with and without a bias (docs/fused-linear.md).

``--frozen`` writes the frozen data of every built-in case file (``cases/frozen/``,
``harness.cases.frozen``): its loaded cases and the expected values of its small problems,
which a first run reads instead of loading YAML and running the oracle. Run it after any
change to a case file or to what the loader or the oracle compute
(``tests/test_frozen_suite.py`` fails until then)::

    python tools/make_corpus.py --frozen

``--fingerprints FILE...`` replaces ``sha256: FILL`` in the recipes of hand-written
case files with the fingerprint of the array the recipe makes (see
harness/cases/generate.py); existing fingerprints are never touched.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from harness.cases import coverage, frozen, limits
from harness.cases.generate import build, fingerprint
from harness.cases.loader import check_file, discover
from harness.cases.writer import fill_fingerprints
from harness.oracle.cache import SUFFIX, write_arrays

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "cases" / "generated"
SEED = 20260
DTYPES = ["float64", "float32", "float16", "bfloat16"]

#: name -> logits shape; C is axis 1 (axis 0 when unbatched)
SHAPES: dict[str, tuple[int, ...]] = {
    "n3c5": (3, 5),
    "n1c4": (1, 4),
    "kdim_n2c3d2": (2, 3, 2),
    "unbatched_c4": (4,),
}
WEIGHTS = ("none", "uniform", "positive", "some_zero")
#: name -> (ignore_index, which positions are ignored)
IGNORES: dict[str, tuple[int, str]] = {
    "none": (-100, "none"),
    "some": (-100, "some"),
    "all": (-100, "all"),
    "in_range": (1, "some"),
    "out_of_range": (255, "some"),
}
SMOOTHINGS = (0.0, 0.15, 1.0)
REDUCTIONS = ("none", "mean", "sum")


@dataclass(frozen=True)
class Spec:
    """One grid point."""

    probability: bool
    weight: str
    ignore: str
    smoothing: float
    reduction: str
    shape: str

    @property
    def name(self) -> str:
        kind = "prob" if self.probability else "index"
        parts = [kind, f"w-{self.weight}"]
        if not self.probability:
            parts.append(f"ii-{self.ignore}")
        parts += [f"ls-{self.smoothing:g}", self.reduction, self.shape]
        return "_".join(parts)

    def why(self) -> str:
        kind = "probability targets" if self.probability else "class-index targets"
        ignore = "" if self.probability else f", ignore {self.ignore}"
        return (
            f"grid point: {kind}, weights {self.weight}{ignore}, label_smoothing "
            f"{self.smoothing:g}, reduction {self.reduction}, logits {SHAPES[self.shape]}"
        )

    def tags(self) -> list[str]:
        tags = ["grid"]
        if self.probability:
            tags.append("targets")
        if self.weight != "none":
            tags.append("weights")
        if not self.probability and self.ignore != "none":
            tags.append("ignore_index")
        if self.smoothing:
            tags.append("smoothing")
        if len(SHAPES[self.shape]) == 1:
            tags.append("unbatched")
        elif len(SHAPES[self.shape]) > 2:
            tags.append("kdim")
        return tags


def grid() -> list[Spec]:
    """Every grid point that is a valid call (single-position shapes cannot have 'some' ignored)."""
    out = []
    for prob, weight, ignore, eps, red, shape in itertools.product(
        (False, True), WEIGHTS, IGNORES, SMOOTHINGS, REDUCTIONS, SHAPES
    ):
        if prob and ignore != "none":
            continue  # ignore_index >= 0 raises with probabilities; negative ones do nothing
        positions = int(np.prod(_index_shape(SHAPES[shape]), dtype=np.int64))
        if IGNORES[ignore][1] == "some" and positions < 2:
            continue
        out.append(Spec(prob, weight, ignore, eps, red, shape))
    return out


def _index_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return () if len(shape) == 1 else (shape[0], *shape[2:])


def _eighths(rng: np.random.Generator, shape: tuple[int, ...], limit: int) -> np.ndarray:
    """Multiples of 1/8 in [-limit/8, limit/8]: exact in float16 and bfloat16."""
    return rng.integers(-limit, limit + 1, size=shape) / 8.0


def inputs(spec: Spec, rng: np.random.Generator) -> dict:
    """The case's inputs as plain lists: logits (shape), target, weight (C,) or None."""
    shape = SHAPES[spec.shape]
    c = shape[0] if len(shape) == 1 else shape[1]
    logits = _eighths(rng, shape, 24)
    case: dict = {"logits": logits.tolist()}
    if spec.probability:
        # 8 units of mass spread over the classes at each position: rows of eighths summing to 1
        moved = (*_index_shape(shape), c)
        counts = rng.multinomial(8, np.ones(c) / c, size=_index_shape(shape) or None)
        target = np.asarray(counts, dtype=np.float64).reshape(moved) / 8.0
        if len(shape) > 1:
            target = np.moveaxis(target, -1, 1)
        case["target"] = target.tolist()
    else:
        ii, which = IGNORES[spec.ignore]
        target = rng.integers(0, c, size=_index_shape(shape))
        if which == "all":
            target = np.full_like(target, ii)
        elif which == "some":
            flat = target.reshape(-1)
            ignored = rng.choice(flat.size, size=max(1, flat.size // 3), replace=False)
            flat[ignored] = ii
            if ii in range(c):  # make sure some kept position uses another class
                kept = np.setdiff1d(np.arange(flat.size), ignored)
                flat[kept] = np.where(flat[kept] == ii, (ii + 1) % c, flat[kept])
        case["target"] = target.tolist()
        if ii != -100:
            case["ignore_index"] = ii
    if spec.weight == "uniform":
        case["weight"] = [1.5] * c
    elif spec.weight == "positive":
        case["weight"] = (rng.integers(1, 13, size=c) / 4.0).tolist()
    elif spec.weight == "some_zero":
        w = rng.integers(1, 13, size=c) / 4.0
        w[rng.choice(c, size=max(1, c // 3), replace=False)] = 0.0
        if not spec.probability:
            # keep the weighted mean's denominator away from 0 (that edge has hand-written cases)
            kept = [y for y in np.ravel(case["target"]) if 0 <= y < c and y != ii]
            if kept and not w[kept].any():
                w[kept[0]] = 1.0
        case["weight"] = w.tolist()
    return case


def _flow(value: object) -> str:
    """A value as one line of flow-style YAML."""
    if not isinstance(value, list):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


def render(specs: list[Spec], title: str) -> str:
    lines = [
        "# Written by tools/make_corpus.py; expected values by 'python -m harness regen'.",
        "# Do not edit by hand: change the generator and run both again.",
        f"description: {title}",
        "defaults:",
        f"  dtype: {_flow(DTYPES)}",
        "  tags: [grid]",
        "",
        "cases:",
    ]
    for spec in specs:
        rng = np.random.default_rng([SEED, _stable_index(spec)])
        fields = inputs(spec, rng)
        lines.append(f"  - name: {spec.name}")
        lines.append(f'    why: "{spec.why()}"')
        lines.append(f"    logits: {_flow(fields['logits'])}")
        lines.append(f"    target: {_flow(fields['target'])}")
        if "weight" in fields:
            lines.append(f"    weight: {_flow(fields['weight'])}")
        if "ignore_index" in fields:
            lines.append(f"    ignore_index: {fields['ignore_index']}")
        if spec.smoothing:
            lines.append(f"    label_smoothing: {spec.smoothing}")
        lines.append(f"    reduction: {spec.reduction}")
        extra = [t for t in spec.tags() if t != "grid"]
        if extra:
            lines.append(f"    tags: {_flow(extra)}")
    return "\n".join(lines) + "\n"


def _stable_index(spec: Spec) -> int:
    """A seed component from the spec's name, so adding grid values never reseeds other cases."""
    return int.from_bytes(hashlib.sha256(spec.name.encode()).digest()[:8], "little")


def write_grid(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    specs = grid()
    files = {
        "grid_index.yaml": (
            [s for s in specs if not s.probability],
            "class-index targets, every combination of weight, ignore_index, label_smoothing, "
            "reduction and shape",
        ),
        "grid_probability.yaml": (
            [s for s in specs if s.probability],
            "probability targets, every combination of weight, label_smoothing, reduction and shape",
        ),
    }
    written = []
    for name, (chosen, title) in files.items():
        path = out / name
        path.write_text(render(chosen, title), encoding="utf-8")
        written.append(path)
        print(f"{path}: {len(chosen)} cases", file=sys.stderr)
    return written


# -- the pairwise set -----------------------------------------------------------------------
#
# The grid multiplies a few values of six parameters. The pairwise set takes every value of
# every parameter of ``python -m harness coverage`` (harness/cases/coverage.py), dtype included,
# and has every value pair a valid call can have at least once, one dtype per case: a
# greedy covering array with no random choice in it (inputs are seeded by the case's name).

PAIRWISE_FILE = "pairwise.yaml"
#: the coverage parameters whose values constrain each other (the rest combine freely)
CONSTRAINED = ("target", "weight", "ignored", "ignore_index", "shape", "classes")


def realizable(v: dict[str, str]) -> bool:
    """Whether one valid call has all these values of the CONSTRAINED parameters."""
    if v["target"] == "probability" and (
        v["ignored"] != "none" or v["ignore_index"] in ("in_range", "out_of_range")
    ):
        return False  # soft targets ignore nothing, and ignore_index >= 0 raises with them
    if v["ignored"] == "some" and v["shape"] in ("unbatched", "N=1", "empty"):
        return False  # fewer than two positions
    if v["ignored"] == "all" and v["shape"] == "empty":
        return False  # no positions: 'none'
    if v["classes"] == "1":
        if v["weight"] == "positive":
            return False  # one weight is 'uniform' (or zero, or negative)
        if v["ignore_index"] == "in_range" and v["shape"] != "empty" and v["ignored"] != "all":
            return False  # the only class, 0, is the ignore_index: every target is ignored
    return True


@functools.cache
def _realizable_combos() -> tuple[tuple[str, ...], ...]:
    values = [coverage.PARAMETERS[k] for k in CONSTRAINED]
    return tuple(
        combo
        for combo in itertools.product(*values)
        if realizable(dict(zip(CONSTRAINED, combo, strict=True)))
    )


@functools.cache
def _combos_with(parameter: str, value: str) -> frozenset[int]:
    """The indices of the realizable combos in which ``parameter`` has ``value``."""
    i = CONSTRAINED.index(parameter)
    return frozenset(n for n, combo in enumerate(_realizable_combos()) if combo[i] == value)


@functools.cache
def _extendable(assigned: frozenset[tuple[str, str]]) -> bool:
    """Whether values of some CONSTRAINED parameters extend to a realizable call: some
    realizable combo has every one of them."""
    if not assigned:
        return bool(_realizable_combos())
    return bool(frozenset.intersection(*(_combos_with(k, v) for k, v in assigned)))


def _row_extendable(row: dict[str, str]) -> bool:
    return _extendable(frozenset((k, v) for k, v in row.items() if k in CONSTRAINED))


Pair = tuple[tuple[str, str], tuple[str, str]]


def _pairs_of(row: dict[str, str]) -> set[Pair]:
    keys = [k for k in coverage.PARAMETERS if k in row]
    return {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(keys, 2)}


def realizable_pairs() -> set[Pair]:
    """Every value pair (parameters in coverage.PARAMETERS order) some valid call has."""
    params = coverage.PARAMETERS
    return {
        ((a, va), (b, vb))
        for a, b in itertools.combinations(params, 2)
        for va, vb in itertools.product(params[a], params[b])
        if _row_extendable({a: va, b: vb})
    }


def _greedy_rows(
    params: dict[str, tuple[str, ...]],
    uncovered: set[Pair],
    allowed: Callable[[dict[str, str]], bool],
    pairs_of: Callable[[dict[str, str]], set[Pair]],
    *,
    busiest_first: bool = True,
) -> list[dict[str, str]]:
    """Rows of ``params`` values that together have every pair of ``uncovered``.

    Each row starts from an uncovered pair (of the parameter pair with the most uncovered
    pairs left when ``busiest_first``, else of any), fills the other parameters (largest
    domain first) with the ``allowed`` value that covers most new pairs, and the best such
    row is kept; ties go to the first candidate."""
    order = sorted(params, key=lambda k: (-len(params[k]), list(params).index(k)))
    uncovered = set(uncovered)
    rows: list[dict[str, str]] = []
    while uncovered:
        seeds = sorted(uncovered)
        if busiest_first:
            left: Counter = Counter((a[0], b[0]) for a, b in uncovered)
            busiest = max(left, key=lambda ab: (left[ab], [-list(params).index(k) for k in ab]))
            seeds = [p for p in seeds if (p[0][0], p[1][0]) == busiest]
        best, best_gain = None, -1
        for seed in seeds:
            row = dict(seed)
            for k in order:
                if k in row:
                    continue
                choices = [v for v in params[k] if allowed({**row, k: v})]
                row[k] = max(choices, key=lambda v: len(pairs_of({**row, k: v}) & uncovered))
            gain = len(pairs_of(row) & uncovered)
            if gain > best_gain:
                best, best_gain = row, gain
        assert best is not None
        rows.append({k: best[k] for k in params})
        uncovered -= pairs_of(best)
    return rows


def pairwise_rows() -> list[dict[str, str]]:
    """Rows of coverage parameter values that together have every realizable value pair
    (``_greedy_rows``)."""
    return _greedy_rows(coverage.PARAMETERS, realizable_pairs(), _row_extendable, _pairs_of)


_NAME_TOKENS = {"N=1": "n1", "N>1": "nbatch", "kdim>=5": "kdim5", ">=10000": "10000plus"}


def pairwise_name(row: dict[str, str]) -> str:
    t = {k: _NAME_TOKENS.get(v, v).replace("-", "to") for k, v in row.items()}
    return (
        f"{t['target']}_w-{t['weight']}_ig-{t['ignored']}_ii-{t['ignore_index']}"
        f"_ls-{t['smoothing']}_{t['reduction']}_{t['shape']}_c{t['classes']}_{t['dtype']}"
    )


def _recipe(kind: str, shape: tuple[int, ...], **params: object) -> dict:
    """A generator recipe (harness/cases/generate.py) with its fingerprint."""
    spec = {"generate": kind, "shape": list(shape), **params}
    if kind != "full":
        spec["sha256"] = fingerprint(build(spec))
    return spec


def _array(source: object) -> np.ndarray:
    return build(source) if isinstance(source, dict) else np.asarray(source, dtype=np.float64)


def pairwise_inputs(row: dict[str, str], rng: np.random.Generator) -> dict:
    """Inputs of the call a row describes: logits, target, weight, ignore_index, label_smoothing.

    Small arrays are literals in multiples of 1/8 (logits, probabilities) and 1/4 (weights,
    negative ones in [-10, 10]); 100 classes and more, and empty arrays, are recipes.
    """
    classes = row["classes"]
    c = {"1": 1, "2": 2, "3-99": int(rng.integers(3, 8))}.get(classes)
    if c is None:
        c = 10_000 if classes == ">=10000" else int(rng.choice([100, 128, 257, 1000]))
    big = c >= 100
    shape = row["shape"]
    if shape == "unbatched":
        dims: tuple[int, ...] = (c,)
    elif shape == "N=1":
        dims = (1, c)
    elif shape == "N>1":
        dims = (2 if big else int(rng.integers(2, 5)), c)
    elif shape == "empty":
        dims = [(0, c), (0, c, 2), (2, c, 0)][int(rng.integers(0, 3))]
    else:
        k = 5 if shape == "kdim>=5" else int(shape[len("kdim") :])
        # many classes: one position (two when some are ignored), the oracle is exact
        n, spatial = (1, [1] * k) if big else (
            int(rng.integers(1, 3)), rng.integers(1, 3, size=k).tolist()
        )  # fmt: skip
        if n * int(np.prod(spatial)) < 2 and (row["ignored"] == "some" or not big):
            spatial[0] = 2
        dims = (n, c, *spatial)
    index_shape = _index_shape(dims)
    positions = int(np.prod(index_shape, dtype=np.int64))
    out: dict = {}
    if 0 in dims:
        out["logits"] = _recipe("full", dims, value=0.0)
    elif big:
        out["logits"] = _recipe("normal", dims, seed=int(rng.integers(2**31)), std=2.0)
    else:
        out["logits"] = _eighths(rng, dims, 24).tolist()

    weight = row["weight"]
    if weight == "uniform":
        value = float(rng.choice([0.5, 1.5, 2.0, 4.0]))
        out["weight"] = _recipe("full", (c,), value=value) if big else [value] * c
    elif weight == "positive" and big:
        out["weight"] = _recipe("uniform", (c,), seed=int(rng.integers(2**31)), low=0.25, high=3.0)
    elif weight == "negative" and big:
        out["weight"] = _recipe(
            "uniform", (c,), seed=int(rng.integers(2**31)), low=-10.0, high=10.0
        )
    elif weight == "positive":
        w = rng.integers(1, 13, size=c) / 4.0
        if np.all(w == w[0]):
            w[0] += 0.25
        out["weight"] = w.tolist()
    elif weight == "some_zero":
        w = rng.integers(1, 13, size=c) / 4.0
        w[rng.choice(c, size=max(1, c // 3), replace=False)] = 0.0
        out["weight"] = w.tolist()
    elif weight == "negative":
        w = rng.integers(-40, 41, size=c) / 4.0
        if not np.any(w < 0):
            w[int(rng.integers(0, c))] = -float(rng.integers(1, 41)) / 4.0
        out["weight"] = w.tolist()
    w = None if "weight" not in out else _array(out["weight"])

    if row["target"] == "probability":
        if 0 in dims:
            out["target"] = _recipe("full", dims, value=0.0)
        elif big and len(dims) == 1:
            out["target"] = _recipe("uniform", dims, seed=int(rng.integers(2**31)), high=2.0 / c)
        elif big:
            out["target"] = _recipe("probabilities", dims, seed=int(rng.integers(2**31)))
        else:
            # 8 units of mass per position over the classes: rows of eighths summing to 1
            counts = rng.multinomial(8, np.ones(c) / c, size=index_shape or None)
            target = np.asarray(counts, dtype=np.float64).reshape((*index_shape, c)) / 8.0
            out["target"] = (np.moveaxis(target, -1, 1) if len(dims) > 1 else target).tolist()
        if row["ignore_index"] == "negative":
            out["ignore_index"] = int(rng.choice([-1, -5]))
    else:
        ii = {
            "default": -100,
            "negative": int(rng.choice([-1, -5])),
            "in_range": int(rng.integers(0, c)),
            "out_of_range": c if rng.random() < 0.5 else c + int(rng.integers(1, 256)),
        }[row["ignore_index"]]
        if ii != -100:
            out["ignore_index"] = ii
        if positions == 0:
            out["target"] = _recipe("full", index_shape, value=0)
        else:
            labels = _labels(row, rng, c, ii, positions, w)
            out["target"] = labels.reshape(index_shape).tolist()
    eps = {
        "0": 0.0,
        "small": float(rng.choice([0.05, 0.1, 0.2])),
        "0.5": 0.5,
        "large": float(rng.choice([0.7, 0.75, 0.9])),
        "1": 1.0,
    }[row["smoothing"]]
    if eps:
        out["label_smoothing"] = eps
    return out


def _labels(row, rng, c: int, ii: int, positions: int, w: np.ndarray | None) -> np.ndarray:
    """Class-index targets with the row's ignored positions.

    With weights and a mean the draw is repeated (a few times, seeded) until the weighted
    mean's denominator sum_n w[y_n] is at least 0.5 away from 0: a denominator near 0 is
    an edge the hand-written cases have (weights.yaml), not a grid point.
    """
    for _ in range(100):
        labels = rng.integers(0, c, size=positions)
        if 0 <= ii < c and c > 1:  # no kept target in the ignored class
            labels = np.where(
                labels == ii, (ii + 1 + rng.integers(0, c - 1, size=positions)) % c, labels
            )
        if row["ignored"] == "all":
            labels[:] = ii
        elif row["ignored"] == "some":
            labels[rng.choice(positions, size=max(1, positions // 3), replace=False)] = ii
        kept = labels[labels != ii]
        if w is None or row["reduction"] != "mean" or kept.size == 0 or c == 1:
            break
        if abs(float(w[kept].sum())) >= 0.5:
            break
    return labels


def _pairwise_tags(row: dict[str, str]) -> list[str]:
    tags = []
    if row["target"] == "probability":
        tags.append("targets")
    if row["weight"] != "none":
        tags.append("weights")
    if row["target"] == "index" and (row["ignored"] != "none" or row["ignore_index"] != "default"):
        tags.append("ignore_index")
    if row["smoothing"] != "0":
        tags.append("smoothing")
    if row["shape"] == "unbatched":
        tags.append("unbatched")
    elif row["shape"].startswith("kdim"):
        tags.append("kdim")
    elif row["shape"] == "empty":
        tags.append("empty")
    return tags


def _case_block(name: str, row: dict[str, str], fields: dict, arrays: tuple[str, ...]) -> list[str]:
    """The YAML lines of one pairwise case: its ``arrays`` fields as flow values, then the
    options it sets, the row's reduction and dtype, oracle values and the row's tags."""
    described = ", ".join(f"{k} {v}" for k, v in row.items())
    block = [f"  - name: {name}", f'    why: "pairwise point: {described}"']
    for key in arrays:
        if key in fields:
            block.append(f"    {key}: {_flow_value(fields[key])}")
    for key in ("ignore_index", "label_smoothing", *_KERNEL_KEYS):
        if key in fields:
            value = fields[key]
            block.append(f"    {key}: {'true' if value is True else value}")
    block.append(f"    reduction: {row['reduction']}")
    block.append(f"    dtype: {row['dtype']}")
    block.append("    expected: oracle")
    tags = _pairwise_tags(row)
    if tags:
        block.append(f"    tags: {_flow(tags)}")
    return block


def _drawn_block(
    name: str,
    row: dict[str, str],
    draw: Callable[[dict[str, str], np.random.Generator], dict],
    arrays: tuple[str, ...],
    classify: Callable[[object], dict[str, str]],
) -> list[str]:
    """The case block of the first of up to 200 seeded draws of ``row`` whose case, loaded
    back as the harness loads it, ``classify`` puts in that row."""
    from harness.cases.loader import load_file

    for attempt in range(200):
        rng = np.random.default_rng([SEED, _stable_index_of(name), attempt])
        block = _case_block(name, row, draw(row, rng), arrays)
        with tempfile.TemporaryDirectory() as folder:
            probe = Path(folder) / "probe.yaml"
            probe.write_text("cases:\n" + "\n".join(block) + "\n", encoding="utf-8")
            (case,) = load_file(probe)
        if classify(case) == row:
            return block
    raise AssertionError(f"{name}: no draw in 200 classifies as its row")


def render_pairwise(rows: list[dict[str, str]]) -> str:
    lines = [
        "# Written by tools/make_corpus.py; expected values come from the oracle at run time.",
        "# Do not edit by hand: change the generator and run it again.",
        "description: >",
        "  A covering array of the parameters of 'python -m harness coverage': every value pair",
        "  a valid call can have (target kind, weight, ignored positions, ignore_index,",
        "  label_smoothing, reduction, shape up to 5 spatial axes, classes up to 10000, dtype)",
        "  occurs in at least one case; each case runs in one dtype.",
        "defaults:",
        "  tags: [pairwise]",
        "",
        "cases:",
    ]
    for row in rows:
        name = pairwise_name(row)
        rng = np.random.default_rng([SEED, _stable_index_of(name)])
        fields = pairwise_inputs(row, rng)
        got = coverage.classify_call(
            _array(fields["logits"]),
            _array(fields["target"]),
            probability=row["target"] == "probability",
            weight=None if "weight" not in fields else _array(fields["weight"]),
            ignore_index=fields.get("ignore_index", -100),
            label_smoothing=fields.get("label_smoothing", 0.0),
            reduction=row["reduction"],
        )
        assert got == {k: v for k, v in row.items() if k != "dtype"}, (name, got)
        lines += _case_block(name, row, fields, ("logits", "target", "weight"))
    return "\n".join(lines) + "\n"


def write_pairwise(out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = pairwise_rows()
    path = out / PAIRWISE_FILE
    path.write_text(render_pairwise(rows), encoding="utf-8")
    print(f"{path}: {len(rows)} cases", file=sys.stderr)
    return path


def _flow_value(value: object) -> str:
    """A list or a recipe mapping as one line of flow-style YAML."""
    if isinstance(value, dict):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return _flow(value)


def _stable_index_of(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


# -- the kernel fields' pairwise set --------------------------------------------------------
#
# The same greedy covering array over the parameters and the kernel fields together, for the
# pairs that name a kernel field (coverage.kernel_feasible_pairs). A row's inputs are those of
# the pairwise set, with the sequence axis lengthened for a shift and the kernel fields added;
# a shift scores targets moved back along the last axis, so a row with 'ignored: some' starts
# from targets with none ignored (the shift ignores the last positions). Each draw is checked
# against the row it is for (coverage.classify) and drawn again with the next seed if it
# misses.

KERNEL_PAIRWISE_FILE = "kernel_pairwise.yaml"


def _kernel_realizable(row: dict[str, str]) -> bool:
    """Whether the parameters and kernel fields of ``row`` (some may be absent) can meet."""
    if not _row_extendable({k: v for k, v in row.items() if k in coverage.PARAMETERS}):
        return False
    return not any(
        coverage.kernel_infeasible(k, row[k], b, row[b])
        for k in coverage.KERNEL_PARAMETERS
        if k in row
        for b in row
        if b != k
    )


def _all_params() -> dict[str, tuple[str, ...]]:
    return {**coverage.PARAMETERS, **coverage.KERNEL_PARAMETERS}


@functools.cache
def _kernel_pair_keys() -> tuple[tuple[str, str], ...]:
    return tuple(coverage.kernel_feasible_pairs())


def _kernel_pairs_of(row: dict[str, str]) -> set[Pair]:
    return {((a, row[a]), (b, row[b])) for (a, b) in _kernel_pair_keys() if a in row and b in row}


def _plain(field: str, value: str) -> bool:
    """Whether a kernel field's value is its default (plain cross-entropy: every other case)."""
    return value == coverage.KERNEL_PARAMETERS[field][0]


def kernel_pairwise_rows() -> list[dict[str, str]]:
    """Rows of parameter and kernel field values that together have every feasible pair of a
    kernel field's non-default value with a parameter (or another kernel field); greedy as
    ``pairwise_rows`` (a default value's pairs are those of the rest of the corpus)."""
    uncovered = {
        ((a, va), (b, vb))
        for (a, b), pairs in coverage.kernel_feasible_pairs().items()
        for va, vb in pairs
        if _kernel_realizable({a: va, b: vb}) and not _plain(a, va)
    }
    return _greedy_rows(_all_params(), uncovered, _kernel_realizable, _kernel_pairs_of)


_SHORT = {
    "weight": {"none": "", "uniform": "w-uni", "positive": "w-pos", "some_zero": "w-zero",
               "negative": "w-neg"},
    "ignore_index": {"default": "", "negative": "ii-neg", "in_range": "ii-in",
                     "out_of_range": "ii-out"},
    "dtype": {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"},
    "softcap": {"none": "", "set": "cap"},
    "logit_scale": {"1": "", "other": "scale"},
    "z_loss": {"0": "", "added": "z", "returned": "zret"},
    "shift": {"0": "", "1": "shift1", ">1": "shift2"},
}  # fmt: skip


def kernel_pairwise_name(row: dict[str, str]) -> str:
    """A short unique name (case ids stay within the 100 columns of --list)."""
    t = {k: _NAME_TOKENS.get(v, v).replace("-", "to") for k, v in row.items()}
    parts = [
        "idx" if row["target"] == "index" else "prob",
        _SHORT["weight"][row["weight"]],
        f"ig-{row['ignored']}",
        _SHORT["ignore_index"][row["ignore_index"]],
        f"ls-{row['smoothing']}" if row["smoothing"] != "0" else "",
        row["reduction"],
        t["shape"],
        {"1": "c1", "2": "c2", "3-99": "c3", "100-9999": "c100", ">=10000": "c10k"}[row["classes"]],
        _SHORT["dtype"][row["dtype"]],
        *(_SHORT[k][row[k]] for k in coverage.KERNEL_PARAMETERS),
    ]
    return "_".join(p for p in parts if p)


def _lengthen(source: object, axis_len: int, rng: np.random.Generator, fill) -> object:
    """A literal array or a recipe with its last axis at least ``axis_len`` long; new literal
    entries come from ``fill(shape)``."""
    if isinstance(source, dict):
        shape = list(source["shape"])
        if shape[-1] >= axis_len:
            return source
        shape[-1] = axis_len
        params = {k: v for k, v in source.items() if k not in ("generate", "shape", "sha256")}
        return _recipe(source["generate"], tuple(shape), **params)
    a = np.asarray(source)
    if a.shape[-1] >= axis_len:
        return source
    extra = fill((*a.shape[:-1], axis_len - a.shape[-1]))
    return np.concatenate([a, extra], axis=-1).tolist()


def kernel_pairwise_inputs(row: dict[str, str], rng: np.random.Generator) -> dict:
    """The fields of the call a kernel row describes (see above)."""
    base = dict(row)
    k = {"0": 0, "1": 1, ">1": 2}[row["shift"]]
    if k and row["ignored"] == "some":
        base["ignored"] = "none"
    out = pairwise_inputs(base, rng)
    if k:
        logits, target = out["logits"], out["target"]
        two_d = len(_array(logits).shape) == 2
        ii = out.get("ignore_index", -100)
        c = _array(logits).shape[1]
        kept = [j for j in range(c) if j != ii] or [0]

        def labels(shape: tuple[int, ...]) -> np.ndarray:
            if row["ignored"] == "all":
                return np.full(shape, ii)
            return rng.choice(kept, size=shape)

        if two_d:  # (N, C): the sequence is the batch axis
            x = _array(logits)
            if x.shape[0] < k + 1:
                if isinstance(logits, dict):
                    shape = (k + 1, c)
                    params = {
                        n: v for n, v in logits.items() if n not in ("generate", "shape", "sha256")
                    }
                    out["logits"] = _recipe(logits["generate"], shape, **params)
                else:
                    more = _eighths(rng, (k + 1 - x.shape[0], c), 24)
                    out["logits"] = np.concatenate([x, more]).tolist()
                out["target"] = np.concatenate(
                    [np.asarray(target), labels((k + 1 - x.shape[0],))]
                ).tolist()
        else:
            out["logits"] = _lengthen(logits, k + 1, rng, lambda shape: _eighths(rng, shape, 24))
            out["target"] = _lengthen(target, k + 1, rng, labels)
        out["shift"] = k
    if row["softcap"] == "set":
        out["softcap"] = float(rng.choice([1.5, 2.0, 5.0, 30.0]))
    if row["logit_scale"] == "other":
        out["logit_scale"] = float(rng.choice([0.125, 0.5, 2.0, 4.0]))
    if row["z_loss"] == "added":
        out["z_loss"] = float(rng.choice([0.0625, 0.25, 0.5]))
    elif row["z_loss"] == "returned":
        out["z_loss"] = float(rng.choice([0.0, 0.125, 0.5]))
        out["return_z_loss"] = True
    return out


_KERNEL_KEYS = ("softcap", "logit_scale", "z_loss", "return_z_loss", "shift")


def render_kernel_pairwise(rows: list[dict[str, str]]) -> str:
    lines = [
        "# Written by tools/make_corpus.py; expected values come from the oracle at run time.",
        "# Do not edit by hand: change the generator and run it again.",
        "description: >",
        "  A covering array of the kernel fields (softcap, logit_scale, z_loss, shift;",
        "  docs/kernel-features.md): every value pair of a kernel field with a parameter of",
        "  'python -m harness coverage' or another kernel field that a valid call can have",
        "  occurs in at least one case; each case runs in one dtype.",
        "defaults:",
        "  tags: [pairwise, kernel]",
        "",
        "cases:",
    ]
    names = [kernel_pairwise_name(row) for row in rows]
    assert len(set(names)) == len(names), "kernel pairwise names must be unique"
    for row, name in zip(rows, names, strict=True):
        lines += _drawn_block(
            name,
            row,
            kernel_pairwise_inputs,
            ("logits", "target", "weight"),
            lambda case, row=row: {**coverage.classify(case), "dtype": row["dtype"]},
        )
    return "\n".join(lines) + "\n"


def write_kernel_pairwise(out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = kernel_pairwise_rows()
    path = out / KERNEL_PAIRWISE_FILE
    path.write_text(render_kernel_pairwise(rows), encoding="utf-8")
    print(f"{path}: {len(rows)} cases", file=sys.stderr)
    return path


# -- fused linear cross-entropy's pairwise set ---------------------------------------------
#
# Every feasible pair of 'fused_linear' (bias, no_bias) with a parameter or a kernel field
# (coverage.linear_feasible_pairs), by the same greedy covering array. A row's target, weight
# and fields are those of the kernel set; its (P, C) logits become hidden states (P, H) and a
# classifier (C, H) (and a bias (C,)) drawn from seeded recipes, with H = LINEAR_HIDDEN.

LINEAR_PAIRWISE_FILE = "fused_linear_pairwise.yaml"
LINEAR_HIDDEN = 8


def _linear_realizable(row: dict[str, str]) -> bool:
    linear = row.get("fused_linear")
    if not _kernel_realizable({k: v for k, v in row.items() if k != "fused_linear"}):
        return False
    return linear is None or not any(
        ("fused_linear", linear, b, row[b]) in coverage.LINEAR_INFEASIBLE
        for b in row
        if b != "fused_linear"
    )


@functools.cache
def _linear_pair_keys() -> tuple[tuple[str, str], ...]:
    return tuple(coverage.linear_feasible_pairs())


def _linear_pairs_of(row: dict[str, str]) -> set[Pair]:
    return {((a, row[a]), (b, row[b])) for (a, b) in _linear_pair_keys() if a in row and b in row}


def linear_pairwise_rows() -> list[dict[str, str]]:
    """Rows of parameter, kernel field and fused_linear values that together have every
    feasible pair of a fused_linear value with a parameter or a kernel field."""
    uncovered = {
        ((a, va), (b, vb))
        for (a, b), pairs in coverage.linear_feasible_pairs().items()
        for va, vb in pairs
        if _linear_realizable({a: va, b: vb})
    }
    params = {**_all_params(), **coverage.LINEAR_PARAMETERS}
    return _greedy_rows(
        params, uncovered, _linear_realizable, _linear_pairs_of, busiest_first=False
    )


def linear_pairwise_inputs(row: dict[str, str], rng: np.random.Generator) -> dict:
    """The fields of the fused call a row describes: the kernel row's, logits made linear."""
    kernel_row = {k: v for k, v in row.items() if k != "fused_linear"}
    fields = kernel_pairwise_inputs(kernel_row, rng)
    positions, classes = _array(fields.pop("logits")).shape
    seeds = [int(s) for s in rng.integers(0, 2**31, size=3)]
    fields["hidden"] = _recipe("normal", (positions, LINEAR_HIDDEN), seed=seeds[0])
    fields["classifier"] = _recipe("normal", (classes, LINEAR_HIDDEN), seed=seeds[1], std=0.5)
    if row["fused_linear"] == "bias":
        fields["bias"] = _recipe("normal", (classes,), seed=seeds[2], std=0.25)
    return fields


def render_linear_pairwise(rows: list[dict[str, str]]) -> str:
    lines = [
        "# Written by tools/make_corpus.py; expected values come from the oracle at run time.",
        "# Do not edit by hand: change the generator and run it again.",
        "description: >",
        "  A covering array of fused linear cross-entropy (docs/fused-linear.md): every value",
        "  pair of fused_linear (with or without a bias) with a parameter of 'python -m harness",
        "  coverage' or a kernel field that a valid fused call can have occurs in at least one",
        "  case; each case runs in one dtype.",
        "defaults:",
        "  tags: [pairwise, fused_linear]",
        "",
        "cases:",
    ]
    names = [
        f"{kernel_pairwise_name(row)}_{'bias' if row['fused_linear'] == 'bias' else 'nobias'}"
        for row in rows
    ]
    assert len(set(names)) == len(names), "fused linear pairwise names must be unique"
    for row, name in zip(rows, names, strict=True):
        lines += _drawn_block(
            name,
            row,
            linear_pairwise_inputs,
            ("hidden", "classifier", "bias", "target", "weight"),
            lambda case, row=row: {
                **coverage.classify(case),
                "dtype": row["dtype"],
                "fused_linear": "bias" if case.bias is not None else "no_bias",
            },
        )
    return "\n".join(lines) + "\n"


def write_linear_pairwise(out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = linear_pairwise_rows()
    path = out / LINEAR_PAIRWISE_FILE
    path.write_text(render_linear_pairwise(rows), encoding="utf-8")
    print(f"{path}: {len(rows)} cases", file=sys.stderr)
    return path


def write_frozen() -> None:
    """Write ``cases/frozen/<file>.arrays`` for every built-in case file, and remove frozen
    data whose case file is gone. Loads with no cache and the default limits."""
    # the loader and oracle as a first run uses them: no cache, no limits from the environment
    os.environ["LOSSCONF_CACHE_DIR"] = "off"
    for name in limits.ENVIRONMENT.values():
        os.environ.pop(name, None)
    frozen.enabled = False
    suite = REPO / "cases"
    written = set()

    def load(path: Path) -> list:
        cases, errors = check_file(path)
        if errors:
            raise SystemExit(f"{errors[0]}: fix the case file before freezing it")
        return cases

    for path in discover([suite]):
        where = frozen.frozen_path(path, suite)
        assert where is not None
        arrays, cases = frozen.freeze(path, load)
        write_arrays(where, arrays)
        written.add(where)
        print(f"{where.relative_to(REPO)}: {len(cases)} cases, {where.stat().st_size:,} bytes")
    for stale in (suite / frozen.FOLDER).rglob(f"*{SUFFIX}"):
        if stale not in written:
            stale.unlink()
            print(f"{stale.relative_to(REPO)}: removed (no case file)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--fingerprints",
        nargs="+",
        metavar="FILE",
        help="fill 'sha256: FILL' in these case files instead of writing the grid",
    )
    p.add_argument(
        "--frozen",
        action="store_true",
        help="write cases/frozen/ (the built-in files' loaded cases and small expected values)",
    )
    args = p.parse_args(argv)
    if args.frozen:
        write_frozen()
        return 0
    if args.fingerprints:
        for name in args.fingerprints:
            n = fill_fingerprints(Path(name))  # also done by 'python -m harness regen'
            print(f"{name}: {n} fingerprints filled", file=sys.stderr)
        return 0
    write_grid()
    write_pairwise()
    write_kernel_pairwise()
    write_linear_pairwise()
    return 0


if __name__ == "__main__":
    sys.exit(main())
