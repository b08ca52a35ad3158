"""``--jobs N``: run cases in N worker processes; results come back in the serial order.

Workers are started with ``spawn`` (never ``fork``: torch and jax hold threads
that a fork would copy half-initialised). Each worker rebuilds the plan from the
same command-line arguments (cases and adapters are loaded, not pickled: an
adapter from a user's file need not be picklable) and receives batches of case
ids; ``Executor.map`` returns the batches in submission order, so the result
list is the one a serial run gives. BLAS/OpenMP threads per worker are limited
to ``cpu_count // N`` unless the user set them. Expected values computed by one
worker reach the others through the disk cache (``harness.expected_cache``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_worker: dict = {}  # in a worker: "plan", "args", "cases" (id -> Case)


def _init_worker(args: argparse.Namespace, threads: int) -> None:
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    from harness.run_command import prepare

    plan = prepare(args)
    _worker.update(plan=plan, args=args, cases={c.id: c for c in plan.cases})


def _run_batch(case_ids: list[str]) -> list:
    """The serial execute() of the worker's plan, restricted to ``case_ids``."""
    from dataclasses import replace

    from harness.run_command import execute

    cases = [_worker["cases"][i] for i in case_ids]
    return execute(replace(_worker["plan"], cases=cases, results=[]), _worker["args"])


def batches(case_ids: list[str], jobs: int) -> list[list[str]]:
    """Consecutive batches, about 8 per worker, so a slow case does not idle the others."""
    size = max(1, len(case_ids) // (jobs * 8))
    return [case_ids[i : i + size] for i in range(0, len(case_ids), size)]


def run_parallel(
    plan, args: argparse.Namespace, jobs: int, on_result: Callable | None = None
) -> list:
    """Results of every case x adapter x dtype in the serial order, computed by ``jobs`` workers."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # workers run serially, quietly (no progress bar), write no reports
    worker_args = argparse.Namespace(
        **{**vars(args), "reports": None, "list": False, "jobs": 1, "quiet": True}
    )
    threads = max(1, (os.cpu_count() or 1) // jobs)
    results: list = []
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(worker_args, threads),
    ) as pool:
        for batch in pool.map(_run_batch, batches([c.id for c in plan.cases], jobs)):
            for r in batch:
                if on_result is not None:
                    on_result(r)
                results.append(r)
    return results
