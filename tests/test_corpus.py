"""The built-in corpus: size, gradients everywhere, tagged divergences, coverage command, speed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.loader import load_paths

KNOWN_DIVERGENCES = {
    "divergence:fp16-cpu-mean-65504",
    "divergence:cuda-unbatched-all-ignored",
    "divergence:fp16-smoothing-term-overflow",
    "divergence:half-cpu-sumexp-rounding",
}


@pytest.fixture(scope="module")
def cases():
    return load_paths().cases


def test_hundreds_of_cases_each_with_a_why(cases):
    assert len(cases) >= 300
    assert all(c.why.strip() for c in cases)


def test_every_valid_case_has_a_gradient(cases):
    missing = [
        (c.id, d) for c in cases if c.expect_error is None for d in c.dtypes
        if c.expected_for(d).grad is None
    ]  # fmt: skip
    assert missing == []


def test_every_error_kind_and_dtype_is_exercised(cases):
    from harness.case import ERROR_KINDS

    assert {c.expect_error for c in cases} - {None} == set(ERROR_KINDS)
    assert {d for c in cases for d in c.dtypes} == {"float64", "float32", "float16", "bfloat16"}


def test_divergence_tags_are_the_documented_ones(cases):
    tags = {t for c in cases for t in c.tags if t.startswith("divergence:")}
    assert tags == KNOWN_DIVERGENCES
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for tag in tags:
        assert tag in readme, f"{tag} is not listed in README"


def test_large_cases_exist(cases):
    classes = max(c.logits.shape[0 if c.logits.ndim == 1 else 1] for c in cases)
    assert classes >= 10_000
    half_mean = [
        c for c in cases
        if "float16" in c.dtypes and c.reduction == "mean" and c.target.size > 65504
    ]  # fmt: skip
    assert half_mean


def test_coverage_command_prints_values_and_pairs(cli):
    r = cli("coverage")
    assert r.returncode == 0, r.output
    assert "reduction     none=" in r.stdout
    assert "target x weight" in r.stdout
    assert "pairwise coverage:" in r.stdout


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


def test_full_suite_through_numpy_is_fast(cases):
    from harness.registry import load
    from harness.runner import run

    start = time.perf_counter()
    results = list(run(cases, [load("numpy")]))
    assert all(r.conforming for r in results)
    assert time.perf_counter() - start < 60  # measured ~7 s of CPU on a 2-core machine
