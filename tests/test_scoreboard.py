"""``python -m harness scoreboard DIR``: one table of frameworks x versions x feature groups,
under torch's semantics and the adapter's own dialect, as terminal text, Markdown and HTML;
reports it cannot read are refused (exit 2)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from harness.gate import scoreboard

#: the runs behind the README's table
COMMITTED = Path(__file__).resolve().parent.parent / "reports" / "scoreboard"


@functools.cache
def _committed_runs() -> tuple[scoreboard.Run, ...]:
    return tuple(scoreboard.load_runs([COMMITTED]))


def committed_runs() -> list[scoreboard.Run]:
    """``scoreboard.load_runs`` of reports/scoreboard/, read once in a process: its 48 MB of
    JSON take more than a second to decode, and tests/test_docs.py's scoreboard figure renders
    the same runs (the reports are the committed files, unchanged while the tests run)."""
    return list(_committed_runs())


def _result(case_id: str, adapter: str, status: str, torch_status: str | None = None,
            features: tuple[str, ...] = (), dtype: str = "float32") -> dict:  # fmt: skip
    r = {
        "case_id": case_id, "case_hash": "h-" + case_id, "adapter": adapter, "dtype": dtype,
        "status": status, "message": "", "loss_errors": None, "grad_errors": None,
        "seconds": 0.0, "peak_rss_bytes": None, "features": list(features), "tags": [],
        "expected_loss": None, "got_loss": None, "notes": [],
    }  # fmt: skip
    if torch_status is not None:
        r["torch_status"] = torch_status
    return r


def _report(path: Path, adapter: str, library: str, version: str, results: list[dict],
            semantics: str | None = None) -> Path:  # fmt: skip
    entry = {"name": adapter, "wraps": f"{library} {version}", "library": library,
             "version": version, "device": "cpu", "seconds": 0.0,
             "peak_rss_bytes": None}  # fmt: skip
    if semantics is not None:
        entry["semantics"] = semantics
    doc = {
        "schema_version": 2, "harness_version": "0", "timestamp": "", "complete": True,
        "environment": {"python": "3.11", "numpy": "2.4", "platform": "linux"},
        "adapters": [entry], "suite": {"cases": {}}, "summary": {}, "results": results,
    }  # fmt: skip
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """Two torch versions (file names sorting against the versions), and a keras-dialect
    adapter whose weighted results conform to keras but not to torch."""
    folder = tmp_path / "scoreboard"
    folder.mkdir()
    _report(folder / "torch-2.10.0.json", "torch", "torch", "2.10.0", [
        _result("w/weighted_mean", "torch", "fail", features=("weight",)),
        _result("w/plain", "torch", "pass"),
    ])  # fmt: skip
    _report(folder / "torch-2.9.0.json", "torch", "torch", "2.9.0", [
        _result("w/weighted_mean", "torch", "pass", features=("weight",)),
        _result("w/plain", "torch", "pass"),
    ])  # fmt: skip
    _report(folder / "keras-3.15.1.json", "keras", "keras", "3.15.1", [
        _result("w/weighted_mean", "keras", "pass", "fail", features=("weight",)),
        _result("w/weighted_sum", "keras", "pass", "fail", features=("weight", "reduction_sum")),
        _result("w/plain", "keras", "pass", "pass"),
        _result("w/smoothing", "keras", "unsupported", "unsupported",
                features=("label_smoothing",)),
    ], semantics="keras")  # fmt: skip
    return folder


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_rows_by_framework_then_version_with_a_row_per_semantics(board):
    rows = scoreboard.rows(scoreboard.load_runs([board]))
    assert [(r.run.adapter, r.run.version, r.semantics) for r in rows] == [
        ("keras", "3.15.1", "torch"),
        ("keras", "3.15.1", "keras"),
        ("torch", "2.9.0", "torch"),  # before 2.10.0, though its file name sorts after
        ("torch", "2.10.0", "torch"),
    ]
    keras_torch, keras_own, old, new = rows
    # under torch, keras's weighted results fail; under its own dialect they conform
    assert keras_torch.counts["weights"] == (0, 2) and keras_own.counts["weights"] == (2, 2)
    assert keras_torch.counts["all"] == (1, 3) and keras_own.counts["all"] == (3, 3)
    assert keras_torch.counts["reduction"] == (0, 1)
    # the unsupported result is counted apart, not in a cell
    assert keras_torch.unsupported == keras_own.unsupported == 1
    assert keras_own.counts["smoothing"] == (0, 0)
    assert old.counts["weights"] == (1, 1) and new.counts["weights"] == (0, 1)


def test_markdown_table(board, cli):
    r = cli("scoreboard", str(board), "--format", "markdown")
    assert r.returncode == 0, r.output
    lines = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert _cells(lines[0])[:5] == ["framework", "version", "semantics", "unsupported",
                                    "reduction"]  # fmt: skip
    assert set(_cells(lines[1])) == {"---"}
    body = {(c[0], c[1], c[2]): c for c in map(_cells, lines[2:])}
    header = _cells(lines[0])
    weights, smoothing, total = (header.index(h) for h in ("weights", "smoothing", "all"))
    assert body[("keras", "3.15.1", "torch")][weights] == "0/2"
    assert body[("keras", "3.15.1", "keras (own)")][weights] == "2/2"
    assert body[("keras", "3.15.1", "keras (own)")][smoothing] == "n/a"
    assert body[("torch", "2.10.0", "torch (own)")][total] == "1/2"
    assert body[("torch", "2.9.0", "torch (own)")][total] == "2/2"
    assert len(body) == 4


def test_terminal_table_and_the_non_conforming_cases(board, cli):
    r = cli("scoreboard", str(board), "--cases")
    assert r.returncode == 0, r.output
    assert re.search(r"^keras\s+3\.15\.1\s+keras \(own\)\s+1\s+", r.stdout, re.M)
    assert re.search(r"^torch\s+2\.10\.0\s+torch \(own\)\s+0\s+", r.stdout, re.M)
    listed = r.stdout.split("Non-conforming results (3):")[1]
    assert re.search(r"keras\s+3\.15\.1\s+torch\s+w/weighted_mean\s+float32\s+fail", listed)
    assert re.search(r"keras\s+3\.15\.1\s+torch\s+w/weighted_sum\s+float32\s+fail", listed)
    assert re.search(r"torch\s+2\.10\.0\s+torch\s+w/weighted_mean\s+float32\s+fail", listed)
    assert "keras  " + "3.15.1  keras" not in listed  # nothing fails under keras's own dialect


def test_html_page_shades_cells_and_names_its_runs(board, tmp_path, cli):
    out_html, out_md = tmp_path / "board.html", tmp_path / "board.md"
    r = cli("scoreboard", str(board), "-o", str(out_html), "-o", str(out_md))
    assert r.returncode == 0, r.output
    assert f"wrote {out_html}" in r.stdout and f"wrote {out_md}" in r.stdout
    page = out_html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    keras_torch = next(row for row in rows if "<td>keras</td>" in row and ">torch<" in row)
    keras_own = next(row for row in rows if "keras (own)" in row)
    assert '<td class="none">0/2</td>' in keras_torch  # weights: none conform under torch
    assert '<td class="all">2/2</td>' in keras_own
    assert '<td class="some">1/3</td>' in keras_torch  # all
    assert "keras: keras 3.15.1 (keras-3.15.1.json)" in page
    assert (
        out_md.read_text(encoding="utf-8")
        == scoreboard.render_markdown(scoreboard.load_runs([board])) + "\n"
    )


def test_a_report_without_dialects_is_judged_by_its_status(tmp_path):
    """Reports written before dialects existed have no torch_status: status is torch's."""
    path = _report(tmp_path / "old.json", "numpy", "numpy", "2.4.6", [
        _result("w/plain", "numpy", "pass"), _result("w/bad", "numpy", "missing_error"),
    ])  # fmt: skip
    (row,) = scoreboard.rows(scoreboard.load_runs([path]))
    assert (row.semantics, row.counts["all"]) == ("torch", (1, 2))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"results": []}', "not a lossconf JSON report"),
        ("BAD_STATUS", "results[0]: field 'status'='passed' must be one of pass, raised"),
        ("BAD_TORCH_STATUS", "results[0]: field 'torch_status'=None must be one of"),
        ("NO_ADAPTERS", "field 'adapters'=[] must be a non-empty list"),
        ("NO_CASE_ID", "results[0]: field 'case_id'=None must be a string"),
        ("STRAY_ADAPTER", "results of adapter 'other', which is not among its 'adapters'"),
    ],
)
def test_a_malformed_report_is_refused_with_exit_2(tmp_path, cli, content, message):
    good = _report(tmp_path / "good.json", "numpy", "numpy", "2.4.6",
                   [_result("w/plain", "numpy", "pass")])  # fmt: skip
    doc = json.loads(good.read_text(encoding="utf-8"))
    bad = tmp_path / "bad.json"
    if content == "BAD_STATUS":
        doc["results"][0]["status"] = "passed"
    elif content == "BAD_TORCH_STATUS":
        doc["results"][0]["torch_status"] = None
    elif content == "NO_ADAPTERS":
        doc["adapters"] = []
    elif content == "NO_CASE_ID":
        del doc["results"][0]["case_id"]
    elif content == "STRAY_ADAPTER":
        doc["results"].append(_result("w/plain", "other", "pass"))
    if content.isupper():
        content = json.dumps(doc)
    bad.write_text(content, encoding="utf-8")
    try:
        r = cli("scoreboard", str(tmp_path))
    finally:  # the session's check that every report lossconf writes is valid skips it
        bad.unlink()
    assert r.returncode == 2, r.output
    assert str(bad) in r.stderr and message in r.stderr
    assert r.stdout == ""  # no table from the good report: the set is refused whole


def test_no_report_is_refused_with_exit_2(tmp_path, cli_process, cli):
    """In a subprocess: the exit status and message a user or a CI script sees; a folder that
    does not exist takes the same way out, checked in process."""
    r = cli_process("scoreboard", str(tmp_path))
    assert r.returncode == 2, r.output
    assert f"scoreboard: no *.json report in {tmp_path}" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("scoreboard", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such file or folder" in r.stderr


def test_an_output_with_an_unknown_suffix_is_refused(board, tmp_path, cli):
    r = cli("scoreboard", str(board), "-o", str(tmp_path / "board.pdf"))
    assert r.returncode == 2
    assert "suffix '.pdf' must be one of .txt, .md, .html, .htm" in r.stderr


def test_the_committed_scoreboard_renders():
    """reports/scoreboard/ holds the runs behind the README's table."""
    runs = committed_runs()
    frameworks = {run.adapter for run in runs}
    assert len(frameworks) >= 6, frameworks
    assert {"torch", "numpy", "jax", "optax", "onnx", "onnxruntime"} <= frameworks
    for run in runs:
        # noxfile.py's scoreboard_name: the library's own version ('0.10.2, optax 0.2.8')
        assert run.path.name == f"{run.adapter}-{run.version.split()[0].rstrip(',')}.json.gz"


def _noxfile():
    """noxfile.py as a module (nox, in the dev extra, is what it imports)."""
    import importlib.util

    pytest.importorskip("nox")
    path = Path(__file__).resolve().parent.parent / "noxfile.py"
    spec = importlib.util.spec_from_file_location("lossconf_noxfile", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scoreboard_sessions_install_extras_that_exist():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    nox = _noxfile()
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    from harness.execution.registry import BUILTIN

    for framework, (adapter, requirements) in nox.SCOREBOARD.items():
        assert adapter in BUILTIN, framework
        for requirement in requirements:
            extra = re.fullmatch(r"\.(?:\[(\w+)\])?", requirement)
            assert extra, f"{framework}: {requirement!r} is not the project or one extra of it"
            assert extra.group(1) is None or extra.group(1) in extras, requirement
    assert nox.scoreboard_name("jax", "0.10.2, optax 0.2.8") == "jax-0.10.2.json.gz"
    assert nox.scoreboard_name("optax", "0.2.8 (jax 0.10.2)") == "optax-0.2.8.json.gz"
    assert nox.scoreboard_name("torch", "2.13.0+cpu") == "torch-2.13.0+cpu.json.gz"
