"""A run, below the CLI: select cases, load adapters, execute every case x adapter x dtype.

``prepare`` settles what a run will do (``Plan``) before anything runs; ``execute``
runs it serially, in worker processes (``--jobs``) or with isolated adapters
(``--isolate``), keeping results as they arrive so an interrupt keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from harness.adapters import Adapter
from harness.cases.loader import load_paths
from harness.cases.model import Case
from harness.cases.select import select
from harness.errors import CaseFileError, UsageError
from harness.execution import registry
from harness.execution.config import RunConfig
from harness.execution.isolate import IsolatedPool, IsolationSettings, parse_memory_limit
from harness.execution.parallel import run_parallel
from harness.execution.progress import Progress
from harness.execution.results import Result
from harness.execution.runner import run
from harness.execution.shard import Shard
from harness.execution.vocab_parallel import VocabParallelPool


@dataclass
class Selection:
    """The selected cases, and the invalid case files skipped under ``keep_going``.

    With ``--shard``, ``cases`` is the shard's share and ``shard.selection`` every case."""

    cases: list[Case]
    load_errors: list[CaseFileError]
    shard: Shard | None = None


@dataclass
class Plan:
    """What a run will do, settled before anything runs."""

    cases: list[Case]
    adapters: list[Adapter]
    specs: list[str] = field(default_factory=list)  # the adapter specs, one per adapter
    load_errors: list[CaseFileError] = field(default_factory=list)  # skipped (keep_going)
    results: list[Result] = field(default_factory=list)  # filled by execute() as they arrive
    shard: Shard | None = None  # with --shard: which share ``cases`` is, of which selection
    #: ids of cases a serial run takes last (their expected values are being computed by a
    #: helper process: harness.execution.prefetch); results stay in the plan's order
    deferred: frozenset[str] = frozenset()
    #: whether a deferred case's values are all computed (by the helper): the run takes such
    #: a case before the others left, so that it computes values itself only when none is
    #: ready, and the helper works while the run calls adapters
    ready: Callable[[Case], bool] | None = None

    @property
    def total(self) -> int:
        """The number of results the plan makes: every case x adapter x dtype."""
        return sum(len(c.dtypes) for c in self.cases) * len(self.adapters)


def select_cases(config: RunConfig) -> Selection:
    """Load the case files and select by keywords, case ids and dtypes; UsageError if nothing
    is left."""
    loaded = load_paths(list(config.cases) or None, keep_going=config.keep_going)
    cases = select(
        loaded.cases,
        list(config.keywords) or None,
        list(config.dtypes) or None,
        list(config.case_ids) or None,
    )
    if not cases and loaded.errors:
        raise loaded.errors[0]
    if not cases:
        chosen = [f"-k {k!r}" for k in config.keywords] + [f"--case {c}" for c in config.case_ids]
        chosen += [f"--dtype {d}" for d in config.dtypes]
        terms = " ".join(chosen) or "(no filter)"
        raise UsageError(f"no case selected from {len(loaded.cases)} loaded cases by {terms}")
    if config.shard is None:
        return Selection(cases, loaded.errors)
    # after the selection: every shard splits the same selected work (a share may be empty)
    shard = Shard(*config.shard, selection=tuple(cases))
    return Selection(shard.cases(), loaded.errors, shard)


def load_adapters(specs: tuple[str, ...] | list[str]) -> list[Adapter]:
    """The adapters named by ``specs``; UsageError when two share a name."""
    adapters = [registry.load(s) for s in specs]
    names = [a.name for a in adapters]
    if len(set(names)) != len(names):
        raise UsageError(
            f"two adapters share a name: {names}; give each a distinct name with the "
            "option name= (--adapter SPEC@name=NAME)"
        )
    return adapters


def prepare(config: RunConfig, selection: Selection | None = None) -> Plan:
    """The plan of ``config``: its selected cases (``selection`` if given) and loaded adapters."""
    selection = selection or select_cases(config)
    adapters = load_adapters(config.adapters)
    return Plan(
        selection.cases,
        adapters,
        specs=list(config.adapters),
        load_errors=selection.load_errors,
        shard=selection.shard,
    )


def execute(plan: Plan, config: RunConfig) -> list[Result]:
    """Every case x adapter x dtype, in order; results also accumulate in ``plan.results``."""
    bar = Progress(plan.total, enabled=not config.quiet)
    if config.jobs > 1 and len(plan.cases) > 1:

        def keep(r: Result) -> None:
            plan.results.append(r)
            bar.update(r.case_id)

        try:
            # workers run execute() serially on their share of the cases
            run_parallel(
                plan, config, config.jobs, prepare=prepare, execute=execute, on_result=keep
            )
            return plan.results
        finally:
            bar.close()
    pool = _isolation_pool(plan, config) or _vocab_parallel_pool(plan, config)
    try:
        for r in run(
            _in_run_order(plan),
            plan.adapters,
            on_result=lambda r: bar.update(r.case_id),
            timeout=config.timeout,
            call=None if pool is None else pool.run_one,
        ):
            plan.results.append(r)  # kept as they come: an interrupt keeps them
        return plan.results
    finally:
        if plan.deferred:
            _to_plan_order(plan)
        bar.close()
        if pool is not None:
            pool.close()


def _in_run_order(plan: Plan) -> Iterator[Case]:
    """The plan's cases, its deferred ones last: the others in the plan's order, then, one at
    a time, the first deferred case left that ``plan.ready`` says is ready, or else the first
    left."""
    if not plan.deferred:
        yield from plan.cases
        return
    yield from (c for c in plan.cases if c.id not in plan.deferred)
    left = [c for c in plan.cases if c.id in plan.deferred]
    ready = plan.ready
    while left:
        i = next((k for k, c in enumerate(left) if ready(c)), 0) if ready is not None else 0
        yield left.pop(i)


def _to_plan_order(plan: Plan) -> None:
    """``plan.results`` in the order of the plan's cases (the order of a run without deferred
    cases: each case's results stay in the order they came, adapter by adapter)."""
    position = {c.id: i for i, c in enumerate(plan.cases)}
    plan.results.sort(key=lambda r: position[r.case_id])


def _vocab_parallel_pool(plan: Plan, config: RunConfig) -> VocabParallelPool | None:
    """With ``world_size``, the started rank groups (harness.execution.vocab_parallel)."""
    if config.world_size is None:
        return None
    pool = VocabParallelPool(plan.specs, plan.adapters, config.world_size, config.timeout)
    pool.start()
    return pool


def _isolation_pool(plan: Plan, config: RunConfig) -> IsolatedPool | None:
    """With ``isolate``, the started worker pool (harness.execution.isolate); else None."""
    if not config.isolate:
        return None
    settings = IsolationSettings(memory_limit=parse_memory_limit(config.memory_limit))
    pool = IsolatedPool(plan.specs, plan.adapters, settings)
    pool.start()
    return pool
