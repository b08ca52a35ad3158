"""``python -m harness diff OLD.json NEW.json``: what changed between two reports (exit 1 on a regression)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli import program
from harness.errors import UsageError
from harness.exit_codes import ExitCode
from harness.gate.baseline import DEFAULT_GROWTH, compare, read_report, render


def main(argv: list[str]) -> int:
    """``python -m harness diff OLD.json NEW.json``: exit 1 on a regression."""
    p = argparse.ArgumentParser(
        prog=program.name("diff"),
        description="Compare two JSON reports: newly failing, newly passing, error growth. "
        "Exit 0 when nothing regressed, 1 on a new failure or error growth, 2 on bad input.",
    )
    p.add_argument("old", type=Path, help="the earlier report (e.g. reports/baselines/torch.json)")
    p.add_argument("new", type=Path, help="the later report")
    p.add_argument(
        "--growth-factor",
        type=float,
        default=DEFAULT_GROWTH,
        metavar="X",
        help="growth of the test ratio (error / allowed) that counts as a regression, "
        f"measured from at least a third of the limit (default {DEFAULT_GROWTH:g})",
    )
    args = p.parse_args(argv)
    if not args.growth_factor > 1:
        raise UsageError(f"--growth-factor {args.growth_factor}: must be > 1")
    comparison = compare(read_report(args.old), read_report(args.new), factor=args.growth_factor)
    print(render(comparison, str(args.old)))
    sys.stdout.flush()
    return ExitCode.NONCONFORMING if comparison.regressed else ExitCode.OK
