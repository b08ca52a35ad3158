"""The scripts in benchmarks/ still run: each on a tiny input, or at least its arguments.

The figures of docs/performance.md come from these scripts; a script that no longer runs
leaves a stale figure behind (two did: a changed CLI entry point, a subprocess whose failure
surfaced as "not enough values to unpack"). Each script here runs in a subprocess, as
``tools/refresh_docs.py`` runs it, on sizes that take seconds, and its table rows are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"

#: a case file whose expected values come from the oracle (the suite modes time the oracle)
ORACLE_CASES = """\
cases:
  - name: tiny_oracle
    why: "a cold run computes this case's expected values"
    dtype: [float64]
    logits: {generate: normal, shape: [3, 7], seed: 1}
    target: {generate: labels, shape: [3], seed: 2, classes: 7}
    expected: oracle
"""


def bench(args: list[str], tmp_path: Path) -> str:
    """The script's output, run with this session's cache folder (``LOSSCONF_CACHE_DIR`` as
    the tests have it): the scripts that time a cold run make an empty folder of their own,
    the others load the built-in suite warm, not every file parsed and validated again."""
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def rows(out: str) -> list[list[str]]:
    """The cells of every markdown table row printed (separator rows left out)."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]


def test_every_script_is_covered_here():
    scripts = {p.name for p in BENCHMARKS.glob("bench_*.py")}
    assert scripts == set(ARGUMENTS_ONLY) | RUN_HERE, "a new benchmark: add it to this file"


RUN_HERE = {
    "bench_oracle.py", "bench_cache_and_jobs.py", "bench_overhead.py", "bench_plugin.py",
    "bench_llm_scale.py",
}  # fmt: skip
#: these take minutes or a framework's start-up even on small inputs: their arguments only
ARGUMENTS_ONLY = {
    "bench_startup.py": "--repeat",
    "bench_isolation.py": "--cases",
    "bench_jax_compiles.py": "--adapter",
    "bench_oracle_stream.py": "--rows",
    "bench_torch_large.py": "--rows",
    "bench_fused_linear_memory.py": "--case",  # gigabytes: the V = 131072 case
    "bench_rank_start.py": "--world-size",  # 2 x 2 groups of ranks, each importing torch
    "bench_tests.py": "--repeat",  # runs this test suite, twice
}


#: in one fresh interpreter, each script's ``--help`` as ``python SCRIPT --help`` runs it (its
#: own ``__main__``, its own sys.argv and sys.path[0]); prints {script: [exit code, output]}
HELP_ALL = """
import contextlib, io, json, runpy, sys
from pathlib import Path
out = {}
for script in sys.argv[1:]:
    sys.argv, buffer, code = [script, "--help"], io.StringIO(), 0
    sys.path.insert(0, str(Path(script).parent))
    try:
        with contextlib.redirect_stdout(buffer):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.path.remove(str(Path(script).parent))
    out[Path(script).name] = [code, buffer.getvalue()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, list]:
    """Every ARGUMENTS_ONLY script's ``--help``: one interpreter start-up, not one each."""
    scripts = [str(BENCHMARKS / s) for s in sorted(ARGUMENTS_ONLY)]
    return json.loads(bench(["-c", HELP_ALL, *scripts], tmp_path_factory.mktemp("help")))


@pytest.mark.parametrize("script", sorted(ARGUMENTS_ONLY))
def test_script_parses_its_arguments(script, helps):
    code, out = helps[script]
    assert code == 0, out
    assert ARGUMENTS_ONLY[script] in out


def test_oracle_suite_modes_time_a_cold_run(tmp_path):
    cases = tmp_path / "oracle.yaml"
    cases.write_text(ORACLE_CASES)
    out = bench(
        [str(BENCHMARKS / "bench_oracle.py"), "--modes", "baseline,nll,suite,suite-mpmath",
         "--rows", "4", "--classes", "64", "--repeat", "1", "--cases", str(cases)],
        tmp_path,
    )  # fmt: skip
    table = rows(out)
    large = {r[0]: r for r in table if r[0].startswith(("bare", "oracle"))}
    assert set(large) == {
        "bare float64 logsumexp pass",
        "oracle, loss + float64 grad (no weights, no smoothing)",
    }
    assert all(float(r[1]) >= 0 for r in large.values())
    cold = next(r for r in table if r[0].startswith("`python -m harness -q --cases"))
    assert cold[1].startswith("cold ") and "warm " in cold[1]
    assert cold[2] == "1 results, 0 not conforming"  # the run's own summary line: 1 case x 1 dtype
    share = next(r for r in table if r[0].startswith("the oracle within one cold run"))
    assert share[2].startswith("1 calls, 3 positions")
    previous = next(r for r in table if r[0].startswith("the previous oracle"))
    assert previous[2] == "1 calls"


def test_cache_and_jobs_measures_both_runs(tmp_path):
    out = bench(
        [str(BENCHMARKS / "bench_cache_and_jobs.py"), "--rows", "4", "--classes", "64",
         "--repeat", "1", "--no-torch", "--cases", "cases/seed.yaml"],
        tmp_path,
    )  # fmt: skip
    table = {r[0]: r[1:] for r in rows(out)}
    for label in (
        "selected cases, numpy adapter",
        "generated 4 x 64 float32, `expected: oracle`",
        "expected values of that case alone (oracle / disk)",
        "numpy adapter, selected cases",
        "numpy adapter, execution phase only (in process)",
    ):
        first, second, speed_up = table[label]
        # Times are printed to 0.01 s; a fast machine may round a run to 0.00.
        assert float(first) >= 0 and float(second) >= 0 and speed_up.endswith("x")
    assert not any("torch" in label for label in table)


def test_overhead_compares_harness_and_bare_loop(tmp_path):
    out = bench(
        [str(BENCHMARKS / "bench_overhead.py"), "--adapter", "numpy", "--repeat", "1",
         "-k", "seed or fused_linear/mean_with_bias"],  # a fused linear case too
        tmp_path,
    )  # fmt: skip
    (header, row, steps_header, *steps) = rows(out)
    assert header[0] == "adapter" and row[0] == "numpy"
    cells = dict(zip(header, row, strict=True))
    assert int(cells["calls"]) > 20  # the seed file's 20 calls and the fused case's
    assert float(cells["harness CPU s"]) >= 0 and float(cells["bare loop CPU s"]) >= 0
    # the calls each makes per adapter call: the harness makes more than the bare loop
    assert steps_header[0] == "per adapter call" and len(steps) == 3
    counted = {s[0]: [float(x) for x in s[1:]] for s in steps}
    for harness, bare, own in counted.values():
        assert harness > bare > 0 and own == pytest.approx(harness - bare, abs=0.11)


def test_plugin_and_cli_run_the_same_selection(tmp_path):
    # --no-warm-up: the untimed first runs only steady the times, which are not checked
    out = bench(
        [str(BENCHMARKS / "bench_plugin.py"), "--repeat", "1", "--no-warm-up", "--cases",
         "cases/seed.yaml"],
        tmp_path,
    )  # fmt: skip
    header, *table = rows(out)
    assert header[0] == "numpy, --cases cases/seed.yaml"
    last = {r[0]: r[5] for r in table}
    assert last["CLI: `python -m harness -q`"] == "20 results, 0 not conforming"
    plugin = [label for label in last if label.startswith("plugin")]
    assert len(plugin) == 2 and all(last[p].startswith("20 passed") for p in plugin)
    assert last["pytest alone: 20 empty tests, same plugins left out"].startswith("20 passed")
    cli = next(r for r in table if r[0].startswith("CLI"))
    assert cli[3] == "1.00" and cli[4] == "1.00"  # the ratios are to the CLI's own times


def test_bench_llm_scale_table_runs_both_sides(tmp_path):
    out = bench(
        ["benchmarks/bench_llm_scale.py", "table", "--size", "16x64", "--adapter", "numpy",
         "--repeat", "1"],
        tmp_path,
    )  # fmt: skip
    got = rows(out)
    assert [r[0] for r in got[1:]] == ["numpy: bare call", "numpy: `python -m harness`"]
    assert got[1][5] == "1.00" and float(got[2][3]) >= 0
