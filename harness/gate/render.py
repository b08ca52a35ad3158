"""The gate's lines in the terminal report: expected failures, unexpected passes, the
baseline comparison, repro snippets, and warnings about unused expectations."""

from __future__ import annotations

import sys

from tabulate import tabulate

from harness.execution.results import Result
from harness.gate import baseline
from harness.gate.verdict import Outcome


def gate(outcome: Outcome, results: list[Result], doc: dict, *, verbose: bool = False) -> str:
    """Terminal lines about the gate: expected failures, unexpected passes, baseline, repros."""
    parts: list[str] = []
    rows: list[list[object]]
    if outcome.expected:
        rows = [
            [*results[i].key, results[i].status.value, e.reason[:70]]
            for i, e in sorted(outcome.expected.items())
        ]
        parts += [
            f"Expected non-conformities ({len(rows)}, allowed by --expectations):",
            tabulate(rows, headers=["case", "adapter", "dtype", "status", "reason"])
            if verbose
            else f"  {len(rows)} results; -v lists them",
            "",
        ]
    if outcome.disallowed:
        rows = [
            [*results[i].key, results[i].status.value, ",".join(sorted(e.outcomes)), e.line]
            for i, e in sorted(outcome.disallowed.items())
        ]
        parts += [
            "Matched an expectation but with another outcome:",
            tabulate(rows, headers=["case", "adapter", "dtype", "status", "allowed", "entry line"]),
            "",
        ]
    if outcome.unexpected_passes:
        rows = [
            [*results[i].key, e.line, e.reason[:60]]
            for i, e in sorted(outcome.unexpected_passes.items())
        ]
        parts += [
            f"Unexpected passes ({len(rows)}): remove or narrow these expectations:",
            tabulate(rows, headers=["case", "adapter", "dtype", "entry line", "reason"]),
            "",
        ]
    if outcome.baseline is not None:
        parts += [baseline.render(outcome.baseline, str(doc["gate"]["baseline_file"])), ""]
    if verbose and outcome.blocking:
        parts += [repros(outcome, results, doc), ""]
    verdict = "gate: PASS" if outcome.exit_code == 0 else "gate: FAIL"
    reasons = []
    if outcome.blocking:
        reasons.append(f"{len(outcome.blocking)} unexpected non-conforming")
    if outcome.baseline is not None and outcome.baseline.regressed:
        reasons.append("regression vs baseline")
    parts.append(verdict + (f" ({'; '.join(reasons)})" if reasons else ""))
    return "\n".join(parts)


def repros(outcome: Outcome, results: list[Result], doc: dict) -> str:
    """The repro snippet of every blocking result (shown with -v)."""
    parts = []
    for i in outcome.blocking:
        parts += [f"Repro for {' '.join(results[i].key)}:", doc["results"][i]["repro"], ""]
    return "\n".join(parts).rstrip()


def warn_unused(outcome: Outcome, path: object) -> None:
    """A warning on stderr for each expectation entry that matched no result."""
    for e in outcome.unused:
        where = f"{path}:{e.line}" if e.line else str(path)
        print(
            f"lossconf: warning: expectation {where} (id {e.id!r}) matched no result",
            file=sys.stderr,
        )
