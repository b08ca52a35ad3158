"""Searching an adapter for failing calls (``python -m harness fuzz``): shrink them, write YAML cases.

Each property is searched on its own with hypothesis (strategies in
``harness.fuzz.strategies``): ``oracle`` compares the adapter with the oracle
exactly as a normal run does (``harness.execution.runner.run_one`` on an in-memory case
built by ``harness.cases.build.build_case``, same tolerances and statuses), and
the oracle-free relations of ``harness.fuzz.metamorphic`` are checked alongside.
When one fails, hypothesis shrinks the call to a minimal one; that call is
written as a case file with the oracle's expected values and a ``why`` naming
the property, which loads like any case and can be committed as a regression case.

Only real findings are written. A violation is first checked against the
reference implementations (``REFERENCES``: the numpy adapter in every dtype,
torch in float64 and float32 when installed): one that a reference shares is
not a finding but a sign that the tolerance (error model, property allowance)
or the semantics are wrong there; it is reported as such, and the search goes
on. Before a case is written, the finding's call is checked against the
property and each case through a normal run with every reference; a case that
a reference fails is not written. Every property holds for the references by
themselves: ``tools/fuzz_references.py`` checks that (2,000 examples per
property, adapter and dtype).

The table reports, per property, the largest test ratio seen where the property
held (1 is the limit): how close the adapter came to its error bound. (Steering
the search towards large ratios with hypothesis's ``target`` was tried: its
hill-climbing phase ran for tens of minutes on plateaus of equal ratios.)

``--examples N`` runs N examples per property and, with ``--seed``, is
reproducible; ``--budget SECONDS`` keeps going in seeded rounds until the time
is spent (shrinking may take longer). ``--database DIR`` keeps hypothesis's
example database there (default: none), so CI can replay earlier failures first.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.adapters import Adapter, CallInputs
from harness.cases.build import build_case
from harness.cases.loader import load_file
from harness.cases.model import Case
from harness.cases.writer import compute, flow, format_array, render_expected
from harness.errors import UsageError
from harness.execution.runner import run_one
from harness.fuzz.metamorphic import PROPERTIES, NotApplicable, measure

if TYPE_CHECKING:
    from harness.fuzz.strategies import Space
from harness.errors import AdapterLoadError
from harness.execution.registry import load
from harness.execution.results import CONFORMING

ORACLE = "oracle"
#: the path in-memory cases claim; written cases take the --out path
MEMORY_PATH = Path("fuzz.yaml")
ROUND_EXAMPLES = 50  # examples per property per round under --budget


def require_hypothesis():
    """Import hypothesis, or explain how to get it."""
    try:
        import hypothesis
    except ImportError:
        raise UsageError(
            "the fuzz command needs hypothesis: pip install 'lossconf[fuzz]' "
            "(or pip install hypothesis)"
        ) from None
    return hypothesis


def property_names() -> list[str]:
    return [ORACLE, *PROPERTIES]


@dataclass
class Finding:
    """A minimal failing call: the drawn case fields, the property and what went wrong."""

    prop: str
    dtype: str
    message: str
    fields: dict
    variants: dict[str, CallInputs] = field(default_factory=dict)


@dataclass
class Disagreement:
    """A call that a reference implementation fails too: the harness's tolerance (error
    model, property allowance) or semantics are wrong there, not the adapter."""

    prop: str
    dtype: str
    reference: str  # e.g. 'numpy', 'torch float32'
    message: str  # the reference's own failure
    fields: dict

    def text(self) -> str:
        return (
            f"the tolerance or the semantics disagree with reference {self.reference} "
            f"[{self.dtype}]: {self.message}"
        )


class Found(Exception):
    """Raised inside the hypothesis test so that it shrinks; carries the finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"{finding.prop}: {finding.message}")
        self.finding = finding


@dataclass
class PropertyReport:
    prop: str
    examples: int = 0
    not_applicable: int = 0
    finding: Finding | None = None
    error: str | None = None  # hypothesis could not settle (flaky adapter, ...)
    #: the largest test ratio of a call where the property held (1 is the limit)
    max_ratio: float = 0.0
    #: violations that a reference shares: not findings, reported (the first kept)
    disagreement: Disagreement | None = None
    disagreements: int = 0


def memory_case(fields: dict, name: str = "fuzzed", why: str = "generated by the fuzzer") -> Case:
    """The Case a file holding ``fields`` loads as (expected values left to the oracle)."""
    raw = {"name": name, "why": why, **fields}
    return build_case(MEMORY_PATH, raw, {}, require_expected=False)


@dataclass
class Verdict:
    """One property on one call: 'ok', 'not_applicable' or 'violated'."""

    outcome: str
    message: str | None = None
    variants: dict = field(default_factory=dict)
    ratio: float = 0.0  # the largest test ratio (inf for a non-finite mismatch or a raise)


def _result_ratio(result) -> float:
    errors = [e for e in (result.loss_errors, result.grad_errors) if e is not None]
    return max((e.max_ratio for e in errors), default=0.0)


def check_once(prop: str, adapter: Adapter, case: Case, dtype: str) -> Verdict:
    """The verdict of one property on one call."""
    if prop == ORACLE:
        result = run_one(case, adapter, dtype)
        if result.status in CONFORMING:
            return Verdict("ok", ratio=_result_ratio(result))
        return Verdict("violated", f"{result.status}: {result.message}", {}, math.inf)
    try:
        checked = measure(prop, adapter, case, dtype)
    except NotApplicable:
        return Verdict("not_applicable")
    v = checked.violation
    if v is None:
        return Verdict("ok", ratio=checked.ratio)
    return Verdict("violated", v.message, v.variants, checked.ratio)


# ---------------------------------------------------------------- reference implementations

#: (adapter spec, the dtypes it vouches for or None for all): a call that one of these
#: fails is not a finding about the adapter under test. torch's half precision is left
#: out: it accumulates in half precision, a documented divergence (docs/corpus.md).
REFERENCES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("numpy", None),
    ("torch", ("float64", "float32")),
)


class References:
    """The reference adapters, loaded on first use (a reference that cannot load is skipped)."""

    def __init__(self, specs=None) -> None:
        self.specs = tuple(REFERENCES if specs is None else specs)
        self._loaded: dict[str, Adapter | None] = {}
        self.unavailable: dict[str, str] = {}  # spec -> why it could not load

    def _load(self, spec: str) -> Adapter | None:
        if spec not in self._loaded:
            try:
                self._loaded[spec] = load(spec)
            except AdapterLoadError as e:
                self._loaded[spec] = None
                self.unavailable[spec] = str(e)
        return self._loaded[spec]

    def for_dtype(self, dtype: str) -> list[tuple[str, Adapter]]:
        """(label, adapter) of each reference that vouches for ``dtype`` and can run here."""
        out = []
        for spec, dtypes in self.specs:
            if dtypes is not None and dtype not in dtypes:
                continue
            adapter = self._load(spec)
            if adapter is None or dtype in adapter.unsupported:
                continue
            out.append((spec if dtypes is None else f"{spec} {dtype}", adapter))
        return out

    def shared(self, prop: str, case: Case, dtype: str, fields: dict) -> Disagreement | None:
        """The first reference that violates ``prop`` on this call too, or None."""
        for label, ref in self.for_dtype(dtype):
            verdict = check_once(prop, ref, case, dtype)
            if verdict.outcome == "violated":
                return Disagreement(prop, dtype, label, verdict.message or "", fields)
        return None

    def fails_case(self, case: Case, dtype: str, prop: str, fields: dict) -> Disagreement | None:
        """The first reference that does not conform on ``case`` as a normal run checks it."""
        for label, ref in self.for_dtype(dtype):
            result = run_one(case, ref, dtype)
            if result.status not in CONFORMING:
                message = f"{result.status}: {result.message}"
                return Disagreement(prop, dtype, label, message, fields)
        return None


def search(
    prop: str,
    adapter: Adapter,
    space,
    *,
    examples: int,
    seed: int,
    database: Path | None,
    report: PropertyReport,
    references: References | None = None,
) -> None:
    """Run one hypothesis search for ``prop``; a shrunk failure lands in ``report.finding``.

    With ``references``, a violation that a reference implementation shares is not a
    finding: it is counted in ``report.disagreements`` (the first kept) and the search
    goes on, so what shrinks is a call where only the adapter under test fails.
    """
    hypothesis = require_hypothesis()
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    # hypothesis is an optional extra: imported when a search starts, not with this module
    from harness.fuzz.strategies import case_fields

    def test(fields: dict) -> None:
        report.examples += 1
        case = memory_case(fields)
        for dtype in case.dtypes:
            verdict = check_once(prop, adapter, case, dtype)
            if verdict.outcome == "not_applicable":
                report.not_applicable += 1
                continue
            if verdict.outcome == "ok":
                report.max_ratio = max(report.max_ratio, verdict.ratio)
                continue
            shared = None if references is None else references.shared(prop, case, dtype, fields)
            if shared is None:
                raise Found(Finding(prop, dtype, verdict.message or "", fields, verdict.variants))
            report.disagreements += 1
            if report.disagreement is None:
                report.disagreement = shared

    # one database key per adapter, property and space: their failures must not mix (an
    # attribute hypothesis reads from the test function, which declares no attributes)
    test._hypothesis_internal_add_digest = f"{adapter.name}:{prop}:{space!r}".encode()  # type: ignore[attr-defined]
    configured = settings(
        max_examples=examples,
        database=None if database is None else DirectoryBasedExampleDatabase(str(database)),
        deadline=None,
        derandomize=False,
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    # settings outermost: hypothesis.seed alone would switch the database off
    runner = configured(hypothesis.seed(seed)(given(case_fields(space))(test)))
    try:
        runner()
    except Found as f:
        report.finding = f.finding
    except Exception as e:  # Flaky and friends: the adapter answered differently on a rerun
        report.error = f"{type(e).__name__}: {e}".splitlines()[0]


# ---------------------------------------------------------------- writing cases


def _case_name(prop: str, fields: dict) -> str:
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return f"fuzz_{prop}_{digest[:8]}"


def fields_from_inputs(inputs: CallInputs) -> dict:
    """Case fields for a call (a metamorphic variant); empty arrays become ``full`` recipes."""

    def array(a: np.ndarray, integer: bool = False) -> object:
        if a.size == 0:
            return {"generate": "full", "shape": list(a.shape), "value": 0 if integer else 0.0}
        if integer:
            return a.astype(np.int64).tolist()
        return a.astype(np.float64).tolist()

    fields: dict = {"dtype": inputs.dtype, "logits": array(inputs.logits)}
    fields["target"] = array(inputs.target, integer=not inputs.probability_target)
    if inputs.ignore_index != -100:
        fields["ignore_index"] = inputs.ignore_index
    if inputs.weight is not None:
        fields["weight"] = array(inputs.weight)
    if inputs.label_smoothing:
        fields["label_smoothing"] = inputs.label_smoothing
    fields["reduction"] = inputs.reduction
    if inputs.grad_output is not None:
        fields["grad_output"] = array(inputs.grad_output)
    return fields


_FIELD_ORDER = (
    "logits", "target", "weight", "reduction", "ignore_index", "label_smoothing",
    "grad_output", "dtype",
)  # fmt: skip


def case_yaml(name: str, why: str, fields: dict, tags: list[str]) -> str:
    """One case as block YAML with the oracle's expected values (list item, two-space indent)."""
    case = memory_case(fields, name, why)
    lines = [f"  - name: {name}", f"    why: {json.dumps(why)}"]
    for key in _FIELD_ORDER:
        if key in fields:
            value = fields[key]
            literal_floats = key in ("logits", "weight") and not isinstance(value, dict)
            text = format_array(np.asarray(value)) if literal_floats else flow(value)
            lines.append(f"    {key}: {text}")
    lines.append(f"    tags: {flow(tags)}")
    lines.append("    " + render_expected(compute(case), 4))
    return "\n".join(lines)


@dataclass
class WrittenCase:
    name: str
    dtype: str
    text: str
    status: str  # the adapter's status on this case, as a normal run reports it
    fields: dict = field(default_factory=dict)


def cases_for(finding: Finding, adapter: Adapter, command: str) -> list[WrittenCase]:
    """The regression cases of a finding: the calls involved that fail the oracle comparison.

    For a metamorphic violation, each call involved (original, transformed) is
    checked against the oracle; those that fail are written. When every call is
    within tolerance of the oracle yet the relation fails, all of them are written.
    """
    calls = {"original": finding.fields}
    for role, inputs in finding.variants.items():
        if role != "original":
            calls[role] = fields_from_inputs(inputs)
    base = _case_name(finding.prop, finding.fields)
    out = []
    for role, fields in calls.items():
        name = base if role == "original" else f"{base}_{role}"
        case = memory_case(fields, name)
        result = run_one(case, adapter, finding.dtype)
        out.append((role, name, fields, result))
    failing = [o for o in out if o[3].status not in CONFORMING]
    chosen = failing or out
    written = []
    for role, name, fields, result in chosen:
        detail = result.message if result.status not in CONFORMING else finding.message
        why = (
            f"found by '{command}': property {finding.prop}"
            + (f" ({role} call)" if len(calls) > 1 else "")
            + f": {detail}"
        )
        if not failing:
            why += (
                " (each call is within tolerance of the oracle; the relation between them is not)"
            )
        why = re.sub(r"np\.float(?:64|32|16)\(([^()]*)\)", r"\1", why)
        text = case_yaml(name, why, fields, ["fuzz", finding.prop])
        written.append(WrittenCase(name, finding.dtype, text, str(result.status), fields))
    return written


def vet(
    finding: Finding, cases: list[WrittenCase], references: References
) -> tuple[list[WrittenCase], list[Disagreement]]:
    """(the cases every reference passes, why the others are not written).

    The finding's call is checked against the property with each reference; a
    reference that violates it too blocks all of the finding's cases. Each case
    is then run through the references as a normal run checks it (oracle, error
    bounds, tolerance): one that a reference fails is not written.
    """
    shared = references.shared(finding.prop, memory_case(finding.fields), finding.dtype,
                               finding.fields)  # fmt: skip
    if shared is not None:
        return [], [shared]
    kept, blocked = [], []
    for c in cases:
        failed = references.fails_case(memory_case(c.fields, c.name), c.dtype, finding.prop,
                                       c.fields)  # fmt: skip
        if failed is None:
            kept.append(c)
        else:
            blocked.append(failed)
    return kept, blocked


def write_file(path: Path, cases: list[WrittenCase], command: str) -> None:
    """Write the cases as one case file and check that it loads."""
    header = (
        f"description: >\n  Minimal failing calls found by '{command}',\n"
        "  shrunk by hypothesis; expected values from the oracle.\ncases:\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(c.text for c in cases) + "\n", encoding="utf-8")
    load_file(path)  # what was written must load, expected values included


def run_search(
    adapter: Adapter,
    space: Space,
    *,
    props: list[str] | None = None,
    examples: int | None = None,
    budget: float | None = None,
    seed: int = 0,
    database: Path | None = None,
    references: References | None = None,
) -> list[PropertyReport]:
    """Search every property (``props``, default all): one run of ``examples`` (100), or
    seeded rounds until ``budget`` seconds are spent."""
    props = props or property_names()
    reports = {p: PropertyReport(p) for p in props}
    if budget is None:
        for p in props:
            search(p, adapter, space, examples=examples or 100, seed=seed,
                   database=database, report=reports[p], references=references)  # fmt: skip
        return list(reports.values())
    deadline = time.monotonic() + budget
    for round_ in range(sys.maxsize):
        open_props = [p for p in props if reports[p].finding is None and reports[p].error is None]
        if not open_props:
            break
        for p in open_props:
            if time.monotonic() >= deadline:
                return list(reports.values())
            search(p, adapter, space, examples=ROUND_EXAMPLES, seed=seed * 7919 + round_,
                   database=database, report=reports[p], references=references)  # fmt: skip
    return list(reports.values())


@dataclass
class Outcomes:
    """What becomes of the findings: the cases to write; per property whether its finding
    is written (or is the same call as one that is), the references that block it, and
    lines to print."""

    written: list[WrittenCase] = field(default_factory=list)
    is_written: dict[str, bool] = field(default_factory=dict)
    blocked: dict[str, list[Disagreement]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def settle_findings(
    reports: list[PropertyReport], adapter: Adapter, command: str, references: References
) -> Outcomes:
    """The regression cases of every finding, each run through the references first."""
    out = Outcomes()
    first: list[tuple[dict, str]] = []  # (fields, property) of each distinct finding
    for r in reports:
        f = r.finding
        if f is None:
            continue
        notes = out.notes.setdefault(r.prop, [])
        same = next((prop for fields, prop in first if fields == f.fields), None)
        if same is not None:  # several properties often shrink to the same call
            notes.append(f"(the same minimal call as {same}: not written twice)")
            out.is_written[r.prop] = out.is_written[same]
            out.blocked[r.prop] = out.blocked[same]
            continue
        first.append((f.fields, r.prop))
        kept, blocked = vet(f, cases_for(f, adapter, command), references)
        out.written += kept
        out.is_written[r.prop] = bool(kept)
        out.blocked[r.prop] = blocked
        notes += [f"not written: {d.text()}" for d in blocked]
    return out
