"""Finding and reading case files: YAML (safe subset only) checked against the JSON Schema.

``load_paths`` returns the cases of every file under the given paths; each
problem raises (or, with ``keep_going``, is collected as) a ``CaseFileError``
naming file, line, case and field. Semantic checks live in ``harness.cases.build``.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from harness.cases import frozen, limits, load_cache
from harness.cases.build import build_case
from harness.cases.model import Case
from harness.cases.yaml_numbers import text_number_message
from harness.errors import CaseFileError, InternalError

try:  # libyaml is several times faster; both give yaml.safe_load semantics
    from yaml import CSafeLoader as SafeYamlLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    # the same interface; the stubs do not relate the C and the pure-Python class
    from yaml import SafeLoader as SafeYamlLoader  # type: ignore[assignment]

CASE_SUFFIXES = (".yaml", ".yml")


class LineDict(dict):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int | None = None
    key_lines: dict


class _LineLoader(SafeYamlLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"keys must be strings, found {key!r}", key_node.start_mark
            )
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def builtin_suite() -> Path:
    """The built-in cases: installed as package data, or cases/ in a source checkout."""
    package = Path(__file__).resolve().parents[1]  # harness/
    installed = package / "suite"
    if installed.is_dir():
        return installed
    return package.parent / "cases"


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("harness.cases").joinpath("schema.json").read_text())


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    cls = jsonschema.validators.validator_for(schema())
    return cls(schema())


@functools.lru_cache(maxsize=1)
def _case_validator():
    """jsonschema's validator of one case (``#/$defs/case`` of the same schema)."""
    import jsonschema

    whole = schema()
    one_case = {"$schema": whole["$schema"], "$defs": whole["$defs"], "$ref": "#/$defs/case"}
    return jsonschema.validators.validator_for(whole)(one_case)


@functools.lru_cache(maxsize=1)
def _compiled_validator():
    """jsonschema-rs's compiled validator of the same schema when it is installed (the
    ``fast`` extra), else None. It is used to find what is valid, ten times faster than
    jsonschema on the built-in files; every error message comes from jsonschema, so a
    message never depends on it."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    return jsonschema_rs.validator_for(schema())


def _schema_errors(doc: object) -> list:
    """jsonschema's errors of ``doc`` against the case schema (none when it is valid).

    With jsonschema-rs (``_compiled_validator``), a file it passes needs nothing more. When
    it flags only cases (paths ``cases/<i>/...``), jsonschema checks those cases alone: the
    rest of the file is valid for both. jsonschema-rs reads a NaN (YAML's ``.nan``, which
    an expected value may be) as JSON's null and so rejects it where a number is required;
    jsonschema takes it as the number it is, so such a case may turn out valid. Anything
    else it flags (a top-level field, a value it cannot take: a YAML date, a huge integer)
    sends the whole file through jsonschema."""
    compiled = _compiled_validator()
    if compiled is None:
        return list(_validator().iter_errors(doc))
    try:
        flagged = {tuple(e.instance_path[:2]) for e in compiled.iter_errors(doc)}
    except Exception:  # a value it cannot take: jsonschema checks the whole file
        return list(_validator().iter_errors(doc))
    if not flagged:
        return []
    if not all(len(p) == 2 and p[0] == "cases" and isinstance(p[1], int) for p in flagged):
        return list(_validator().iter_errors(doc))
    assert isinstance(doc, dict) and isinstance(doc["cases"], list)
    cases = doc["cases"]
    errors = []
    for _, index in sorted(flagged):
        for err in _case_validator().iter_errors(cases[index]):
            err.path.extendleft(reversed(("cases", index)))  # the case's place in the file
            errors.append(err)
    return errors


def discover(paths: list[Path]) -> list[Path]:
    """Case files under ``paths`` (files as given, folders searched recursively), sorted."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.suffix in CASE_SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            raise CaseFileError(p, "no such file or folder")
    return found


def read_yaml(path: Path) -> object:
    """Parse one file with safe YAML semantics, within ``harness.cases.limits``; errors carry the line."""
    bounds = limits.current()
    try:
        size = path.stat().st_size
        if limits.exceeds(size, bounds.max_file_bytes):
            raise CaseFileError(
                path,
                f"file of {size:,} bytes is above "
                f"{limits.describe('max_file_bytes', bounds.max_file_bytes)}",
            )
        data = path.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line: int | None = e.object[: e.start].count(b"\n") + 1
        raise CaseFileError(
            path,
            f"not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r}); "
            "save the file as UTF-8",
            line=line,
        ) from None
    except OSError as e:
        raise CaseFileError(path, f"cannot read: {e.strerror}") from None
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(path, node, bounds)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or str(e)
        if "could not determine a constructor" in str(e):
            problem = f"tag not allowed ({problem.split('for the tag')[-1].strip()}): only plain YAML is accepted"
        raise CaseFileError(path, f"invalid YAML: {problem}", line=line) from None
    except yaml.YAMLError as e:
        raise CaseFileError(path, f"invalid YAML: {e}") from None
    finally:
        loader.dispose()


def _check_expanded_size(path: Path, root: yaml.Node, bounds: limits.Limits) -> None:
    """Refuse recursive aliases, deep nesting, and documents above ``max_yaml_nodes`` nodes
    once aliases are expanded. Iterative, and each shared (aliased) node is sized once.

    Scalars (most nodes: the numbers of literal arrays) are counted where their list or
    mapping is visited, not visited one by one; the errors are those of a walk that visits
    every node, last child first."""
    sizes: dict[int, int] = {}  # id(node) -> expanded size, for lists and mappings
    open_nodes: set[int] = set()  # the ancestors of the node being visited
    # (node, depth, None) on the way down; (node, depth, (scalar children, nested)) back up
    stack: list[tuple[yaml.Node, int, tuple[int, list[yaml.Node]] | None]] = [(root, 1, None)]
    while stack:
        node, depth, visited = stack.pop()
        key = id(node)
        if visited is not None:
            open_nodes.discard(key)
            n_scalars, nested = visited
            sizes[key] = 1 + n_scalars + sum(sizes[id(c)] for c in nested)
            if limits.exceeds(sizes[key], bounds.max_yaml_nodes):
                raise CaseFileError(
                    path,
                    f"more than {bounds.max_yaml_nodes:,} YAML values once anchors and aliases "
                    f"are expanded (an alias bomb?): above "
                    f"{limits.describe('max_yaml_nodes', bounds.max_yaml_nodes)}",
                )
            continue
        if key in sizes:
            continue
        _check_visit(path, node, depth, open_nodes, bounds)
        children = _children(node)
        if not children and isinstance(node, yaml.ScalarNode):
            continue  # a document that is one scalar
        pending = [c for c in children if isinstance(c, yaml.ScalarNode) or id(c) not in sizes]
        if pending and limits.exceeds(depth + 1, bounds.max_yaml_depth):
            _check_visit(path, pending[-1], depth + 1, open_nodes, bounds)  # raises
        nested = [c for c in children if not isinstance(c, yaml.ScalarNode)]
        open_nodes.add(key)
        stack.append((node, depth, (len(children) - len(nested), nested)))
        stack.extend((c, depth + 1, None) for c in nested if id(c) not in sizes)


def _check_visit(
    path: Path, node: yaml.Node, depth: int, open_nodes: set[int], bounds: limits.Limits
) -> None:
    """A node reached at ``depth``: not one of its own ancestors, not nested too deep."""
    line = node.start_mark.line + 1
    if id(node) in open_nodes:
        raise CaseFileError(path, "recursive alias: an anchor is used inside itself", line=line)
    if limits.exceeds(depth, bounds.max_yaml_depth):
        raise CaseFileError(
            path,
            f"nested more than {bounds.max_yaml_depth} levels deep: above "
            f"{limits.describe('max_yaml_depth', bounds.max_yaml_depth)}",
            line=line,
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _schema_error(path: Path, doc: dict, err) -> CaseFileError:
    """Turn a jsonschema error into a message naming the case and field."""
    where = list(err.absolute_path)
    case_name = None
    line = getattr(doc, "line", None)
    field_name = None
    node = doc
    if len(where) >= 2 and where[0] == "cases" and isinstance(where[1], int):
        node = doc["cases"][where[1]]
        case_name = node.get("name") if isinstance(node, dict) else None
        if case_name is None:
            case_name = f"#{where[1] + 1}"
        line = getattr(node, "line", line)
        if len(where) >= 3:
            field_name = ".".join(str(p) for p in where[2:])
            line = getattr(node, "key_lines", {}).get(where[2], line)
    elif where:
        field_name = ".".join(str(p) for p in where)
    message = err.message
    if err.validator == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        target = err.instance
        parts = []
        for name in extra:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"unknown field {name!r}{hint}")
            if isinstance(target, LineDict):
                line = target.key_lines.get(name, line)
        message = "; ".join(parts) + f"; allowed fields: {', '.join(allowed)}"
        field_name = ".".join(filter(None, [field_name, extra[0]]))
    elif err.validator == "required":
        missing = err.message.split(" is a required")[0]
        message = f"missing required field: {missing}"
        field_name = ".".join(filter(None, [field_name, missing.strip("'")]))
        if field_name.endswith("tolerance.reason"):
            message += (
                ": the error model already allows for rounding (docs/tolerances.md); "
                "say why this case needs more room, or remove the field"
            )
    elif err.validator in (
        "type", "enum", "const", "oneOf", "pattern", "minimum", "maximum", "minItems",
    ):  # fmt: skip
        shown = err.instance
        if err.validator == "oneOf" and err.context:  # name the bad item, not the whole list
            enums = [e for e in err.context if "enum" in e.schema]
            shown = max(enums, key=lambda e: len(e.path)).instance if enums else shown
        message = f"{_short(shown)} is not valid: {_expectation(err)}"
        types = err.schema.get("type", ())
        if err.validator == "type" and {"number", "integer"} & set(
            [types] if isinstance(types, str) else types
        ):
            message = text_number_message(err.instance) or message  # '1e-5': YAML's text
    return CaseFileError(path, message, case=case_name, field=field_name, line=line)


def _short(value: object, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters: a bad value may be a huge nested list."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "text", "number": "a number"}


def _expectation(err) -> str:
    s = err.schema
    if err.validator == "minItems":
        return f"expected at least {s['minItems']} item(s)"
    if err.validator == "pattern":
        return f"expected text matching {s['pattern']} (letters, digits, '_', '.', '-')"
    if err.validator == "minimum":
        return f"expected a number >= {s['minimum']}"
    if err.validator == "maximum":
        return f"expected a number <= {s['maximum']}"
    if err.validator == "oneOf":
        enums = [e for e in err.context if "enum" in e.schema]
        if enums:
            return _expectation(enums[0])
        return "expected " + (s.get("description") or "a value of another form")
    if "enum" in s:
        return "expected one of " + ", ".join(repr(v) for v in s["enum"])
    if "type" in s:
        if "description" in s:
            return "expected " + s["description"][0].lower() + s["description"][1:].rstrip(".")
        t: list[str] = s["type"] if isinstance(s["type"], list) else [s["type"]]
        return "expected " + " or ".join(_TYPE_WORDS.get(x, x) for x in t)
    return err.message


@dataclass
class LoadResult:
    cases: list[Case] = field(default_factory=list)
    errors: list[CaseFileError] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def load_file(path: Path, *, require_expected: bool = True) -> list[Case]:
    cases = frozen.read(path, builtin_suite(), require_expected=require_expected)
    if cases is not None:
        return cases
    key, cases = load_cache.get(path, require_expected)
    if cases is None:
        cases = _load_file(path, require_expected=require_expected)
        if key is not None:
            load_cache.put(key, cases)
    return cases


def _load_file(path: Path, *, require_expected: bool = True) -> list[Case]:
    cases, errors = check_file(path, require_expected=require_expected)
    if errors:
        raise errors[0]
    return cases


def check_file(
    path: Path, *, require_expected: bool = True
) -> tuple[list[Case], list[CaseFileError]]:
    """The cases of one file, and its errors in file order: the file's own (unreadable, not a
    mapping, a bad top-level field) or else the first error of each case. With an error the
    cases are of no use: a file loads whole or not at all."""
    try:
        doc = read_yaml(path)
    except CaseFileError as e:
        return [], [e]
    if doc is None:
        return [], [CaseFileError(path, "empty file: expected a mapping with a 'cases' list")]
    if not isinstance(doc, dict):
        hint = " (put the list under 'cases:')" if isinstance(doc, list) else ""
        return [], [
            CaseFileError(
                path,
                f"top level is a {type(doc).__name__}: expected a mapping with a 'cases' "
                f"list{hint}",
                line=1,
            )
        ]
    # by position; at one position an unknown field (with its did-you-mean) beats a missing
    # one, since a typo ('case:') usually causes both. The first error of each case, or of
    # each top-level field
    first: dict[tuple[str, ...], CaseFileError] = {}
    for err in sorted(
        _schema_errors(doc),
        key=lambda e: (list(map(str, e.absolute_path)), e.validator != "additionalProperties"),
    ):
        where = list(err.absolute_path)
        key = tuple(map(str, where[:2] if where[:1] == ["cases"] and len(where) > 1 else where[:1]))
        first.setdefault(key, _schema_error(path, doc, err))
    if any(len(key) < 2 for key in first):  # the file itself is wrong: its cases mean little
        return [], list(first.values())
    defaults = doc.get("defaults", {})
    cases: list[Case] = []
    errors: list[CaseFileError] = []
    for index, raw in enumerate(doc["cases"]):
        if ("cases", str(index)) in first:
            errors.append(first[("cases", str(index))])
            continue
        try:
            cases.append(build_case(path, raw, defaults, require_expected=require_expected))
        except CaseFileError as e:
            errors.append(e)
        except Exception as e:  # the safety net: a bug of ours, never a traceback or exit 1
            raise InternalError.during("loading the case", path, raw.get("name"), e) from e
    return ([] if errors else cases), errors


def load_paths(
    paths: list[Path] | None = None,
    *,
    keep_going: bool = False,
    require_expected: bool = True,
    every_error: bool = False,
) -> LoadResult:
    """Load every case under ``paths`` (default: the built-in suite); ids must be unique.

    The first problem raises a CaseFileError. With ``keep_going`` problems are collected in
    ``errors`` instead: one per invalid file or missing path, or with ``every_error`` (what
    ``validate`` shows) every error ``check_file`` finds in a file, and each duplicate id."""
    result = LoadResult()
    for given in paths or [builtin_suite()]:
        try:
            result.files += discover([given])
        except CaseFileError as e:  # a path that does not exist
            if not keep_going:
                raise
            result.errors.append(e)
    seen: dict[str, Path] = {}
    for path in result.files:
        errors: list[CaseFileError] = []
        try:
            if every_error and keep_going:
                cases, errors = load_file_checked(path, require_expected=require_expected)
            else:
                cases = load_file(path, require_expected=require_expected)
            for case in cases:
                if case.id in seen:
                    errors.append(
                        CaseFileError(
                            path,
                            f"duplicate case id {case.id!r}, also in {seen[case.id]}",
                            case=case.name,
                            line=case.line,
                        )
                    )
                else:
                    seen[case.id] = path
            if errors:
                raise errors[0]
        except CaseFileError as e:
            if not keep_going:
                raise
            result.errors += errors if every_error and errors else [e]
            continue
        result.cases.extend(cases)
    return result


def load_file_checked(
    path: Path, *, require_expected: bool = True
) -> tuple[list[Case], list[CaseFileError]]:
    """``check_file`` through the load cache: a valid file's cases, or every error in it."""
    cases = frozen.read(path, builtin_suite(), require_expected=require_expected)
    if cases is not None:
        return cases, []
    key, cases = load_cache.get(path, require_expected)
    if cases is not None:
        return cases, []
    cases, errors = check_file(path, require_expected=require_expected)
    if key is not None and not errors:
        load_cache.put(key, cases)
    return cases, errors
