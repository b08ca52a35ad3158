"""Parsed and validated case files, pickled on disk: a second load skips YAML and the schema.

Parsing YAML, checking the JSON Schema and building Cases cost about 2 ms per
case; unpickling the finished Cases costs a few microseconds. An entry is keyed
by everything that decides the outcome of loading a file: the file's bytes and
path, ``require_expected``, the limits in force (``harness.cases.limits``), the NumPy
and Python versions, and ``harness.source_revision`` (the source of every module
that shapes a Case, and of the oracle whose error bounds literal expected values carry). Only files that load without error are
stored, so error messages are always produced by the real loader. Entries are
written under a temporary name and renamed into place (safe for concurrent
writers). The folder is ``<cache dir>/cases`` (``harness.cache_folder``);
``LOSSCONF_CACHE_DIR=off`` disables it. A Case from the cache carries the
``content_hash`` the loader computed, like every other copy of a Case.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np

from harness.atomic import write_atomic
from harness.cache_folder import cache_dir
from harness.cache_prune import after_write, used
from harness.cases import limits
from harness.source_revision import source_revision

#: cached properties of Case that are recomputed on use rather than stored (large arrays)
_DROP = ("logits", "target", "hidden", "classifier", "bias")


def _key(path: Path, data: bytes, require_expected: bool) -> str:
    h = hashlib.sha256(data)
    context = (
        str(path), str(path.resolve()), require_expected, repr(limits.current()),
        np.__version__, sys.version, source_revision(),
    )  # fmt: skip
    h.update(repr(context).encode())
    # the prefix names the file: storing a new version removes the old ones (see put)
    tag = hashlib.sha256(f"{path.resolve()}|{require_expected}".encode()).hexdigest()[:12]
    return f"{tag}-{h.hexdigest()[:32]}"


def _folder() -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / "cases"


def get(path: Path, require_expected: bool) -> tuple[str, list] | tuple[str | None, None]:
    """``(key, cases)`` when a valid entry exists, else ``(key, None)`` (key None: no caching)."""
    folder = _folder()
    if folder is None:
        return None, None
    try:
        if limits.exceeds(path.stat().st_size, limits.current().max_file_bytes):
            return None, None  # too large: the loader reports it
        key = _key(path, path.read_bytes(), require_expected)
    except Exception:  # unreadable file, bad limit variables: the loader reports it
        return None, None
    try:
        entry = folder / f"{key}.pickle"
        with open(entry, "rb") as f:
            cases = pickle.load(f)
        used(entry)
        return key, cases
    except Exception:  # absent, damaged, or pickled by another version: load and overwrite
        return key, None


def put(key: str, cases: list) -> None:
    """Store the cases of one file under ``key`` (best effort: a failure only costs speed)."""
    folder = _folder()
    if folder is None:
        return
    slim = []
    for case in cases:
        if case.expected is not None:
            # literal expected values: their error bounds are stored with the case (computing
            # them costs more than unpickling them); oracle cases keep theirs in the value cache
            for dtype in case.dtypes:
                case.expected_for(dtype)
        c = copy.copy(case)
        if cases and c.file == cases[0].file:
            c.file = cases[0].file  # one Path object: pickled once, not once per case
        for name in _DROP:
            c.__dict__.pop(name, None)
        slim.append(c)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{key}.pickle", pickle.dumps(slim, pickle.HIGHEST_PROTOCOL))
    except Exception:  # an unwritable folder, or a case that will not pickle: only speed lost
        return
    tag = key.split("-")[0]
    for old in folder.glob(f"{tag}-*.pickle"):  # earlier versions of the same file
        if old.name != f"{key}.pickle":
            old.unlink(missing_ok=True)
    after_write(folder.parent)
