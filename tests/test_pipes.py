"""Output into a closed pipe (issue 14, item 8): ``python -m harness ... | head`` ends the output,
not the command; no BrokenPipeError traceback, and the exit code is the command's own.

A pipe whose reading end is already closed gives a write EPIPE at once, whatever the amount
of output, so these tests do not depend on a pipe's buffer size or on timing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = str(REPO / "cases" / "seed.yaml")
HISTORY = REPO / "reports" / "history"

#: each command twice in one interpreter: stdout to /dev/null, then into a closed pipe
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from harness.cli.main import main

    def call(argv, fd):
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(fd, 1)
        try:
            code = main(argv)
        except SystemExit as e:  # --help
            code = e.code or 0
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        return code

    commands, out = json.loads(sys.argv[1]), sys.argv[2]
    codes = {}
    for name, argv in commands.items():
        devnull = os.open(os.devnull, os.O_WRONLY)
        normal = call(argv, devnull)
        os.close(devnull)
        read, write = os.pipe()
        os.close(read)  # the reader has gone, as head's after its lines
        codes[name] = [normal, call(argv, write)]
        os.close(write)
    with open(out, "w") as f:
        json.dump(codes, f)
    """
)


def test_every_command_survives_a_closed_stdout(tmp_path):
    report = tmp_path / "run.json"
    old, new = sorted(str(p) for p in HISTORY.glob("numpy-*.json.gz"))
    # a folder of two of the stored reports: reading each costs a tenth of a second, twice,
    # and two already make a history table (the closed pipe fails its first write, whatever
    # the amount of output)
    history = tmp_path / "history"
    history.mkdir()
    for path in (old, new):
        shutil.copy(path, history)
    commands = {
        "run": ["--cases", SEED, "-k", "article", "--report", str(report)],
        "list": ["--list", "--cases", SEED],
        "list-json": ["--list", "--format", "json", "--cases", SEED],
        "diff": ["diff", old, new],
        "history": ["history", str(history)],
        "coverage": ["coverage", SEED],
        "validate": ["validate", SEED],
        "help": ["--help"],
    }
    out = tmp_path / "codes.json"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(commands), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for word in ("Traceback", "BrokenPipeError", "Exception ignored", "internal error"):
        assert word not in proc.stderr, proc.stderr
    codes = json.loads(out.read_text())
    assert set(codes) == set(commands)
    for name, (normal, piped) in codes.items():
        assert piped == normal, (name, normal, piped)
    assert codes["run"] == [0, 0] and codes["list"] == [0, 0]
    assert json.loads(report.read_text())["results"]  # the run went on and wrote its report


def _closed_pipe_run(*args: str, stderr_too: bool = False) -> subprocess.CompletedProcess:
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args],
            cwd=REPO,
            stdout=write,
            stderr=write if stderr_too else subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)


def test_list_into_head_exits_0_without_a_traceback():
    # the whole process, interpreter shutdown included (its last flush of stdout)
    r = _closed_pipe_run("--list")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    both = _closed_pipe_run("--list", "--cases", SEED, stderr_too=True)  # 2>&1 | head
    assert both.returncode == 0
