"""``python -m harness scoreboard DIR|REPORT... [--format F] [-o OUT.md|OUT.html|OUT.txt]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.atomic import write_atomic
from harness.cli import program
from harness.errors import UsageError
from harness.exit_codes import ExitCode
from harness.gate.scoreboard import RENDERERS, SUFFIXES, load_runs, nonconforming


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog=program.name("scoreboard"),
        description="One table of conformance per feature group for each framework and "
        "version in the reports (nox -s scoreboard writes them into reports/scoreboard/), "
        "under PyTorch's semantics and under the adapter's own dialect. Exit 2 when there "
        "is no report or one cannot be read; 0 otherwise.",
    )
    p.add_argument("reports", nargs="+", type=Path, help="JSON reports or folders of them")
    p.add_argument(
        "--format",
        choices=tuple(RENDERERS),
        default="terminal",
        help="what to print (default: terminal)",
    )
    p.add_argument(
        "-o",
        "--output",
        action="append",
        default=[],
        type=Path,
        metavar="OUT",
        help="also write the table to OUT, rendered by its suffix: "
        f"{', '.join(SUFFIXES)} (repeatable)",
    )
    p.add_argument(
        "--cases",
        action="store_true",
        help="also list every non-conforming result (framework, semantics, case, dtype)",
    )
    args = p.parse_args(argv)
    for out in args.output:
        if out.suffix.lower() not in SUFFIXES:
            raise UsageError(
                f"scoreboard: --output {out}: suffix {out.suffix!r} must be one of "
                f"{', '.join(SUFFIXES)}"
            )
        if not out.parent.is_dir():
            raise UsageError(f"scoreboard: --output {out}: no folder {out.parent}")
    runs = load_runs(args.reports)
    print(RENDERERS[args.format](runs))
    if args.cases:
        from tabulate import tabulate

        listed = nonconforming(runs)
        print(f"\nNon-conforming results ({len(listed)}):")
        if listed:
            print(
                tabulate(
                    listed,
                    headers=["framework", "version", "semantics", "case", "dtype", "status"],
                    disable_numparse=True,
                )
            )
    for out in args.output:
        write_atomic(out, RENDERERS[SUFFIXES[out.suffix.lower()]](runs) + "\n")
        print(f"wrote {out}")
    return ExitCode.OK
