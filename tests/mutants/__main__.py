"""``python -m tests.mutants``: the mutation score of the built-in suite, one row per mutant."""

from __future__ import annotations

import sys

from tabulate import tabulate

from harness.cases.loader import load_paths
from tests.mutants.bugs import MUTANTS
from tests.mutants.score import kill_table


def main() -> int:
    cases = load_paths().cases
    kills = kill_table(MUTANTS, cases)
    rows = [[k.mutant, k.case_id or "SURVIVED", k.dtype or "-", k.doc] for k in kills]
    print(tabulate(rows, headers=["mutant", "first killed by", "dtype", "bug"], tablefmt="github"))
    killed = sum(k.case_id is not None for k in kills)
    print(f"\nmutation score: {killed}/{len(kills)} mutants killed by {len(cases)} cases")
    return 0 if killed == len(kills) else 1


if __name__ == "__main__":
    sys.exit(main())
