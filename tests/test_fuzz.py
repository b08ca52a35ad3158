"""The fuzz command: it finds and shrinks planted bugs, writes cases that load and that the reference
implementations pass, and stays quiet on correct adapters."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from hypothesis import given, settings

from harness.cases.loader import load_file
from harness.exit_codes import ExitCode
from harness.fuzz.metamorphic import PROPERTIES, NotApplicable, check
from harness.fuzz.search import memory_case
from harness.fuzz.strategies import Space, case_fields

TARGETS = REPO / "tests" / "fuzz_targets"
NO_MAX_SHIFT = str(TARGETS / "no_max_shift.py")
RARE_MEAN = str(TARGETS / "wrong_rare_mean.py")
OFFSET = str(TARGETS / "offset_loss.py")
HAS_TORCH = importlib.util.find_spec("torch") is not None
CORRECT = ["numpy", *(["torch"] if HAS_TORCH else [])]
#: per property in the test suite (tools/fuzz_references.py runs 2,000): at seed 20, 40 examples
#: find tests/fuzz_targets' planted bugs (no_max_shift under oracle, shift_invariance and
#: grad_rows_sum_zero; offset_loss under oracle and reduction_consistency)
SLICE_EXAMPLES = 40


def _conforms(cli, adapter: str, path: Path, *dtypes: str) -> bool:
    extra = [a for d in dtypes for a in ("--dtype", d)]
    r = cli("--adapter", adapter, "--cases", str(path), *extra)
    assert r.returncode in (0, 1), r.output
    return r.returncode == 0


def test_finds_and_shrinks_missing_max_shift(cli, tmp_path):
    out, db = tmp_path / "found.yaml", tmp_path / "db"
    args = ["fuzz", "--adapter", NO_MAX_SHIFT, "--property", "oracle", "--examples", "100"]
    r = cli(*args, "--seed", "0", "--out", str(out), "--database", str(db))
    assert r.returncode == 1, r.output
    assert "FAILED" in r.stdout and f"--cases {out}" in r.stdout
    assert "case = {c.id: c for c in load_cases(" in r.stdout  # the Python repro snippet
    (case,) = load_file(out)
    assert case.tags == ("fuzz", "oracle") and "property oracle" in case.why
    # shrunk: one row, and the largest |logit| just past exp()'s range (overflow above
    # about 709.8, a row of only underflowing logits below about -745)
    assert case.logits.size <= 2 and 709.8 < np.nanmax(np.abs(case.logits)) <= 1024
    assert any(db.rglob("*")), "the example database was not written"
    assert not _conforms(cli, NO_MAX_SHIFT, out)
    for adapter in CORRECT:
        assert _conforms(cli, adapter, out), adapter


def test_finds_rare_wrong_mean_denominator(cli, tmp_path):
    out = tmp_path / "rare.yaml"
    r = cli(
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
    assert not _conforms(cli, RARE_MEAN, out)
    for adapter in CORRECT:
        assert _conforms(cli, adapter, out), adapter


def test_same_seed_same_case(cli, tmp_path):
    texts = []
    for i in range(2):
        out = tmp_path / f"run{i}.yaml"
        r = cli(
            "fuzz", "--adapter", NO_MAX_SHIFT, "--property", "shift_invariance",
            "--examples", "40", "--seed", "3", "--out", str(out),
        )  # fmt: skip
        assert r.returncode == 1, r.output
        texts.append(out.read_text())
    assert texts[0] == texts[1]


def test_numpy_reference_passes_every_property(cli):
    """The command's report on a correct adapter (the properties themselves get SLICE_EXAMPLES
    examples each against the references below, without the reference gate)."""
    r = cli("fuzz", "--adapter", "numpy", "--examples", "10", "--seed", "1")
    assert r.returncode == 0, r.output
    assert "no failure found" in r.stdout and "reference" not in r.stdout
    for name in ["oracle", *PROPERTIES]:
        assert name in r.stdout


def _fuzz_references():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from fuzz_references import fuzz_references
    finally:
        sys.path.remove(str(REPO / "tools"))
    return fuzz_references


@pytest.mark.parametrize(
    "adapter",
    [
        "numpy",
        pytest.param(
            "torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
        ),
    ],
)
def test_references_pass_every_property_seeded_slice(adapter):
    """A seeded slice of tools/fuzz_references.py: no reference gate, so a violation by a
    reference itself is a finding (a bug in a comparison or a gap in the error model).
    numpy in every dtype, torch in float64 and float32 (its half precision accumulates in
    half precision, a documented divergence)."""
    rows = _fuzz_references()(
        examples=SLICE_EXAMPLES, seed=20, adapters=[adapter], split_dtypes=False
    )
    assert {r.prop for r in rows} == {"oracle", *PROPERTIES}
    for row in rows:
        r = row.report
        assert r.finding is None and r.error is None, (row.prop, r.finding or r.error)
        assert r.examples >= SLICE_EXAMPLES and r.max_ratio <= 1.0, (row.prop, r.examples)


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
    from harness.execution.registry import load

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
    from harness.execution.registry import resolve

    # 700 is fine for exp() in float64; the shifted row is not
    case = memory_case({"logits": [[700.0, 0.0]], "target": [1], "dtype": "float64"})
    violation = check("shift_invariance", resolve(NO_MAX_SHIFT), case, "float64")
    assert violation is not None and "loss: original 700.0, shifted inf" in violation.message
    assert set(violation.variants) == {"original", "shifted"}
    assert "8192.0 added to the logits of position 0" in violation.message


def test_relation_allows_threshold_times_both_bounds():
    from harness.fuzz.metamorphic import Side, relation
    from harness.oracle.error_model import THRESHOLD

    a = Side("original", np.array([1.0, 2.0]), np.array([0.25, 0.0]))
    room = THRESHOLD * (0.25 + 0.5)
    ratio, message = relation("grad", a, Side("variant", np.array([1.0 + room, 2.0]), 0.5))
    assert ratio == 1.0 and message is None
    ratio, message = relation("grad", a, Side("variant", np.array([1.0, 2.0 + 1e-9]), 0.5))
    assert ratio == pytest.approx(1e-9 / (THRESHOLD * 0.5))
    ratio, message = relation("grad", a, Side("variant", np.array([1.0 + 2 * room, 2.0]), 0.5))
    assert ratio == pytest.approx(2.0) and message.startswith("grad[0]: original 1.0, variant")
    assert "test ratio 2: |diff| 6 > allowed 3 = 4 x (bound 0.25 + 0.5)" in message
    # NaN matches NaN, an infinity itself; nothing is allowed between them and numbers
    nan, inf = float("nan"), float("inf")
    assert relation("loss", Side("a", nan, 0.0), Side("b", nan, 0.0)) == (0.0, None)
    assert relation("loss", Side("a", inf, 0.0), Side("b", inf, 0.0)) == (0.0, None)
    ratio, message = relation("loss", Side("a", inf, 1.0), Side("b", 1e308, 1.0))
    assert ratio == inf and "non-finite mismatch" in message
    # a NaN bound (the model cannot say) allows no difference, and equal values hold
    assert relation("loss", Side("a", 0.5, nan), Side("b", 0.5, 0.0)) == (0.0, None)
    assert relation("loss", Side("a", 0.5, nan), Side("b", 0.5 + 1e-9, 1.0))[0] == inf


def test_a_violation_a_reference_shares_is_not_written(tmp_path, monkeypatch, capsys):
    """With no allowance, every gradient row that does not sum to exactly 0 violates
    grad_rows_sum_zero, for numpy as for the adapter: the search reports that the tolerance
    disagrees with the reference, writes nothing, and exits 1. (An adapter with a bug of its
    own would still have that bug found: the search goes on past the shared violations.)"""
    from harness.cli import fuzz as fuzz_cli
    from harness.fuzz import metamorphic

    monkeypatch.setattr(metamorphic, "THRESHOLD", 0.0)
    out = tmp_path / "found.yaml"
    code = fuzz_cli.main([
        "--adapter", "numpy", "--property", "grad_rows_sum_zero", "--dtype", "float64",
        "--examples", "40", "--seed", "0", "--out", str(out),
    ])  # fmt: skip
    text = capsys.readouterr().out
    assert code == ExitCode.NONCONFORMING, text
    assert not out.exists(), text
    assert (
        "grad_rows_sum_zero: not a finding, the tolerance or the semantics disagree with "
        "reference numpy [float64]: grad row of position" in text
    )
    assert "reference numpy fails too on" in text and "FAILED" not in text


def test_a_case_a_reference_fails_is_not_written(tmp_path, monkeypatch, capsys):
    """A stand-in reference that adds 0.5 to every loss lets a shift_invariance
    finding through the search, then fails the case the finding would write: not written."""
    from harness.cli import fuzz as fuzz_cli
    from harness.fuzz import search as fuzz

    monkeypatch.setattr(fuzz, "REFERENCES", (("numpy", None), (OFFSET, None)))
    out = tmp_path / "found.yaml"
    # the second run below (numpy alone as the reference) replays this search's minimal call
    # from the example database instead of searching and shrinking again; it is the call that
    # search would find too: references steer a search only by sharing a violation ("fails
    # too on" in the table), which neither does here
    args = ["--adapter", NO_MAX_SHIFT, "--property", "shift_invariance", "--dtype", "float64",
            "--examples", "40", "--seed", "3", "--out", str(out),
            "--database", str(tmp_path / "db")]  # fmt: skip
    code = fuzz_cli.main(args)
    text = capsys.readouterr().out
    assert code == ExitCode.NONCONFORMING, text
    assert not out.exists(), text
    assert f"not written: the tolerance or the semantics disagree with reference {OFFSET}" in text
    assert "no case written" in text and "FAILED" not in text and "fails too on" not in text
    (finding,) = [line for line in text.splitlines() if line.startswith("shift_invariance [")]
    # with numpy alone as the reference, the same finding is written
    monkeypatch.setattr(fuzz, "REFERENCES", (("numpy", None),))
    assert fuzz_cli.main(args) == ExitCode.NONCONFORMING
    text = capsys.readouterr().out
    assert "FAILED [float64]" in text and finding in text.splitlines(), (finding, text)
    assert load_file(out)


def test_not_applicable_is_reported_not_failed():
    from harness.execution.registry import load

    case = memory_case({"logits": [[0.5]], "target": [0], "dtype": "float64"})
    with pytest.raises(NotApplicable):
        PROPERTIES["class_permutation"](load("numpy"), case, "float64")
    with pytest.raises(NotApplicable):
        check("class_permutation", load("numpy"), case, "float64")


def test_usage_errors_name_the_flag(cli):
    r = cli("fuzz", "--property", "nonsense", "--examples", "1")
    assert r.returncode == 2 and "--property 'nonsense': must be one of oracle" in r.stderr
    r = cli("fuzz", "--out", "found.txt", "--examples", "1")
    assert r.returncode == 2 and "must end in .yaml" in r.stderr


def test_missing_hypothesis_is_a_clear_error():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "from harness.cli.main import main; sys.exit(main(['fuzz', '--examples', '1']))"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2
    assert "pip install 'lossconf[fuzz]'" in p.stderr and "Traceback" not in p.stderr
