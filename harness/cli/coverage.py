"""``python -m harness coverage [PATH...]``: which parameter values and pairs the cases cover."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cases import coverage
from harness.cases.loader import load_paths
from harness.cli import program
from harness.exit_codes import ExitCode


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog=program.name("coverage"), description=(coverage.__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("paths", nargs="*", help="case files or folders (default: the built-in suite)")
    args = p.parse_args(argv)
    cases = load_paths([Path(x) for x in args.paths] or None).cases
    print(coverage.render(cases))
    return ExitCode.OK
