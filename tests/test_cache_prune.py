"""The cache folder stays bounded (``harness.cache_prune``): entries unused for a month go,
then the least recently used beyond the size limit; reading an entry keeps it; files that
lossconf did not write are never touched; and a run that writes prunes at most once a day."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from harness import cache_prune
from harness.oracle import cache
from harness.oracle.problem import Problem

DAY = 86400.0
NOW = 2_000_000_000.0

#: one name of each kind lossconf writes, with its subfolder
VALUE = "0123456789abcdef-float32-0123456789ab.arrays"
NAMES = {
    VALUE: "",
    "0123456789abcdef@optax-bfloat16-0123456789ab-loss.arrays": "",
    "linear-fedcba9876543210-float64-ba9876543210.arrays": "",
    "00112233445566ff-float64-8884dbbfe507.npz": "",  # the earlier format
    "0123456789ab-0123456789abcdef0123456789abcdef.pickle": "cases",
    "0123456789abcdef0123456789abcdef": "frozen",
}
#: files a user may keep in a folder they named as the cache, and JAX's entries
FOREIGN = {
    "notes.txt": "",
    "results.arrays": "",
    "0123456789abcdef-float32.arrays": "",
    "mine.pickle": "cases",
    "jit_loss-0123456789abcdef0123456789abcdef-cache": "jax",
}


def _put(folder, sub, name, size=100, age_days=0.0, now=NOW):
    path = folder / sub / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = now - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def test_entries_unused_for_a_month_are_removed_and_others_never(tmp_path):
    old = {name: _put(tmp_path, sub, name, age_days=31) for name, sub in NAMES.items()}
    foreign = {name: _put(tmp_path, sub, name, age_days=400) for name, sub in FOREIGN.items()}
    recent = _put(tmp_path, "", "fedcba9876543210-float64-0123456789ab.arrays", age_days=29)
    pruned = cache_prune.prune(tmp_path, now=NOW)
    gone = [name for name, path in old.items() if path.exists()]
    assert gone == [], f"entries unused for 31 days should have been removed: {gone}"
    kept = [name for name, path in foreign.items() if not path.exists()]
    assert kept == [], f"files lossconf did not write should never be removed: {kept}"
    assert recent.exists(), "an entry used 29 days ago should have been kept"
    assert pruned == cache_prune.Pruned(len(NAMES), 100 * len(NAMES), 1, 100)


def test_beyond_the_limit_the_least_recently_used_go_first(tmp_path):
    ages = [5.0, 1.0, 4.0, 2.0, 3.0]  # days since last use
    paths = [
        _put(tmp_path, "", f"{i:016x}-float32-0123456789ab.arrays", size=1000, age_days=age)
        for i, age in enumerate(ages)
    ]
    pruned = cache_prune.prune(tmp_path, max_bytes=2500, now=NOW)
    left = sorted(age for age, path in zip(ages, paths, strict=True) if path.exists())
    assert left == [1.0, 2.0], f"the two most recently used should be left, not {left}"
    assert pruned == cache_prune.Pruned(3, 3000, 2, 2000)


def test_a_killed_writer_s_temporary_file_goes_after_an_hour(tmp_path):
    stale = _put(tmp_path, "", f".{VALUE}.ab12cd_9", age_days=2 / 24)
    fresh = _put(tmp_path, "", f".{VALUE}.zz34yx_0", age_days=0.5 / 24)
    pruned = cache_prune.prune(tmp_path, max_bytes=0, now=NOW)
    assert not stale.exists(), "a temporary file two hours old should have been removed"
    assert fresh.exists(), "a temporary file half an hour old may be a write in progress"
    assert pruned.kept_files == 0 and pruned.removed_files == 1


def test_a_folder_is_pruned_once_a_day_by_the_first_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_prune, "_checked", set())
    stale = _put(tmp_path, "", VALUE, age_days=40, now=time.time())
    stamp = tmp_path / cache_prune.STAMP
    stamp.touch()
    assert cache_prune.after_write(tmp_path) is None, "pruned again within a day"
    assert stale.exists()

    monkeypatch.setattr(cache_prune, "_checked", set())
    an_hour_over_a_day = time.time() - DAY - 3600
    os.utime(stamp, (an_hour_over_a_day, an_hour_over_a_day))
    pruned = cache_prune.after_write(tmp_path)
    assert pruned is not None and pruned.removed_files == 1 and not stale.exists()
    assert time.time() - stamp.stat().st_mtime < 60, "the stamp should have been renewed"
    os.utime(stamp, (an_hour_over_a_day, an_hour_over_a_day))
    assert cache_prune.after_write(tmp_path) is None, "looked at twice in one process"


def test_an_unwritable_folder_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_prune, "_checked", set())
    assert cache_prune.after_write(tmp_path / "absent" / "folder") is None
    assert cache_prune.prune(tmp_path / "absent") == cache_prune.Pruned(0, 0, 0, 0)


def test_runs_mark_what_they_read_and_prune_what_nobody_used(tmp_path, monkeypatch):
    """Through the oracle's cache: the first run that writes removes an entry of another
    version unused for a month; a later run that reads an entry marks it used, once a day."""
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_memory", {})
    monkeypatch.setattr(cache_prune, "_checked", set())
    other_version = _put(tmp_path, "", VALUE, age_days=31, now=time.time())
    logits = np.random.default_rng(0).normal(size=(4, 7))
    problem = Problem(logits, np.array([0, 3, 6, 2]), probability_target=False)
    cache.oracle_expected("00000000000000aa", "float32", lambda: problem)
    assert not other_version.exists(), "the writing run should have pruned the stale entry"
    (written,) = tmp_path.glob(f"00000000000000aa-*{cache.SUFFIX}")

    written_at = written.stat().st_mtime_ns
    cache._memory.clear()
    cache.oracle_expected("00000000000000aa", "float32", lambda: problem)
    assert written.stat().st_mtime_ns == written_at, "marked again within a day of its write"
    long_ago = time.time() - 20 * DAY
    os.utime(written, (long_ago, long_ago))
    cache._memory.clear()
    hits = cache.stats["disk_hits"]
    cache.oracle_expected("00000000000000aa", "float32", lambda: problem)
    assert cache.stats["disk_hits"] == hits + 1
    assert time.time() - written.stat().st_mtime < 60, "a read should mark the entry used"


@pytest.mark.parametrize("name", ["loss", "grad", "loss_bound", "grad_bound"])
def test_a_pruned_entry_is_computed_again_to_the_same_values(tmp_path, monkeypatch, name):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_memory", {})
    logits = np.random.default_rng(1).normal(size=(3, 5))
    problem = Problem(logits, np.array([4, 0, 2]), probability_target=False)
    first = cache.oracle_expected("00000000000000bb", "float64", lambda: problem)
    cache_prune.prune(tmp_path, max_bytes=0)
    assert not list(tmp_path.glob(f"*{cache.SUFFIX}")), "max_bytes=0 should leave no entry"
    cache._memory.clear()
    again = cache.oracle_expected("00000000000000bb", "float64", lambda: problem)
    a, b = getattr(first, name), getattr(again, name)
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_a_large_backlog_goes_over_several_prunings_oldest_first(tmp_path, monkeypatch):
    paths = [
        _put(tmp_path, "", f"{i:016x}-float32-0123456789ab.arrays", age_days=40 + i)
        for i in range(5)
    ]
    first = cache_prune.prune(tmp_path, now=NOW, max_removals=3)
    assert [p.exists() for p in paths] == [True, True, False, False, False]
    assert first == cache_prune.Pruned(3, 300, 2, 200, finished=False)
    assert cache_prune.prune(tmp_path, now=NOW, max_removals=3).finished
    assert not any(p.exists() for p in paths)

    # after_write lets the next writing process go on at once
    monkeypatch.setattr(cache_prune, "MAX_REMOVALS", 1)
    monkeypatch.setattr(cache_prune, "_checked", set())
    more = [
        _put(tmp_path, "", f"{i:016x}-float64-0123456789ab.arrays", age_days=40, now=time.time())
        for i in range(2)
    ]
    assert not cache_prune.after_write(tmp_path).finished
    assert (tmp_path / cache_prune.STAMP).stat().st_mtime == 0
    monkeypatch.setattr(cache_prune, "_checked", set())
    assert cache_prune.after_write(tmp_path).finished and not any(p.exists() for p in more)
