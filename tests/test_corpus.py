"""The built-in corpus: size, gradients everywhere, tagged divergences, coverage.

(That the whole corpus conforms through the numpy reference, and fast, is the default run of
tests/test_cli.py.)"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cases import coverage
from harness.cases.loader import load_paths

REPO = Path(__file__).resolve().parent.parent

KNOWN_DIVERGENCES = {
    "divergence:fp16-cpu-mean-65504",
    "divergence:cuda-unbatched-all-ignored",
    "divergence:fp16-smoothing-term-overflow",
    "divergence:half-cpu-sumexp-rounding",
}


@pytest.fixture(scope="module")
def cases():
    return load_paths().cases


@pytest.fixture(scope="module")
def pairs(cases):
    """The corpus's coverage rows and their pair coverage (two tests read them)."""
    rows, _ = coverage.rows_of(cases)
    return rows, coverage.pair_coverage(rows)


def test_hundreds_of_cases_each_with_a_why(cases):
    assert len(cases) >= 300
    assert all(c.why.strip() for c in cases)


def test_every_valid_case_has_a_gradient(cases):
    missing = [
        (c.id, d) for c in cases if c.expect_error is None for d in c.dtypes
        if (c.linear_expected_for(d).grad_hidden if c.fused else c.expected_for(d).grad) is None
    ]  # fmt: skip
    assert missing == []


def test_every_error_kind_and_dtype_is_exercised(cases):
    from harness.cases.model import ERROR_KINDS

    assert {c.expect_error for c in cases} - {None} == set(ERROR_KINDS)
    assert {d for c in cases for d in c.dtypes} == {"float64", "float32", "float16", "bfloat16"}


def test_divergence_tags_are_the_documented_ones(cases):
    tags = {t for c in cases for t in c.tags if t.startswith("divergence:")}
    assert tags == KNOWN_DIVERGENCES
    # README links the list, docs/corpus.md's section "Known divergences", which names each
    readme = (REPO / "README.md").read_text()
    assert "(docs/corpus.md#known-divergences)" in readme
    corpus = (REPO / "docs" / "corpus.md").read_text()
    section = corpus.split("\n## Known divergences\n", 1)[1].split("\n## ", 1)[0]
    for tag in tags:
        assert f"`{tag}`" in section, f"{tag} is not listed in docs/corpus.md#known-divergences"


def test_large_cases_exist(cases):
    logits = [c.logits for c in cases if not c.fused]
    classes = max(x.shape[0 if x.ndim == 1 else 1] for x in logits)
    assert classes >= 10_000
    half_mean = [
        c for c in cases
        if "float16" in c.dtypes and c.reduction == "mean" and c.target.size > 65504
    ]  # fmt: skip
    assert half_mean


@pytest.fixture
def coverage_of_the_corpus(cli, made_once):
    """``lossconf coverage`` of the built-in corpus, run once in this module (by the first test
    that asks, with its ``cli``): two tests read its output."""
    if "coverage" not in made_once:
        made_once["coverage"] = cli("coverage")
    return made_once["coverage"]


def test_coverage_command_prints_values_and_pairs(coverage_of_the_corpus):
    r = coverage_of_the_corpus
    assert r.returncode == 0, r.output
    assert "reduction     none=" in r.stdout
    assert "target x weight" in r.stdout
    assert "pairwise coverage:" in r.stdout
    assert "(100.0%)" in r.stdout


def test_coverage_command_prints_every_infeasible_pair_with_its_reason(coverage_of_the_corpus):
    r = coverage_of_the_corpus
    assert r.returncode == 0, r.output
    listed = r.stdout.split("Infeasible value pairs")[1]
    for (a, va, b, vb), why in coverage.INFEASIBLE.items():
        line = next(x for x in listed.splitlines() if x.startswith(f"{a}={va} + {b}={vb} "))
        assert why in line
    assert "Declared infeasible, yet a case has it" not in r.stdout


def test_every_feasible_value_pair_is_covered(pairs):
    rows, result = pairs
    missing = [f"{pc.a}={va} + {pc.b}={vb}" for pc in result for va, vb in pc.missing]
    assert missing == []
    seen_values = {(k, r[k]) for r in rows for k in coverage.PARAMETERS}
    assert seen_values == {(k, v) for k, vs in coverage.PARAMETERS.items() for v in vs}


def test_every_infeasible_pair_has_a_reason_and_no_case_has_it(pairs):
    names = list(coverage.PARAMETERS)
    for (a, va, b, vb), why in coverage.INFEASIBLE.items():
        assert va in coverage.PARAMETERS[a] and vb in coverage.PARAMETERS[b], (a, va, b, vb)
        assert names.index(a) < names.index(b), "keys in PARAMETERS order"
        assert len(why.split()) >= 5, (a, va, b, vb)
    contradicting = [
        (pc.a, p, pc.b, cid) for pc in pairs[1] for p, cid in pc.contradicting.items()
    ]  # fmt: skip
    assert contradicting == []
    # only these parameters constrain each other: smoothing, reduction, dtype combine freely
    constrained = {k for a, _, b, _ in coverage.INFEASIBLE for k in (a, b)}
    assert constrained.isdisjoint({"smoothing", "reduction", "dtype"})


def _calls(c: int):
    """Small calls of every shape kind with C classes: (logits, target, probability, ii, weight)."""
    shapes = [(c,), (1, c), (3, c), (2, c, 2), (1, c, 2, 1), (1, c, 1, 2, 1), (1, c, 2, 1, 1, 1),
              (1, c, 1, 1, 2, 1, 1), (1, c, 2, 1, 1, 1, 1, 1), (0, c), (2, c, 0)]  # fmt: skip
    weights = [None, np.full(c, 1.5), np.arange(1.0, c + 1), np.arange(c) * 0.5,
               np.arange(c) - 0.5]  # fmt: skip
    rng = np.random.default_rng(0)
    for dims, ii, w in itertools.product(shapes, (-100, -1, -5, 0, c - 1, c, 255), weights):
        x = rng.normal(size=dims)
        tshape = () if len(dims) == 1 else (dims[0], *dims[2:])
        p = int(np.prod(tshape, dtype=np.int64))
        labels = [np.full(p, j) for j in (*range(c), ii)]
        labels += [np.where(np.arange(p) % 2 == 0, ii, j) for j in range(c)]
        for lab in labels:
            yield x, lab.reshape(tshape), False, ii, w
        yield x, -rng.random(dims), True, ii, w  # negative soft targets: not validated


def _accepts(torch, call) -> bool:
    x, t, soft, ii, w = call
    try:
        torch.nn.functional.cross_entropy(
            torch.from_numpy(x),
            torch.from_numpy(t if soft else t.astype(np.int64)),
            weight=None if w is None else torch.from_numpy(w),
            ignore_index=ii,
        )
    except (RuntimeError, IndexError, ValueError):
        return False
    return True


def test_infeasible_pairs_are_infeasible_and_feasible_ones_feasible():
    """Over every shape kind, 1 to 3 classes, each ignore_index kind, weight kind and target
    pattern: no call PyTorch accepts has an infeasible pair (those tried are all rejected), and
    the accepted calls have every feasible pair of these parameters (none is over-declared)."""
    torch = pytest.importorskip("torch")
    names = [k for k in coverage.PARAMETERS if k not in ("smoothing", "reduction", "dtype")]
    accepted, rejected_infeasible = set(), set()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny calls: idle intra-op threads only cost time
    try:
        for call in (call for c in (1, 2, 3) for call in _calls(c)):
            x, t, soft, ii, w = call
            row = coverage.classify_call(x, t, probability=soft, weight=w, ignore_index=ii)
            pairs = {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(names, 2)}
            bad = {p for p in pairs if coverage.infeasible(*p[0], *p[1])}
            if _accepts(torch, call):
                assert not bad, (x.shape, t, soft, ii, w, bad)
                accepted |= pairs
            else:
                rejected_infeasible |= bad
    finally:
        torch.set_num_threads(threads)
    # the infeasible pairs a call can ask for are asked for, and PyTorch rejects them
    assert rejected_infeasible == {
        (("target", "probability"), ("ignore_index", v)) for v in ("in_range", "out_of_range")
    }
    small = {"classes": ("1", "2", "3-99")}
    feasible = {
        ((a, va), (b, vb))
        for a, b in itertools.combinations(names, 2)
        for va in small.get(a, coverage.PARAMETERS[a])
        for vb in small.get(b, coverage.PARAMETERS[b])
        if coverage.infeasible(a, va, b, vb) is None
    }
    assert feasible - accepted == set()


def _make_corpus():
    spec = importlib.util.spec_from_file_location("make_corpus", REPO / "tools" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_pairwise_file_is_what_the_generator_writes(tmp_path):
    make_corpus = _make_corpus()
    # the generator's constraint model and the coverage table agree on what is feasible
    feasible = {
        ((a, va), (b, vb))
        for (a, b), pairs in coverage.feasible_pairs().items()
        for va, vb in pairs
    }
    assert make_corpus.realizable_pairs() == feasible
    written = make_corpus.write_pairwise(tmp_path)
    committed = REPO / "cases" / "generated" / make_corpus.PAIRWISE_FILE
    assert written.read_text() == committed.read_text(), "run python tools/make_corpus.py"
    result = coverage.pair_coverage(coverage.rows_of(load_paths([committed]).cases)[0])
    assert all(not pc.missing for pc in result), "the pairwise file alone covers every pair"


def test_coverage_of_one_file_counts_its_runs(cli, write):
    path = write(
        "one.yaml",
        """
        cases:
          - name: a
            why: "one valid case in two dtypes"
            logits: [[0.5, 1.0]]
            target: [1]
            reduction: sum
            expected: oracle
          - name: b
            why: "one invalid case"
            logits: [[0.5, 1.0]]
            target: [2]
            expect_error: index_out_of_range
        """,
    )
    r = cli("coverage", str(path))
    assert r.returncode == 0, r.output
    assert "2 cases, 2 valid case x dtype runs" in r.stdout
    assert "sum=2" in r.stdout and "index_out_of_range=1" in r.stdout
