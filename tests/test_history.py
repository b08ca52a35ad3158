"""``python -m harness history``: runs ordered by version, regressions marked, plot written."""

from __future__ import annotations

import json
import sys

import pytest

from harness.cli import history as history_cli
from harness.gate import history


def _report(
    path, version: str, statuses: dict[str, str], ulp: float = 1.0, adapter="torch",
    ratio: float | None = 0.1,
):  # fmt: skip
    """A minimal JSON report of ``adapter`` wrapping torch ``version`` (``ratio`` None: a
    report written before test ratios existed)."""
    results = []
    for case_id, status in statuses.items():
        errors = {"max_abs": 0.0, "max_rel": 0.0, "max_ulp": ulp}
        if ratio is not None:
            errors["max_ratio"] = ratio
        results.append({
            "case_id": case_id, "case_hash": "h-" + case_id, "adapter": adapter,
            "dtype": "float32", "status": status, "message": "",
            "loss_errors": errors, "grad_errors": errors,
            "features": ["weight"] if "weight" in case_id else [], "tags": [],
        })  # fmt: skip
    doc = {
        "schema_version": 1,
        "environment": {"python": "3.11", "numpy": "2.4"},
        "adapters": [{"name": adapter, "wraps": f"torch {version}", "library": "torch",
                      "version": version, "device": "cpu"}],
        "suite": {"cases": {}},
        "results": results,
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def _three_versions(tmp_path):
    folder = tmp_path / "history"
    folder.mkdir()
    ok = {"w/weight_mean": "pass", "w/plain": "pass"}
    # file names sort the other way round: 2.14.1 < 2.9.0 as text
    _report(folder / "a.json", "2.14.1", {"w/weight_mean": "fail", "w/plain": "pass"})
    _report(folder / "b.json", "2.9.0", ok)
    _report(folder / "c.json", "2.13.0+cpu", ok, ulp=8.0, ratio=0.8)
    return folder


def test_runs_are_ordered_by_version_and_regressions_marked(cli, tmp_path):
    r = cli("history", str(_three_versions(tmp_path)))
    assert r.returncode == 1, r.output  # a regression is marked
    table = r.stdout.split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("torch ")]
    assert [row.split()[1] for row in rows] == ["2.9.0", "2.13.0+cpu", "2.14.1"]
    # 2.13: worst test ratio grew 0.1 -> 0.8 (beyond 2 x a third of the limit);
    # 2.14.1: weights 0/1 conform
    assert "1/1 0.8r !" in rows[1] and "0/1 0.8r !" not in rows[1]
    assert "0/1 0.1r !" in rows[2]
    assert "torch 2.13.0+cpu  torch 2.14.1  w/weight_mean  float32  pass   fail" in r.stdout


def test_plot_is_written_as_a_png(cli, tmp_path):
    pytest.importorskip("matplotlib")  # the 'html' extra
    out = tmp_path / "h.png"
    r = cli("history", str(_three_versions(tmp_path)), "--plot", str(out))
    assert r.returncode == 1, r.output  # the same verdict with a plot
    assert f"wrote {out}" in r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_usage_error(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    r = cli("history", str(_three_versions(tmp_path)), "--plot", str(tmp_path / "h.png"))
    assert r.returncode == 2
    assert "--plot needs matplotlib: pip install 'lossconf[html]'" in r.stderr
    assert not (tmp_path / "h.png").exists()


def test_old_reports_show_ulp_and_ulp_growth_is_no_regression(tmp_path):
    a = _report(tmp_path / "a.json", "2.13.0", {"x/plain": "pass"}, ulp=1.0, ratio=None)
    b = _report(tmp_path / "b.json", "2.14.1", {"x/plain": "pass"}, ulp=4.0, ratio=None)
    text = history.render(history.load_runs([a, b]))
    assert "1/1 4u" in text and "!" not in text.split("\n", 2)[2]


def test_no_regression_exits_0_and_says_so(tmp_path):
    a = _report(tmp_path / "a.json", "2.13.0", {"x/plain": "pass"})
    b = _report(tmp_path / "b.json", "2.14.1", {"x/plain": "pass"})
    runs = history.load_runs([a, b])
    text = history.render(runs)
    assert "No case changed status" in text and "!" not in text.split("\n", 2)[2]
    assert history_cli.main([str(a), str(b)]) == 0


def test_bad_input_is_a_usage_error(cli, tmp_path):
    r = cli("history", str(tmp_path))
    assert r.returncode == 2 and "no *.json report" in r.stderr
    (tmp_path / "x.json").write_text('{"results": []}')
    r = cli("history", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "not a lossconf JSON report" in r.stderr


def test_a_file_adapter_is_one_series_however_its_path_was_spelled(tmp_path):
    """Reports of one adapter file, run from two folders, are one series: the later one's
    regression is marked against the earlier one, not shown as a second adapter."""
    a = _report(tmp_path / "a.json", "2.13.0", {"x/plain": "pass"}, adapter="./k/ce.py:fn")
    b = _report(tmp_path / "b.json", "2.14.1", {"x/plain": "fail"}, adapter="ce.py:fn")
    runs = history.load_runs([a, b])
    assert {r.adapter for r in runs} == {"ce.py:fn"}
    assert history_cli.main([str(a), str(b)]) == 1, "the fail after a pass is a regression"
