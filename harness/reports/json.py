"""The JSON report: the source of truth other reports and comparisons read.

Envelope (``schema_version`` 2; the JSON Schema ships as ``report.schema.json`` beside this
module)::

    {schema_version, harness_version, timestamp, complete,
     environment: {python, numpy, platform},
     adapters: [{name, wraps, device, ..., seconds, peak_rss_bytes}],  # time in calls, peak RSS
     suite: {cases: {case_id: content_hash}},
     summary: {status: count},
     results: [Result.to_dict(), ...]}

The file is strict JSON (RFC 8259), which JavaScript's ``JSON.parse`` and jq read as
Python does: a non-finite number is written as the string "nan", "inf" or "-inf", and
``decode`` (which ``harness.gate.baseline.read_report`` applies) turns the error figures
back into floats. Version 1 wrote bare ``NaN``/``Infinity`` tokens; it is still read.
Fields may be added within a version: readers ignore what they do not know.

A report named ``*.json.gz`` is written gzip-compressed (the same text; a scoreboard run's
3.7 MB of JSON is a few hundred KB), and every reader (``read_text``: ``diff``, ``history``,
``--baseline``, ``merge``, ``scoreboard``) takes a compressed file as a plain one.

A shard's report (``--shard I/N``) adds ``shard: {index, count, selection: {digest,
results, adapters, keywords, dtypes}, positions}`` and names the whole selection's cases
in ``suite`` (``harness.execution.shard``); a merged report (``python -m harness merge``)
adds ``merged_from: [{file, shard, results, timestamp, environment}]`` instead
(``harness.gate.merge``).
"""

from __future__ import annotations

import datetime
import gzip
import json
import math
import os
import platform
import sys
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.atomic import write_atomic
from harness.errors import UsageError
from harness.version import VERSION
from harness.cases.model import Case
from harness.execution.results import Result

SCHEMA_VERSION = 2
#: the versions ``decode`` (and so ``diff``, ``history``, ``--baseline``) reads
READABLE_VERSIONS = (1, 2)
#: a report whose name ends so is written gzip-compressed (``--report run.json.gz``)
COMPRESSED = ".json.gz"
#: the reports of a folder, for the readers given folders (``history``, ``scoreboard``)
PATTERNS = ("*.json", "*.json.gz")
#: the first bytes of a gzip file (RFC 1952), by which a compressed report is known
GZIP_MAGIC = b"\x1f\x8b"
#: how a non-finite float is spelled in the report (``repr`` of the float, as in ``got_loss``)
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


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
        "summary": summarize(r.status.value for r in results),
        "results": [r.to_dict() for r in results],
    }


def summarize(statuses: Iterable[str]) -> dict[str, int]:
    """The report's ``summary``: the number of results of each status, by status name."""
    return dict(sorted(Counter(statuses).items()))


def _with_totals(adapter: dict, results: list[Result]) -> dict:
    """Add the adapter's wall time in calls (s) and peak resident memory (bytes) over its calls."""
    mine = [r for r in results if r.adapter == adapter.get("name")]
    peaks = [r.peak_rss_bytes for r in mine if r.peak_rss_bytes is not None]
    return {
        **adapter,
        "seconds": sum(r.seconds for r in mine),
        "peak_rss_bytes": max(peaks) if peaks else None,
    }


def strict(value: object) -> object:
    """``value`` with every non-finite float replaced by its string ("nan", "inf", "-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def dumps(document: dict) -> str:
    """The report's text: strict JSON (a non-finite number left over would raise ValueError)."""
    return json.dumps(strict(document), indent=1, allow_nan=False) + "\n"


def write(path: str | os.PathLike, document: dict) -> None:
    """Write the report, gzip-compressed when ``path`` ends in ``.json.gz``."""
    text = dumps(document)
    if os.fspath(path).endswith(COMPRESSED):
        # mtime=0 leaves the time out of the gzip header: the bytes depend on the text only
        write_atomic(path, gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        write_atomic(path, text)


def read_text(path: str | os.PathLike) -> str:
    """A report file's JSON text, decompressed when the file is gzip (known by its first
    bytes, whatever its name). OSError when it cannot be read; ValueError when its gzip
    data is corrupt or truncated, or the text is not UTF-8."""
    data = Path(path).read_bytes()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
            raise ValueError(f"corrupt gzip data ({e})") from None
    return data.decode("utf-8")


def files_in(folder: str | os.PathLike) -> list[Path]:
    """The reports in ``folder`` (``*.json`` and ``*.json.gz``), sorted by name."""
    return sorted(p for pattern in PATTERNS for p in Path(folder).glob(pattern))


def report_files(paths: Iterable[Path], command: str, hint: str = "") -> list[Path]:
    """The report files that ``paths`` name: files as given, folders' reports
    (``files_in``). UsageError (exit 2), naming ``command``, for a path that does not exist
    or when there is no report at all (``hint``: where such reports come from)."""
    paths = list(paths)
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += files_in(p)
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"{command}: {p}: no such file or folder")
    if not files:
        raise UsageError(
            f"{command}: no *.json report in {', '.join(map(str, paths))} (nor a *.json.gz{hint})"
        )
    return files


def _real(value: object) -> object:
    return NON_FINITE[value] if isinstance(value, str) and value in NON_FINITE else value


def decode(document: dict) -> dict:
    """A report as read from its file, with the numbers written as strings back as floats:
    the error figures of each result and the ratios of the baseline's error growth (the
    fields the schema types as ``real``). Changes ``document`` in place and returns it."""
    for r in document.get("results") or ():
        for key in ("loss_errors", "grad_errors"):
            errors = r.get(key) if isinstance(r, dict) else None
            if isinstance(errors, dict):
                r[key] = {k: _real(v) for k, v in errors.items()}
    base = (document.get("gate") or {}).get("baseline")
    if isinstance(base, dict) and isinstance(base.get("growth"), list):
        base["growth"] = [[_real(v) for v in row] for row in base["growth"]]
    return document
