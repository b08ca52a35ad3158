"""The terminal report: a summary line per adapter, the matrices, then the non-conforming
results: grouped by cause (``harness.reports.causes``) when that makes the list shorter, and
one by one with ``-v`` or when there are at most ``LISTED`` of them."""

from __future__ import annotations

from collections import Counter

from tabulate import tabulate

from harness.execution.results import CONFORMING, Result, Status
from harness.reports import causes, matrix

#: without -v, the results are listed one by one only up to this many (about a screen)
LISTED = 40

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
    dialects = _other_dialects(results)
    rows = []
    for name, rs in by_adapter.items():
        counts = Counter(r.status for r in rs)
        rows.append(
            [name, versions.get(name, "")]
            + (
                [
                    rs[0].semantics,
                    f"{sum(r.conforming for r in rs)}/{len(rs)}",
                    f"{sum(r.status_under_torch in CONFORMING for r in rs)}/{len(rs)}",
                ]
                if dialects
                else []
            )
            + [len(rs)]
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
        *(["semantics", "conform (own)", "conform (torch)"] if dialects else []),
        "results",
        *[s.value for s in shown],
        "worst loss ratio",
        "worst grad ratio",
        "worst ulp",
    ]
    return tabulate(rows, headers=headers, tablefmt="simple")


def _other_dialects(results: list[Result]) -> bool:
    """Whether an adapter declares semantics other than PyTorch's (both verdicts shown)."""
    return any(r.semantics != "torch" for r in results)


def failures_table(results: list[Result], *, width: int | None = 110) -> str:
    dialects = _other_dialects(results)
    rows = []
    for r in results:
        if r.conforming:
            continue
        msg = r.message
        if width and len(msg) > width:
            msg = msg[: width - 3] + "..."
        under = [r.status_under_torch.value] if dialects else []
        rows.append([r.case_id, r.adapter, r.dtype, r.status.value, *under, msg])
    headers = ["case", "adapter", "dtype", "status", *(["under torch"] if dialects else [])]
    return tabulate(rows, headers=[*headers, "what differed"], tablefmt="simple")


def differences_table(results: list[Result], *, width: int | None = 110) -> str:
    """The results whose verdict under PyTorch's semantics is not their own."""
    rows = []
    for r in results:
        if r.status_under_torch is r.status:
            continue
        msg = r.torch_message
        if width and len(msg) > width:
            msg = msg[: width - 3] + "..."
        rows.append(
            [r.case_id, r.adapter, r.dtype, r.semantics, r.status.value,
             r.status_under_torch.value, msg]
        )  # fmt: skip
    headers = ["case", "adapter", "dtype", "semantics", "status", "under torch", "what differs"]
    return tabulate(rows, headers=headers, tablefmt="simple")


def _non_conforming(bad: list[Result], *, verbose: bool) -> list[str]:
    """The causes (when fewer than the results), then the results one by one (all of them
    with ``verbose`` or when at most ``LISTED``, else a pointer to -v and the JSON)."""
    width = None if verbose else 110
    found = causes.group(r.to_dict() for r in bad)
    parts: list[str] = []
    if len(found) < len(bad):
        shown = found if verbose else found[: causes.SHOWN]
        rows = causes.table_rows(shown, width=None if verbose else 70)
        parts += [
            f"Non-conforming results ({len(bad)}) by cause ({len(found)}):",
            tabulate(rows, headers=causes.HEADERS, tablefmt="simple", disable_numparse=True),
        ]
        more = None if verbose else causes.rest(found)
        parts += [more] if more else []
        title = f"Non-conforming results one by one ({len(bad)}):"
    else:
        title = f"Non-conforming results ({len(bad)}):"
    if verbose or len(bad) <= LISTED:
        parts += [""] if parts else []
        parts += [title, failures_table(bad, width=width)]
    else:
        parts.append(f"(-v or the JSON report lists all {len(bad)} one by one)")
    return parts


def render(results: list[Result], versions: dict[str, str], *, verbose: bool = False) -> str:
    parts = [summary_table(results, versions), "", "Conformance matrix (conforming/run):"]
    parts.append(matrix.render(results))
    parts += ["", "Worst test ratio (error / allowed; at most 1 conforms):"]
    parts.append(matrix.render_ratios(results))
    differ = [r for r in results if r.status_under_torch is not r.status]
    if differ:
        parts += ["", f"Differences from PyTorch's semantics ({len(differ)}; the gate reads "
                  "the verdict under each adapter's own):"]  # fmt: skip
        if verbose or len(differ) <= LISTED:
            parts.append(differences_table(differ, width=None if verbose else 110))
        else:
            by_case = Counter((r.adapter, r.status_under_torch.value) for r in differ)
            parts += [
                f"  {adapter}: {n} results {status} under torch"
                for (adapter, status), n in sorted(by_case.items())
            ]
            parts.append(f"(-v or the JSON report lists all {len(differ)} one by one)")
    bad = [r for r in results if not r.conforming]
    if bad:
        parts += ["", *_non_conforming(bad, verbose=verbose)]
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
    last = f"{n} results: all conform" if not bad else f"{len(bad)} of {n} results do not conform"
    if _other_dialects(results):
        under = sum(r.status_under_torch not in CONFORMING for r in results)
        last += f" (under PyTorch's semantics: {under} do not conform)"
    parts += ["", last]
    return "\n".join(parts)
