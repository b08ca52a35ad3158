"""The disk cache's file of arrays (``harness.oracle.cache.write_arrays`` / ``read_arrays``):
what is written reads back bit for bit, and a file that is not exactly what was written
(truncated, a flipped bit, another format) is never read, so a damaged cache costs a
recomputation and never a verdict."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness.cases.loader import load_paths
from harness.oracle import cache
from harness.oracle.linear import fused_linear_cross_entropy

ARRAYS = {
    "loss": np.array(2.5),  # 0-d, as a reduced loss is
    "grad": np.arange(12.0).reshape(3, 4).T,  # not C-contiguous
    "empty": np.zeros((0, 5)),
    "special": np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324]),
    "half": np.ones((2, 3), np.float16),
    "labels": np.arange(7, dtype=np.int32),
}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_round_trip_is_bitwise_and_writable(tmp_path):
    path = tmp_path / f"x{cache.SUFFIX}"
    cache.write_arrays(path, ARRAYS)
    back = cache.read_arrays(path)
    assert back is not None and list(back) == list(ARRAYS)
    for name, want in ARRAYS.items():
        got = back[name]
        assert _same(got, np.ascontiguousarray(want).reshape(want.shape)), name
        assert got.flags.writeable and got.flags.aligned, name


@given(
    hnp.arrays(
        st.sampled_from([np.float64, np.float32, np.float16]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_any_float_array_reads_back_bit_for_bit(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("cache") / f"x{cache.SUFFIX}"
    cache.write_arrays(path, {"loss": value, "loss_bound": np.abs(value)})
    back = cache.read_arrays(path)
    assert back is not None
    assert _same(back["loss"], value) and _same(back["loss_bound"], np.abs(value))


DAMAGES = (
    "truncated by a byte", "one byte too many", "cut in the header", "empty",
    "a flipped bit in the payload", "a header that is not JSON", "a size that disagrees",
    "another format (npz)",
)  # fmt: skip


def _damaged(data: bytes) -> dict[str, bytes]:
    """The ways (``DAMAGES``) a file of the cache can be other than what was written."""
    header_end = data.index(b"\n", len(cache.MAGIC))
    flipped_payload = bytearray(data)
    flipped_payload[-3] ^= 0x01  # one bit of the last array
    flipped_header = bytearray(data)
    flipped_header[header_end - 1] = ord("x")  # the padding before the payload
    size = data.index(b'"size"')
    return {
        "truncated by a byte": data[:-1],
        "one byte too many": data + b"\0",
        "cut in the header": data[: len(cache.MAGIC) + 5],
        "empty": b"",
        "a flipped bit in the payload": bytes(flipped_payload),
        "a header that is not JSON": bytes(flipped_header),
        "a size that disagrees": data[:size] + data[size:].replace(b'"size": ', b'"size": 1', 1),
        "another format (npz)": b"PK\x03\x04" + data[4:],
    }


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_file_is_never_read(tmp_path, how):
    path = tmp_path / f"x{cache.SUFFIX}"
    cache.write_arrays(path, ARRAYS)
    damaged = _damaged(path.read_bytes())
    assert tuple(damaged) == DAMAGES
    path.write_bytes(damaged[how])
    assert cache.read_arrays(path) is None, how


def test_a_damaged_file_costs_a_recomputation_not_a_verdict(tmp_path, monkeypatch):
    """The oracle's values are computed again when their file is damaged, and are then the
    values a cold run computes."""
    from harness.oracle.problem import Problem

    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_memory", {})
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 7))
    problem = Problem(logits, np.array([0, 3, 6, 2]), probability_target=False)
    first = cache.oracle_expected("k", "float32", lambda: problem)
    (stored,) = tmp_path.glob(f"*{cache.SUFFIX}")
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0x10  # a bit of the last array's bytes
    stored.write_bytes(bytes(data))
    cache._memory.clear()
    computed = cache.stats["computed"]
    again = cache.oracle_expected("k", "float32", lambda: problem)
    assert cache.stats["computed"] == computed + 1, "the damaged file was read"
    for name in ("loss", "grad", "loss_bound", "grad_bound"):
        assert _same(getattr(again, name), getattr(first, name)), name


def test_fused_linear_values_on_one_blas_thread_are_those_on_several():
    """The fused linear oracle's products are exact: the values do not depend on the BLAS's
    threads (only the bounds' plain products may, which one_blas_thread makes the same
    everywhere); the limit holds inside and is lifted after."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    case = next(c for c in load_paths().cases if c.id == "fused_linear/long_dot_products")
    problem = case.linear_problem("float32")
    before = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
    several = fused_linear_cross_entropy(problem).expected
    with cache.one_blas_thread(True):
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 1 for p in blas)
        one = fused_linear_cross_entropy(problem).expected
    for name in ("loss", "grad_hidden", "grad_classifier", "grad_bias"):
        a, b = getattr(one, name), getattr(several, name)
        assert (a is None and b is None) or a.tobytes() == b.tobytes(), name
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info()] == before
    with cache.one_blas_thread(False):  # a large problem: BLAS as it is
        assert [p["num_threads"] for p in threadpoolctl.threadpool_info()] == before
