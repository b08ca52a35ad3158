"""The CI gate: --expectations, --baseline, diff, expectations update, exit codes."""

from __future__ import annotations

import json
import textwrap

import pytest
from report_fixtures import CASES, SLIGHTLY_OFF, WRONG_MEAN

from harness.gate.expectations import parse_version_range, version_in_range, version_key


@pytest.fixture
def cases(write):
    return write("small.yaml", CASES)


@pytest.fixture
def baseline(cli, tmp_path_factory, made_once):
    """A report of the correct numpy adapter on the small cases (a copy of ``cases``, so a
    test may change its own), made once in this module by the first test that asks."""
    if "baseline" not in made_once:
        folder = tmp_path_factory.mktemp("baseline")
        cases = folder / "small.yaml"
        cases.write_text(textwrap.dedent(CASES).lstrip())
        out = folder / "baseline.json"
        r = cli("--cases", str(cases), "--report", str(out))
        assert r.returncode == 0, r.output
        made_once["baseline"] = out
    return made_once["baseline"]


EXPECT_WRONG_MEAN = """
expectations:
  - id: small/weighted            # a prefix
    adapter: numpy
    version: ">=1.20"
    dtype: [float64, float32]
    outcomes: [fail]
    reason: "divides the weighted mean by N (known bug #12)"
"""


def test_expected_failures_do_not_fail_the_gate(cli, cases, write, tmp_path):
    wrong = write("wrong.py", WRONG_MEAN)
    exp = write("exp.yaml", EXPECT_WRONG_MEAN)
    xml = tmp_path / "out.xml"
    r = cli("--cases", str(cases), "--adapter", str(wrong), "--expectations", str(exp), "-v",
            "--report", str(xml))  # fmt: skip
    assert r.returncode == 0, r.output
    assert "Expected non-conformities (2" in r.stdout and "known bug #12" in r.stdout
    assert "gate: PASS" in r.stdout
    assert xml.read_text().count('type="expected"') == 2
    # without the file the same run fails
    assert cli("--cases", str(cases), "--adapter", str(wrong)).returncode == 1


def test_expectation_conditions_must_all_hold(cli, cases, write):
    wrong = write("wrong.py", WRONG_MEAN)
    for condition in ('version: "<1.0"', "dtype: float16", "adapter: torch", "device: cuda*"):
        text = EXPECT_WRONG_MEAN.replace('version: ">=1.20"', condition)
        exp = write("exp.yaml", text.replace("    dtype: [float64, float32]\n", ""))
        r = cli("--cases", str(cases), "--adapter", str(wrong), "--expectations", str(exp))
        assert r.returncode == 1, (condition, r.output)
        # an entry for a dtype or adapter the run did not select is not warned about
        stale = condition.startswith(("version", "device"))
        assert ("matched no result" in r.stderr) == stale, condition


def test_unexpected_pass_and_unused_entry_are_reported(cli, cases, write):
    exp = write(
        "exp.yaml",
        """
        expectations:
          - id: "small/plain_*"
            outcomes: [fail]
            link: https://example.org/issues/1
          - id: small/kdim_sum
            version: "<1.0"
            outcomes: [error]
            reason: stale
        """,
    )
    r = cli("--cases", str(cases), "--expectations", str(exp))
    assert r.returncode == 0, r.output  # unexpected passes are reported, not fatal
    assert "Unexpected passes (2)" in r.stdout
    assert f"expectation {exp}:5 (id 'small/kdim_sum') matched no result" in r.stderr


def test_wrong_outcome_for_a_matched_entry_still_fails(cli, cases, write):
    wrong = write("wrong.py", WRONG_MEAN)
    exp = write("exp.yaml", EXPECT_WRONG_MEAN.replace("outcomes: [fail]", "outcomes: [error]"))
    r = cli("--cases", str(cases), "--adapter", str(wrong), "--expectations", str(exp))
    assert r.returncode == 1
    assert "Matched an expectation but with another outcome" in r.stdout


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  - id: a/\n    outcome: [fail]\n    reason: x\n", "unknown field 'outcome'; did you mean 'outcomes'?"),
        ("  - id: a/\n    outcomes: [fail]\n", "needs a 'reason' or a 'link'"),
        ("  - id: a/\n    outcomes: [flaky]\n    reason: x\n", "field 'outcomes'=['flaky'] has 'flaky'"),
        ("  - id: a/\n    outcomes: [fail]\n    reason: x\n    version: 'about 2'\n", "field 'version'='about 2' is not a version range"),
        ("  - id: a/\n    outcomes: [fail]\n    reason: x\n    dtype: float8\n", "field 'dtype'='float8'"),
        ("  - outcomes: [fail]\n    reason: x\n", "needs 'id' (a case id prefix or glob) or 'case'"),
        ("  - id: 3\n    outcomes: [fail]\n    reason: x\n", "field 'id'=3 must be a case id prefix"),
    ],
)  # fmt: skip
def test_invalid_expectations_file_exits_2_naming_file_line_field(cli, cases, write, body, message):
    exp = write("exp.yaml", "expectations:\n" + body)
    r = cli("--cases", str(cases), "--expectations", str(exp))
    assert r.returncode == 2, r.output
    assert f"expectations {exp}:2: entry 1" in r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.output


def test_version_ranges():
    assert version_key("2.14.1+cpu") > version_key("2.13.0") > version_key("2.13.0rc1")
    assert version_key("0.4.30") > version_key("0.4.4")
    rng = parse_version_range(">=2.13,<2.15")
    assert version_in_range("2.14.1", rng) and not version_in_range("2.15.0", rng)
    assert version_in_range("2.13", [("==", "2.13.0")])
    assert version_in_range("2.13.5", [("~=", "2.13")]) and not version_in_range(
        "3.0", [("~=", "2.13")]
    )


def test_baseline_new_failure_fails_and_diff_agrees(cli, cases, write, baseline, tmp_path):
    wrong = write("wrong.py", WRONG_MEAN)  # named "numpy": the same adapter, regressed
    out = tmp_path / "new.json"
    r = cli("--cases", str(cases), "--adapter", str(wrong), "--baseline", str(baseline),
            "--report", str(out))  # fmt: skip
    assert r.returncode == 1
    assert "Newly failing vs" in r.stdout and "small/weighted_mean" in r.stdout
    assert "-> REGRESSION" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["gate"]["baseline"]["newly_failing"] == [
        ["small/weighted_mean", "numpy", "float64"], ["small/weighted_mean", "numpy", "float32"]
    ]  # fmt: skip
    d = cli("diff", str(baseline), str(out))
    assert d.returncode == 1 and "2 newly failing" in d.stdout
    back = cli("diff", str(out), str(baseline))
    assert back.returncode == 0 and "2 newly passing" in back.stdout


#: WRONG_MEAN's adapter, which on its first call overwrites the files named by
#: LOSSCONF_TEST_OVERWRITE (a job that rewrites the gate's files while a run goes on)
OVERWRITING = (
    WRONG_MEAN
    + """
import os

class Overwriting(WrongMean):
    done = False

    def run(self, inputs):
        if not Overwriting.done:
            Overwriting.done = True
            for path in os.environ["LOSSCONF_TEST_OVERWRITE"].split(os.pathsep):
                with open(path, "w") as f:
                    f.write("not: [the file that was checked")
        return super().run(inputs)
"""
)


def test_the_gate_judges_with_the_files_as_checked_before_the_run(
    cli, cases, write, baseline, tmp_path, monkeypatch
):
    """--expectations and --baseline are read once, before anything runs: files rewritten
    while the run goes on (here by the adapter, made invalid) leave the verdict, the exit code
    and the report's gate section those of the same run with the files untouched."""
    exp_text = textwrap.dedent(EXPECT_WRONG_MEAN).lstrip()
    exp, old = tmp_path / "exp.yaml", tmp_path / "baseline.json"
    adapter = write("overwriting.py", OVERWRITING)
    monkeypatch.setenv("LOSSCONF_TEST_OVERWRITE", f"{exp}:{old}")
    gates = {}
    for name in ("Overwriting", "WrongMean"):
        exp.write_text(exp_text)
        old.write_bytes(baseline.read_bytes())
        out = tmp_path / f"{name}.json"
        r = cli("--cases", str(cases), "--adapter", f"{adapter}:{name}", "--expectations",
                str(exp), "--baseline", str(old), "--report", str(out))  # fmt: skip
        gates[name] = r.returncode, json.loads(out.read_text())["gate"]
        # only the first rewrote the files while it ran
        assert exp.read_text().startswith("not:") == (name == "Overwriting")
    assert gates["Overwriting"] == gates["WrongMean"]
    assert gates["WrongMean"][1]["expected"] == 2  # the expectations were applied
    assert gates["WrongMean"][1]["baseline"] is not None  # and the baseline compared


def test_baseline_passes_when_nothing_regressed(cli, cases, baseline):
    r = cli("--cases", str(cases), "--baseline", str(baseline))
    assert r.returncode == 0, r.output
    assert "0 newly failing, 0 error growth" in r.stdout and "gate: PASS" in r.stdout


def test_error_growth_beyond_the_factor_fails(cli, cases, write, baseline):
    off = write("off.py", SLIGHTLY_OFF)
    r = cli("--cases", str(cases), "--adapter", str(off), "--baseline", str(baseline))
    assert r.returncode == 1, r.output  # every result still passes (test ratio 0.9)...
    assert "0 of" not in r.stdout and "Error growth beyond 2x" in r.stdout  # ...but grew
    relaxed = cli("--cases", str(cases), "--adapter", str(off), "--baseline", str(baseline),
                  "--growth-factor", "100")  # fmt: skip
    assert relaxed.returncode == 0, relaxed.output


def test_changed_case_is_reported_not_compared(cli, cases, write, baseline):
    cases.write_text(cases.read_text().replace("the unweighted mean", "the plain mean"))
    off = write("off.py", SLIGHTLY_OFF)
    r = cli("--cases", str(cases), "--adapter", str(off), "--baseline", str(baseline),
            "-k", "plain")  # fmt: skip
    assert r.returncode == 0, r.output
    assert "Changed cases (content hash differs, not compared): small/plain_mean" in r.stdout


def test_bad_baseline_or_factor_is_a_usage_error(cli, cases, write):
    bad = write("bad.json", "{not json")
    r = cli("--cases", str(cases), "--baseline", str(bad))
    assert r.returncode == 2 and f"report {bad}: not JSON" in r.stderr
    r = cli("--cases", str(cases), "--baseline", str(bad.parent / "missing.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = cli("--cases", str(cases), "--growth-factor", "0.5", "--baseline", str(bad))
    assert r.returncode == 2


def test_expectations_update_writes_entries_that_make_the_gate_pass(cli, cases, write, tmp_path):
    wrong = write("wrong.py", WRONG_MEAN)
    exp = tmp_path / "exp.yaml"
    r = cli("expectations", "update", str(exp), "--cases", str(cases), "--adapter", str(wrong))
    assert r.returncode == 0, r.output
    assert "0 entries kept, 1 added" in r.stderr
    assert "case: small/weighted_mean" in exp.read_text() and "TODO" in exp.read_text()
    assert (
        cli("--cases", str(cases), "--adapter", str(wrong), "--expectations", str(exp)).returncode
        == 0
    )
    # once fixed, update drops the entry that matches nothing any more
    r = cli("expectations", "update", str(exp), "--cases", str(cases))
    assert "0 entries kept, 0 added, 1 unused removed" in r.stderr


WRONG_TORCH = """
from harness.adapters.torch_ce import TorchAdapter


class RegressedTorch(TorchAdapter):
    '''torch with a regression: the weighted mean divided by N instead of sum w[y_i].'''

    def run(self, inputs):
        out = super().run(inputs)
        if inputs.reduction == "mean" and inputs.weight is not None and not inputs.probability_target:
            keep = inputs.target != inputs.ignore_index
            scale = (inputs.weight[inputs.target[keep]].sum() / keep.sum()).astype(out.loss.dtype)
            out.loss, out.grad = out.loss * scale, out.grad * scale
        return out
"""


def test_ci_job_against_the_committed_baseline(cli, write, tmp_path):
    """The documented CI job passes with torch and fails on a genuine regression."""
    pytest.importorskip("torch")
    from conftest import REPO

    gate = [
        "--expectations", str(REPO / "reports/baselines/torch-expectations.yaml"),
        "--baseline", str(REPO / "reports/baselines/torch.json"),
        "-k", "seed", "--report", str(tmp_path / "out.xml"), "--report", str(tmp_path / "summary.md"),
    ]  # fmt: skip
    r = cli("--adapter", "torch", *gate)
    assert r.returncode == 0, r.output
    assert "0 newly failing, 0 error growth" in r.stdout
    # the committed baseline matches the corpus: every result is compared, none "changed"
    assert " 0 changed, 0 added," in r.stdout, r.stdout  # (-k seed: the rest "removed")
    regressed = write("regressed.py", WRONG_TORCH)
    r = cli("--adapter", str(regressed), *gate)
    assert r.returncode == 1, r.output
    assert "Newly failing vs" in r.stdout and "seed/weighted_mean" in r.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("## lossconf: FAIL") and "Newly failing" in summary


def test_the_committed_baseline_covers_the_whole_current_corpus():
    """docs/regression-tracking.md: the committed baseline compares every result of the
    corpus. Each case x dtype is in it, with the case's current content hash, and nothing
    else: a case added, edited or removed since it was recorded fails here, before a CI job
    silently leaves it out of the regression check (as "added", "changed" or "removed")."""
    from conftest import REPO

    from harness import load_suite
    from harness.gate.baseline import read_report

    path = REPO / "reports/baselines/torch.json"
    recorded = {(r["case_id"], r["dtype"]): r["case_hash"] for r in read_report(path)["results"]}
    current = {(c.id, dtype): c.content_hash for c in load_suite() for dtype in c.dtypes}
    added = sorted(current.keys() - recorded.keys())
    removed = sorted(recorded.keys() - current.keys())
    changed = sorted(k for k in current.keys() & recorded.keys() if current[k] != recorded[k])
    assert not (added or removed or changed), (
        f"{path.name} is stale: {len(added)} added (e.g. {added[:2]}), {len(removed)} removed "
        f"(e.g. {removed[:2]}), {len(changed)} changed (e.g. {changed[:2]}); re-record it "
        "with the command in docs/regression-tracking.md"
    )


def test_committed_cuda_expectations_cover_only_cuda_and_name_real_cases():
    """The CUDA divergence file loads, applies only off the CPU, and every id matches a case."""
    from conftest import REPO

    from harness.cases.loader import load_paths
    from harness.gate.expectations import load

    exp = load(REPO / "reports/baselines/torch-cuda-expectations.yaml")
    ids = [c.id for c in load_paths().cases]
    for entry in exp.entries:
        assert entry.device == "cuda*" and entry.reason
        assert any(entry.matches_id(i) for i in ids), entry.id
