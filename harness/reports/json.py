"""The JSON report: the source of truth other reports and comparisons read.

Envelope (``schema_version`` 1)::

    {schema_version, harness_version, timestamp, complete,
     environment: {python, numpy, platform},
     adapters: [{name, wraps, device, ..., seconds, peak_rss_bytes}],  # time in calls, peak RSS
     suite: {cases: {case_id: content_hash}},
     summary: {status: count},
     results: [Result.to_dict(), ...]}
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections import Counter

import numpy as np

from harness.atomic import write_atomic
from harness.version import VERSION
from harness.cases.model import Case
from harness.execution.results import Result

SCHEMA_VERSION = 1


def build(
    results: list[Result], cases: list[Case], adapters: list[dict], *, complete: bool = True
) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "harness_version": VERSION,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "complete": complete,
        "environment": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "adapters": [_with_totals(a, results) for a in adapters],
        "suite": {"cases": {c.id: c.content_hash for c in cases}},
        "summary": dict(sorted(Counter(r.status.value for r in results).items())),
        "results": [r.to_dict() for r in results],
    }


def _with_totals(adapter: dict, results: list[Result]) -> dict:
    """Add the adapter's wall time in calls (s) and peak resident memory (bytes) over its calls."""
    mine = [r for r in results if r.adapter == adapter.get("name")]
    peaks = [r.peak_rss_bytes for r in mine if r.peak_rss_bytes is not None]
    return {
        **adapter,
        "seconds": sum(r.seconds for r in mine),
        "peak_rss_bytes": max(peaks) if peaks else None,
    }


def write(path: str | os.PathLike, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1, allow_nan=True) + "\n")
