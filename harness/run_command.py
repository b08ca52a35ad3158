"""The default command: load cases, resolve adapters, run, report, exit code."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from harness.cli import EXIT_OK, EXIT_USAGE, parse_paths
from harness.errors import UsageError
from harness.loader import load_paths
from harness.select import select

#: report extension -> module with write(path, document) (the document is the JSON report's)
REPORT_FORMATS = {
    ".json": "harness.report_json",
    ".md": "harness.report_markdown",
    ".xml": "harness.report_junit",
    ".html": "harness.report_html",
}


def check_report_paths(paths: list[str] | None) -> list[Path]:
    """Refuse unknown formats and unwritable places before anything runs."""
    out = []
    for text in paths or ():
        path = Path(text)
        if path.suffix not in REPORT_FORMATS:
            raise UsageError(
                f"--report {text}: unknown format {path.suffix or '(no extension)'!r}; "
                f"expected one of {', '.join(REPORT_FORMATS)}"
            )
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise UsageError(f"--report {text}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise UsageError(f"--report {text}: not writable")
        if path.is_dir():
            raise UsageError(f"--report {text}: is a folder; name a file in it")
        try:  # os.access says yes to root, and knows nothing of read-only mounts: try it
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UsageError(f"--report {text}: cannot write in {folder}: {e.strerror}") from None
        out.append(path)
    return out


def check_gate_files(args: argparse.Namespace) -> None:
    """Read --expectations and --baseline before anything runs: a bad file exits 2 at once."""
    if getattr(args, "expectations", None):
        from harness.expectations import load as load_expectations

        load_expectations(args.expectations)
    if getattr(args, "baseline", None):
        from harness.baseline import read_report

        read_report(args.baseline)
    factor = getattr(args, "growth_factor", None)
    if factor is not None and not factor > 1:
        raise UsageError(f"--growth-factor {factor}: must be > 1 (2 means twice the test ratio)")


def list_everything(cases, adapter_specs: list[str] | None) -> str:
    from harness.registry import BUILTIN, known_names

    rows = [[c.id, ",".join(c.dtypes), " ".join(c.tags), c.why] for c in cases]
    text = _plain_table(rows, ["case", "dtypes", "tags", "why"])
    adapter_rows = []
    for name in known_names():
        where = BUILTIN.get(name, "entry point")
        requires = _requirements(where)
        missing = [m for m in requires if importlib.util.find_spec(m) is None]
        status = "available" if not missing else f"not installed: {', '.join(missing)}"
        adapter_rows.append([name, where, status])
    text += "\n\n" + tabulate(
        adapter_rows, headers=["adapter", "from", "can load here"], tablefmt="simple"
    )
    text += f"\n\n{len(cases)} cases"
    return text


def _plain_table(rows: list[list[str]], headers: list[str]) -> str:
    """tabulate's 'simple' layout for text cells, without its per-cell type sniffing
    (a tenth of a second for the built-in suite, a quarter of --list's time)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _requirements(where: str) -> tuple[str, ...]:
    """Modules a built-in adapter needs, read from its class without importing a framework."""
    if ":" not in where:
        return ()
    module_name, _, attr = where.partition(":")
    module = importlib.import_module(module_name)
    return tuple(getattr(getattr(module, attr), "requires", ()))


@dataclass
class Plan:
    """What a run will do, settled before anything runs."""

    cases: list
    adapters: list
    report_paths: list[Path]
    specs: list[str] = field(default_factory=list)  # the --adapter SPECs, as adapters
    load_errors: list = field(default_factory=list)  # invalid case files (--keep-going)
    results: list = field(default_factory=list)  # filled by execute() as results arrive


def prepare(args: argparse.Namespace) -> Plan | None:
    """Check report paths, load and select cases, load adapters (None: --list was printed)."""
    report_paths = check_report_paths(args.reports)
    check_gate_files(args)
    keep_going = getattr(args, "keep_going", False)
    loaded = load_paths(parse_paths(args.cases), keep_going=keep_going)
    for err in loaded.errors:  # --keep-going: reported now, in the reports, and by exit 2
        print(f"lossconf: error: {err}", file=sys.stderr)
    cases = select(loaded.cases, args.keywords, args.dtypes)
    if not cases and loaded.errors:
        raise loaded.errors[0]
    if not cases:
        terms = " ".join(f"-k {k!r}" for k in args.keywords or ()) or "(no filter)"
        raise UsageError(f"no case selected from {len(loaded.cases)} loaded cases by {terms}")
    specs = args.adapters or ["numpy"]
    if args.list:
        print(list_everything(cases, specs))
        return None
    from harness.registry import load

    adapters = [load(s) for s in specs]
    names = [a.name for a in adapters]
    if len(set(names)) != len(names):
        raise UsageError(f"two adapters share a name: {names}; give each a distinct name")
    return Plan(cases, adapters, report_paths, specs=specs, load_errors=loaded.errors)


def execute(plan: Plan, args: argparse.Namespace) -> list:
    """Every case x adapter x dtype, in order."""
    from harness.progress import Progress
    from harness.runner import run

    total = sum(len(c.dtypes) for c in plan.cases) * len(plan.adapters)
    bar = Progress(total, enabled=None if not getattr(args, "quiet", False) else False)
    jobs = getattr(args, "jobs", None) or 1
    if jobs > 1 and len(plan.cases) > 1:
        from harness.parallel import run_parallel

        def keep(r) -> None:
            plan.results.append(r)
            bar.update(r.case_id)

        try:
            run_parallel(plan, args, jobs, on_result=keep)  # workers call execute() serially
            return plan.results
        finally:
            bar.close()
    pool = _isolation_pool(plan, args)
    try:
        for r in run(
            plan.cases,
            plan.adapters,
            on_result=lambda r: bar.update(r.case_id),
            timeout=getattr(args, "timeout", None),
            call=None if pool is None else pool.run_one,
        ):
            plan.results.append(r)  # kept as they come: an interrupt keeps them
        return plan.results
    finally:
        bar.close()
        if pool is not None:
            pool.close()


def _isolation_pool(plan: Plan, args: argparse.Namespace):
    """With --isolate, the started worker pool (harness.isolate); else None."""
    if not getattr(args, "isolate", False):
        if getattr(args, "memory_limit", None) is not None:
            raise UsageError("--memory-limit applies to worker processes: add --isolate")
        return None
    from harness.isolate import IsolatedPool, IsolationSettings, parse_memory_limit

    settings = IsolationSettings(memory_limit=parse_memory_limit(args.memory_limit))
    pool = IsolatedPool(plan.specs, plan.adapters, settings)
    pool.start()
    return pool


def finish(
    plan: Plan, results: list, args: argparse.Namespace, *, interrupted: int | None = None
) -> int:
    """Print the terminal report, write report files, return the exit code.

    ``interrupted``: the exit code of a run stopped by a signal (harness.interrupt); the
    reports then say ``complete: false``.
    """
    from harness import gate, report_terminal

    outcome, doc = gate.evaluate(plan, results, args)
    doc["complete"] = interrupted is None
    doc["load_errors"] = [
        {"file": e.path, "line": e.line, "case": e.case, "field": e.field, "message": e.detail}
        for e in plan.load_errors
    ]
    versions = {a.name: a.version() for a in plan.adapters}
    if not args.quiet:
        print(report_terminal.render(results, versions, verbose=args.verbose))
    else:
        bad = sum(not r.conforming for r in results)
        print(f"{len(results)} results, {bad} not conforming")
    if args.expectations or args.baseline:
        print(gate.render(outcome, results, doc, verbose=args.verbose))
        gate.warn_unused(outcome, args.expectations)
    elif args.verbose and outcome.blocking:
        print("\n" + gate.render_repros(outcome, results, doc))
    for path in plan.report_paths:
        importlib.import_module(REPORT_FORMATS[path.suffix]).write(path, doc)
        print(f"wrote {path}", file=sys.stderr)
    if interrupted is not None:
        total = sum(len(c.dtypes) for c in plan.cases) * len(plan.adapters)
        print(
            f"lossconf: interrupted after {len(results)} of {total} results; "
            "the reports are marked incomplete",
            file=sys.stderr,
        )
        return interrupted
    if plan.load_errors:
        print(
            f"lossconf: error: {len(plan.load_errors)} invalid case file(s), listed above; "
            "their cases did not run",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return outcome.exit_code


def run_command(args: argparse.Namespace) -> int:
    plan = prepare(args)
    if plan is None:
        return EXIT_OK
    from harness import interrupt

    try:
        with interrupt.signals_stop_the_run():
            execute(plan, args)
    except KeyboardInterrupt as e:
        return finish(plan, plan.results, args, interrupted=interrupt.exit_code(e))
    return finish(plan, plan.results, args)
