"""Mutation score: which case first kills each mutant (fail, error or missing_error)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness import Adapter
from harness.cases.model import Case
from harness.execution.results import Status
from harness.execution.runner import run_one

#: statuses that count as the suite catching a mutant
KILLING = frozenset({Status.FAIL, Status.ERROR, Status.MISSING_ERROR})


@dataclass(frozen=True)
class Kill:
    mutant: str
    doc: str
    case_id: str | None  # None: the mutant survived the whole suite
    dtype: str | None
    message: str


def first_kill(adapter: Adapter, cases: Iterable[Case]) -> Kill:
    """Run ``cases`` (every dtype of each) until one kills ``adapter``."""
    doc = (type(adapter).__doc__ or "").strip().splitlines()[0]
    for case in cases:
        for dtype in case.dtypes:
            r = run_one(case, adapter, dtype)
            if r.status in KILLING:
                return Kill(adapter.name, doc, case.id, dtype, f"{r.status}: {r.message}")
    return Kill(adapter.name, doc, None, None, "survived")


def hand_written_first(cases: list[Case]) -> list[Case]:
    """The topic files' targeted cases before the combinatorial grid: most mutants die sooner."""
    return sorted(cases, key=lambda c: "grid" in c.tags)


def kill_table(mutants: Iterable[type[Adapter]], cases: list[Case]) -> list[Kill]:
    ordered = hand_written_first(cases)
    return [first_kill(m(), ordered) for m in mutants]
