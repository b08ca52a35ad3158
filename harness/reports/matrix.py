"""The conformance matrix: adapters x feature groups, conforming / run in each cell.

A result belongs to every group its case exercises (a weighted K-dim case
counts under both ``weights`` and ``K-dim``); groups are derived from the
case's features (``Case.features()``), its tags and file, and the dtype, so
the matrix needs no extra annotation in case files and can be rebuilt from a
JSON report. Results declared ``unsupported`` are left out of the counts (a
cell whose results are all unsupported reads ``n/a``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from harness.execution.results import Result, is_conforming
from harness.reports.document import worst_ratio

#: group -> features (from adapters.FEATURES) any of which puts a result in the group
FEATURE_GROUPS: dict[str, frozenset[str]] = {
    "reduction": frozenset({"reduction_none", "reduction_sum", "grad_output"}),
    "weights": frozenset({"weight"}),
    "ignore_index": frozenset({"ignore_index"}),
    "smoothing": frozenset({"label_smoothing"}),
    "probability targets": frozenset({"probability_target"}),
    "K-dim": frozenset({"kdim"}),
    "unbatched": frozenset({"unbatched"}),
}
#: words in a tag or case file name that mark a numerics case (overflow, non-finite, ...)
NUMERICS_WORDS = (
    "numeric", "overflow", "underflow", "nan", "inf", "finite", "stab", "extreme", "huge",
    "precision", "subnormal", "cancel", "accum",
)  # fmt: skip
LOW_PRECISION = frozenset({"float16", "bfloat16"})
GROUPS: tuple[str, ...] = (
    *FEATURE_GROUPS,
    "numerics",
    "dtypes",
    "invalid input",
)


def groups_of(case_id: str, features: Iterable[str], tags: Iterable[str], dtype: str) -> list[str]:
    """The matrix groups of one result, in ``GROUPS`` order.

    ``reduction`` holds the non-default reductions (none, sum); ``dtypes`` the
    half-precision runs (float16, bfloat16); ``numerics`` cases whose tags or
    file name speak of overflow, NaN/inf, precision and the like.
    """
    features = set(features)
    words = [t.lower() for t in tags] + [case_id.split("/", 1)[0].lower()]
    out = []
    for group in GROUPS:
        if group in FEATURE_GROUPS:
            hit = bool(features & FEATURE_GROUPS[group])
        elif group == "numerics":
            hit = any(w in text for text in words for w in NUMERICS_WORDS)
        elif group == "dtypes":
            hit = dtype in LOW_PRECISION or any("dtype" in t for t in words)
        else:
            hit = "invalid_input" in features
        if hit:
            out.append(group)
    return out


def _record(r: Result | Mapping) -> Mapping:
    """A Result or a JSON result dict, as a mapping with the fields the matrix reads."""
    if isinstance(r, Mapping):
        return r
    return {
        "case_id": r.case_id,
        "adapter": r.adapter,
        "dtype": r.dtype,
        "status": r.status.value,
        "features": r.features,
        "tags": r.tags,
        "loss_errors": None if r.loss_errors is None else r.loss_errors.to_dict(),
        "grad_errors": None if r.grad_errors is None else r.grad_errors.to_dict(),
    }


def cells(results: Iterable[Result | Mapping]) -> dict[str, dict[str, tuple[int, int]]]:
    """adapter -> group -> (conforming, run); plus the group ``all``. Accepts Results or dicts."""
    table: dict[str, dict[str, list[int]]] = {}
    for r in map(_record, results):
        row = table.setdefault(r["adapter"], {g: [0, 0] for g in (*GROUPS, "all")})
        if r["status"] == "unsupported":
            continue
        ok = is_conforming(r["status"])  # unsupported ones are not counted (above)
        for g in [*groups_of(r["case_id"], r["features"], r["tags"], r["dtype"]), "all"]:
            row[g][0] += ok
            row[g][1] += 1
    return {a: {g: (v[0], v[1]) for g, v in row.items()} for a, row in table.items()}


def worst_ratios(results: Iterable[Result | Mapping]) -> dict[str, dict[str, float | None]]:
    """adapter -> group -> the worst test ratio (error / allowed) of its compared results."""
    table: dict[str, dict[str, float | None]] = {}
    for r in map(_record, results):
        row = table.setdefault(r["adapter"], dict.fromkeys((*GROUPS, "all")))
        q = worst_ratio(r)
        if q is None or q != q:  # nothing compared, or NaN
            continue
        for g in [*groups_of(r["case_id"], r["features"], r["tags"], r["dtype"]), "all"]:
            worst = row[g]
            row[g] = q if worst is None else max(worst, q)
    return table


def ratio_text(q: float | None) -> str:
    if q is None:
        return "-"
    return "inf" if q == float("inf") else f"{q:.2g}"


def ratio_rows(results: Iterable[Result | Mapping]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the worst test ratio per adapter and group (at most 1 conforms)."""
    table = worst_ratios(results)
    headers = ["adapter", *GROUPS, "all"]
    body = [[a] + [ratio_text(row[g]) for g in (*GROUPS, "all")] for a, row in table.items()]
    return headers, body


def cell_text(conforming: int, run: int) -> str:
    return "n/a" if run == 0 else f"{conforming}/{run}"


def rows(results: Iterable[Result | Mapping]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the matrix, ready for tabulate or Markdown."""
    table = cells(results)
    headers = ["adapter", *GROUPS, "all"]
    body = [[a] + [cell_text(*row[g]) for g in (*GROUPS, "all")] for a, row in table.items()]
    return headers, body


def render(results: Iterable[Result | Mapping]) -> str:
    """The matrix as a plain-text table."""
    from tabulate import tabulate

    headers, body = rows(results)
    return tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True)


def render_ratios(results: Iterable[Result | Mapping]) -> str:
    """The worst test ratio per adapter and group as a plain-text table."""
    from tabulate import tabulate

    headers, body = ratio_rows(results)
    return tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True)
