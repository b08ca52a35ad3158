"""Comparing two JSON reports: ``--baseline OLD.json`` and ``python -m harness diff OLD NEW``.

Results are matched by (case id, adapter, dtype). A result is *bad* when it
does not conform and no expectation allows it. Listed:

- newly failing: good in OLD, bad in NEW (fails the gate);
- newly passing: bad in OLD, good in NEW;
- expectation changed: the same non-conforming status in both, allowed by an
  expectation in one report only (the implementation did not move: not a regression,
  and not listed as newly failing or passing);
- error growth: the worst test ratio (loss or gradient; error / allowed, see
  ``harness.execution.compare``) grew beyond ``factor`` x max(OLD, ``RATIO_FLOOR``) (fails
  the gate). The floor is a third of the limit: a result that moves between
  0.01 and 0.1 of what the arithmetic allows moved by rounding noise (a
  different CPU, another BLAS, a reordered sum: a few ulp), not by a defect.
  Only growth into the last third of the limit counts, and crossing the limit
  is a status change. Reports written before test ratios existed have none:
  their results are compared by status only;
- changed: the case's content hash differs, so the values are not compared;
- added / removed: results present in only one report (not compared).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.adapter_names import file_adapter_name
from harness.errors import UsageError
from harness.execution.results import is_conforming
from harness.reports import json as report_json
from harness.reports.document import worst_ratio, worst_ulp

DEFAULT_GROWTH = 2.0
#: growth is measured from at least this test ratio (a third of the limit; see the docstring)
RATIO_FLOOR = 1.0 / 3.0

Key = tuple[str, str, str]


class ReportError(UsageError):
    """A report file that cannot be read as a lossconf JSON report (exit code 2)."""


def read_report(path: str | Path) -> dict:
    """Load a JSON report written by ``--report X.json`` or ``X.json.gz`` (any of
    ``harness.reports.json.READABLE_VERSIONS``; non-finite figures as floats, whether written
    as strings or, in version 1, as bare NaN/Infinity tokens); ReportError says what is wrong."""
    path = Path(path)
    try:
        doc = json.loads(report_json.read_text(path))
    except OSError as e:
        raise ReportError(f"report {path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"report {path}: not JSON (line {e.lineno}: {e.msg})") from None
    except ValueError as e:  # corrupt gzip data, or bytes that are not UTF-8
        raise ReportError(f"report {path}: cannot read: {e}") from None
    if not isinstance(doc, dict) or "results" not in doc or "schema_version" not in doc:
        raise ReportError(f"report {path}: not a lossconf JSON report (no schema_version/results)")
    if doc["schema_version"] not in report_json.READABLE_VERSIONS:
        readable = " and ".join(map(str, report_json.READABLE_VERSIONS))
        raise ReportError(
            f"report {path}: schema_version {doc['schema_version']!r}, this lossconf reads {readable}"
        )
    return report_json.decode(doc)


def is_bad(r: dict) -> bool:
    return not is_conforming(r["status"]) and not r.get("expected", False)


def key_of(r: dict) -> Key:
    # a report of a file adapter named from another folder (./mine.py:fn) keys as mine.py:fn
    return (r["case_id"], file_adapter_name(r["adapter"]), r["dtype"])


@dataclass
class Change:
    key: Key
    old: dict
    new: dict

    def row(self) -> list:
        o, n = worst_ratio(self.old), worst_ratio(self.new)
        return [
            *self.key,
            _status(self.old),
            _status(self.new),
            _fmt(o),
            _fmt(n),
            _fmt(worst_ulp(self.new)),
            (self.new.get("message") or self.old.get("message") or "")[:80],
        ]


def _status(r: dict) -> str:
    return r["status"] + (" (expected)" if r.get("expected") else "")


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.3g}"


@dataclass
class Comparison:
    newly_failing: list[Change] = field(default_factory=list)
    newly_passing: list[Change] = field(default_factory=list)
    expectation_changed: list[Change] = field(default_factory=list)  # same status
    growth: list[Change] = field(default_factory=list)
    changed: list[Key] = field(default_factory=list)
    added: list[Key] = field(default_factory=list)
    removed: list[Key] = field(default_factory=list)
    factor: float = DEFAULT_GROWTH

    @property
    def regressed(self) -> bool:
        return bool(self.newly_failing or self.growth)

    def to_dict(self) -> dict:
        def keys(changes: list[Change]) -> list[list[str]]:
            return [list(c.key) for c in changes]

        return {
            "factor": self.factor,
            "regressed": self.regressed,
            "newly_failing": keys(self.newly_failing),
            "newly_passing": keys(self.newly_passing),
            "expectation_changed": keys(self.expectation_changed),
            "growth": [[*c.key, worst_ratio(c.old), worst_ratio(c.new)] for c in self.growth],
            "changed": [list(k) for k in self.changed],
            "added": len(self.added),
            "removed": len(self.removed),
        }


def grew(old: float | None, new: float | None, factor: float) -> bool:
    """Whether a test ratio grew from ``old`` to ``new`` by more than ``factor`` above the floor."""
    if old is None or new is None or math.isnan(new):
        return False
    if math.isinf(old):
        return False
    return new > factor * max(old, RATIO_FLOOR)


def compare(old: dict, new: dict, *, factor: float = DEFAULT_GROWTH) -> Comparison:
    """Compare report documents ``old`` and ``new`` (as read by ``read_report``)."""
    out = Comparison(factor=factor)
    old_hash = old.get("suite", {}).get("cases", {})
    new_hash = new.get("suite", {}).get("cases", {})
    before = {key_of(r): r for r in old["results"]}
    after = {key_of(r): r for r in new["results"]}
    for key, n in after.items():
        o = before.get(key)
        if o is None:
            out.added.append(key)
            continue
        h_old = o.get("case_hash") or old_hash.get(key[0])
        h_new = n.get("case_hash") or new_hash.get(key[0])
        if h_old != h_new:
            out.changed.append(key)
            continue
        if is_bad(n) != is_bad(o) and n["status"] == o["status"]:
            out.expectation_changed.append(Change(key, o, n))
        elif is_bad(n) and not is_bad(o):
            out.newly_failing.append(Change(key, o, n))
        elif is_bad(o) and not is_bad(n):
            out.newly_passing.append(Change(key, o, n))
        elif grew(worst_ratio(o), worst_ratio(n), factor):
            out.growth.append(Change(key, o, n))
    out.removed = [k for k in before if k not in after]
    return out


def render(c: Comparison, old_name: str = "baseline") -> str:
    """The comparison as text tables; an empty-ish summary when nothing moved."""
    from tabulate import tabulate

    headers = [
        "case",
        "adapter",
        "dtype",
        "was",
        "now",
        "ratio was",
        "ratio now",
        "ulp now",
        "message",
    ]
    parts = []
    moved = c.newly_failing or c.newly_passing or c.expectation_changed or c.growth or c.changed
    if c.added and c.removed and not moved:
        old_adapters = sorted({k[1] for k in c.removed})
        new_adapters = sorted({k[1] for k in c.added})
        if set(old_adapters).isdisjoint(new_adapters):
            parts.append(
                f"warning: no result in common with {old_name}: it has adapters "
                f"{', '.join(old_adapters)}, this run {', '.join(new_adapters)}"
            )
    for title, changes in (
        ("Newly failing", c.newly_failing),
        (f"Error growth beyond {c.factor:g}x (test ratio)", c.growth),
        ("Newly passing", c.newly_passing),
        ("Same status, expectation changed", c.expectation_changed),
    ):
        if changes:
            rows = [ch.row() for ch in changes]
            parts += [f"{title} vs {old_name} ({len(changes)}):", tabulate(rows, headers), ""]
    if c.changed:
        ids = sorted({k[0] for k in c.changed})
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        parts.append(f"Changed cases (content hash differs, not compared): {shown}")
    parts.append(
        f"{old_name}: {len(c.newly_failing)} newly failing, {len(c.growth)} error growth, "
        f"{len(c.newly_passing)} newly passing, "
        + (f"{len(c.expectation_changed)} expectation changed, " if c.expectation_changed else "")
        + f"{len(c.changed)} changed, "
        f"{len(c.added)} added, {len(c.removed)} removed"
        + (" -> REGRESSION" if c.regressed else "")
    )
    return "\n".join(parts)
