"""Which parameter values and pairs the cases cover (``python -m harness coverage``).

Each valid case is classified along a few parameters (target kind, weight, ignored
positions, ignore_index kind, label_smoothing, reduction, shape, dtype); each
invalid-input case by its expected error. The report lists, per parameter, how
many case x dtype runs take each value, then for every pair of parameters how
many of the feasible value pairs occur, naming the ones that never do, and lists
the value pairs no valid call can have (``INFEASIBLE``), each with its reason.

The kernel authors' fields (``KERNEL_PARAMETERS``: softcap, logit_scale, z_loss, shift;
docs/kernel-features.md) are counted apart: each of their values paired with every
value of the parameters above and of the other kernel fields (``KERNEL_INFEASIBLE``
says which pairs no valid call has). A shifted case is classified by the targets it
is scored against (``ignored`` counts the last positions, which a shift ignores).

Fused linear cross-entropy (``LINEAR_PARAMETERS``: with or without a bias;
docs/fused-linear.md) is counted on the fused cases alone: each value paired with every
value of the parameters and of the kernel fields. A fused case is classified like the
logits it makes, (P, V) with P = N or B * T (``shape`` N=1 or N>1, ``classes`` by V).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.cases.model import ERROR_KINDS, Case
from harness.oracle.problem import shift_target

#: parameter -> the values it can take, in display order
PARAMETERS: dict[str, tuple[str, ...]] = {
    "target": ("index", "probability"),
    "weight": ("none", "uniform", "positive", "some_zero", "negative"),
    "ignored": ("none", "some", "all"),
    "ignore_index": ("default", "negative", "in_range", "out_of_range"),
    "smoothing": ("0", "small", "0.5", "large", "1"),
    "reduction": ("none", "mean", "sum"),
    "shape": (
        "unbatched", "N=1", "N>1", "kdim1", "kdim2", "kdim3", "kdim4", "kdim>=5", "empty",
    ),
    "classes": ("1", "2", "3-99", "100-9999", ">=10000"),
    "dtype": ("float64", "float32", "float16", "bfloat16"),
}  # fmt: skip

_PROBABILITY_NOT_IGNORED = (
    "probability targets have no ignored positions: ignore_index never selects a soft "
    "target row (a negative one is accepted and does nothing), so 'ignored' is always 'none'"
)
_PROBABILITY_RAISES = (
    "PyTorch raises for ignore_index >= 0 with probability targets ('ignore_index is not "
    "supported for floating point target'): an invalid-input case "
    "(expect_error: ignore_index_with_probabilities), not a valid call"
)
#: (parameter, value, parameter, value) -> why no valid call has both values; parameters
#: in PARAMETERS order. Triples can be infeasible too (one class with an in-range
#: ignore_index, ii = 0, ignores every target), but coverage counts pairs only.
INFEASIBLE: dict[tuple[str, str, str, str], str] = {
    ("target", "probability", "ignored", "some"): _PROBABILITY_NOT_IGNORED,
    ("target", "probability", "ignored", "all"): _PROBABILITY_NOT_IGNORED,
    ("target", "probability", "ignore_index", "in_range"): _PROBABILITY_RAISES,
    ("target", "probability", "ignore_index", "out_of_range"): (
        "'out_of_range' is ignore_index >= C >= 0; " + _PROBABILITY_RAISES
    ),
    ("weight", "positive", "classes", "1"): (
        "'positive' means positive and not all equal; the weight of one class has one entry, "
        "which is 'uniform' (or 'some_zero', 'negative')"
    ),
    ("ignored", "some", "shape", "unbatched"): (
        "unbatched input has one position (a scalar target): it is ignored or not, never 'some'"
    ),
    ("ignored", "some", "shape", "N=1"): (
        "(1, C) input has one position: it is ignored or not, never 'some'"
    ),
    ("ignored", "some", "shape", "empty"): (
        "an empty input has no positions, so none of them is ignored"
    ),
    ("ignored", "all", "shape", "empty"): (
        "an empty input has no positions; 0 of 0 ignored counts as 'none', never 'all'"
    ),
}


#: the kernel authors' fields: their values, each paired with every value of PARAMETERS and
#: of the other kernel fields ('returned': return_z_loss, with or without a z_loss term)
KERNEL_PARAMETERS: dict[str, tuple[str, ...]] = {
    "softcap": ("none", "set"),
    "logit_scale": ("1", "other"),
    "z_loss": ("0", "added", "returned"),
    "shift": ("0", "1", ">1"),
}

_SHIFT_INDEX = "a shift takes class-index targets: there is no next soft target to move"
_SHIFT_SEQUENCE = (
    "a shift needs a sequence axis longer than the shift (the target's last axis); this "
    "shape has {}"
)
_SHIFT_IGNORES = (
    "a shift ignores the last positions, which have no next target: 'ignored' is 'some' "
    "or 'all', never 'none'"
)
#: (kernel field, value, parameter, value) -> why no valid call has both values
KERNEL_INFEASIBLE: dict[tuple[str, str, str, str], str] = {
    **{("shift", k, "target", "probability"): _SHIFT_INDEX for k in ("1", ">1")},
    **{
        ("shift", k, "shape", shape): _SHIFT_SEQUENCE.format(has)
        for k in ("1", ">1")
        for shape, has in (
            ("unbatched", "none (one position)"),
            ("N=1", "one position"),
            ("empty", "no positions"),
        )
    },
    **{("shift", k, "ignored", "none"): _SHIFT_IGNORES for k in ("1", ">1")},
}


def infeasible(a: str, va: str, b: str, vb: str) -> str | None:
    """The reason no valid call has ``a=va`` and ``b=vb`` (either order), or None."""
    return INFEASIBLE.get((a, va, b, vb)) or INFEASIBLE.get((b, vb, a, va))


def feasible_pairs() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Parameter pair -> the value pairs a valid call can have, in display order."""
    return {
        (a, b): [
            (va, vb)
            for va, vb in itertools.product(PARAMETERS[a], PARAMETERS[b])
            if infeasible(a, va, b, vb) is None
        ]
        for a, b in itertools.combinations(PARAMETERS, 2)
    }


#: fused linear cross-entropy: counted on the fused cases, each value paired with every value
#: of PARAMETERS and KERNEL_PARAMETERS
LINEAR_PARAMETERS: dict[str, tuple[str, ...]] = {"fused_linear": ("bias", "no_bias")}

_LINEAR_INDEX = (
    "a fused linear case takes class indices, as Liger-Kernel's and cut-cross-entropy's "
    "fused losses do (docs/fused-linear.md)"
)
_LINEAR_SHAPE = "hidden states (N, H) or (B, T, H) make (P, V) logits with P >= 1: never {}"
#: (linear field, value, parameter, value) -> why no valid fused linear call has both values
LINEAR_INFEASIBLE: dict[tuple[str, str, str, str], str] = {
    **{("fused_linear", v, "target", "probability"): _LINEAR_INDEX for v in ("bias", "no_bias")},
    **{
        ("fused_linear", v, "shape", shape): _LINEAR_SHAPE.format(shape)
        for v in ("bias", "no_bias")
        for shape in ("unbatched", "kdim1", "kdim2", "kdim3", "kdim4", "kdim>=5", "empty")
    },
}


def linear_feasible_pairs() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(fused_linear, parameter or kernel field) -> the value pairs a fused call can have."""
    everything = {**PARAMETERS, **KERNEL_PARAMETERS}
    return {
        (k, b): [
            (vk, vb)
            for vk, vb in itertools.product(values, everything[b])
            if LINEAR_INFEASIBLE.get((k, vk, b, vb)) is None
        ]
        for k, values in LINEAR_PARAMETERS.items()
        for b in everything
    }


def kernel_infeasible(k: str, vk: str, b: str, vb: str) -> str | None:
    """The reason no valid call has kernel field ``k=vk`` and parameter ``b=vb``, or None."""
    return KERNEL_INFEASIBLE.get((k, vk, b, vb)) or KERNEL_INFEASIBLE.get((b, vb, k, vk))


def kernel_feasible_pairs() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(kernel field, parameter) -> the value pairs a valid call can have: each kernel field
    with every parameter of PARAMETERS and every later kernel field."""
    kernel = list(KERNEL_PARAMETERS)
    everything = {**PARAMETERS, **KERNEL_PARAMETERS}
    out = {}
    for i, k in enumerate(kernel):
        for b in [*PARAMETERS, *kernel[i + 1 :]]:
            out[(k, b)] = [
                (vk, vb)
                for vk, vb in itertools.product(KERNEL_PARAMETERS[k], everything[b])
                if kernel_infeasible(k, vk, b, vb) is None
            ]
    return out


def classify(case: Case) -> dict[str, str]:
    """The parameter values of a valid case (dtype excluded), kernel fields included."""
    target = case.target
    if case.shift and not case.probability_target:
        target = shift_target(target, case.shift, case.ignore_index)
    if case.fused:
        # the (P, V) logits the hidden states make, by shape alone (nothing is multiplied)
        positions = int(np.prod(case.hidden.shape[:-1]))
        x = np.broadcast_to(np.float64(0), (positions, case.classifier.shape[0]))
    else:
        x = case.logits
    row = classify_call(
        x,
        target,
        probability=case.probability_target,
        weight=case.weight,
        ignore_index=case.ignore_index,
        label_smoothing=case.label_smoothing,
        reduction=case.reduction,
    )
    return {**row, **classify_kernel(case)}


def classify_kernel(case: Case) -> dict[str, str]:
    """The values of the kernel fields of a case (``KERNEL_PARAMETERS``)."""
    return {
        "softcap": "none" if case.softcap is None else "set",
        "logit_scale": "1" if case.logit_scale == 1.0 else "other",
        "z_loss": "returned" if case.return_z_loss else "added" if case.z_loss else "0",
        "shift": "0" if case.shift == 0 else "1" if case.shift == 1 else ">1",
    }


def classify_call(
    x: np.ndarray,
    t: np.ndarray,
    *,
    probability: bool,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> dict[str, str]:
    """The parameter values of one call (dtype excluded): logits ``x``, target ``t``."""
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    out = {"target": "probability" if probability else "index"}
    w = weight
    if w is None:
        out["weight"] = "none"
    elif np.any(w < 0):
        out["weight"] = "negative"
    elif np.any(w == 0):
        out["weight"] = "some_zero"
    else:
        out["weight"] = "uniform" if np.all(w == w[0]) else "positive"
    ii = ignore_index
    out["ignore_index"] = (
        "default"
        if ii == -100
        else "negative"
        if ii < 0
        else "in_range"
        if ii < c
        else "out_of_range"
    )
    if probability or t.size == 0:
        out["ignored"] = "none"
    else:
        n = int(np.count_nonzero(t == ii))
        out["ignored"] = "none" if n == 0 else "all" if n == t.size else "some"
    eps = label_smoothing
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
    out["reduction"] = reduction
    if x.size == 0:
        out["shape"] = "empty"
    elif x.ndim == 1:
        out["shape"] = "unbatched"
    elif x.ndim == 2:
        out["shape"] = "N=1" if x.shape[0] == 1 else "N>1"
    else:
        k = x.ndim - 2
        out["shape"] = f"kdim{k}" if k < 5 else "kdim>=5"
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
    rows: list[dict[str, str]] = []
    errors: Counter[str] = Counter()
    for case in cases:
        if case.expect_error is not None:
            errors[case.expect_error] += 1
            continue
        base = classify(case)
        linear = "no" if not case.fused else "bias" if case.bias is not None else "no_bias"
        rows.extend(
            {**base, "fused_linear": linear, "dtype": d, "case": case.id} for d in case.dtypes
        )
    return rows, errors


@dataclass(frozen=True)
class PairCoverage:
    """Coverage of one parameter pair: feasible value pairs, those never seen, infeasible ones seen."""

    a: str
    b: str
    feasible: list[tuple[str, str]]
    missing: list[tuple[str, str]]
    contradicting: dict[tuple[str, str], str]  # an 'infeasible' value pair -> a case that has it

    @property
    def covered(self) -> int:
        return len(self.feasible) - len(self.missing)


def _pair_coverage(
    rows: list[dict[str, str]],
    pairs: dict[tuple[str, str], list[tuple[str, str]]],
    infeasible_pair: Callable[[str, str, str, str], object],
) -> list[PairCoverage]:
    """Per parameter pair of ``pairs`` (pair -> its feasible value pairs), what ``rows``
    cover: the values missing, and the rows holding a pair ``infeasible_pair`` rules out."""
    out = []
    for (a, b), feasible in pairs.items():
        seen: dict[tuple[str, str], str] = {}
        for r in rows:
            seen.setdefault((r[a], r[b]), r.get("case", "?"))
        missing = [p for p in feasible if p not in seen]
        contradicting = {p: cid for p, cid in seen.items() if infeasible_pair(a, p[0], b, p[1])}
        out.append(PairCoverage(a, b, feasible, missing, contradicting))
    return out


def pair_coverage(rows: list[dict[str, str]]) -> list[PairCoverage]:
    """Per parameter pair (in PARAMETERS order), what the rows cover."""
    return _pair_coverage(rows, feasible_pairs(), infeasible)


def kernel_pair_coverage(rows: list[dict[str, str]]) -> list[PairCoverage]:
    """Per (kernel field, parameter) pair, what the rows cover."""
    return _pair_coverage(rows, kernel_feasible_pairs(), kernel_infeasible)


def linear_pair_coverage(rows: list[dict[str, str]]) -> list[PairCoverage]:
    """Per (fused_linear, parameter or kernel field) pair, what the fused rows cover."""
    fused = [r for r in rows if r.get("fused_linear", "no") != "no"]
    return _pair_coverage(
        fused,
        linear_feasible_pairs(),
        lambda a, va, b, vb: (a, va, b, vb) in LINEAR_INFEASIBLE,
    )


def _contradicting_lines(coverage: list[PairCoverage]) -> list[str]:
    """The report's lines on value pairs declared infeasible that a case has (none: none)."""
    contradicting = [
        f"  {pc.a}={va} + {pc.b}={vb} occurs in {cid}"
        for pc in coverage
        for (va, vb), cid in pc.contradicting.items()
    ]
    if not contradicting:
        return []
    return [
        "",
        "Declared infeasible, yet a case has it (fix the table or the case):",
        *contradicting,
    ]


def _render_linear(rows: list[dict[str, str]]) -> list[str]:
    """The fused linear section of the report: values, then pairs."""
    from tabulate import tabulate

    fused = [r for r in rows if r.get("fused_linear", "no") != "no"]
    counts = Counter(r["fused_linear"] for r in fused)
    lines = ["", "Fused linear cross-entropy (docs/fused-linear.md), values (runs):"]
    values = "  ".join(f"{v}={counts.get(v, 0)}" for v in LINEAR_PARAMETERS["fused_linear"])
    lines.append(tabulate([["fused_linear", values]], headers=["field", "value=runs"],
                          tablefmt="simple"))  # fmt: skip
    coverage = linear_pair_coverage(rows)
    covered = sum(pc.covered for pc in coverage)
    feasible = sum(len(pc.feasible) for pc in coverage)
    missing = " ".join(f"{pc.b}={vb}+{va}" for pc in coverage for va, vb in pc.missing) or "-"
    lines += ["", "Fused linear pairs (covered/feasible; never covered):"]
    lines.append(tabulate([["fused_linear x every parameter and kernel field",
                            f"{covered}/{feasible}", missing]],
                          headers=["pairs", "covered", "missing"], tablefmt="simple"))  # fmt: skip
    lines += ["", f"Fused linear infeasible pairs ({len(LINEAR_INFEASIBLE)}, not counted):"]
    lines.append(tabulate([[f"{a}={va} + {b}={vb}", why] for (a, va, b, vb), why in
                           LINEAR_INFEASIBLE.items()], headers=["pair", "why"],
                          tablefmt="simple"))  # fmt: skip
    lines += _contradicting_lines(coverage)
    share = 100.0 * covered / feasible if feasible else 100.0
    lines.append(f"\nfused linear pairs: {covered}/{feasible} feasible value pairs ({share:.1f}%)")
    return lines


def _render_kernel(rows: list[dict[str, str]]) -> list[str]:
    """The kernel fields' section of the report: values, then pairs per kernel field."""
    from tabulate import tabulate

    lines = ["", "Kernel fields (docs/kernel-features.md), values (runs):"]
    table = []
    for name, values in KERNEL_PARAMETERS.items():
        counts = Counter(r[name] for r in rows)
        table.append([name, "  ".join(f"{v}={counts.get(v, 0)}" for v in values)])
    lines.append(tabulate(table, headers=["field", "value=runs"], tablefmt="simple"))
    coverage = kernel_pair_coverage(rows)
    per_field: dict[str, list[PairCoverage]] = {}
    for pc in coverage:
        per_field.setdefault(pc.a, []).append(pc)
    pair_rows = []
    for field_name, pcs in per_field.items():
        covered = sum(pc.covered for pc in pcs)
        feasible = sum(len(pc.feasible) for pc in pcs)
        missing = " ".join(f"{pc.b}={vb}+{va}" for pc in pcs for va, vb in pc.missing) or "-"
        pair_rows.append([f"{field_name} x every parameter", f"{covered}/{feasible}", missing])
    lines += ["", "Kernel field pairs (covered/feasible; never covered):"]
    lines.append(tabulate(pair_rows, headers=["pairs", "covered", "missing"], tablefmt="simple"))
    lines += ["", f"Kernel field infeasible pairs ({len(KERNEL_INFEASIBLE)}, not counted):"]
    infeasible_rows = [
        [f"{a}={va} + {b}={vb}", why] for (a, va, b, vb), why in KERNEL_INFEASIBLE.items()
    ]
    lines.append(tabulate(infeasible_rows, headers=["pair", "why"], tablefmt="simple"))
    lines += _contradicting_lines(coverage)
    covered = sum(pc.covered for pc in coverage)
    feasible = sum(len(pc.feasible) for pc in coverage)
    share = 100.0 * covered / feasible if feasible else 100.0
    lines.append(f"\nkernel field pairs: {covered}/{feasible} feasible value pairs ({share:.1f}%)")
    return lines


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
    lines += ["", "Pairs (covered/feasible; never covered):"]
    pair_rows = []
    coverage = pair_coverage(rows)
    for pc in coverage:
        missing = " ".join(f"{va}+{vb}" for va, vb in pc.missing) or "-"
        pair_rows.append([f"{pc.a} x {pc.b}", f"{pc.covered}/{len(pc.feasible)}", missing])
    lines.append(tabulate(pair_rows, headers=["pair", "covered", "missing"], tablefmt="simple"))
    lines += ["", f"Infeasible value pairs ({len(INFEASIBLE)}, not counted):"]
    infeasible_rows = [[f"{a}={va} + {b}={vb}", why] for (a, va, b, vb), why in INFEASIBLE.items()]
    lines.append(tabulate(infeasible_rows, headers=["pair", "why"], tablefmt="simple"))
    lines += _contradicting_lines(coverage)
    covered = sum(pc.covered for pc in coverage)
    feasible = sum(len(pc.feasible) for pc in coverage)
    share = 100.0 * covered / feasible if feasible else 100.0
    lines.append(f"\npairwise coverage: {covered}/{feasible} feasible value pairs ({share:.1f}%)")
    lines += _render_kernel(rows)
    lines += _render_linear(rows)
    return "\n".join(lines)
