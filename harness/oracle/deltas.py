"""A large problem's expected gradient, computed before it is needed and kept in one byte an
entry.

The streaming path (``harness.execution.streaming``) computes a large case's expected
gradient while the case's logits are made, on the core the generation leaves idle, before
the adapter's call. The gradient itself, 8 bytes a logit, is not kept. What is kept of each
entry is its distance, in float64 steps, from an approximation that the comparison after the
call forms anyway: the error bounds take NumPy's exponential of each logit after the row's
largest and the row's sum of them (``RowBounds``), and ``z / s`` times the row's factor (one
float64, ``RowBlocks.factors``), minus the factor at the target, lies within a few float64
steps of the correctly rounded entry. The distance of two same-signed float64s in steps is
the difference of their bits, so one signed byte holds it exactly; an entry further off, or
of the other sign (a NaN, a zero whose sign differs) is an escape, its value kept beside.
Decoding forms the same approximation and adds the distance back: the oracle's value, bit for
bit.

That rests on the approximation being formed the same way both times: the same NumPy
exponential and pairwise row sums over the same rows. Each row also keeps the sum (modulo
2**64) of its entries' bits, and decoding checks it: a row that does not decode to its sum
(a different NumPy between the two, say) is reported, and the caller computes the gradient
again instead (``harness.execution.streaming``).

Only problems of the compiled oracle (``harness.oracle.compiled.applies``) and its compiled
bounds are kept this way: their rows are computed on one thread, without the GIL, beside the
code that makes the logits.
"""

from __future__ import annotations

import numpy as np

from harness.oracle import compiled, pages
from harness.oracle.error_model import RowBounds
from harness.oracle.fast import RowBlocks

#: the delta of an entry kept beside the deltas, as a float64 (an escape)
ESCAPE = -128
#: entries escaped (kept as float64 beside the deltas) before keeping them is given up: a
#: problem with this many is computed after the call instead
MAX_ESCAPES = 1 << 20


class DecodeMismatch(Exception):
    """A row whose decoded entries do not sum to the bits of the ones encoded."""


class Deltas:
    """The expected gradient of a ``RowBlocks`` problem, block by block as the blocks are
    encoded (in order, on one thread), then decoded block by block (on any threads)::

        kept = Deltas(blocks, bounds)
        for lo in range(0, P, blocks.rows_per_block):    # as the rows' logits are made
            kept.encode(lo, min(P, lo + blocks.rows_per_block))
        state, expected = kept.decode(lo, hi)            # after the call, any order

    ``encode`` also takes the rows' loss terms of ``bounds`` (``RowBounds.loss_terms``), so
    that ``bounds.finish`` needs no other pass. ``pending`` marks the rows the oracle leaves
    to mpmath (``RowBlocks.finish`` gives them): they are not encoded. ``usable`` is False
    once more than ``MAX_ESCAPES`` entries were escaped.
    """

    def __init__(self, blocks: RowBlocks, bounds: RowBounds):
        self.blocks, self.bounds = blocks, bounds
        n, c = bounds.n_pos, bounds.c
        #: one signed byte an entry (ordinary pages: see ``harness.oracle.pages``)
        self.deltas = pages.zeros((n, c), np.int8)
        self.checks = np.zeros(n, np.uint64)
        self.pending = np.zeros(n, bool)
        #: block start -> (flat positions in the block, their values) of its escapes
        self.escapes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.n_escapes = 0
        self.usable = True
        #: rows encoded so far (blocks are encoded in order)
        self.encoded = 0

    def encode(self, lo: int, hi: int) -> None:
        """Rows [lo, hi) (the next block of ``blocks``: ``lo`` is ``encoded``): the oracle's
        gradient rows, kept as deltas; their loss terms in ``bounds``."""
        assert lo == self.encoded
        encode = compiled.delta_kernels()[0]
        expected, pending = self.blocks.block(lo, hi)
        assert expected is not None  # the gradient is wanted
        self.pending[lo:hi] = pending
        _, z, s, _, y, *_ = self.bounds.loss_terms(lo, hi)
        q = self.blocks.factors(lo, hi)
        deltas = self.deltas[lo:hi]
        escaped = encode(z, s, y, q, expected, pending, deltas, self.checks[lo:hi], ESCAPE)
        if escaped:
            self.n_escapes += escaped
            self.usable = self.usable and self.n_escapes <= MAX_ESCAPES
            if self.usable:
                where = np.flatnonzero(deltas == ESCAPE)  # not in pending rows: left 0
                self.escapes[lo] = (where, expected.reshape(-1)[where].copy())
        self.encoded = hi

    def decode(self, lo: int, hi: int) -> tuple[tuple, np.ndarray]:
        """Rows [lo, hi) (a block as encoded), after every block is encoded: their state for
        ``bounds.compare_state`` and their expected gradient rows (this thread's buffer,
        reused by its next call; pending rows' entries undefined). Raises
        ``DecodeMismatch``."""
        decode = compiled.delta_kernels()[1]
        state = self.bounds.state(lo, hi)
        _, z, s, _, y, *_ = state
        out = self.bounds.buffer("expected", hi - lo, self.bounds.c)
        row = decode(
            z, s, y, self.blocks.factors(lo, hi), self.deltas[lo:hi], self.pending[lo:hi],
            self.checks[lo:hi], ESCAPE, out,
        )  # fmt: skip
        if row >= 0:
            raise DecodeMismatch(f"row {lo + row} does not decode to the entries encoded")
        escaped = self.escapes.get(lo)
        if escaped is not None:
            out.reshape(-1)[escaped[0]] = escaped[1]
        return state, out
