"""The package's layers: each imports only the layers below it, and no module imports itself
back through others (no import cycles).

import-linter does this job for ordinary layouts; here ``harness.adapters`` is installed
from the top-level ``adapters/`` folder (see ``pyproject.toml``), which import-linter's
file-system scan of ``harness/`` cannot see. So the graph is built from the source:
every ``import`` statement, function-level ones included; imports under
``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: package -> folder of its source (the mapping of pyproject.toml's package-dir)
ROOTS = {"harness": REPO / "harness", "harness.adapters": REPO / "adapters"}

#: top to bottom; names on one line are independent siblings (neither imports the other)
LAYERS: list[tuple[str, ...]] = [
    ("harness.pytest_plugin", "harness.api"),
    ("harness.cli",),
    ("harness.gate", "harness.fuzz"),
    ("harness.reports",),
    ("harness.execution",),
    ("harness.cases",),
    ("harness.oracle",),
    ("harness.adapters",),
    (
        "harness.dtypes",
        "harness.atomic",
        "harness.errors",
        "harness.cache_folder",
        "harness.cache_prune",
        "harness.adapter_names",
        "harness.openmp",
        "harness.cores",
    ),
    ("harness.exit_codes", "harness.version", "harness.dtype_names", "harness.source_revision"),
]
#: modules outside the layers: the public facade on top and the entry point
ABOVE_ALL = ("harness", "harness.__main__")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "harness" and name.startswith("harness.adapters"):
                continue
            out[name] = path
    return out


MODULES = _modules()


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run: not those under ``if TYPE_CHECKING:``. Imports are
    statements, so only statement lists are walked (bodies, branches, handlers, match
    cases), not the expressions in them: a tenth of the nodes."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for child in statements:
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child.orelse)
            else:
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(child, field, []))
                for part in [*getattr(child, "handlers", []), *getattr(child, "cases", [])]:
                    visit(part.body)

    visit(tree.body)
    return found


@functools.cache
def _tree(module: str) -> ast.Module:
    """The parsed source of ``module``, parsed once for every test here."""
    return ast.parse(MODULES[module].read_text(encoding="utf-8"))


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The lossconf modules an import statement loads (``from pkg import submodule`` counts
    as the submodule)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [n for n in names if n in MODULES]


@functools.cache
def _graph() -> dict[str, set[str]]:
    """Each module's imports of lossconf modules; built on first use, not at collection, so
    only the pytest-xdist worker that runs these tests pays for parsing every module."""
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        imports = _runtime_imports(_tree(name))
        graph[name] = {t for node in imports for t in _resolve(name, node)} - {name}
    return graph


def _layer_of(module: str) -> tuple[int, str] | None:
    for depth, siblings in enumerate(LAYERS):
        for top in siblings:
            if module == top or module.startswith(top + "."):
                return depth, top
    return None


def test_every_module_has_a_layer():
    loose = [m for m in MODULES if m not in ABOVE_ALL and _layer_of(m) is None]
    assert not loose, f"modules in no layer (add them to LAYERS): {loose}"


def test_layers_import_only_downward():
    wrong = []
    for module, targets in _graph().items():
        here = _layer_of(module)
        if here is None:
            continue
        for target in targets:
            there = _layer_of(target)
            if there is None:  # the facade: nothing below may import it
                wrong.append(f"{module} imports {target}, which sits above every layer")
            elif there[0] < here[0] or (there[0] == here[0] and there[1] != here[1]):
                wrong.append(f"{module} ({here[1]}) imports {target} ({there[1]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    """Tarjan's strongly connected components; a component of two or more is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in _graph()[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in _graph():
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


_REASON = re.compile(r"#|lazily|imported (when|here|on|by)|off (the )?start-up|optional")


def test_function_level_imports_of_lossconf_say_why():
    """A function-level import of our own code needs a reason (a slow or optional library
    behind it, or start-up time), written next to it."""
    silent = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in _runtime_imports(_tree(module)):
            if node.col_offset == 0 or not _resolve(module, node):
                continue
            near = " ".join(lines[max(0, node.lineno - 4) : node.lineno + 1])
            if not _REASON.search(near):
                silent.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not silent, "function-level imports without a reason nearby:\n" + "\n".join(silent)


@pytest.mark.parametrize("name", ["harness.cases", "harness.oracle", "harness.execution"])
def test_the_graph_sees_real_imports(name):
    """The checks above are only as good as the graph: it must hold the known edges."""
    assert any(t.startswith("harness.") for t in _graph()[f"{name}.{_a_module(name)}"])


def _a_module(package: str) -> str:
    return {"harness.cases": "model", "harness.oracle": "fast", "harness.execution": "runner"}[
        package
    ]
