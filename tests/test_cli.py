"""The CLI end to end, as a user runs it: exit codes, tables, reports.

The contract of ``python -m harness`` (each exit code, its messages, no traceback, --help,
--list, the console script) runs in a fresh interpreter (``cli_process``); what a command
computes (verdicts, reports, regen) runs ``main`` in process (``cli``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

#: the seed cases' file: a test in a fresh interpreter that needs a few cases loads it alone,
#: not the whole built-in suite (which costs each interpreter a third of its start, 0.15 s
#: of CPU); ``-k seed`` selects the same cases from either
SEED = str(REPO / "cases" / "seed.yaml")

WRONG_MEAN = """
import numpy as np
from harness import Adapter, Output
from harness.adapters.numpy_ref import cross_entropy
from harness.dtypes import cast


class WrongMean(Adapter):
    '''Divides a weighted mean by N instead of sum_i w[y_i]: a classic bug.'''

    name = "wrong-mean"

    def run(self, inputs):
        loss, grad = cross_entropy(inputs)
        if inputs.reduction == "mean" and inputs.weight is not None and not inputs.probability_target:
            n = np.sum(inputs.target != inputs.ignore_index)
            denom = np.sum(inputs.weight[inputs.target[inputs.target != inputs.ignore_index]])
            loss = loss * denom / n
            grad = grad * denom / n
        return Output(cast(loss, inputs.dtype), cast(grad, inputs.dtype))
"""

NO_CHECK = """
from harness import Adapter, Output
from harness.adapters.numpy_ref import cross_entropy
import numpy as np


class NoCheck(Adapter):
    '''Clamps labels instead of raising: passes valid cases, misses the invalid one.'''

    name = "no-check"

    def run(self, inputs):
        x = inputs.logits
        t = np.clip(inputs.target, 0, x.shape[-1] - 1) if inputs.target.dtype.kind == "i" else inputs.target
        import dataclasses
        loss, grad = cross_entropy(dataclasses.replace(inputs, target=t))
        return Output(loss.astype(x.dtype), None if grad is None else grad.astype(x.dtype))
"""


def test_default_run_conforms_and_prints_table(cli):
    """No option: the whole built-in suite through the numpy reference, every result conforms
    (divergence-tagged cases included). Its speed is benchmarks/bench_startup.py's and
    bench_oracle.py's to measure, not a test's; ``python -m harness`` as a process is
    test_console_script_and_module_agree's."""
    r = cli()
    assert r.returncode == 0, r.output
    assert "numpy" in r.stdout and "pass" in r.stdout
    assert "all conform" in r.stdout


def test_wrong_weighted_mean_fails_with_readable_report(cli_process, write):
    path = write("wrong.py", WRONG_MEAN)
    r = cli_process("--cases", SEED, "--adapter", str(path), "-k", "seed")
    assert r.returncode == 1, r.output
    assert "seed/weighted_mean" in r.stdout
    assert "fail" in r.stdout
    assert "loss: expected" in r.stdout
    # cases without weights still pass
    assert "seed/article_1x5" not in r.stdout


def test_missing_error_is_non_conforming(cli, write):
    path = write("nocheck.py", NO_CHECK)
    r = cli("--adapter", str(path), "-k", "label_out_of_range")
    assert r.returncode == 1
    assert "missing_error" in r.stdout
    assert "index_out_of_range" in r.stdout


def test_two_adapters_in_one_table(cli, write):
    path = write("wrong.py", WRONG_MEAN)
    r = cli("--adapter", "numpy", "--adapter", str(path), "-k", "seed")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert any(line.startswith("numpy") for line in lines)
    assert any(line.startswith("wrong-mean") for line in lines)


def test_json_report(cli, tmp_path):
    out = tmp_path / "r.json"
    r = cli("-k", "seed", "--report", str(out))
    assert r.returncode == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 2
    assert doc["adapters"][0]["name"] == "numpy"
    statuses = {x["status"] for x in doc["results"]}
    assert statuses == {"pass", "raised"}
    assert "seed/article_1x5" in doc["suite"]["cases"]
    first = doc["results"][0]
    assert set(first) >= {
        "case_id",
        "case_hash",
        "adapter",
        "dtype",
        "status",
        "loss_errors",
        "grad_errors",
    }


def test_unknown_report_format_is_usage_error(cli_process, tmp_path):
    r = cli_process("--report", str(tmp_path / "r.csv"))
    assert r.returncode == 2
    assert ".csv" in r.stderr and "Traceback" not in r.output


def test_no_case_selected_is_an_error(cli_process):
    r = cli_process("--cases", SEED, "-k", "no-such-case-anywhere")
    assert r.returncode == 2
    assert "no case selected" in r.stderr


def test_invalid_case_file_names_file_case_field(cli_process, write):
    path = write(
        "bad.yaml",
        """
        cases:
          - name: typo
            why: a typo in a field name
            logits: [[1.0, 2.0]]
            target: [0]
            reduktion: sum
        """,
    )
    r = cli_process("--cases", str(path))
    assert r.returncode == 2
    assert str(path) in r.stderr
    assert "'typo'" in r.stderr
    assert "did you mean 'reduction'" in r.stderr
    assert "Traceback" not in r.output


def test_shape_mismatch_names_field(cli, write):
    path = write(
        "bad.yaml",
        """
        cases:
          - name: short_weight
            why: weight of the wrong length
            logits: [[1.0, 2.0, 3.0]]
            target: [0]
            weight: [1.0, 2.0]
            expected: oracle
        """,
    )
    r = cli("--cases", str(path))
    assert r.returncode == 2
    assert "field 'weight'" in r.stderr and "expected (3,)" in r.stderr


def test_unknown_adapter_lists_known_ones(cli_process):
    r = cli_process("--cases", SEED, "--adapter", "nonexistent_impl")
    assert r.returncode == 2
    assert "not found" in r.stderr and "numpy" in r.stderr
    assert "Traceback" not in r.output


def test_list_shows_cases_and_adapters(cli_process):
    r = cli_process("--list")
    assert r.returncode == 0
    assert "seed/article_1x5" in r.stdout and "numpy" in r.stdout


def test_help_documents_exit_codes(cli_process):
    r = cli_process("--help")
    assert r.returncode == 0
    assert "exit codes" in r.stdout
    assert "2  usage error" in r.stdout


def test_committed_expectations_match_the_oracle(cli):
    r = cli("regen", "--check")
    assert r.returncode == 0, r.output


def test_regen_writes_values_that_then_pass(cli, write):
    path = write(
        "new.yaml",
        """
        # a comment regen must keep
        cases:
          - name: fresh
            why: a new case without values yet
            logits: [[0.5, 1.5, -1.0]]
            target: [1]
            dtype: [float64, float32, float16]
        """,
    )
    assert cli("--cases", str(path)).returncode == 2  # expected values missing
    r = cli("regen", str(path))
    assert r.returncode == 0, r.output
    text = path.read_text()
    assert "# a comment regen must keep" in text and "expected:" in text
    r = cli("--cases", str(path))
    assert r.returncode == 0, r.output
    assert cli("regen", "--check", str(path)).returncode == 0


def test_regen_check_names_stale_and_missing_values_and_writes_nothing(cli, write):
    """``--check`` reads a file whose cases all have values (or ``expected: oracle``, or an
    error) from the load alone, and one with a case without values from its YAML: both
    name exactly the cases that regen would write, and leave the files as they were."""
    stale = """
        cases:
          - name: stale
            why: a stored loss the oracle does not give
            logits: [[0.5, 1.5, -1.0]]
            target: [1]
            dtype: [float64]
            expected: {loss: 0.25, grad: [[0.25, -0.5, 0.25]]}
          - name: from_the_oracle
            why: values computed at run time
            logits: [[0.5, 1.5, -1.0]]
            target: [1]
            expected: oracle
          - name: refused
            why: an error case
            logits: [[0.5, 1.5, -1.0]]
            target: [3]
            expect_error: index_out_of_range
        """
    path = write("stale.yaml", stale)
    fresh = """
          - name: fresh
            why: no values yet
            logits: [[1.0, 2.0]]
            target: [0]
        """
    missing = write("missing.yaml", stale.rstrip(" ") + fresh.lstrip("\n"))
    texts = {p: p.read_text() for p in (path, missing)}
    r = cli("regen", "--check", str(path), str(missing))
    assert r.returncode == 1, r.output
    assert f"{path}: 1 cases differ: stale/stale\n" in r.stdout
    assert f"{missing}: 2 cases differ: missing/stale, missing/fresh\n" in r.stdout
    assert "3 cases have stale expected values" in r.stderr
    assert {p: p.read_text() for p in texts} == texts


def test_console_script_and_module_agree():
    """The project is installed (pip install -e .) wherever its tests run: the script exists."""
    exe = Path(sys.executable).parent / "lossconf"
    assert exe.is_file(), f"no console script {exe}: install the project (pip install -e .)"
    r = subprocess.run(
        [str(exe), "-q", "--cases", SEED, "-k", "seed"], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("results, 0 not conforming")


def test_regen_fills_recipe_fingerprints(cli, write):
    path = write(
        "gen.yaml",
        """
        cases:
          - name: gen
            why: a recipe whose fingerprint regen fills in
            logits: {generate: normal, shape: [2, 7], seed: 3, sha256: FILL}
            target: [1, 2]
        """,
    )
    assert cli("regen", str(path)).returncode == 0
    assert 'sha256: "5f3de7211ac5ac73"' in path.read_text()  # the fingerprint (float32 values)
    assert cli("--cases", str(path)).returncode == 0
