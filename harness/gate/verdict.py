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
from harness.execution.results import Result, Status
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
    # a shard's report names the whole selection's cases: the suite every shard shares
    suite = plan.cases if plan.shard is None else list(plan.shard.selection)
    doc = report_json.build(results, suite, infos)
    if plan.shard is not None:
        doc["shard"] = plan.shard.section(
            [a.name for a in plan.adapters],
            results,
            keywords=config.keywords,
            dtypes=config.dtypes,
        )
    cases = {c.id: c for c in plan.cases}
    spec_of = {info["name"]: info["spec"] for info in infos}
    outcome = outcome or Outcome()
    for i, (r, d) in enumerate(zip(results, doc["results"], strict=True)):
        d["groups"] = matrix.groups_of(r.case_id, r.features, r.tags, r.dtype)
        _mark(d, i, outcome)
        d["repro"] = (
            None
            if r.conforming
            else repro.snippet(cases[r.case_id], spec_of[r.adapter], r.dtype, r.semantics)
        )
    doc["gate"] = _gate_section(results, outcome, config)
    return doc


def _mark(d: dict, i: int, outcome: Outcome) -> None:
    """Result ``i``'s report fields ``expected`` and ``expectation``."""
    entry = outcome.expected.get(i) or outcome.disallowed.get(i) or outcome.unexpected_passes.get(i)
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


def _gate_section(results: list[Result], outcome: Outcome, config: RunConfig) -> dict:
    return {
        "exit_code": outcome.exit_code,
        "blocking": len(outcome.blocking),
        "expected": len(outcome.expected),
        "unexpected_passes": [list(results[i].key) for i in sorted(outcome.unexpected_passes)],
        "unused_expectations": [{"id": e.id, "line": e.line} for e in outcome.unused],
        "expectations_file": None if config.expectations is None else str(config.expectations),
        "baseline_file": None if config.baseline is None else str(config.baseline),
        "baseline": None if outcome.baseline is None else outcome.baseline.to_dict(),
    }


@dataclass(frozen=True)
class GateInputs:
    """The files a verdict reads, read once: ``--expectations`` and ``--baseline`` (a report
    document), each None when not given. Read before a run starts (a bad file is a usage
    error before anything runs), the same contents judge its results however long it runs."""

    expectations: Expectations | None = None
    baseline: dict | None = None


def read_inputs(config: RunConfig) -> GateInputs:
    """``config``'s expectations and baseline files, read and checked (``UsageError``)."""
    return GateInputs(
        None if config.expectations is None else expectations_file.load(config.expectations),
        None if config.baseline is None else baseline.read_report(config.baseline),
    )


def _compare_with_baseline(
    outcome: Outcome, doc: dict, config: RunConfig, inputs: GateInputs
) -> None:
    """With a baseline: the comparison, in ``outcome`` and the gate section."""
    old = inputs.baseline
    if old is None:
        return
    factor = config.growth_factor or baseline.DEFAULT_GROWTH
    outcome.baseline = baseline.compare(old, doc, factor=factor)
    doc["gate"]["baseline"] = outcome.baseline.to_dict()
    doc["gate"]["exit_code"] = outcome.exit_code


def evaluate(
    plan: Plan, results: list[Result], config: RunConfig, inputs: GateInputs | None = None
) -> tuple[Outcome, dict]:
    """Apply the expectations and the baseline (``inputs``, else read from ``config``'s
    files now); return the outcome and the JSON document."""
    if inputs is None:
        inputs = read_inputs(config)
    specs = _specs(plan)
    infos = {a.name: describe(a, s) for a, s in zip(plan.adapters, specs, strict=True)}
    selected = {c.id: c.dtypes for c in plan.cases}
    outcome = apply_expectations(results, infos, inputs.expectations, selected)
    doc = document(plan, results, config, outcome)
    _compare_with_baseline(outcome, doc, config, inputs)
    return outcome, doc


def result_views(doc: dict) -> list[Result]:
    """A report's results as records with what the gate reads: case, adapter, dtype, status."""
    return [
        Result(d["case_id"], d["adapter"], d["dtype"], Status(d["status"])) for d in doc["results"]
    ]


def judge(
    doc: dict, config: RunConfig, inputs: GateInputs | None = None
) -> tuple[Outcome, list[Result]]:
    """Judge a report document's results again, as ``evaluate`` judges a run's: the
    expectations and baseline of ``config`` replace the document's own (``python -m harness
    merge``). Sets each result's ``expected`` and ``expectation`` and the gate section; returns
    the outcome and the results' views (``result_views``)."""
    views = result_views(doc)
    infos = {a["name"]: a for a in doc["adapters"]}
    # the selection, from the results: each selected case gives one for each of its dtypes
    selected: dict[str, tuple[str, ...]] = {}
    for r in views:
        if r.dtype not in selected.get(r.case_id, ()):
            selected[r.case_id] = (*selected.get(r.case_id, ()), r.dtype)
    if inputs is None:
        inputs = read_inputs(config)
    outcome = apply_expectations(views, infos, inputs.expectations, selected)
    for i, d in enumerate(doc["results"]):
        _mark(d, i, outcome)
    doc["gate"] = _gate_section(views, outcome, config)
    _compare_with_baseline(outcome, doc, config, inputs)
    return outcome, views
