"""``python -m harness coverage [PATH...]``: which parameter values and pairs the cases cover.

Each valid case is classified along a few parameters (target kind, weight, ignored
positions, ignore_index kind, label_smoothing, reduction, shape, dtype); each
invalid-input case by its expected error. The report lists, per parameter, how
many case x dtype runs take each value, then for every pair of parameters how
many of the possible value pairs occur, naming the ones that never do.
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter
from pathlib import Path

import numpy as np

from harness.case import ERROR_KINDS, Case

#: parameter -> the values it can take, in display order
PARAMETERS: dict[str, tuple[str, ...]] = {
    "target": ("index", "probability"),
    "weight": ("none", "uniform", "positive", "some_zero", "negative"),
    "ignored": ("none", "some", "all"),
    "ignore_index": ("default", "negative", "in_range", "out_of_range"),
    "smoothing": ("0", "small", "0.5", "large", "1"),
    "reduction": ("none", "mean", "sum"),
    "shape": ("unbatched", "N=1", "N>1", "kdim1", "kdim2", "kdim3", "empty"),
    "classes": ("1", "2", "3-99", "100-9999", ">=10000"),
    "dtype": ("float64", "float32", "float16", "bfloat16"),
}
#: value pairs no valid call can have
IMPOSSIBLE = {
    ("target", "probability", "ignored", "some"),
    ("target", "probability", "ignored", "all"),
    ("target", "probability", "ignore_index", "in_range"),
    ("target", "probability", "ignore_index", "out_of_range"),
    ("ignored", "some", "shape", "unbatched"),
    ("ignored", "some", "shape", "N=1"),
    ("ignored", "some", "shape", "empty"),
    ("ignored", "all", "shape", "empty"),
}


def classify(case: Case) -> dict[str, str]:
    """The parameter values of a valid case (dtype excluded)."""
    x, t = case.logits, case.target
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    out = {"target": "probability" if case.probability_target else "index"}
    w = case.weight
    if w is None:
        out["weight"] = "none"
    elif np.any(w < 0):
        out["weight"] = "negative"
    elif np.any(w == 0):
        out["weight"] = "some_zero"
    else:
        out["weight"] = "uniform" if np.all(w == w[0]) else "positive"
    ii = case.ignore_index
    out["ignore_index"] = (
        "default"
        if ii == -100
        else "negative"
        if ii < 0
        else "in_range"
        if ii < c
        else "out_of_range"
    )
    if case.probability_target or t.size == 0:
        out["ignored"] = "none"
    else:
        n = int(np.count_nonzero(t == ii))
        out["ignored"] = "none" if n == 0 else "all" if n == t.size else "some"
    eps = case.label_smoothing
    out["smoothing"] = (
        "0"
        if eps == 0
        else "small"
        if eps < 0.5
        else "0.5"
        if eps == 0.5
        else "1"
        if eps == 1
        else "large"
    )
    out["reduction"] = case.reduction
    if x.size == 0:
        out["shape"] = "empty"
    elif x.ndim == 1:
        out["shape"] = "unbatched"
    elif x.ndim == 2:
        out["shape"] = "N=1" if x.shape[0] == 1 else "N>1"
    else:
        out["shape"] = f"kdim{min(x.ndim - 2, 3)}"
    out["classes"] = (
        "1"
        if c == 1
        else "2"
        if c == 2
        else "3-99"
        if c < 100
        else "100-9999"
        if c < 10000
        else ">=10000"
    )
    return out


def rows_of(cases: list[Case]) -> tuple[list[dict[str, str]], Counter]:
    """One classification per valid case x dtype; a count of invalid cases per expected error."""
    rows, errors = [], Counter()
    for case in cases:
        if case.expect_error is not None:
            errors[case.expect_error] += 1
            continue
        base = classify(case)
        rows.extend({**base, "dtype": d} for d in case.dtypes)
    return rows, errors


def render(cases: list[Case]) -> str:
    from tabulate import tabulate

    rows, errors = rows_of(cases)
    lines = [f"{len(cases)} cases, {len(rows)} valid case x dtype runs", "", "Values (runs):"]
    table = []
    for name, values in PARAMETERS.items():
        counts = Counter(r[name] for r in rows)
        table.append([name, "  ".join(f"{v}={counts.get(v, 0)}" for v in values)])
    table.append(["expect_error", "  ".join(f"{k}={errors.get(k, 0)}" for k in ERROR_KINDS)])
    lines.append(tabulate(table, headers=["parameter", "value=runs"], tablefmt="simple"))
    lines += ["", "Pairs (covered/possible; never covered):"]
    pair_rows = []
    total_cov = total_pos = 0
    for a, b in itertools.combinations(PARAMETERS, 2):
        seen = {(r[a], r[b]) for r in rows}
        possible = [
            (va, vb)
            for va, vb in itertools.product(PARAMETERS[a], PARAMETERS[b])
            if (a, va, b, vb) not in IMPOSSIBLE
        ]
        missing = [f"{va}+{vb}" for va, vb in possible if (va, vb) not in seen]
        covered = len(possible) - len(missing)
        total_cov += covered
        total_pos += len(possible)
        pair_rows.append([f"{a} x {b}", f"{covered}/{len(possible)}", " ".join(missing) or "-"])
    lines.append(tabulate(pair_rows, headers=["pair", "covered", "missing"], tablefmt="simple"))
    lines.append(f"\npairwise coverage: {total_cov}/{total_pos} value pairs")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m harness coverage", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("paths", nargs="*", help="case files or folders (default: the built-in suite)")
    args = p.parse_args(argv)
    from harness.loader import load_paths

    cases = load_paths([Path(x) for x in args.paths] or None).cases
    print(render(cases))
    return 0
