"""The run configuration: what a run does, as a typed record.

The CLI builds one from its arguments and the pytest plugin from its
``--lossconf-*`` options (both through ``RunConfig.from_options``, with the
destination names of ``harness.cli.options.RUN_OPTIONS``); code below the CLI
reads only this record, never ``argparse``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError


@dataclass(frozen=True)
class RunConfig:
    """One run. Sequences are tuples; an empty ``cases`` means the built-in suite."""

    adapters: tuple[str, ...] = ("numpy",)  # adapter specs (harness.execution.registry)
    cases: tuple[Path, ...] = ()  # case files or folders
    keywords: tuple[str, ...] = ()  # -k expressions (harness.cases.select), all must hold
    case_ids: tuple[str, ...] = ()  # --case: exact case ids; empty: every case
    dtypes: tuple[str, ...] = ()  # run only these dtypes; empty: each case's own
    reports: tuple[Path, ...] = ()  # report files; the suffix picks the format
    expectations: Path | None = None  # known non-conformities (harness.gate.expectations)
    baseline: Path | None = None  # an earlier JSON report to compare with
    growth_factor: float | None = None  # with baseline: test-ratio growth that regresses
    keep_going: bool = False  # run every valid case despite invalid case files
    timeout: float | None = None  # seconds per call
    isolate: bool = False  # adapters in worker processes (harness.execution.isolate)
    memory_limit: str | None = None  # with isolate: address-space limit per worker
    jobs: int = 1  # worker processes for cases (harness.execution.parallel)
    shard: tuple[int, int] | None = None  # (I, N): the I-th of N shares (harness.execution.shard)
    world_size: int | None = None  # vocab-parallel over R ranks (harness.execution.vocab_parallel)
    list_only: bool = False  # print the selected cases and the adapters, run nothing
    list_format: str = "table"  # with list_only: "table" (100 columns) or "json"
    quiet: bool = False  # print only the summary, no progress bar
    verbose: bool = False  # full messages, tracebacks, repro snippets

    def __post_init__(self) -> None:
        if not self.adapters:
            object.__setattr__(self, "adapters", ("numpy",))
        if self.growth_factor is not None and not self.growth_factor > 1:
            raise UsageError(
                f"--growth-factor {self.growth_factor}: must be > 1 (2 means twice the test ratio)"
            )
        if self.memory_limit is not None and not self.isolate:
            raise UsageError("--memory-limit applies to worker processes: add --isolate")
        if self.list_format != "table" and not self.list_only:
            raise UsageError("--format applies to --list: add --list")
        if self.shard is not None:
            check_shard(*self.shard)
        if self.world_size is not None:
            self._check_world_size()

    def _check_world_size(self) -> None:
        if self.world_size is None or self.world_size < 1:
            raise UsageError(f"--world-size {self.world_size}: must be a whole number >= 1")
        if self.isolate:
            raise UsageError(
                "--world-size runs every adapter in rank processes already: drop --isolate"
            )
        if self.jobs > 1:
            raise UsageError(
                f"--world-size {self.world_size} with --jobs {self.jobs}: each job would start "
                "its own ranks; use one or the other"
            )

    @classmethod
    def from_options(cls, values: Mapping[str, object], **overrides: object) -> RunConfig:
        """A config from option values keyed by field name (None or absent: the default)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, object] = {}
        for name, value in {**values, **overrides}.items():
            if name not in fields or value is None:
                continue
            if name in ("cases", "reports"):
                value = tuple(Path(str(v)) for v in _seq(value))
            elif name in ("adapters", "keywords", "case_ids", "dtypes"):
                value = tuple(str(v) for v in _seq(value))
            elif name in ("expectations", "baseline"):
                value = Path(str(value))
            kwargs[name] = value
        return cls(**kwargs)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> RunConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_SHARD_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (``--shard``) as (I, N); UsageError unless 1 <= I <= N."""
    match = _SHARD_FORM.fullmatch(text)
    if match is None:
        raise UsageError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 1/4")
    index, count = int(match[1]), int(match[2])
    check_shard(index, count)
    return index, count


def check_shard(index: int, count: int) -> None:
    """UsageError unless 1 <= ``index`` <= ``count`` (``--shard I/N``)."""
    if not 1 <= index <= count:
        raise UsageError(
            f"--shard {index}/{count}: expected I/N with 1 <= I <= N (shards are numbered from 1)"
        )


def _seq(value: object) -> Iterable[object]:
    if isinstance(value, (str, Path)):
        return (value,)
    return value  # type: ignore[return-value]
