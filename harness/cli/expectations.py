"""``python -m harness expectations update FILE``: write expectation entries from a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from harness.atomic import write_atomic
from harness.cli import program
from harness.cli.options import add_run_options, config_from
from harness.errors import UsageError
from harness.execution.session import execute, prepare
from harness.exit_codes import ExitCode
from harness.gate import expectations, verdict
from harness.gate.baseline import read_report


def update_main(argv: list[str]) -> int:
    """``expectations update FILE --from-report REPORT.json``, or run the suite with run options."""
    p = argparse.ArgumentParser(
        prog=program.name("expectations update"),
        description="Add an entry (case: ID, one exact case id) for every non-conforming result "
        "not yet expected, and drop entries of the selected cases and adapters that no longer "
        "match anything. Without --from-report the suite is run with the given run options.",
    )
    p.add_argument("file", type=Path, help="expectations file to write (created if missing)")
    p.add_argument("--from-report", type=Path, metavar="REPORT.json", help="read results here")
    p.add_argument("--keep-unused", action="store_true", help="keep entries that match nothing")
    add_run_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    doc = read_report(args.from_report) if args.from_report else _run_for_update(args)
    existing = expectations.load(args.file).entries if args.file.exists() else []
    used = expectations.lines_used(existing, doc)
    selected, ran = expectations.selection_of(doc)
    # an entry for cases or adapters this run left out is not known to be unused: kept
    kept = [
        e for e in existing if args.keep_unused or e.line in used or not e.selected(selected, ran)
    ]
    adapters = {a["name"]: a for a in doc["adapters"]}
    expected_ids = expectations.covered(kept, doc)
    new = expectations.entries_from_results(
        (r for i, r in enumerate(doc["results"]) if i not in expected_ids), adapters
    )
    out = [{k: v for k, v in e.raw.items()} for e in kept] + new
    header = (
        "# Known non-conformities for lossconf --expectations (see harness/gate/expectations.py).\n"
        "# Entries written by 'expectations update' carry a TODO reason: replace it.\n"
    )
    write_atomic(
        args.file, header + yaml.safe_dump({"expectations": out}, sort_keys=False, width=100)
    )
    dropped = len(existing) - len(kept)
    print(
        f"{args.file}: {len(kept)} entries kept, {len(new)} added, {dropped} unused removed",
        file=sys.stderr,
    )
    return ExitCode.OK


def _run_for_update(args: argparse.Namespace) -> dict:
    """Run the suite as the run options say, without reports or gate files; its document."""
    config = config_from(args, reports=(), expectations=None, baseline=None)
    plan = prepare(config)
    results = execute(plan, config)
    return verdict.document(plan, results, config)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"usage: {program.name('expectations')} update FILE [--from-report REPORT.json] "
            "[run options]\n\nWrite expectation entries from a run (see --help of 'update')."
        )
        return ExitCode.OK if argv else ExitCode.USAGE
    if argv[0] != "update":
        raise UsageError(f"expectations: unknown action {argv[0]!r}; expected 'update'")
    return update_main(argv[1:])
