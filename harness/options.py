"""Run options, defined once for the CLI and the pytest plugin (which prefixes --lossconf-)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from harness.dtypes import DTYPE_NAMES


@dataclass(frozen=True)
class Option:
    name: str  # CLI flag without dashes; the pytest flag is --lossconf-NAME
    dest: str
    help: str
    kwargs: dict = field(default_factory=dict)
    short: str | None = None


RUN_OPTIONS: tuple[Option, ...] = (
    Option(
        "adapter", "adapters",
        "implementation to test (repeatable; default numpy): a built-in name, an entry point, "
        "package.module[:attr], path/to/file.py[:attr] or ./NAME.py; options as NAME@key=value",
        {"action": "append", "metavar": "SPEC"},
    ),
    Option(
        "cases", "cases",
        "case file or folder (repeatable; default: the built-in suite)",
        {"action": "append", "metavar": "PATH"},
    ),
    Option(
        "keyword", "keywords",
        "select cases whose id or tags contain TEXT; 'not TEXT' or '!TEXT' excludes; "
        "repeated -k must all hold",
        {"action": "append", "metavar": "TEXT"},
        short="-k",
    ),
    Option(
        "dtype", "dtypes",
        f"run only these dtypes (repeatable; one of {', '.join(DTYPE_NAMES)})",
        {"action": "append", "choices": DTYPE_NAMES, "metavar": "DTYPE"},
    ),
    Option(
        "report", "reports",
        "write a report; the format follows the extension: .json, .md, .xml (JUnit), "
        ".html (repeatable)",
        {"action": "append", "metavar": "PATH"},
    ),
    Option(
        "expectations", "expectations",
        "YAML file of known non-conformities: allowed outcomes do not fail the run "
        "(see harness/expectations.py)",
        {"metavar": "FILE"},
    ),
    Option(
        "baseline", "baseline",
        "compare with an earlier JSON report: a new failure or error growth fails the run",
        {"metavar": "OLD.json"},
    ),
    Option(
        "growth-factor", "growth_factor",
        "with --baseline: error growth (in ulp) that counts as a regression (default 2)",
        {"type": float, "metavar": "X"},
    ),
)  # fmt: skip


def add_run_options(parser: argparse.ArgumentParser) -> None:
    for opt in RUN_OPTIONS:
        flags = [f"--{opt.name}"] + ([opt.short] if opt.short else [])
        parser.add_argument(*flags, dest=opt.dest, help=opt.help, **opt.kwargs)
