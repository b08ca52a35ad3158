"""Checks that a JSON report is strict JSON, follows the shipped JSON Schema and reads the
same in jq (jq 1.6 turns a bare ``Infinity`` into 1.797e308 without a word).

``tests/conftest.py`` runs ``check_reports_under`` on the session's temporary folder at the
end of the session: every JSON report of the current ``schema_version`` that the test suite
wrote is checked. Reports of older versions (fixtures of what older lossconf wrote) are left
out.

The schema check uses ``jsonschema-rs`` (a compiled Draft 2020-12 validator, in the ``dev``
extra) when it is installed: the suite writes about a hundred reports of up to a few
thousand results each, which the pure-Python ``jsonschema`` took 3 s a pytest-xdist worker to
validate at the end of every session, ``jsonschema-rs`` a few milliseconds. Without it,
``jsonschema`` (the harness's own dependency) checks the same schema.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jsonschema


def _refuse(token: str) -> float:
    raise ValueError(f"{token} is not JSON (RFC 8259)")


def strict_loads(text: str) -> object:
    """``json.loads`` that refuses NaN, Infinity and -Infinity, as JavaScript's JSON.parse does."""
    return json.loads(text, parse_constant=_refuse)


@functools.cache
def schema() -> dict:
    text = resources.files("harness.reports").joinpath("report.schema.json").read_text()
    return json.loads(text)


class SchemaError(ValueError):
    """A report that does not follow the shipped schema (either validator's message)."""


@functools.cache
def _validator() -> Callable[[object], None]:
    """``validate(doc)``: raises SchemaError with the first violation's message."""
    jsonschema.Draft202012Validator.check_schema(schema())
    try:
        import jsonschema_rs
    except ImportError:
        slow = jsonschema.Draft202012Validator(schema())

        def validate(doc: object) -> None:
            try:
                slow.validate(doc)
            except jsonschema.ValidationError as e:
                raise SchemaError(str(e).splitlines()[0]) from None

        return validate
    fast = jsonschema_rs.Draft202012Validator(schema())

    def validate(doc: object) -> None:
        try:
            fast.validate(doc)
        except jsonschema_rs.ValidationError as e:
            raise SchemaError(str(e).splitlines()[0]) from None

    return validate


def _through_jq(paths: list[Path]) -> list[object] | None:
    """What jq reads in each file (one jq process for all), or None without jq."""
    jq = shutil.which("jq")
    if jq is None or not paths:
        return None
    out = subprocess.run([jq, "-c", ".", *map(str, paths)], capture_output=True, text=True)
    assert out.returncode == 0, f"jq: {out.stderr}"
    return [strict_loads(line) for line in out.stdout.splitlines()]


def check_report(path: Path) -> dict:
    """Raise (ValueError, SchemaError, AssertionError) unless ``path`` is a
    strict, schema-valid report that jq reads back unchanged; return the document."""
    doc = strict_loads(path.read_text(encoding="utf-8"))
    _validator()(doc)
    seen = _through_jq([path])
    assert seen is None or seen == [doc], f"{path}: jq reads other values"
    return doc


def _text(path: Path) -> str | None:
    """A report file's text (decompressed for ``.json.gz``), None when it cannot be read."""
    from harness.reports.json import read_text

    try:
        return read_text(path)
    except (OSError, ValueError):
        return None


def _is_current_report(text: str | None) -> bool:
    from harness.reports.json import SCHEMA_VERSION

    return text is not None and f'"schema_version": {SCHEMA_VERSION},' in text[:200]


def check_reports_under(folder: Path) -> tuple[int, list[str]]:
    """(the number of current reports found under ``folder``, a problem per bad one);
    compressed ones (``*.json.gz``) are checked decompressed, and jq reads the plain ones."""
    found = [p for p in sorted(folder.rglob("*.json*")) if p.name.endswith((".json", ".json.gz"))]
    texts = {p: _text(p) for p in found if p.is_file()}
    paths = [p for p, text in texts.items() if _is_current_report(text)]
    problems, docs = [], {}
    for path in paths:
        try:
            docs[path] = strict_loads(texts[path] or "")
            _validator()(docs[path])
        except ValueError as e:  # not strict JSON, or SchemaError
            problems.append(f"{path}: {str(e).splitlines()[0]}")
    plain = [p for p in paths if p.suffix == ".json"]
    if not problems:
        seen = _through_jq(plain)
        if seen is not None:
            problems += [
                f"{p}: jq reads other values"
                for p, s in zip(plain, seen, strict=True)
                if docs[p] != s
            ]
    return len(paths), problems
