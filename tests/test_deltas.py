"""A large problem's expected gradient kept as one byte an entry (harness/oracle/deltas.py):
decoding gives the oracle's entries bit for bit, on problems chosen to leave the
approximation far off (NaN and infinite logits, ignored rows, confident targets, zero and
negative weights and upstream gradients); a row that does not decode to what was encoded is
reported; too many escapes make the kept gradient unusable."""

from __future__ import annotations

import numpy as np
import pytest

from harness import CallInputs
from harness.oracle import compiled, deltas
from harness.oracle.error_model import RowBounds
from harness.oracle.fast import RowBlocks
from harness.oracle.problem import Problem

pytestmark = pytest.mark.skipif(
    not compiled.available(), reason="numba is not installed (extra 'fast')"
)

N, C = 90, 700
BLOCK = 20 * C  # 20 rows a block: several blocks, the last one short


def _problem(dtype: str, reduction: str, weighted: bool, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 4.0, (N, C))
    t = rng.integers(0, C, N)
    t[::9] = -100  # ignored rows
    t[9] = -100
    x[9, :] = np.nan  # an ignored row of NaN: a NaN gradient row, every entry escaped
    x[5, t[5]] = 80.0  # a confident target: 1 - p far below p's ulp
    x[11, 3] = np.inf  # +inf and NaN in kept rows: the mpmath oracle's rows
    x[12, 7] = np.nan
    x[13, : C // 2] = -np.inf  # half the row exactly 0
    x[14] = 0.0  # a flat row: every p the same
    weight = None
    if weighted:
        weight = rng.uniform(0.5, 2.0, C)
        weight[t[15]] = 0.0  # a zero weight: a zero gradient row
        weight[t[16]] = -1.5  # a negative weight: entries of the other sign
    upstream = None
    if reduction == "none":
        upstream = rng.normal(size=N)
        upstream[17] = 0.0
        upstream[18] = -0.0
    logits = x.astype(np.float32 if dtype == "float32" else np.float64)
    call = CallInputs(logits, t, weight, reduction, -100, 0.0, dtype, grad_output=upstream)
    return Problem.of_call(call, carrier_logits=True)


def _kept(problem: Problem, dtype: str) -> deltas.Deltas:
    blocks = RowBlocks(problem, target_elements=BLOCK)
    bounds = RowBounds(problem, dtype)
    assert blocks.possible and blocks.compiled and bounds.compiled
    kept = deltas.Deltas(blocks, bounds)
    while kept.encoded < N:
        kept.encode(kept.encoded, min(N, kept.encoded + blocks.rows_per_block))
    return kept


@pytest.fixture(autouse=True)
def _compiled_from_one_logit(monkeypatch):
    monkeypatch.setattr(compiled, "MIN_LOGITS", 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("reduction", "weighted"), [("mean", False), ("mean", True), ("sum", True), ("none", True)]
)
def test_decoding_gives_the_oracles_entries_bit_for_bit(dtype, reduction, weighted):
    problem = _problem(dtype, reduction, weighted, seed=len(reduction) + weighted)
    kept = _kept(problem, dtype)
    assert kept.usable and kept.n_escapes >= C  # the NaN row at least
    oracle = RowBlocks(problem, target_elements=BLOCK)  # the same blocks, computed again
    step = oracle.rows_per_block
    for lo in range(0, N, step):
        hi = min(N, lo + step)
        want, pending = oracle.block(lo, hi)
        assert want is not None
        _, got = kept.decode(lo, hi)
        assert np.array_equal(pending, kept.pending[lo:hi])
        rows = ~pending
        assert np.array_equal(got[rows].view(np.int64), want[rows].view(np.int64)), (
            f"rows {lo}..{hi}: decoded entries differ from the oracle's"
        )
    assert kept.pending[[11, 12]].all()  # left to mpmath, never encoded


def test_the_deltas_are_a_few_steps_and_escapes_are_rare():
    """On ordinary rows the approximation is within a few float64 steps: one byte is room
    enough, and only the planted rows escape."""
    kept = _kept(_problem("float32", "mean", False, seed=3), "float32")
    ordinary = np.ones(N, bool)
    ordinary[[5, 9, 11, 12, 13, 14]] = False
    d = kept.deltas[ordinary].astype(np.int64)
    assert np.abs(d).max() <= 16
    assert kept.n_escapes < 2 * C


def test_a_row_that_does_not_decode_to_its_entries_is_reported():
    kept = _kept(_problem("float32", "sum", False, seed=4), "float32")
    kept.deltas[21, 100] += 1  # one entry one step off
    kept.decode(0, 20)  # other blocks decode
    with pytest.raises(deltas.DecodeMismatch, match="row 21 "):
        kept.decode(20, 40)


def test_too_many_escapes_make_the_kept_gradient_unusable(monkeypatch):
    monkeypatch.setattr(deltas, "MAX_ESCAPES", C // 2)
    kept = _kept(_problem("float64", "mean", False, seed=5), "float64")
    assert not kept.usable
