"""``python -m harness --list``: the selected cases and the known adapters, as a table or JSON.

The table fits ``WIDTH`` columns: each id whole (it is what ``--case`` takes), the dtypes
short, the ``why`` cut to the room left; an id too long for its column has the rest of its
row on the next line; a built-in adapter is "built-in". ``-v`` gives whole lines, the tags
and the adapters' modules; ``--format json`` every field.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence

from tabulate import tabulate

from harness.cases.model import Case
from harness.errors import CaseFileError
from harness.execution import registry

WIDTH = 100
#: the id column's width at most; a longer id spills its row onto the next line
ID_COLUMN = 56
SHORT_DTYPES = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def adapters() -> list[dict[str, object]]:
    """Every known adapter: where it comes from, whether it can load here, what to install."""
    out: list[dict[str, object]] = []
    for name in registry.known_names():
        missing = [m for m in registry.requirements(name) if importlib.util.find_spec(m) is None]
        install = registry.install_command(missing[0]) if missing else None
        out.append(
            {
                "name": name,
                "from": registry.BUILTIN.get(name, "entry point"),
                "available": not missing,
                "missing": missing,
                "install": install,
            }
        )
    return out


def as_json(cases: list[Case], load_errors: Sequence[CaseFileError] = ()) -> str:
    """The listing as a JSON document: ``cases``, ``adapters``, ``count``, ``load_errors``."""
    doc = {
        "cases": [
            {
                "id": c.id,
                "name": c.name,
                "file": str(c.file),
                "line": c.line,
                "dtypes": list(c.dtypes),
                "tags": list(c.tags),
                "why": c.why,
            }
            for c in cases
        ],
        "adapters": adapters(),
        "count": len(cases),
        "load_errors": [
            {"file": e.path, "line": e.line, "case": e.case, "field": e.field, "message": e.detail}
            for e in load_errors
        ],
    }
    return json.dumps(doc, indent=1)


def as_table(cases: list[Case], *, verbose: bool = False, width: int = WIDTH) -> str:
    """The selected cases, then the adapters; within ``width`` columns unless ``verbose``."""
    if verbose:
        rows = [[c.id, ",".join(c.dtypes), " ".join(c.tags), c.why] for c in cases]
        text = _plain_table(rows, ["case", "dtypes", "tags", "why"])
    else:
        text = _fitted_table(cases, width)
    adapter_rows = []
    for a in adapters():
        missing = ", ".join(a["missing"])  # type: ignore[arg-type]
        status = "available" if a["available"] else f"not installed: {missing}"
        if a["install"]:
            status += f" ({a['install']})"
        where = a["from"] if verbose or a["name"] not in registry.BUILTIN else "built-in"
        adapter_rows.append([a["name"], where, status])
    text += "\n\n" + tabulate(
        adapter_rows, headers=["adapter", "from", "can load here"], tablefmt="simple"
    )
    return text + f"\n\n{len(cases)} cases"


def _fitted_table(cases: list[Case], width: int) -> str:
    dtypes = [" ".join(SHORT_DTYPES.get(d, d) for d in c.dtypes) for c in cases]
    id_width = min(max([4] + [len(c.id) for c in cases]), ID_COLUMN)
    dtype_width = max([6] + [len(d) for d in dtypes])
    why_width = max(width - id_width - dtype_width - 4, 10)
    indent = " " * (id_width + 2)

    def row(first: str, second: str, third: str) -> list[str]:
        rest = f"{second.ljust(dtype_width)}  {_cut(third, why_width)}".rstrip()
        if len(first) > id_width:
            return [first, indent + rest]
        return [f"{first.ljust(id_width)}  {rest}"]

    lines = row("case", "dtypes", "why")
    lines.append(f"{'-' * id_width}  {'-' * dtype_width}  {'-' * why_width}")
    for case, short in zip(cases, dtypes, strict=True):
        lines += row(case.id, short, case.why)
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _plain_table(rows: list[list[str]], headers: list[str]) -> str:
    """tabulate's 'simple' layout for text cells, without its per-cell type sniffing
    (a tenth of a second for the built-in suite, a quarter of --list's time)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
