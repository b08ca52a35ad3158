"""The default command: check the inputs, run the plan, report, and return the exit code."""

from __future__ import annotations

import sys

from harness.cli import listing
from harness.execution import interrupt, prefetch
from harness.execution.config import RunConfig
from harness.execution.results import CONFORMING, Result
from harness.execution.session import Plan, execute, prepare, select_cases
from harness.exit_codes import ExitCode
from harness.gate import render, verdict
from harness.reports import files, terminal


def check_inputs(config: RunConfig) -> verdict.GateInputs:
    """Report paths, --expectations and --baseline, checked before anything runs (exit 2);
    the files read, for the verdict (read once: the contents checked are those used)."""
    files.check_paths(config.reports)
    return verdict.read_inputs(config)


def finish(
    plan: Plan,
    results: list[Result],
    config: RunConfig,
    *,
    interrupted: int | None = None,
    inputs: verdict.GateInputs | None = None,
) -> int:
    """Print the terminal report, write report files, return the exit code.

    ``interrupted``: the exit code of a run stopped by a signal (harness.execution.interrupt); the
    reports then say ``complete: false``. The JSON's ``gate.exit_code`` is the exit code
    returned (130 for an interrupted run, 2 for invalid case files), not only the verdict's.
    ``inputs``: the expectations and baseline ``check_inputs`` read (else read now).
    """
    outcome, doc = verdict.evaluate(plan, results, config, inputs)
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
        under = ""
        if any(r.semantics != "torch" for r in results):  # the verdict under torch's, beside
            n_torch = sum(r.status_under_torch not in CONFORMING for r in results)
            under = f" ({n_torch} under PyTorch's semantics)"
        print(f"{len(results)} results, {bad} not conforming{under}")
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
    inputs = check_inputs(config)
    selection = select_cases(config)
    for err in selection.load_errors:  # --keep-going: reported now, in the reports, and by exit 2
        print(f"lossconf: error: {err}", file=sys.stderr)
    if config.list_only:
        if config.list_format == "json":
            print(listing.as_json(selection.cases, selection.load_errors))
        else:
            print(listing.as_table(selection.cases, verbose=config.verbose))
        return ExitCode.OK
    # forked before the adapters load their frameworks (harness.execution.prefetch)
    stopped = None
    with prefetch.helping(selection.cases, config) as helper:
        plan = prepare(config, selection)
        if helper is not None:  # cases whose values the helper computes go last
            plan.deferred = helper.case_ids
            plan.ready = helper.ready
        try:
            with interrupt.signals_stop_the_run():
                execute(plan, config)
        except KeyboardInterrupt as e:
            stopped = interrupt.exit_code(e)
    return finish(plan, plan.results, config, interrupted=stopped, inputs=inputs)
