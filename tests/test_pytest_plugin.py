"""The pytest plugin, driven as a user runs it: ``pytest --lossconf-adapter ...``.

Each run is a pytest session of its own in a fresh folder (``pytester``), in this process;
the plugin loads there from its ``pytest11`` entry point, as in a user's project. The
pytest-xdist run's workers and the import check need processes of their own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from report_fixtures import CASES, WRONG_MEAN

pytestmark = pytest.mark.usefixtures("imported_before_any_inner_session")

EXPECTATIONS = """
expectations:
  - id: small/weighted_mean
    outcomes: [fail]
    reason: known bug 12
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A folder with the small cases, a wrong adapter and an expectations file."""
    for name, text in (("small.yaml", CASES), ("exp.yaml", EXPECTATIONS), ("wrong.py", WRONG_MEAN)):
        (pytester.path / name).write_text(text)
    return pytester


def test_plugin_is_inert_without_the_adapter_option(project):
    project.makepyfile(test_plain="def test_one():\n    assert True\n")
    r = project.runpytest("-q", "-p", "no:cacheprovider")
    assert r.ret == 0, r.stdout.str()
    r.assert_outcomes(passed=1)
    assert "lossconf" not in r.stdout.str()
    h = project.runpytest("--help")
    # the CLI's run options, defined once in harness/cli/options.py, with a prefix
    for flag in ("--lossconf-adapter", "--lossconf-cases", "--lossconf-k", "--lossconf-keyword",
                 "--lossconf-dtype", "--lossconf-expectations"):  # fmt: skip
        assert flag in h.stdout.str(), flag


def test_each_case_adapter_dtype_is_an_item_with_a_readable_id(project):
    r = project.runpytest("--lossconf-adapter", "numpy", "--lossconf-cases", "small.yaml",
                          "--collect-only", "-q")  # fmt: skip
    assert r.ret == 0, r.stdout.str() + r.stderr.str()
    ids = [line for line in r.stdout.lines if line.startswith("lossconf::")]
    assert ids == [
        "lossconf::small/plain_mean[numpy-float64]",
        "lossconf::small/plain_mean[numpy-float32]",
        "lossconf::small/weighted_mean[numpy-float64]",
        "lossconf::small/weighted_mean[numpy-float32]",
        "lossconf::small/kdim_sum[numpy-float64]",
        "lossconf::small/label_out_of_range[numpy-float64]",
    ]


def test_failures_show_message_and_repro_and_junitxml_parses(project):
    xml = project.path / "junit.xml"
    r = project.runpytest("--lossconf-adapter", "wrong.py", "--lossconf-cases", "small.yaml",
                          f"--junitxml={xml}")  # fmt: skip
    assert r.ret == 1
    r.assert_outcomes(failed=2, passed=4)
    out = r.stdout.str()
    assert "fail: loss: expected" in out and "# lossconf repro: small/weighted_mean" in out
    root = ET.parse(xml).getroot()
    failed = [tc.get("name") for tc in root.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["small/weighted_mean[numpy-float64]", "small/weighted_mean[numpy-float32]"]
    statuses = [p.get("value") for p in root.iter("property") if p.get("name") == "lossconf_status"]
    assert statuses == ["pass", "pass", "fail", "fail", "pass", "raised"]


def test_expectations_make_xfail_and_keyword_selects(project):
    r = project.runpytest("--lossconf-adapter", "wrong.py", "--lossconf-cases", "small.yaml",
                          "--lossconf-expectations", "exp.yaml", "-rxX")  # fmt: skip
    assert r.ret == 0, r.stdout.str()
    r.assert_outcomes(passed=4, xfailed=2)
    assert "known bug 12" in r.stdout.str()
    # the same expectations with the correct adapter: unexpected passes
    r = project.runpytest("--lossconf-adapter", "numpy", "--lossconf-cases", "small.yaml",
                          "--lossconf-expectations", "exp.yaml")  # fmt: skip
    assert r.ret == 0
    r.assert_outcomes(passed=4, xpassed=2)
    # the plugin's -k (case id and tags, as the CLI) and pytest's own -k
    r = project.runpytest("--lossconf-adapter", "numpy", "--lossconf-cases", "small.yaml",
                          "--lossconf-k", "weights", "-k", "float32")  # fmt: skip
    assert r.ret == 0
    r.assert_outcomes(passed=1, deselected=1)


def test_bad_option_value_is_a_usage_error(project):
    r = project.runpytest("--lossconf-adapter", "no_such_adapter", "--lossconf-cases", "small.yaml")
    assert r.ret == pytest.ExitCode.USAGE_ERROR == 4
    assert "not found" in r.stderr.str() and "Traceback" not in r.stderr.str()


def test_works_with_xdist(project):
    # the two workers are processes of their own, which collect and run the items (without
    # hypothesis's plugin, which imports all of hypothesis at the end of every session: a
    # second); the controller, which only hands them out and reports, runs in process
    r = project.runpytest("--lossconf-adapter", "wrong.py", "--lossconf-cases", "small.yaml",
                          "-n", "2", "-q", "-p", "no:cacheprovider",
                          "-p", "no:hypothesispytest")  # fmt: skip
    assert r.ret == 1, r.stdout.str()
    assert "2 failed, 4 passed" in r.stdout.str()


LOUD = (
    WRONG_MEAN
    + '''

class Loud(WrongMean):
    """WrongMean, printing a line per call (pytest captures it)."""

    def run(self, inputs):
        print("the adapter ran on", inputs.dtype)
        return super().run(inputs)
'''
)

COUNT_SETUPS = """
SETUPS = []

def pytest_runtest_setup(item):
    SETUPS.append(item.nodeid)

def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"runtest_setup hooks: {len(SETUPS)}")
"""


def _junit(path) -> str:
    """The JUnit XML without what differs between two runs (times, host, timestamp)."""
    return re.sub(r' (time|timestamp|hostname)="[^"]*"', "", path.read_text())


@pytest.mark.parametrize("extra", [[], ["-x"]], ids=["whole", "maxfail"])
def test_items_between_two_others_take_a_light_protocol_with_pytest_s_own_reports(project, extra):
    # pytest's protocol for every item (--runxfail: no item here is an xfail) against the
    # light one: the same outcomes, messages, captured output and JUnit XML
    project.makeconftest(COUNT_SETUPS)
    (project.path / "loud.py").write_text(LOUD)
    runs = {}
    for mode in ("light", "full"):
        xml = project.path / f"{mode}.xml"
        args = ["--lossconf-adapter", "loud.py:Loud", "--lossconf-cases", "small.yaml",
                f"--junitxml={xml}", "-p", "no:cacheprovider", *extra]  # fmt: skip
        r = project.runpytest(*args, *(["--runxfail"] if mode == "full" else []))
        runs[mode] = (r.ret, r.parseoutcomes(), _junit(xml), r.stdout.str())
    (ret, outcomes, junit, out), full = runs["light"], runs["full"]
    assert (ret, outcomes, junit) == full[:3]
    assert ret == 1
    assert outcomes == ({"failed": 1, "passed": 2} if extra else {"failed": 2, "passed": 4})
    # pytest's setup hooks ran for the first and the last item of the run only
    light_setups = "runtest_setup hooks: " + ("1" if extra else "2")
    full_setups = "runtest_setup hooks: " + ("3" if extra else "6")
    assert light_setups in out and full_setups in full[3], (out, full[3])
    for text in (out, full[3]):
        assert "Captured stdout call" in text and "the adapter ran on float64" in text
        assert "# lossconf repro: small/weighted_mean" in text


def test_importing_the_plugin_imports_no_framework_and_not_numpy():
    # every pytest session of an environment with lossconf imports the plugin, whether it
    # runs cases or not: NumPy, YAML and the case model load when items are collected
    code = (
        "import sys, harness.pytest_plugin; print(sorted(m for m in ('torch', 'jax', "
        "'matplotlib', 'numpy', 'yaml', 'harness.cases.model') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stderr
