"""``--shard I/N``: the I-th of N deterministic shares of a run, balanced by cost.

The unit of work is one case in one dtype, with every adapter of the run: the adapters
of a case and dtype share its cast inputs and the oracle's expected value, so a shard
computes each once. Units are dealt by the longest-processing-time rule: the costliest
first (``harness.execution.parallel.call_cost``; ties in the run's order), each to the shard
with the least work so far (ties to the lowest index). The loads of any two shards then
differ by at most one unit's cost. Every shard computes the same split from the same
selection, so the machines of a CI matrix need not talk to each other.

A shard's JSON report carries what ``python -m harness merge`` (``harness.gate.merge``)
needs to put the run back together: the ``shard`` section (I, N, the selection's digest,
the number of results of the whole run and the place of each of the shard's results in
the run's order) and, in ``suite``, the content hash of every selected case.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass

from harness.cases.model import Case
from harness.execution.parallel import call_cost
from harness.execution.results import Result


def owners(cases: Sequence[Case], count: int) -> list[list[int]]:
    """For each case, the shard (1 to ``count``) of each of its dtypes."""
    units = [(call_cost(c), i, j) for i, c in enumerate(cases) for j in range(len(c.dtypes))]
    out = [[0] * len(c.dtypes) for c in cases]
    loads = [(0, shard) for shard in range(1, count + 1)]  # a heap: the least loaded first
    for cost, i, j in sorted(units, key=lambda u: -u[0]):  # stable: ties in the run's order
        load, shard = heapq.heappop(loads)
        out[i][j] = shard
        heapq.heappush(loads, (load + cost, shard))
    return out


def digest(cases: Sequence[Case], adapters: Sequence[str]) -> str:
    """The identity of a selection: its cases (id, content hash, dtypes) in order and the
    adapter names; shards of one run have the same."""
    content = {
        "cases": [[c.id, c.content_hash, list(c.dtypes)] for c in cases],
        "adapters": list(adapters),
    }
    text = json.dumps(content, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` of a run whose selected cases are ``selection``."""

    index: int
    count: int
    selection: tuple[Case, ...]  # every selected case of the whole run, in order

    def cases(self) -> list[Case]:
        """This shard's cases in the run's order, each with only this shard's dtypes."""
        out = []
        for case, shards in zip(self.selection, owners(self.selection, self.count), strict=True):
            dtypes = tuple(d for d, s in zip(case.dtypes, shards, strict=True) if s == self.index)
            if dtypes == case.dtypes:
                out.append(case)
            elif dtypes:
                out.append(dataclasses.replace(case, dtypes=dtypes))
        return out

    def section(
        self,
        adapters: Sequence[str],
        results: Sequence[Result],
        *,
        keywords: Sequence[str] = (),
        dtypes: Sequence[str] = (),
    ) -> dict:
        """The report's ``shard`` section for ``results`` (this shard's, in its order)."""
        order = {
            (c.id, a, d): k
            for k, (c, a, d) in enumerate(
                (c, a, d) for c in self.selection for a in adapters for d in c.dtypes
            )
        }
        return {
            "index": self.index,
            "count": self.count,
            "selection": {
                "digest": digest(self.selection, adapters),
                "results": len(order),  # of the whole run
                "adapters": list(adapters),
                "keywords": list(keywords),
                "dtypes": list(dtypes),
            },
            "positions": [order[r.key] for r in results],  # in the whole run's order
        }
