"""The CI gate: results + expectations + baseline -> the report document and the exit code.

``document`` builds the JSON report (the source of truth every other report
renders from): the core envelope of ``harness.reports.json`` plus, per
adapter, the wrapped library and its version; per result, its matrix groups,
the expectation that covers it and a repro snippet when it does not conform;
and a ``gate`` section (what blocks, what was expected, unexpected passes,
unused expectation entries, the baseline comparison).

Exit code 1 when a non-conforming result is not allowed by an expectation, or
when the baseline comparison finds a new failure or error growth; else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.execution.config import RunConfig
from harness.execution.registry import describe
from harness.execution.results import Result
from harness.execution.session import Plan
from harness.exit_codes import ExitCode
from harness.gate import baseline
from harness.gate import expectations as expectations_file
from harness.gate.expectations import Entry, Expectations
from harness.reports import json as report_json
from harness.reports import matrix, repro


@dataclass
class Outcome:
    """What the gate decided, result by result (indices into the results list)."""

    expected: dict[int, Entry] = field(default_factory=dict)
    disallowed: dict[int, Entry] = field(default_factory=dict)  # matched, status not allowed
    unexpected_passes: dict[int, Entry] = field(default_factory=dict)
    unused: list[Entry] = field(default_factory=list)  # entries that matched no result
    blocking: list[int] = field(default_factory=list)
    baseline: baseline.Comparison | None = None

    @property
    def exit_code(self) -> int:
        regressed = self.baseline is not None and self.baseline.regressed
        return ExitCode.NONCONFORMING if self.blocking or regressed else ExitCode.OK


def apply_expectations(
    results: list[Result],
    infos: dict[str, dict],
    expectations: Expectations | None,
    cases: dict[str, tuple[str, ...]] | None = None,
) -> Outcome:
    """Sort each result into expected / disallowed / unexpected pass / blocking.

    ``cases`` (case id -> dtypes): what the run selected; an entry that matched no result is
    listed as unused only when it names one of them (None: any case) and an adapter of
    ``infos`` (``Entry.selected``)."""
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
        out.unused = [
            e for e in expectations.entries if id(e) not in used and e.selected(cases, infos)
        ]
    return out


def _specs(plan: Plan) -> list[str]:
    specs = list(plan.specs)
    return specs if len(specs) == len(plan.adapters) else [a.name for a in plan.adapters]


def document(
    plan: Plan, results: list[Result], config: RunConfig, outcome: Outcome | None = None
) -> dict:
    """The JSON report for a run (see the module docstring)."""
    specs = _specs(plan)
    infos = [describe(a, s) for a, s in zip(plan.adapters, specs, strict=True)]
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
        "unexpected_passes": [list(results[i].key) for i in sorted(outcome.unexpected_passes)],
        "unused_expectations": [{"id": e.id, "line": e.line} for e in outcome.unused],
        "expectations_file": None if config.expectations is None else str(config.expectations),
        "baseline_file": None if config.baseline is None else str(config.baseline),
        "baseline": None if outcome.baseline is None else outcome.baseline.to_dict(),
    }
    return doc


def evaluate(plan: Plan, results: list[Result], config: RunConfig) -> tuple[Outcome, dict]:
    """Apply the expectations and the baseline; return the outcome and the JSON document."""
    expectations = None
    if config.expectations is not None:
        expectations = expectations_file.load(config.expectations)
    specs = _specs(plan)
    infos = {a.name: describe(a, s) for a, s in zip(plan.adapters, specs, strict=True)}
    selected = {c.id: c.dtypes for c in plan.cases}
    outcome = apply_expectations(results, infos, expectations, selected)
    doc = document(plan, results, config, outcome)
    if config.baseline is not None:
        old = baseline.read_report(config.baseline)
        factor = config.growth_factor or baseline.DEFAULT_GROWTH
        outcome.baseline = baseline.compare(old, doc, factor=factor)
        doc["gate"]["baseline"] = outcome.baseline.to_dict()
        doc["gate"]["exit_code"] = outcome.exit_code
    return outcome, doc
