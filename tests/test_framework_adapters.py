"""The scoreboard's built-in adapters for PaddlePaddle, mlx and tinygrad (issue 15), and the
classifier of divergences for every framework with a committed run (keras and tensorflow too).

Without the frameworks (the main suite's environment): their registration and extras, the
gaps they declare, ``--list`` and the install command when a framework is missing, the
checks mlx's adapter makes before importing mlx, and the classifier of
``tools/verify_divergences.py`` on the committed scoreboard runs (every non-conforming
result explained). With a framework installed (its own environment,
``/work/fwenvs/<framework>`` or any other), a few cases through its adapter, whose outcomes
the docs state.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

import harness
from harness import CallInputs, Unsupported
from harness.execution import registry
from harness.gate.baseline import read_report

#: adapter name -> the module its framework is imported as
FRAMEWORKS = {"paddle": "paddle", "mlx": "mlx", "tinygrad": "tinygrad"}
SCOREBOARD = REPO / "reports" / "scoreboard"
#: the frameworks with a committed run (docs/scoreboard.md explains its divergences)
COMMITTED = ("paddle", "mlx", "tinygrad", "keras", "tensorflow")
SEED = REPO / "cases" / "seed.yaml"


def _inputs(**overrides: object) -> CallInputs:
    fields: dict = dict(
        logits=np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]]),
        target=np.array([2, 0]),
        weight=None,
        reduction="mean",
        ignore_index=-100,
        label_smoothing=0.0,
        dtype="float64",
    )
    fields.update(overrides)
    return CallInputs(**fields)


# --- without the frameworks ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported_by_resolving() -> dict[str, list[str]]:
    """{adapter name: its framework's modules in sys.modules right after it was resolved},
    from one fresh interpreter that resolves the three in turn: two interpreter starts fewer
    than one each, and no less strict (a framework that resolving an earlier adapter
    imported shows as well)."""
    code = (
        "import json, sys; from harness.execution import registry; seen = {}\n"
        f"for name, module in {sorted(FRAMEWORKS.items())!r}:\n"
        "    registry.resolve(name)\n"
        "    seen[name] = sorted(m for m in sys.modules if m.split('.')[0] == module)\n"
        "print(json.dumps(seen))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


@pytest.mark.parametrize(("name", "module"), sorted(FRAMEWORKS.items()))
def test_registered_with_its_framework_imported_lazily(name, module, imported_by_resolving):
    assert name in registry.BUILTIN
    assert registry.requirements(name) == (module,)
    # resolving (the adapter's class) imports none
    assert imported_by_resolving[name] == [], imported_by_resolving


def test_each_framework_is_an_extra_outside_all():
    from importlib import metadata

    by_extra: dict[str, list[str]] = {}
    for line in metadata.requires("lossconf") or []:
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        if extra:
            by_extra.setdefault(extra.group(1), []).append(line.split(";")[0].strip())
    assert by_extra["paddle"] == ["paddlepaddle>=3.0"]
    assert [r.split(">")[0] for r in by_extra["mlx"]] == ["mlx[cpu]"]
    assert [r.split(">")[0] for r in by_extra["tinygrad"]] == ["tinygrad"]
    assert not any(name in r for r in by_extra["all"] for name in FRAMEWORKS), by_extra["all"]
    assert registry.install_command("paddle") == "pip install 'lossconf[paddle]'"
    assert registry.install_command("mlx.core") == "pip install 'lossconf[mlx]'"
    assert registry.install_command("tinygrad") == "pip install 'lossconf[tinygrad]'"


def test_declared_gaps():
    paddle = registry.resolve("paddle")
    assert paddle.unsupported == {"float16", "bfloat16"}
    assert "float64 and float32 only" in paddle.unsupported_source
    mlx = registry.resolve("mlx")
    assert mlx.unsupported == {"ignore_index"}
    assert "has no ignore_index" in mlx.unsupported_source
    assert registry.resolve("tinygrad").unsupported == frozenset()  # until load() probes dtypes


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"ignore_index": 0}, "ignore_index=0: mlx has no ignore_index"),
        ({"target": np.array([2, -100])}, "ignore_index=-100: mlx has no ignore_index"),
        (
            {"target": np.full((2, 3), 1 / 3), "weight": np.ones(3)},
            "a class weight of probability targets has no mlx spelling",
        ),
    ],
)
def test_mlx_says_what_it_cannot_express_before_importing_mlx(overrides, why):
    adapter = registry.resolve("mlx")
    with pytest.raises(Unsupported, match=why):
        adapter.run(_inputs(**overrides))


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_list_and_load_name_the_install_command_when_missing(cli, monkeypatch, name):
    import importlib.util

    module = FRAMEWORKS[name]
    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == module else find(n, *a)
    )
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    listed = json.loads(cli("--list", "--format", "json", "--cases", str(SEED)).stdout)
    entry = next(a for a in listed["adapters"] if a["name"] == name)
    assert entry["available"] is False and entry["missing"] == [module]
    assert entry["install"] == f"pip install 'lossconf[{name}]'"
    r = cli("--adapter", name, "--cases", str(SEED))
    assert r.returncode == 2
    assert f"install it with: pip install 'lossconf[{name}]'" in r.stderr, r.stderr


def _verify_divergences():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import verify_divergences
    finally:
        sys.path.remove(str(REPO / "tools"))
    return verify_divergences


def _committed(name: str) -> Path:
    found = sorted(SCOREBOARD.glob(f"{name}-*.json.gz"))
    assert len(found) == 1, f"expected one committed run of {name} in {SCOREBOARD}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def suite_cases():
    return {c.id: c for c in harness.load_suite()}


@pytest.mark.parametrize("name", COMMITTED)
def test_every_non_conformity_of_the_committed_run_is_explained(name, suite_cases):
    tool = _verify_divergences()
    report = read_report(_committed(name))
    assert report["complete"] and report["adapters"][0]["name"] == name
    groups, unexplained = tool.classify(name, report, suite_cases)
    assert unexplained == [], [(r["case_id"], r["dtype"], r["message"]) for r in unexplained]
    # under PyTorch's semantics (for keras: its dialect's rules as well as its own faults)
    failing = [r for r in report["results"]
               if r.get("torch_status", r["status"]) in tool.NOT_CONFORMING]  # fmt: skip
    assert sum(len(g.results) for g in groups) == len(failing) > 0


def test_the_classifier_explains_by_the_inputs(suite_cases):
    """A result goes to the first divergence that matches its case's inputs."""
    tool = _verify_divergences()
    report = {
        "results": [
            {"case_id": "seed/label_smoothing_mean", "dtype": "float64", "status": "fail"},
            {"case_id": "seed/weighted_mean", "dtype": "float32", "status": "fail"},
            {"case_id": "seed/article_1x5", "dtype": "float32", "status": "pass"},
            {"case_id": "seed/article_1x5", "dtype": "float32", "status": "fail"},
        ]
    }
    groups, unexplained = tool.classify("mlx", report, suite_cases)
    keys = {g.divergence.key: [r["case_id"] for r in g.results] for g in groups}
    assert keys == {
        "per-position-weights": ["seed/weighted_mean"],
        "float64-at-float32-accuracy": ["seed/label_smoothing_mean"],
    }
    assert [r["case_id"] for r in unexplained] == ["seed/article_1x5"]  # float32, unweighted


def test_the_classifier_tells_a_dialect_rule_from_a_divergence(suite_cases):
    """For an adapter with a dialect of its own (keras), a result that conforms under that
    dialect is explained by a rule of the dialect, one that does not by the framework."""
    tool = _verify_divergences()
    weighted = {"case_id": "seed/weighted_mean", "torch_status": "fail"}
    report = {
        "results": [
            {**weighted, "dtype": "float64", "status": "pass"},  # Keras's mean, by design
            {**weighted, "dtype": "float16", "status": "pass"},
            {**weighted, "dtype": "float16", "status": "fail"},  # also off under keras
        ]
    }
    groups, unexplained = tool.classify("keras", report, suite_cases)
    keys = {g.divergence.key: [r["dtype"] for r in g.results] for g in groups}
    assert keys == {
        "dialect-weighted-mean": ["float64", "float16"],
        "half-precision-arithmetic": ["float16"],
    }
    assert unexplained == []
    # a result that conforms under keras but matches no rule of the dialect is unexplained
    plain = {"case_id": "seed/article_1x5", "dtype": "float32", "status": "pass",
             "torch_status": "fail"}  # fmt: skip
    assert tool.classify("keras", {"results": [plain]}, suite_cases)[1] == [plain]


def test_the_divergence_checks_compare_with_the_dtypes_roundoff():
    tool = _verify_divergences()
    ref = tool.Outcome(np.array(1.0), np.array([0.5, -0.5]))
    close = tool.Outcome(np.array(1.0 + 1e-14), np.array([0.5, -0.5]))
    float32_like = tool.Outcome(np.array(1.0 + 1e-8), np.array([0.5, -0.5]))
    off_grad = tool.Outcome(np.array(1.0), np.array([0.25, -0.5]))
    nan = tool.Outcome(np.array(np.nan), np.array([0.5, -0.5]))
    f64 = _inputs()
    accuracy = tool.values_off(tool.FLOAT64_AT_FLOAT32)
    assert not accuracy(close, ref, f64) and accuracy(float32_like, ref, f64)
    assert tool.CLEARLY(off_grad, ref, f64)
    assert tool.CLEARLY(nan, ref, f64)
    assert not tool.CLEARLY(float32_like, ref, f64)
    raised = tool.Outcome(error="ValueError: no")
    crashed = tool.Outcome(error="crashed (exit code -11)", crashed=True)
    assert tool.raised(raised, ref, f64) and not tool.raised(crashed, ref, f64)
    assert tool.returned(ref, raised, f64) and tool.returned(crashed, raised, f64)


# --- with a framework installed ------------------------------------------------------------------


def _run(name: str, case_ids: list[str]) -> dict[tuple[str, str], str]:
    cases = [c for c in harness.load_cases(SEED) if c.id in case_ids]
    return {(r.case_id, r.dtype): r.status.value for r in harness.run(cases, [name])}


def test_paddle_on_seed_cases():
    pytest.importorskip("paddle", reason="PaddlePaddle is not installed: pip install paddlepaddle")
    statuses = _run("paddle", ["seed/article_1x5", "seed/ignore_index_mean", "seed/reduction_none"])
    assert statuses[("seed/article_1x5", "float64")] == "pass"
    assert statuses[("seed/reduction_none", "float32")] == "pass"
    # a mean with ignore_index=-100 divides by N (docs/scoreboard.md)
    assert statuses[("seed/ignore_index_mean", "float64")] == "fail"


def test_mlx_on_seed_cases():
    pytest.importorskip("mlx.core", reason="mlx is not installed: pip install 'mlx[cpu]'")
    statuses = _run("mlx", ["seed/article_1x5", "seed/weighted_mean", "seed/ignore_index_mean"])
    assert statuses[("seed/article_1x5", "float32")] == "pass"
    assert statuses[("seed/article_1x5", "float64")] == "fail"  # float32's accuracy
    assert statuses[("seed/weighted_mean", "float32")] == "fail"  # a weighted mean over N
    assert statuses[("seed/ignore_index_mean", "float32")] == "unsupported"


def test_tinygrad_on_seed_cases():
    pytest.importorskip("tinygrad", reason="tinygrad is not installed: pip install tinygrad")
    statuses = _run(
        "tinygrad", ["seed/article_1x5", "seed/weighted_mean", "seed/label_out_of_range"]
    )
    assert statuses[("seed/article_1x5", "float64")] == "pass"
    assert statuses[("seed/weighted_mean", "float32")] == "pass"  # log_softmax + nll_loss
    assert statuses[("seed/label_out_of_range", "float64")] == "missing_error"
