"""``harness.oracle.pages.zeros``: zeroed, writable float64 arrays, in their own memory from
``MIN_BYTES`` on (the oracle's gradient), from NumPy below."""

from __future__ import annotations

import mmap

import numpy as np

from harness.oracle import pages


def test_large_arrays_are_zeroed_writable_and_in_their_own_memory():
    a = pages.zeros((3, pages.MIN_BYTES // 8 // 3 + 1))
    assert a.dtype == np.float64 and a.flags.writeable and a.flags.c_contiguous
    owner: object = a
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    assert isinstance(owner, memoryview) and isinstance(owner.obj, mmap.mmap)
    assert not a.any()
    a[1, 5] = 2.5
    assert a.sum() == 2.5


def test_small_arrays_come_from_numpy():
    for shape in [(0, 5), (2, 3), (1, pages.MIN_BYTES // 8 - 1)]:
        a = pages.zeros(shape)
        assert a.shape == shape and a.dtype == np.float64 and not a.any()
        assert a.base is None
