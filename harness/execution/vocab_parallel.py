"""``--world-size R``: vocab-parallel runs, the class axis split over R ranks under torch.distributed.

For the adapters that opt in the harness starts R rank processes (``serve_rank``, forked
by ``harness.execution.rank_launcher``, which imported torch once) that load the
adapters from their SPECs and join one ``torch.distributed`` process group (gloo on
CPU; nccl, one GPU per rank, when the adapter's device is cuda) through a TCP
rendezvous on a free port of 127.0.0.1. For each call every rank makes the case's inputs, keeps its shard of the
class axis (``split_classes``; logits, a weight and probability targets are cut,
class-index targets stay whole) and calls the adapter with ``CallInputs.vocab_shard``
set. The parent gathers the ranks' gradient shards along the class axis, takes the
loss of rank 0 (each rank's loss is checked where they differ), and compares with the
unsharded expected values through ``harness.execution.runner.check_values``: one
result per case x adapter x dtype, with ``world_size`` set.

A fused linear case (hidden states, a classifier, a bias) is split the same way, by
vocabulary rows: each rank gets the whole hidden states and targets and its rows of
the classifier, the bias and the weight (``LinearCallInputs.vocab_shard``), and calls
``run_linear``. The protocol is Megatron's column-parallel output layer: the loss and
``grad_hidden`` are replicated (every rank returns the whole, all-reduced value; rank
0's is checked, and any rank whose value differs is checked on its own), the
classifier's and the bias's gradients are the rank's own rows, joined along the
vocabulary by the parent.

A rank that dies costs one result (``crash``), a call past ``--timeout`` one
(``timeout``), a rank that raises while the others wait in a collective one
(``error``, after ``STRAGGLER_SECONDS``): each time every rank of the group is
killed, and a new group on a new port is forked for the next call. A rank process
also exits when its connection to the parent closes, and a collective gives up after
``COLLECTIVE_TIMEOUT_SECONDS`` (the process group's timeout), so no rank outlives a
killed run for long.

Cases that are not split (reported ``unsupported`` with the reason, never skipped):
invalid-input cases (their class axis or weight may not be splittable; the error an
adapter raises is checked by an ordinary run) and any case when the adapter does not
list ``vocab_parallel`` in ``supports`` (a fused linear case also needs
``fused_linear`` there, as in an ordinary run).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.adapters import (
    VOCAB_PARALLEL,
    CallInputs,
    LinearCallInputs,
    LinearOutput,
    Output,
    Unsupported,
    VocabShard,
)
from harness.errors import AdapterLoadError, InternalError
from harness.execution import peak_memory, rank_launcher
from harness.execution.isolate import describe_death
from harness.execution.rank_launcher import Forked, LauncherError
from harness.execution.registry import load
from harness.execution.results import Result, Status
from harness.execution.runner import (
    begin,
    check_linear_values,
    check_values,
    mutations,
    snapshot,
)
from harness.execution.watchdog import warm_up_limit

if TYPE_CHECKING:
    from harness.adapters import Adapter
    from harness.cases.model import Case

#: after one rank has answered, how long the others may take (at least; as long again as
#: the first took when that is longer) before the group is taken for hung
STRAGGLER_SECONDS = 10.0
#: the process group's timeout, at least: a rank stuck in a collective raises after it (with
#: ``--timeout``, it is longer than a call's limit, so the parent reports the hang first)
COLLECTIVE_TIMEOUT_SECONDS = 120.0
#: errors after which a process group cannot be trusted (a collective timed out or a peer
#: went away): the group is restarted, as it is when the ranks disagree on raising
BROKEN_GROUP = re.compile(r"[Tt]imed out|timeout|pair closure|[Cc]onnection (closed|reset)|NCCL")
#: how long R rank processes may take to start, load the adapter and join the group
START_SECONDS = 180.0
#: what the rank launcher imports once, before it forks ranks
PRELOAD = ("torch", "torch.distributed", __name__)


def split_classes(classes: int, world_size: int) -> list[tuple[int, int]]:
    """The R contiguous shards ``[start, end)`` of ``classes``: the first ``classes % R``
    hold ``ceil(classes / R)``, the others ``floor(classes / R)`` (numpy.array_split's rule;
    shards are empty when classes < R)."""
    base, extra = divmod(classes, world_size)
    bounds = [0]
    for r in range(world_size):
        bounds.append(bounds[-1] + base + (1 if r < extra else 0))
    return list(itertools.pairwise(bounds))


def class_axis(ndim: int) -> int:
    """The class axis of logits with ``ndim`` axes: 0 unbatched (C,), else 1."""
    return 0 if ndim == 1 else 1


def obstacle(case: Case, adapter: Adapter) -> str | None:
    """Why ``case`` cannot run vocab-parallel through ``adapter`` (None: it can)."""
    if not _opts_in(adapter):
        return (
            "needs vocab_parallel (--world-size: not in the adapter's 'supports'; a "
            "vocab-parallel adapter takes a shard of the class axis and a process group)"
        )
    if case.expect_error is not None:
        return (
            f"an invalid-input case ({case.expect_error}) is not split across ranks: its "
            "class axis or weight may not divide; an ordinary run checks the error"
        )
    return None


def classes_of(case: Case) -> int:
    """The number of classes C of ``case`` (V, the classifier's rows, for a fused case)."""
    shape = case.logits_shape
    return shape[-1] if case.fused else shape[class_axis(len(shape))]


def shard_of(
    inputs: CallInputs | LinearCallInputs, shard: VocabShard
) -> CallInputs | LinearCallInputs:
    """This rank's inputs: logits, a weight and probability targets cut to the shard's
    classes (C-contiguous copies), class-index targets and grad_output whole; for a fused
    linear call the classifier's and the bias's rows are cut, the hidden states whole."""
    cut = slice(shard.vocab_start, shard.vocab_end)
    if isinstance(inputs, LinearCallInputs):
        return replace(
            inputs,
            classifier=np.array(inputs.classifier[cut], order="C", copy=True),
            bias=None if inputs.bias is None else np.array(inputs.bias[cut], copy=True),
            weight=None if inputs.weight is None else np.array(inputs.weight[cut], copy=True),
            vocab_shard=shard,
        )
    axis = class_axis(inputs.logits.ndim)

    def classes(a: np.ndarray) -> np.ndarray:
        index = [slice(None)] * a.ndim
        index[axis] = cut
        return np.array(a[tuple(index)], order="C", copy=True)

    return replace(
        inputs,
        logits=classes(inputs.logits),
        target=classes(inputs.target) if inputs.probability_target else inputs.target,
        weight=None if inputs.weight is None else np.array(inputs.weight[cut], copy=True),
        vocab_shard=shard,
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (rank 0 listens on it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the parent's side ----------------------------------------------------------------------
@dataclass
class RankReply:
    """What one rank's call came to, sent back through its pipe."""

    kind: str  # "output", "raised", "unsupported"
    message: str = ""
    loss: Any = None
    grad: Any = None
    z_loss: Any = None
    grad_hidden: Any = None  # a fused linear call's: the whole, replicated gradient
    grad_classifier: Any = None  # and its shard's rows of these two
    grad_bias: Any = None
    returned: str = ""  # the type of a return value that is not an Output (LinearOutput)
    mutated: str = ""  # runner.mutations of the rank's inputs
    seconds: float = 0.0
    peak_rss_bytes: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RankSetup:
    """What a rank process needs to join its group (sent once, when it is forked)."""

    rank: int
    world_size: int
    port: int
    collective_timeout: float
    specs: list[str]


class Rank:
    """One rank process of a group, forked by the rank launcher; its stdout and stderr go
    to the file ``log`` (the last lines say how it died)."""

    def __init__(self, rank: int, log: str) -> None:
        self.rank, self.log = rank, log
        self.process: Forked | None = None

    @property
    def conn(self) -> Connection:
        assert self.process is not None
        return self.process.conn

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    def stop(self, *, kill: bool = False) -> None:
        """End the process: close its connection (it exits), or kill it when busy or hung."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.conn.close()
            self.process.wait(5)

    def died(self) -> str:
        """'exited with code 3', 'was killed by SIGSEGV (signal 11); Fatal Python error: ...'."""
        assert self.process is not None
        self.process.conn.close()
        returncode = self.process.wait(5)
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                lines = [x.rstrip() for x in f.readlines()[-40:] if x.strip()]
        except OSError:
            lines = []
        return describe_death(returncode, lines)


class RankGroup:
    """R rank processes, each holding every vocab-parallel adapter of the run, joined in one
    process group; restarted after a crash, a timeout, a hang or ranks that disagree.

    The ranks are forked by this process's rank launcher (``harness.execution.rank_launcher``),
    which imported torch once: a start or restart costs the ranks' adapter loading and
    rendezvous, not R imports of torch."""

    def __init__(self, specs: list[str], world_size: int, timeout: float | None = None) -> None:
        self.specs, self.world_size = specs, world_size
        limit = 0.0 if timeout is None else warm_up_limit(timeout)
        self.collective_timeout = max(COLLECTIVE_TIMEOUT_SECONDS, limit + 60)
        self.ranks: list[Rank] = []
        self.calls = 0  # since the last start: the first may import and compile
        self.starts = 0
        self.port = 0  # of the last start's rendezvous
        self._last_case: object = None
        self._logs: str | None = None

    def start(self) -> str | None:
        """Start the ranks; None when all joined the group, else why not (ranks stopped)."""
        if self._logs is None:
            self._logs = tempfile.mkdtemp(prefix="lossconf-ranks-")
        self.port = free_port()
        self.ranks = [
            Rank(r, os.path.join(self._logs, f"rank{r}.log")) for r in range(self.world_size)
        ]
        self.starts += 1
        try:
            launcher = rank_launcher.shared(PRELOAD)
            for rank in self.ranks:
                setup = RankSetup(
                    rank.rank, self.world_size, self.port, self.collective_timeout, self.specs
                )
                rank.process = launcher.fork(f"{__name__}:serve_rank", (setup,), rank.log)
        except LauncherError as e:
            self.stop(kill=True)
            return str(e)
        deadline = time.monotonic() + START_SECONDS
        for rank in self.ranks:
            if not rank.conn.poll(max(0.0, deadline - time.monotonic())):
                self.stop(kill=True)
                return f"rank {rank.rank} did not join within {START_SECONDS:g} s"
            try:
                kind, value = rank.conn.recv()
            except (EOFError, OSError):
                value = f"the rank process {rank.died()} while loading the adapters"
                kind = "load_error"
            if kind != "ready":
                self.stop(kill=True)
                return f"rank {rank.rank}: {value}"
        self.calls = 0
        self._last_case = None
        return None

    def stop(self, *, kill: bool = False) -> None:
        for rank in self.ranks:
            rank.stop(kill=kill)
        self.ranks = []

    def close(self) -> None:
        """Stop the ranks and remove their log files."""
        self.stop(kill=True)
        if self._logs is not None:
            shutil.rmtree(self._logs, ignore_errors=True)
            self._logs = None

    @property
    def alive(self) -> bool:
        return bool(self.ranks) and all(r.alive for r in self.ranks)

    def call(
        self, which: int, case: Case, dtype: str, want_grad: bool, timeout: float | None
    ) -> tuple[list[RankReply] | None, Status, str]:
        """Run one call of adapter number ``which`` on every rank: (replies, PASS, '') or
        (None, CRASH/TIMEOUT/ERROR, why)."""
        if not self.alive:
            self.stop(kill=True)
            problem = self.start()
            if problem is not None:
                return None, Status.CRASH, f"the rank processes cannot start: {problem}"
        limit = timeout if timeout is None or self.calls else warm_up_limit(timeout)
        self.calls += 1
        message = ("run", which, None if case is self._last_case else case, dtype, want_grad)
        self._last_case = case
        for rank in self.ranks:
            with contextlib.suppress(OSError):  # it died: the wait below says so
                rank.conn.send(message)
        return self._collect(limit, timeout)

    def _collect(
        self, limit: float | None, timeout: float | None
    ) -> tuple[list[RankReply] | None, Status, str]:
        start = time.monotonic()
        deadline = None if limit is None else start + limit
        pending = {rank.conn: rank for rank in self.ranks}
        replies: dict[int, RankReply] = {}
        first: tuple[int, float] | None = None
        while pending:
            until, straggling = deadline, False
            if first is not None:
                allowed = first[1] + max(STRAGGLER_SECONDS, first[1] - start)
                straggling = until is None or allowed < until
                until = allowed if straggling else until
            left = None if until is None else max(0.0, until - time.monotonic())
            ready = wait(list(pending), timeout=left)
            if not ready:
                return None, *self._hung(pending.values(), replies, first, straggling, timeout)
            for conn in ready:
                assert isinstance(conn, Connection)
                rank = pending.pop(conn)
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    how = rank.died()
                    self.stop(kill=True)
                    return (
                        None,
                        Status.CRASH,
                        (
                            f"rank {rank.rank} of {self.world_size} {how} during this call (the "
                            "group's processes were stopped, and restart for the next call)"
                        ),
                    )
                if kind == "internal_error":
                    self.stop(kill=True)
                    raise InternalError(value)
                replies[rank.rank] = RankReply(**value)
                if first is None:
                    first = (rank.rank, time.monotonic())
        answers = [replies[r] for r in range(self.world_size)]
        kinds = {r.kind for r in answers}
        if len(kinds) > 1 or any(BROKEN_GROUP.search(r.message) for r in answers):
            # ranks that disagreed may be a collective out of step with each other
            self.stop(kill=True)
            for r in answers:
                r.notes.append("the ranks' group was restarted after this call")
        return answers, Status.PASS, ""

    def _hung(
        self,
        waiting: Any,
        replies: dict[int, RankReply],
        first: tuple[int, float] | None,
        straggling: bool,
        timeout: float | None,
    ) -> tuple[Status, str]:
        """Kill the group after a call that did not come back from every rank: ``error``
        when ranks lagged far behind the first answer (``straggling``), else ``timeout``."""
        late = ", ".join(str(r.rank) for r in sorted(waiting, key=lambda r: r.rank))
        self.stop(kill=True)
        restart = f"the {self.world_size} rank processes were killed, and restart for the next call"
        if straggling and first is not None:
            said = replies[first[0]]
            what = "returned" if said.kind == "output" else f"raised {said.message}"
            return Status.ERROR, (
                f"rank {first[0]} {what}, but rank(s) {late} had not returned long after (at "
                f"least {STRAGGLER_SECONDS:g} s: a collective that not every rank entered?); "
                f"{restart}"
            )
        first_call = self.calls == 1 and timeout is not None
        return Status.TIMEOUT, (
            f"--timeout {timeout:g}: rank(s) {late} had not returned; {restart}"
            + (" (its first call, allowed time for imports and compiles)" if first_call else "")
        )


class VocabParallelPool:
    """The rank group of a run; ``run_one(case, adapter, dtype, timeout=...)`` as in the
    runner (one call at a time)."""

    def __init__(
        self,
        specs: list[str],
        adapters: list[Adapter],
        world_size: int,
        timeout: float | None = None,
    ) -> None:
        """``timeout``: the run's ``--timeout``, which the process group's own must exceed."""
        self.world_size = world_size
        self.timeout = timeout
        # only the adapters that opt in are loaded by the ranks; the others are unsupported
        chosen = [(s, a) for s, a in zip(specs, adapters, strict=True) if _opts_in(a)]
        self.index = {a.name: i for i, (_, a) in enumerate(chosen)}
        self.group = RankGroup([s for s, _ in chosen], world_size, timeout)

    def start(self) -> None:
        """Start the ranks (when some adapter opts in); AdapterLoadError if they cannot."""
        if not self.index:
            return
        problem = self.group.start()
        if problem is not None:
            raise AdapterLoadError(
                f"--world-size {self.world_size}: the adapters "
                f"{', '.join(map(repr, self.index))} cannot run in {self.world_size} rank "
                f"processes: {problem}"
            )

    def close(self) -> None:
        self.group.close()

    def __enter__(self) -> VocabParallelPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_one(
        self, case: Case, adapter: Adapter, dtype: str, *, timeout: float | None = None
    ) -> Result:
        """One vocab-parallel call of ``adapter`` on ``case`` in ``dtype``, gathered and checked."""
        result, inputs = begin(case, adapter, dtype)
        result.world_size = self.world_size
        if inputs is None:
            return result
        why = obstacle(case, adapter)
        if why is not None:
            result.status = Status.UNSUPPORTED
            result.message = why
            return result
        which = self.index[adapter.name]
        replies, status, message = self.group.call(which, case, dtype, inputs.want_grad, timeout)
        if replies is None:
            result.status, result.message = status, message
            return result
        result.seconds = max(r.seconds for r in replies)
        peaks = [r.peak_rss_bytes for r in replies if r.peak_rss_bytes is not None]
        result.peak_rss_bytes = max(peaks) if peaks else None
        _judge(case, dtype, inputs, replies, result)
        result.notes.extend(replies[0].notes)
        mutated = [f"rank {i}: {r.mutated}" for i, r in enumerate(replies) if r.mutated]
        if mutated:
            was = f"{result.status.value}: {result.message}" if result.message else "pass"
            result.message = f"{'; '.join(mutated)} (otherwise: {was})"
            result.status = Status.ERROR
        return result


def _opts_in(adapter: Adapter) -> bool:
    return VOCAB_PARALLEL in adapter.supports


def _judge(
    case: Case,
    dtype: str,
    inputs: CallInputs | LinearCallInputs,
    replies: list[RankReply],
    result: Result,
) -> None:
    """The result of the ranks' replies: exceptions, then the gathered output's values."""
    raised = [(i, r) for i, r in enumerate(replies) if r.kind != "output"]
    if raised:
        i, first = raised[0]
        everyone = len(raised) == len(replies)
        if everyone and case.expect_error is not None:
            result.status = Status.RAISED
        elif everyone and all(r.kind == "unsupported" for _, r in raised):
            result.status = Status.UNSUPPORTED
        else:
            result.status = Status.ERROR
        which = "every rank" if everyone else f"rank {i} (of {len(replies)})"
        result.message = f"{which} raised {first.message}"
        return
    if case.expect_error is not None:  # obstacle() keeps these cases out; kept for safety
        result.status = Status.MISSING_ERROR
        result.message = "returned instead of raising"
        return
    odd = next((i for i, r in enumerate(replies) if r.returned), None)
    if odd is not None:
        wanted = (
            "adapters.LinearOutput(loss, grad_hidden, grad_classifier, grad_bias)"
            if isinstance(inputs, LinearCallInputs)
            else "adapters.Output(loss, grad)"
        )
        result.status = Status.ERROR
        result.message = f"rank {odd} returned a {replies[odd].returned}: expected {wanted}"
        return
    problem, gathered = _gather(inputs, replies)
    if problem is not None:
        result.status = Status.ERROR
        result.message = problem
        return

    def check(reply: RankReply, into: Result) -> None:
        """Check the gathered shards with ``reply``'s replicated values (loss, z-loss and a
        fused call's grad_hidden)."""
        if isinstance(inputs, LinearCallInputs):
            output = LinearOutput(
                reply.loss, reply.grad_hidden, gathered[0], gathered[1], reply.z_loss
            )  # fmt: skip
            check_linear_values(case, dtype, inputs, output, into)
        else:
            check_values(case, dtype, inputs, Output(reply.loss, gathered[0], reply.z_loss), into)

    check(replies[0], result)
    # the replicated values: a rank whose values differ from rank 0's is checked on its own
    for i, reply in enumerate(replies[1:], start=1):
        differ = [
            name
            for name in _REPLICATED
            if not _same(getattr(reply, name), getattr(replies[0], name))
        ]
        if not differ:
            continue
        own = replace(result, notes=[])
        check(reply, own)
        verb = "differs" if len(differ) == 1 else "differ"
        result.notes.append(
            f"rank {i}'s {' and '.join(differ)} {verb} from rank 0's (not replicated)"
        )
        if result.status is Status.PASS and own.status is not Status.PASS:
            result.status, result.loss_errors = own.status, own.loss_errors
            result.grad_errors = own.grad_errors
            result.message = f"rank {i}: {own.message}"
            result.got_loss = own.got_loss


#: the values every rank returns whole (the same on each)
_REPLICATED = ("loss", "z_loss", "grad_hidden")


def _same(a: Any, b: Any) -> bool:
    """Whether two returned values are bitwise the same (None and None are)."""
    if a is None or b is None:
        return a is b
    try:
        x, y = np.asarray(a), np.asarray(b)
    except Exception:  # not an array: the check of rank 0's values says what it is
        return True
    return x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()


def _gather(
    inputs: CallInputs | LinearCallInputs, replies: list[RankReply]
) -> tuple[str | None, tuple[Any, ...]]:
    """(problem, the gradient shards joined along the class axis): ``(grad,)`` for logits,
    ``(grad_classifier, grad_bias)`` for a fused linear call; a part is None when the call
    wants no gradient or a rank returned none (the check says so)."""
    if isinstance(inputs, LinearCallInputs):
        classes = inputs.classifier.shape[0]
        wanted: list[tuple[str, tuple[int, ...], int]] = [
            ("grad_classifier", inputs.classifier.shape, 0)
        ]
        if inputs.bias is not None:
            wanted.append(("grad_bias", inputs.bias.shape, 0))
    else:
        axis = class_axis(inputs.logits.ndim)
        classes = inputs.logits.shape[axis]
        wanted = [("grad", inputs.logits.shape, axis)]
    shards = split_classes(classes, len(replies))
    joined: list[Any] = []
    for name, shape, axis in wanted:
        if not inputs.want_grad or any(getattr(r, name) is None for r in replies):
            joined.append(None)
            continue
        parts = []
        for i, (reply, (start, end)) in enumerate(zip(replies, shards, strict=True)):
            want = list(shape)
            want[axis] = end - start
            try:
                g = np.asarray(getattr(reply, name))
            except Exception as e:  # the rank sent something NumPy cannot read
                return f"rank {i}'s {name} cannot be read as an array: {e}", ()
            if g.shape != tuple(want):
                return (
                    f"rank {i}'s {name} has shape {g.shape}, expected {tuple(want)} (its "
                    f"shard: classes [{start}, {end}) of {classes})"
                ), ()
            parts.append(g)
        dtypes = {p.dtype for p in parts}
        if len(dtypes) > 1:
            return f"the ranks' {name}s have different dtypes: {sorted(map(str, dtypes))}", ()
        joined.append(np.concatenate(parts, axis=axis))
    if not isinstance(inputs, LinearCallInputs):
        return None, tuple(joined)
    return None, (joined[0], joined[1] if inputs.bias is not None else None)


# -- a rank process -------------------------------------------------------------------------
def _as_numpy(value: Any) -> Any:
    """A returned value as a NumPy array that pickles (None stays None; what NumPy cannot
    read is sent as is, for the parent's check to describe)."""
    if value is None:
        return None
    try:
        if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU or needing grad
            value = value.detach().cpu()
        return np.asarray(value)
    except Exception:
        return repr(value)[:200]


def rank_call(
    adapter: Adapter, case: Case, dtype: str, want_grad: bool, shard: VocabShard
) -> RankReply:
    """This rank's part of one call: its shard of the inputs, the adapter's answer."""
    full: CallInputs | LinearCallInputs
    if case.fused:
        full = case.linear_inputs(dtype, want_grad=want_grad)
    else:
        full = case.inputs(dtype, want_grad=want_grad)
    mine = shard_of(full, shard)
    before = snapshot(mine)
    peak_memory.reset()
    start = time.perf_counter()
    try:
        output: object = (
            adapter.run_linear(mine) if isinstance(mine, LinearCallInputs) else adapter.run(mine)
        )
    except (Unsupported, NotImplementedError) as e:
        reply = RankReply("unsupported", f"{type(e).__name__}: {e}".rstrip(": "))
    except Exception as e:
        reply = RankReply("raised", f"{type(e).__name__}: {e}")
    else:
        if isinstance(output, LinearOutput) and isinstance(mine, LinearCallInputs):
            reply = RankReply(
                "output",
                loss=_as_numpy(output.loss),
                z_loss=_as_numpy(output.z_loss),
                grad_hidden=_as_numpy(output.grad_hidden),
                grad_classifier=_as_numpy(output.grad_classifier),
                grad_bias=_as_numpy(output.grad_bias),
            )
        elif isinstance(output, Output) and isinstance(mine, CallInputs):
            reply = RankReply(
                "output",
                loss=_as_numpy(output.loss),
                grad=_as_numpy(output.grad),
                z_loss=_as_numpy(output.z_loss),
            )
        else:
            reply = RankReply("output", returned=type(output).__name__)
        # a fused linear call has no logits array to write the gradient into
        written = output.grad if adapter.inplace_backward and isinstance(output, Output) else None
        reply.mutated = mutations(mine, before, written)
    reply.seconds = time.perf_counter() - start
    reply.peak_rss_bytes = peak_memory.peak_bytes()
    return reply


def serve_rank(conn: Connection, setup: RankSetup) -> None:
    """A rank process (forked by the rank launcher): load the adapters, join the group, then
    serve calls until the parent closes the connection."""
    import faulthandler
    import signal

    rank, world_size = setup.rank, setup.world_size
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    faulthandler.enable()  # a crash prints where it happened (to the log); the parent quotes it
    try:
        adapters = [load(spec) for spec in setup.specs]
        group, devices = _join(adapters, rank, world_size, setup.port, setup.collective_timeout)
    except BaseException as e:
        conn.send(("load_error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    case: Case | None = None
    while True:
        try:
            _, which, new_case, dtype, want_grad = conn.recv()
        except (EOFError, OSError):
            return
        if new_case is not None:
            case = new_case
        assert case is not None  # the first call carries its case; later ones may repeat it
        try:
            classes = classes_of(case)
            start, end = split_classes(classes, world_size)[rank]
            shard = VocabShard(rank, world_size, start, end, classes, group, devices[which])
            reply = rank_call(adapters[which], case, dtype, want_grad, shard)
        except Exception as e:  # a bug of ours: the parent stops the run with exit 2
            conn.send(("internal_error", f"rank {rank}: {type(e).__name__}: {e}"))
            continue
        conn.send(("reply", vars(reply)))


def _join(
    adapters: list[Adapter], rank: int, world_size: int, port: int, timeout: float
) -> tuple[Any, list[str]]:
    """Join the process group: gloo, and nccl too (GPU ``rank``) when an adapter runs on
    cuda. Returns (group, each adapter's device on this rank)."""
    from datetime import timedelta

    import torch  # only a rank process imports it, never the harness's own
    import torch.distributed as dist

    # R ranks share the machine's cores: each gets its share of threads, unless the run's
    # environment says how many (torch was imported by the launcher, under its environment)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if not threads.isdigit() or int(threads) < 1:
        threads = str(max(1, (os.cpu_count() or 1) // world_size))
        os.environ["OMP_NUM_THREADS"] = threads
    torch.set_num_threads(int(threads))
    cuda = [a.device().startswith("cuda") for a in adapters]
    if any(cuda):
        torch.cuda.set_device(rank)
    dist.init_process_group(
        "cpu:gloo,cuda:nccl" if any(cuda) else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout),
    )
    return dist.group.WORLD, [f"cuda:{rank}" if c else "cpu" for c in cuda]
