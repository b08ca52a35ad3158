"""The helper process that computes a first run's expected values on a second core
(``harness.execution.prefetch``): the same results in the same order as a run without it,
each value computed once, and a helper that dies costs nothing but its share."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.cases.loader import load_paths
from harness.execution import prefetch
from harness.execution.config import RunConfig
from harness.oracle import cache as expected_cache

pytestmark = [
    pytest.mark.skipif(
        not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
        reason="the helper runs only where the run has a second core",
    ),
    # a pytest worker that ran JAX's tests has JAX's threads, which a run of the command line
    # never has when it forks its helper (before the adapters load frameworks); the helper
    # calls no JAX, so the fork is safe here too, and ``allowed`` lets it happen
    pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning"),
]


def _allow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper may start whatever this pytest worker imported before (see above)."""
    monkeypatch.setattr(prefetch, "start_method", lambda: "fork")
    monkeypatch.setattr(prefetch, "_single_threaded", lambda: True)  # pytest-xdist's threads


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    _allow(monkeypatch)


#: small cases (frozen-size), medium ones the helper takes, one with its values in the file
CASES = """
defaults:
  dtype: [float64, float32]
cases:
  - name: small_first
    why: a case the run reaches before the helper's
    logits: [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    target: [0, 2]
    expected: oracle
  - name: written_out
    why: values in the file, no oracle
    logits: [[0.0, 0.0]]
    target: [0]
    expected:
      loss: 0.6931471805599453
      grad: [[-0.5, 0.5]]
{medium}
  - name: small_last
    why: a case after the medium ones
    logits: [[3.0, 1.0], [1.0, 3.0]]
    target: [1, 1]
    reduction: sum
    expected: oracle
"""

MEDIUM = """  - name: medium_{i}
    why: enough logits for a helper
    logits: {{generate: normal, shape: [{rows}, 64], seed: {seed}}}
    target: {{generate: labels, shape: [{rows}], seed: {seed2}, classes: 64}}
    weight: {{generate: uniform, shape: [64], seed: {seed3}, low: 0.5, high: 2.0}}
    expected: oracle"""


def _write_cases(folder: Path) -> Path:
    medium = "\n".join(
        MEDIUM.format(i=i, rows=600 + 40 * i, seed=10 + i, seed2=30 + i, seed3=50 + i)
        for i in range(4)
    )
    path = folder / "cases.yaml"
    path.write_text(CASES.format(medium=medium))
    return path


@pytest.fixture
def case_file(tmp_path: Path) -> Path:
    return _write_cases(tmp_path)


def _empty_cache(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(folder))
    monkeypatch.setattr(expected_cache, "_memory", {})
    monkeypatch.setattr(expected_cache, "_linear_memory", {})
    return folder


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return _empty_cache(tmp_path / "cache", monkeypatch)


def _run(case_file: Path, report: Path) -> list[dict]:
    from harness.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(
            ["--adapter", "numpy", "-q", "--cases", str(case_file), "--report", str(report)]
        )
    assert code == 0, out.getvalue()
    results = json.loads(report.read_text())["results"]
    volatile = ("seconds", "bytes", "time")
    return [{k: v for k, v in r.items() if not any(w in k for w in volatile)} for r in results]


class Watched:
    """What the run's helper did: its items' final states."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.states: list[int] = []
        self.started = 0
        real_close = prefetch.Prefetch.close

        def close(helper: prefetch.Prefetch) -> None:
            self.started += 1
            real_close(helper)  # the helper has stopped: its states are final
            self.states = list(helper.state[:])

        monkeypatch.setattr(prefetch.Prefetch, "close", close)


@dataclass
class FirstRun:
    """A run with an empty cache, and what its helper did."""

    case_file: Path
    cache: Path
    results: list[dict]
    started: int
    states: list[int]
    computed: int


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    """One first run (a helper's and the oracle's work, the module's costliest) that the two
    tests below check: what it did, then what a run without a helper and a second run do."""
    folder = tmp_path_factory.mktemp("first-run")
    case_file = _write_cases(folder)
    with pytest.MonkeyPatch.context() as m:
        cache = _empty_cache(folder / "cache", m)
        _allow(m)
        watched = Watched(m)
        m.setitem(expected_cache.stats, "computed", 0)
        # the run waits for whatever the helper holds (on a busy machine it might otherwise
        # compute that value too, as it should: test_a_helper_slower_than_the_run_...)
        m.setattr(prefetch, "PATIENCE_S", 600.0)
        results = _run(case_file, folder / "first.json")
        computed = expected_cache.stats["computed"]
    return FirstRun(case_file, cache, results, watched.started, watched.states, computed)


def test_the_helper_changes_no_result_nor_their_order(first_run, allowed, tmp_path, monkeypatch):
    watched = Watched(monkeypatch)
    with_helper = first_run.results
    assert first_run.started == 1
    # six oracle cases in two dtypes, each value computed once: by the helper or by the run
    # (how many each takes depends on their speeds)
    assert len(first_run.states) == 12
    assert set(first_run.states) <= {prefetch.DONE, prefetch.RUN}
    assert first_run.states.count(prefetch.RUN) == first_run.computed
    helped = [i for i, s in enumerate(first_run.states) if s == prefetch.DONE]
    assert helped == list(range(12 - len(helped), 12)), "the helper works from the end"

    monkeypatch.setattr(prefetch, "MIN_LOGITS", 1 << 62)  # no helper
    _empty_cache(tmp_path / "other-cache", monkeypatch)
    without = _run(first_run.case_file, tmp_path / "without.json")
    assert watched.started == 0
    assert [r["case_id"] for r in with_helper] == [r["case_id"] for r in without]
    assert json.dumps(with_helper, sort_keys=True) == json.dumps(without, sort_keys=True)


def test_a_second_run_starts_no_helper(first_run, allowed, tmp_path, monkeypatch):
    watched = Watched(monkeypatch)
    _empty_cache(first_run.cache, monkeypatch)  # the first run's disk cache, no memory
    second = _run(first_run.case_file, tmp_path / "second.json")
    assert first_run.started == 1 and watched.started == 0  # nothing was pending the second time
    assert first_run.results == second


def _medium_items(case_file: Path) -> list:
    cases = load_paths([case_file]).cases
    return prefetch.pending_items(cases)


def test_the_items_are_the_oracle_values_the_cache_lacks(case_file, empty_cache):
    items = _medium_items(case_file)
    names = [(case.name, kind, dtype) for (kind, _, dtype), case in items]
    assert names == [
        (n, "ce", d)
        for n in ("small_first", "medium_0", "medium_1", "medium_2", "medium_3", "small_last")
        for d in ("float64", "float32")
    ]
    (_, _, dtype), case = items[0]
    case.expected_for(dtype)  # now in memory: no longer pending
    assert len(prefetch.pending_items([case])) == 1


def test_a_helper_alone_computes_every_item_once(case_file, empty_cache, monkeypatch):
    """Left alone, the helper stores every value from the last backwards; the run then
    reads each from the disk and computes none."""
    monkeypatch.setattr(prefetch, "HELPER_MIN_LOGITS", 1 << 62)  # NumPy: no numba to load
    items = _medium_items(case_file)
    helper = prefetch.Prefetch(items)
    helper.process.start()
    helper.process.join(120)
    try:
        assert helper.process.exitcode == 0
        assert list(helper.state[:]) == [prefetch.DONE] * len(items)
        monkeypatch.setitem(expected_cache.stats, "computed", 0)
        expected_cache.set_helper(helper)
        for (_, _, dtype), case in items:
            case.expected_for(dtype)
        assert expected_cache.stats["computed"] == 0
        assert expected_cache.stats["disk_hits"] >= len(items)
    finally:
        helper.close()


def test_the_run_takes_first_the_deferred_cases_whose_values_are_done(case_file, empty_cache):
    """``Prefetch.ready``: every value of the case done by the helper. The run takes the
    deferred cases in its order, but a ready one before those left: it computes a value
    itself only when none is ready (``session._in_run_order``)."""
    from harness.execution.session import Plan, _in_run_order

    items = _medium_items(case_file)
    helper = prefetch.Prefetch(items)  # not started: the states are set here
    cases = list(dict.fromkeys(case for _, case in items))
    assert [c.name for c in cases][:2] == ["small_first", "medium_0"]
    assert not any(helper.ready(c) for c in cases)
    done = [i for i, (_, case) in enumerate(items) if case.name in ("medium_2", "small_last")]
    for i in done[:-1]:
        helper.state[i] = prefetch.DONE
    assert not helper.ready(cases[-1])  # one of its two values is not done
    helper.state[done[-1]] = prefetch.DONE
    assert helper.ready(cases[-1]) and helper.ready(cases[3])
    other = SimpleNamespace(id="elsewhere/not_deferred", name="not_deferred")  # the id is read
    plan = Plan([other, *cases], [], deferred=helper.case_ids, ready=helper.ready)
    order = [c.name for c in _in_run_order(plan)]
    assert order == [other.name, "medium_2", "small_last", "small_first", "medium_0",
                     "medium_1", "medium_3"]  # fmt: skip
    plan.ready = None
    assert [c.name for c in _in_run_order(plan)] == [other.name] + [c.name for c in cases]


@contextlib.contextmanager
def holding_the_last(items: list, then) -> Iterator[prefetch.Prefetch]:
    """A helper started on ``items`` that claims the last one, then does ``then()`` (dies,
    stalls); the block runs once it holds it, and the helper is stopped after."""

    def claim_the_last(self: prefetch.Prefetch) -> None:
        assert self._claim_from_end(len(self.items) - 1)
        then()

    with pytest.MonkeyPatch.context() as m:
        m.setattr(prefetch.Prefetch, "_work", claim_the_last)
        helper = prefetch.Prefetch(items)
        helper.process.start()
    try:
        deadline = time.monotonic() + 60
        while helper.state[len(items) - 1] != prefetch.HELPER:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield helper
    finally:
        helper.close()


def test_a_helper_that_dies_leaves_its_item_to_the_run(case_file, empty_cache):
    """A helper killed while it computes (out of memory, a signal) never makes the run
    wait for it: the run computes that value itself."""
    items = _medium_items(case_file)
    with holding_the_last(items, lambda: os._exit(1)) as helper:
        assert helper.settled(items[-1][0]) is False  # the helper died holding it
        assert helper.settled(items[0][0]) is False  # FREE: now the run's
        assert helper.state[0] == prefetch.RUN
        assert helper.settled(("ce", "not-an-item", "float32")) is False
    assert helper.process.exitcode == 1


def test_a_helper_slower_than_the_run_leaves_it_the_value(case_file, empty_cache):
    """A helper that holds a value longer than the run would take to compute it (compiling
    numba's kernels after an install, or starved of CPU) does not make the run wait."""
    items = _medium_items(case_file)
    with holding_the_last(items, lambda: time.sleep(120)) as helper:
        start = time.monotonic()
        assert helper.settled(items[-1][0]) is False
        waited = time.monotonic() - start
        size = prefetch._size(items[-1][1])
        patience = prefetch.PATIENCE_S + prefetch.PATIENCE_S_PER_LOGIT * size
        assert patience <= waited < patience + 5
        assert helper.process.is_alive()  # still at it: stopped by close()


def test_the_helper_compiles_no_kernel(monkeypatch):
    """Without numba's kernels in its disk cache (after an install, or an upgrade), the
    helper takes the NumPy oracle: compiling them would take it seconds. Nor does it ask
    numba's cache (which imports numba) when no value is large enough for the kernels."""
    from types import SimpleNamespace

    calls, asked = [], []
    monkeypatch.setattr(prefetch.signal, "signal", lambda *a: None)  # this process's SIGINT
    monkeypatch.setattr(prefetch.compiled, "available", lambda: True)
    monkeypatch.setattr(prefetch.compiled, "kernels_cached", lambda: asked.append(1) or False)
    monkeypatch.setattr(prefetch, "_compiled_from", calls.append)
    monkeypatch.setattr(prefetch.Prefetch, "_claim_from_end", lambda self, i: False)

    def helper(logits: int) -> prefetch.Prefetch:
        case = SimpleNamespace(id=f"case{logits}", fused=False, logits_size=logits)
        return prefetch.Prefetch([(("ce", f"key{logits}", "float32"), case)])

    helper(prefetch.HELPER_MIN_LOGITS - 1)._work()
    assert calls == [] and asked == []
    large = helper(prefetch.HELPER_MIN_LOGITS)
    large._work()
    assert calls == [] and asked == [1]
    monkeypatch.setattr(prefetch.compiled, "kernels_cached", lambda: True)
    large._work()
    assert calls == [prefetch.HELPER_MIN_LOGITS]


@pytest.mark.parametrize(
    "changes",
    [{"jobs": 2}, {"list_only": True}, {"world_size": 2}],
    ids=["jobs", "list", "world-size"],
)
def test_no_helper_where_it_cannot_help(changes, empty_cache, allowed):
    assert prefetch.applies(RunConfig())
    assert not prefetch.applies(RunConfig(**changes))


def test_no_helper_without_a_disk_cache(allowed, monkeypatch):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")
    assert not prefetch.applies(RunConfig())


def test_no_helper_beside_a_threaded_framework(empty_cache, monkeypatch):
    """A fork would copy a framework's threads half-initialised: no helper then."""
    monkeypatch.setattr(prefetch, "start_method", lambda: "spawn")
    assert not prefetch.applies(RunConfig())


def test_kernels_cached_reads_numba_s_index(tmp_path):
    """An empty numba cache folder (a fresh install) holds no kernel: the helper would
    compile them. Read in a fresh interpreter: numba reads NUMBA_CACHE_DIR when imported."""
    if importlib.util.find_spec("numba") is None:  # found, not imported: numba takes a while
        pytest.skip("numba is not installed")
    code = "from harness.oracle import compiled; print(compiled.kernels_cached())"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_no_helper_beside_another_python_thread(empty_cache, monkeypatch):
    """A fork beside a running thread would copy whatever lock it holds: no helper then."""
    monkeypatch.setattr(prefetch, "start_method", lambda: "fork")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not prefetch.applies(RunConfig())
    finally:
        stop.set()
        other.join()
