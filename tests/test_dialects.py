"""Semantics dialects: the oracle under Keras's and ONNX's rules, both verdicts of a result,
the reports that show them, and the gate that reads the adapter's own.

No framework is needed: ``tests/keras_rules.py`` states Keras's rules in NumPy, and the
built-in ``numpy`` adapter (PyTorch's rules) is judged under ``semantics=keras`` to see the
verdicts part. tests/test_keras_adapter.py holds Keras itself to the same rules.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import REPO

from harness.errors import AdapterLoadError
from harness.execution import registry
from harness.oracle import cross_entropy
from harness.oracle.dialect import DIALECTS, KERAS, ONNX, TORCH
from harness.oracle.exact import cross_entropy_mpmath
from harness.oracle.problem import Problem

KERAS_RULES = str(REPO / "tests" / "keras_rules.py")


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [2.0, 0.25, -0.5], [0.0, 1.0, -1.0]])
W = np.array([1.0, 2.0, 3.0])


# ---------------------------------------------------------------- the oracle under Keras's rules
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_keras_dialect_weights_the_target_and_averages_over_kept_positions(eps, reduction):
    t = np.array([0, 2, -100, 1])
    p = Problem(X, t, False, W, reduction, -100, eps, dialect=KERAS)
    got = cross_entropy(p)
    kept = t != -100
    safe = np.where(kept, t, 0)
    q = (1 - eps) * np.eye(3)[safe] + eps / 3
    per = np.where(kept, -(q * log_softmax(X)).sum(axis=1) * W[safe], 0.0)
    want = {"none": per, "sum": per.sum(), "mean": per.sum() / kept.sum()}[reduction]
    np.testing.assert_allclose(got.loss, want, rtol=1e-14)
    # PyTorch: the weight per class inside the smoothing sum, a mean over the target weights
    torch_loss = cross_entropy(Problem(X, t, False, W, reduction, -100, eps)).loss
    differs = eps != 0 or reduction == "mean"
    assert bool(np.any(np.abs(torch_loss - got.loss) > 1e-9)) == differs


def test_keras_dialect_mean_over_no_kept_position_is_zero_with_zero_gradient():
    x = X.copy()
    x[1, 0] = math.nan  # an ignored NaN row: Keras zeroes its logits, so its gradient is 0
    t = np.full(4, -100)
    for p in (
        Problem(x, t, False, W, "mean", -100, 0.0, dialect=KERAS),
        Problem(x, t, False, W, "mean", -100, 0.3, dialect=KERAS),
        Problem(np.zeros((0, 3)), np.zeros(0, np.int64), False, None, "mean", dialect=KERAS),
    ):
        for oracle in (cross_entropy, cross_entropy_mpmath):
            e = oracle(p)
            assert e.loss == 0.0 and not np.signbit(e.loss)
            assert e.grad is not None and np.array_equal(e.grad, np.zeros_like(p.logits))
    torch = cross_entropy(Problem(x, t, False, W, "mean", -100, 0.0))
    assert math.isnan(torch.loss) and np.isnan(torch.grad[1]).all()


def test_keras_dialect_keeps_pytorchs_values_where_the_rules_agree():
    t = np.array([0, 2, 1, 1])
    for kw in (
        {"reduction": "sum", "weight": W},
        {"reduction": "none", "weight": W},
        {"reduction": "mean"},
        {"reduction": "mean", "label_smoothing": 0.1},
    ):
        a = cross_entropy(Problem(X, t, False, dialect=KERAS, **kw))
        b = cross_entropy(Problem(X, t, False, **kw))
        assert np.array_equal(a.loss, b.loss) and np.array_equal(a.grad, b.grad), kw


def test_onnx_dialect_computes_pytorchs_values_and_leaves_features_undefined():
    t = np.array([0, 2, -100, 1])
    for reduction in ("mean", "sum", "none"):
        a = cross_entropy(Problem(X, t, False, W, reduction, dialect=ONNX))
        b = cross_entropy(Problem(X, t, False, W, reduction, dialect=TORCH))
        assert np.array_equal(a.loss, b.loss, equal_nan=True)
    assert ONNX.is_torch and not KERAS.is_torch
    assert ONNX.undefined == {"label_smoothing", "probability_target", "unbatched"}


def test_error_bounds_follow_the_dialects_divisor():
    from harness.oracle.error_model import error_bounds

    t = np.array([0, 2, -100, 1])
    w = np.array([1e-3, 1.0, 1e3])
    bounds = {}
    for d in (TORCH, KERAS):
        p = Problem(X, t, False, w, "mean", dialect=d)
        e = cross_entropy(p)
        bounds[d.name] = error_bounds(p, "float32", e.loss, e.grad)
    # Keras divides by 3 kept positions, PyTorch by 1e3 + 1e-3 + 1: the gradient bounds scale
    ratio = bounds["keras"].grad[0].max() / bounds["torch"].grad[0].max()
    assert 100 < ratio < 1e4


def test_the_schema_names_every_dialect():
    from report_validation import schema

    assert schema()["$defs"]["semantics"]["enum"] == list(DIALECTS)


# ---------------------------------------------------------------- declaring a dialect
def test_semantics_option_sets_the_dialect_and_unknown_names_are_refused():
    adapter = registry.load("numpy@semantics=keras")
    assert adapter.semantics == "keras"
    assert registry.describe(adapter, "numpy@semantics=keras")["semantics"] == "keras"
    assert registry.load("numpy").semantics == "torch"  # an option, not a change of the class
    with pytest.raises(AdapterLoadError, match=r"'tf'.*torch, keras, onnx"):
        registry.load("numpy@semantics=tf")


def test_wrapper_keyword_declares_the_dialect():
    from harness import from_numpy
    from harness.adapters.numpy_ref import cross_entropy as numpy_ce

    assert from_numpy(numpy_ce, semantics="keras").semantics == "keras"


# ---------------------------------------------------------------- both verdicts, in a run
def run(cli, tmp_path, *args: str):
    out = tmp_path / "r.json"
    done = cli("--report", str(out), "-q", *args)
    return done, json.loads(out.read_text())


def test_keras_rules_conform_under_keras_and_show_differences_under_torch(cli, tmp_path):
    done, doc = run(cli, tmp_path, "--adapter", KERAS_RULES, "-k", "weight or ignore",
                    "--dtype", "float64")  # fmt: skip
    assert done.returncode == 0, (
        done.output
    )  # the gate reads the verdict under the adapter's dialect
    results = doc["results"]
    assert {r["semantics"] for r in results} == {"keras"}
    assert doc["adapters"][0]["semantics"] == "keras"
    assert all(r["status"] in ("pass", "unsupported") for r in results)
    differ = [r for r in results if r["torch_status"] == "fail"]
    assert len(differ) > 20
    assert all(r["torch_message"] for r in differ)
    assert any("weighted_mean" in r["case_id"] for r in differ)
    assert f"0 not conforming ({len(differ)} under PyTorch's semantics)" in done.output


def test_pytorchs_rules_fail_under_keras_and_pass_under_torch(cli, tmp_path):
    done, doc = run(cli, tmp_path, "--adapter", "numpy@semantics=keras", "--case",
                    "seed/weighted_mean")  # fmt: skip
    assert done.returncode == 1
    r = doc["results"][0]
    assert (r["status"], r["torch_status"]) == ("fail", "pass")
    assert r["message"].startswith("loss") and r["torch_message"] == ""
    # the repro compares with the adapter's dialect, by name, through the public API
    assert "want = case.expected_for('float64', 'keras')" in r["repro"]
    namespace: dict = {}
    exec(r["repro"], namespace)  # it runs as printed
    assert namespace["want"].loss != namespace["out"].loss


def test_onnx_dialect_reports_undefined_features_unsupported(cli, tmp_path):
    done, doc = run(cli, tmp_path, "--adapter", "numpy@semantics=onnx", "-k", "smoothing")
    assert done.returncode == 0
    smoothing = [r for r in doc["results"] if "label_smoothing" in r["features"]]
    assert smoothing and all(r["status"] == "unsupported" for r in smoothing)
    assert "the onnx semantics do not define" in smoothing[0]["message"]


def test_vocab_parallel_calls_settle_undefined_features_alike():
    """``begin`` (how a vocab-parallel run makes each call's record and inputs) settles a
    feature the adapter's dialect leaves undefined as ``run_one`` does: unsupported, no call."""
    import harness
    from harness.execution.results import Status
    from harness.execution.runner import begin, run_one

    adapter = registry.load("numpy@semantics=onnx")
    case = next(c for c in harness.load_suite() if "label_smoothing" in c.features())
    dtype = case.dtypes[0]
    result, inputs = begin(case, adapter, dtype)
    assert inputs is None and result.status is Status.UNSUPPORTED
    assert "which the onnx semantics do not define" in result.message
    assert result.message == run_one(case, adapter, dtype).message


def test_every_report_shows_both_verdicts(cli, tmp_path):
    paths = [tmp_path / f"r.{ext}" for ext in ("json", "md", "xml", "html")]
    reports = [a for p in paths for a in ("--report", str(p))]
    args = ("--adapter", KERAS_RULES, "--adapter", "numpy", "-k", "seed", "--dtype", "float64")
    done = cli(*args, *reports)
    assert done.returncode == 0
    md = paths[1].read_text()
    assert "| semantics | conform (own) | conform (torch) |" in md
    assert "### Differences from PyTorch's semantics" in md
    assert "under PyTorch's semantics" in md
    suites = ET.parse(paths[2]).getroot()
    case = next(
        tc
        for tc in suites.iter("testcase")
        if tc.get("classname") == "lossconf.keras-rules.seed"
        and tc.get("name") == "weighted_mean[float64]"
    )
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props.get("semantics") == "keras" and props.get("torch_status") == "fail"
    html = paths[3].read_text()
    assert "<h2>Differences from PyTorch's semantics" in html
    assert "conform (torch)" in done.output and "under torch" in done.output


def test_expectations_match_the_verdict_under_the_adapters_dialect(cli, tmp_path, write):
    exp = write(
        "exp.yaml",
        """
        expectations:
          - case: seed/weighted_mean
            adapter: numpy
            outcomes: [fail]
            reason: PyTorch's rules, run under Keras's semantics
        """,
    )
    args = ("--adapter", "numpy@semantics=keras", "--case", "seed/weighted_mean")
    done, doc = run(cli, tmp_path, *args, "--expectations", str(exp))
    assert done.returncode == 0 and doc["results"][0]["expected"]
