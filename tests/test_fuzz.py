"""The fuzz command: it finds and shrinks planted bugs, writes cases that load, and stays quiet on correct adapters."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from hypothesis import given, settings

from harness.fuzz import memory_case
from harness.fuzz_strategies import Space, case_fields
from harness.loader import load_file
from harness.metamorphic import PROPERTIES, NotApplicable, check

TARGETS = REPO / "tests" / "fuzz_targets"
NO_MAX_SHIFT = str(TARGETS / "no_max_shift.py")
RARE_MEAN = str(TARGETS / "wrong_rare_mean.py")
HAS_TORCH = importlib.util.find_spec("torch") is not None
CORRECT = ["numpy", *(["torch"] if HAS_TORCH else [])]


def _conforms(adapter: str, path: Path, *dtypes: str) -> bool:
    extra = [a for d in dtypes for a in ("--dtype", d)]
    r = run_cli("--adapter", adapter, "--cases", str(path), *extra)
    assert r.returncode in (0, 1), r.output
    return r.returncode == 0


def test_finds_and_shrinks_missing_max_shift(tmp_path):
    out, db = tmp_path / "found.yaml", tmp_path / "db"
    args = ["fuzz", "--adapter", NO_MAX_SHIFT, "--property", "oracle", "--examples", "100"]
    r = run_cli(*args, "--seed", "0", "--out", str(out), "--database", str(db))
    assert r.returncode == 1, r.output
    assert "FAILED" in r.stdout and f"--cases {out}" in r.stdout
    assert "case = {c.id: c for c in load_paths(" in r.stdout  # the Python repro snippet
    (case,) = load_file(out)
    assert case.tags == ("fuzz", "oracle") and "property oracle" in case.why
    # shrunk: one row, and the largest logit is just past exp()'s overflow (about 709.8)
    assert case.logits.size <= 2 and 709.8 < np.nanmax(case.logits) <= 1024
    assert any(db.rglob("*")), "the example database was not written"
    assert not _conforms(NO_MAX_SHIFT, out)
    for adapter in CORRECT:
        assert _conforms(adapter, out), adapter


def test_finds_rare_wrong_mean_denominator(tmp_path):
    out = tmp_path / "rare.yaml"
    r = run_cli(
        "fuzz", "--adapter", RARE_MEAN, "--property", "reduction_consistency",
        "--examples", "200", "--seed", "0", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 1, r.output
    assert "reduction_consistency" in r.stdout and "sum(none) /" in r.stdout
    cases = load_file(out)
    assert cases, r.output
    for case in cases:  # the bug needs all five; shrinking keeps exactly that combination
        assert {"weight", "label_smoothing", "kdim", "ignore_index", "reduction_mean"} <= set(
            case.features()
        ), case.features()
    assert not _conforms(RARE_MEAN, out)
    for adapter in CORRECT:
        assert _conforms(adapter, out), adapter


def test_same_seed_same_case(tmp_path):
    texts = []
    for i in range(2):
        out = tmp_path / f"run{i}.yaml"
        r = run_cli(
            "fuzz", "--adapter", NO_MAX_SHIFT, "--property", "shift_invariance",
            "--examples", "40", "--seed", "3", "--out", str(out),
        )  # fmt: skip
        assert r.returncode == 1, r.output
        texts.append(out.read_text())
    assert texts[0] == texts[1]


def test_numpy_reference_passes_every_property():
    r = run_cli("fuzz", "--adapter", "numpy", "--examples", "40", "--seed", "1")
    assert r.returncode == 0, r.output
    assert "no failure found" in r.stdout
    for name in ["oracle", *PROPERTIES]:
        assert name in r.stdout


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_passes_every_property_in_float64_and_float32():
    # float16/bfloat16: torch accumulates in half precision, a documented divergence (README)
    r = run_cli(
        "fuzz", "--adapter", "torch", "--examples", "40", "--seed", "2",
        "--dtype", "float64", "--dtype", "float32",
    )  # fmt: skip
    assert r.returncode == 0, r.output


UNSUPPORTED = frozenset(
    {"weight", "label_smoothing", "kdim", "probability_target", "empty", "reduction_none",
     "float16", "bfloat16"}
)  # fmt: skip


@settings(max_examples=150, deadline=None, derandomize=True)
@given(case_fields(Space(dtypes=("float64", "float32"), unsupported=UNSUPPORTED)))
def test_declared_unsupported_features_are_not_generated(fields):
    case = memory_case(fields)
    assert not (case.features() & UNSUPPORTED)
    assert set(case.dtypes) <= {"float64", "float32"}


def test_every_property_holds_for_the_reference_on_a_rich_case():
    from harness.registry import load

    fields = {
        "logits": [[[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], [[1.0, 0.0], [-2.0, 3.0], [0.5, 0.5]]],
        "target": [[2, -100], [0, 1]],
        "weight": [0.5, 2.0, 1.25],
        "label_smoothing": 0.1,
        "reduction": "mean",
        "dtype": "float32",
    }
    adapter, case = load("numpy"), memory_case(fields)
    for name in PROPERTIES:
        assert check(name, adapter, case, "float32") is None, name


def test_shift_invariance_catches_overflow_the_oracle_check_would_not_need():
    from harness.registry import resolve

    # 700 is fine for exp() in float64; the shifted row is not
    case = memory_case({"logits": [[700.0, 0.0]], "target": [1], "dtype": "float64"})
    violation = check("shift_invariance", resolve(NO_MAX_SHIFT), case, "float64")
    assert violation is not None and "variant vs original" in violation.message
    assert set(violation.variants) == {"original", "shifted"}
    assert "8192.0 added to the logits of position 0" in violation.message


def test_not_applicable_is_reported_not_failed():
    from harness.registry import load

    case = memory_case({"logits": [[0.5]], "target": [0], "dtype": "float64"})
    with pytest.raises(NotApplicable):
        PROPERTIES["class_permutation"](load("numpy"), case, "float64")


def test_usage_errors_name_the_flag():
    r = run_cli("fuzz", "--property", "nonsense", "--examples", "1")
    assert r.returncode == 2 and "--property 'nonsense': must be one of oracle" in r.stderr
    r = run_cli("fuzz", "--out", "found.txt", "--examples", "1")
    assert r.returncode == 2 and "must end in .yaml" in r.stderr


def test_missing_hypothesis_is_a_clear_error():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "from harness.cli import main; sys.exit(main(['fuzz', '--examples', '1']))"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2
    assert "pip install 'lossconf[fuzz]'" in p.stderr and "Traceback" not in p.stderr
