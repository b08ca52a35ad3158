"""``--shard I/N`` and ``python -m harness merge``: N shares of a run, put back together.

The split is checked as a property (every unit in exactly one shard, deterministic,
balanced within one unit's cost); merging is checked against the run it replaces: the
same results in the same order, the same statuses and errors, the same gate verdict.
Shards run in process on a small selection (about 50 results), so each run costs a few
tenths of a second; the runs that many tests read (the whole run, its shards) are made once
in this module (``shared``); one subprocess checks the command's contract (exit 2, one line).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import Completed
from hypothesis import given, settings
from hypothesis import strategies as st
from report_fixtures import CASES, WRONG_MEAN

from harness import builtin_suite
from harness.errors import UsageError
from harness.execution.config import RunConfig
from harness.execution.config import parse_shard as parse
from harness.execution.parallel import call_cost
from harness.execution.shard import owners

WRONG = WRONG_MEAN.replace('name = "numpy"', 'name = "wrong"')
RIGHT = """
from harness.adapters.numpy_ref import NumpyAdapter


class Right(NumpyAdapter):
    '''The numpy adapter under the name of the wrong one: the baseline before the bug.'''

    name = "wrong"
"""

# the wrong adapter's weighted means fail: small/ ones are allowed, seed/ ones block; an entry
# for a passing result makes an unexpected pass, and one behind the first matches nothing
EXPECTATIONS = """
expectations:
  - id: small/weighted_mean
    adapter: wrong
    outcomes: [fail]
    reason: known bug 12
  - id: small/plain_mean
    adapter: wrong
    outcomes: [fail]
    reason: an unexpected pass
  - id: small/weighted
    adapter: wrong
    outcomes: [error]
    reason: shadowed by the first entry
"""

#: what differs between two runs of the same work
VOLATILE = ("seconds", "peak_rss_bytes")


def _write_project(folder: Path) -> Path:
    """Small cases, the wrong and the right adapter, expectations, in ``folder``."""
    for name, text in (("small.yaml", CASES), ("wrong.py", WRONG), ("right.py", RIGHT),
                       ("exp.yaml", EXPECTATIONS)):  # fmt: skip
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project in tmp_path, for a test that changes it or runs what no other test reads."""
    return _write_project(tmp_path)


def selection(project: Path) -> list[str]:
    seed = builtin_suite() / "seed.yaml"
    return ["--cases", str(project / "small.yaml"), "--cases", str(seed)]


def run(cli, project: Path, report: Path, *args: str, adapters=("numpy", "wrong.py")):
    specs = [a for spec in adapters for a in ("--adapter", spec)]
    r = cli(*selection(project), *specs, "-q", "--report", str(report), *args, cwd=project)
    assert r.returncode in (0, 1), r.output
    return r


class Runs:
    """Reports of the shared project that several tests read and none changes, each made
    once in this module, the first time a test asks for it (with that test's ``cli``)."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self._made: dict[str, Completed] = {}

    def report(self, cli, name: str, *args: str, **kwargs) -> tuple[Completed, Path]:
        """``run`` into ``project / name`` once; the run's outcome and its report."""
        path = self.project / name
        if name not in self._made:
            self._made[name] = run(cli, self.project, path, *args, **kwargs)
        return self._made[name], path

    def full(self, cli) -> Path:
        """The unsharded run of both adapters, without a gate file."""
        return self.report(cli, "full.json")[1]

    def shards(self, cli, count: int) -> list[Path]:
        """The ``count`` shards of ``full``'s run."""
        return [
            self.report(cli, f"shard-{index}-of-{count}.json", "--shard", f"{index}/{count}")[1]
            for index in range(1, count + 1)
        ]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The project of ``project``, in a folder of this module's: tests only read it."""
    return Runs(_write_project(tmp_path_factory.mktemp("shared-project")))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def stable(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in results]


def adapters_of(doc: dict) -> list[dict]:
    return stable(doc["adapters"])


# --- the split ------------------------------------------------------------------------------


def fake_case(size: int, dtypes: tuple[str, ...]) -> SimpleNamespace:
    return SimpleNamespace(logits_source=np.zeros(size), dtypes=dtypes)


case_lists = st.lists(
    st.tuples(
        st.integers(0, 300_000),
        st.sampled_from([("float64",), ("float64", "float32"), ("float32", "float16", "bfloat16")]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(case_lists, st.integers(1, 7))
def test_every_unit_is_in_one_shard_and_the_loads_differ_by_at_most_one_unit(spec, count):
    cases = [fake_case(size, dtypes) for size, dtypes in spec]
    split = owners(cases, count)
    assert split == owners(cases, count)  # deterministic
    assert [len(s) for s in split] == [len(c.dtypes) for c in cases]
    loads = dict.fromkeys(range(1, count + 1), 0)
    for case, shard_of_dtype in zip(cases, split, strict=True):
        for shard in shard_of_dtype:
            loads[shard] += call_cost(case)  # KeyError: a shard outside 1..count
    units = sum(len(s) for s in split)
    assert sum(1 for v in loads.values() if v) == min(units, count)  # no idle shard if avoidable
    if units:
        biggest = max(call_cost(c) for c in cases if c.dtypes)
        assert max(loads.values()) - min(loads.values()) <= biggest


def test_a_large_case_does_not_take_its_shard_with_it():
    # consecutive dealing would give shard 1 both large cases; by cost they go one to each
    cases = [fake_case(200_000, ("float64",))] * 2 + [fake_case(10, ("float64",))] * 100
    split = owners(cases, 2)
    assert split[0] != split[1]
    ones = sum(s == [1] for s in split[2:])
    assert 40 <= ones <= 60, ones  # the small ones shared about evenly


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "2", "a/b", "1/2/3", "-1/2", ""])
def test_a_shard_outside_1_to_n_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--shard"):
        parse(text)


def test_the_config_refuses_a_shard_outside_1_to_n():
    with pytest.raises(UsageError, match=r"--shard 3/2"):
        RunConfig(shard=(3, 2))
    assert RunConfig(shard=(2, 2)).shard == (2, 2)


@pytest.mark.parametrize("text", ["0/2", "3/2", "x"])
def test_the_command_line_refuses_a_bad_shard(cli, project, text):
    r = cli(*selection(project), "--shard", text, cwd=project)
    assert r.returncode == 2
    assert "--shard" in r.stderr and "1 <= I <= N" in r.stderr, r.stderr


# --- shards and their reports ---------------------------------------------------------------


def test_shards_run_disjoint_shares_and_say_which(cli, shared):
    full = shared.full(cli)
    paths = shared.shards(cli, 2)
    docs = [load(p) for p in paths]
    keys = [{(r["case_id"], r["adapter"], r["dtype"]) for r in d["results"]} for d in docs]
    assert not keys[0] & keys[1]
    assert keys[0] | keys[1] == {
        (r["case_id"], r["adapter"], r["dtype"]) for r in load(full)["results"]
    }
    for index, doc in enumerate(docs, 1):
        shard = doc["shard"]
        assert (shard["index"], shard["count"]) == (index, 2)
        assert shard["selection"]["results"] == len(load(full)["results"])
        assert shard["selection"]["adapters"] == ["numpy", "wrong"]
        assert len(shard["positions"]) == len(doc["results"])
        # the suite's identity is the whole selection's, the same in every shard
        assert doc["suite"] == load(full)["suite"]
    assert docs[0]["shard"]["selection"]["digest"] == docs[1]["shard"]["selection"]["digest"]
    assert "shard" not in load(full)  # an unsharded report is unchanged


def test_list_shows_the_shards_share(cli, project):
    listed = []
    for index in (1, 2):
        r = cli(*selection(project), "--shard", f"{index}/2", "--list", cwd=project)
        assert r.returncode == 0, r.output
        listed.append({line.split()[0] for line in r.stdout.splitlines() if "/" in line[:20]})
    everything = cli(*selection(project), "--list", cwd=project)
    every = {line.split()[0] for line in everything.stdout.splitlines() if "/" in line[:20]}
    assert listed[0] and listed[1] and listed[0] | listed[1] == every


def test_the_shipped_schema_describes_the_shard_and_merged_sections(cli, shared, two, tmp_path):
    import jsonschema
    from report_validation import schema

    # jsonschema.validate, with the schema checked once instead of on every call
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    validator = cls(schema())

    def validate(doc: dict) -> None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        if error is not None:
            raise error

    merged = tmp_path / "merged.json"
    assert cli("merge", *map(str, two), "--report", str(merged), cwd=shared.project).returncode == 1
    for doc in (load(two[0]), load(merged)):
        validate(doc)
    bad = load(two[0])
    bad["shard"]["positions"] = ["0"]
    with pytest.raises(jsonschema.ValidationError, match=r"'0' is not of type 'integer'"):
        validate(bad)
    bad = load(merged)
    bad["merged_from"][0]["shard"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)


# --- merging gives the unsharded run --------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3])
def test_merged_shards_give_the_unsharded_results_and_verdict(cli, shared, tmp_path, count):
    project = shared.project
    _, base = shared.report(cli, "base.json", adapters=("numpy", "right.py"))
    gate = ["--expectations", str(project / "exp.yaml"), "--baseline", str(base)]
    whole, full = shared.report(cli, "full-gated.json", *gate)
    assert whole.returncode == 1  # blocking failures and a regression: a verdict worth comparing
    paths = shared.shards(cli, count)
    merged = tmp_path / "merged.json"
    md, xml = tmp_path / "merged.md", tmp_path / "merged.xml"
    r = cli("merge", *map(str, reversed(paths)), *gate,
            "--report", str(merged), "--report", str(md), "--report", str(xml), cwd=project)  # fmt: skip
    assert r.returncode == whole.returncode == 1, r.output
    assert "gate: FAIL" in r.stdout and "regression vs baseline" in r.stdout
    got, want = load(merged), load(full)
    assert stable(got["results"]) == stable(want["results"])  # order, statuses, errors, repro
    assert got["gate"] == want["gate"]
    assert got["gate"]["expected"] == 2 and got["gate"]["unexpected_passes"]
    assert got["gate"]["unused_expectations"] and got["gate"]["baseline"]["regressed"]
    for key in ("summary", "suite", "complete", "load_errors", "harness_version"):
        assert got[key] == want[key], key
    assert adapters_of(got) == adapters_of(want)
    assert [m["shard"] for m in got["merged_from"]] == [f"{i}/{count}" for i in range(1, count + 1)]
    assert "merged_from" not in want and "shard" not in got
    # the other formats render the merged document
    assert "do not conform" in md.read_text() and "<testsuite" in xml.read_text()


def test_merge_without_a_gate_file_judges_conformance_alone(cli, shared, tmp_path):
    whole, full = shared.report(cli, "full.json")
    merged = tmp_path / "merged.json"
    paths = shared.shards(cli, 2)
    r = cli("merge", *map(str, paths), "--report", str(merged), cwd=shared.project)
    assert r.returncode == whole.returncode == 1, r.output
    got, want = load(merged), load(full)
    assert stable(got["results"]) == stable(want["results"])
    assert got["gate"] == want["gate"]


def test_merge_rejudges_with_its_own_expectations(cli, shared, tmp_path):
    # shards run without --expectations; merge applies them: the verdict of one run with them
    project = shared.project
    exp = tmp_path / "all-wrong.yaml"
    exp.write_text(
        "expectations:\n  - id: '*weighted*'\n    adapter: wrong\n    outcomes: [fail]\n"
        "    reason: known bug 12\n"
    )
    full = tmp_path / "full.json"
    assert run(cli, project, full, "--expectations", str(exp)).returncode == 0
    paths = shared.shards(cli, 2)
    r = cli("merge", *map(str, paths), "--expectations", str(exp), cwd=project)
    assert r.returncode == 0, r.output
    assert cli("merge", *map(str, paths), cwd=project).returncode == 1


def test_more_shards_than_work_leaves_some_empty_and_still_merges(cli, project):
    full = project / "full.json"
    args = ("--cases", str(project / "small.yaml"), "-q")
    assert cli(*args, "--report", str(full), cwd=project).returncode == 0
    paths = []
    for index in range(1, 9):  # 6 (case, dtype) units in 8 shards
        path = project / f"s{index}.json"
        r = cli(*args, "--shard", f"{index}/8", "--report", str(path), cwd=project)
        assert r.returncode == 0, r.output
        paths.append(path)
    assert sum(not load(p)["results"] for p in paths) == 2
    merged = project / "merged.json"
    r = cli("merge", *map(str, paths), "--report", str(merged), cwd=project)
    assert r.returncode == 0, r.output
    assert stable(load(merged)["results"]) == stable(load(full)["results"])


def test_invalid_case_files_skipped_by_every_shard_are_reported_once(cli, project, write):
    bad = write("bad.yaml", CASES.replace("reduction: sum", "reduction: avg"))
    args = ("--cases", str(project / "small.yaml"), "--cases", str(bad), "--keep-going", "-q")
    full = project / "full.json"
    assert cli(*args, "--report", str(full), cwd=project).returncode == 2
    paths = [project / "k1.json", project / "k2.json"]
    for index, path in enumerate(paths, 1):
        r = cli(*args, "--shard", f"{index}/2", "--report", str(path), cwd=project)
        assert r.returncode == 2, r.output
    merged = project / "merged.json"
    r = cli("merge", *map(str, paths), "--report", str(merged), cwd=project)
    assert r.returncode == 2 and "invalid case file" in r.stderr, r.output
    got, want = load(merged), load(full)
    assert got["load_errors"] == want["load_errors"] and len(got["load_errors"]) == 1
    assert stable(got["results"]) == stable(want["results"])
    assert got["gate"]["exit_code"] == 2


# --- what merge refuses ---------------------------------------------------------------------


@pytest.fixture
def two(cli, shared) -> list[Path]:
    return shared.shards(cli, 2)


def refused(cli, project, *paths: Path) -> str:
    r = cli("merge", *map(str, paths), cwd=project)
    assert r.returncode == 2, r.output
    assert "Traceback" not in r.output
    return r.stderr


def edited(path: Path, out: Path, change) -> Path:
    doc = load(path)
    change(doc)
    out.write_text(json.dumps(doc))
    return out


def test_a_missing_shard_is_refused(cli, shared, two):
    err = refused(cli, shared.project, two[0])
    assert "missing shard 2/2" in err


def test_a_shard_given_twice_is_refused(cli, shared, two):
    err = refused(cli, shared.project, two[0], two[1], two[0])
    assert "shard 1/2 given twice" in err and str(two[0]) in err


def test_shards_of_different_counts_are_refused(cli, shared, two):
    third = shared.shards(cli, 3)[2]
    err = refused(cli, shared.project, *two, third)
    assert "shard 3/3" in err and "1/2" in err


def test_shards_of_different_suites_are_refused(cli, project, two):
    small = project / "small.yaml"
    small.write_text(CASES.replace("[[0.25, -1.0, 2.0], [1.5, 0.0, -0.5]]", "[[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]", 1))  # fmt: skip
    other = project / "other-2.json"
    run(cli, project, other, "--shard", "2/2")
    err = refused(cli, project, two[0], other)
    assert "different suites" in err and "small/plain_mean" in err


def test_shards_of_different_selections_are_refused(cli, shared, two, tmp_path):
    other = tmp_path / "other-2.json"
    run(cli, shared.project, other, "--shard", "2/2", "--dtype", "float64")
    err = refused(cli, shared.project, two[0], other)
    assert "different selections" in err


def test_shards_of_different_harness_versions_are_refused(cli, shared, two, tmp_path):
    old = edited(two[1], tmp_path / "old.json", lambda d: d.update(harness_version="0.0.1"))
    err = refused(cli, shared.project, two[0], old)
    assert "lossconf versions" in err and "0.0.1" in err


def test_shards_of_different_framework_versions_are_refused(cli, shared, two, tmp_path):
    def other_numpy(doc: dict) -> None:
        doc["adapters"][0]["wraps"] = "numpy 0.1"

    err = refused(cli, shared.project, two[0], edited(two[1], tmp_path / "other.json", other_numpy))
    assert "numpy 0.1" in err and "adapter 'numpy'" in err


def test_an_unsharded_or_incomplete_report_is_refused(cli, shared, two, tmp_path):
    full = shared.full(cli)
    assert "not a shard's report" in refused(cli, shared.project, full, two[1])
    cut = edited(two[1], tmp_path / "cut.json", lambda d: d.update(complete=False))
    assert "incomplete" in refused(cli, shared.project, two[0], cut)


def test_overlapping_shards_are_refused(cli, shared, two, tmp_path):
    def steal(doc: dict) -> None:  # shard 2 claims one of shard 1's results as well
        first = load(two[0])
        doc["results"].append(first["results"][0])
        doc["shard"]["positions"].append(first["shard"]["positions"][0])

    err = refused(cli, shared.project, two[0], edited(two[1], tmp_path / "greedy.json", steal))
    assert "overlap" in err


def test_merge_refuses_its_contract_in_a_process(cli_process, shared, two):
    r = cli_process("merge", str(two[1]), cwd=shared.project)
    assert r.returncode == 2
    assert r.stderr.startswith("lossconf: error: ") and "missing shard 1/2" in r.stderr
    assert "Traceback" not in r.stderr


# --- the pytest plugin ----------------------------------------------------------------------


def test_the_pytest_plugin_collects_the_shards_share(pytester, imported_before_any_inner_session):
    (pytester.path / "small.yaml").write_text(CASES)
    ids = []
    for shard in ("1/2", "2/2", None):
        extra = ["--lossconf-shard", shard] if shard else []
        r = pytester.runpytest("--lossconf-adapter", "numpy", "--lossconf-cases", "small.yaml",
                               *extra, "--collect-only", "-q", "-p", "no:cacheprovider")  # fmt: skip
        assert r.ret == 0, r.stdout.str() + r.stderr.str()
        ids.append([line for line in r.stdout.lines if line.startswith("lossconf::")])
    first, second, every = ids
    assert first and second and not set(first) & set(second)
    assert sorted(first + second) == sorted(every)
