"""Vocab-parallel runs (--world-size R): the split rule, real rank processes under gloo, the
gathered results against the unsharded ones, the mutants of the collectives, faults of one rank.

Rank groups start R torch interpreters each, so each test starts as few as it can: one pool
per world size runs the reference, torch (which does not opt in) and every mutant together.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import socket
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO
from hypothesis import given
from hypothesis import strategies as st

import harness
from harness.adapters import CallInputs, LinearCallInputs, VocabShard
from harness.cases.loader import load_paths
from harness.execution import rank_launcher, vocab_parallel
from harness.execution.registry import load
from harness.execution.results import Status
from harness.execution.vocab_parallel import (
    RankReply,
    VocabParallelPool,
    shard_of,
    split_classes,
)
from tests.mutants.vocab_parallel import ALWAYS_WRONG, MUTANTS, HiddenGradNotReduced

# torch itself is imported by the tests that use it: importing it here cost every pytest-xdist
# worker two seconds at collection, and a worker that had imported it started --jobs workers
# by spawning instead of forking (harness.execution.parallel)
if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed", allow_module_level=True)

SPLIT_CASES = REPO / "tests" / "vocab_parallel" / "split_cases.yaml"
FUSED_SPLIT_CASES = REPO / "tests" / "vocab_parallel" / "fused_split_cases.yaml"
FAULTY = REPO / "tests" / "vocab_parallel" / "faulty_ranks.py"
FAULTY_CASES = REPO / "tests" / "faulty_adapters" / "faulty_cases.yaml"
#: corpus cases whose terms cross shards in other ways: a zero or cancelling weight sum, an
#: upstream gradient, probability and one-hot targets, empty and unbatched input; the kernel
#: fields (elementwise on the shard, or on the all-reduced lse: the z-loss)
CORPUS_IDS = (
    "weights/negative_weights_cancel_mean",
    "weights/zero_total_weight_smoothing_mean_nan",
    "reductions/none_grad_output_weighted_smoothed",
    "reductions/none_grad_output_probability",
    "targets/onehot_probability_mean",
    "shapes/empty_weighted_smoothed_mean",
    "shapes/kdim_probability_mean",
    "shapes/unbatched_weighted_sum",
    "kernel/softcap_infinite_logits",
    "kernel/z_loss_returned_mean_with_smoothing",
    "kernel/all_fields_mean",
)
MUTANT_SPECS = [f"tests.mutants.vocab_parallel:{m.__name__}" for m in MUTANTS + ALWAYS_WRONG]


@pytest.fixture(scope="module")
def cases():
    # the rank launcher imports torch in the background from now on, while the unsharded
    # results are computed in this process (``sharded`` asks for them first)
    rank_launcher.shared(vocab_parallel.PRELOAD)
    corpus = {c.id: c for c in load_paths().cases}
    split = load_paths([SPLIT_CASES, FUSED_SPLIT_CASES]).cases
    return split + [corpus[i] for i in CORPUS_IDS]


@pytest.fixture(scope="module")
def unsharded(cases):
    """The reference's results in an ordinary run (no ranks, no collectives)."""
    return {r.key: r for r in harness.run(cases, "torch-vocab-split")}


@pytest.fixture(scope="module", params=[1, 2, 4], ids=lambda r: f"R{r}")
def sharded(request, cases, unsharded):
    """(R, results) at world size R, from one group of R ranks: the reference and torch (which
    does not opt in) on every case and dtype, the mutants on the split cases in float32."""
    specs = ["torch-vocab-split", "torch", *MUTANT_SPECS]
    adapters = [load(s) for s in specs]
    results = []
    with VocabParallelPool(specs, adapters, request.param) as pool:
        for case in cases:
            for adapter in adapters[:2]:
                results += [pool.run_one(case, adapter, dtype) for dtype in case.dtypes]
        for case in (c for c in cases if c.file in (SPLIT_CASES, FUSED_SPLIT_CASES)):
            results += [pool.run_one(case, mutant, "float32") for mutant in adapters[2:]]
    return request.param, results


# -- the split ------------------------------------------------------------------------------
@given(classes=st.integers(0, 500), world_size=st.integers(1, 16))
def test_the_split_is_contiguous_balanced_and_covers_every_class(classes, world_size):
    shards = split_classes(classes, world_size)
    assert len(shards) == world_size
    assert shards[0][0] == 0 and shards[-1][1] == classes
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shards))
    sizes = [end - start for start, end in shards]
    # numpy.array_split's rule: the first C % R shards have one class more
    assert sizes == [len(part) for part in np.array_split(np.arange(classes), world_size)]


def test_the_split_of_seven_and_three_classes():
    assert split_classes(7, 2) == [(0, 4), (4, 7)]
    assert split_classes(7, 4) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert split_classes(3, 4) == [(0, 1), (1, 2), (2, 3), (3, 3)]


def test_a_rank_gets_its_classes_of_logits_weight_and_probabilities_and_every_target():
    logits = np.arange(2 * 7 * 3, dtype=np.float64).reshape(2, 7, 3)
    target = np.array([[6, 0, 1], [2, 3, -100]])
    weight = np.arange(7.0)
    inputs = CallInputs(logits, target, weight, "mean", -100, 0.0, "float64")
    shard = VocabShard(rank=1, world_size=2, vocab_start=4, vocab_end=7, vocab_size=7)
    mine = shard_of(inputs, shard)
    assert mine.logits.shape == (2, 3, 3) and mine.logits.flags.c_contiguous
    np.testing.assert_array_equal(mine.logits, logits[:, 4:7])
    np.testing.assert_array_equal(mine.weight, [4.0, 5.0, 6.0])
    assert mine.target is target and mine.vocab_shard is shard
    soft = CallInputs(logits[0, :, 0], logits[1, :, 0] / 100, None, "sum", -100, 0.0, "float64")
    cut = shard_of(soft, VocabShard(0, 2, 0, 4, 7))
    np.testing.assert_array_equal(cut.target, logits[1, :4, 0] / 100)


def test_a_rank_gets_the_whole_hidden_states_and_its_rows_of_classifier_bias_and_weight():
    hidden = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    classifier = np.arange(7 * 4, dtype=np.float64).reshape(7, 4)
    bias, weight = np.arange(7.0), np.arange(7.0) / 2
    target = np.array([[6, 0, 1], [2, 3, -100]])
    inputs = LinearCallInputs(hidden, classifier, bias, target, weight, "sum", -100, 0.0, "float64")
    shard = VocabShard(rank=1, world_size=2, vocab_start=4, vocab_end=7, vocab_size=7)
    mine = shard_of(inputs, shard)
    assert isinstance(mine, LinearCallInputs) and mine.vocab_shard is shard
    assert mine.classifier.flags.c_contiguous
    np.testing.assert_array_equal(mine.classifier, classifier[4:7])
    np.testing.assert_array_equal(mine.bias, [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(mine.weight, [2.0, 2.5, 3.0])
    assert mine.hidden is hidden and mine.target is target
    empty = shard_of(replace(inputs, bias=None, weight=None), VocabShard(3, 4, 7, 7, 7))
    assert empty.classifier.shape == (0, 4) and empty.bias is None and empty.weight is None


def test_fused_gradients_are_joined_by_rows_and_a_wrong_shard_shape_is_named():
    case = load_paths([FUSED_SPLIT_CASES]).cases[0]  # V = 7, H = 5, with a bias
    inputs = case.linear_inputs("float64")
    rows = [(0, 4), (4, 7)]
    replies = [
        RankReply("output", grad_classifier=inputs.classifier[a:b] * 2, grad_bias=inputs.bias[a:b])
        for a, b in rows
    ]
    problem, (grad_classifier, grad_bias) = vocab_parallel._gather(inputs, replies)
    assert problem is None
    np.testing.assert_array_equal(grad_classifier, inputs.classifier * 2)
    np.testing.assert_array_equal(grad_bias, inputs.bias)
    replies[1].grad_classifier = inputs.classifier[3:7]
    problem, _ = vocab_parallel._gather(inputs, replies)
    assert problem == (
        "rank 1's grad_classifier has shape (4, 5), expected (3, 5) (its shard: classes "
        "[4, 7) of 7)"
    )


# -- runs on real ranks ---------------------------------------------------------------------
def _close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=2**-7, abs_tol=1e-6)
    return a == b


def test_the_reference_at_each_world_size_equals_its_unsharded_run(sharded, unsharded, cases):
    world_size, results = sharded
    mine = [r for r in results if r.adapter == "torch-vocab-split"]
    assert len(mine) == sum(len(c.dtypes) for c in cases)
    for r in mine:
        base = unsharded[r.key]
        assert r.world_size == world_size
        assert (r.status, r.expected_loss) == (base.status, base.expected_loss), (r.key, r.message)
        assert r.status is Status.PASS, (r.key, r.message)
        assert _close(r.got_loss, base.got_loss), (r.key, r.got_loss, base.got_loss)
        assert r.loss_errors is not None and r.grad_errors is not None
        assert r.loss_errors.max_ratio <= 1 and r.grad_errors.max_ratio <= 1


def test_an_adapter_that_does_not_opt_in_is_unsupported_with_the_reason(sharded):
    _, results = sharded
    for r in (r for r in results if r.adapter == "torch"):
        assert r.status is Status.UNSUPPORTED
        assert "needs vocab_parallel" in r.message and "'supports'" in r.message


def test_each_collective_mutant_fails_when_the_classes_are_split(sharded):
    world_size, results = sharded
    fused = {c.id for c in load_paths([FUSED_SPLIT_CASES]).cases}
    for mutant in MUTANTS + ALWAYS_WRONG:
        mine = [r for r in results if r.adapter == mutant.name]
        assert {r.case_id for r in mine} >= fused, mutant.name  # the fused cases ran
        failed = [r.key for r in mine if not r.conforming]
        if world_size == 1 and mutant in MUTANTS:  # one rank holds every class
            assert failed == [], mutant.name
        else:
            assert failed, f"{mutant.name} survived at world size {world_size}: {mutant.__doc__}"
        if world_size > 1 or mutant in ALWAYS_WRONG:  # on the fused cases as well
            assert any(key[0] in fused for key in failed), (mutant.name, failed)
    # grad_hidden is replicated: a rank whose own differs from rank 0's is named
    for r in results:
        if r.adapter == HiddenGradNotReduced.name and world_size > 1 and r.case_id in fused:
            assert "rank 1's grad_hidden differs from rank 0's (not replicated)" in r.notes


def test_a_rank_that_dies_hangs_or_raises_alone_costs_one_result(monkeypatch):
    # a straggler is declared after 1 s, a hang after 2 s (the straggler's limit must be the
    # shorter, or the rank that raised alone reads as a hang): both are waits the test sits
    # through; a call of these tiny cases takes milliseconds at world size 2, but much more on
    # a loaded machine (a cold CI run), so the limits keep a margin
    monkeypatch.setattr(vocab_parallel, "STRAGGLER_SECONDS", 1.0)
    # the hang first: the first call after a restart is allowed the warm-up time
    faults = ["hangs", "exits", "raises_alone"]
    specs = [f"{FAULTY}:{name}" for name in faults]
    cases = load_paths([FAULTY_CASES]).cases
    adapters = [load(s) for s in specs]
    # a call's limit (the first after each start is allowed the warm-up time); the others'
    # calls take milliseconds
    timeout = 2
    pool = VocabParallelPool(specs, adapters, 2, timeout=timeout)
    with pool:
        results = {
            (a.name, c.name): pool.run_one(c, a, "float64", timeout=timeout)
            for c in cases
            for a in adapters
        }
        processes = [r.process for r in pool.group.ranks]
        port = pool.group.port
        restarts = pool.group.starts - 1
    for name in faults:
        assert results[(f"rank-{name}", "a_mean")].status is Status.PASS
        assert results[(f"rank-{name}", "c_none")].status is Status.PASS  # restarted
    exits = results[("rank-exits", "b_sum")]
    assert exits.status is Status.CRASH
    assert "rank 1 of 2 exited with code 3 during this call" in exits.message
    hangs = results[("rank-hangs", "b_sum")]
    assert hangs.status is Status.TIMEOUT and "rank(s) 0, 1 had not returned" in hangs.message
    alone = results[("rank-raises_alone", "b_sum")]
    assert alone.status is Status.ERROR
    assert "raised RuntimeError: only rank 1 fails" in alone.message
    assert "a collective that not every rank entered?" in alone.message
    # teardown: every rank process has exited (reaped by the launcher: its pid is gone) and
    # its rendezvous port is free again
    assert processes and all(p is not None and p.returncode is not None for p in processes)
    for p in processes:
        with pytest.raises(ProcessLookupError):
            os.kill(p.pid, 0)
    assert restarts == 3  # after the crash, the timeout and the ranks that disagreed
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a new rendezvous would
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_started_rank_takes_the_runs_directory_environment_and_path(
    method, tmp_path, monkeypatch
):
    """Forked by the launcher (Linux), or spawned as an interpreter of its own (elsewhere)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOSSCONF_PROBE", "seen")
    monkeypatch.syspath_prepend(str(tmp_path / "extra"))
    if method == "fork":
        launcher = rank_launcher.shared(vocab_parallel.PRELOAD)  # the one the groups use
    else:
        launcher = rank_launcher.Launcher((), method="spawn")
    log = tmp_path / "probe.log"
    try:
        child = launcher.fork("tests.vocab_parallel.launcher_probe:report", ("hello",), str(log))
        cwd, env, path, main, word = child.conn.recv()
        # the launcher's own __main__ (never the parent's main script, which it does not import)
        assert (cwd, env, path, main, word) == (str(tmp_path), "seen", str(tmp_path / "extra"),
                                                "__main__", "hello")  # fmt: skip
        assert child.alive
        child.conn.close()  # it returns, and exits 0
        assert child.wait(5) == 0 and not child.alive
        assert log.read_text() == "the probe says hello\n"
        sleeper = launcher.fork("tests.vocab_parallel.launcher_probe:sleep", (), str(log))
        assert sleeper.conn.recv() == "asleep"
        assert sleeper.kill() == -9 and sleeper.returncode == -9
        with pytest.raises(ProcessLookupError):  # reaped
            os.kill(sleeper.pid, 0)
    finally:
        if method == "spawn":
            launcher.close()


# -- the command line and the pytest plugin -------------------------------------------------
def test_cli_world_size_records_it_in_the_report(cli, tmp_path):
    report = tmp_path / "r.json"
    r = cli("--cases", str(SPLIT_CASES), "--case", "split_cases/c7_target_in_every_shard",
            "--adapter", "torch-vocab-split", "--adapter", "numpy", "--world-size", "2",
            "--report", str(report), "-q")  # fmt: skip
    assert r.returncode == 0, r.output
    doc = json.loads(report.read_text())
    assert {x["world_size"] for x in doc["results"]} == {2}
    statuses = {(x["adapter"], x["status"]) for x in doc["results"]}
    assert statuses == {("torch-vocab-split", "pass"), ("numpy", "unsupported")}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--world-size", "0"], "--world-size: '0' must be >= 1"),
        (["--world-size", "two"], "--world-size: 'two' is not a whole number of ranks"),
        (["--world-size", "2", "--isolate"], "drop --isolate"),
        (["--world-size", "2", "--jobs", "2"], "use one or the other"),
    ],
)
def test_cli_world_size_usage_errors(cli, args, message):
    r = cli("--cases", str(SPLIT_CASES), "--adapter", "torch-vocab-split", *args)
    assert r.returncode == 2 and message in r.output, r.output
    assert "Traceback" not in r.output


def test_pytest_plugin_world_size(pytester):
    # addopts: the cases' path is in this repository, whose pyproject.toml (found from it)
    # would run the inner session under pytest-xdist, two workers each with its own ranks
    r = pytester.runpytest(
        "-o", "addopts=", "-p", "no:cacheprovider", "--lossconf-adapter", "torch-vocab-split",
        "--lossconf-cases", str(SPLIT_CASES), "--lossconf-world-size", "2",
        "--lossconf-case", "split_cases/c3_more_ranks_than_classes_sum",
        "--lossconf-case", "split_cases/c7_all_ignored_mean_nan", "-q",
    )  # fmt: skip
    assert r.ret == 0, r.stdout.str()
    r.assert_outcomes(passed=6)


# -- Megatron-core (only where megatron-core is installed: it is no dependency) --------------
def test_megatron_core_matches_the_reference_where_its_semantics_do(tmp_path):
    """At 2 ranks on 8 classes (equal shards), without smoothing: Megatron-core conforms; with
    7 classes it says it needs equal shards; weights are declared unsupported."""
    pytest.importorskip("megatron.core")
    case_file = tmp_path / "even.yaml"
    case_file.write_text(
        "cases:\n"
        "  - name: c8_ignored_mean\n"
        "    why: 8 classes over 2 ranks, an ignored target\n"
        "    logits: [[0.5, -1.25, 2.0, 0.75, -0.5, 1.5, 3.0, 0.25],"
        " [1.5, 0.25, -0.75, 1.0, 2.25, -2.0, 0.0, -1.0]]\n"
        "    target: [6, -100]\n"
        "    dtype: [float32, bfloat16]\n"
        "    expected: oracle\n"
    )
    cases = load_paths([case_file, SPLIT_CASES]).cases
    picked = [c for c in cases if c.name in ("c8_ignored_mean", "c7_target_in_every_shard",
                                              "c3_more_ranks_than_classes_sum")]  # fmt: skip
    results = {
        (r.case_id.split("/")[1], r.dtype): r for r in harness.run(picked, "megatron", world_size=2)
    }
    assert results[("c8_ignored_mean", "float32")].status is Status.PASS
    assert results[("c8_ignored_mean", "bfloat16")].status is Status.PASS
    equal = results[("c7_target_in_every_shard", "float32")]
    assert equal.status is Status.UNSUPPORTED and "shards of equal size" in equal.message
    weighted = results[("c3_more_ranks_than_classes_sum", "float32")]
    assert weighted.status is Status.UNSUPPORTED and "needs weight" in weighted.message
