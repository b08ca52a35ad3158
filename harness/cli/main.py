"""``python -m harness`` / ``lossconf``: run the suite, or one of the sub-commands.

Exit codes: 0 every result conforms; 1 at least one result does not conform;
2 usage error, invalid case file, or an adapter that cannot be loaded.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from harness.cli import program
from harness.cli.options import add_run_options, config_from
from harness.cli.pipes import closed_pipes_dropped
from harness.cli.run import run_command
from harness.errors import LossconfError
from harness.exit_codes import ExitCode
from harness.openmp import idle_threads_sleep

#: sub-command -> (module with a main(argv) -> int, one-line help); imported when used
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("harness.cli.validate", "check case files without running them"),
    "regen": ("harness.cli.regen", "write the oracle's expected values into case files"),
    "coverage": ("harness.cli.coverage", "which parameter values and pairs the cases cover"),
    "diff": ("harness.cli.diff", "compare two JSON reports: newly failing, error growth"),
    "merge": ("harness.cli.merge", "join the JSON reports of --shard I/N runs: one report"),
    "history": ("harness.cli.history", "table (and plot) of reports across framework versions"),
    "scoreboard": ("harness.cli.scoreboard", "one table of frameworks x feature groups"),
    "expectations": ("harness.cli.expectations", "'update FILE': write expectations from a run"),
    "fuzz": ("harness.cli.fuzz", "search for failing calls, shrink them, write them as cases"),
}

EPILOG = """\
sub-commands ({prog} COMMAND --help):
{commands}

exit codes:
  0  every result conforms (pass, expected error raised, or declared unsupported)
  1  at least one result does not conform (fail, error, missing error, crash, timeout)
  2  usage error, invalid case file, or an adapter that cannot be loaded

examples:
{examples}
"""

#: (arguments, comment) of the examples in --help, after the program's name
EXAMPLES = (
    ("", "built-in suite through the numpy adapter"),
    ("--adapter ./my_ce.py", "your own implementation"),
    ("-k 'weight and not sum' --dtype float32 --report out.json --report out.md", ""),
    ("--case half_precision/mean_over_70000_targets -v", ""),
    ("--list --format json", "what would run, for a script"),
)


def build_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<12} {doc}" for name, (_, doc) in SUBCOMMANDS.items())
    prog = program.name()
    examples = "\n".join(
        f"  {prog} {args}".rstrip().ljust(44) + (f" # {comment}" if comment else "")
        for args, comment in EXAMPLES
    )
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run cross-entropy conformance cases through one or more implementations.",
        epilog=EPILOG.format(prog=prog, commands=commands, examples=examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(p)
    p.add_argument(
        "--list", action="store_true", help="list the selected cases and the adapters, then exit"
    )
    p.add_argument(
        "--format",
        dest="list_format",
        choices=("table", "json"),
        help="with --list: 'table' (100 columns; -v: whole lines and tags) or 'json' "
        "(every field, for scripts)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="full messages; tracebacks for errors"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code. Output
    into a closed pipe (``| head``) is dropped and the command goes on (harness.cli.pipes).
    OpenMP's idle threads sleep instead of spinning (harness.openmp), unless the
    environment says otherwise."""
    idle_threads_sleep()
    with closed_pipes_dropped():
        return _dispatch(list(sys.argv[1:] if argv is None else argv))


def _dispatch(argv: list[str]) -> int:
    verbose = "-v" in argv or "--verbose" in argv
    try:
        if argv and argv[0] in SUBCOMMANDS:
            module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
            return module.main(argv[1:])
        args = build_parser().parse_args(argv)
        return run_command(config_from(args))
    except LossconfError as e:
        if verbose:
            traceback.print_exc()
        print(f"lossconf: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("lossconf: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as e:  # the last safety net: a bug of ours exits 2, never 1
        if verbose:
            traceback.print_exc()
        print(
            f"lossconf: internal error: {type(e).__name__}: {e} (a bug in lossconf; "
            "-v shows the traceback; please report it)",
            file=sys.stderr,
        )
        return ExitCode.USAGE
