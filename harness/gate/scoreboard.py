"""The cross-framework scoreboard: ``python -m harness scoreboard DIR``.

Every adapter of every JSON report in DIR (``reports/scoreboard/<framework>-<version>.json``,
written by ``nox -s scoreboard``) is one *run*. A run gives one row per semantics it was
judged under: always ``torch`` (PyTorch's ``F.cross_entropy``: each result's
``torch_status``, or its ``status`` in reports that predate dialects), and also the
adapter's own dialect (``status``) when it declares one other than torch. A cell holds
``conforming/run`` of the results in that feature group (``harness.reports.matrix``);
results declared ``unsupported`` are counted in their own column instead, so a cell
reads ``n/a`` when the framework lacks the whole group.

Rows are ordered by framework (the adapter's name), then by version (``1.10`` after
``1.9``), so two versions of a framework sit one above the other.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.execution.results import STATUS_NAMES, is_conforming
from harness.gate.baseline import ReportError, read_report
from harness.gate.expectations import version_key
from harness.reports import json as report_json
from harness.reports.matrix import GROUPS, cell_text, cells

#: the dialect every result is also judged under
TORCH = "torch"
COLUMNS = (*GROUPS, "all")
HEADERS = ["framework", "version", "semantics", "unsupported", *COLUMNS]


@dataclass(frozen=True)
class Run:
    """One adapter's results in one report."""

    path: Path
    adapter: str
    wraps: str
    version: str
    semantics: str
    results: tuple[dict, ...]

    def statuses(self, semantics: str) -> list[dict]:
        """The results, each with ``status`` the verdict under ``semantics`` (torch or the
        adapter's own dialect)."""
        if semantics == self.semantics:
            return list(self.results)
        return [{**r, "status": r.get("torch_status", r["status"])} for r in self.results]

    def dialects(self) -> list[str]:
        """torch first, then the adapter's own dialect when it differs."""
        return [TORCH] if self.semantics == TORCH else [TORCH, self.semantics]


@dataclass(frozen=True)
class Row:
    run: Run
    semantics: str
    unsupported: int
    #: group -> (conforming, run)
    counts: dict[str, tuple[int, int]]

    def cells(self) -> list[str]:
        return [
            self.run.adapter,
            self.run.version,
            self.semantics + (" (own)" if self.semantics == self.run.semantics else ""),
            str(self.unsupported),
            *(cell_text(*self.counts[g]) for g in COLUMNS),
        ]


def _fail(path: Path, message: str) -> ReportError:
    return ReportError(f"scoreboard: report {path}: {message}")


def _field(path: Path, where: str, record: object, name: str) -> str:
    if not isinstance(record, dict) or not isinstance(record.get(name), str):
        got = record.get(name) if isinstance(record, dict) else record
        raise _fail(path, f"{where}: field {name!r}={got!r} must be a string")
    return record[name]


def _check_status(path: Path, where: str, result: dict, name: str) -> None:
    value = result.get(name)
    if value not in STATUS_NAMES:
        raise _fail(
            path, f"{where}: field {name!r}={value!r} must be one of {', '.join(STATUS_NAMES)}"
        )


def runs_of(path: Path) -> list[Run]:
    """The runs of one report; ReportError (exit 2) names the file, result and field at fault."""
    doc = read_report(path)
    adapters = doc.get("adapters")
    if not isinstance(adapters, list) or not adapters:
        raise _fail(path, f"field 'adapters'={adapters!r} must be a non-empty list")
    if not isinstance(doc["results"], list):
        raise _fail(path, f"field 'results' must be a list, not {type(doc['results']).__name__}")
    by_adapter: dict[str, list[dict]] = {}
    for i, r in enumerate(doc["results"]):
        where = f"results[{i}]"
        for name in ("case_id", "adapter", "dtype"):
            _field(path, where, r, name)
        _check_status(path, where, r, "status")
        if "torch_status" in r:
            _check_status(path, where, r, "torch_status")
        by_adapter.setdefault(r["adapter"], []).append(r)
    runs = []
    for i, a in enumerate(adapters):
        name = _field(path, f"adapters[{i}]", a, "name")
        wraps = a.get("wraps") or ""
        version = a.get("version") or wraps.partition(" ")[2]
        semantics = a.get("semantics") or TORCH
        runs.append(Run(path, name, wraps, version, semantics, tuple(by_adapter.pop(name, ()))))
    if by_adapter:
        stray = sorted(by_adapter)[0]
        raise _fail(path, f"results of adapter {stray!r}, which is not among its 'adapters'")
    return runs


def load_runs(paths: Iterable[Path]) -> list[Run]:
    """The runs of the reports named (folders: their ``*.json`` and ``*.json.gz``), ordered by
    framework then version; UsageError (exit 2) when there is no report or one cannot be read."""
    files = report_json.report_files(
        paths, "scoreboard", "; nox -s scoreboard writes them into reports/scoreboard/"
    )
    runs = [run for f in files for run in runs_of(f)]
    runs.sort(key=lambda r: (r.adapter, version_key(r.version), str(r.path)))
    return runs


def rows(runs: Iterable[Run]) -> list[Row]:
    """One row per run and semantics (torch first)."""
    out = []
    for run in runs:
        for semantics in run.dialects():
            results = run.statuses(semantics)
            unsupported = sum(r["status"] == "unsupported" for r in results)
            table = cells(results).get(run.adapter) or {g: (0, 0) for g in COLUMNS}
            out.append(Row(run, semantics, unsupported, table))
    return out


def render_terminal(runs: list[Run]) -> str:
    from tabulate import tabulate

    body = [row.cells() for row in rows(runs)]
    return "\n".join(
        [
            LEGEND,
            tabulate(body, headers=HEADERS, tablefmt="simple", disable_numparse=True),
        ]
    )


def render_markdown(runs: list[Run]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    body = [line(HEADERS), line(["---"] * len(HEADERS))]
    body += [line(row.cells()) for row in rows(runs)]
    return LEGEND + "\n\n" + "\n".join(body)


LEGEND = (
    "Conforming/run results per feature group, under PyTorch's semantics (torch) and under "
    "the adapter's own dialect (own); 'unsupported': results the adapter declares it cannot "
    "run (left out of the cells; n/a: the whole group)."
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.all{background:#e8f6ec}td.some{background:#fff4d6}
td.none{background:#fde8ea}
"""


def _shade(counts: tuple[int, int]) -> str:
    ok, run = counts
    if run == 0:
        return ""
    return "all" if ok == run else ("none" if ok == 0 else "some")


def render_html(runs: list[Run]) -> str:
    """A self-contained page; a cell is green when every result conforms, red when none."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = []
    for row in rows(runs):
        shades = ["", "", "", ""] + [_shade(row.counts[g]) for g in COLUMNS]
        tds = "".join(
            f'<td class="{s}">{html.escape(c)}</td>' if s else f"<td>{html.escape(c)}</td>"
            for c, s in zip(row.cells(), shades, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    sources = "".join(
        f"<li>{html.escape(r.adapter)}: {html.escape(r.wraps)} ({html.escape(r.path.name)})</li>"
        for r in runs
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>lossconf scoreboard</title>'
        f"<style>{STYLE}</style></head><body><h1>lossconf scoreboard</h1>"
        f"<p>{html.escape(LEGEND)}</p><table><tr>{head}</tr>{''.join(body)}</table>"
        f"<h2>Runs</h2><ul>{sources}</ul></body></html>\n"
    )


RENDERERS = {"terminal": render_terminal, "markdown": render_markdown, "html": render_html}
#: file suffix -> renderer name, for --output
SUFFIXES = {".txt": "terminal", ".md": "markdown", ".html": "html", ".htm": "html"}


def nonconforming(runs: list[Run]) -> list[list[str]]:
    """(framework, version, semantics, case, dtype, status) of every non-conforming result."""
    out = []
    for row in rows(runs):
        for r in row.run.statuses(row.semantics):
            if not is_conforming(r["status"]):
                out.append(
                    [row.run.adapter, row.run.version, row.semantics, r["case_id"],
                     r["dtype"], r["status"]]
                )  # fmt: skip
    return out
