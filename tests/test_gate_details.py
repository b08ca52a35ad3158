"""Details of the gate (issue 14, item 9): exact ids from ``expectations update``, warnings
about unused entries only for selected cases, JUnit class names a CI tree view can split, an
interrupted run marked in JUnit and in the JSON's exit code, and ``diff`` telling a lost
expectation from a new failure."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from report_fixtures import WRONG_MEAN

from harness.cli.run import finish
from harness.execution.config import RunConfig
from harness.execution.results import Result, Status
from harness.execution.session import execute, prepare
from harness.gate import baseline
from harness.gate.expectations import Entry, ExpectationsError, load
from harness.reports import junit

#: two weighted means whose ids overlap by prefix; both fail under WRONG_MEAN
OVERLAPPING = """
cases:
  - name: weighted_mean
    why: the weighted mean divides by sum_i w[y_i]
    logits: [[0.25, -1.0, 2.0], [1.5, 0.0, -0.5], [-0.5, 0.5, 1.0]]
    target: [2, 1, 1]
    weight: [0.5, 2.0, 1.0]
    dtype: [float64]
    expected: oracle
  - name: weighted_mean_kdim
    why: the same over a trailing dimension
    logits: [[[0.25, -1.0], [2.0, 0.5], [-0.5, 1.0]]]
    target: [[0, 2]]
    weight: [0.5, 2.0, 1.0]
    dtype: [float64]
    expected: oracle
  - name: plain_mean
    why: the unweighted mean over rows
    logits: [[0.25, -1.0, 2.0], [1.5, 0.0, -0.5]]
    target: [2, 1]
    dtype: [float64]
    expected: oracle
"""


@pytest.fixture
def cases(write):
    return write("small.yaml", OVERLAPPING)


# --- expectations update writes exact ids ----------------------------------------------------


def test_update_writes_exact_ids_that_a_later_gate_and_update_use_all_of(cli, cases, write):
    wrong = write("wrong.py", WRONG_MEAN)
    exp = cases.parent / "exp.yaml"
    run = ["--cases", str(cases), "--adapter", str(wrong)]
    r = cli("expectations", "update", str(exp), *run)
    assert r.returncode == 0 and "0 entries kept, 2 added" in r.stderr, r.output
    written = [e for e in load(exp).entries]
    assert [(e.id, e.exact) for e in written] == [
        ("small/weighted_mean", True), ("small/weighted_mean_kdim", True)
    ]  # fmt: skip
    assert "case: small/weighted_mean\n" in exp.read_text()
    r = cli(*run, "--expectations", str(exp))
    assert r.returncode == 0, r.output
    assert "matched no result" not in r.stderr  # before: the prefix entry took both results
    r = cli("expectations", "update", str(exp), *run)
    assert "2 entries kept, 0 added, 0 unused removed" in r.stderr, r.output


def test_a_case_entry_matches_one_id_and_id_or_case_is_required(write):
    exact = Entry(id="s/weighted_mean", outcomes=frozenset({"fail"}), reason="r", exact=True)
    prefix = Entry(id="s/weighted_mean", outcomes=frozenset({"fail"}), reason="r")
    assert exact.matches_id("s/weighted_mean") and not exact.matches_id("s/weighted_mean_kdim")
    assert prefix.matches_id("s/weighted_mean_kdim")
    both = write(
        "both.yaml", "expectations:\n  - {id: a/, case: a/b, outcomes: [fail], reason: r}\n"
    )
    with pytest.raises(
        ExpectationsError, match=r"both.yaml:2: entry 1 .*has both 'id' .* and 'case'"
    ):
        load(both)
    neither = write("neither.yaml", "expectations:\n  - {outcomes: [fail], reason: r}\n")
    with pytest.raises(ExpectationsError, match=r"needs 'id' \(a case id prefix or glob\)"):
        load(neither)


# --- unused entries: only those whose cases were selected ------------------------------------

UNUSED = """
expectations:
  - id: small/plain_mean
    version: "<1.0"
    outcomes: [fail]
    reason: "selected, but for another version: unused"
  - case: small/weighted_mean
    outcomes: [fail]
    reason: "not selected by -k plain: not warned about"
  - id: other_file/
    outcomes: [fail]
    reason: "no such case in this run: not warned about"
  - id: small/
    adapter: torch
    outcomes: [fail]
    reason: "for an adapter that did not run: not warned about"
"""


def test_only_entries_of_selected_cases_and_adapters_are_warned_about(cli, cases, write, tmp_path):
    out = tmp_path / "r.json"
    r = cli("--cases", str(cases), "-k", "plain", "--expectations", str(write("e.yaml", UNUSED)),
            "--report", str(out))  # fmt: skip
    assert r.returncode == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if "matched no result" in line]
    assert warnings == [
        f"lossconf: warning: expectation {tmp_path / 'e.yaml'}:2 (id 'small/plain_mean') "
        "matched no result"
    ]
    assert json.loads(out.read_text())["gate"]["unused_expectations"] == [
        {"id": "small/plain_mean", "line": 2}
    ]


def test_update_keeps_entries_of_cases_the_run_did_not_select(cli, cases, write):
    wrong = write("wrong.py", WRONG_MEAN)
    exp = cases.parent / "exp.yaml"
    run = ["--cases", str(cases), "--adapter", str(wrong)]
    assert cli("expectations", "update", str(exp), *run).returncode == 0
    r = cli("expectations", "update", str(exp), *run, "-k", "plain")
    assert "2 entries kept, 0 added, 0 unused removed" in r.stderr, r.output
    assert len(load(exp).entries) == 2


# --- JUnit class names -----------------------------------------------------------------------


def _doc(adapter: str, *, complete: bool = True) -> dict:
    result = Result("grid_index/a_b", adapter, "float32", Status.FAIL, message="off").to_dict()
    return {
        "timestamp": "2026-01-01T00:00:00+00:00", "complete": complete,
        "adapters": [{"name": adapter, "spec": adapter, "wraps": "numpy 2"}],
        "results": [{**result, "expected": False, "repro": None}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("adapter", "part"),
    [("../my_ce.py", "my_ce_py"), ("examples/jax_fn.py:cross_entropy", "examples_jax_fn_py_cross_entropy"),
     ("torch@device=cuda", "torch_device_cuda"), ("numpy", "numpy")],
)  # fmt: skip
def test_junit_classname_has_no_slash_or_extra_dot(adapter, part):
    root = junit.build(_doc(adapter))
    (tc,) = root.iter("testcase")
    assert tc.get("classname") == f"lossconf.{part}.grid_index"
    (suite,) = root.iter("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["adapter"] == adapter  # the real name is kept


# --- an interrupted run ----------------------------------------------------------------------


def test_an_interrupted_run_says_so_in_junit_and_its_json_carries_the_exit_code(
    cases, tmp_path, capsys
):
    json_out, xml_out, md_out = (tmp_path / f"r.{ext}" for ext in ("json", "xml", "md"))
    config = RunConfig(cases=(cases,), reports=(json_out, xml_out, md_out), quiet=True)
    plan = prepare(config)
    results = execute(plan, config)
    assert finish(plan, results[:1], config, interrupted=130) == 130
    doc = json.loads(json_out.read_text())
    assert doc["complete"] is False and doc["gate"]["exit_code"] == 130
    assert doc["planned_results"] == 3 and len(doc["results"]) == 1
    root = ET.fromstring(xml_out.read_text())
    (marker,) = (tc for tc in root.iter("testcase") if tc.get("name") == "incomplete")
    (error,) = marker.iter("error")
    assert error.get("type") == "interrupted"
    assert error.get("message") == "the run was interrupted (exit code 130) after 1 of 3 results"
    assert root.get("errors") == "1" and root.get("tests") == "2"
    assert "interrupted (exit code 130) after 1 of 3 results" in md_out.read_text()
    # a complete run has no marker, and its JSON carries the exit code it returned
    assert finish(plan, results, config) == 0
    assert json.loads(json_out.read_text())["gate"]["exit_code"] == 0
    assert not [tc for tc in ET.parse(xml_out).iter("testcase") if tc.get("name") == "incomplete"]


# --- diff: a lost expectation is not a new failure -------------------------------------------


def _report(*rows: tuple[str, str, bool]) -> dict:
    return {
        "schema_version": 2,
        "results": [
            {"case_id": case_id, "adapter": "torch", "dtype": "float32", "status": status,
             "case_hash": "h", "expected": expected, "loss_errors": None, "grad_errors": None,
             "message": f"{status} message"}
            for case_id, status, expected in rows
        ],
    }  # fmt: skip


def test_diff_lists_a_lost_expectation_apart_from_new_failures():
    old = _report(
        ("s/lost", "fail", True), ("s/new_mode", "fail", True), ("s/gained", "fail", False)
    )
    new = _report(
        ("s/lost", "fail", False), ("s/new_mode", "error", False), ("s/gained", "fail", True)
    )
    c = baseline.compare(old, new)
    assert [ch.key[0] for ch in c.newly_failing] == ["s/new_mode"]  # another failure: new
    assert [ch.key[0] for ch in c.newly_passing] == []
    assert [ch.key[0] for ch in c.expectation_changed] == ["s/lost", "s/gained"]
    assert c.to_dict()["expectation_changed"] == [
        ["s/lost", "torch", "float32"], ["s/gained", "torch", "float32"]
    ]  # fmt: skip
    text = baseline.render(c, "old.json")
    newly, _, rest = text.partition("Same status, expectation changed vs old.json (2):")
    assert "s/lost" not in newly and "s/lost" in rest and "s/gained" in rest
    assert "1 newly failing" in text and "2 expectation changed" in text
    only_lost = baseline.compare(
        _report(("s/lost", "fail", True)), _report(("s/lost", "fail", False))
    )
    assert not only_lost.regressed
