"""harness.cases.build.build_case and the loader's errors, in process: what a valid mapping
becomes, and what an invalid one is told (file, line, case, field, value, what was expected).

The corpus of malformed files is tests/test_bad_cases.py; these are the rules one by one.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cases.build import build_case
from harness.cases.loader import LineDict, load_paths
from harness.errors import CaseFileError

PATH = Path("suite/unit.yaml")
PROFILE = settings(max_examples=100, deadline=None, derandomize=True)


def build(defaults: dict | None = None, **fields):
    raw = {"name": "c", "why": "a unit test", "logits": [[0.5, -1.0, 2.0]], "target": [2]}
    raw.update(fields)
    return build_case(PATH, raw, defaults or {})


def refused(**fields) -> CaseFileError:
    with pytest.raises(CaseFileError) as info:
        build(**{"expected": "oracle", **fields})
    return info.value


# --- what a valid mapping becomes -----------------------------------------------------------


def test_a_minimal_case_takes_the_documented_defaults():
    case = build(expected="oracle")
    assert case.id == "unit/c" and case.file == PATH and case.why == "a unit test"
    assert case.reduction == "mean" and case.ignore_index == -100 and case.label_smoothing == 0.0
    assert case.dtypes == ("float64", "float32") and case.expected is None  # oracle at run time
    assert case.logits.dtype == np.float64 and case.target.dtype == np.int64
    assert case.features() == {"reduction_mean", "grad"}
    assert len(case.content_hash) == 16 and int(case.content_hash, 16) >= 0


def test_the_content_hash_follows_the_content_and_only_it():
    a, b = build(expected="oracle"), build(expected="oracle")
    assert a.content_hash == b.content_hash
    assert build(expected="oracle", why="other words").content_hash != a.content_hash
    assert build(expected="oracle", target=[1]).content_hash != a.content_hash
    assert build(expected="oracle", tags=["x"]).content_hash != a.content_hash


def test_defaults_apply_and_tags_merge_in_order():
    defaults = {"dtype": ["float16"], "tags": ["numerics", "b"], "reduction": "sum"}
    case = build(defaults, expected="oracle", tags=["b", "c"], reduction="none")
    assert case.dtypes == ("float16",)
    assert case.tags == ("numerics", "b", "c")
    assert case.reduction == "none"  # the case's own value wins


def test_one_set_of_expected_values_serves_every_dtype_when_the_inputs_are_exact():
    case = build(logits=[[0.5, -1.0, 2.0]], expected={"loss": 0.25, "grad": [[0.1, 0.2, -0.3]]})
    assert set(case.expected) == {"float64", "float32"}
    for dtype in case.dtypes:
        np.testing.assert_array_equal(case.expected[dtype].loss, 0.25)
        np.testing.assert_array_equal(case.expected[dtype].grad, [[0.1, 0.2, -0.3]])
    e = refused(logits=[[0.1, 0.2, 0.3]], expected={"loss": 1.0})
    assert e.field == "expected"
    assert "not exactly representable in ['float32']" in e.detail
    assert "give values per dtype" in e.detail


def test_expected_values_per_dtype_must_name_exactly_the_case_dtypes():
    per = {"float64": {"loss": 1.0}, "float32": {"loss": 1.5}}
    case = build(logits=[[0.1, 0.2, 0.3]], expected=per)
    assert float(case.expected["float32"].loss) == 1.5 and case.expected["float32"].grad is None
    e = refused(logits=[[0.1, 0.2, 0.3]], expected={"float64": {"loss": 1.0}})
    assert (e.field, e.case) == ("expected", "c")
    assert "per-dtype values for ['float64'], but the case runs in ['float64', 'float32']" in str(e)


@pytest.mark.parametrize(
    ("fields", "features"),
    [
        ({"weight": [1.0, 2.0, 0.5]}, {"weight"}),
        ({"label_smoothing": 0.1}, {"label_smoothing"}),
        ({"target": [-100]}, {"ignore_index"}),
        ({"ignore_index": 1}, {"ignore_index"}),
        ({"target": [[0.25, 0.25, 0.5]]}, {"probability_target"}),
        ({"logits": [0.5, 1.0], "target": 1}, {"unbatched"}),
        ({"logits": [[[0.5], [1.0]]], "target": [[1]]}, {"kdim"}),
        ({"reduction": "none", "grad_output": [2.0]}, {"grad_output"}),
        ({"logits": {"generate": "normal", "shape": [0, 3], "seed": 1}, "target": []}, {"empty"}),
    ],
)
def test_features_follow_the_inputs(fields, features):
    case = build(expected="oracle", **fields)
    reduction = fields.get("reduction", "mean")
    assert case.features() == {"grad", f"reduction_{reduction}", *features}


# --- what an invalid mapping is told ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "detail"),
    [
        ({"weight": [1.0, 2.0]}, "weight", "shape (2,), expected (3,) for C = 3 classes"),
        ({"weight": [1.0, float("nan"), 1.0]}, "weight", "non-finite values are not allowed"),
        ({"target": [3]}, "target", "class index 3 outside [0, 3) and not ignore_index=-100"),
        ({"target": [0, 1]}, "target", "class-index target of shape (2,), expected (1,)"),
        ({"target": [2.0]}, "target", "probability target of shape (1,), expected the logits'"),
        ({"target": [True]}, "target", "booleans are not numbers"),
        ({"logits": [[1.0, 2.0], [3.0]]}, "logits[1]", "ragged nested list: 1 items here"),
        ({"logits": [["a", 1.0]]}, "logits", "'a' is not a number"),
        ({"logits": 3.0, "target": 0}, "logits", "a scalar: expected shape (C,), (N, C)"),
        ({"reduction": "avg"}, "reduction", "'avg' must be one of 'none', 'mean', 'sum'"),
        ({"label_smoothing": 1.5}, "label_smoothing", "1.5 must lie in [0, 1]"),
        ({"grad_output": [1.0]}, "grad_output", "only for reduction 'none', not 'mean'"),
        (
            {"reduction": "none", "grad_output": [1.0, 2.0]},
            "grad_output",
            "shape (2,), expected the loss shape (1,)",
        ),
        (
            {"target": [[0.5, 0.5, 0.0]], "ignore_index": 0},
            "ignore_index",
            "0 >= 0 with probability targets raises in PyTorch",
        ),
        (
            {"logits": {"generate": "normal", "shape": [2, 3], "seed": 1, "sha256": "0" * 16}},
            "logits.sha256",
            "the case says 0000000000000000",
        ),
        (
            {"logits": {"generate": "zipf", "shape": [2]}},
            "logits.generate",
            "'zipf' must be one of normal, uniform, labels, probabilities, full",
        ),
    ],
)
def test_each_rule_names_its_field_and_what_was_expected(fields, field, detail):
    e = refused(**fields)
    assert (e.path, e.case, e.field) == (str(PATH), "c", field)
    assert detail in e.detail
    assert str(e).startswith(f"{PATH}: case 'c': field {field!r}: ")


def test_expected_values_of_the_wrong_shape_are_refused_per_field():
    e = refused(expected={"loss": [1.0]})
    assert e.field == "expected.loss" and "shape (1,), expected () for reduction 'mean'" in e.detail
    e = refused(expected={"loss": 1.0, "grad": [[1.0, 2.0]]})
    assert (
        e.field == "expected.grad" and "shape (1, 2), expected the logits' shape (1, 3)" in e.detail
    )


def test_expect_error_cases_skip_the_checks_their_inputs_break():
    case = build(target=[7], expect_error="index_out_of_range")
    assert case.expect_error == "index_out_of_range" and "invalid_input" in case.features()
    with pytest.raises(CaseFileError, match="an expect_error case has no expected values"):
        build(target=[7], expect_error="index_out_of_range", expected="oracle")
    with pytest.raises(CaseFileError, match="'typo' must be one of index_out_of_range"):
        build(target=[7], expect_error="typo")


def test_a_case_without_expected_values_says_how_to_get_them():
    with pytest.raises(CaseFileError) as info:
        build()
    assert info.value.field == "expected" and "python -m harness regen FILE" in info.value.detail
    assert build_case(PATH, {"name": "c", "why": "w", "logits": [[1.0]], "target": [0]}, {},
                      require_expected=False).expected is None  # fmt: skip


def test_the_line_is_that_of_the_offending_key():
    raw = LineDict(
        name="c", why="w", logits=[[0.5, 1.0]], target=[0], weight=[1.0], expected="oracle"
    )
    raw.line, raw.key_lines = 4, {"name": 4, "why": 5, "logits": 6, "target": 7, "weight": 9}
    with pytest.raises(CaseFileError) as info:
        build_case(PATH, raw, {})
    assert (info.value.line, info.value.field) == (9, "weight")
    assert str(info.value).startswith(f"{PATH}:9: case 'c': field 'weight': shape (1,)")


# --- properties -----------------------------------------------------------------------------


@PROFILE
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 5),
    data=st.data(),
)
def test_labels_in_range_or_ignored_build_and_any_other_label_is_refused(n, c, data):
    labels = data.draw(st.lists(st.integers(-200, 10), min_size=n, max_size=n))
    logits = np.arange(n * c, dtype=np.float64).reshape(n, c).tolist()
    valid = all(0 <= y < c or y == -100 for y in labels)
    if valid:
        case = build(logits=logits, target=labels, expected="oracle")
        np.testing.assert_array_equal(case.target, labels)
        assert ("ignore_index" in case.features()) == (-100 in labels)
    else:
        e = refused(logits=logits, target=labels)
        bad = next(y for y in labels if not (0 <= y < c or y == -100))
        assert e.field == "target"
        assert e.detail.startswith(f"class index {bad} outside [0, {c}) and not ignore_index=-100")
        # the same inputs make a valid invalid-input case
        assert build(logits=logits, target=labels, expect_error="index_out_of_range")


@PROFILE
@given(c=st.integers(1, 6), wlen=st.integers(0, 8))
def test_a_weight_must_have_one_entry_per_class(c, wlen):
    fields = {"logits": [[0.0] * c], "target": [0], "weight": [1.0] * wlen}
    if wlen == c:
        np.testing.assert_array_equal(build(expected="oracle", **fields).weight, np.ones(c))
    else:
        e = refused(**fields)
        assert e.field == "weight"
        assert e.detail == f"shape ({wlen},), expected ({c},) for C = {c} classes"


# --- the loader: file, line, case, field ----------------------------------------------------


def _file(tmp_path, text: str) -> Path:
    path = tmp_path / "cases" / "mine.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_loader_errors_name_file_line_case_and_field(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")
    path = _file(
        tmp_path,
        """
        cases:
          - name: fine
            why: valid
            logits: [[0.5, 1.0]]
            target: [1]
            expected: oracle
          - name: broken
            why: a weight too short
            logits: [[0.5, 1.0]]
            target: [1]
            weight: [2.0]
            expected: oracle
        """,
    )
    with pytest.raises(CaseFileError) as info:
        load_paths([path])
    e = info.value
    assert (e.path, e.line, e.case, e.field) == (str(path), 11, "broken", "weight")
    assert str(e) == (
        f"{path}:11: case 'broken': field 'weight': shape (1,), expected (2,) for C = 2 classes"
    )


def test_loader_keep_going_keeps_the_valid_files_and_collects_the_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")
    good = _file(
        tmp_path, "cases:\n  - {name: a, why: w, logits: [[1.0]], target: [0], expected: oracle}\n"
    )
    bad = tmp_path / "cases" / "bad.yaml"
    bad.write_text(
        "cases:\n  - name: b\n    why: w\n    logits: [[1.0]]\n    target: [0]\n    reducton: sum\n"
    )
    result = load_paths([good.parent], keep_going=True)
    assert [c.id for c in result.cases] == ["mine/a"]
    (e,) = result.errors
    assert (e.path, e.line, e.case, e.field) == (str(bad), 6, "b", "reducton")
    assert "unknown field 'reducton' (did you mean 'reduction'?)" in e.detail
    with pytest.raises(CaseFileError, match="no such file or folder"):
        load_paths([tmp_path / "absent.yaml"])
