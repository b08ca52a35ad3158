"""Reading a report document (the JSON report's dict) for the Markdown, JUnit and HTML reports.

Every file report renders from the same document, so a report can also be
re-rendered later from a saved JSON file.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

from harness.execution.results import STATUS_NAMES, is_conforming


def fmt_ulp(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.3g}"


def worst(results: list[dict], key: str, figure: str = "max_ulp") -> float | None:
    """The largest ``figure`` of ``key`` ('loss_errors' or 'grad_errors'), None if none.

    ``figure``: 'max_ratio' (the test ratio) or 'max_ulp'; reports that predate test
    ratios have none.
    """
    values = [r[key][figure] for r in results if r.get(key) and r[key].get(figure) is not None]
    values = [v for v in values if v == v]
    return max(values) if values else None


def worst_ulp_of(results: list[dict]) -> float | None:
    both = [worst(results, "loss_errors"), worst(results, "grad_errors")]
    values = [v for v in both if v is not None]
    return max(values) if values else None


def worst_ulp(r: dict) -> float | None:
    """The larger of the loss and gradient max ulp errors; None when nothing was compared."""
    values = [e["max_ulp"] for e in (r.get("loss_errors"), r.get("grad_errors")) if e]
    return max(values) if values else None


def worst_ratio(r: Mapping) -> float | None:
    """The larger of the loss and gradient test ratios; None when nothing was compared
    (or the report predates test ratios)."""
    values = [
        e["max_ratio"]
        for e in (r.get("loss_errors"), r.get("grad_errors"))
        if e and e.get("max_ratio") is not None
    ]
    return max(values) if values else None


def by_adapter(doc: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {a["name"]: [] for a in doc["adapters"]}
    for r in doc["results"]:
        out.setdefault(r["adapter"], []).append(r)
    return out


def torch_status(r: Mapping) -> str:
    """A result's verdict under PyTorch's semantics (its ``status`` in a report that predates
    dialects, or for an adapter of PyTorch's dialect)."""
    return r.get("torch_status") or r["status"]


def other_dialects(doc: dict) -> bool:
    """Whether an adapter of the report declares semantics other than PyTorch's: the reports
    then show both verdicts."""
    return any(r.get("semantics", "torch") != "torch" for r in doc["results"]) or any(
        a.get("semantics", "torch") != "torch" for a in doc["adapters"]
    )


#: rows of the differences from PyTorch's semantics that a report lists
DIFFERENCES_SHOWN = 100
DIFFERENCE_HEADERS = ["case", "adapter", "dtype", "semantics", "status", "under torch", "what differs"]


def difference_row(r: dict, width: int | None = 200) -> list[object]:
    """One result that conforms differently under PyTorch's semantics, for a table."""
    message = r.get("torch_message") or ""
    if width and len(message) > width:
        message = message[: width - 3] + "..."
    return [r["case_id"], r["adapter"], r["dtype"], r.get("semantics", "torch"), r["status"],
            torch_status(r), message]  # fmt: skip


def differs_under_torch(doc: dict) -> list[dict]:
    """Results whose verdict under PyTorch's semantics is not their own: what an adapter of
    another dialect does differently from PyTorch."""
    return [r for r in doc["results"] if torch_status(r) != r["status"]]


def conforming_count(results: list[dict], status_of: object = None) -> str:
    """'conforming/run' of ``results`` by ``status_of(r)`` (default: their ``status``)."""
    pick = status_of if callable(status_of) else (lambda r: r["status"])
    return f"{sum(is_conforming(pick(r)) for r in results)}/{len(results)}"


def summary_rows(doc: dict) -> tuple[list[str], list[list[object]]]:
    """Headers and one row per adapter: wraps, device, result count per status, worst ulps;
    with an adapter of another dialect, each adapter's semantics and its conforming results
    under them and under PyTorch's."""
    shown = [s for s in STATUS_NAMES if any(r["status"] == s for r in doc["results"])]
    info = {a["name"]: a for a in doc["adapters"]}
    dialects = other_dialects(doc)
    rows = []
    for name, rs in by_adapter(doc).items():
        counts = Counter(r["status"] for r in rs)
        semantics = info.get(name, {}).get("semantics") or (rs[0].get("semantics") if rs else "")
        rows.append(
            [name, info.get(name, {}).get("wraps", ""), info.get(name, {}).get("device", "")]
            + (
                [semantics or "torch", conforming_count(rs), conforming_count(rs, torch_status)]
                if dialects
                else []
            )
            + [len(rs)]
            + [counts.get(s, 0) for s in shown]
            + [
                fmt_ulp(worst(rs, "loss_errors", "max_ratio")),
                fmt_ulp(worst(rs, "grad_errors", "max_ratio")),
                fmt_ulp(worst_ulp_of(rs)),
            ]
        )
    headers = [
        "adapter", "wraps", "device",
        *(["semantics", "conform (own)", "conform (torch)"] if dialects else []),
        "results", *shown, "worst loss ratio", "worst grad ratio", "worst ulp",
    ]  # fmt: skip
    return headers, rows


def blocking(doc: dict) -> list[dict]:
    """Non-conforming results no expectation allows."""
    return [r for r in doc["results"] if not is_conforming(r["status"]) and not r.get("expected")]


def expected(doc: dict) -> list[dict]:
    return [r for r in doc["results"] if r.get("expected")]


def unexpected_passes(doc: dict) -> list[dict]:
    keys = {tuple(k) for k in doc.get("gate", {}).get("unexpected_passes", [])}
    return [r for r in doc["results"] if (r["case_id"], r["adapter"], r["dtype"]) in keys]


def verdict(doc: dict) -> str:
    """'PASS' or 'FAIL' as the gate decided (falls back to conformance when no gate section)."""
    gate = doc.get("gate")
    if gate is not None:
        return "PASS" if gate["exit_code"] == 0 else "FAIL"
    return "FAIL" if blocking(doc) else "PASS"


def interruption(doc: dict) -> str | None:
    """'the run was interrupted (exit code 130) after 12 of 40 results'; None for a complete run."""
    if doc.get("complete", True):
        return None
    code = (doc.get("gate") or {}).get("exit_code")
    planned = doc.get("planned_results")
    return (
        "the run was interrupted"
        + (f" (exit code {code})" if code is not None else "")
        + f" after {len(doc['results'])}"
        + (f" of {planned}" if planned is not None else "")
        + " results"
    )


def headline(doc: dict) -> str:
    n, bad = len(doc["results"]), len(blocking(doc))
    text = f"{n} results: all conform" if not bad else f"{bad} of {n} results do not conform"
    stopped = interruption(doc)
    if stopped:
        text = f"INCOMPLETE, {stopped}: {text}"
    if other_dialects(doc):
        n_torch = sum(not is_conforming(torch_status(r)) for r in doc["results"])
        text += f"; under PyTorch's semantics {n_torch} of {n} do not conform"
    n_expected = len(expected(doc))
    if n_expected:
        text += f" ({n_expected} expected non-conformities allowed)"
    base = (doc.get("gate") or {}).get("baseline")
    if base and base["regressed"]:
        text += (
            f"; regression vs baseline: {len(base['newly_failing'])} newly failing, "
            f"{len(base['growth'])} error growth"
        )
    return text
