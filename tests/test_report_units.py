"""The reports in process: the JSON document (harness.reports.json.build and
harness.gate.verdict.document), its readers (harness.reports.document), the matrix, and the
Markdown, JUnit and HTML renderings of one document, which must agree with each other.

tests/test_reports.py writes the same files through the command line."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.adapters.numpy_ref import NumpyAdapter
from harness.cases.build import build_case
from harness.errors import UsageError
from harness.execution.compare import Errors
from harness.execution.config import RunConfig
from harness.execution.results import STATUS_NAMES, Result, Status
from harness.execution.session import Plan
from harness.gate.expectations import Entry
from harness.gate.verdict import Outcome, document
from harness.reports import document as reading
from harness.reports import files, html, junit, markdown, matrix
from harness.reports import json as report_json

FILE = Path("suite/small.yaml")


def _case(name: str, **fields):
    raw = {"name": name, "why": f"the {name} case", "logits": [[0.5, -1.0, 2.0]], "target": [2]}
    return build_case(FILE, {**raw, **fields, "expected": "oracle"}, {})


CASES = [
    _case("plain"),
    _case("weighted", weight=[0.5, 2.0, 1.0], tags=["weights"]),
    _case("smooth", label_smoothing=0.1),
]


def _errors(ratio: float, ulp: float = 1.0) -> Errors:
    return Errors(max_abs=ratio * 1e-16, max_rel=ratio * 1e-16, max_ulp=ulp, max_ratio=ratio)


def _result(case, dtype: str, status: str, ratio: float | None, message: str = "") -> Result:
    errors = None if ratio is None else _errors(ratio, ulp=10 * ratio)
    return Result(
        case.id, "numpy", dtype, Status(status), message=message, case_hash=case.content_hash,
        loss_errors=errors, grad_errors=None if errors is None else _errors(ratio / 2),
        seconds=0.25, peak_rss_bytes=1000, tags=case.tags,
        features=tuple(sorted(case.features())), expected_loss=1.0, got_loss=2.0,
    )  # fmt: skip


RESULTS = [
    _result(CASES[0], "float64", "pass", 0.1),
    _result(CASES[0], "float32", "pass", 0.4),
    _result(CASES[1], "float64", "fail", 7.5, "loss: expected 1.0, got 2.0 <&> (test ratio 7.5)"),
    _result(CASES[1], "float32", "error", None, "raised RuntimeError: boom"),
    _result(CASES[2], "float64", "unsupported", None, "needs label_smoothing"),
    _result(CASES[2], "float32", "fail", 2.0, "loss: expected 1.0, got 1.5"),
]
PLAN = Plan(CASES, [NumpyAdapter()], specs=["numpy"])


@pytest.fixture(scope="module")
def doc() -> dict:
    """The document of a run with one expected failure (smooth float32) and two blocking."""
    allowed = Entry(id="small/smooth", outcomes=frozenset({"fail"}), reason="known bug 3", line=4)
    outcome = Outcome(expected={5: allowed}, blocking=[2, 3])
    return document(PLAN, RESULTS, RunConfig(), outcome)


# --- the JSON document ----------------------------------------------------------------------


def test_build_writes_the_envelope_and_every_result():
    d = report_json.build(RESULTS, CASES, [{"name": "numpy", "wraps": "numpy 2"}], complete=False)
    assert d["schema_version"] == report_json.SCHEMA_VERSION == 2 and d["complete"] is False
    assert set(d["environment"]) == {"python", "numpy", "platform"}
    assert d["suite"]["cases"] == {c.id: c.content_hash for c in CASES}
    assert d["summary"] == {"error": 1, "fail": 2, "pass": 2, "unsupported": 1}
    assert list(d["summary"]) == sorted(d["summary"])
    assert d["results"] == [r.to_dict() for r in RESULTS]
    (adapter,) = d["adapters"]
    assert adapter == {"name": "numpy", "wraps": "numpy 2", "seconds": 1.5, "peak_rss_bytes": 1000}
    assert json.loads(json.dumps(d)) == d  # plain JSON all the way down


def test_document_adds_groups_expectations_repro_and_the_gate(doc):
    rows = doc["results"]
    assert [r["groups"] for r in rows[:3]] == [[], [], ["weights"]]
    assert rows[4]["groups"] == ["smoothing"]
    assert [r["expected"] for r in rows] == [False] * 5 + [True]
    assert rows[5]["expectation"] == {
        "id": "small/smooth", "line": 4, "outcomes": ["fail"], "reason": "known bug 3"
    }  # fmt: skip
    assert [r["repro"] is None for r in rows] == [True, True, False, False, True, False]
    assert "load_adapter('numpy')" in rows[2]["repro"] and "'small/weighted'" in rows[2]["repro"]
    assert "case.inputs('float32')" in rows[3]["repro"]
    assert doc["gate"]["exit_code"] == 1 and doc["gate"]["blocking"] == 2
    assert doc["gate"]["expected"] == 1 and doc["gate"]["baseline"] is None
    (adapter,) = doc["adapters"]
    assert adapter["library"] == "numpy" and adapter["device"] == "cpu"


# --- the readers ----------------------------------------------------------------------------


def test_readers_pick_the_worst_figures_and_ignore_what_was_not_compared(doc):
    rows = doc["results"]
    assert reading.worst(rows, "loss_errors", "max_ratio") == 7.5
    assert reading.worst(rows, "grad_errors", "max_ratio") == 3.75
    assert reading.worst(rows, "loss_errors") == 75.0  # max_ulp by default
    assert reading.worst_ratio(rows[2]) == 7.5 and reading.worst_ratio(rows[3]) is None
    assert reading.worst_ulp(rows[0]) == 1.0 and reading.worst_ulp(rows[3]) is None
    assert reading.worst_ulp_of(rows) == 75.0
    old = {"loss_errors": {"max_ulp": 3.0}, "grad_errors": None}  # before test ratios
    assert reading.worst_ratio(old) is None and reading.worst_ulp(old) == 3.0
    assert reading.worst([{"loss_errors": {"max_ulp": math.nan}}], "loss_errors") is None
    assert reading.fmt_ulp(None) == "-" and reading.fmt_ulp(math.inf) == "inf"


def test_readers_sort_results_as_the_gate_did(doc):
    assert [(r["case_id"], r["dtype"]) for r in reading.blocking(doc)] == [
        ("small/weighted", "float64"), ("small/weighted", "float32")
    ]  # fmt: skip
    assert [r["dtype"] for r in reading.expected(doc)] == ["float32"]
    assert reading.verdict(doc) == "FAIL"
    assert reading.headline(doc) == (
        "2 of 6 results do not conform (1 expected non-conformities allowed)"
    )
    headers, rows = reading.summary_rows(doc)
    assert headers == [
        "adapter", "wraps", "device", "results", "pass", "fail", "error", "unsupported",
        "worst loss ratio", "worst grad ratio", "worst ulp",
    ]  # fmt: skip
    (row,) = rows
    assert row[0] == "numpy" and row[2] == "cpu" and row[3:] == [6, 2, 2, 1, 1, "7.5", "3.75", "75"]


def test_verdict_and_headline_without_a_gate_section_and_with_a_regression(doc):
    bare = {k: v for k, v in doc.items() if k != "gate"}
    assert reading.verdict(bare) == "FAIL"
    passing = {**bare, "results": doc["results"][:2]}
    assert reading.verdict(passing) == "PASS"
    assert reading.headline(passing) == "2 results: all conform"
    base = {"regressed": True, "newly_failing": [["a", "b", "c"]], "growth": []}
    regressed = {**passing, "gate": {"exit_code": 1, "baseline": base, "unexpected_passes": []}}
    assert reading.verdict(regressed) == "FAIL"
    assert reading.headline(regressed).endswith(
        "; regression vs baseline: 1 newly failing, 0 error growth"
    )
    ups = {
        **passing,
        "gate": {"exit_code": 0, "unexpected_passes": [["small/plain", "numpy", "float32"]]},
    }
    assert [r["dtype"] for r in reading.unexpected_passes(ups)] == ["float32"]


# --- the matrix -----------------------------------------------------------------------------


def test_matrix_groups_from_features_tags_and_dtype():
    assert matrix.groups_of("x/a", {"weight", "kdim", "reduction_sum"}, (), "float32") == [
        "reduction", "weights", "K-dim"
    ]  # fmt: skip
    assert matrix.groups_of("numerics/huge", {"reduction_mean"}, (), "float16") == [
        "numerics", "dtypes"
    ]  # fmt: skip
    assert matrix.groups_of("x/bad", {"invalid_input"}, ("overflow",), "float64") == [
        "numerics", "invalid input"
    ]  # fmt: skip
    assert matrix.groups_of("x/plain", {"reduction_mean", "grad"}, ("basic",), "float64") == []


def test_matrix_cells_count_conforming_over_run_and_leave_unsupported_out(doc):
    cells = matrix.cells(doc["results"])["numpy"]
    assert cells["all"] == (2, 5)  # the unsupported result is not counted
    assert cells["weights"] == (0, 2)
    assert cells["smoothing"] == (0, 1)  # the expected failure is a failure here
    assert cells["K-dim"] == (0, 0) and matrix.cell_text(*cells["K-dim"]) == "n/a"
    assert matrix.cell_text(*cells["weights"]) == "0/2"
    ratios = matrix.worst_ratios(doc["results"])["numpy"]
    assert ratios["all"] == 7.5 and ratios["smoothing"] == 2.0 and ratios["K-dim"] is None
    headers, rows = matrix.ratio_rows(doc["results"])
    assert headers[0] == "adapter" and headers[-1] == "all"
    assert rows[0][0] == "numpy" and rows[0][-1] == "7.5" and matrix.ratio_text(math.inf) == "inf"


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(range(3)), st.sampled_from(STATUS_NAMES)), max_size=10))
def test_matrix_reads_results_and_their_json_alike(rows):
    results = [_result(CASES[i], "float64", s, 0.5) for i, s in rows]
    as_json = [r.to_dict() for r in results]
    assert matrix.cells(results) == matrix.cells(as_json)
    assert matrix.worst_ratios(results) == matrix.worst_ratios(as_json)
    counted = [r for r in results if r.status is not Status.UNSUPPORTED]
    if results:
        assert matrix.cells(results)["numpy"]["all"] == (
            sum(r.conforming for r in counted), len(counted)
        )  # fmt: skip


# --- Markdown, JUnit and HTML from one document ---------------------------------------------


@pytest.fixture(scope="module")
def page(doc) -> str:
    """``doc`` as HTML, rendered once for the tests that read it: each rendering draws the
    error plot with matplotlib, a tenth of a second or more."""
    return html.render(doc)


def test_markdown_junit_and_html_render_the_same_verdict(doc, page):
    md = markdown.render(doc)
    assert md.startswith("## lossconf: FAIL\n\n2 of 6 results do not conform")
    assert "| `small/weighted` | numpy | float64 | fail | loss: expected 1.0, got 2.0 <&>" in md
    assert "### Non-conforming results (2)" in md and "small/smooth` | numpy | float32" not in md
    assert "1 expected non-conformities are listed in the JSON report." in md
    matrix_rows = md.split("### Conformance matrix")[1].split("###")[0]
    assert "| numpy |" in matrix_rows and "| 0/2 |" in matrix_rows

    root = ET.fromstring(junit.render(doc))
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "6", "failures": "1", "errors": "1", "skipped": "2"
    }  # fmt: skip
    by_name = {tc.get("name"): tc for tc in root.iter("testcase")}
    assert by_name["weighted[float64]"].find("failure").get("type") == "fail"
    assert "repro:" in by_name["weighted[float64]"].find("failure").text
    assert by_name["weighted[float32]"].find("error").get("type") == "error"
    assert by_name["smooth[float64]"].find("skipped").get("type") == "unsupported"
    expected = by_name["smooth[float32]"].find("skipped")
    assert expected.get("type") == "expected" and "known bug 3" in expected.get("message")
    props = {p.get("name"): p.get("value") for p in by_name["plain[float32]"].iter("property")}
    assert props == {"loss_test_ratio": "0.4", "grad_test_ratio": "0.2"}
    assert by_name["plain[float32]"].get("classname") == "lossconf.numpy.small"

    assert page.startswith("<!DOCTYPE html>") and "<span class='FAIL'>FAIL</span>" in page
    assert "2 of 6 results do not conform" in page
    assert "<h2>Non-conforming results (2)</h2>" in page
    assert "<h2>Expected non-conformities (1)</h2>" in page and "known bug 3" in page
    assert "got 2.0 &lt;&amp;&gt;" in page and "got 2.0 <&>" not in page  # escaped
    assert "<script" not in page


def test_a_passing_document_reads_pass_everywhere(doc):
    ok = {**doc, "results": doc["results"][:2], "gate": {**doc["gate"], "exit_code": 0}}
    assert markdown.render(ok).startswith("## lossconf: PASS\n\n2 results: all conform")
    root = ET.fromstring(junit.render(ok))
    assert root.get("failures") == root.get("errors") == root.get("skipped") == "0"
    page = html.render(ok)
    assert "<span class='PASS'>PASS</span>" in page and "<p>none</p>" in page


def test_html_embeds_the_plot_when_matplotlib_is_there(doc, page):
    pytest.importorskip("matplotlib")
    png = html.error_plot_png(doc)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in page


def test_junit_drops_characters_xml_cannot_hold(doc):
    bad = {**doc, "results": [{**doc["results"][2], "message": "bell \x07 here"}]}
    text = junit.render(bad)
    assert "\x07" not in text and "bell  here" in text
    ET.fromstring(text)  # still well-formed


def test_the_writers_put_each_rendering_in_its_file(doc, tmp_path):
    paths = files.check_paths([tmp_path / f"r{ext}" for ext in (".json", ".md", ".xml", ".html")])
    for path in paths:
        files.write(path, doc)
    json_path, md_path, xml_path, html_path = paths
    assert json.loads(json_path.read_text()) == doc
    assert md_path.read_text() == markdown.render(
        doc, json_hint="the JSON report (--report X.json)"
    )
    assert xml_path.read_text() == junit.render(doc)
    written = html_path.read_text()
    assert written.startswith("<!DOCTYPE html>") and "2 of 6 results do not conform" in written
    with pytest.raises(
        UsageError, match=r"--report .*r\.csv: unknown format '\.csv'; expected one of"
    ):
        files.check_paths([tmp_path / "r.csv"])
