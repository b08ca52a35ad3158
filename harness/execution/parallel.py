"""``--jobs N``: run cases in N worker processes; results come back in the serial order.

Workers are forked on Linux when no threaded framework (torch, jax) is imported:
they inherit the loaded cases and adapters and start at once. Otherwise they
are spawned (a fork would copy torch's or jax's threads half-initialised) and
each rebuilds the plan from the same run configuration (cases and adapters
are loaded, not pickled: an adapter from a user's file need not be picklable).
Workers receive batches of case ids, the costliest first (a batch is consecutive
small cases, or one large case); results are passed on in the serial order,
so the result list is the one a serial run gives. BLAS/OpenMP threads per worker are limited
to ``cpu_count // N`` unless the user set them. Expected values computed by one
worker reach the others through the disk cache (``harness.oracle.cache``).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from harness.cases.model import Case
from harness.execution.config import RunConfig
from harness.execution.results import Result

#: frameworks that start threads a fork would copy half-initialised (NumPy's BLAS pool is fork-safe)
_THREADED_FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: in a worker: "plan", "config", "execute", "cases" (id -> Case)
_worker: dict[str, Any] = {}

#: the session's prepare(config) -> Plan and execute(plan, config) -> results, passed in by
#: harness.execution.session (module-level functions: they pickle by name to spawned workers)
Prepare = Callable[[RunConfig], Any]
Execute = Callable[[Any, RunConfig], list[Result]]


def _init_worker(config: RunConfig, threads: int, prepare: Prepare, execute: Execute) -> None:
    if _worker:  # forked: the parent's plan came with the process
        return
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    plan = prepare(config)
    _worker.update(plan=plan, config=config, execute=execute, cases={c.id: c for c in plan.cases})


def _run_batch(case_ids: list[str]) -> list[Result]:
    """The serial execute() of the worker's plan, restricted to ``case_ids``."""
    cases = [_worker["cases"][i] for i in case_ids]
    plan = replace(_worker["plan"], cases=cases, results=[])
    return _worker["execute"](plan, _worker["config"])


def start_method() -> str:
    """``fork`` on Linux while no threaded framework is imported (fast start), else ``spawn``."""
    if sys.platform != "linux" or any(m in sys.modules for m in _THREADED_FRAMEWORKS):
        return "spawn"
    return "fork"


#: a call's fixed cost in logits elements: about 1.9 ms per case x dtype (inputs, checks, the
#: oracle) against 1 us per logits element, for the numpy adapter on the built-in suite with
#: the cache off (a least-squares fit over its 3,722 calls; two thirds of the suite's time is
#: the fixed part, most cases having under 100 elements)
CALL_OVERHEAD = 2000


def call_cost(case: Case) -> int:
    """Estimated work of one call of a case (one adapter, one dtype), in logits elements
    (recipes are not built); ``--jobs`` batches and ``--shard`` shares are balanced by it."""
    source = case.logits_source
    if source is None:  # fused linear: the classifier and its gradient dominate
        return CALL_OVERHEAD + 2 * case.linear_size
    size = math.prod(source["shape"]) if isinstance(source, dict) else int(source.size)
    return CALL_OVERHEAD + size


def _cost(case: Case) -> int:
    """Estimated work of a case: a call's cost times its dtypes."""
    return call_cost(case) * len(case.dtypes)


def batches(cases: list[Case], jobs: int, per_worker: int = 32) -> list[list[int]]:
    """Batches of case indices: consecutive small cases together (about ``per_worker`` each),
    a case above the batch's share of the work alone."""
    costs = [_cost(c) for c in cases]
    share = max(1, sum(costs) // (jobs * per_worker))
    out: list[list[int]] = []
    current: list[int] = []
    load = 0
    for i, cost in enumerate(costs):
        if current and load + cost > share:
            out.append(current)
            current, load = [], 0
        current.append(i)
        load += cost
    if current:
        out.append(current)
    return out


def run_parallel(
    plan: Any,
    config: RunConfig,
    jobs: int,
    *,
    prepare: Prepare,
    execute: Execute,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Results of every case x adapter x dtype in the serial order, computed by ``jobs`` workers."""
    # workers run serially, quietly (no progress bar), write no reports
    worker_config = config.replace(reports=(), list_only=False, jobs=1, quiet=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    method = start_method()
    if method == "fork":  # the workers inherit the loaded plan: no imports, no loading
        _worker.update(
            plan=plan,
            config=worker_config,
            execute=execute,
            cases={c.id: c for c in plan.cases},
        )
    # with --isolate each batch starts its own isolated adapter processes: few, large batches
    todo = batches(plan.cases, jobs, 2 if config.isolate else 32)
    ids = [c.id for c in plan.cases]
    cost = [sum(_cost(plan.cases[i]) for i in b) for b in todo]
    done: dict[int, list[Result]] = {}
    results: list[Result] = []
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(worker_config, threads, prepare, execute),
    ) as pool:
        # the costliest batches first (they bound the wall time); results leave in serial order
        order = sorted(range(len(todo)), key=lambda k: -cost[k])
        futures = {pool.submit(_run_batch, [ids[i] for i in todo[k]]): k for k in order}
        emitted = 0
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            while emitted in done:
                for r in done.pop(emitted):
                    if on_result is not None:
                        on_result(r)
                    results.append(r)
                emitted += 1
    return results
