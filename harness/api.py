"""The public functions of ``harness``: load cases and adapters, run, report, in Python.

Everything here is re-exported by ``harness`` itself; import it from there::

    import harness

    cases = harness.load_cases("cases/numerics.yaml")
    results = harness.run(cases, ["numpy", my_adapter])
    assert all(r.conforming for r in results), harness.summary(results)

A ``run`` is what ``python -m harness`` does without the reports and the gate;
``main`` is the command line itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.adapters import Adapter
from harness.cases.loader import builtin_suite, load_paths
from harness.cases.model import Case
from harness.cli.main import main as _cli_main
from harness.errors import UsageError
from harness.execution import registry, runner
from harness.execution.config import RunConfig
from harness.execution.results import Result
from harness.execution.vocab_parallel import VocabParallelPool
from harness.reports.terminal import render

PathLike = str | Path


def load_cases(paths: PathLike | Sequence[PathLike] | None = None) -> list[Case]:
    """The cases in a case file, a folder of them, or a list of both (None: the built-in
    suite). Raises ``CaseFileError`` naming file, line, case and field on invalid input."""
    if paths is None:
        return load_paths(None).cases
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return load_paths([Path(p) for p in paths]).cases


def load_suite() -> list[Case]:
    """The built-in suite (the ``cases/`` folder, installed as ``harness.suite``)."""
    return load_cases(None)


def load_adapter(spec: str) -> Adapter:
    """An adapter by the ``--adapter`` SPEC: a built-in name (``numpy``, ``torch``, ``jax``,
    ``optax``), an entry point of ``lossconf.adapters``, ``path/to/file.py[:attr]`` or
    ``package.module[:attr]``, with options as ``NAME@key=value``."""
    return registry.load(spec)


def run(
    cases: Iterable[Case],
    adapters: Adapter | str | Sequence[Adapter | str],
    *,
    timeout: float | None = None,
    world_size: int | None = None,
) -> list[Result]:
    """Every case x adapter x dtype (each case's dtypes), in that order. ``adapters``: Adapter
    objects or SPECs. A result's ``conforming`` says whether it passes the gate.

    ``world_size``: a vocab-parallel run over that many rank processes (``--world-size``);
    each rank loads the adapter again, from its SPEC or, for an Adapter object, from its
    class (``module:Class``, which must be importable)."""
    if isinstance(adapters, (Adapter, str)):
        adapters = [adapters]
    loaded = [a if isinstance(a, Adapter) else registry.load(a) for a in adapters]
    if world_size is None:
        return list(runner.run(list(cases), loaded, timeout=timeout))
    RunConfig(world_size=world_size)  # the same checks as --world-size
    specs = [a if isinstance(a, str) else _class_spec(a) for a in adapters]
    with VocabParallelPool(specs, loaded, world_size, timeout) as pool:
        return list(runner.run(list(cases), loaded, timeout=timeout, call=pool.run_one))


def _class_spec(adapter: Adapter) -> str:
    """``module:Class`` of an Adapter object, for processes that load it again."""
    cls = type(adapter)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise UsageError(
            f"world_size: adapter {adapter.name!r} ({cls.__qualname__} in {cls.__module__}) "
            "cannot be loaded again by the rank processes: pass its SPEC, or define it in an "
            "importable module"
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def run_case(case: Case, adapter: Adapter | str, dtype: str) -> Result:
    """One case through one adapter in one dtype."""
    loaded = adapter if isinstance(adapter, Adapter) else registry.load(adapter)
    return runner.run_one(case, loaded, dtype)


def summary(results: list[Result], *, verbose: bool = False) -> str:
    """The terminal report of ``results``: the table ``python -m harness`` prints."""
    adapters = {r.adapter for r in results}
    return render(results, {a: "" for a in adapters}, verbose=verbose)


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m harness``); returns the exit code."""
    return _cli_main(argv)


__all__ = [
    "builtin_suite", "load_adapter", "load_cases", "load_suite", "main", "run", "run_case",
    "summary",
]  # fmt: skip
