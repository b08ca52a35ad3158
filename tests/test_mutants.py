"""The suite against deliberately wrong implementations (tests/mutants) and correct ones.

Every mutant must fail at least one case; a float32-accumulating implementation and PyTorch
(float64, float32, CPU) must fail none outside the cases tagged ``divergence:*`` (known,
documented divergences of PyTorch). The numpy reference fails none at all: the default run of
tests/test_cli.py runs the whole suite through it.
"""

from __future__ import annotations

import pytest

from harness.cases.loader import load_paths
from harness.execution.registry import BUILTIN
from harness.execution.results import Status
from harness.execution.runner import run_one
from tests.mutants.bugs import MUTANTS, HalfPrecisionAccumulation
from tests.mutants.score import first_kill, hand_written_first
from tests.mutants.stepwise import Stepwise


@pytest.fixture(scope="module")
def cases():
    """The suite, in the order ``first_kill`` tries it: the cases that expect an error first
    (they call the adapter once and compare no values), then the topic files' targeted cases,
    then the grid (``hand_written_first``), each group smallest first. Whether a mutant is
    killed does not depend on the order (a survivor has run every case); how soon does: the
    mutants that accept bad input (a label out of range, an unknown reduction) ran through
    half the suite before an error case (2 s of CPU), and those that only extreme values
    reveal (no max shift, a log of the softmax, clipped negative probabilities) ran through
    the 70000-row and fused linear cases before the small case that kills them (1 s)."""
    return sorted(
        hand_written_first(load_paths().cases),
        key=lambda c: (c.expect_error is None, "grid" in c.tags, c.logits_size),
    )


def _divergent(case) -> bool:
    return any(t.startswith("divergence:") for t in case.tags)


def _false_failures(adapter, cases, dtypes=None) -> list[str]:
    bad = []
    for case in cases:
        if _divergent(case):
            continue
        for dtype in case.dtypes:
            if dtypes is not None and dtype not in dtypes:
                continue
            r = run_one(case, adapter, dtype)
            if not r.conforming:
                bad.append(f"{case.id} [{dtype}] {r.status}: {r.message}")
    return bad


def test_at_least_fifteen_distinct_documented_mutants():
    names = [m.name for m in MUTANTS]
    assert len(names) >= 15 and len(set(names)) == len(names)
    assert all((m.__doc__ or "").strip() for m in MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_suite_kills_mutant(mutant, cases):
    kill = first_kill(mutant(), cases)
    assert kill.case_id is not None, f"{mutant.name} survived the whole suite: {mutant.__doc__}"


def test_naive_half_precision_fails_accumulation_cases(cases):
    """The half-precision tolerances reject in-dtype accumulation but accept float32 accumulation."""
    by_id = {c.id: c for c in cases}
    naive, correct = HalfPrecisionAccumulation(), Stepwise()
    for case_id, dtype in [
        ("half_precision/accumulate_c4096", "float16"),
        ("half_precision/accumulate_c4096", "bfloat16"),
        ("half_precision/accumulate_c32000_mean", "float16"),
        ("half_precision/mean_over_70000_targets", "float16"),
    ]:
        case = by_id[case_id]
        assert run_one(case, naive, dtype).status is Status.FAIL, (case_id, dtype)
        assert run_one(case, correct, dtype).status is Status.PASS, (case_id, dtype)


def test_float32_accumulating_reference_conforms_everywhere(cases):
    """Stepwise computes in float32 below float64: every case in every dtype passes."""
    assert _false_failures(Stepwise(), cases) == []


def test_torch_conforms_outside_known_divergences(cases):
    pytest.importorskip("torch")
    from harness.execution.registry import load

    assert "torch" in BUILTIN  # adapters/torch_ce.py, registered

    torch = load("torch")
    hand = [c for c in cases if "grid" not in c.tags]
    grid = [c for c in cases if "grid" in c.tags]
    # the grid's 648 cases in float32 only (the stricter dtype for torch), to keep this fast
    bad = _false_failures(torch, hand, dtypes=("float64", "float32"))
    bad += _false_failures(torch, grid, dtypes=("float32",))
    assert bad == []
