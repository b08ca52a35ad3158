"""Ctrl-C and SIGTERM: the run stops, the reports so far are written marked incomplete,
exit 130 (SIGINT) or 143 (SIGTERM); with --isolate no worker is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

CASES = str(REPO / "tests" / "faulty_adapters" / "faulty_cases.yaml")

STALLS = """
import os, pathlib, time
from harness.adapters.numpy_ref import NumpyAdapter


class Stalls(NumpyAdapter):
    '''Correct on the first case; on the second it says so (a marker file) and sleeps.'''

    name = "stalls"

    def run(self, inputs):
        if inputs.reduction == "sum":
            # whole or not at all: the signal may come as soon as the marker exists
            marker = pathlib.Path(os.environ["LOSSCONF_TEST_MARKER"])
            marker.with_suffix(".tmp").write_text(str(os.getpid()))
            os.replace(marker.with_suffix(".tmp"), marker)
            time.sleep(60)
        return super().run(inputs)
"""


def _interrupt(tmp_path, signum: int, *options: str, whole_group: bool = False):
    adapter = tmp_path / "stalls.py"
    adapter.write_text(STALLS)
    marker, report = tmp_path / "marker", tmp_path / "out" / "r.json"
    report.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "--cases", CASES, "--adapter", str(adapter),
         "--report", str(report), "-q", *options],
        cwd=REPO, env={**os.environ, "LOSSCONF_TEST_MARKER": str(marker)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    if whole_group:  # what a terminal does on Ctrl-C
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    return proc, stdout, stderr, report, int(marker.read_text())


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_an_incomplete_report(tmp_path, signum, code):
    proc, stdout, stderr, report, _ = _interrupt(tmp_path, signum)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "lossconf: interrupted after 1 of 3 results; the reports are marked incomplete" in (
        stderr
    )
    assert stdout.strip() == "1 results, 0 not conforming"
    doc = json.loads(report.read_text())
    assert doc["complete"] is False
    assert [(r["case_id"], r["status"]) for r in doc["results"]] == [
        ("faulty_cases/a_mean", "pass")
    ]
    assert os.listdir(report.parent) == ["r.json"]  # written atomically: no temporary left


def test_ctrl_c_with_isolate_stops_the_workers_too(tmp_path):
    proc, _, stderr, report, worker_pid = _interrupt(
        tmp_path, signal.SIGINT, "--isolate", whole_group=True
    )
    assert proc.returncode == 130, stderr
    assert worker_pid != proc.pid  # the call ran in a worker process
    doc = json.loads(report.read_text())
    assert doc["complete"] is False and len(doc["results"]) == 1
    with pytest.raises(ProcessLookupError):  # no process of the run is left
        os.killpg(proc.pid, 0)
