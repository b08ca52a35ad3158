"""Progress in CI logs (issue 14, item 7): when stderr is not a terminal, a line every ~30 s
with done/total, the elapsed time and an estimate of what is left; never with -q."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from harness.execution import progress
from harness.execution.progress import Progress

SEED = str(Path(__file__).resolve().parent.parent / "cases" / "seed.yaml")


def test_a_line_every_interval_when_not_a_terminal():
    now = [0.0]
    log = io.StringIO()  # not a terminal: a CI log
    bar = Progress(400, stream=log, clock=lambda: now[0])
    for t in (1.0, 10.0, 29.0):  # nothing in the first 30 s
        now[0] = t
        bar.update("a/b")
    assert log.getvalue() == ""
    now[0] = 30.0
    bar.update("a/b")  # 4 of 400 after 30 s: 99 times as long again
    assert log.getvalue() == "lossconf: 4/400 results (1%), 30s elapsed, about 49m30s left\n"
    now[0] = 45.0
    bar.update("a/b")  # within the next 30 s: no new line
    assert log.getvalue().count("\n") == 1
    now[0] = 59.0
    for _ in range(194):
        bar.update("a/b")  # 199 of 400, still within the 30 s after the first line
    assert log.getvalue().count("\n") == 1
    now[0] = 150.0
    bar.update("a/b")  # 200 of 400 after 2m30s
    assert log.getvalue().splitlines()[-1] == (
        "lossconf: 200/400 results (50%), 2m30s elapsed, about 2m30s left"
    )
    assert "\r" not in log.getvalue()  # a log gets whole lines, never a redrawn bar
    bar.close()
    assert log.getvalue().count("\n") == 2  # nothing to erase


def test_hours_read_as_hours():
    assert progress.duration(3725.0) == "1h02m"
    assert progress.duration(59.4) == "59s"
    assert progress.duration(61.0) == "1m01s"


def test_no_lines_when_disabled():
    now = [0.0]
    log = io.StringIO()
    bar = Progress(10, stream=log, enabled=False, clock=lambda: now[0])
    now[0] = 100.0
    bar.update("x")
    assert log.getvalue() == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_a_run_logs_progress_unless_quiet(cli, monkeypatch, quiet):
    monkeypatch.setattr(Progress, "interval", 0.0)  # a line at every result after the first
    r = cli("--cases", SEED, "-k", "article", *(["-q"] if quiet else []))
    assert r.returncode == 0, r.output
    lines = [
        ln for ln in r.stderr.splitlines() if ln.startswith("lossconf: ") and "results (" in ln
    ]
    if quiet:
        assert lines == []
    else:
        assert lines and re.match(r"lossconf: (\d+)/\1 results \(100%\), ", lines[-1]), lines
