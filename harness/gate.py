"""The CI gate: results + expectations + baseline -> the report document and the exit code.

``document`` builds the JSON report (the source of truth every other report
renders from): the core envelope of ``harness.report_json`` plus, per
adapter, the wrapped library and its version; per result, its matrix groups,
the expectation that covers it and a repro snippet when it does not conform;
and a ``gate`` section (what blocks, what was expected, unexpected passes,
unused expectation entries, the baseline comparison).

Exit code 1 when a non-conforming result is not allowed by an expectation, or
when the baseline comparison finds a new failure or error growth; else 0.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from harness.results import Result

EXIT_OK, EXIT_NONCONFORMING = 0, 1


def adapter_info(adapter: object, spec: str) -> dict:
    """name, spec, wraps ('torch 2.13.0'), library ('torch'), version ('2.13.0'), device."""
    wraps = adapter.version()
    library, _, version = wraps.partition(" ")
    return {
        "name": adapter.name,
        "spec": spec,
        "wraps": wraps,
        "library": library,
        "version": version.strip(),
        "device": adapter.device(),
    }


@dataclass
class Outcome:
    """What the gate decided, result by result (indices into the results list)."""

    expected: dict[int, object] = field(default_factory=dict)  # index -> Entry
    disallowed: dict[int, object] = field(default_factory=dict)  # matched, status not allowed
    unexpected_passes: dict[int, object] = field(default_factory=dict)
    unused: list = field(default_factory=list)  # Entries that matched no result
    blocking: list[int] = field(default_factory=list)
    baseline: object | None = None  # harness.baseline.Comparison

    @property
    def exit_code(self) -> int:
        regressed = self.baseline is not None and self.baseline.regressed
        return EXIT_NONCONFORMING if self.blocking or regressed else EXIT_OK


def apply_expectations(results: list[Result], infos: dict[str, dict], expectations) -> Outcome:
    """Sort each result into expected / disallowed / unexpected pass / blocking."""
    out = Outcome()
    used: set[int] = set()
    for i, r in enumerate(results):
        entry = None if expectations is None else expectations.match(r, infos.get(r.adapter, {}))
        if entry is not None:
            used.add(id(entry))
        if r.conforming:
            if entry is not None and not entry.allows_conforming and r.status.value == "pass":
                out.unexpected_passes[i] = entry
            continue
        if entry is not None and r.status.value in entry.outcomes:
            out.expected[i] = entry
        else:
            if entry is not None:
                out.disallowed[i] = entry
            out.blocking.append(i)
    if expectations is not None:
        out.unused = [e for e in expectations.entries if id(e) not in used]
    return out


def _specs(args: argparse.Namespace, adapters: list) -> list[str]:
    specs = list(getattr(args, "adapters", None) or [])
    return specs if len(specs) == len(adapters) else [a.name for a in adapters]


def document(
    plan, results: list[Result], args: argparse.Namespace, outcome: Outcome | None = None
) -> dict:
    """The JSON report for a run (see the module docstring)."""
    from harness import matrix, report_json, repro

    specs = _specs(args, plan.adapters)
    infos = [adapter_info(a, s) for a, s in zip(plan.adapters, specs, strict=True)]
    doc = report_json.build(results, plan.cases, infos)
    cases = {c.id: c for c in plan.cases}
    spec_of = {info["name"]: info["spec"] for info in infos}
    outcome = outcome or Outcome()
    for i, (r, d) in enumerate(zip(results, doc["results"], strict=True)):
        d["groups"] = matrix.groups_of(r.case_id, r.features, r.tags, r.dtype)
        entry = (
            outcome.expected.get(i) or outcome.disallowed.get(i) or outcome.unexpected_passes.get(i)
        )
        d["expected"] = i in outcome.expected
        d["expectation"] = (
            None
            if entry is None
            else {
                "id": entry.id,
                "line": entry.line,
                "outcomes": sorted(entry.outcomes),
                "reason": entry.reason,
            }
        )
        d["repro"] = (
            None if r.conforming else repro.snippet(cases[r.case_id], spec_of[r.adapter], r.dtype)
        )
    doc["gate"] = {
        "exit_code": outcome.exit_code,
        "blocking": len(outcome.blocking),
        "expected": len(outcome.expected),
        "unexpected_passes": [list(_key(results[i])) for i in sorted(outcome.unexpected_passes)],
        "unused_expectations": [{"id": e.id, "line": e.line} for e in outcome.unused],
        "expectations_file": getattr(args, "expectations", None),
        "baseline_file": getattr(args, "baseline", None),
        "baseline": None if outcome.baseline is None else outcome.baseline.to_dict(),
    }
    return doc


def _key(r: Result) -> tuple[str, str, str]:
    return (r.case_id, r.adapter, r.dtype)


def evaluate(plan, results: list[Result], args: argparse.Namespace) -> tuple[Outcome, dict]:
    """Apply --expectations and --baseline; return the outcome and the JSON document."""
    expectations = None
    if getattr(args, "expectations", None):
        from harness import expectations as exp

        expectations = exp.load(args.expectations)
    specs = _specs(args, plan.adapters)
    infos = {a.name: adapter_info(a, s) for a, s in zip(plan.adapters, specs, strict=True)}
    outcome = apply_expectations(results, infos, expectations)
    doc = document(plan, results, args, outcome)
    if getattr(args, "baseline", None):
        from harness import baseline

        old = baseline.read_report(args.baseline)
        factor = getattr(args, "growth_factor", None) or baseline.DEFAULT_GROWTH
        outcome.baseline = baseline.compare(old, doc, factor=factor)
        doc["gate"]["baseline"] = outcome.baseline.to_dict()
        doc["gate"]["exit_code"] = outcome.exit_code
    return outcome, doc


def render(outcome: Outcome, results: list[Result], doc: dict, *, verbose: bool = False) -> str:
    """Terminal lines about the gate: expected failures, unexpected passes, baseline, repros."""
    from tabulate import tabulate

    parts: list[str] = []
    if outcome.expected:
        rows = [
            [*_key(results[i]), results[i].status.value, e.reason[:70]]
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
            [*_key(results[i]), results[i].status.value, ",".join(sorted(e.outcomes)), e.line]
            for i, e in sorted(outcome.disallowed.items())
        ]
        parts += [
            "Matched an expectation but with another outcome:",
            tabulate(rows, headers=["case", "adapter", "dtype", "status", "allowed", "entry line"]),
            "",
        ]
    if outcome.unexpected_passes:
        rows = [
            [*_key(results[i]), e.line, e.reason[:60]]
            for i, e in sorted(outcome.unexpected_passes.items())
        ]
        parts += [
            f"Unexpected passes ({len(rows)}): remove or narrow these expectations:",
            tabulate(rows, headers=["case", "adapter", "dtype", "entry line", "reason"]),
            "",
        ]
    if outcome.baseline is not None:
        from harness import baseline

        parts += [baseline.render(outcome.baseline, str(doc["gate"]["baseline_file"])), ""]
    if verbose and outcome.blocking:
        parts += [render_repros(outcome, results, doc), ""]
    verdict = "gate: PASS" if outcome.exit_code == 0 else "gate: FAIL"
    reasons = []
    if outcome.blocking:
        reasons.append(f"{len(outcome.blocking)} unexpected non-conforming")
    if outcome.baseline is not None and outcome.baseline.regressed:
        reasons.append("regression vs baseline")
    parts.append(verdict + (f" ({'; '.join(reasons)})" if reasons else ""))
    return "\n".join(parts)


def render_repros(outcome: Outcome, results: list[Result], doc: dict) -> str:
    """The repro snippet of every blocking result (shown with -v)."""
    parts = []
    for i in outcome.blocking:
        parts += [f"Repro for {' '.join(_key(results[i]))}:", doc["results"][i]["repro"], ""]
    return "\n".join(parts).rstrip()


def warn_unused(outcome: Outcome, path: object) -> None:
    for e in outcome.unused:
        where = f"{path}:{e.line}" if e.line else str(path)
        print(
            f"lossconf: warning: expectation {where} (id {e.id!r}) matched no result",
            file=sys.stderr,
        )
