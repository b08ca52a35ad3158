"""The JSON report is strict JSON (RFC 8259) and follows the schema shipped with the package.

Non-finite numbers (an error of ``inf`` where an adapter returned NaN) are written as the
strings "nan", "inf" and "-inf", so that JavaScript's ``JSON.parse``, jq and a strict Python
parser read the same values; ``read_report`` turns them back into floats. Reports of
``schema_version`` 1, which held bare ``NaN``/``Infinity`` tokens, still load in ``diff``,
``history`` and ``--baseline`` (``tests/old_reports/v1_nan.json``).

Every JSON report the test suite writes is checked the same way at the end of the session
(``tests/report_validation.py``, used by ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from report_fixtures import CASES
from report_validation import check_report, schema, strict_loads

from harness.gate.baseline import read_report
from harness.reports import json as report_json

OLD_REPORT = Path(__file__).parent / "old_reports" / "v1_nan.json"

#: the numpy adapter with a loss of NaN wherever the case has class weights
NAN_WEIGHTED = """
import numpy as np
from harness import Output
from harness.adapters.numpy_ref import NumpyAdapter, cross_entropy
from harness.dtypes import cast


class NanWhenWeighted(NumpyAdapter):
    name = "numpy"

    def run(self, inputs):
        loss, grad = cross_entropy(inputs)
        if inputs.weight is not None:
            loss = np.full(np.shape(loss), np.nan)
        return Output(cast(loss, inputs.dtype), cast(grad, inputs.dtype))
"""

EXPECT = """
expectations:
  - id: small/weighted_mean
    dtype: float32
    outcomes: [fail]
    reason: "NaN in float32 (known)"
  - id: small/kdim_sum
    version: "<1.0"
    outcomes: [fail]
    reason: "an entry for another version: listed as unused"
"""


@pytest.fixture
def cases(write):
    return write("small.yaml", CASES)


def test_every_format_in_one_run_and_the_json_is_strict(cli, cases, write, tmp_path):
    good = tmp_path / "good.json"
    assert cli("--cases", str(cases), "--report", str(good)).returncode == 0
    adapter = write("nan_weighted.py", NAN_WEIGHTED)
    paths = {ext: tmp_path / f"out.{ext}" for ext in ("json", "md", "xml", "html")}
    args = ["--cases", str(cases), "--adapter", str(adapter), "--baseline", str(good)]
    args += ["--expectations", str(write("exp.yaml", EXPECT))]
    for p in paths.values():
        args += ["--report", str(p)]
    r = cli(*args)
    assert r.returncode == 1, r.output

    text = paths["json"].read_text()
    assert not re.search(r"[:,\[]\s*-?(NaN|Infinity)\b", text)  # no bare token as a value
    doc = strict_loads(text)  # raises on NaN/Infinity
    assert doc["schema_version"] == report_json.SCHEMA_VERSION == 2
    check_report(paths["json"])  # strict parse, the shipped JSON Schema, jq
    weighted = [x for x in doc["results"] if x["case_id"] == "small/weighted_mean"]
    assert [x["loss_errors"]["max_ratio"] for x in weighted] == ["inf", "inf"]
    assert [x["got_loss"] for x in weighted] == ["nan", "nan"]
    assert doc["gate"]["baseline"]["newly_failing"] == [["small/weighted_mean", "numpy", "float64"]]
    assert doc["gate"]["unused_expectations"] == [{"id": "small/kdim_sum", "line": 6}]

    # read_report gives the numbers back as floats: the readers compute with them
    back = read_report(paths["json"])
    (w64, w32) = (x for x in back["results"] if x["case_id"] == "small/weighted_mean")
    assert math.isinf(w64["loss_errors"]["max_ratio"]) and w32["expected"] is True
    assert strict_loads(report_json.dumps(back)) == doc

    # the other formats of the same run
    assert paths["md"].read_text().startswith("## lossconf: FAIL")
    ET.fromstring(paths["xml"].read_text())
    assert "small/weighted_mean" in paths["html"].read_text()


def test_non_finite_numbers_anywhere_are_strings_and_read_back_as_floats():
    nan, inf = math.nan, math.inf
    doc = {
        "schema_version": 2,
        "results": [{"loss_errors": {"max_abs": nan, "max_rel": inf, "max_ulp": -inf,
                                     "max_ratio": 0.5}, "grad_errors": None}],
        "gate": {"baseline": {"growth": [["c", "a", "float32", 0.1, inf]]}},
        "elsewhere": [nan, {"deep": -inf}],
    }  # fmt: skip
    text = report_json.dumps(doc)
    loaded = strict_loads(text)
    assert loaded["results"][0]["loss_errors"] == {
        "max_abs": "nan", "max_rel": "inf", "max_ulp": "-inf", "max_ratio": 0.5
    }  # fmt: skip
    assert loaded["elsewhere"] == ["nan", {"deep": "-inf"}]
    back = report_json.decode(loaded)
    errors = back["results"][0]["loss_errors"]
    assert math.isnan(errors["max_abs"]) and errors["max_rel"] == inf
    assert errors["max_ulp"] == -inf and errors["max_ratio"] == 0.5
    assert back["gate"]["baseline"]["growth"] == [["c", "a", "float32", 0.1, inf]]
    assert math.isnan(doc["elsewhere"][0])  # the document itself is left as it was


def test_the_schema_ships_with_the_package_and_knows_every_status_and_dtype():
    from harness.dtypes import DTYPE_NAMES
    from harness.execution.results import STATUS_NAMES

    s = schema()
    assert s["properties"]["schema_version"] == {"const": report_json.SCHEMA_VERSION}
    assert tuple(s["$defs"]["status"]["enum"]) == STATUS_NAMES
    assert tuple(s["$defs"]["dtype"]["enum"]) == DTYPE_NAMES


def test_old_reports_with_nan_tokens_load_in_diff_history_and_baseline(cli, cases, tmp_path):
    """v1_nan.json: the report lossconf 0.1.0 (schema_version 1) wrote of the numpy adapter on
    report_fixtures.CASES with a loss of NaN in the weighted cases: bare Infinity tokens."""
    text = OLD_REPORT.read_text()
    assert '"schema_version": 1' in text and "Infinity" in text
    old = tmp_path / "old.json"
    shutil.copy(OLD_REPORT, old)
    new = tmp_path / "new.json"
    r = cli("--cases", str(cases), "--baseline", str(old), "--report", str(new))
    assert r.returncode == 0, r.output
    doc = json.loads(new.read_text())
    assert doc["gate"]["baseline"]["newly_passing"] == [
        ["small/weighted_mean", "numpy", "float64"], ["small/weighted_mean", "numpy", "float32"]
    ]  # fmt: skip
    assert doc["gate"]["baseline"]["changed"] == [] and doc["gate"]["baseline"]["added"] == 0

    r = cli("diff", str(old), str(new))
    assert r.returncode == 0, r.output
    assert "2 newly passing" in r.stdout
    r = cli("diff", str(new), str(old))
    assert r.returncode == 1 and "2 newly failing" in r.stdout

    r = cli("history", str(old))
    assert r.returncode == 0, r.output
    (row,) = (line for line in r.stdout.splitlines() if line.startswith("numpy 2"))
    assert "0/2" in row.split()


def test_read_report_reads_bare_nan_tokens_of_version_1(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(
        '{"schema_version": 1, "results": [{"loss_errors": {"max_abs": NaN, "max_rel": NaN, '
        '"max_ulp": -Infinity, "max_ratio": Infinity}}]}'
    )
    (errors,) = (r["loss_errors"] for r in read_report(old)["results"])
    assert math.isnan(errors["max_abs"]) and errors["max_ratio"] == math.inf
    assert errors["max_ulp"] == -math.inf


def test_read_report_names_a_schema_version_it_cannot_read(tmp_path):
    future = tmp_path / "future.json"
    future.write_text('{"schema_version": 3, "results": []}')
    with pytest.raises(Exception, match=r"schema_version 3, this lossconf reads 1 and 2"):
        read_report(future)


def test_the_session_check_flags_a_report_off_the_schema(cli, cases, tmp_path):
    """What ``tests/conftest.py`` runs on every report at the end of the session finds a
    report that strays from the schema, whichever validator it uses."""
    from report_validation import check_reports_under

    folder = tmp_path / "reports"
    folder.mkdir()
    good = folder / "good.json"
    assert cli("--cases", str(cases), "--report", str(good)).returncode == 0
    assert check_reports_under(folder) == (1, [])
    doc = json.loads(good.read_text())
    doc["results"][0]["status"] = "bogus"
    bad = folder / "bad.json"
    bad.write_text(json.dumps(doc, indent=1))
    try:
        found, problems = check_reports_under(folder)
    finally:
        bad.unlink()  # the session's own check at the end must not find it
    assert found == 2 and len(problems) == 1
    assert problems[0].startswith(f"{bad}: ") and "bogus" in problems[0]
