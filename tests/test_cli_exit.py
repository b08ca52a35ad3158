"""The command line's exit (harness/cli/exit.py): the process ends without tearing the
interpreter down, yet with its exit code, its whole output, and every exit handler
registered while the command ran (an adapter's own among them)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

#: a small selection for the commands whose output is not what is checked (their exit is)
SMALL = str(REPO / "tests" / "faulty_adapters" / "faulty_cases.yaml")

#: an adapter whose module registers an exit handler and leaves a thread pool behind
WITH_HANDLER = """
import atexit
from concurrent.futures import ThreadPoolExecutor

from harness.adapters.numpy_ref import NumpyAdapter

_pool = ThreadPoolExecutor(1)
_pool.submit(lambda: None).result()


def _at_exit():
    with open(__file__ + ".exited", "w") as f:
        f.write("ran")


atexit.register(_at_exit)


class Mine(NumpyAdapter):
    name = "mine"
"""

CASE = """
cases:
  - name: tiny
    why: one result
    logits: [[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]]
    target: [2, 0]
    reduction: mean
    expected: oracle
"""


def test_exit_handlers_an_adapter_registered_run(cli_process, tmp_path):
    (tmp_path / "mine.py").write_text(WITH_HANDLER)
    (tmp_path / "tiny.yaml").write_text(CASE)
    done = cli_process("--adapter", "mine.py:Mine", "--cases", "tiny.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mine.py.exited").read_text() == "ran"


def test_the_whole_output_comes_through_a_pipe(cli_process):
    """A long output into a pipe (the table of every built-in case) arrives whole. (Each exit
    code of the command's contract, through both entry points: ``tests/test_cli.py``.)"""
    listed = cli_process("--list")
    assert listed.returncode == 0
    rows = listed.stdout.splitlines()
    assert len(rows) > 1000 and rows[-1].strip()


def test_main_called_from_python_returns(cli):
    """``main(argv)`` in a process of the user's (here pytest's) returns its code: the quick
    exit is only the entry points'."""
    assert cli("--list", "--cases", SMALL).returncode == 0


def test_exit_handlers_registered_before_the_entry_point_run(tmp_path):
    """A handler registered before the command starts (as ``coverage run -m harness``
    registers the one that saves its data) runs: the process then exits as usual."""
    mark = tmp_path / "saved"
    script = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(mark)!r}, 'w').write('saved'))\n"
        "from harness.cli.exit import entry\n"
        f"sys.argv = ['lossconf', '--list', '--cases', {SMALL!r}]\n"
        "entry()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "saved"
