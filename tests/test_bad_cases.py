"""Malformed case files (tests/bad_cases/): each gives exit 2 and a message naming file, line,
case and field, with no traceback; --keep-going runs the valid cases; limits are overridable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from harness.cases.loader import load_paths
from harness.errors import CaseFileError

BAD = REPO / "tests" / "bad_cases"
GOOD = REPO / "tests" / "faulty_adapters" / "faulty_cases.yaml"

#: file stem -> (line, case, field, start of the message): what a user must be told
EXPECTED = {
    "alias_bomb": (None, None, None, "more than 5,000,000 YAML values once anc"),
    "case_not_a_mapping": (1, "#1", None, "'just a string' is not valid: expected a"),
    "cases_empty_list": (1, None, "cases", "[] is not valid: expected at least 1 ite"),
    "dtype_unknown": (11, "broken", "dtype", "'float8' is not valid: expected one of '"),
    "duplicate_key": (6, None, None, "invalid YAML: duplicate key 'target'"),
    "duplicate_name_in_file": (7, "fine", None, "duplicate case id 'duplicate_name_in_fil"),
    "empty_file": (None, None, None, "empty file: expected a mapping with a 'c"),
    "tolerance_without_reason": (
        11,
        "broken",
        "tolerance.reason",
        "missing required field: 'reason': the e",
    ),
    "expect_error_unknown_kind": (
        11,
        "broken",
        "expect_error",
        "'index_error' must be one of index_out_o",
    ),
    "expect_error_with_expected": (
        12,
        "broken",
        "expected",
        "an expect_error case has no expected val",
    ),
    "expected_grad_shape": (
        12,
        "broken",
        "expected.grad",
        "shape (1, 2), expected the logits' shape",
    ),
    "expected_loss_shape_for_mean": (
        12,
        "broken",
        "expected.loss",
        "shape (2,), expected () for reduction 'm",
    ),
    "expected_per_dtype_missing_one": (
        12,
        "broken",
        "expected",
        "per-dtype values for ['float64'], but th",
    ),
    "grad_output_shape": (12, "broken", "grad_output", "shape (3,), expected the loss shape (2,)"),
    "grad_output_with_mean": (11, "broken", "grad_output", "only for reduction 'none', not 'mean'"),
    "ignore_index_float": (11, "broken", "ignore_index", "1.5 is not valid: expected integer"),
    "ignore_index_with_probabilities": (
        11,
        "broken",
        "ignore_index",
        "0 >= 0 with probability targets raises i",
    ),
    "key_not_a_string": (4, None, None, "invalid YAML: keys must be strings, foun"),
    "label_smoothing_above_one": (
        11,
        "broken",
        "label_smoothing",
        "1.5 must lie in [0, 1] (use expect_error",
    ),
    "label_smoothing_boolean": (
        11,
        "broken",
        "label_smoothing",
        "True is not valid: expected a number",
    ),
    "label_smoothing_negative": (
        11,
        "broken",
        "label_smoothing",
        "-0.25 must lie in [0, 1] (use expect_err",
    ),
    "label_smoothing_string": (
        11,
        "broken",
        "label_smoothing",
        "'0.1' is not valid: expected a number",
    ),
    "logits_element_is_a_string": (
        9,
        "broken",
        "logits",
        "'one' is not a number (expected a nested",
    ),
    "logits_is_a_string": (9, "broken", "logits", "'[[0.0, 1.0]]' is not valid: expected a "),
    "logits_no_classes": (9, "broken", "logits", "shape (2, 0) has no classes (C = 0)"),
    "logits_ragged": (9, "broken", "logits[1]", "ragged nested list: 1 items here, 2 in l"),
    "logits_scalar": (9, "broken", "logits", "a scalar: expected shape (C,), (N, C) or"),
    "missing_cases": (1, None, "cases", "missing required field: 'cases'"),
    "missing_expected": (7, "broken", "expected", "missing: write the values, 'expected: or"),
    "missing_logits": (7, "broken", "logits", "missing required field: 'logits'"),
    "missing_why": (2, "no_why", "why", "missing required field: 'why'"),
    "name_with_space": (2, "has a space", "name", "'has a space' is not valid: expected tex"),
    "not_utf8": (8, None, None, "not UTF-8 text (byte 160: b'\\xe9'); save"),
    "only_comments": (None, None, None, "empty file: expected a mapping with a 'c"),
    "recipe_absurd_shape": (
        9,
        "broken",
        "logits.shape",
        "[1000000, 1000000] has 1,000,000,000,000",
    ),
    "recipe_negative_shape": (
        9,
        "broken",
        "logits.shape.1",
        "-3 is not valid: expected a number >= 0",
    ),
    "recipe_sha256_mismatch": (
        9,
        "broken",
        "logits.sha256",
        "generated array has fingerprint 1d0eea83",
    ),
    "recipe_sha256_not_text": (
        9,
        "broken",
        "logits.sha256",
        "0 is not valid: expected 16 lowercase hex",
    ),
    "recipe_unknown_generator": (
        9,
        "broken",
        "logits.generate",
        "'gaussian' is not valid: expected one of",
    ),
    "recursive_alias": (1, None, None, "recursive alias: an anchor is used insid"),
    "reduction_unknown": (11, "broken", "reduction", "'average' must be one of 'none', 'mean',"),
    "tag_python_name": (9, None, None, "invalid YAML: tag not allowed ('tag:yaml"),
    "tag_python_object_apply": (1, None, None, "invalid YAML: tag not allowed ('tag:yaml"),
    "tag_unknown_local": (9, None, None, "invalid YAML: tag not allowed ('!numpy')"),
    "tags_not_a_list": (11, "broken", "tags", "'weights' is not valid: expected a list"),
    "target_batch_mismatch": (10, "broken", "target", "class-index target of shape (3,), expect"),
    "target_boolean_labels": (10, "broken", "target", "booleans are not numbers (write 0/1 or 0"),
    "target_float_labels": (10, "broken", "target", "probability target of shape (2,), expect"),
    "target_integer_too_large": (10, "broken", "target", "integer too large for int64"),
    "target_label_out_of_range": (
        10,
        "broken",
        "target",
        "class index 2 outside [0, 2) and not ign",
    ),
    "target_probabilities_nonfinite": (
        10,
        "broken",
        "target",
        "non-finite probabilities are not allowed",
    ),
    "top_level_list": (1, None, None, "top level is a list: expected a mapping "),
    "top_level_scalar": (1, None, None, "top level is a str: expected a mapping w"),
    "unknown_case_field_typo": (
        11,
        "broken",
        "reducton",
        "unknown field 'reducton' (did you mean '",
    ),
    "unknown_defaults_field_typo": (
        2,
        None,
        "defaults.dtypes",
        "unknown field 'dtypes' (did you mean 'dt",
    ),
    "unknown_top_field_typo": (1, None, "case", "unknown field 'case' (did you mean 'case"),
    "weight_length_mismatch": (11, "broken", "weight", "shape (2,), expected (3,) for C = 3 clas"),
    "weight_nonfinite": (11, "broken", "weight", "non-finite values are not allowed here ("),
    "yaml_bad_indentation": (3, None, None, "invalid YAML: mapping values are not all"),
    "yaml_tab_indentation": (2, None, None, "invalid YAML: found character that canno"),
    "yaml_unclosed_bracket": (5, None, None, "invalid YAML: did not find expected ',' "),
}


def test_corpus_is_large_and_every_file_is_listed():
    stems = {p.stem for p in BAD.glob("*.yaml")}
    assert len(stems) >= 30
    assert stems == set(EXPECTED), "add new bad files to EXPECTED (and remove deleted ones)"


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_bad_file_message_names_file_line_case_and_field(stem):
    line, case, field, start = EXPECTED[stem]
    path = BAD / f"{stem}.yaml"
    with pytest.raises(CaseFileError) as info:
        load_paths([path])
    e = info.value
    assert (e.path, e.line, e.case, e.field) == (str(path), line, case, field)
    assert e.detail.startswith(start)
    text = str(e)
    assert text.startswith(f"{path}:{line}: " if line else f"{path}: ")
    if case is not None:
        assert f"case {case!r}" in text
    if field is not None:
        assert f"field {field!r}" in text


def test_duplicate_ids_across_files_name_both_files():
    with pytest.raises(CaseFileError) as info:
        load_paths([BAD / "duplicate_ids"])
    e = info.value
    assert e.path.endswith("second/same_stem.yaml") and e.case == "fine" and e.line == 2
    assert "duplicate case id 'same_stem/fine', also in" in e.detail
    assert "first/same_stem.yaml" in e.detail


def test_validate_whole_corpus_one_message_per_file_no_traceback(cli):
    r = cli("validate", str(BAD))
    assert r.returncode == 2
    assert "Traceback" not in r.output
    errors = [x for x in r.stderr.splitlines() if x.startswith("lossconf: error: ")]
    assert len(errors) == len(EXPECTED) + 1  # + the second of the duplicate-id pair
    for stem, (line, _, _, start) in EXPECTED.items():
        where = f"{BAD / stem}.yaml" + (f":{line}" if line else "")
        (msg,) = [x for x in errors if f"{where}: " in x]
        assert start in msg
    assert f"{len(EXPECTED) + 1} invalid of {len(EXPECTED) + 2} files" in r.stderr


def test_run_refuses_an_invalid_file_before_running_anything(cli, tmp_path):
    report = tmp_path / "r.json"
    bad = BAD / "unknown_case_field_typo.yaml"
    r = cli("--cases", str(GOOD), "--cases", str(bad), "--report", str(report))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"lossconf: error: {bad}:11: case 'broken': field 'reducton': unknown field "
        "'reducton' (did you mean 'reduction'?); allowed fields: name, why, loss, logits, "
        "hidden, classifier, bias, target, weight, reduction, ignore_index, label_smoothing, "
        "dtype, grad_output, "
        "expected, expect_error, tolerance, tags, softcap, logit_scale, z_loss, "
        "return_z_loss, shift"
    )
    assert r.stdout == "" and not report.exists()


def test_traceback_only_with_verbose(cli_process, cli):
    """The process contract: no traceback reaches a user unless -v asks for it. (The one
    that -v asks for, ``main``'s own print of it, is checked in process.)"""
    bad = str(BAD / "tag_python_object_apply.yaml")
    quiet, verbose = cli_process("--cases", bad), cli("--cases", bad, "-v")
    assert quiet.returncode == verbose.returncode == 2
    assert "Traceback" not in quiet.output and "Traceback" in verbose.output
    assert "tag not allowed ('tag:yaml.org,2002:python/object/apply:os.system')" in quiet.stderr


def test_keep_going_reports_invalid_files_and_runs_the_valid_cases(cli, tmp_path):
    report = tmp_path / "r.json"
    bad = [BAD / "weight_length_mismatch.yaml", BAD / "alias_bomb.yaml"]
    args = ["--cases", str(GOOD), *[a for b in bad for a in ("--cases", str(b))]]
    r = cli(*args, "--keep-going", "--report", str(report))
    assert r.returncode == 2, r.output
    assert "Traceback" not in r.output
    assert f"lossconf: error: {bad[0]}:11: case 'broken': field 'weight': shape (2,)" in r.stderr
    assert "2 invalid case file(s), listed above; their cases did not run" in r.stderr
    doc = json.loads(report.read_text())
    assert doc["complete"] is True
    assert [(x["case_id"], x["status"]) for x in doc["results"]] == [
        ("faulty_cases/a_mean", "pass"),
        ("faulty_cases/b_sum", "pass"),
        ("faulty_cases/c_none", "pass"),
    ]
    assert [(e["file"], e["line"], e["case"], e["field"]) for e in doc["load_errors"]] == [
        (str(bad[0]), 11, "broken", "weight"),
        (str(bad[1]), None, None, None),
    ]


def test_limits_are_overridable_from_the_environment(cli, monkeypatch):
    r = cli("validate", str(GOOD), env={"LOSSCONF_MAX_FILE_BYTES": "100"})
    assert r.returncode == 2
    assert "is above the limit max_file_bytes=100 (raise it with LOSSCONF_MAX_FILE_BYTES" in (
        r.stderr
    )
    monkeypatch.setenv("LOSSCONF_MAX_ELEMENTS", "5")
    with pytest.raises(CaseFileError) as info:
        load_paths([GOOD])
    assert (info.value.case, info.value.field) == ("a_mean", "logits")
    assert "6 elements, above the limit max_array_elements=5" in info.value.detail
    monkeypatch.setenv("LOSSCONF_MAX_ELEMENTS", "0")  # 0: no bound
    assert len(load_paths([GOOD]).cases) == 3
    monkeypatch.setenv("LOSSCONF_MAX_YAML_DEPTH", "2")
    with pytest.raises(CaseFileError, match="nested more than 2 levels deep"):
        load_paths([GOOD])


def test_a_bad_limit_setting_is_a_usage_error(cli):
    r = cli("validate", str(GOOD), env={"LOSSCONF_MAX_YAML_NODES": "lots"})
    assert r.returncode == 2 and "Traceback" not in r.output
    assert "LOSSCONF_MAX_YAML_NODES='lots': expected a whole number" in r.stderr


def test_unwritable_report_path_is_refused_before_the_run(cli, tmp_path):
    folder = tmp_path / "out.json"
    folder.mkdir()
    for path, why in [
        (folder, "is a folder"),
        (tmp_path / "missing" / "r.json", "does not exist"),
        (Path("/proc/lossconf.json"), "cannot write in /proc"),
    ]:
        r = cli("--cases", str(GOOD), "--report", str(path))
        assert r.returncode == 2, path
        assert r.stdout == "" and why in r.stderr


@pytest.mark.parametrize("compiled", [True, False], ids=["jsonschema-rs", "jsonschema"])
def test_schema_errors_do_not_depend_on_the_compiled_validator(tmp_path, monkeypatch, compiled):
    """jsonschema-rs, when installed, only says "valid"; every error, and a value it cannot
    take (a YAML date), goes through jsonschema: the same messages either way."""
    from harness.cases import loader

    if not compiled:
        monkeypatch.setattr(loader, "_compiled_validator", lambda: None)
    elif loader._compiled_validator() is None:
        pytest.skip("jsonschema-rs is not installed")
    path = tmp_path / "dates.yaml"
    path.write_text(
        "cases:\n"
        "  - name: 2001-01-01\n    why: a date\n    logits: [[1.0, 2.0]]\n    target: [1]\n"
        "  - name: fine\n    why: valid\n    logits: [[1.0, 2.0]]\n    target: [1]\n"
        "    expected: oracle\n"
    )
    cases, errors = loader.check_file(path)
    assert cases == [] and len(errors) == 1
    assert "dates.yaml" in str(errors[0]) and "name" in str(errors[0])
    ok = tmp_path / "ok.yaml"
    ok.write_text("cases:\n  - name: fine\n    why: valid\n    logits: [[1.0, 2.0]]\n"
                  "    target: [1]\n    expected: oracle\n")  # fmt: skip
    assert [c.name for c in loader.check_file(ok)[0]] == ["fine"]


NAN_CASES = """\
cases:
  - name: nan_loss
    why: an expected NaN, which jsonschema-rs reads as null
    logits: [[1.0, 2.0]]
    target: [1]
    expected: {loss: .nan, grad: [[.nan, .nan]]}
  - name: nan_and_a_typo
    why: an expected NaN and a real error in the same case
    logits: [[1.0, 2.0]]
    target: [1]
    reduction: 3
    expected: {loss: .nan}
  - name: fine
    why: valid
    logits: [[1.0, 2.0]]
    target: [1]
    expected: oracle
"""


def test_every_file_gets_the_same_errors_with_and_without_the_compiled_validator(
    tmp_path, monkeypatch
):
    # jsonschema-rs rejects NaN (as JSON's null) where jsonschema takes it as a number: the
    # cases it flags are re-checked by jsonschema, so the verdict and messages are the same
    from harness.cases import loader

    if loader._compiled_validator() is None:
        pytest.skip("jsonschema-rs is not installed")
    nan = tmp_path / "nan.yaml"
    nan.write_text(NAN_CASES)
    suite = loader.builtin_suite()
    # the hand-written built-in files with an expected NaN, and a generated one (48 of them)
    with_nan = [suite / f"{name}.yaml" for name in ("half_precision", "ignore_index", "kernel",
                                                    "numerics", "smoothing", "weights")]  # fmt: skip
    generated = suite / "generated" / "grid_index.yaml"
    files = [nan, *sorted(BAD.rglob("*.yaml")), *with_nan]

    def outcome(path):
        cases, errors = loader.check_file(path, require_expected=False)
        return [c.id for c in cases], [str(e) for e in errors]

    # valid files with NaN in valid cases: only those cases go through jsonschema, never a
    # whole file
    whole_file = loader._validator
    monkeypatch.setattr(loader, "_validator", lambda: pytest.fail("a whole file re-checked"))
    compiled = {path: outcome(path) for path in [nan, *with_nan, generated]}
    assert len(compiled[generated][0]) > 100 and compiled[generated][1] == []
    monkeypatch.setattr(loader, "_validator", whole_file)
    compiled.update({path: outcome(path) for path in files if path not in compiled})
    # and jsonschema alone gives the same cases and messages
    monkeypatch.setattr(loader, "_compiled_validator", lambda: None)
    assert {p: compiled[p] for p in files} == {path: outcome(path) for path in files}
    assert compiled[nan] == ([], [str(e) for e in loader.check_file(nan)[1]])
    assert len(compiled[nan][1]) == 1 and "nan_and_a_typo" in compiled[nan][1][0]
