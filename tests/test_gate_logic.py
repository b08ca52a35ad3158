"""The gate's logic in process: expectations (loading, matching), apply_expectations, the
outcome's exit code, and the baseline comparison (compare, grew, read_report).

tests/test_gate.py drives the same through the command line."""

from __future__ import annotations

import json
import math
import re
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.execution.results import CONFORMING, Result, Status
from harness.exit_codes import ExitCode
from harness.gate import baseline
from harness.gate.baseline import RATIO_FLOOR, ReportError, grew, read_report
from harness.gate.expectations import Entry, Expectations, ExpectationsError, load
from harness.gate.verdict import Outcome, apply_expectations

PROFILE = settings(max_examples=100, deadline=None, derandomize=True)
TORCH = {"name": "torch", "version": "2.13.0", "device": "cpu"}


def result(case_id: str, status: str, adapter: str = "torch", dtype: str = "float32") -> Result:
    return Result(case_id, adapter, dtype, Status(status))


def entry(id: str, *outcomes: str, **conditions) -> Entry:
    return Entry(id=id, outcomes=frozenset(outcomes or ("fail",)), reason="because", **conditions)


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --- expectations files ----------------------------------------------------------------------


def test_load_reads_every_field_with_its_line(tmp_path):
    path = write(
        tmp_path,
        """
        expectations:
          - id: numerics/fp16_
            adapter: "torch*"
            version: ">=2.13,<2.15"
            device: cpu
            dtype: float16
            outcomes: fail
            reason: accumulates in half precision
          - id: "*/weighted_*"
            outcomes: [fail, error]
            link: https://example.org/issues/7
        """,
    )
    first, second = load(path).entries
    assert (first.id, first.line, first.adapter, first.device) == (
        "numerics/fp16_",
        2,
        "torch*",
        "cpu",
    )
    assert first.version == [(">=", "2.13"), ("<", "2.15")]
    assert first.dtypes == {"float16"} and first.outcomes == {"fail"}
    assert first.reason == "accumulates in half precision"
    assert (second.line, second.outcomes, second.dtypes) == (9, {"fail", "error"}, None)
    assert second.reason == "https://example.org/issues/7"  # a link alone is the reason
    assert not first.allows_conforming and entry("x", "fail", "pass").allows_conforming


def test_an_empty_file_has_no_entries_and_a_bad_one_names_file_line_entry_field(tmp_path):
    assert load(write(tmp_path, "# nothing yet\n")).entries == []
    path = write(
        tmp_path,
        "expectations:\n  - id: a/\n    outcomes: [fail]\n    reason: x\n    dtype: [float8]\n",
    )
    with pytest.raises(ExpectationsError) as info:
        load(path)
    assert str(info.value) == (
        f"expectations {path}:2: entry 1 (id 'a/'): field 'dtype'=['float8'] must be one or a "
        "list of float64, float32, float16, bfloat16"
    )
    assert info.value.exit_code == ExitCode.USAGE
    with pytest.raises(ExpectationsError, match="cannot read"):
        load(tmp_path / "absent.yaml")
    with pytest.raises(ExpectationsError, match="top level must be a mapping with one key"):
        load(write(tmp_path, "- id: a\n"))
    with pytest.raises(ExpectationsError, match="not valid YAML"):
        load(write(tmp_path, "expectations: [\n"))


def test_matching_checks_every_condition():
    r = result("numerics/fp16_mean_over_65504", "fail", dtype="float16")
    assert entry("numerics/").matches(r, TORCH)  # an id prefix
    assert entry("*/fp16_*").matches(r, TORCH)  # a glob
    assert not entry("*/fp16").matches(r, TORCH)  # a glob must match the whole id
    assert not entry("numerics/fp32").matches(r, TORCH)
    assert entry("numerics/", adapter="to*").matches(r, TORCH)
    assert not entry("numerics/", adapter="jax").matches(r, TORCH)
    assert entry("numerics/", dtypes=frozenset({"float16"})).matches(r, TORCH)
    assert not entry("numerics/", dtypes=frozenset({"float32"})).matches(r, TORCH)
    assert not entry("numerics/", device="cuda*").matches(r, TORCH)
    assert entry("numerics/", device="cuda*").matches(r, {**TORCH, "device": "cuda:0"})
    assert entry("numerics/", version=[(">=", "2.13")]).matches(r, TORCH)
    assert not entry("numerics/", version=[("<", "2.13")]).matches(r, TORCH)
    assert not entry("numerics/", version=[(">=", "1.0")]).matches(r, {"name": "torch"})


@PROFILE
@given(st.text("ab/_", min_size=1, max_size=8), st.text("ab/_", min_size=0, max_size=8))
def test_a_plain_id_matches_exactly_the_ids_it_prefixes(prefix, case_id):
    r = result(case_id, "fail")
    assert entry(prefix).matches(r, TORCH) == case_id.startswith(prefix)


def test_the_first_matching_entry_decides():
    exp = Expectations(None, [entry("a/x", "error"), entry("a/", "fail")])
    assert exp.match(result("a/x1", "fail"), TORCH).id == "a/x"
    assert exp.match(result("a/y", "fail"), TORCH).id == "a/"
    assert exp.match(result("b/y", "fail"), TORCH) is None


# --- apply_expectations and the exit code ---------------------------------------------------


def test_apply_expectations_sorts_every_result():
    results = [
        result("a/expected", "fail"),  # 0: allowed by its entry
        result("a/other_outcome", "crash"),  # 1: matched, but the entry allows only fail
        result("b/blocking", "error"),  # 2: no entry
        result("a/fixed", "pass"),  # 3: conforms although the entry expects failure
        result("c/tolerant", "pass"),  # 4: its entry allows pass too: not unexpected
        result("a/skipped", "unsupported"),  # 5: conforming, not a pass
        result("d/raised", "raised"),  # 6
    ]
    stale = entry("z/", "fail")
    entries = [entry("a/", "fail"), entry("c/", "fail", "pass"), stale]
    out = apply_expectations(results, {"torch": TORCH}, Expectations(None, entries))
    assert set(out.expected) == {0} and out.expected[0] is entries[0]
    assert set(out.disallowed) == {1}
    assert out.blocking == [1, 2]
    assert set(out.unexpected_passes) == {3}
    assert out.unused == [stale]
    assert out.exit_code == ExitCode.NONCONFORMING


@PROFILE
@given(st.lists(st.sampled_from([s.value for s in Status]), max_size=12))
def test_without_expectations_exactly_the_non_conforming_results_block(statuses):
    results = [result(f"x/{i}", s) for i, s in enumerate(statuses)]
    out = apply_expectations(results, {}, None)
    assert out.blocking == [i for i, r in enumerate(results) if r.status not in CONFORMING]
    assert not (out.expected or out.disallowed or out.unexpected_passes or out.unused)
    assert out.exit_code == (ExitCode.NONCONFORMING if out.blocking else ExitCode.OK)


def test_exit_code_counts_blocking_results_and_a_baseline_regression():
    assert Outcome().exit_code == ExitCode.OK == 0
    assert Outcome(blocking=[3]).exit_code == ExitCode.NONCONFORMING == 1
    quiet = baseline.Comparison(newly_passing=[None], changed=[("a", "b", "c")])
    assert Outcome(baseline=quiet).exit_code == ExitCode.OK
    assert Outcome(baseline=baseline.Comparison(newly_failing=[None])).exit_code == 1
    assert Outcome(baseline=baseline.Comparison(growth=[None])).exit_code == 1


# --- the baseline ----------------------------------------------------------------------------


def report(*rows, hashes: dict | None = None) -> dict:
    """A report document: rows of (case_id, status, ratio or None, extra fields)."""
    results = []
    for case_id, status, ratio, *extra in rows:
        errors = None if ratio is None else {"max_abs": 0.0, "max_ulp": 1.0, "max_ratio": ratio}
        results.append(
            {"case_id": case_id, "adapter": "torch", "dtype": "float32", "status": status,
             "case_hash": (hashes or {}).get(case_id, "h-" + case_id), "loss_errors": errors,
             "grad_errors": None, **(extra[0] if extra else {})}
        )  # fmt: skip
    return {"schema_version": 1, "results": results}


def keys(changes) -> list[str]:
    return [c.key[0] if hasattr(c, "key") else c[0] for c in changes]


def test_compare_sorts_every_result_pair():
    old = report(
        ("s/new_fail", "pass", 0.1),
        ("s/new_pass", "fail", 5.0),
        ("s/grew", "pass", 0.2),
        ("s/noise", "pass", 0.01),
        ("s/changed", "pass", 0.1),
        ("s/removed", "pass", 0.1),
        ("s/still_bad", "error", None),
        ("s/now_expected", "pass", 0.1),
    )
    new = report(
        ("s/new_fail", "fail", 3.0),
        ("s/new_pass", "pass", 0.5),
        ("s/grew", "pass", 0.9),  # 0.9 > 2 x max(0.2, 1/3)
        ("s/noise", "pass", 0.6),  # 0.6 < 2 x 1/3: rounding noise under the floor
        ("s/changed", "fail", 9.0),
        ("s/added", "fail", 9.0),
        ("s/still_bad", "error", None),
        ("s/now_expected", "error", None, {"expected": True}),  # allowed: not bad
        hashes={"s/changed": "other"},
    )
    c = baseline.compare(old, new)
    assert keys(c.newly_failing) == ["s/new_fail"]
    assert keys(c.newly_passing) == ["s/new_pass"]
    assert keys(c.growth) == ["s/grew"]
    assert keys(c.changed) == ["s/changed"]
    assert keys(c.added) == ["s/added"] and keys(c.removed) == ["s/removed"]
    assert c.regressed
    d = c.to_dict()
    assert d["growth"] == [["s/grew", "torch", "float32", 0.2, 0.9]]
    assert d["added"] == 1 and d["removed"] == 1 and d["factor"] == 2.0
    assert not baseline.compare(old, old).regressed
    assert baseline.compare(old, new, factor=5.0).growth == []


def test_reports_without_test_ratios_are_compared_by_status_only():
    old = report(("s/a", "pass", None, {"loss_errors": {"max_ulp": 1.0}}))
    new = report(("s/a", "pass", None, {"loss_errors": {"max_ulp": 400.0}}))
    c = baseline.compare(old, new)
    assert not c.regressed and not c.growth


@PROFILE
@given(st.floats(0, 10, allow_nan=False), st.floats(0, 100, allow_nan=False), st.floats(1.01, 10))
def test_grew_means_beyond_factor_times_the_old_ratio_or_the_floor(old, new, factor):
    assert grew(old, new, factor) == (new > factor * max(old, RATIO_FLOOR))
    assert not grew(old, min(new, factor * RATIO_FLOOR), factor)  # never below the floor


def test_grew_without_figures_is_no_growth():
    assert not grew(None, 5.0, 2.0) and not grew(0.1, None, 2.0)
    assert not grew(0.1, math.nan, 2.0)
    assert not grew(math.inf, math.inf, 2.0)  # a non-finite mismatch before and after
    assert grew(0.1, math.inf, 2.0)


def test_read_report_refuses_what_is_not_a_report(tmp_path):
    good = tmp_path / "r.json"
    good.write_text(json.dumps(report(("s/a", "pass", 0.1))))
    assert read_report(good)["results"][0]["case_id"] == "s/a"
    for text, message in [
        ("{not json", "not JSON (line 1"),
        ('{"results": []}', "not a lossconf JSON report (no schema_version/results)"),
        ('{"schema_version": 3, "results": []}', "schema_version 3, this lossconf reads 1 and 2"),
    ]:
        good.write_text(text)
        with pytest.raises(ReportError, match=re.escape(f"report {good}: {message}")):
            read_report(good)
    with pytest.raises(ReportError, match="cannot read"):
        read_report(tmp_path / "absent.json")
