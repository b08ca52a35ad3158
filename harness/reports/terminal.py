"""The terminal report: a summary line per adapter, then every non-conforming result."""

from __future__ import annotations

from collections import Counter

from tabulate import tabulate

from harness.execution.results import Result, Status
from harness.reports import matrix

SUMMARY_STATUSES = (
    Status.PASS, Status.RAISED, Status.FAIL, Status.ERROR,
    Status.MISSING_ERROR, Status.UNSUPPORTED, Status.CRASH, Status.TIMEOUT,
)  # fmt: skip


def _worst(results: list[Result], attrs: tuple[str, ...], figure: str) -> str:
    values = [
        getattr(getattr(r, a), figure) for r in results for a in attrs if getattr(r, a) is not None
    ]
    values = [v for v in values if v == v]  # NaN: nothing comparable
    if not values:
        return "-"
    worst = max(values)
    return "inf" if worst == float("inf") else f"{worst:.3g}"


def summary_table(results: list[Result], versions: dict[str, str]) -> str:
    by_adapter: dict[str, list[Result]] = {}
    for r in results:
        by_adapter.setdefault(r.adapter, []).append(r)
    shown = [s for s in SUMMARY_STATUSES if any(r.status is s for r in results)] or [Status.PASS]
    rows = []
    for name, rs in by_adapter.items():
        counts = Counter(r.status for r in rs)
        rows.append(
            [name, versions.get(name, ""), len(rs)]
            + [counts.get(s, 0) for s in shown]
            + [
                _worst(rs, ("loss_errors",), "max_ratio"),
                _worst(rs, ("grad_errors",), "max_ratio"),
                _worst(rs, ("loss_errors", "grad_errors"), "max_ulp"),
            ]
        )
    headers = [
        "adapter",
        "wraps",
        "results",
        *[s.value for s in shown],
        "worst loss ratio",
        "worst grad ratio",
        "worst ulp",
    ]
    return tabulate(rows, headers=headers, tablefmt="simple")


def failures_table(results: list[Result], *, width: int | None = 110) -> str:
    rows = []
    for r in results:
        if r.conforming:
            continue
        msg = r.message
        if width and len(msg) > width:
            msg = msg[: width - 3] + "..."
        rows.append([r.case_id, r.adapter, r.dtype, r.status.value, msg])
    return tabulate(
        rows, headers=["case", "adapter", "dtype", "status", "what differed"], tablefmt="simple"
    )


def render(results: list[Result], versions: dict[str, str], *, verbose: bool = False) -> str:
    parts = [summary_table(results, versions), "", "Conformance matrix (conforming/run):"]
    parts.append(matrix.render(results))
    parts += ["", "Worst test ratio (error / allowed; at most 1 conforms):"]
    parts.append(matrix.render_ratios(results))
    bad = [r for r in results if not r.conforming]
    if bad:
        parts += [
            "",
            f"Non-conforming results ({len(bad)}):",
            failures_table(results, width=None if verbose else 110),
        ]
    if verbose:
        unsupported = [r for r in results if r.status is Status.UNSUPPORTED]
        if unsupported:
            rows = [[r.case_id, r.adapter, r.dtype, r.message] for r in unsupported]
            parts += [
                "",
                "Unsupported:",
                tabulate(rows, headers=["case", "adapter", "dtype", "why"]),
            ]
    n = len(results)
    parts += [
        "",
        f"{n} results: all conform" if not bad else f"{len(bad)} of {n} results do not conform",
    ]
    return "\n".join(parts)
