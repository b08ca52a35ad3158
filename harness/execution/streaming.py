"""Large cases end to end without a float64 copy of anything the size of the logits.

A case takes this path when ``applies``: ``expected: oracle``, 2-D logits (N, C) of at least
``harness.oracle.cache.LARGE_ELEMENTS`` elements, class-index targets, no kernel field. Then:

- the logits are made directly in the case dtype, block by block
  (``Case.blockwise_inputs``), and a CRC-32 of each block's bytes is taken as it is made, on
  a thread beside the generation;
- on that thread too (``Ahead``, where the compiled oracle serves the case), each block of
  rows is given to the oracle as soon as its logits are made, and its gradient kept in one
  byte an entry (``harness.oracle.deltas``), so the oracle's pass costs the call nothing;
- the in-place write check compares those checksums with ones taken after the call instead
  of keeping a copy; only when they differ are the logits made again, to say which elements
  changed (the message of a small case) and to give the oracle the unmodified values;
- after the call the kept blocks are decoded, bounded (``harness.oracle.error_model.
  RowBounds``) and compared with the adapter's gradient rows (``BlockComparison``) on one
  thread per core; without a kept gradient the oracle (``harness.oracle.fast.RowBlocks``,
  the same correctly rounded arithmetic) runs block by block after the call, each block
  compared as it is made. Neither the float64 expected gradient nor its bound is held;
- only the loss and its bound are cached on disk (``harness.oracle.cache``), never the
  gradient.

The results are those of the plain path: same statuses, errors, ratios and messages
(``tests/test_streaming.py`` runs both on the same cases).
"""

from __future__ import annotations

import collections
import contextlib
import queue
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from harness import cores
from harness.adapters import CallInputs
from harness.cases.model import Case
from harness.dtypes import carrier, scalar_ulp
from harness.execution.compare import Comparison, Errors, compare, mismatch_message
from harness.oracle import cache, compiled
from harness.oracle.deltas import DecodeMismatch, Deltas
from harness.oracle.error_model import RowBounds
from harness.oracle.fast import RowBlocks, preload_tables
from harness.oracle.problem import Expected, Problem

#: logits per block of rows: float64 blocks of 8 MiB (the size of the error model's blocks)
BLOCK_ELEMENTS = 1 << 20

#: gradients decoded from what ``Ahead`` kept (``kept``), and those whose decoding did not
#: give back the entries kept (then computed again after the call)
stats = {"kept": 0, "decode_mismatch": 0}


def applies(case: Case) -> bool:
    """Whether ``case`` runs on the streaming path (see the module's docstring)."""
    return (
        case.expected is None
        and case.expect_error is None
        and case.logits_size >= cache.LARGE_ELEMENTS  # first: what most cases are not
        and len(case.logits_shape) == 2
        and not case.probability_target
        and case.softcap is None
        and case.logit_scale == 1.0
        and case.z_loss == 0.0
        and not case.return_z_loss
        and case.shift == 0
    )


@dataclass
class LogitsDigest:
    """CRC-32 of the logits' bytes, one for each block as they are made (in order)."""

    #: (bytes, CRC-32) of each block
    crcs: list[tuple[int, int]] = field(default_factory=list)

    def add(self, block: np.ndarray) -> None:
        data = _bytes(block)
        self.crcs.append((data.nbytes, zlib.crc32(data)))

    @contextlib.contextmanager
    def beside(self) -> Iterator[Callable[[np.ndarray], None]]:
        """``add`` on a thread of its own, beside the code that makes the blocks (zlib
        releases the GIL over a buffer; the generator holds it): yields the function to give
        each block to, in order; on leaving, every block given has been added. A block must
        not change until then."""
        blocks: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        failed: list[BaseException] = []

        def follow() -> None:
            while (block := blocks.get()) is not None:
                if not failed:
                    try:
                        self.add(block)
                    except BaseException as e:  # re-raised by the caller's thread
                        failed.append(e)

        thread = threading.Thread(target=follow, name="lossconf-digest", daemon=True)
        thread.start()
        try:
            yield blocks.put
        finally:
            blocks.put(None)
            thread.join()
        if failed:
            raise failed[0]

    def matches(self, logits: object) -> bool:
        """Whether ``logits`` still has the bytes the digest was taken of (a CRC-32 of each
        block, a few GB/s, the blocks on one thread per core; a copy and a comparison would
        cost the logits' bytes again)."""
        if not isinstance(logits, np.ndarray) or not logits.flags.c_contiguous:
            return False
        data = _bytes(logits)
        if data.nbytes != sum(size for size, _ in self.crcs):
            return False
        starts = np.cumsum([0] + [size for size, _ in self.crcs]).tolist()

        def same(k: int) -> bool:
            return zlib.crc32(data[starts[k] : starts[k + 1]]) == self.crcs[k][1]

        threads = min(len(self.crcs), cores.available())
        if threads <= 1:
            return all(same(k) for k in range(len(self.crcs)))
        with ThreadPoolExecutor(threads) as pool:
            return all(pool.map(same, range(len(self.crcs))))


def _bytes(a: np.ndarray) -> memoryview:
    """The bytes of an array, without a copy when it is C-contiguous."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).data


def fresh_inputs(
    case: Case, dtype: str, want_grad: bool
) -> tuple[CallInputs, LogitsDigest, Ahead | None]:
    """The call's inputs, logits made directly in ``dtype``, with their checksum, and (where
    it applies) their expected gradient, computed while they were made (``Ahead``)."""
    digest = LogitsDigest()
    ahead = Ahead(case, dtype, digest) if want_grad and _compiled_serves(case, dtype) else None
    made = False
    if ahead is not None:  # the checksum and the gradient on the thread beside
        try:
            with _prompt_handover():
                inputs = case.blockwise_inputs(
                    dtype, want_grad=want_grad, on_block=ahead.made, on_start=ahead.start
                )  # fmt: skip
            made = True
        finally:  # the checksum is whole once it returns
            ahead.stop(keep=made)
        return inputs, digest, ahead
    loading = _preload(case, dtype)
    try:
        with digest.beside() as add:  # the checksum beside the generation, on the other core
            inputs = case.blockwise_inputs(dtype, want_grad=want_grad, on_block=add)
    finally:
        if loading is not None:  # done before the adapter's call, which it must not slow
            loading.join()
    return inputs, digest, None


#: seconds a thread holds the GIL while another waits for it, while the logits are made
HANDOVER_S = 0.0005


@contextlib.contextmanager
def _prompt_handover() -> Iterator[None]:
    """Python's switch interval lowered to ``HANDOVER_S`` inside. The generator draws each
    block without the GIL, and wants it back to start the next; a thread beside it that
    holds the GIL then keeps it up to the switch interval (5 ms by default, a third of a
    block's draw): the generation ran a third slower beside ``Ahead``'s thread."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, HANDOVER_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class Ahead:
    """A large case's expected gradient, computed on a thread while its logits are made, kept
    as one byte an entry (``harness.oracle.deltas``), and their checksum.

    Making the logits holds one core (NumPy's generator, drawing block after block, takes
    the GIL only between blocks); the checksum of each block, the oracle and the bounds' first
    pass run beside it, each block of rows as soon as its logits are made, in compiled code
    (and zlib) that releases the GIL, on one thread: the thread first loads the compiled
    kernels (``compiled.preload``), then catches up. It stops when the logits are made, after
    the block in hand: the checksum is then finished on the caller's thread, the blocks of
    rows it has not reached are computed after the call, on every core, and
    ``check_gradient`` decodes each block instead of computing it. ``kept`` is None where the
    thread stopped short (an error, too many escapes, a problem outside the compiled kernels):
    ``check_gradient`` then computes the whole gradient after the call, as without this."""

    def __init__(self, case: Case, dtype: str, digest: LogitsDigest):
        self.case, self.dtype, self.digest = case, dtype, digest
        self.kept: Deltas | None = None
        self._rows_made = 0
        self._unsummed: collections.deque[np.ndarray] = collections.deque()  # for the digest
        self._ready = threading.Condition()
        self._stop = False
        self._keep = True  # False once stopped without keeping what it computed
        self._thread: threading.Thread | None = None

    def start(self, inputs: CallInputs) -> None:
        """Start the thread, on the inputs whose logits are about to be made."""
        problem = Problem.of_call(inputs, carrier_logits=True)
        self._thread = threading.Thread(
            target=self._run, args=(problem,), name="lossconf-ahead", daemon=True
        )  # fmt: skip
        self._thread.start()

    def made(self, block: np.ndarray) -> None:
        """One more block of the logits' rows is made (whole rows, in order)."""
        with self._ready:
            self._unsummed.append(block)
            self._rows_made += block.shape[0] if block.ndim > 1 else 1
            self._ready.notify()

    def stop(self, *, keep: bool) -> None:
        """Stop the thread after the block in hand, wait for it and finish the checksum;
        ``keep``: the logits were all made, and what it computed stands. Else (the making
        raised: an interrupt, a fingerprint that does not match) ``kept`` is None and the
        thread is not waited for: it may be compiling the kernels, for seconds, and stops at
        its next block (a daemon thread, it never holds the process)."""
        with self._ready:
            self._stop = True
            self._ready.notify()
        if not keep:
            self.kept = None
            self._keep = False
            return
        if self._thread is not None:
            self._thread.join()
        self._sum_made()

    def _sum_made(self) -> None:
        """The digest of the blocks made so far (on one thread at a time: in order)."""
        while self._unsummed:
            self.digest.add(self._unsummed.popleft())

    def _run(self, problem: Problem) -> None:
        try:
            self.kept = kept = self._deltas(problem)
            with compiled.one_thread():  # the other core makes the logits
                while True:
                    hi = self._rows_made + 1  # the checksum alone: the next block made
                    if kept is not None and kept.usable and kept.encoded < kept.bounds.n_pos:
                        hi = min(kept.bounds.n_pos, kept.encoded + kept.blocks.rows_per_block)
                    with self._ready:
                        while self._rows_made < hi and not self._stop and not self._unsummed:
                            self._ready.wait()
                    self._sum_made()
                    if self._stop:
                        break
                    if kept is not None and kept.usable and self._rows_made >= hi:
                        kept.encode(kept.encoded, hi)
        except Exception:
            # a failure here only costs the time it would save: the gradient is computed
            # after the call instead, where any error of the oracle's is reported
            self.kept = None
        if not self._keep or (self.kept is not None and not self.kept.usable):
            self.kept = None

    def _deltas(self, problem: Problem) -> Deltas | None:
        """The kernels loaded and the problem set up, or None where they do not serve it."""
        compiled.preload(carrier(self.dtype), carrier(self.dtype))
        preload_tables()
        self._sum_made()
        blocks = RowBlocks(problem, want_grad=True, target_elements=BLOCK_ELEMENTS)
        if not blocks.possible or not blocks.compiled:
            return None
        bounds = RowBounds(problem, self.dtype, want_grad=True)
        return Deltas(blocks, bounds) if bounds.compiled else None


def _compiled_serves(case: Case, dtype: str) -> bool:
    """Whether the compiled oracle and bounds may serve the case in ``dtype``
    (``compiled.applies``, but for what only the case tells, before its inputs are made)."""
    return (
        case.logits_size >= compiled.MIN_LOGITS
        and carrier(dtype) in (np.float32, np.float64)
        and case.label_smoothing == 0
        and not case.probability_target
        and compiled.available()
    )


def _preload(case: Case, dtype: str) -> threading.Thread | None:
    """A thread loading the compiled kernels the oracle and the bounds will run on ``case``
    (``compiled.preload``), started while its logits are made (the generator holds the GIL
    while it draws a block, the loading between blocks); None where they will not run."""
    if not _compiled_serves(case, dtype):
        return None
    logits = carrier(dtype)

    def load() -> None:
        # a kernel that cannot be loaded here fails again at its first call, which reports it
        with contextlib.suppress(Exception):
            compiled.preload(logits, logits)
            preload_tables()

    thread = threading.Thread(target=load, name="lossconf-preload", daemon=True)
    thread.start()
    return thread


def pristine_inputs(case: Case, dtype: str, want_grad: bool) -> CallInputs:
    """The inputs made again: the unmodified values, after an adapter wrote to its own."""
    return case.blockwise_inputs(dtype, want_grad=want_grad)


class BlockComparison:
    """``compare`` of a (P, C) array given block of rows by block of rows, in any order: the
    same ``Comparison`` (errors, worst element, message) as one call on the whole arrays."""

    def __init__(self, shape: tuple[int, int], dtype: str, what: str, rtol: float, atol: float):
        self.shape, self.dtype, self.what = shape, dtype, what
        self.rtol, self.atol = rtol, atol
        self.max_abs = self.max_rel = self.max_ratio = self.scale = 0.0
        self.nonfinite = False
        self.n_bad = 0
        #: the worst mismatch so far: (sort key, flat index, expected, got, detail)
        self.worst: tuple | None = None

    def add(self, row0: int, got: np.ndarray, expected: np.ndarray, bound: np.ndarray) -> None:
        """Rows ``row0 ...`` of the three arrays (got in any floating dtype)."""
        c = compare(
            got, expected, bound, self.dtype, self.what, rtol=self.rtol, atol=self.atol
        )  # fmt: skip
        finite = np.isfinite(expected)
        block_scale = np.abs(expected, where=finite, out=np.zeros_like(expected)).max(initial=0.0)
        self.scale = max(self.scale, float(block_scale))
        self.nonfinite |= c.nonfinite
        if not c.nonfinite:
            self.max_abs = max(self.max_abs, c.errors.max_abs)
            self.max_rel = max(self.max_rel, c.errors.max_rel)
            self.max_ratio = max(self.max_ratio, c.errors.max_ratio)
        if c.ok:
            return
        self.n_bad += c.n_bad
        flat = row0 * self.shape[1] + c.worst
        e_rows, g_rows = expected.reshape(-1), np.asarray(got).reshape(-1)
        # compare's choice: the first non-finite mismatch, else the largest ratio, first on ties
        key = (1, 0.0, -flat) if c.nonfinite else (0, c.worst_ratio, -flat)
        if self.worst is None or key > self.worst[0]:
            e, g = float(e_rows[c.worst]), float(g_rows[c.worst])
            self.worst = (key, flat, e, g, c.detail)

    def absorb(self, stats: np.ndarray) -> None:
        """Rows every pair of which is finite and within tolerance, by their maxima: (r, 5)
        (1, largest |got - expected|, relative error, test ratio, |expected|), as
        ``RowBounds.compare_rows`` gives them."""
        if stats.shape[0]:
            self.max_abs = max(self.max_abs, float(stats[:, 1].max()))
            self.max_rel = max(self.max_rel, float(stats[:, 2].max()))
            self.max_ratio = max(self.max_ratio, float(stats[:, 3].max()))
            self.scale = max(self.scale, float(stats[:, 4].max()))

    def result(self) -> Comparison:
        if self.nonfinite:
            errors = Errors(float("inf"), float("inf"), float("inf"), float("inf"))
        else:
            ulp = self.max_abs / scalar_ulp(self.scale, self.dtype)
            errors = Errors(self.max_abs, self.max_rel, ulp, self.max_ratio)
        if self.worst is None:
            return Comparison(True, errors, None)
        key, flat, e, g, detail = self.worst
        message = mismatch_message(self.what, self.shape, flat, e, g, detail, self.n_bad)
        return Comparison(
            False, errors, message, flat, self.n_bad, self.nonfinite, key[1], detail
        )  # fmt: skip


def expected_loss(case: Case, dtype: str, pristine: CallInputs) -> Expected | None:
    """The expected loss and its bound (no gradient): from the disk cache, or one pass of the
    oracle without the gradient (stored). None: the streaming oracle does not apply."""
    found = cache.read_loss(case.content_hash, dtype)
    if found is not None:
        return found
    problem = Problem.of_call(pristine, carrier_logits=True)
    blocks = RowBlocks(problem, want_grad=False, target_elements=BLOCK_ELEMENTS)
    if not blocks.possible:
        return None
    bounds = RowBounds(problem, dtype, want_grad=False)
    n = problem.logits.shape[0]
    for lo in range(0, n, blocks.rows_per_block):
        hi = min(n, lo + blocks.rows_per_block)
        blocks.block(lo, hi)
        bounds.rows(lo, hi)
    loss, _ = blocks.finish()
    loss_bound, _ = bounds.finish(loss)
    found = Expected(loss, None, loss_bound, None)
    cache.write_loss(case.content_hash, dtype, found)
    return found


def check_gradient(
    case: Case,
    dtype: str,
    pristine: CallInputs,
    grad: np.ndarray,
    rtol: float,
    atol: float,
    on_block: Callable[[int, int], None] | None = None,
    kept: Deltas | None = None,
) -> tuple[Expected, Comparison] | None:
    """One pass of the oracle and the bounds over blocks of rows, each compared with the same
    rows of ``grad`` (the adapter's, checked for type, shape and dtype) as it is made; or,
    with ``kept`` (``Ahead``: the gradient of these inputs, computed before the call), one
    pass of the bounds that decodes each block, on as many threads as there are cores.

    Returns the expected loss with its bound (gradient None: never held) and the gradient's
    comparison; None when the streaming oracle does not apply (the caller takes the plain
    path). ``on_block(lo, hi)`` is called after each block (progress, benchmarks)."""
    if kept is not None:
        try:
            checked = _check_kept(case, dtype, kept, grad, rtol, atol, on_block)
        except DecodeMismatch:
            stats["decode_mismatch"] += 1  # then computed again, below
        else:
            if checked is not None:
                stats["kept"] += 1
                return checked
    problem = Problem.of_call(pristine, carrier_logits=True)
    blocks = RowBlocks(problem, want_grad=True, target_elements=BLOCK_ELEMENTS)
    if not blocks.possible:
        return None
    bounds = RowBounds(problem, dtype, want_grad=True)
    n, c = problem.logits.shape
    check = _Check(bounds, grad, BlockComparison((n, c), dtype, "grad", rtol, atol), on_block)
    for lo in range(0, n, blocks.rows_per_block):
        hi = min(n, lo + blocks.rows_per_block)
        expected, pending = blocks.block(lo, hi)
        assert expected is not None  # the gradient is wanted
        within = None
        if not pending.any():  # the common case in one compiled pass
            got = np.ascontiguousarray(grad[lo:hi])
            within = bounds.compare_rows(lo, hi, expected, got, pending, rtol, atol)
        check.block(lo, hi, expected, pending, within)
    return check.finish(case, dtype, blocks)


def _check_kept(
    case: Case,
    dtype: str,
    kept: Deltas,
    grad: np.ndarray,
    rtol: float,
    atol: float,
    on_block: Callable[[int, int], None] | None,
) -> tuple[Expected, Comparison] | None:
    """``check_gradient`` with the gradient decoded from ``kept``: the blocks ``Ahead`` did
    not reach encoded first, on every core; then the blocks of rows taken in turn by one
    thread per core (the kernels and NumPy's passes release the GIL): the same comparison,
    whatever the order (``BlockComparison``). None where the blocks left cannot be kept (the
    caller computes the gradient as without ``kept``)."""
    blocks, bounds = kept.blocks, kept.bounds
    n, c = bounds.n_pos, bounds.c
    check = _Check(bounds, grad, BlockComparison((n, c), dtype, "grad", rtol, atol), on_block)

    def one(lo: int) -> None:
        hi = min(n, lo + blocks.rows_per_block)
        got = np.ascontiguousarray(grad[lo:hi])
        state, expected = kept.decode(lo, hi)
        pending = kept.pending[lo:hi]
        within = None
        if not pending.any() and bounds.compares(got):  # the common case in one pass
            within = bounds.compare_state(state, expected, got, pending, rtol, atol)
        check.block(lo, hi, expected, pending, within)

    try:
        while kept.encoded < n and kept.usable:
            kept.encode(kept.encoded, min(n, kept.encoded + blocks.rows_per_block))
    except Exception:  # computed again by the caller, which reports an error of the oracle's
        return None
    if not kept.usable:
        return None
    starts = range(0, n, blocks.rows_per_block)
    with ThreadPoolExecutor(min(len(starts), cores.available())) as pool:
        for done in [pool.submit(one, lo) for lo in starts]:
            done.result()  # raises what a block raised (DecodeMismatch)
    return check.finish(case, dtype, blocks)


class _Check:
    """What ``check_gradient`` keeps across blocks of rows, given in any order, from any
    thread: the comparison so far, and the bound rows of the rows the oracle left to mpmath."""

    def __init__(
        self,
        bounds: RowBounds,
        grad: np.ndarray,
        joined: BlockComparison,
        on_block: Callable[[int, int], None] | None,
    ):
        self.bounds, self.grad, self.joined, self.on_block = bounds, grad, joined, on_block
        self.late_rows: dict[int, np.ndarray] = {}  # rows recomputed in mpmath: bound so far
        self.lock = threading.Lock()

    def block(
        self,
        lo: int,
        hi: int,
        expected: np.ndarray,
        pending: np.ndarray,
        within: np.ndarray | None,
    ) -> None:
        """Rows [lo, hi) compared: by their compiled maxima ``within``
        (``RowBounds.compare_rows``) when every pair is within its bound, else with the bound
        itself and ``compare`` (the messages)."""
        grad, joined = self.grad, self.joined
        if within is not None and within[:, 0].all():
            with self.lock:
                joined.absorb(within)
                if self.on_block is not None:
                    self.on_block(lo, hi)
            return
        partial = self.bounds.rows(lo, hi)
        assert partial is not None
        pending_rows = {lo + i: partial[i].copy() for i in np.nonzero(pending)[0].tolist()}
        bound = self.bounds.grad_bound(partial, expected)
        with self.lock:
            self.late_rows.update(pending_rows)
            for a, b in _runs(~pending):
                joined.add(lo + a, grad[lo + a : lo + b], expected[a:b], bound[a:b])
            if self.on_block is not None:
                self.on_block(lo, hi)

    def finish(self, case: Case, dtype: str, blocks: RowBlocks) -> tuple[Expected, Comparison]:
        """After every block: the rows left to mpmath compared, the loss and its bound (its
        disk cache entry written)."""
        bounds, grad, joined = self.bounds, self.grad, self.joined
        loss, late = blocks.finish()
        for row, values in late.items():
            expected_row = values[None, :]
            bound = bounds.grad_bound(self.late_rows[row][None, :], expected_row)
            joined.add(row, grad[row : row + 1], expected_row, bound)
        loss_bound, _ = bounds.finish(loss)
        found = Expected(loss, None, loss_bound, None)
        cache.write_loss(case.content_hash, dtype, found)
        return found, joined.result()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [a, b) runs of True in a 1-D boolean mask."""
    if mask.all():
        return [(0, mask.size)]
    edges = np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))
