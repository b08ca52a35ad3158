"""Non-conforming results grouped by cause (issue 14, item 3): status and message without its
numbers, with a count, the adapters, the dtypes and an example; in the terminal, Markdown and
HTML reports, before the results one by one (-v and the JSON keep every row)."""

from __future__ import annotations

import pytest

from harness.execution.results import Result, Status
from harness.reports import causes, html, markdown, terminal

CUDA_MESSAGE = "raised RuntimeError: CUDA out of memory; tried to allocate {} MiB at 0x7f{}"


def _results() -> list[Result]:
    """249 non-conforming results of one user module, from 4 causes, and 2 that pass."""
    out = []
    for i in range(200):
        out.append(Result(f"grid/case_{i:03d}", "mine", ("float32", "float16")[i % 2],
                          Status.ERROR, message=CUDA_MESSAGE.format(i + 1, i)))  # fmt: skip
    for i in range(40):
        out.append(Result(f"numerics/big_{i}", "mine", "float64", Status.FAIL,
                          message=f"loss[{i}, {i % 3}]: expected {1.5 + i}, got {2e-3 * i:.3g} "
                                  f"(test ratio {i + 2.5}: |diff| 1.1e-05 > allowed 7.35e-06)"))  # fmt: skip
    for i in range(8):
        out.append(Result(f"grad_output/c_{i}", "mine", "bfloat16", Status.ERROR,
                          message="the adapter returned no gradient"))  # fmt: skip
    out.append(Result("invalid/bad_label", "mine", "float32", Status.MISSING_ERROR,
                      message="returned a loss of 0.25 where index_out_of_range must raise"))  # fmt: skip
    out += [Result("seed/ok", "mine", d, Status.PASS) for d in ("float32", "float64")]
    return out


def test_normalise_takes_out_numbers_indices_and_addresses_but_not_names():
    assert causes.normalise("loss[3, 1]: expected 1.5, got -2e-05 (test ratio 4.2)") == (
        "loss[#]: expected #, got # (test ratio #)"
    )
    assert causes.normalise("grad[64466, 2, 0, 7]: expected .5") == "grad[#]: expected #"
    assert causes.normalise("float16 and bf16 over log1p at 0x7f3a9c") == (
        "float16 and bf16 over log1p at #"
    )
    assert causes.normalise("array[3]  vs   array[3, 4]") == "array[#] vs array[#]"


def test_group_counts_each_cause_with_its_adapters_dtypes_and_an_example():
    rows = [r.to_dict() for r in _results() if not r.conforming]
    groups = causes.group(rows)
    assert [(g.status, g.count) for g in groups] == [
        ("error", 200), ("fail", 40), ("error", 8), ("missing_error", 1)
    ]  # fmt: skip
    first = groups[0]
    assert first.adapters == ["mine"] and first.dtypes == ["float32", "float16"]
    assert first.cases == 200 and first.example["case_id"] == "grid/case_000"
    assert first.example["message"] == CUDA_MESSAGE.format(1, 0)
    assert sum(g.count for g in groups) == len(rows)


def test_terminal_shows_causes_first_and_every_row_only_with_v():
    results = _results()
    text = terminal.render(results, {"mine": "mine 1.0"})
    _, _, tail = text.partition("Non-conforming results (249) by cause (4):")
    assert tail, text
    lines = tail.strip().splitlines()
    assert lines[2].split()[:3] == ["200", "error", "mine"]
    assert "float32,float16" in lines[2] and "grid/case_000 [float32]" in lines[2]
    assert "CUDA out of memory" in lines[2]
    assert text.count("grid/case_") == 1  # one example, not 200 rows
    assert "-v or the JSON report lists all 249" in text
    verbose = terminal.render(results, {"mine": "mine 1.0"}, verbose=True)
    assert verbose.count("grid/case_") == 201  # the example and every row
    assert "Non-conforming results one by one (249):" in verbose


def test_a_few_results_of_distinct_causes_are_listed_without_a_cause_table():
    results = [r for r in _results() if r.status is Status.MISSING_ERROR or r.conforming]
    text = terminal.render(results, {})
    assert "by cause" not in text
    assert "Non-conforming results (1):" in text and "invalid/bad_label" in text


@pytest.fixture(scope="module")
def doc() -> dict:
    rows = []
    for r in _results():
        d = r.to_dict()
        rows.append({**d, "expected": False, "expectation": None, "repro": None, "groups": []})
    return {
        "schema_version": 2, "timestamp": "t", "complete": True, "environment": {},
        "adapters": [{"name": "mine", "wraps": "mine 1.0", "device": "cpu"}], "results": rows,
        "gate": {"exit_code": 1, "unexpected_passes": []},
    }  # fmt: skip


def test_markdown_shows_the_causes_before_the_results(doc):
    text = markdown.render(doc)
    causes_at = text.index("### Non-conforming results (249) by cause (4)")
    rows_at = text.index("### Non-conforming results (249)\n")
    assert causes_at < rows_at
    cause_rows = text[causes_at:rows_at].splitlines()
    assert cause_rows[4].startswith(
        "| 200 | error | mine | float32, float16 | 200 | `grid/case_000`"
    )


def test_html_shows_the_causes_and_no_empty_expected_and_got(doc):
    text = html.render(doc)
    assert "<h2>Non-conforming results (249) by cause (4)</h2>" in text
    assert text.index("by cause (4)") < text.index("grid/case_199")
    assert "expected loss: <code>None</code>" not in text and "got: <code>None</code>" not in text


def test_html_error_plot_has_no_negative_axis():
    pytest.importorskip("matplotlib")
    rows = [
        {"adapter": "a", "dtype": "float32", "loss_errors": {"max_ulp": 1.0, "max_ratio": q},
         "grad_errors": None}
        for q in (0.0, 0.004, 0.3, 2.0, 40.0)
    ]  # fmt: skip
    fig = html.error_figure({"results": rows})
    (ax,) = fig.axes
    low, high = ax.get_ylim()
    assert low == 0 and high >= 40
