"""The Markdown report: a short summary and the failures, for a GitHub step summary.

The failures come grouped by cause first (``harness.reports.causes``, when that is shorter
than the list), then one by one.

Kept under ``LIMIT`` bytes (GitHub refuses step summaries over 1 MiB): when
the failures do not fit, the list is cut and a line points to the JSON report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.reports import causes, matrix
from harness.atomic import write_atomic
from harness.reports.document import (
    DIFFERENCE_HEADERS,
    DIFFERENCES_SHOWN,
    blocking,
    difference_row,
    differs_under_torch,
    expected,
    headline,
    summary_rows,
    unexpected_passes,
    verdict,
)

LIMIT = 1024 * 1024 - 16 * 1024  # 1 MiB, less room for the closing lines
MESSAGE_CHARS = 300


def cell(value: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    out.append("|" + "---|" * len(headers))
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def _result_row(r: dict) -> list[object]:
    msg = r.get("message") or ""
    if len(msg) > MESSAGE_CHARS:
        msg = msg[: MESSAGE_CHARS - 3] + "..."
    return [f"`{r['case_id']}`", r["adapter"], r["dtype"], r["status"], msg]


def _cause_row(c: causes.Cause) -> list[object]:
    example = f"`{c.example['case_id']}` [{c.example['dtype']}]"
    message = causes.shortened(c.example.get("message") or "", MESSAGE_CHARS)
    return [
        c.count,
        c.status,
        ", ".join(c.adapters),
        ", ".join(c.dtypes),
        c.cases,
        example,
        message,
    ]


def render(doc: dict, *, limit: int = LIMIT, json_hint: str = "the JSON report") -> str:
    """The Markdown text, at most ``limit`` bytes (UTF-8)."""
    lines = [f"## lossconf: {verdict(doc)}", "", headline(doc), ""]
    headers, rows = summary_rows(doc)
    lines += [*table(headers, rows), ""]
    m_headers, m_rows = matrix.rows(doc["results"])
    lines += ["### Conformance matrix (conforming/run)", "", *table(m_headers, m_rows), ""]
    r_headers, r_rows = matrix.ratio_rows(doc["results"])
    lines += [
        "### Worst test ratio (error / allowed; at most 1 conforms)", "",
        *table(r_headers, r_rows), "",
    ]  # fmt: skip
    differences = differs_under_torch(doc)
    if differences:
        shown = differences[:DIFFERENCES_SHOWN]
        lines += [
            f"### Differences from PyTorch's semantics ({len(differences)})",
            "",
            "Results of adapters with semantics of their own, judged under PyTorch's "
            "(the gate reads the verdict under the adapter's own).",
            "",
            *table(DIFFERENCE_HEADERS, [difference_row(r, MESSAGE_CHARS) for r in shown]),
            "",
        ]
        if len(differences) > len(shown):
            lines += [f"... {len(differences) - len(shown)} more in {json_hint}.", ""]
    base = (doc.get("gate") or {}).get("baseline")
    if base:
        lines += [
            f"### Baseline `{doc['gate'].get('baseline_file')}`",
            "",
            f"{len(base['newly_failing'])} newly failing, {len(base['growth'])} error growth "
            f"beyond {base['factor']:g}x (test ratio), {len(base['newly_passing'])} newly passing, "
            + (
                f"{len(base['expectation_changed'])} with the same status and another expectation, "
                if base.get("expectation_changed")
                else ""
            )
            + f"{len(base['changed'])} changed (not compared)",
            "",
        ]
        for title, items in (
            ("Newly failing", base["newly_failing"]),
            ("Error growth", base["growth"]),
        ):
            if items:
                lines += [f"{title}:", ""] + [f"- `{' '.join(map(str, k))}`" for k in items[:50]]
                lines += [f"- ... {len(items) - 50} more"] if len(items) > 50 else []
                lines.append("")
    ups = unexpected_passes(doc)
    if ups:
        lines += [f"### Unexpected passes ({len(ups)})", ""]
        lines += [f"- `{r['case_id']}` {r['adapter']} {r['dtype']}" for r in ups] + [""]
    bad = blocking(doc)
    tail: list[str] = []
    if expected(doc):
        tail = ["", f"{len(expected(doc))} expected non-conformities are listed in {json_hint}."]
    found = causes.group(bad)
    if len(found) < len(bad):
        lines += [f"### Non-conforming results ({len(bad)}) by cause ({len(found)})", ""]
        lines += table(causes.HEADERS, [_cause_row(c) for c in found[: causes.SHOWN]])
        more = causes.rest(found)
        lines += ["", more, ""] if more else [""]
    if bad:
        lines += [f"### Non-conforming results ({len(bad)})", ""]
        lines += table(["case", "adapter", "dtype", "status", "what differed"], [])
        used = len("\n".join(lines).encode()) + len("\n".join(tail).encode()) + 400
        for i, r in enumerate(bad):
            row = table(["case", "adapter", "dtype", "status", "what differed"], [_result_row(r)])[
                -1
            ]
            size = len(row.encode()) + 1
            if used + size > limit:
                lines += ["", f"**{len(bad) - i} more not shown (size limit): see {json_hint}.**"]
                break
            lines.append(row)
            used += size
    return "\n".join(lines + tail) + "\n"


def write(path: str | Path, doc: dict) -> None:
    write_atomic(path, render(doc, json_hint="the JSON report (--report X.json)"))
