"""Report files written by one run: JSON extras, Markdown, JUnit XML, HTML; matrix and repro."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from report_fixtures import CASES, WRONG_MEAN

from harness.reports import markdown as report_markdown
from harness.reports import matrix


@pytest.fixture
def cases(write):
    return write("small.yaml", CASES)


def _run_all_formats(cli, cases, tmp_path, *extra):
    paths = {ext: tmp_path / f"out.{ext}" for ext in ("json", "md", "xml", "html")}
    args = ["--cases", str(cases), *extra]
    for p in paths.values():
        args += ["--report", str(p)]
    return cli(*args), paths


def test_one_run_writes_every_format_with_the_same_verdict(cli, cases, write, tmp_path):
    wrong = write("wrong.py", WRONG_MEAN)
    r, paths = _run_all_formats(cli, cases, tmp_path, "--adapter", str(wrong))
    assert r.returncode == 1, r.output
    doc = json.loads(paths["json"].read_text())
    # JSON extras: adapter library/version/device, hashes, groups, errors, repro
    (adapter,) = doc["adapters"]
    assert adapter["library"] == "numpy" and adapter["version"] and adapter["device"] == "cpu"
    assert adapter["spec"] == str(wrong)
    assert set(doc["suite"]["cases"]) == {
        "small/plain_mean", "small/weighted_mean", "small/kdim_sum", "small/label_out_of_range"
    }  # fmt: skip
    failing = [x for x in doc["results"] if x["status"] == "fail"]
    assert [(x["case_id"], x["dtype"]) for x in failing] == [
        ("small/weighted_mean", "float64"),
        ("small/weighted_mean", "float32"),
    ]
    for x in failing:
        assert x["loss_errors"]["max_ulp"] > 1e6 and x["loss_errors"]["max_rel"] > 0.1
        assert x["loss_errors"]["max_ratio"] > 1  # the verdict's figure: error / allowed
        assert "load_cases" in x["repro"] and str(wrong) in x["repro"]
        assert "weights" in x["groups"]
    assert all(x["repro"] is None for x in doc["results"] if x["status"] == "pass")
    assert doc["gate"]["exit_code"] == 1 and doc["gate"]["blocking"] == 2

    md = paths["md"].read_text()
    assert md.startswith("## lossconf: FAIL")
    assert "| `small/weighted_mean` | numpy | float64 | fail |" in md
    matrix_row = md.split("### Conformance matrix")[1].splitlines()[4]
    assert matrix_row.startswith("| numpy |") and "| 0/2 |" in matrix_row
    assert "### Worst test ratio" in md and "worst loss ratio" in md

    root = ET.parse(paths["xml"]).getroot()  # a real XML parser
    assert root.tag == "testsuites" and root.get("tests") == "6" and root.get("failures") == "2"
    cases_xml = root.findall("./testsuite/testcase")
    assert len(cases_xml) == 6
    failed = [tc for tc in cases_xml if tc.find("failure") is not None]
    assert {tc.get("name") for tc in failed} == {"weighted_mean[float64]", "weighted_mean[float32]"}
    assert failed[0].get("classname") == "lossconf.numpy.small"
    assert "repro" in failed[0].find("failure").text
    ratios = {p.get("name"): float(p.get("value")) for p in failed[0].iter("property")}
    assert ratios["loss_test_ratio"] > 1 and "grad_test_ratio" in ratios
    passed = [tc for tc in cases_xml if tc.find("failure") is None and tc.find("properties")]
    assert passed and all(float(p.get("value")) <= 1 for tc in passed for p in tc.iter("property"))

    html = paths["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "FAIL" in html
    if importlib.util.find_spec("matplotlib") is not None:  # the 'html' extra
        assert "data:image/png;base64," in html  # the embedded plot: no external file
    else:
        assert "pip install lossconf[html]</code>, for the plot" in html
    assert "small/weighted_mean" in html and "load_cases" in html
    assert "Worst test ratio" in html
    assert "<script" not in html and "src='http" not in html and "<link" not in html


def test_json_report_is_deterministic_apart_from_timings(cli, cases, tmp_path):
    docs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        assert cli("--cases", str(cases), "--report", str(out)).returncode == 0
        doc = json.loads(out.read_text())
        doc.pop("timestamp")
        for x in doc["results"]:
            x.pop("seconds")
            x.pop("peak_rss_bytes")
        for a in doc["adapters"]:  # totals of the above
            a.pop("seconds")
            a.pop("peak_rss_bytes")
        docs.append(doc)
    assert docs[0] == docs[1]


def test_repro_snippet_runs_and_shows_the_failure(cli, cases, write, tmp_path):
    wrong = write("wrong.py", WRONG_MEAN)
    out = tmp_path / "r.json"
    cli("--cases", str(cases), "--adapter", str(wrong), "--report", str(out))
    snippet = next(x["repro"] for x in json.loads(out.read_text())["results"] if x["repro"])
    proc = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    got, expected = proc.stdout.split()[1], proc.stdout.split()[3]
    assert abs(float(got) - float(expected)) > 0.1  # the bug is visible


def test_verbose_terminal_prints_repro_and_matrix(cli, cases, write):
    wrong = write("wrong.py", WRONG_MEAN)
    r = cli("--cases", str(cases), "--adapter", str(wrong), "-v")
    assert r.returncode == 1
    assert "Conformance matrix" in r.stdout
    assert "Repro for small/weighted_mean numpy float64:" in r.stdout
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("adapter") and "weights" in line)
    row = lines[lines.index(header) + 2]
    cells = dict(zip(header.split(), row.split(), strict=False))
    assert row.startswith("numpy") and "0/2" in row  # weights: 0 of 2 conform
    assert cells["adapter"] == "numpy"


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
    results = [
        {"case_id": "x/a", "adapter": "t", "dtype": "float32", "status": "pass",
         "features": ["weight"], "tags": []},
        {"case_id": "x/b", "adapter": "t", "dtype": "float32", "status": "fail",
         "features": ["weight"], "tags": []},
        {"case_id": "x/c", "adapter": "t", "dtype": "float32", "status": "unsupported",
         "features": ["unbatched"], "tags": []},
    ]  # fmt: skip
    cells = matrix.cells(results)["t"]
    assert cells["weights"] == (1, 2) and cells["unbatched"] == (0, 0) and cells["all"] == (1, 2)
    assert matrix.cell_text(*cells["unbatched"]) == "n/a"


def _doc_with_failures(n: int) -> dict:
    result = {
        "case_id": "big/case", "adapter": "a", "dtype": "float32", "status": "fail",
        "message": "loss: expected 1.0, got 2.0 " + "x" * 400, "features": [], "tags": [],
        "loss_errors": None, "grad_errors": None,
    }  # fmt: skip
    return {
        "adapters": [{"name": "a", "wraps": "lib 1.0", "device": "cpu"}],
        "results": [dict(result, case_id=f"big/case_{i}") for i in range(n)],
    }


def test_markdown_is_truncated_under_one_mib_with_a_pointer_to_json():
    doc = _doc_with_failures(5000)  # about 1.7 MB of rows untruncated
    text = report_markdown.render(doc, json_hint="out.json")
    assert len(text.encode()) < 1024 * 1024
    assert "more not shown (size limit): see out.json" in text
    small = report_markdown.render(_doc_with_failures(3))
    rows = small.split("### Non-conforming results (3)\n")[1]  # after the causes (one: 3)
    assert "not shown" not in small and rows.count("`big/case_") == 3


def test_progress_bar_only_on_a_tty_after_the_delay():
    import io

    from harness.execution.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    now = [0.0]
    tty = Tty()
    bar = Progress(10, stream=tty, clock=lambda: now[0])
    bar.update("a")  # within the first second: nothing drawn
    assert tty.getvalue() == ""
    now[0] = 1.5
    bar.update("case/b")
    assert "[######" in tty.getvalue() and "2/10 case/b" in tty.getvalue()
    bar.close()
    assert tty.getvalue().endswith("\r")
    pipe = io.StringIO()
    quiet = Progress(10, stream=pipe, clock=lambda: now[0] + 5)
    quiet.update("x")
    assert pipe.getvalue() == ""  # not a terminal


def test_reports_get_ordinary_file_permissions(tmp_path):
    import os
    import stat

    from harness.atomic import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "r.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert (tmp_path / "r.json").read_text() == "{}\n"
