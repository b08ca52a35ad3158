"""Errors that help (issue 14, item 10): did-you-mean for adapters, the install command for a
missing framework, --help naming the program as invoked, validate reporting every case's
error and a missing path as missing, and '1e-5' read as text answered with '1.0e-5'."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from harness.cases.loader import load_paths
from harness.cases.yaml_numbers import yaml_number_spelling
from harness.cli.main import SUBCOMMANDS
from harness.errors import CaseFileError
from harness.execution import registry

SEED = str(Path(__file__).resolve().parent.parent / "cases" / "seed.yaml")


# --- adapters -----------------------------------------------------------------------------------


def test_a_misspelt_adapter_gets_a_did_you_mean(cli):
    r = cli("--adapter", "troch", "--cases", SEED)
    assert r.returncode == 2
    assert "adapter 'troch' not found (did you mean 'torch'?)" in r.stderr
    assert "Known adapters:" in r.stderr and "Traceback" not in r.output
    options = cli("--adapter", "jaxx@device=cpu", "--cases", SEED)  # options do not hide the name
    assert "(did you mean 'jax'?)" in options.stderr


@pytest.mark.parametrize(("name", "module", "extra"), [("torch", "torch", "torch"),
                                                       ("optax", "optax", "jax")])  # fmt: skip
def test_a_missing_framework_names_the_install_command(cli, monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    r = cli("--adapter", name, "--cases", SEED)
    assert r.returncode == 2
    assert f"install it with: pip install 'lossconf[{extra}]'" in r.stderr, r.stderr


def test_install_hint_comes_from_the_package_extras():
    assert registry.install_command("torch") == "pip install 'lossconf[torch]'"
    assert registry.install_command("jax") == "pip install 'lossconf[jax]'"
    assert registry.install_command("no_such_module_anywhere") is None


def test_list_names_the_install_command_of_a_missing_framework(cli, monkeypatch):
    import json

    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torch" else find(n, *a)
    )
    doc = json.loads(cli("--list", "--format", "json", "--cases", SEED).stdout)
    torch = next(a for a in doc["adapters"] if a["name"] == "torch")
    assert torch["available"] is False and torch["missing"] == ["torch"]
    assert torch["install"] == "pip install 'lossconf[torch]'"
    table = cli("--list", "--cases", SEED).stdout
    assert "pip install 'lossconf[torch]'" in table


# --- --help names the program as invoked ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [("/venv/bin/lossconf", "lossconf"), ("/src/harness/__main__.py", "python -m harness")],
)
def test_help_names_the_program_as_invoked(cli, monkeypatch, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    top = cli("--help")
    assert top.stdout.startswith(f"usage: {prog} [-h]")
    assert f"  {prog} --adapter ./my_ce.py" in top.stdout  # the examples too
    assert f"sub-commands ({prog} COMMAND --help)" in top.stdout
    for command in SUBCOMMANDS:
        sub = cli(command, "--help")
        assert sub.stdout.startswith(f"usage: {prog} {command}"), (command, sub.stdout[:80])


# --- validate -----------------------------------------------------------------------------------

THREE_BAD = """
cases:
  - name: good
    why: fine
    logits: [[1.0, 2.0]]
    target: [0]
    expected: oracle
  - name: typo
    why: an unknown field
    logits: [[1.0, 2.0]]
    target: [0]
    reducton: sum
    expected: oracle
  - name: text_number
    why: 1e-5 is text in YAML 1.1
    logits: [[1e-5, 2.0]]
    target: [0]
    expected: oracle
  - name: bad_rtol
    why: a tolerance spelt as text
    logits: [[1.0, 2.0]]
    target: [0]
    tolerance: {loss_rtol: 1e-5, reason: why not}
    expected: oracle
  - name: out_of_range
    why: the reduction is checked
    logits: [[1.0, 2.0]]
    target: [0]
    reduction: avg
    expected: oracle
"""


def test_validate_reports_every_case_error_in_a_file(cli, write):
    path = write("many.yaml", THREE_BAD)
    r = cli("validate", str(path))
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("lossconf: error: ")]
    assert [e.split(": case ")[1].split(":")[0] for e in errors] == [
        "'typo'", "'text_number'", "'bad_rtol'", "'out_of_range'",
    ]  # fmt: skip
    assert r.stderr.splitlines()[-1] == "1 invalid of 1 files (4 errors)"


def test_a_run_still_stops_at_the_first_error(write):
    path = write("many.yaml", THREE_BAD)
    with pytest.raises(CaseFileError) as info:
        load_paths([path])
    assert info.value.case == "typo"
    every = load_paths([path], keep_going=True, every_error=True)
    assert [e.case for e in every.errors] == ["typo", "text_number", "bad_rtol", "out_of_range"]
    assert every.cases == []  # a file with an error gives no case


def test_validate_says_a_missing_file_does_not_exist(cli, tmp_path):
    missing = tmp_path / "nonexist.yaml"
    r = cli("validate", str(missing), SEED)
    assert r.returncode == 2
    assert f"lossconf: error: {missing}: no such file or folder" in r.stderr
    assert r.stderr.splitlines()[-1] == f"1 path not found ({missing}); 1 files checked: valid"
    alone = cli("validate", str(missing))
    assert alone.stderr.splitlines()[-1] == f"1 path not found ({missing}); 0 files checked"
    assert "invalid of 0 files" not in alone.stderr


# --- 1e-5 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spelling"),
    [("1e-5", "1.0e-5"), ("1E-5", "1.0E-5"), ("-2e3", "-2.0e+3"), ("1.0e5", "1.0e+5"),
     ("2.5e+300", None), ("1.e3", "1.0e+3"), ("abc", None), ("1.5", None), ("nan", None)],
)  # fmt: skip
def test_yaml_number_spelling(text, spelling):
    import yaml

    assert yaml_number_spelling(text) == spelling
    if spelling is not None:
        assert yaml.safe_load(text) == text  # read as text ...
        assert yaml.safe_load(spelling) == float(text)  # ... and the spelling as the number


def test_text_numbers_get_the_spelling_that_yaml_reads(cli, write):
    path = write("many.yaml", THREE_BAD)
    r = cli("validate", str(path))
    (logits,) = [ln for ln in r.stderr.splitlines() if "'text_number'" in ln]
    assert logits.endswith(
        "field 'logits': '1e-5' is text, not a number: YAML reads an exponent without "
        "a dot and a sign as text; write 1.0e-5"
    ), logits
    (rtol,) = [ln for ln in r.stderr.splitlines() if "'bad_rtol'" in ln]
    assert rtol.endswith(
        "field 'tolerance.loss_rtol': '1e-5' is text, not a number: YAML reads an exponent "
        "without a dot and a sign as text; write 1.0e-5"
    ), rtol
