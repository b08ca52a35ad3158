"""``python -m harness merge``: the JSON reports of a run's shards as the one report of the run.

Each shard of ``--shard I/N`` writes a report with a ``shard`` section (I, N, the
selection's digest, the number of results of the whole run, the place of each of its
results in the run's order; ``harness.execution.shard``) and the content hash of every
selected case. Merging checks that the reports are the N shards of one run, puts the
results back in the run's order, adds up each adapter's time (and keeps its peak memory),
and judges the whole again (``harness.gate.verdict.judge``) with the expectations and
baseline given to merge: the results and the verdict are those of the unsharded run.

Refused (``MergeError``, exit 2): a report that is not a shard's or is incomplete
(interrupted); shards of different lossconf versions, different N, different suites
(a case's content hash), different selections (adapters, dtypes, cases) or different
adapter versions or devices; a shard given twice or missing; results that overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError
from harness.execution.config import RunConfig
from harness.execution.results import Result
from harness.gate.baseline import key_of, read_report
from harness.gate.verdict import GateInputs, Outcome, judge
from harness.reports import json as report_json

#: what must agree between two shards' adapters: the same framework, version and device
_ADAPTER_IDENTITY = ("wraps", "device")


class MergeError(UsageError):
    """Reports that are not the shards of one run (exit code 2)."""


@dataclass
class ShardReport:
    path: Path
    doc: dict

    @property
    def index(self) -> int:
        return int(self.doc["shard"]["index"])

    @property
    def count(self) -> int:
        return int(self.doc["shard"]["count"])

    @property
    def name(self) -> str:
        return f"{self.path} (shard {self.index}/{self.count})"


@dataclass
class Merged:
    """The merged report, the gate's outcome and the results' views (for the terminal)."""

    document: dict
    outcome: Outcome
    results: list[Result]


def read(paths: Sequence[Path]) -> list[ShardReport]:
    """The shard reports at ``paths``; MergeError for one that is not a complete shard's."""
    out = []
    for path in paths:
        doc = read_report(path)
        if not isinstance(doc.get("shard"), dict):
            raise MergeError(
                f"{path}: not a shard's report (no 'shard' section): run each share with "
                "--shard I/N --report FILE.json and merge those"
            )
        report = ShardReport(Path(path), doc)
        if not doc.get("complete", True):
            raise MergeError(f"{report.name} is incomplete (the run was interrupted): run it again")
        out.append(report)
    return out


def check_same_run(shards: Sequence[ShardReport]) -> None:
    """MergeError unless every shard is of the run of the first."""
    first = shards[0]
    for other in shards[1:]:
        _check_pair(first, other)
    seen: dict[int, ShardReport] = {}
    for s in shards:
        if s.index in seen:
            raise MergeError(
                f"shard {s.index}/{s.count} given twice: {seen[s.index].path} and {s.path}"
            )
        seen[s.index] = s
    missing = [f"{i}/{first.count}" for i in range(1, first.count + 1) if i not in seen]
    if missing:
        got = ", ".join(f"{i}/{first.count}" for i in sorted(seen))
        raise MergeError(
            f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(got {got}): merge all N shards of a run"
        )


def _check_pair(a: ShardReport, b: ShardReport) -> None:
    if a.doc["harness_version"] != b.doc["harness_version"]:
        raise MergeError(
            f"shards ran different lossconf versions: {a.doc['harness_version']} in {a.path}, "
            f"{b.doc['harness_version']} in {b.path}"
        )
    if a.count != b.count:
        raise MergeError(
            f"{a.name} and {b.name} split the work differently: the shards of a run share N"
        )
    suite_a, suite_b = a.doc["suite"]["cases"], b.doc["suite"]["cases"]
    for case_id in [*suite_a, *(k for k in suite_b if k not in suite_a)]:
        if suite_a.get(case_id) != suite_b.get(case_id):
            raise MergeError(
                f"shards ran different suites: case {case_id!r} is "
                f"{_hash_text(suite_a.get(case_id))} in {a.path} and "
                f"{_hash_text(suite_b.get(case_id))} in {b.path}"
            )
    adapters_a = {x["name"]: x for x in a.doc["adapters"]}
    adapters_b = {x["name"]: x for x in b.doc["adapters"]}
    for name in adapters_a.keys() & adapters_b.keys():
        x, y = adapters_a[name], adapters_b[name]
        if any(x.get(k) != y.get(k) for k in _ADAPTER_IDENTITY):
            raise MergeError(
                f"adapter {name!r} is {x.get('wraps')!r} on {x.get('device')!r} in {a.path} and "
                f"{y.get('wraps')!r} on {y.get('device')!r} in {b.path}: merge the shards of "
                "one framework version on one device"
            )
    sel_a, sel_b = a.doc["shard"]["selection"], b.doc["shard"]["selection"]
    if sel_a["digest"] != sel_b["digest"]:
        raise MergeError(
            f"shards made different selections: {_selection_text(sel_a)} in {a.path}, "
            f"{_selection_text(sel_b)} in {b.path}; give every shard the same --adapter, "
            "--cases, -k and --dtype"
        )


def _hash_text(content_hash: str | None) -> str:
    return "not selected" if content_hash is None else f"content hash {content_hash}"


def _selection_text(selection: dict) -> str:
    parts = [f"adapters {', '.join(selection['adapters'])}"]
    parts += [f"-k {k!r}" for k in selection["keywords"]]
    parts += [f"--dtype {d}" for d in selection["dtypes"]]
    return " ".join(parts) + f" ({selection['results']} results)"


def combine(shards: Sequence[ShardReport]) -> dict:
    """The unjudged report of the whole run: the shards' results in the run's order (the shards
    are checked with ``check_same_run`` first)."""
    total = int(shards[0].doc["shard"]["selection"]["results"])
    placed: dict[int, tuple[dict, ShardReport]] = {}
    by_key: dict[tuple[str, str, str], ShardReport] = {}
    for s in sorted(shards, key=lambda s: s.index):
        positions = s.doc["shard"]["positions"]
        if len(positions) != len(s.doc["results"]):
            raise MergeError(
                f"{s.name}: {len(positions)} positions for {len(s.doc['results'])} results "
                "(the report was edited?)"
            )
        for position, result in zip(positions, s.doc["results"], strict=True):
            key = key_of(result)
            if key in by_key or position in placed:
                other = by_key.get(key) or placed[position][1]
                raise MergeError(
                    f"shards overlap: {' '.join(key)} is in {other.name} and in {s.name}"
                )
            if not 0 <= position < total:
                raise MergeError(f"{s.name}: result {' '.join(key)} at {position}, of {total}")
            by_key[key] = s
            placed[position] = (result, s)
    if len(placed) != total:
        raise MergeError(
            f"the shards hold {len(placed)} of the run's {total} results (a report was edited?)"
        )
    first = shards[0].doc
    results = [placed[k][0] for k in range(total)]
    doc = {k: v for k, v in first.items() if k != "shard"}  # the envelope: shards share it
    if "planned_results" in doc:  # the whole run's, not the first shard's
        doc["planned_results"] = total
    doc.update(
        timestamp=max(s.doc["timestamp"] for s in shards),  # when the last shard finished
        complete=True,
        adapters=[_adapter_totals(a["name"], shards) for a in first["adapters"]],
        summary=report_json.summarize(r["status"] for r in results),
        results=results,
        load_errors=_union(e for s in shards for e in s.doc.get("load_errors", [])),
        merged_from=[
            {
                "file": str(s.path),
                "shard": f"{s.index}/{s.count}",
                "results": len(s.doc["results"]),
                "timestamp": s.doc["timestamp"],
                "environment": s.doc["environment"],
            }
            for s in sorted(shards, key=lambda s: s.index)
        ],
    )
    return doc


def _adapter_totals(name: str, shards: Sequence[ShardReport]) -> dict:
    """An adapter's entry: its time in calls over every shard, its largest peak memory."""
    entries = [a for s in shards for a in s.doc["adapters"] if a["name"] == name]
    peaks = [a["peak_rss_bytes"] for a in entries if a.get("peak_rss_bytes") is not None]
    return {
        **entries[0],
        "seconds": sum(a.get("seconds", 0.0) for a in entries),
        "peak_rss_bytes": max(peaks) if peaks else None,
    }


def _union(errors: Iterable[dict]) -> list[dict]:
    """Load errors of every shard, each once (every shard loaded the same files)."""
    out: list[dict] = []
    for e in errors:
        if e not in out:
            out.append(e)
    return out


def merge(paths: Sequence[Path], config: RunConfig, inputs: GateInputs | None = None) -> Merged:
    """The report of the run whose shards' reports are at ``paths``, judged with ``config``'s
    expectations and baseline (``inputs``: those files as already read)."""
    shards = read(paths)
    check_same_run(shards)
    doc = combine(shards)
    outcome, views = judge(doc, config, inputs)
    return Merged(doc, outcome, views)
