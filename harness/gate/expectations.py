"""Known non-conformities: the ``--expectations FILE`` model, its loader and its matcher.

(``python -m harness expectations update`` writes such files: ``harness.cli.expectations``.)

The file is YAML::

    expectations:
      - id: numerics/fp16_mean_over_65504    # a case id prefix, or a glob (* ? [)
                                             # or case: ID, exactly one case id
        adapter: torch                       # optional: adapter name (glob)
        version: ">=2.13,<2.15"              # optional: the wrapped library's version
        device: cpu                          # optional: adapter device (glob)
        dtype: [float16]                     # optional: one dtype or a list
        outcomes: [fail]                     # statuses allowed instead of conforming
        reason: "torch accumulates the fp16 mean denominator in fp16"
        link: https://github.com/pytorch/pytorch/issues/...   # reason or link required

A non-conforming result that the first matching entry allows is *expected*
and does not fail the gate. A result that conforms although an entry allows
only non-conforming outcomes is an *unexpected pass* (reported, not fatal).
An entry that matches no result although the run selected a case and an
adapter it names (``Entry.selected``) is warned about, so the file does not go
stale; entries for cases or adapters outside the run are not. The file is
validated strictly: every problem names the file, line, entry and field, and
exits with code 2.
"""

from __future__ import annotations

import datetime
import difflib
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.adapter_names import file_adapter_name
from harness.dtypes import DTYPE_NAMES
from harness.errors import UsageError
from harness.execution.results import CONFORMING_NAMES, STATUS_NAMES, Result, Status

FIELDS = ("id", "case", "adapter", "version", "device", "dtype", "outcomes", "reason", "link")
_CLAUSE = re.compile(r"^\s*(>=|<=|==|!=|>|<|~=)?\s*([0-9][0-9A-Za-z.+\-]*)\s*$")


class ExpectationsError(UsageError):
    """An expectations file that cannot be read or is invalid (exit code 2)."""


def version_key(text: str) -> tuple:
    """A sortable key for versions like '2.13.0', '2.14.1+cpu', '0.4.30', '1.26.4rc1'."""
    text = text.split("+", 1)[0]
    key: list = []
    for part in re.split(r"[.\-]", text):
        m = re.match(r"^(\d+)(.*)$", part)
        if m:
            # a pre-release suffix (rc1, a2, dev0) sorts before the plain release
            key.append((int(m.group(1)), 0 if m.group(2) else 1, m.group(2)))
        else:
            key.append((-1, 0, part))
    return tuple(key)


def _compare_versions(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    n = max(len(ka), len(kb))
    pad = (0, 1, "")
    ka, kb = ka + (pad,) * (n - len(ka)), kb + (pad,) * (n - len(kb))
    return (ka > kb) - (ka < kb)


def parse_version_range(text: str) -> list[tuple[str, str]]:
    """'>=2.13,<2.15' -> [('>=', '2.13'), ('<', '2.15')]; a bare version means '=='."""
    clauses = []
    for part in str(text).split(","):
        m = _CLAUSE.match(part)
        if not m:
            raise ValueError(f"{part.strip()!r} is not a version clause like '>=2.13' or '<2.15'")
        clauses.append((m.group(1) or "==", m.group(2)))
    return clauses


def version_in_range(version: str, clauses: list[tuple[str, str]]) -> bool:
    for op, bound in clauses:
        c = _compare_versions(version, bound)
        ok = {
            ">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0, "==": c == 0, "!=": c != 0,
            # ~=2.13 means >=2.13 and the same release series (2.*)
            "~=": c >= 0 and version_key(version)[: max(len(version_key(bound)) - 1, 1)]
            == version_key(bound)[: max(len(version_key(bound)) - 1, 1)],
        }[op]  # fmt: skip
        if not ok:
            return False
    return True


@dataclass
class Entry:
    """One expectation: which results it covers and which outcomes it allows.

    ``id`` is a case id prefix or glob (the file's ``id:``), or with ``exact`` one case id
    (the file's ``case:``, what ``expectations update`` writes)."""

    id: str
    outcomes: frozenset[str]
    reason: str
    line: int | None = None
    exact: bool = False
    adapter: str | None = None
    version: list[tuple[str, str]] | None = None
    device: str | None = None
    dtypes: frozenset[str] | None = None
    raw: dict = field(default_factory=dict)

    @property
    def why(self) -> str:
        return self.reason

    def where(self, path: object) -> str:
        return f"{path}:{self.line}" if self.line else str(path)

    def matches_id(self, case_id: str) -> bool:
        if self.exact:
            return case_id == self.id
        if any(ch in self.id for ch in "*?["):
            return fnmatch.fnmatchcase(case_id, self.id)
        return case_id.startswith(self.id)

    def matches(self, result: Result, adapter_info: dict) -> bool:
        """Whether this entry covers ``result``; ``adapter_info`` has name, version, device."""
        if not self.matches_id(result.case_id):
            return False
        if self.adapter and not fnmatch.fnmatchcase(result.adapter, self.adapter):
            return False
        if self.dtypes and result.dtype not in self.dtypes:
            return False
        if self.device and not fnmatch.fnmatchcase(adapter_info.get("device", ""), self.device):
            return False
        if self.version:
            version = adapter_info.get("version") or ""
            if not version or not version_in_range(version, self.version):
                return False
        return True

    def selected(self, cases: dict[str, tuple[str, ...]] | None, adapters: Iterable[str]) -> bool:
        """Whether a run of ``cases`` (case id -> its dtypes; None: not known) through
        ``adapters`` (names) could give this entry a result: its id, adapter and dtype
        conditions (not the version or device, which a stale entry gets wrong) hold for one
        of them."""
        if self.adapter and not any(fnmatch.fnmatchcase(a, self.adapter) for a in adapters):
            return False
        if cases is None:
            return True
        return any(
            self.matches_id(case_id) and (not self.dtypes or bool(self.dtypes & set(dtypes)))
            for case_id, dtypes in cases.items()
        )

    @property
    def allows_conforming(self) -> bool:
        return bool(self.outcomes & CONFORMING_NAMES)


@dataclass
class Expectations:
    path: Path
    entries: list[Entry]

    def match(self, result: Result, adapter_info: dict) -> Entry | None:
        return next((e for e in self.entries if e.matches(result, adapter_info)), None)


class _LineLoader(yaml.SafeLoader):
    pass


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    out = dict(loader.construct_mapping(node, deep=True))
    out["__line__"] = node.start_mark.line + 1
    return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _mapping_with_line)


def _fail(path: Path, line: int | None, where: str, message: str) -> ExpectationsError:
    loc = f"{path}:{line}" if line else str(path)
    return ExpectationsError(f"expectations {loc}: {where}{message}")


def load(path: str | Path) -> Expectations:
    """Read and validate an expectations file; ExpectationsError names file, line, entry, field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ExpectationsError(f"--expectations {path}: cannot read: {e.strerror}") from None
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        raise ExpectationsError(f"expectations {path}: not valid YAML: {e}") from None
    if doc is None:
        return Expectations(path, [])
    if not isinstance(doc, dict) or set(doc) - {"expectations", "__line__"}:
        raise _fail(path, None, "", "top level must be a mapping with one key, 'expectations'")
    items = doc.get("expectations") or []
    if not isinstance(items, list):
        raise _fail(path, doc.get("__line__"), "", "'expectations' must be a list of entries")
    return Expectations(path, [_entry(path, i, raw) for i, raw in enumerate(items, 1)])


def _entry(path: Path, index: int, raw: object) -> Entry:
    if not isinstance(raw, dict):
        raise _fail(
            path, None, f"entry {index}: ", f"is a {type(raw).__name__}, expected a mapping"
        )
    line = raw.pop("__line__", None)
    where = f"entry {index} (id {raw.get('id', raw.get('case'))!r}): "

    def bad(field_name: str, message: str) -> ExpectationsError:
        return _fail(path, line, where, f"field {field_name!r}={raw.get(field_name)!r} {message}")

    for key in raw:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(FIELDS)}"
            raise _fail(path, line, where, f"unknown field {key!r}{hint}")
    if "id" in raw and "case" in raw:
        raise _fail(
            path, line, where, "has both 'id' (a prefix or glob) and 'case' (one case id): keep one"
        )
    if "id" not in raw and "case" not in raw:
        raise _fail(
            path, line, where, "needs 'id' (a case id prefix or glob) or 'case' (one exact case id)"
        )
    key = "id" if "id" in raw else "case"
    if not isinstance(raw[key], str) or not raw[key].strip():
        if key == "case":
            raise bad("case", "must be one case id, e.g. 'numerics/huge_1e300'")
        raise bad("id", "must be a case id prefix or glob, e.g. 'numerics/' or '*/fp16_*'")
    outcomes = raw.get("outcomes")
    if isinstance(outcomes, str):
        outcomes = [outcomes]
    if not outcomes or not isinstance(outcomes, list):
        raise bad("outcomes", f"must list the allowed statuses ({', '.join(STATUS_NAMES)})")
    unknown = [o for o in outcomes if o not in STATUS_NAMES]
    if unknown:
        raise bad("outcomes", f"has {unknown[0]!r}: each must be one of {', '.join(STATUS_NAMES)}")
    reason = raw.get("reason") or raw.get("link")
    if not isinstance(reason, str) or not reason.strip():
        raise _fail(path, line, where, "needs a 'reason' or a 'link' saying why it is expected")
    for name in ("adapter", "device"):
        if name in raw and not isinstance(raw[name], str):
            raise bad(name, "must be a string (a glob is allowed)")
    version = None
    if "version" in raw:
        try:
            version = parse_version_range(raw["version"])
        except ValueError as e:
            raise bad("version", f"is not a version range: {e}") from None
    dtypes = raw.get("dtype")
    if dtypes is not None:
        dtypes = [dtypes] if isinstance(dtypes, str) else dtypes
        if not isinstance(dtypes, list) or any(d not in DTYPE_NAMES for d in dtypes):
            raise bad("dtype", f"must be one or a list of {', '.join(DTYPE_NAMES)}")
    text = raw.get("reason") or ""
    if raw.get("link"):
        text = f"{text} ({raw['link']})" if text else raw["link"]
    return Entry(
        id=raw[key].strip(),
        outcomes=frozenset(outcomes),
        reason=text,
        line=line,
        exact=key == "case",
        # an entry recorded with a file adapter named from another folder (./mine.py:fn)
        adapter=None if raw.get("adapter") is None else file_adapter_name(str(raw["adapter"])),
        version=version,
        device=raw.get("device"),
        dtypes=None if dtypes is None else frozenset(dtypes),
        raw=raw,
    )


def entries_from_results(results: Iterable[dict], adapters: dict[str, dict]) -> list[dict]:
    """New entries for the non-conforming results of a JSON report (one per case x adapter x
    status), each naming its one case (``case:``): an id would also cover the ids it prefixes."""
    grouped: dict[tuple[str, str, str], dict] = {}
    for r in results:
        if r["status"] in CONFORMING_NAMES or r.get("expectation"):
            continue
        key = (r["case_id"], r["adapter"], r["status"])
        entry = grouped.setdefault(
            key,
            {
                "case": r["case_id"],
                "adapter": r["adapter"],
                "dtype": [],
                "outcomes": [r["status"]],
                "reason": (
                    f"recorded by 'expectations update' with {adapters.get(r['adapter'], {}).get('wraps', '?')} "
                    f"on {datetime.date.today().isoformat()}: {r['message'][:160]}"
                    " -- TODO: replace with the cause or an issue link"
                ),
            },
        )
        entry["dtype"].append(r["dtype"])
    return list(grouped.values())


def covered(entries: list[Entry], doc: dict) -> set[int]:
    """Indices of results that some kept entry already allows."""
    adapters = {a["name"]: a for a in doc["adapters"]}
    out = set()
    for i, r in enumerate(doc["results"]):
        res = _result_view(r)
        for e in entries:
            if e.matches(res, adapters.get(r["adapter"], {})):
                if r["status"] in e.outcomes or r["status"] in CONFORMING_NAMES:
                    out.add(i)
                break
    return out


def lines_used(entries: list[Entry], doc: dict) -> set[int | None]:
    adapters = {a["name"]: a for a in doc["adapters"]}
    used: set[int | None] = set()
    for r in doc["results"]:
        if r["status"] in CONFORMING_NAMES:
            continue  # an entry that covers only conforming results is stale
        res = _result_view(r)
        for e in entries:
            if e.matches(res, adapters.get(r["adapter"], {})):
                used.add(e.line)
                break
    return used


def selection_of(doc: dict) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """What a report's run selected: case id -> the dtypes it ran in, and the adapter names
    (for ``Entry.selected``)."""
    cases: dict[str, list[str]] = {}
    for r in doc["results"]:
        cases.setdefault(r["case_id"], []).append(r["dtype"])
    return {k: tuple(v) for k, v in cases.items()}, [a["name"] for a in doc["adapters"]]


def _result_view(r: dict) -> Result:
    return Result(
        case_id=r["case_id"], adapter=r["adapter"], dtype=r["dtype"], status=Status(r["status"])
    )
