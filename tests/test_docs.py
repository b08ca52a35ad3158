"""README.md and docs/: figures that cannot drift, links that resolve, a README that stays short.

Every figure from a run sits between ``<!-- figure:NAME -->`` markers and must equal the
rendering of its data file in docs/figures/ (tools/refresh_docs.py writes both). The cheap
sources are recomputed here and compared with their data files; the costly ones (runs of
the whole suite, benchmarks, fuzzing) are checked for agreement with the live corpus size.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
# bytes: 15,000 of prose and figures, and room for the scoreboard's table (issue 15: the
# README shows it), about 150 bytes per framework and dialect row
README_LIMIT = 15_000
TOPIC_PAGES = [
    "semantics", "tolerances", "reports-and-ci", "regression-tracking", "robustness",
    "fuzzing", "performance", "corpus", "architecture", "scoreboard",
]  # fmt: skip


def _load_refresh():
    spec = importlib.util.spec_from_file_location(
        "refresh_docs", REPO / "tools" / "refresh_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["refresh_docs"] = module
    spec.loader.exec_module(module)
    return module


refresh = _load_refresh()
PAGES = refresh.PAGES


def _rel(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes; move detail to docs/ (limit {README_LIMIT})"
    )


def test_every_topic_has_a_page_linked_from_the_readme():
    readme = README.read_text(encoding="utf-8")
    for name in TOPIC_PAGES:
        assert (REPO / "docs" / f"{name}.md").is_file(), f"docs/{name}.md is missing"
    linked = set(re.findall(r"\]\(docs/([\w-]+)\.md", readme))
    pages = {p.stem for p in (REPO / "docs").glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link to: {sorted(pages - linked)}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_figure_blocks_equal_their_data_files(page):
    text = page.read_text(encoding="utf-8")
    opened = re.findall(r"<!-- figure:([\w-]+) -->", text)
    blocks = refresh.blocks(text)
    assert sorted(opened) == sorted(name for name, _ in blocks), f"{_rel(page)}: unclosed marker"
    for name, body in blocks:
        assert name in refresh.FIGURES, f"{_rel(page)}: unknown figure {name!r}"
        want = refresh.rendering(refresh.FIGURES[name])
        assert body == want, (
            f"{_rel(page)}: figure {name!r} differs from docs/figures/"
            f"{refresh.FIGURES[name].source}.json; run python tools/refresh_docs.py --render "
            "(never edit a figure by hand)"
        )


def test_every_figure_and_data_file_is_accounted_for():
    used = {name for page in PAGES for name, _ in refresh.blocks(page.read_text(encoding="utf-8"))}
    assert set(refresh.FIGURES) == used, (
        f"figures defined but shown nowhere: {set(refresh.FIGURES) - used}"
    )
    files = {p.stem for p in refresh.FIGURES_DIR.glob("*.json")}
    assert files == set(refresh.SOURCES), (
        f"data files without a source: {files - set(refresh.SOURCES)}; "
        f"sources without a data file: {set(refresh.SOURCES) - files}"
    )
    for name, source in refresh.SOURCES.items():
        data = refresh.load(name)
        assert data["command"] == source.command, f"{name}.json: recorded by another command"
        assert {"commit", "date", "by"} <= set(data["recorded"]), f"{name}.json: no provenance"


@pytest.mark.parametrize(
    "name", [n for n, s in refresh.SOURCES.items() if s.cost == "live"]
)  # fmt: skip
def test_live_figures_match_a_fresh_computation(name, fresh):
    assert fresh(name) == refresh.load(name)["output"], (
        f"docs/figures/{name}.json is stale: python tools/refresh_docs.py {name}"
    )


@pytest.fixture(scope="module")
def fresh():
    """A live figure's output, computed once in this module (suite-size serves two tests)."""
    return functools.cache(_output)


def _output(name: str) -> str:
    if name != "scoreboard":
        return refresh.SOURCES[name].output()
    # the figure renders the committed runs, which tests/test_scoreboard.py reads as well:
    # the same ``load_runs`` of the same folder, read once in a process
    from test_scoreboard import COMMITTED, committed_runs

    from harness.gate import scoreboard

    load_runs, runs = scoreboard.load_runs, committed_runs()

    def once(paths):
        paths = list(paths)
        return list(runs) if paths == [COMMITTED] else load_runs(paths)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(scoreboard, "load_runs", once)
        return refresh.SOURCES[name].output()


@pytest.fixture(scope="module")
def suite_size(fresh):
    return json.loads(fresh("suite-size"))


def _stored(name: str) -> str:
    return refresh.load(name)["output"]


def test_suite_runs_agree_with_the_corpus(suite_size):
    runs = suite_size["runs"]
    assert re.search(rf"^{runs} results: all conform$", _stored("suite-numpy"), re.M), (
        f"suite-numpy.json is not a run of the current corpus ({runs} results): "
        "python tools/refresh_docs.py suite-numpy"
    )
    for name in ("suite-three-adapters", "builtin-divergences"):
        per_adapter = _column(_stored(name).split("\n\n")[0], "results")
        assert per_adapter and set(per_adapter) == {str(runs)}, (
            f"{name}.json is not a run of the current corpus ({runs} results per adapter): "
            f"python tools/refresh_docs.py {name}"
        )


def _column(table: str, name: str) -> list[str]:
    """The cells of column ``name`` in a plain tabulate table (header, dashes, rows)."""
    header, dashes, *rows = table.splitlines()
    for m in re.finditer(r"-+", dashes):
        if header[m.start() : m.end()].strip() == name:
            return [row[m.start() : m.end()].strip() for row in rows]
    raise AssertionError(f"no column {name!r} in:\n{table}")


def test_mutation_score_agrees_with_the_corpus_and_the_mutants(suite_size):
    last = _stored("mutation-score").splitlines()[-1]
    mutants = _stored("mutant-count")
    assert last == (
        f"mutation score: {mutants}/{mutants} mutants killed by {suite_size['cases']} cases"
    ), f"mutation-score.json is stale ({last!r}): python tools/refresh_docs.py mutation-score"


def test_verdict_figures_agree_with_the_corpus(suite_size):
    rows = re.findall(r"^\| (\w+)\s+\| (\w+)\s+\|\s+(\d+) \|", _stored("verdict-ratios"), re.M)
    assert rows
    for adapter, dtype, runs in rows:
        assert int(runs) == suite_size["valid_runs_by_dtype"][dtype], (
            f"verdict-ratios.json: {adapter} {dtype} ran {runs} cases, the corpus has "
            f"{suite_size['valid_runs_by_dtype'][dtype]}: python tools/refresh_docs.py verdict-ratios"
        )


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{_rel(page)}: link {target!r} points to a missing file"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{_rel(page)}: link {target!r}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_no_page_cites_a_file_outside_the_repository(page):
    assert "SEMANTICS.md" not in page.read_text(encoding="utf-8"), (
        f"{_rel(page)} cites SEMANTICS.md, which is not in the repository: cite docs/semantics.md"
    )


def test_a_re_run_keeps_the_figure_s_hand_written_note(tmp_path, monkeypatch):
    # what a figure's note says (its cost, what it was measured with) outlives a re-run; a
    # note the tool wrote about a command that stopped early does not
    monkeypatch.setattr(refresh, "FIGURES_DIR", tmp_path)
    source = refresh.Source("fig", "echo 1", "run", produce=lambda: "| a |")
    path = tmp_path / "fig.json"
    path.write_text(json.dumps({"recorded": {"note": "Not re-run by default: 5 minutes."}}))
    assert refresh.produce(source)["recorded"]["note"] == "Not re-run by default: 5 minutes."
    assert json.loads(path.read_text())["recorded"]["note"] == "Not re-run by default: 5 minutes."
    path.write_text(json.dumps({"recorded": {"note": f"{refresh.STOPPED} (exit 1: x) ..."}}))
    assert "note" not in refresh.produce(source)["recorded"]


def test_each_source_s_figures_are_in_the_pages_before_the_next_source_runs(tmp_path, monkeypatch):
    """A later source that runs the test suite (bench-tests) finds every block equal to its
    data file: the pages are rewritten after each source, not only at the end."""
    monkeypatch.setattr(refresh, "FIGURES_DIR", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("<!-- figure:a -->\nold\n<!-- /figure:a -->\n", encoding="utf-8")
    monkeypatch.setattr(refresh, "PAGES", [page])
    monkeypatch.setattr(refresh, "REPO", tmp_path)
    monkeypatch.setattr(refresh, "FIGURES", {"a": refresh.Figure("a", "a", refresh.measured)})
    seen = []

    def second() -> str:
        seen.append(refresh.stale_pages())
        return "| b |"

    monkeypatch.setattr(refresh, "SOURCES", {
        "a": refresh.Source("a", "echo a", "run", produce=lambda: "| a |"),
        "b": refresh.Source("b", "echo b", "run", produce=second),
    })  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(refresh.os, "chdir", lambda _: None)
    assert refresh.main(["a", "b"]) == 0
    assert seen == [[]] and "| a |" in page.read_text(encoding="utf-8")
