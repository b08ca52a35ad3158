"""Wrappers that say what they wrap (issue 14, item 6).

``from_numpy`` hands a NumPy function the case's dtype (bfloat16 as ml_dtypes' array,
and ``dtype=`` to a function that takes it); ``library=``/``version=`` name what a
wrapped function comes from; an adapter without ``grad_output`` still has its loss
checked on the cases that give one. In process: logic.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import numpy as np
import pytest
from conftest import REPO

import harness
from harness import Adapter, CallInputs, Output, from_jax, from_numpy, from_torch
from harness.adapters.numpy_ref import NumpyAdapter
from harness.adapters.wrap import adapt

# ml_dtypes is imported by the tests that need it: importing it at collection cost every
# pytest-xdist worker 0.6 s of CPU, though these tests run in one (tests/conftest.py)
if importlib.util.find_spec("ml_dtypes") is None:
    pytest.skip("ml_dtypes is not installed", allow_module_level=True)


def in_input_dtype(input, target):
    """Mean cross-entropy computed in the input's own dtype, as a NumPy kernel would."""
    m = input.max(axis=1, keepdims=True)
    lse = np.log(np.exp(input - m).sum(axis=1)) + m[:, 0]
    return (lse - input[np.arange(len(target)), target]).mean()


def _case(case_id: str):
    return next(c for c in harness.load_suite() if c.id == case_id)


def test_from_numpy_passes_bfloat16_as_the_real_ml_dtypes_array():
    import ml_dtypes

    seen = []

    def ce(input, target):
        seen.append(input.dtype)
        return in_input_dtype(input, target)

    adapter = from_numpy(ce, unsupported={"probability_target", "kdim", "unbatched", "empty",
                                          "invalid_input"})  # fmt: skip
    results = harness.run([_case("half_precision/confident_target_mean")], adapter)
    assert seen == [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
    # computed in bfloat16 the sum of exponentials rounds to 1: the loss is 0, not 0.0011
    by_dtype = {r.dtype: r for r in results}
    assert by_dtype["bfloat16"].status is harness.Status.FAIL, by_dtype["bfloat16"].message
    assert "got 0.0" in by_dtype["bfloat16"].message or "got -0.0" in by_dtype["bfloat16"].message


def test_from_numpy_passes_the_dtype_name_to_a_function_that_takes_it():
    import ml_dtypes

    seen = []

    def ce(input, target, dtype=None):
        seen.append((dtype, input.dtype))
        return in_input_dtype(input.astype(np.float64), target)

    def grad(input, target, grad_output=None, dtype=None):
        seen.append(("grad", dtype))
        x = input.astype(np.float64)
        p = np.exp(x - x.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(target)), target] -= 1
        return p / len(target)

    adapter = from_numpy(ce, grad=grad)
    x = np.array([[0.5, 1.0, -1.0], [2.0, 0.0, 0.0]], dtype=np.float32)  # exact in bfloat16
    out = adapter.run(CallInputs(x, np.array([1, 0]), None, "mean", -100, 0.0, "bfloat16"))
    assert seen == [("bfloat16", np.dtype(ml_dtypes.bfloat16)), ("grad", "bfloat16")]
    assert out.loss.dtype == np.float32 and out.grad.dtype == np.float32  # the carrier


def test_library_and_version_say_what_is_wrapped():
    import jax

    def jax_ce(input, target):
        return input.sum()

    keras_like = from_jax(jax_ce, library="keras", version="3.15.1")
    assert keras_like.version() == f"keras 3.15.1 (jax {jax.__version__})"
    optax_version = importlib.metadata.version("optax")
    assert from_jax(jax_ce, library="optax").version() == (
        f"optax {optax_version} (jax {jax.__version__})"
    )  # the version of an installed library is looked up
    assert from_numpy(jax_ce, library="onnx", version="1.17.0").version() == (
        f"onnx 1.17.0 (numpy {np.__version__})"
    )
    torch = pytest.importorskip("torch")
    assert from_torch(jax_ce, library="torch").version() == f"torch {torch.__version__}"
    # on the command line, and in the report's 'wraps' column
    spec = adapt(jax_ce, framework="jax", library="keras", version="3.15.1")
    assert spec.version() == f"keras 3.15.1 (jax {jax.__version__})"
    # without them: the function and where it is defined, on the framework
    plain = from_jax(jax_ce).version()
    line = jax_ce.__code__.co_firstlineno
    assert plain.endswith(
        f"jax_ce (test_wrappers_say_what_they_wrap.py:{line}) on jax {jax.__version__}"
    )


class NoGradOutput(NumpyAdapter):
    """The reference, declaring that it cannot take an upstream gradient."""

    name = "no-grad-output"
    unsupported = frozenset({"grad_output"})

    def run(self, inputs: CallInputs) -> Output:
        assert inputs.grad_output is None or not inputs.want_grad
        return super().run(inputs)


def test_an_adapter_without_grad_output_still_has_its_loss_checked():
    cases = [c for c in harness.load_cases(REPO / "cases" / "reductions.yaml")
             if "grad_output" in c.features()]  # fmt: skip
    assert cases
    for adapter in (NoGradOutput(), _numpy_with_plain_grad()):
        results = harness.run(cases, adapter)
        assert {r.status for r in results} == {harness.Status.PASS}, [r.message for r in results]
        assert all("loss only: the adapter takes no grad_output" in r.notes for r in results)
        assert all(r.grad_errors is None for r in results)  # no gradient was compared
        assert isinstance(adapter, Adapter)


def _numpy_with_plain_grad():
    from harness.adapters.numpy_ref import cross_entropy

    def ce(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        inputs = CallInputs(np.asarray(input, np.float64), target, weight, reduction,
                            ignore_index, label_smoothing, "float64", want_grad=False)  # fmt: skip
        return cross_entropy(inputs)[0]

    def grad(input, target, weight=None, ignore_index=-100, reduction="mean",
             label_smoothing=0.0):  # fmt: skip
        raise AssertionError("never called without grad_output support on these cases")

    return from_numpy(ce, grad=grad, name="numpy-plain-grad")
