"""Writing case files: numbers that YAML reads back exactly, expected values, fingerprints.

Used by ``python -m harness regen`` (rewrite the ``expected:`` entries of case
files), by the fuzzer (write found failures as cases) and by the corpus tools.
Only the ``expected:`` entry of each case is rewritten (or added at the end of
the case); comments and the rest of the file stay as they are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import SupportsFloat

import numpy as np
import yaml

from harness.cases.generate import build, fingerprint
from harness.cases.loader import SafeYamlLoader, load_file
from harness.cases.model import Case
from harness.errors import CaseFileError
from harness.oracle import cross_entropy


def format_number(v: SupportsFloat) -> str:
    """A float as YAML 1.1 reads it back exactly (PyYAML needs a dot in 1.0e-05)."""
    v = float(v)
    if np.isnan(v):
        return ".nan"
    if np.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    s = repr(v)
    if "e" in s:
        mantissa, exp = s.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        if exp[0] not in "+-":
            exp = "+" + exp
        s = f"{mantissa}e{exp}"
    return s


def format_array(a: np.ndarray) -> str:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return format_number(a)
    return "[" + ", ".join(format_array(x) for x in a) + "]"


#: a dtype's expected (loss, grad, z_loss): z_loss None unless the case returns it
Values = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


def compute(case: Case) -> dict[str, Values]:
    """The oracle's values of each dtype of ``case``. Dtypes whose cast inputs are the same
    values (inputs exact in each, as the generated grids' are) share one oracle call: its
    result depends on the problem only."""
    out = {}
    done: dict[bytes, Values] = {}
    for dtype in case.dtypes:
        problem = case.problem(dtype)
        key = problem.digest()
        if key not in done:
            r = cross_entropy(problem)
            done[key] = (r.loss, r.grad, r.z_loss)
        out[dtype] = done[key]
    return out


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def render_expected(values: dict[str, Values], indent: int) -> str:
    pad = " " * (indent + 2)
    items = list(values.items())
    first = items[0][1]
    shared = all(all(_same(a, b) for a, b in zip(v, first, strict=True)) for _, v in items)
    if shared:
        loss, grad, z_loss = first
        lines = [f"{pad}loss: {format_array(loss)}"]
        if grad is not None:
            lines.append(f"{pad}grad: {format_array(grad)}")
        if z_loss is not None:
            lines.append(f"{pad}z_loss: {format_array(z_loss)}")
    else:
        lines = []
        for dtype, (loss, grad, z_loss) in items:
            body = f"loss: {format_array(loss)}"
            if grad is not None:
                body += f", grad: {format_array(grad)}"
            if z_loss is not None:
                body += f", z_loss: {format_array(z_loss)}"
            lines.append(f"{pad}{dtype}: {{{body}}}")
    return "expected:\n" + "\n".join(lines)


def _last_end(node: yaml.Node) -> int:
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _last_end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _last_end(node.value[-1])
    return node.end_mark.index


def stored_differs(case: Case, values: dict) -> bool:
    if case.expected is None:
        return True
    for dtype, (loss, grad, z_loss) in values.items():
        exp = case.expected.get(dtype)
        if exp is None or not all(
            _same(a, b) for a, b in ((exp.loss, loss), (exp.grad, grad), (exp.z_loss, z_loss))
        ):
            return True
    return False


_FILL = re.compile(r"\{generate:[^{}]*sha256: FILL[^{}]*\}")


def fill_fingerprints(path: Path) -> int:
    """Replace ``sha256: FILL`` in each one-line recipe of ``path``; returns how many were filled."""
    text = path.read_text(encoding="utf-8")
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        spec = yaml.safe_load(match.group(0).replace("sha256: FILL", "sha256: null"))
        spec.pop("sha256")
        count += 1
        return match.group(0).replace("sha256: FILL", f'sha256: "{fingerprint(build(spec))}"')

    new = _FILL.sub(replace, text)
    if count:
        path.write_text(new, encoding="utf-8")
    return count


def _stale_ids(path: Path) -> list[str] | None:
    """With ``check``: the ids of the cases of ``path`` whose stored values differ from the
    oracle's, from the loaded file alone; None when a case has no ``expected`` entry. A load
    that requires every case's values leaves ``expected`` None only for ``expected: oracle``
    and ``expect_error`` cases, the ones regen leaves alone: no YAML node positions (the
    composed document, a third of a check's time) are needed to tell them apart."""
    try:
        cases = load_file(path)
    except CaseFileError:
        return None  # a case without values, or an error that the full path reports
    return [
        c.id
        for c in cases
        if c.expect_error is None and c.expected is not None and stored_differs(c, compute(c))
    ]


def regen_file(path: Path, *, check: bool) -> list[str]:
    """Rewrite (or with ``check`` only compare) one file; returns the ids that changed."""
    if check:
        stale = _stale_ids(path)
        if stale is not None:
            return stale
    else:
        fill_fingerprints(path)
    cases = {c.name: c for c in load_file(path, require_expected=False)}
    text = path.read_text(encoding="utf-8")
    root = yaml.compose(text, Loader=SafeYamlLoader)
    assert root is not None  # load_file read the same text: a mapping with cases
    cases_node = next(v for k, v in root.value if k.value == "cases")
    edits: list[tuple[int, int, str]] = []
    changed = []
    for node in cases_node.value:
        keys = {k.value: (k, v) for k, v in node.value}
        case = cases[keys["name"][1].value]
        if case.expect_error is not None or (
            "expected" in keys and keys["expected"][1].value == "oracle"
        ):
            continue
        values = compute(case)
        if not stored_differs(case, values):
            continue
        changed.append(case.id)
        if node.flow_style:
            raise CaseFileError(path, "regen needs block-style cases, not {...}", case=case.name)
        indent = node.value[0][0].start_mark.column
        block = render_expected(values, indent)
        if "expected" in keys:
            k, v = keys["expected"]
            edits.append((k.start_mark.index, _last_end(v), block))
        else:
            end = _last_end(node.value[-1][1])
            edits.append((end, end, "\n" + " " * indent + block))
    if changed and not check:
        for start, end, new in sorted(edits, reverse=True):
            text = text[:start] + new + text[end:]
        path.write_text(text, encoding="utf-8")
        load_file(path)  # the rewritten file must load
    return changed


def flow(value: object) -> str:
    """A field value as one line of YAML flow: ints stay ints, floats as format_number writes them."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_number(float(value))
    text = str(value)
    return text if text.isidentifier() else json.dumps(text)
