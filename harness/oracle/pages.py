"""Zeroed arrays for large results written once (the oracle's gradient, a streamed case's
expected deltas), on the system's ordinary pages.

NumPy advises the kernel to back every array above 4 MiB with transparent huge pages
(``madvise(MADV_HUGEPAGE)``). Each huge page must then be found whole, and where memory is
fragmented, or a virtual machine's host takes back free guest memory in blocks of that
size, the first write to each costs far more than the same memory in ordinary pages: on
the development machine the oracle's 4 GiB gradient took two to three times the system
CPU with the advice (``docs/performance.md``, the oracle: ``benchmarks/bench_oracle.py``'s
modes ``nll`` and ``nll-thp``). Memory freed moments before may be reused as huge pages
quickly; a large result is seldom made from that. An anonymous memory map without the
advice gets the system's default pages (huge ones too where its policy is ``always``); its
memory is returned when the array and its views are gone.
"""

from __future__ import annotations

import math
import mmap

import numpy as np
from numpy.typing import DTypeLike

#: NumPy's own threshold for the advice: smaller arrays come from ``np.zeros``
MIN_BYTES = 1 << 22


def zeros(shape: tuple[int, ...], dtype: DTypeLike = np.float64) -> np.ndarray:
    """A writable array of ``shape``, all zeros; from ``MIN_BYTES`` on, in memory of its
    own (mapped lazily: each page is made and zeroed by the system when first written, by
    whichever thread writes it)."""
    kind = np.dtype(dtype)
    size = math.prod(shape) * kind.itemsize
    if size < MIN_BYTES:
        return np.zeros(shape, kind)
    return np.frombuffer(mmap.mmap(-1, size), kind).reshape(shape)
