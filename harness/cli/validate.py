"""``python -m harness validate PATH...``: check case files without running them (exit 2 if invalid)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cases.loader import load_paths
from harness.exit_codes import ExitCode


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m harness validate", description=__doc__)
    p.add_argument("paths", nargs="*", help="case files or folders (default: the built-in suite)")
    args = p.parse_args(argv)
    result = load_paths([Path(x) for x in args.paths] or None, keep_going=True)
    for err in result.errors:
        print(f"lossconf: error: {err}", file=sys.stderr)
    n_files = len(result.files)
    if result.errors:
        print(f"{len(result.errors)} invalid of {n_files} files", file=sys.stderr)
        return ExitCode.USAGE
    print(f"{n_files} files, {len(result.cases)} cases: valid")
    return ExitCode.OK
