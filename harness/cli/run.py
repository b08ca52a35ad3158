"""The default command: check the inputs, run the plan, report, and return the exit code."""

from __future__ import annotations

import importlib.util
import sys

from tabulate import tabulate

from harness.cases.model import Case
from harness.execution import interrupt, registry
from harness.execution.config import RunConfig
from harness.execution.results import Result
from harness.execution.session import Plan, execute, prepare, select_cases
from harness.exit_codes import ExitCode
from harness.gate import expectations as expectations_file
from harness.gate import render, verdict
from harness.gate.baseline import read_report
from harness.reports import files, terminal


def check_inputs(config: RunConfig) -> None:
    """Report paths, --expectations and --baseline, checked before anything runs (exit 2)."""
    files.check_paths(config.reports)
    if config.expectations is not None:
        expectations_file.load(config.expectations)
    if config.baseline is not None:
        read_report(config.baseline)


def list_everything(cases: list[Case]) -> str:
    """The selected cases, and every known adapter with whether it can load here."""
    rows = [[c.id, ",".join(c.dtypes), " ".join(c.tags), c.why] for c in cases]
    text = _plain_table(rows, ["case", "dtypes", "tags", "why"])
    adapter_rows = []
    for name in registry.known_names():
        where = registry.BUILTIN.get(name, "entry point")
        missing = [m for m in registry.requirements(name) if importlib.util.find_spec(m) is None]
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


def finish(
    plan: Plan, results: list[Result], config: RunConfig, *, interrupted: int | None = None
) -> int:
    """Print the terminal report, write report files, return the exit code.

    ``interrupted``: the exit code of a run stopped by a signal (harness.execution.interrupt); the
    reports then say ``complete: false``. The JSON's ``gate.exit_code`` is the exit code
    returned (130 for an interrupted run, 2 for invalid case files), not only the verdict's.
    """
    outcome, doc = verdict.evaluate(plan, results, config)
    if interrupted is not None:
        code = interrupted
    else:
        code = ExitCode.USAGE if plan.load_errors else outcome.exit_code
    doc["complete"] = interrupted is None
    doc["planned_results"] = plan.total
    doc["gate"]["exit_code"] = int(code)
    doc["load_errors"] = [
        {"file": e.path, "line": e.line, "case": e.case, "field": e.field, "message": e.detail}
        for e in plan.load_errors
    ]
    versions = {a.name: a.version() for a in plan.adapters}
    if not config.quiet:
        print(terminal.render(results, versions, verbose=config.verbose))
    else:
        bad = sum(not r.conforming for r in results)
        print(f"{len(results)} results, {bad} not conforming")
    if config.expectations or config.baseline:
        print(render.gate(outcome, results, doc, verbose=config.verbose))
        if interrupted is None:  # cases that did not run match nothing: no warning for them
            render.warn_unused(outcome, config.expectations)
    elif config.verbose and outcome.blocking:
        print("\n" + render.repros(outcome, results, doc))
    for path in config.reports:
        files.write(path, doc)
        print(f"wrote {path}", file=sys.stderr)
    if interrupted is not None:
        print(
            f"lossconf: interrupted after {len(results)} of {plan.total} results; "
            "the reports are marked incomplete",
            file=sys.stderr,
        )
    elif plan.load_errors:
        print(
            f"lossconf: error: {len(plan.load_errors)} invalid case file(s), listed above; "
            "their cases did not run",
            file=sys.stderr,
        )
    return code


def run_command(config: RunConfig) -> int:
    """``python -m harness [run options]``: the whole run, with its exit code."""
    check_inputs(config)
    selection = select_cases(config)
    for err in selection.load_errors:  # --keep-going: reported now, in the reports, and by exit 2
        print(f"lossconf: error: {err}", file=sys.stderr)
    if config.list_only:
        print(list_everything(selection.cases))
        return ExitCode.OK
    plan = prepare(config, selection)
    try:
        with interrupt.signals_stop_the_run():
            execute(plan, config)
    except KeyboardInterrupt as e:
        return finish(plan, plan.results, config, interrupted=interrupt.exit_code(e))
    return finish(plan, plan.results, config)
