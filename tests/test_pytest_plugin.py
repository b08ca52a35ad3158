"""The pytest plugin, driven in a subprocess as a user runs it: pytest --lossconf-adapter ..."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from report_fixtures import CASES, WRONG_MEAN


@pytest.fixture
def project(write):
    """A folder with the small cases, a wrong adapter and an expectations file."""
    cases = write("small.yaml", CASES)
    write("wrong.py", WRONG_MEAN)
    write(
        "exp.yaml",
        """
        expectations:
          - id: small/weighted_mean
            outcomes: [fail]
            reason: known bug 12
        """,
    )
    return cases.parent


def pytest_run(folder, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(folder), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_plugin_is_inert_without_the_adapter_option(project):
    (project / "test_plain.py").write_text("def test_one():\n    assert True\n")
    r = pytest_run(project, "-q")
    assert r.returncode == 0, r.stdout
    assert "1 passed" in r.stdout and "lossconf" not in r.stdout
    h = pytest_run(project, "--help")
    # the CLI's run options, defined once in harness/cli/options.py, with a prefix
    for flag in ("--lossconf-adapter", "--lossconf-cases", "--lossconf-k", "--lossconf-keyword",
                 "--lossconf-dtype", "--lossconf-expectations"):  # fmt: skip
        assert flag in h.stdout, flag


def test_each_case_adapter_dtype_is_an_item_with_a_readable_id(project):
    r = pytest_run(project, "--lossconf-adapter", "numpy", "--lossconf-cases", "small.yaml",
                   "--collect-only", "-q")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [line for line in r.stdout.splitlines() if line.startswith("lossconf::")]
    assert ids == [
        "lossconf::small/plain_mean[numpy-float64]",
        "lossconf::small/plain_mean[numpy-float32]",
        "lossconf::small/weighted_mean[numpy-float64]",
        "lossconf::small/weighted_mean[numpy-float32]",
        "lossconf::small/kdim_sum[numpy-float64]",
        "lossconf::small/label_out_of_range[numpy-float64]",
    ]


def test_failures_show_message_and_repro_and_junitxml_parses(project):
    xml = project / "junit.xml"
    r = pytest_run(project, "--lossconf-adapter", "wrong.py", "--lossconf-cases", "small.yaml",
                   f"--junitxml={xml}")  # fmt: skip
    assert r.returncode == 1
    assert "2 failed, 4 passed" in r.stdout
    assert (
        "fail: loss: expected" in r.stdout and "# lossconf repro: small/weighted_mean" in r.stdout
    )
    root = ET.parse(xml).getroot()
    failed = [tc.get("name") for tc in root.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["small/weighted_mean[numpy-float64]", "small/weighted_mean[numpy-float32]"]


def test_expectations_make_xfail_and_keyword_selects(project):
    r = pytest_run(project, "--lossconf-adapter", "wrong.py", "--lossconf-cases", "small.yaml",
                   "--lossconf-expectations", "exp.yaml", "-rxX")  # fmt: skip
    assert r.returncode == 0, r.stdout
    assert "4 passed, 2 xfailed" in r.stdout and "known bug 12" in r.stdout
    # the same expectations with the correct adapter: unexpected passes
    r = pytest_run(project, "--lossconf-adapter", "numpy", "--lossconf-cases", "small.yaml",
                   "--lossconf-expectations", "exp.yaml")  # fmt: skip
    assert r.returncode == 0 and "4 passed, 2 xpassed" in r.stdout
    # the plugin's -k (case id and tags, as the CLI) and pytest's own -k
    r = pytest_run(project, "--lossconf-adapter", "numpy", "--lossconf-cases", "small.yaml",
                   "--lossconf-k", "weights", "-k", "float32")  # fmt: skip
    assert r.returncode == 0 and "1 passed, 1 deselected" in r.stdout


def test_bad_option_value_is_a_usage_error(project):
    r = pytest_run(
        project, "--lossconf-adapter", "no_such_adapter", "--lossconf-cases", "small.yaml"
    )
    assert r.returncode == 4  # pytest's usage error
    assert "not found" in r.stderr and "Traceback" not in r.stderr


def test_works_with_xdist(project):
    pytest.importorskip("xdist")
    r = pytest_run(project, "--lossconf-adapter", "wrong.py", "--lossconf-cases", "small.yaml",
                   "-n", "2", "-q")  # fmt: skip
    assert r.returncode == 1, r.stdout
    assert "2 failed, 4 passed" in r.stdout


def test_importing_the_plugin_imports_no_framework():
    code = (
        "import sys, harness.pytest_plugin; "
        "print(sorted(m for m in ('torch', 'jax', 'matplotlib') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stderr
