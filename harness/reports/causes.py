"""Non-conforming results grouped by cause, for the terminal, Markdown and HTML reports.

A user's module that fails 249 results often has four reasons for it: listing the rows one
by one hides them. A cause is a status and the message with its numbers taken out (values,
indices and shapes of any rank, addresses), so ``loss[3, 1]: expected 1.5, got 2.0`` and
``loss[0, 2]: expected 0.25, got 0.5`` are one cause. Each cause has its count, adapters,
dtypes and first result as an example; the JSON report keeps every result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from harness.dtypes import DTYPE_NAMES

#: a hexadecimal address, or a number that is not part of a name (float16, log1p, bf16)
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?!\w)")
#: an index or shape of any rank, once its numbers are out: [#], [#, #], ...
_INDEX = re.compile(r"\[#(?:,\s*#)*\]")


def normalise(message: str) -> str:
    """``message`` without its numbers (each is ``#``; an index or shape of any rank is
    ``[#]``) and with runs of white space as one space: what results of one cause share."""
    text = _INDEX.sub("[#]", _NUMBER.sub("#", message))
    return " ".join(text.split())


@dataclass
class Cause:
    """Results of one status whose messages differ only in their numbers (report rows)."""

    status: str
    pattern: str  # the normalised message
    rows: list[Mapping] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def example(self) -> Mapping:
        return self.rows[0]

    @property
    def adapters(self) -> list[str]:
        return list(dict.fromkeys(r["adapter"] for r in self.rows))

    @property
    def dtypes(self) -> list[str]:
        seen = dict.fromkeys(r["dtype"] for r in self.rows)
        return [d for d in DTYPE_NAMES if d in seen] + [d for d in seen if d not in DTYPE_NAMES]

    @property
    def cases(self) -> int:
        """The number of distinct cases."""
        return len({r["case_id"] for r in self.rows})


def group(rows: Iterable[Mapping]) -> list[Cause]:
    """``rows`` (report rows or ``Result.to_dict()``: case_id, adapter, dtype, status,
    message) grouped by status and normalised message; the most frequent cause first, ties
    in the order they first occur."""
    found: dict[tuple[str, str], Cause] = {}
    for r in rows:
        pattern = normalise(r.get("message") or "")
        key = (r["status"], pattern)
        found.setdefault(key, Cause(r["status"], pattern)).rows.append(r)
    return sorted(found.values(), key=lambda c: -c.count)  # sorted() is stable


def shortened(text: str, width: int | None) -> str:
    """``text`` cut to ``width`` characters with '...' (None: as it is)."""
    if width is None or len(text) <= width:
        return text
    return text[: width - 3] + "..."


def table_rows(found: list[Cause], *, width: int | None, sep: str = ",") -> list[list[object]]:
    """One row per cause: results, status, adapters, dtypes, cases, example, its message."""
    return [
        [
            c.count,
            c.status,
            sep.join(c.adapters),
            sep.join(c.dtypes),
            c.cases,
            f"{c.example['case_id']} [{c.example['dtype']}]",
            shortened(c.example.get("message") or "", width),
        ]
        for c in found
    ]


HEADERS = ["results", "status", "adapters", "dtypes", "cases", "example", "what differed (example)"]
#: the most causes a report's table shows (the rest are counted in one line)
SHOWN = 30


def rest(found: list[Cause], shown: int = SHOWN) -> str | None:
    """'... and 12 more causes (40 results)' for the causes after the first ``shown``."""
    more = found[shown:]
    if not more:
        return None
    return f"... and {len(more)} more causes ({sum(c.count for c in more)} results)"
