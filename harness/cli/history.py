"""``python -m harness history REPORT...|FOLDER [--plot out.png]``: accuracy across versions."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli import program
from harness.errors import UsageError
from harness.exit_codes import ExitCode
from harness.gate.history import load_runs, plot, render, table


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog=program.name("history"),
        description="Pass counts and worst errors per case group across reports, ordered by "
        "the wrapped library's version; '!' marks a regression. Exit 1 when one is marked.",
    )
    p.add_argument("reports", nargs="+", type=Path, help="JSON reports or folders of them")
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="also draw the history")
    args = p.parse_args(argv)
    runs = load_runs(args.reports)
    print(render(runs))
    if args.plot:
        try:
            plot(runs, args.plot)
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'lossconf[html]'") from None
        print(f"wrote {args.plot}")
    _, rows = table(runs)
    regressed = any(cell.endswith(" !") for row in rows for cell in row)
    return ExitCode.NONCONFORMING if regressed else ExitCode.OK
