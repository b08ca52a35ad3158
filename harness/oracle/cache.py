"""Expected values computed by the oracle at run time (``expected: oracle`` cases), cached.

Two levels: a dict for the run, and files on disk so a second run does not
recompute them (the oracle takes about 0.1 to 0.2 us per logit on large cases, plus
a few milliseconds per call). A file is keyed by the case's content
hash (inputs, recipes with their fingerprints, options), the dtype and
``harness.source_revision`` (the source of the oracle, its bounds and kernels, and
of the case code that makes its inputs), so editing a case or that code never
reuses a stale value. Files are written to a temporary name and renamed into place, so
concurrent writers (``--jobs``, pytest-xdist, two CI jobs) never expose a
partial file; both write the same bytes and the last rename wins.

Large cases (at least ``LARGE_ELEMENTS`` logits) keep only their loss and its bound, in a
file of their own (``read_loss``, ``write_loss``): their gradient and its bound would be
gigabytes (twice the logits' elements in float64); they are recomputed by each run, block by
block (``harness.execution.streaming``), and not kept in memory between calls either.

Folder: ``$LOSSCONF_CACHE_DIR``, else ``$XDG_CACHE_HOME/lossconf``, else
``~/.cache/lossconf``. ``LOSSCONF_CACHE_DIR=off`` disables the disk level; an
unwritable folder is skipped silently (values are then computed every run).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from harness.atomic import write_atomic
from harness.cache_folder import cache_dir
from harness.cache_prune import after_write, used
from harness.oracle import cross_entropy
from harness.oracle.error_model import error_bounds
from harness.oracle.linear import LinearExpected, LinearProblem, fused_linear_cross_entropy
from harness.oracle.linear_bounds import linear_bounds
from harness.oracle.problem import Expected, Problem
from harness.source_revision import source_revision

_memory: dict[tuple[str, str], Expected] = {}
#: counts for this process, read by tests and benchmarks
stats = {"memory_hits": 0, "disk_hits": 0, "computed": 0}


class Helper(Protocol):
    """Another process computing expected values for this run and storing them on disk
    (``harness.execution.prefetch``)."""

    def settled(self, item: tuple[str, str, str]) -> bool:
        """Whether the helper has stored ``item`` (kind 'ce' or 'linear', key, dtype), after
        waiting while it computes it; False when the caller is to compute it itself (the
        helper then leaves it)."""
        ...


#: the run's helper, while one works (``set_helper``)
_helper: Helper | None = None


def set_helper(helper: Helper | None) -> None:
    """Consult ``helper`` before computing a value the disk lacks (None: no helper)."""
    global _helper
    _helper = helper


def _from_helper(kind: str, key: str, dtype: str) -> bool:
    """Whether the run's helper has stored this value (after waiting for it)."""
    return _helper is not None and _helper.settled((kind, key, dtype))


def pending(key: str, dtype: str) -> bool:
    """Whether ``oracle_expected(key, dtype, ...)`` would compute (neither in memory nor on
    disk), for a cache on disk; False without one."""
    path = cache_path(key, dtype)
    return path is not None and (key, dtype) not in _memory and not path.is_file()


def pending_linear(key: str, dtype: str, size: int) -> bool:
    """``pending`` for ``oracle_linear_expected`` (False for one it would not store)."""
    path = _linear_path(key, dtype, size)
    return path is not None and (key, dtype) not in _linear_memory and not path.is_file()


def forget() -> None:
    """Drop the values held in memory (a helper process keeps none once stored)."""
    _memory.clear()
    _linear_memory.clear()


#: bumped when the meaning of a key changes: entries written under an older scheme
#: (before 2 the case hash of a selected or cache-loaded case could collide) are never read
KEY_SCHEME = 3


@functools.lru_cache(maxsize=1)
def oracle_revision() -> str:
    """The key scheme and ``harness.source_revision`` (the oracle's source, its bounds' and
    kernels', and the case code that makes its inputs): changed code never reads old values."""
    return hashlib.sha256(f"scheme {KEY_SCHEME} {source_revision()}".encode()).hexdigest()[:12]


#: logits from which a case is large: only its loss is cached (16M: 64 MiB of float32, a
#: 128 MiB float64 gradient and as much again for its bound)
LARGE_ELEMENTS = 1 << 24


def cache_path(key: str, dtype: str, part: str = "") -> Path | None:
    """The file of ``key`` (a case's content hash) in ``dtype``, or None when disabled;
    ``part`` 'loss': the loss-only file of a large case."""
    folder = cache_dir()
    if folder is None:
        return None
    suffix = f"-{part}" if part else ""
    return folder / f"{key}-{dtype}-{oracle_revision()}{suffix}{SUFFIX}"


def read_loss(key: str, dtype: str) -> Expected | None:
    """The cached expected loss and its bound of a large case (gradient None), or None."""
    path = cache_path(key, dtype, "loss")
    found = _read(path) if path is not None and path.is_file() else None
    if found is not None:
        stats["disk_hits"] += 1
        return Expected(found.loss, None, found.loss_bound, None)
    return None


def write_loss(key: str, dtype: str, expected: Expected) -> None:
    """Store the loss and its bound of a large case (a few hundred bytes)."""
    path = cache_path(key, dtype, "loss")
    if path is not None:
        _write(path, Expected(expected.loss, None, expected.loss_bound, None))


def _read(path: Path) -> Expected | None:
    found = read_arrays(path)
    if found is None or not {"loss", "loss_bound"} <= found.keys():
        return None
    used(path)
    return Expected(
        found["loss"], found.get("grad"), found["loss_bound"], found.get("grad_bound"),
        found.get("z_loss"), found.get("z_loss_bound"),
    )  # fmt: skip


def _write(path: Path, expected: Expected) -> None:
    # the oracle computes the bounds with the values: those it stores are never None
    assert expected.loss_bound is not None
    arrays = {"loss": expected.loss, "loss_bound": expected.loss_bound}
    if expected.grad is not None:
        assert expected.grad_bound is not None
        arrays["grad"] = expected.grad
        arrays["grad_bound"] = expected.grad_bound
    if expected.z_loss is not None:
        assert expected.z_loss_bound is not None
        arrays["z_loss"] = expected.z_loss
        arrays["z_loss_bound"] = expected.z_loss_bound
    write_arrays(path, arrays)
    after_write(path.parent)


#: the cache files' name ending and first line (``write_arrays``)
SUFFIX = ".arrays"
MAGIC = b"lossconf arrays 1\n"
#: the arrays start at a multiple of this many bytes (each is then aligned for NumPy)
ALIGN = 64


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Store named arrays in one file: ``MAGIC``, a line of JSON (each array's dtype, shape,
    offset and length, the payload's length and CRC-32), spaces up to a multiple of ``ALIGN``
    bytes, then the arrays' bytes. Reading one back is a read and a view per array, where
    NumPy's ``.npz`` (a zip with a parsed header per array) cost about 1 ms a file: most of
    a warm run of the built-in suite. Written to a temporary name and renamed into place;
    an unwritable folder is skipped."""
    table, chunks, offset, crc = [], [], 0, 0
    for name, value in arrays.items():
        a = np.asarray(value)  # tobytes() below is in C order, whatever the layout
        if a.dtype.hasobject:
            raise TypeError(f"{name}: object arrays cannot be stored")
        table.append([name, a.dtype.str, list(a.shape), offset, a.nbytes])
        pad = -a.nbytes % 8  # every array starts 8-byte aligned
        chunks += [a.tobytes(), b"\0" * pad]
        crc = zlib.crc32(chunks[-1], zlib.crc32(chunks[-2], crc))
        offset += a.nbytes + pad
    header = json.dumps({"arrays": table, "size": offset, "crc32": crc})
    head = MAGIC + header.encode()
    head += b" " * (-(len(head) + 1) % ALIGN) + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, b"".join([head, *chunks]))
    except OSError:
        return


def read_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays ``write_arrays`` stored in ``path`` (writable, each its own view of one
    buffer), or None when the file is absent, of another format, truncated or damaged (its
    CRC-32 differs): the values are then computed again, never read wrong."""
    try:
        with open(path, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            if f.readinto(data) != len(data):
                return None
    except OSError:
        return None
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end])
        payload = memoryview(data)[end + 1 :]
        if len(payload) != header["size"] or zlib.crc32(payload) != header["crc32"]:
            return None
        out = {}
        for name, dtype, shape, offset, nbytes in header["arrays"]:
            kind = np.dtype(dtype)
            if kind.hasobject or offset + nbytes > len(payload):
                return None
            out[name] = np.frombuffer(payload, kind, nbytes // kind.itemsize, offset).reshape(shape)
        return out
    except (ValueError, TypeError, KeyError):  # a header that is not ours
        return None


def oracle_expected(key: str, dtype: str, problem: Callable[[], Problem]) -> Expected:
    """Expected values of the problem named ``key`` (a case's content hash, followed by
    ``@dialect`` for a dialect other than PyTorch's) in ``dtype``, with their error bounds: from
    memory, from disk, or computed from ``problem()`` and stored."""
    memory_key = (key, dtype)
    if memory_key in _memory:
        stats["memory_hits"] += 1
        return _memory[memory_key]
    path = cache_path(key, dtype)
    found = _read(path) if path is not None and path.is_file() else None
    if found is None and path is not None and _from_helper("ce", key, dtype):
        found = _read(path)
    if found is not None:
        stats["disk_hits"] += 1
    else:
        stats["computed"] += 1
        built = problem()
        result = cross_entropy(built)
        bounds = error_bounds(built, dtype, result.loss, result.grad, result.z_loss)
        found = Expected(
            result.loss, result.grad, bounds.loss, bounds.grad, result.z_loss, bounds.z_loss
        )
        if result.grad is not None and result.grad.size >= LARGE_ELEMENTS:
            write_loss(key, dtype, found)  # the gradient would be gigabytes
            return found
        if path is not None:
            _write(path, found)
    _memory[memory_key] = found
    return found


def remember(key: str, dtype: str, expected: Expected) -> None:
    """Hold ``expected`` (values and bounds computed elsewhere by this code: the built-in
    suite's frozen data, ``harness.cases.frozen``) as the run's value of ``key`` in ``dtype``."""
    _memory[(key, dtype)] = expected


#: fused linear expected values with more elements than this (the classifier's gradient and
#: its bound are each V x H float64) are recomputed for each dtype and never kept: a run
#: holds one at a time (docs/fused-linear.md, "Memory")
LINEAR_KEEP_ELEMENTS = 1 << 22


def oracle_linear_expected(
    key: str, dtype: str, problem: Callable[[], LinearProblem], size: int
) -> LinearExpected:
    """Expected values and bounds of a fused linear case (``size``: its classifier's elements),
    from memory, from disk, or computed and stored (only when ``size`` is small enough)."""
    memory_key = (key, dtype)
    found = _linear_memory.get(memory_key)
    if found is not None:
        stats["memory_hits"] += 1
        return found
    keep = size <= LINEAR_KEEP_ELEMENTS
    path = _linear_path(key, dtype, size)
    found = _read_linear(path) if path is not None and path.is_file() else None
    if found is None and path is not None and _from_helper("linear", key, dtype):
        found = _read_linear(path)
    if found is not None:
        stats["disk_hits"] += 1
    else:
        stats["computed"] += 1
        built = problem()
        with one_blas_thread(keep):
            found = linear_bounds(built, dtype, fused_linear_cross_entropy(built))
        if path is not None:
            arrays = {
                name: getattr(found, name)
                for name in _LINEAR_ARRAYS
                if getattr(found, name) is not None
            }
            arrays["oracle_error"] = np.array(found.oracle_error)
            write_arrays(path, arrays)
            after_write(path.parent)
    if keep:
        _linear_memory[memory_key] = found
    return found


_linear_memory: dict[tuple[str, str], LinearExpected] = {}


def _linear_path(key: str, dtype: str, size: int) -> Path | None:
    """The file of a fused linear case's values (``size``: its classifier's elements); None
    when the cache is disabled or the values are too large to keep."""
    return cache_path(f"linear-{key}", dtype) if size <= LINEAR_KEEP_ELEMENTS else None


@functools.lru_cache(maxsize=1)
def _blas_pools() -> object | None:
    """threadpoolctl's view of the BLAS libraries loaded (the ``fast`` extra), or None."""
    try:
        # imported here: it scans the loaded libraries, and only fused linear cases need it
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
    except ImportError:
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread(small: bool) -> Iterator[None]:
    """For a ``small`` fused linear problem, the BLAS on one thread: its products are many
    small ones (a slice pair each, ``harness.oracle.exact_matmul``), on which OpenBLAS's
    threads spin between calls for more CPU time than they save (three times the CPU and four
    times the wall time of one thread on the suite's fused linear cases, on two busy cores).
    The values are the same on any number of threads (every slice product is exact); the
    error bounds' plain float64 products may differ in their last bits with the number of
    threads, and on one they are the same on every machine whatever its cores. Without
    threadpoolctl (the ``fast`` extra), BLAS as it is."""
    pools = _blas_pools() if small else None
    if pools is None:
        yield
        return
    with pools.limit(limits=1, user_api="blas"):  # type: ignore[attr-defined]
        yield


def remember_linear(key: str, dtype: str, expected: LinearExpected) -> None:
    """``remember`` for a fused linear case's values."""
    _linear_memory[(key, dtype)] = expected


_LINEAR_ARRAYS = (
    "loss", "grad_hidden", "grad_classifier", "grad_bias", "loss_bound", "grad_hidden_bound",
    "grad_classifier_bound", "grad_bias_bound", "z_loss", "z_loss_bound",
)  # fmt: skip


def _read_linear(path: Path) -> LinearExpected | None:
    found = read_arrays(path)
    if found is None or not {"loss", "oracle_error"} <= found.keys():
        return None
    used(path)
    return LinearExpected(
        found["loss"], found.get("grad_hidden"), found.get("grad_classifier"),
        found.get("grad_bias"), found.get("loss_bound"), found.get("grad_hidden_bound"),
        found.get("grad_classifier_bound"), found.get("grad_bias_bound"), found.get("z_loss"),
        found.get("z_loss_bound"), oracle_error=float(found["oracle_error"]),
    )  # fmt: skip
