"""Choosing cases (issue 14, item 2): -k expressions, exact ids with --case, and --list as a
table that fits 100 columns or as JSON. Logic in process; the plugin through pytester."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_fixtures import CASES

from harness.cases.loader import load_paths
from harness.cases.select import select
from harness.errors import UsageError

pytest_plugins = ("pytester",)

REPO = Path(__file__).resolve().parent.parent
HALF = str(REPO / "cases" / "half_precision.yaml")
SEED = str(REPO / "cases" / "seed.yaml")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> list:
    path = tmp_path_factory.mktemp("sel") / "small.yaml"
    path.write_text(CASES)
    return load_paths([path]).cases


def ids(cases: list) -> list[str]:
    return [c.id for c in cases]


# --- -k: pytest-style expressions; the old forms keep working ----------------------------------


@pytest.mark.parametrize(
    ("keywords", "want"),
    [
        (["mean"], ["plain_mean", "weighted_mean"]),  # a plain substring of the id
        (["basic"], ["plain_mean"]),  # ... or of a tag
        (["MEAN"], ["plain_mean", "weighted_mean"]),  # case-insensitive
        (["not mean"], ["kdim_sum", "label_out_of_range"]),
        (["!mean"], ["kdim_sum", "label_out_of_range"]),
        (["mean", "not weight"], ["plain_mean"]),  # repeated -k: all must hold
        (["mean and not weight"], ["plain_mean"]),
        (["sum or range"], ["kdim_sum", "label_out_of_range"]),
        (["weights or basic and not plain"], ["weighted_mean"]),  # and binds tighter than or
        (["(weights or basic) and not plain"], ["weighted_mean"]),
        (["not (mean or sum)"], ["label_out_of_range"]),
        (["not not sum"], ["kdim_sum"]),
        (["small/kdim_sum or small/plain_mean"], ["plain_mean", "kdim_sum"]),  # suite order
        (["  mean  "], ["plain_mean", "weighted_mean"]),
        ([""], ["plain_mean", "weighted_mean", "kdim_sum", "label_out_of_range"]),
    ],
)
def test_keyword_expressions(small, keywords, want):
    assert ids(select(small, keywords, None)) == [f"small/{n}" for n in want]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("mean and", "-k 'mean and': expected a word or '(' at the end"),
        ("(mean or sum", "-k '(mean or sum': expected ')' at the end"),
        ("mean)", "-k 'mean)': unexpected ')' at column 5"),
        ("mean sum", "-k 'mean sum': expected 'and' or 'or' before 'sum' at column 6"),
        ("(mean sum)", "-k '(mean sum)': expected 'and', 'or' or ')' before 'sum' at column 7"),
        ("or mean", "-k 'or mean': expected a word or '(' before 'or' at column 1"),
    ],
)
def test_a_bad_expression_is_a_usage_error_that_points_at_the_place(small, expression, message):
    with pytest.raises(UsageError) as info:
        select(small, [expression], None)
    assert str(info.value) == message


WORDS = ["mean", "sum", "weight", "basic", "range", "small/plain", "kdim"]


def _expressions(depth: int = 3) -> st.SearchStrategy:
    leaf = st.sampled_from(WORDS).map(lambda w: (w, w))

    def grow(inner: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(
            inner.map(lambda e: (f"not {e[0]}", ("not", e[1]))),
            inner.map(lambda e: (f"!{e[0]}", ("not", e[1]))),
            st.tuples(inner, inner).map(lambda p: (f"({p[0][0]} and {p[1][0]})", ("and", p[0][1], p[1][1]))),
            st.tuples(inner, inner).map(lambda p: (f"({p[0][0]} or {p[1][0]})", ("or", p[0][1], p[1][1]))),
        )  # fmt: skip

    return st.recursive(leaf, grow, max_leaves=6)


def _truth(tree: object, case) -> bool:
    if isinstance(tree, str):
        return any(tree in t.lower() for t in (case.id, *case.tags))
    op, *args = tree  # type: ignore[misc]
    if op == "not":
        return not _truth(args[0], case)
    values = [_truth(a, case) for a in args]
    return all(values) if op == "and" else any(values)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_expressions())
def test_an_expression_selects_what_python_would(small, expression):
    text, tree = expression
    assert ids(select(small, [text], None)) == [c.id for c in small if _truth(tree, c)]


# --- --case: exact ids ---------------------------------------------------------------------------


def test_case_ids_select_exactly_those_cases(small):
    assert ids(select(small, None, None, ["small/kdim_sum"])) == ["small/kdim_sum"]
    both = select(small, None, None, ["small/kdim_sum", "small/plain_mean"])
    assert ids(both) == ["small/plain_mean", "small/kdim_sum"]  # suite order
    assert ids(select(small, ["not sum"], None, ["small/kdim_sum", "small/plain_mean"])) == [
        "small/plain_mean"
    ]  # -k and --case both hold


def test_an_unknown_case_id_says_which_ids_are_close(small):
    with pytest.raises(UsageError) as info:
        select(small, None, None, ["small/plain_mean", "small/weighted"])
    assert str(info.value) == (
        "--case 'small/weighted': no case has this id (did you mean 'small/weighted_mean'?)"
    )


def test_one_case_where_k_finds_two(cli):
    # the example: -k selects two cases, --case exactly one
    two = cli("--list", "--cases", HALF, "-k", "half_precision/mean_over_70000_targets")
    one = cli("--list", "--cases", HALF, "--case", "half_precision/mean_over_70000_targets")
    assert two.returncode == one.returncode == 0, two.output + one.output
    assert two.stdout.splitlines()[-1] == "2 cases"
    assert one.stdout.splitlines()[-1] == "1 cases"
    assert "half_precision/mean_over_70000_targets " in one.stdout


def test_the_documented_expression_runs(cli):
    r = cli("-q", "--cases", HALF, "-k", "half_precision and not mean_over_70000", "--dtype",
            "float16", "-k", "confident_target_mean or confident_target_sum")  # fmt: skip
    assert r.returncode == 0, r.output
    assert r.stdout.strip().startswith("2 results")


def test_bad_k_and_unknown_case_exit_2_in_one_line(cli):
    bad = cli("--cases", SEED, "-k", "(seed")
    assert (
        bad.returncode == 2
        and bad.stderr == "lossconf: error: -k '(seed': expected ')' at the end\n"
    )
    unknown = cli("--cases", SEED, "--case", "seed/nope")
    assert unknown.returncode == 2 and "--case 'seed/nope': no case has this id" in unknown.stderr


# --- --list: 100 columns, or JSON ---------------------------------------------------------------


def test_list_table_fits_100_columns_and_keeps_each_id_whole(cli):
    r = cli("--list")
    assert r.returncode == 0, r.output
    lines = r.stdout.splitlines()
    cases = load_paths().cases
    ids = {c.id for c in cases}
    wide = [ln for ln in lines if len(ln) > 100 and ln not in ids]  # an id is never cut
    assert wide == []
    listed = {ln.split()[0] for ln in lines if ln[:1].strip() and "/" in ln.split()[0]}
    assert listed == ids  # every id, whole, at the start of a line
    assert lines[-1].startswith(f"{len(cases)} cases")


def test_list_verbose_shows_tags_and_whole_texts(cli):
    r = cli("--list", "--cases", SEED, "-v")
    assert r.returncode == 0, r.output
    cases = load_paths([Path(SEED)]).cases
    for case in cases:
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(case.id + " "))
        assert line.rstrip().endswith(case.why) and " ".join(case.tags) in line


def test_list_as_json(cli):
    r = cli("--list", "--format", "json", "--cases", SEED, "--case", "seed/article_1x5")
    assert r.returncode == 0, r.output
    doc = json.loads(r.stdout)
    (case,) = [c for c in load_paths([Path(SEED)]).cases if c.id == "seed/article_1x5"]
    assert doc["cases"] == [
        {
            "id": case.id,
            "name": case.name,
            "file": str(case.file),
            "line": case.line,
            "dtypes": list(case.dtypes),
            "tags": list(case.tags),
            "why": case.why,
        }
    ]
    assert doc["count"] == 1
    numpy = next(a for a in doc["adapters"] if a["name"] == "numpy")
    assert numpy == {"name": "numpy", "from": "harness.adapters.numpy_ref:NumpyAdapter",
                     "available": True, "missing": [], "install": None}  # fmt: skip


def test_format_without_list_is_a_usage_error(cli):
    r = cli("--format", "json", "--cases", SEED)
    assert r.returncode == 2
    assert r.stderr == "lossconf: error: --format applies to --list: add --list\n"


# --- the pytest plugin shares --case ------------------------------------------------------------


@pytest.fixture(scope="module", autouse=False)
def imported_before_any_inner_session():
    """As in test_pytest_plugin.py: C extensions do not survive pytester's re-import."""
    import jsonschema  # noqa: F401
    import mpmath  # noqa: F401

    import harness.execution.runner
    import harness.execution.session
    import harness.gate.expectations
    import harness.reports.repro  # noqa: F401


def test_plugin_takes_case_ids(pytester, imported_before_any_inner_session):
    (pytester.path / "small.yaml").write_text(CASES)
    r = pytester.runpytest("--lossconf-adapter", "numpy", "--lossconf-cases", "small.yaml",
                           "--lossconf-case", "small/kdim_sum", "--lossconf-k", "sum or mean",
                           "--collect-only", "-q")  # fmt: skip
    assert r.ret == 0, r.stdout.str() + r.stderr.str()
    assert [ln for ln in r.stdout.lines if ln.startswith("lossconf::")] == [
        "lossconf::small/kdim_sum[numpy-float64]"
    ]
