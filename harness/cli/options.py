"""Run options, defined once for the CLI and the pytest plugin (which prefixes --lossconf-)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from harness.dtype_names import DTYPE_NAMES
from harness.errors import UsageError
from harness.execution.config import RunConfig, parse_shard


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
        "select cases by EXPR, words joined by and, or, not and parentheses as in pytest: "
        "a word holds for a case whose id or a tag contains it, e.g. "
        "'weight and not (sum or none)'; repeated -k must all hold",
        {"action": "append", "metavar": "EXPR"},
        short="-k",
    ),
    Option(
        "case", "case_ids",
        "select the case with exactly this id, e.g. half_precision/mean_over_70000_targets "
        "(repeatable; with -k both must hold)",
        {"action": "append", "metavar": "ID"},
    ),
    Option(
        "dtype", "dtypes",
        f"run only these dtypes (repeatable; one of {', '.join(DTYPE_NAMES)})",
        {"action": "append", "choices": DTYPE_NAMES, "metavar": "DTYPE"},
    ),
    Option(
        "report", "reports",
        "write a report; the format follows the extension: .json, .json.gz (compressed), "
        ".md, .xml (JUnit), .html (repeatable)",
        {"action": "append", "metavar": "PATH"},
    ),
    Option(
        "expectations", "expectations",
        "YAML file of known non-conformities: allowed outcomes do not fail the run "
        "(see harness/gate/expectations.py)",
        {"metavar": "FILE"},
    ),
    Option(
        "baseline", "baseline",
        "compare with an earlier JSON report: a new failure or error growth fails the run",
        {"metavar": "OLD.json"},
    ),
    Option(
        "growth-factor", "growth_factor",
        "with --baseline: growth of the test ratio (error / allowed) that counts as a "
        "regression, measured from at least a third of the limit (default 2)",
        {"type": float, "metavar": "X"},
    ),
    Option(
        "keep-going", "keep_going",
        "report invalid case files as errors and run every valid case (exit 2 at the end) "
        "instead of stopping before the run",
        {"action": "store_true"},
    ),
    Option(
        "timeout", "timeout",
        "report 'timeout' for a call running longer than SECONDS; without --isolate the call "
        "is abandoned in a thread, not killed (see harness/execution/watchdog.py)",
        {"type": lambda text: _positive_seconds(text), "metavar": "SECONDS"},
    ),
    Option(
        "isolate", "isolate",
        "run each adapter in worker processes: a crash (segfault, abort, exit) costs one "
        "result, reported 'crash'; the worker is restarted (see harness/execution/isolate.py)",
        {"action": "store_true"},
    ),
    Option(
        "memory-limit", "memory_limit",
        "with --isolate: address-space limit per worker, e.g. 4G, 512M, or 'none' "
        "(default 8G; use 'none' for GPU adapters)",
        {"metavar": "SIZE"},
    ),
    Option(
        "jobs", "jobs",
        "run cases in N worker processes (0: one per CPU); results keep the serial order "
        "(see harness/execution/parallel.py)",
        {"type": lambda text: _job_count(text), "metavar": "N"},
        short="-j",
    ),
    Option(
        "shard", "shard",
        "run the I-th of N shares of the selected work, balanced by cost, for N machines or CI "
        "jobs; 'python -m harness merge' joins their JSON reports (see "
        "harness/execution/shard.py)",
        {"type": lambda text: _shard(text), "metavar": "I/N"},
    ),
    Option(
        "world-size", "world_size",
        "vocab-parallel run: split the class axis into R contiguous shards and run each "
        "adapter in R processes under torch.distributed (gloo on CPU, nccl on cuda); the "
        "adapter must support vocab_parallel (see docs/kernel-features.md)",
        {"type": lambda text: _world_size(text), "metavar": "R"},
    ),
)  # fmt: skip


def _job_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of workers") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0 (0: one per CPU)")
    return value or os.cpu_count() or 1


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except UsageError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected I/N with 1 <= I <= N, e.g. 2/4 (shards are numbered from 1)"
        ) from None


def _world_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of ranks") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1 (1: one rank, the whole axis)")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 seconds")
    return value


def add_run_options(parser: argparse.ArgumentParser) -> None:
    for opt in RUN_OPTIONS:
        flags = [f"--{opt.name}"] + ([opt.short] if opt.short else [])
        parser.add_argument(*flags, dest=opt.dest, help=opt.help, **opt.kwargs)


def config_from(args: argparse.Namespace, **overrides: object) -> RunConfig:
    """The typed run configuration of parsed CLI arguments (``RUN_OPTIONS`` dests, plus
    ``list``, ``quiet`` and ``verbose`` where the parser has them)."""
    values = dict(vars(args))
    values["list_only"] = values.pop("list", False)
    return RunConfig.from_options(values, **overrides)
