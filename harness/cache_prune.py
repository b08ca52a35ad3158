"""Keeping the cache folder bounded: entries unused for a month go, then the least recently used.

Every run that writes an entry can grow the folder, and nothing else ever shrinks it: a new
version of lossconf (or any edit of the oracle's source) keys its expected values anew, and
every edited, moved or temporary case file gets entries of its own (a CI job in a fresh
temporary folder, every time). So the entries lossconf writes are pruned, at most once a day
per folder, by the first process that writes one (``after_write``):

- an entry not used for ``UNUSED_SECONDS`` is removed;
- then, while the entries together exceed ``MAX_BYTES``, the least recently used;
- a temporary file that a killed writer left (``harness.atomic``) is removed after an hour.

Reading an entry marks it used (``used``: its modification time, which every file system
keeps, where the access time is often not kept). A removed entry costs only speed: it is
computed again, and a reader that loses a file it was about to open reads nothing and
computes the value (every reader treats a missing or damaged file that way).

Only files whose names lossconf writes are considered, in the folders it writes them to
(``ENTRIES``): a folder the user named may hold files of their own. JAX's compiled programs
(``jax/``, ``adapters/jax_ce.py``) are JAX's entries, in its own format: a few kilobytes a
program, keyed by the jax version.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

#: the entries, together, are kept within this many bytes (a first run of the built-in suite
#: writes about 100 MiB; one expected gradient with its bound is at most 256 MiB)
MAX_BYTES = 1 << 30
#: an entry not read or written for this long is removed
UNUSED_SECONDS = 30 * 86400
#: an entry read within this long of its last mark is not marked again (``used``)
USED_RESOLUTION = 86400
#: a folder is pruned at most this often (a scan stats every entry)
INTERVAL_SECONDS = 86400
#: a temporary file older than this was left by a writer that was killed
TEMP_SECONDS = 3600
#: files removed by one pruning at most (about a second's work): a large backlog (a cache
#: that grew before it was pruned) goes over several runs, not in one
MAX_REMOVALS = 1000
#: the file whose modification time is the folder's last pruning
STAMP = ".pruned"

#: subfolder ('' for the folder itself) -> the names of the entries lossconf writes there:
#: expected values (``harness.oracle.cache``: content hash, optional dialect, dtype, oracle
#: revision, optional part; ``.npz`` was their earlier format), validated case files
#: (``harness.cases.load_cache``) and frozen data's recipe checks (``harness.cases.frozen``)
ENTRIES = {
    "": re.compile(
        r"(?:linear-)?[0-9a-f]{16}(?:@[A-Za-z0-9_.-]+)?-[A-Za-z0-9_]+-[0-9a-f]{12}"
        r"(?:-loss)?\.(?:arrays|npz)"
    ),
    "cases": re.compile(r"[0-9a-f]{12}-[0-9a-f]{32}\.pickle"),
    "frozen": re.compile(r"[0-9a-f]{32}"),
}
#: ``harness.atomic.write_atomic``'s temporary names: ``.<name>.`` and mkstemp's 8 characters
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}")

_checked: set[Path] = set()


@dataclass(frozen=True)
class Pruned:
    """What one pruning removed and kept."""

    removed_files: int
    removed_bytes: int
    kept_files: int
    kept_bytes: int
    #: False when ``max_removals`` left files for the next pruning
    finished: bool = True


def used(path: Path) -> None:
    """Mark the entry ``path`` as used now, unless it was marked within ``USED_RESOLUTION``
    (best effort: a read-only cache stays as it is). Marking at most once a day keeps a
    warm run from rewriting the metadata of every entry it reads, a cache shared by CI jobs
    from churning, and a file's time the time it was written, all the day it was."""
    try:
        if time.time() - os.stat(path).st_mtime > USED_RESOLUTION:
            os.utime(path)
    except OSError:
        pass


def after_write(folder: Path) -> Pruned | None:
    """Prune ``folder`` (the cache folder, ``harness.cache_folder.cache_dir()``) when its last
    pruning is over ``INTERVAL_SECONDS`` old; looked at once per process. Called by each
    writer of entries after it wrote one. The stamp is renewed before the scan, so that
    processes that write at the same time do not all scan."""
    if folder in _checked:
        return None
    _checked.add(folder)
    stamp = folder / STAMP
    try:
        if time.time() - stamp.stat().st_mtime < INTERVAL_SECONDS:
            return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        stamp.touch()
    except OSError:  # an unwritable folder holds nothing this process wrote
        return None
    pruned = prune(folder)
    if not pruned.finished:  # the next process that writes goes on
        os.utime(stamp, (0, 0))
    return pruned


def prune(
    folder: Path,
    *,
    max_bytes: int = MAX_BYTES,
    unused_seconds: float = UNUSED_SECONDS,
    now: float | None = None,
    max_removals: int | None = None,
) -> Pruned:
    """Remove from ``folder`` the entries unused for ``unused_seconds``, then the least
    recently used until the rest fit in ``max_bytes``, and temporary files older than
    ``TEMP_SECONDS``; at most ``max_removals`` (default ``MAX_REMOVALS``) files, the least
    recently used first (``Pruned.finished`` says whether that was all)."""
    now = time.time() if now is None else now
    max_removals = MAX_REMOVALS if max_removals is None else max_removals
    # (last used, bytes, path, whether an entry rather than a temporary file)
    recent: list[tuple[float, int, str, bool]] = []  # entries used lately
    doomed: list[tuple[float, int, str, bool]] = []  # unused entries and stale temporary files
    kept_files = kept_bytes = 0  # the entries (not temporary files) on disk after pruning
    for sub, pattern in ENTRIES.items():
        try:
            listing = os.scandir(folder / sub)
        except OSError:  # absent or unreadable
            continue
        with listing:
            for entry in listing:
                temporary = _TEMPORARY.fullmatch(entry.name)
                if not pattern.fullmatch(temporary["name"] if temporary else entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:  # removed meanwhile
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                item = (info.st_mtime, info.st_size, entry.path, not temporary)
                if not temporary:
                    kept_files += 1
                    kept_bytes += info.st_size
                if now - info.st_mtime > (TEMP_SECONDS if temporary else unused_seconds):
                    doomed.append(item)
                elif not temporary:  # a fresh temporary file is a write in progress
                    recent.append(item)
    recent.sort()  # the least recently used first
    total = sum(item[1] for item in recent)
    evicted = 0
    while total > max_bytes and evicted < len(recent):
        total -= recent[evicted][1]
        evicted += 1
    doomed += recent[:evicted]
    doomed.sort()
    removed_files = removed_bytes = 0
    for _, size, path, is_entry in doomed[:max_removals]:
        outcome = _remove(path)
        if outcome == _REMOVED:
            removed_files += 1
            removed_bytes += size
        if outcome != _KEPT and is_entry:
            kept_files -= 1
            kept_bytes -= size
    finished = len(doomed) <= max_removals
    return Pruned(removed_files, removed_bytes, kept_files, kept_bytes, finished)


_REMOVED, _GONE, _KEPT = "removed", "gone", "kept"


def _remove(path: str) -> str:
    """``_REMOVED``, ``_GONE`` (another process removed it first) or ``_KEPT`` (not allowed)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return _GONE
    except OSError:
        return _KEPT
    return _REMOVED
