"""Whatever ``validate`` accepts, a run can load and prepare; whatever it rejects names the
file, the case and the field; a bug of ours exits 2, never 1.

The mutation fuzzer is ``tools/fuzz_loader.py`` (its long run's figure is in
docs/robustness.md); here a seeded slice of it runs, plus the recipe checks one by one.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import REPO

from harness.cases.generate import COMMON_KEYS, PARAMETERS, build
from harness.cases.loader import load_file, schema
from harness.cases.model import Case
from harness.cli.main import main
from harness.errors import CaseFileError

sys.path.insert(0, str(REPO / "tools"))
import fuzz_loader

ISSUE_FILE = """\
cases:
- name: target_negative_other_than_custom_ignore
  why: with ignore_index=-1, a target -2 is still out of range
  logits:
  - [0.5, -1.25, 2.0]
  - [1.5, 0.25, -0.75]
  target: {generate: labels, shape: [2], seed: 1, classes: 0}
  ignore_index: -1
  expect_error: index_out_of_range
"""


@pytest.fixture
def case_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")

    def write(text: str, name: str = "f.yaml"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_the_issue_file_exits_2_from_validate_and_from_a_run(case_file, capsys):
    path = case_file(ISSUE_FILE)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}:7: case 'target_negative_other_than_custom_ignore': field 'target.classes'" in err
    )
    assert main(["--cases", str(path), "-q"]) == 2
    assert "field 'target.classes'" in capsys.readouterr().err


RECIPE = "{generate: %s, shape: %s, seed: 1%s}"


@pytest.mark.parametrize(
    ("kind", "shape", "extra", "field", "words"),
    [
        ("labels", "[2]", ", classes: 0", "target.classes", "expected a number >= 1"),
        ("labels", "[2]", "", "target.classes", "needs an integer 'classes' >= 1"),
        ("labels", "[2]", ", classes: 99999999999999999999999", "target.classes", ">= 1"),
        ("labels", "[2]", ", classes: 3, ignore_fraction: 1.5", "target.ignore_fraction", "<= 1"),
        (
            "labels",
            "[2]",
            ", classes: 3, ignore_fraction: .nan",
            "target.ignore_fraction",
            "finite",
        ),
        ("labels", "[2]", ", classes: 3, ignore_index: 1.5", "target.ignore_index", "integer"),
        ("labels", "[2]", ", classes: 3, std: 2", "target.std", "does not apply to a 'labels'"),
        ("labels", "[-1]", ", classes: 3", "target.shape.0", ">= 0"),
        ("labels", "[2]", ", classes: 3, colour: 1", "target.colour", "unknown field 'colour'"),
    ],
)
def test_recipe_parameters_are_checked_like_literal_fields(
    case_file, kind, shape, extra, field, words
):
    text = (
        "cases:\n- name: c\n  why: w\n  logits: [[0.5, 1.0, 2.0], [1.0, 0.0, 0.0]]\n"
        f"  target: {RECIPE % (kind, shape, extra)}\n  expected: oracle\n"
    )
    with pytest.raises(CaseFileError) as e:
        load_file(case_file(text))
    assert e.value.field == field and e.value.case == "c" and e.value.line == 5, str(e.value)
    assert words in str(e.value)


@pytest.mark.parametrize(
    ("target", "ignore", "field", "words"),
    [
        # found by tools/fuzz_loader.py: a deleted 'ignore_index: -5' line left the recipe's
        # ignored targets at -5 while the case ignores -100, and the oracle indexed class -5
        ("{generate: labels, shape: [2], seed: 1, classes: 3, ignore_fraction: 0.5, "
         "ignore_index: -5}", "", "target.ignore_index", "give both the same value"),
        ("{generate: labels, shape: [2], seed: 1, classes: 4}", "", "target.classes",
         "4 classes, but the logits have C = 3"),
        ("{generate: full, shape: [2], value: 3}", "", "target.value", "outside [0, 3)"),
        ("{generate: full, shape: [2], value: -1}", "\n  ignore_index: -2", "target.value",
         "not ignore_index=-2"),
    ],
)  # fmt: skip
def test_label_recipes_make_only_valid_indices(case_file, target, ignore, field, words):
    text = (
        "cases:\n- name: c\n  why: w\n  logits: [[0.5, 1.0, 2.0], [1.0, 0.0, 0.0]]\n"
        f"  target: {target}{ignore}\n  expected: oracle\n"
    )
    with pytest.raises(CaseFileError) as e:
        load_file(case_file(text))
    assert e.value.field == field and words in str(e.value), str(e.value)
    fine = target.replace("ignore_index: -5", "ignore_index: -100").replace(
        "classes: 4", "classes: 3"
    )
    fine = fine.replace("value: 3", "value: 2").replace("value: -1", "value: -2")
    assert load_file(case_file(f"cases:\n- name: c\n  why: w\n  logits: [[0.5, 1.0, 2.0], "
                               f"[1.0, 0.0, 0.0]]\n  target: {fine}{ignore}\n  expected: oracle\n",
                               "fine.yaml"))  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "field", "words"),
    [
        ("normal, shape: [2, 3], std: -1", "logits.std", ">= 0"),
        ("normal, shape: [2, 3], std: .inf", "logits.std", "finite"),
        ("normal, shape: [2, 3], mean: .nan", "logits.mean", "finite"),
        ("normal, shape: [2, 3], seed: -5", "logits.seed", ">= 0"),
        ("normal, shape: [2, 3], seed: 1.5", "logits.seed", "expected"),
        ("uniform, shape: [2, 3], low: 1, high: 0", "logits.low", "below high"),
        ("uniform, shape: [2, 3], low: 1", "logits.low", "below high=1.0"),
        ("full, shape: [2, 3], value: 99999999999999999999999", "logits.value", "int64"),
        ("probabilities, shape: [], std: 1", "logits.shape", "class axis"),
        ("nope, shape: [2]", "logits.generate", "expected one of"),
    ],
)
def test_bad_logits_recipes_name_the_parameter(case_file, recipe, field, words):
    text = (
        "cases:\n- name: c\n  why: w\n"
        f"  logits: {{generate: {recipe}}}\n  target: [0, 1]\n  expected: oracle\n"
    )
    with pytest.raises(CaseFileError) as e:
        load_file(case_file(text))
    assert e.value.field == field, str(e.value)
    assert words in str(e.value), str(e.value)


def test_the_schema_and_the_recipe_table_list_the_same_parameters():
    props = set(schema()["$defs"]["recipe"]["properties"])
    assert props == set(COMMON_KEYS) | {p for ps in PARAMETERS.values() for p in ps}
    assert schema()["$defs"]["recipe"]["properties"]["generate"]["enum"] == list(PARAMETERS)


@pytest.mark.parametrize("shape", [[0, 3], [2, 0], [3], [2, 3, 0, 1]])
def test_probability_recipes_of_any_accepted_shape_can_be_made(shape):
    p = build({"generate": "probabilities", "shape": shape, "seed": 1})
    assert p.shape == tuple(shape) and np.all(np.isfinite(p))
    if p.size:
        axis = 1 if len(shape) >= 2 else 0
        np.testing.assert_allclose(p.sum(axis=axis), 1.0)


def test_an_unexpected_error_while_loading_is_a_bug_of_ours_exit_2(case_file, monkeypatch, capsys):
    path = case_file("cases:\n- name: c\n  why: w\n  logits: [[1.0, 2.0]]\n  target: [1]\n"
                     "  expected: oracle\n")  # fmt: skip

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated")

    monkeypatch.setattr("harness.cases.loader.build_case", broken)
    for argv in (["validate", str(path)], ["--cases", str(path), "-q"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{path}: case 'c': internal error while loading the case" in err
        assert "ZeroDivisionError: simulated" in err and "a bug in lossconf" in err
        assert "Traceback" not in err
    assert main(["--cases", str(path), "-v"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["inputs", "expected_for"])
def test_an_unexpected_error_while_preparing_a_case_is_exit_2_not_1(
    case_file, monkeypatch, capsys, what
):
    path = case_file("cases:\n- name: c\n  why: w\n  logits: [[1.0, 2.0]]\n  target: [1]\n"
                     "  expected: oracle\n")  # fmt: skip

    def broken(self, *args, **kwargs):
        raise ValueError("high <= 0")

    monkeypatch.setattr(Case, what, broken)
    assert main(["--cases", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: case 'c': internal error while" in err and "ValueError: high <= 0" in err
    assert "a bug in lossconf" in err


def test_any_other_unexpected_error_is_exit_2_with_one_line(monkeypatch, capsys):
    def broken(config):
        raise KeyError("simulated")

    monkeypatch.setattr("harness.cli.main.run_command", broken)
    assert main(["-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lossconf: internal error: KeyError")


def test_a_seeded_slice_of_the_mutation_fuzzer_finds_no_crash_and_no_hang(monkeypatch):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")
    docs = fuzz_loader.corpus()
    tally = fuzz_loader.run(300, seed=12345, docs=docs)
    assert sum(tally.counts.values()) == 300
    assert tally.counts["loaded"] > 0 and tally.counts["rejected"] > 0, tally.counts
    assert not tally.crashes, "\n\n".join(
        f"{name}: {'; '.join(done)}: {detail}\n{text}" for name, text, done, detail in tally.crashes
    )


def test_the_mutator_is_seeded_and_changes_the_text():
    import random

    doc = fuzz_loader.corpus()[0][1]
    a = fuzz_loader.mutate(doc, random.Random(7))
    b = fuzz_loader.mutate(doc, random.Random(7))
    assert a == b and a[0] != doc and a[1]


def test_the_long_run_figure_is_recorded():
    """docs/robustness.md shows the long run (python tools/refresh_docs.py loader-fuzz)."""
    import re

    data = json.loads((REPO / "docs" / "figures" / "loader-fuzz.json").read_text())
    m = re.search(
        r"^(\d+) mutated files in \d+ s: (\d+) loaded and prepared, (\d+) rejected with a "
        r"CaseFileError, (\d+) crashes, (\d+) hangs$",
        data["output"],
        re.M,
    )
    assert m, data["output"]
    examples, loaded, rejected, crashes, hangs = map(int, m.groups())
    assert examples >= 50_000 and crashes == 0 and hangs == 0
    assert loaded + rejected == examples
