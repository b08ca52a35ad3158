"""The ``onnx`` and ``onnxruntime`` adapters (adapters/onnx_ce.py).

What needs no framework (registration, declared features, --list and its install hint,
lazy imports) runs everywhere; the values need onnx (``pip install 'lossconf[onnx]'``)
or onnxruntime and are skipped without them.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from harness import CallInputs
from harness.adapters.numpy_ref import cross_entropy as numpy_cross_entropy
from harness.adapters.onnx_ce import OnnxAdapter, OnnxRuntimeAdapter
from harness.dtypes import cast
from harness.execution.registry import BUILTIN, load, resolve

SEED = str(REPO / "cases" / "seed.yaml")
LOGITS = np.array([[0.25, -1.0, 2.0, 0.5], [1.5, 0.0, -0.5, -1.0], [-0.5, 0.5, 1.0, 3.0]])
TARGET = np.array([2, -100, 1])
WEIGHT = np.array([0.5, 2.0, 1.0, 0.25])
RUNTIMES = {"onnx": ("onnx",), "onnxruntime": ("onnxruntime", "onnx")}


def call(dtype: str = "float64", **kw) -> CallInputs:
    args = {
        "logits": cast(LOGITS, dtype), "target": TARGET, "weight": cast(WEIGHT, dtype),
        "reduction": "mean", "ignore_index": -100, "label_smoothing": 0.0, "dtype": dtype,
        "want_grad": False,
    }  # fmt: skip
    args.update(kw)
    return CallInputs(**args)


def loaded(name: str):
    for module in RUNTIMES[name]:
        pytest.importorskip(module, reason=f"pip install 'lossconf[{name}]'")
    return load(name)


def test_both_are_registered_and_declare_what_the_operator_lacks():
    assert BUILTIN["onnx"] == "harness.adapters.onnx_ce:OnnxAdapter"
    assert BUILTIN["onnxruntime"] == "harness.adapters.onnx_ce:OnnxRuntimeAdapter"
    for name, cls in (("onnx", OnnxAdapter), ("onnxruntime", OnnxRuntimeAdapter)):
        adapter = resolve(name)  # resolving imports no framework
        assert type(adapter) is cls
        assert {"label_smoothing", "probability_target", "unbatched", "grad"} <= adapter.unsupported
        assert "SoftmaxCrossEntropyLoss" in adapter.unsupported_source
        assert adapter.semantics == "onnx"
        assert not {"weight", "ignore_index", "kdim", "reduction_none"} & adapter.unsupported


def test_adapter_module_imports_no_framework():
    code = (
        "import sys, harness.adapters.onnx_ce, harness.execution.registry\n"
        "harness.execution.registry.resolve('onnxruntime')\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'ml_dtypes') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_list_names_the_extra_to_install(cli_process, tmp_path):
    # onnx and onnxruntime made unfindable (a sitecustomize in a fresh process), whether or
    # not this environment has them
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: "
        "None if n in ('onnx', 'onnxruntime') else _find(n, *a)\n"
    )
    r = cli_process("--list", "--cases", SEED, env={"PYTHONPATH": str(tmp_path)})
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.split()[:1]}
    assert "not installed: onnx (pip install 'lossconf[onnx]')" in lines["onnx"]
    assert (
        "not installed: onnxruntime, onnx (pip install 'lossconf[onnxruntime]')"
        in lines["onnxruntime"]
    )


@pytest.mark.parametrize("name", ["onnx", "onnxruntime"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [True, False])
def test_float64_matches_the_numpy_reference(name, reduction, weighted):
    adapter = loaded(name)
    inputs = call(reduction=reduction, weight=WEIGHT if weighted else None)
    out = adapter.run(inputs)
    expected, _ = numpy_cross_entropy(inputs)
    assert out.grad is None
    assert np.shape(out.loss) == np.shape(expected)
    np.testing.assert_allclose(out.loss, expected, rtol=1e-13)


@pytest.mark.parametrize("name", ["onnx", "onnxruntime"])
def test_k_dimensional_input_and_a_custom_ignore_index(name):
    adapter = loaded(name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 2))
    t = rng.integers(0, 3, (2, 4, 2))
    t[0, 1, 1] = 7
    inputs = call(logits=x, target=t, weight=None, ignore_index=7)
    expected, _ = numpy_cross_entropy(inputs)
    np.testing.assert_allclose(adapter.run(inputs).loss, expected, rtol=1e-13)


@pytest.mark.parametrize("name", ["onnx", "onnxruntime"])
def test_float32_is_computed_in_float32(name):
    out = loaded(name).run(call("float32"))
    assert out.loss.dtype == np.float32
    expected, _ = numpy_cross_entropy(call("float32"))
    assert abs(float(out.loss) - float(expected)) <= 1e-6 * abs(float(expected))


def test_reference_evaluator_bfloat16_crosses_as_float32_carrier():
    out = loaded("onnx").run(call("bfloat16"))
    assert out.loss.dtype == np.float32
    assert float(out.loss) == float(cast(np.asarray(out.loss, np.float64), "bfloat16"))


def test_reference_evaluator_log_of_softmax_underflows_to_inf():
    """A divergence kept visible, not papered over: ONNX's reference computes
    log(softmax(x)), which is log(0) = -inf once exp(x_t - max) underflows; PyTorch's
    log_softmax gives the finite x_max - x_t (docs/scoreboard.md)."""
    inputs = call(logits=np.array([[1000.0, 0.0]]), target=np.array([1]), weight=None)
    assert float(numpy_cross_entropy(inputs)[0]) == 1000.0
    assert float(loaded("onnx").run(inputs).loss) == np.inf


@pytest.mark.parametrize(("name", "reads_as"), [("onnx", "none"), ("onnxruntime", "sum")])
def test_an_invalid_reduction_is_passed_as_given(name, reads_as):
    """The adapter validates nothing itself; neither runtime refuses an unknown reduction:
    the reference evaluator reads it as 'none', onnxruntime as 'sum' (docs/scoreboard.md)."""
    adapter = loaded(name)
    inputs = call(reduction="average")
    expected, _ = numpy_cross_entropy(call(reduction=reads_as))
    np.testing.assert_allclose(adapter.run(inputs).loss, expected, rtol=1e-13)


def test_onnxruntime_declares_the_dtypes_it_cannot_run():
    adapter = loaded("onnxruntime")
    for dtype in ("float16", "bfloat16"):
        if dtype in adapter.unsupported:
            assert dtype in adapter.unsupported_source
        else:
            assert np.isfinite(float(adapter.run(call(dtype)).loss))
