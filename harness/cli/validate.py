"""``python -m harness validate PATH...``: check case files without running them (exit 2 if invalid)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cases.loader import load_paths
from harness.cli import program
from harness.errors import CaseFileError
from harness.exit_codes import ExitCode


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=program.name("validate"), description=__doc__)
    p.add_argument("paths", nargs="*", help="case files or folders (default: the built-in suite)")
    args = p.parse_args(argv)
    result = load_paths([Path(x) for x in args.paths] or None, keep_going=True, every_error=True)
    for err in result.errors:
        print(f"lossconf: error: {err}", file=sys.stderr)
    if result.errors:
        print(summary(result.files, result.errors), file=sys.stderr)
        return ExitCode.USAGE
    print(f"{len(result.files)} files, {len(result.cases)} cases: valid")
    return ExitCode.OK


def summary(files: list[Path], errors: list[CaseFileError]) -> str:
    """``1 invalid of 3 files (4 errors)``; a path that does not exist is named as such."""
    checked = set(map(str, files))
    missing = [e.path for e in errors if e.path not in checked]
    invalid = {e.path for e in errors if e.path in checked}
    parts = []
    if missing:
        paths = "path" if len(missing) == 1 else "paths"
        parts.append(f"{len(missing)} {paths} not found ({', '.join(missing)})")
    if invalid:
        count = len(errors) - len(missing)
        extra = f" ({count} errors)" if count != len(invalid) else ""
        parts.append(f"{len(invalid)} invalid of {len(files)} files{extra}")
    else:
        parts.append(f"{len(files)} files checked" + (": valid" if files else ""))
    return "; ".join(parts)
