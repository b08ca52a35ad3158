"""``--timeout`` must not change results (issue 14, item 4).

Each adapter's calls run on one long-lived thread of its own, so state a library ties to
the thread that created it (an sqlite3 connection, as tinygrad's cache has) keeps working;
the first call of an adapter (imports, compilation) is not held to the limit. In process
(``harness.run``): the thread handling is logic, not the process contract.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from conftest import REPO

import harness
from harness.adapters.numpy_ref import NumpyAdapter
from harness.execution.watchdog import WARM_UP_SECONDS, CallTimedOut, Watchdog

SEED = REPO / "cases" / "seed.yaml"


class SqliteCache(NumpyAdapter):
    """The NumPy reference behind a cache connection opened on first use, as tinygrad does:
    sqlite3 refuses a connection from any thread but the one that opened it."""

    name = "sqlite-cache"

    def __init__(self) -> None:
        self.db: sqlite3.Connection | None = None
        self.threads: set[int] = set()

    def run(self, inputs):
        if self.db is None:
            self.db = sqlite3.connect(":memory:")
            self.db.execute("create table calls (reduction text)")
        self.db.execute("insert into calls values (?)", (inputs.reduction,))
        self.threads.add(threading.get_ident())
        return super().run(inputs)


class SlowFirstCall(NumpyAdapter):
    """Its first call takes 0.6 s (an import, a compile); every later one is fast."""

    name = "slow-first-call"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, inputs):
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.6)
        return super().run(inputs)


def _statuses(results):
    return [(r.case_id, r.dtype, r.status.value, r.message) for r in results]


def test_a_thread_bound_resource_works_under_timeout_as_without():
    cases = harness.load_cases(SEED)
    without = harness.run(cases, [SqliteCache()])
    adapter = SqliteCache()
    with_timeout = harness.run(cases, [adapter], timeout=30)
    assert all(r.conforming for r in without), _statuses(without)
    assert _statuses(with_timeout) == _statuses(without)
    assert len(adapter.threads) == 1  # every call on the adapter's one thread
    assert adapter.threads != {threading.get_ident()}  # not the caller's: it can be abandoned


def test_the_first_call_of_an_adapter_is_not_held_to_the_limit():
    cases = harness.load_cases(SEED)
    results = harness.run(cases, [SlowFirstCall()], timeout=0.3)
    assert all(r.conforming for r in results), _statuses(results)
    assert results[0].seconds >= 0.6  # it did take longer than the limit


def test_a_later_slow_call_still_times_out_and_the_adapter_gets_a_new_thread():
    release = threading.Event()
    seen: list[int] = []

    def work(n: int) -> int:
        seen.append(threading.get_ident())
        if n == 2:
            release.wait(10)
        return n

    watchdog = Watchdog(0.2)
    owner = object()
    try:
        assert watchdog.call(owner, lambda: work(1)) == 1  # the warm-up call
        with pytest.raises(CallTimedOut, match=r"still running after 0\.2 s"):
            watchdog.call(owner, lambda: work(2))
        assert watchdog.call(owner, lambda: work(3)) == 3  # not queued behind the hung call
    finally:
        release.set()
        watchdog.close()
    assert seen[0] == seen[1] != seen[2]


def test_the_first_call_has_a_bounded_allowance_and_exceptions_come_back():
    watchdog = Watchdog(0.1, warm_up=0.3)
    try:
        with pytest.raises(CallTimedOut, match=r"first call .* still running after 0\.3 s"):
            watchdog.call("a", lambda: time.sleep(2))
        with pytest.raises(ZeroDivisionError):
            watchdog.call("b", lambda: 1 / 0)
    finally:
        watchdog.close()
    assert WARM_UP_SECONDS >= 60


SLOW_FIRST_CALL_FILE = """
import time
from harness.adapters.numpy_ref import NumpyAdapter

class SlowFirstCall(NumpyAdapter):
    name = "slow-first-call"
    calls = 0

    def run(self, inputs):
        type(self).calls += 1
        if self.calls == 1:
            time.sleep(0.8)
        return super().run(inputs)
"""


def test_an_isolated_worker_s_first_call_is_not_held_to_the_limit(tmp_path):
    from harness.execution.isolate import IsolatedPool, IsolationSettings
    from harness.execution.registry import load

    spec = str(tmp_path / "slow_first.py")
    (tmp_path / "slow_first.py").write_text(SLOW_FIRST_CALL_FILE)
    adapter = load(spec)
    cases = harness.load_cases(SEED)[:2]
    with IsolatedPool([spec], [adapter], IsolationSettings(memory_limit=None)) as pool:
        results = [pool.run_one(c, adapter, d, timeout=0.3) for c in cases for d in c.dtypes]
    assert [r.status for r in results] == [harness.Status.PASS] * len(results), _statuses(results)
    assert results[0].seconds >= 0.8
