"""``python -m harness regen PATH...``: write the oracle's expected values into case files.

Only the ``expected:`` entry of each case is rewritten (or added at the end of
the case); comments and the rest of the file stay as they are. Cases with
``expected: oracle`` or ``expect_error`` are left alone. A one-line recipe
with ``sha256: FILL`` gets the fingerprint of the array it makes. ``--check`` writes
nothing and exits 1 when a file's values differ from what the oracle computes now.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cases.loader import builtin_suite, discover
from harness.cases.writer import regen_file
from harness.cli import program
from harness.exit_codes import ExitCode


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog=program.name("regen"), description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("paths", nargs="*", help="case files or folders (default: the built-in suite)")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any value differs"
    )
    args = p.parse_args(argv)
    files = discover([Path(x) for x in args.paths] or [builtin_suite()])
    stale = []
    for path in files:
        changed = regen_file(path, check=args.check)
        stale += changed
        if changed:
            verb = "differ" if args.check else "updated"
            print(f"{path}: {len(changed)} cases {verb}: {', '.join(changed)}")
    if args.check and stale:
        print(
            f"{len(stale)} cases have stale expected values; run 'python -m harness regen'",
            file=sys.stderr,
        )
        return ExitCode.NONCONFORMING
    print(
        f"{len(files)} files checked" if args.check else f"{len(stale)} cases written",
        file=sys.stderr,
    )
    return ExitCode.OK
