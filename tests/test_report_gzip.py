"""Gzip-compressed JSON reports: ``--report run.json.gz`` writes the JSON report compressed,
and every reader of reports (``diff``, ``history``, ``--baseline``, ``merge``,
``scoreboard``) takes a compressed report as the plain one. Runs are in process, on the
small cases of ``report_fixtures`` (a few tenths of a second each)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from report_fixtures import CASES, WRONG_MEAN

from harness.gate.baseline import ReportError, read_report
from harness.reports import json as report_json


@pytest.fixture
def project(write, tmp_path: Path) -> Path:
    write("small.yaml", CASES)
    write("wrong.py", WRONG_MEAN)  # under the name numpy: a regression against its baseline
    write("other.py", WRONG_MEAN.replace('name = "numpy"', 'name = "wrong"'))
    return tmp_path


def run(cli, project: Path, *args: str, adapter: str = "numpy"):
    r = cli("--cases", str(project / "small.yaml"), "--adapter", adapter, "-q", *args,
            cwd=project)  # fmt: skip
    assert r.returncode in (0, 1), r.output
    return r


def test_a_json_gz_report_is_the_json_report_compressed(cli, project):
    run(cli, project, "--report", "run.json", "--report", "run.json.gz")
    packed = (project / "run.json.gz").read_bytes()
    assert packed[:2] == b"\x1f\x8b"  # gzip, whatever a reader guesses from the name
    # the same document, byte for byte, once decompressed
    assert gzip.decompress(packed) == (project / "run.json").read_bytes()
    # no time in the gzip header (bytes 4-7): the bytes depend on the report only
    assert packed[4:8] == b"\0\0\0\0"
    assert read_report(project / "run.json.gz") == read_report(project / "run.json")


def test_writing_compressed_is_deterministic(tmp_path):
    doc = {"results": [], "summary": {"pass": 1}, "loss": 0.5}
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    report_json.write(a, doc)
    report_json.write(b, doc)
    assert a.read_bytes() == b.read_bytes()
    report_json.write(tmp_path / "c.json", doc)  # the plain name stays plain text
    assert (tmp_path / "c.json").read_text(encoding="utf-8") == report_json.dumps(doc)


def test_diff_and_baseline_read_a_compressed_report(cli, project):
    run(cli, project, "--report", "old.json.gz")
    run(cli, project, "--report", "new.json")
    r = cli("diff", str(project / "old.json.gz"), str(project / "new.json"))
    assert r.returncode == 0, r.output
    # a regression against a compressed baseline fails the run, as against a plain one
    r = cli("--cases", str(project / "small.yaml"), "--adapter", str(project / "wrong.py"),
            "-q", "--baseline", str(project / "old.json.gz"), cwd=project)  # fmt: skip
    assert r.returncode == 1, r.output
    assert "2 newly failing" in r.stdout, r.stdout


def test_history_and_scoreboard_read_a_folder_of_compressed_reports(cli, project):
    folder = project / "runs"
    folder.mkdir()
    run(cli, project, "--report", str(folder / "numpy.json.gz"))
    run(cli, project, "--report", str(folder / "wrong.json"), adapter="other.py")
    r = cli("scoreboard", str(folder))
    assert r.returncode == 0, r.output
    rows = [
        line.split()[0] for line in r.stdout.splitlines() if line.startswith(("numpy", "wrong"))
    ]
    assert rows == ["numpy", "wrong"]
    r = cli("history", str(folder))
    assert r.returncode in (0, 1), r.output
    assert "numpy" in r.stdout and "wrong" in r.stdout


def test_merge_reads_and_writes_compressed_shards(cli, project):
    for i in (1, 2):
        run(cli, project, "--shard", f"{i}/2", "--report", f"s{i}.json.gz")
    run(cli, project, "--report", "whole.json")
    r = cli("merge", str(project / "s1.json.gz"), str(project / "s2.json.gz"),
            "--report", str(project / "all.json.gz"))  # fmt: skip
    assert r.returncode == 0, r.output
    merged, whole = read_report(project / "all.json.gz"), read_report(project / "whole.json")
    volatile = ("seconds", "peak_rss_bytes")

    def stable(doc: dict) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in volatile} for r in doc["results"]]

    assert stable(merged) == stable(whole) and merged["summary"] == whole["summary"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip data"),
        (gzip.compress(b'{"schema_version": 2, "results": [')[:-12], "corrupt gzip data"),
        (gzip.compress(b"\xff\xfe not utf-8"), "cannot read"),
        (gzip.compress(b"[1, 2"), "not JSON (line 1"),
    ],
    ids=["bad-header", "truncated", "not-utf8", "not-json"],
)
def test_a_bad_compressed_report_is_refused_by_name(cli, tmp_path, content, message):
    bad = tmp_path / "run.json.gz"
    bad.write_bytes(content)
    with pytest.raises(ReportError, match=re.escape(message)) as e:
        read_report(bad)
    assert str(bad) in str(e.value)
    r = cli("diff", str(bad), str(bad))
    assert r.returncode == 2 and str(bad) in r.stderr and message in r.stderr, r.output


def test_only_json_has_a_compressed_format(cli, project):
    r = cli("--cases", str(project / "small.yaml"), "--report", str(project / "r.md.gz"))
    assert r.returncode == 2
    assert "unknown format '.md.gz'" in r.stderr and ".json.gz" in r.stderr
