"""The built-in ``keras`` adapter: Keras 3 conforms under its own dialect on the weighting and
reduction cases, and shows where it differs from PyTorch. Skipped where Keras (with its JAX
backend) is not installed; the dialect itself is tested without it (tests/test_dialects.py).

The adapter's spec and declarations are checked everywhere: they need no framework.
"""

from __future__ import annotations

import pytest

import harness
from harness.execution import registry


def test_keras_adapter_is_registered_and_declares_its_dialect():
    adapter = registry.resolve("keras@backend=torch")  # resolving imports no framework
    assert adapter.semantics == "keras" and adapter.backend == "torch"
    assert registry.requirements("keras") == ("keras", "jax")
    with pytest.raises(harness.AdapterLoadError, match=r"backend='mxnet'.*jax, torch"):
        registry.resolve("keras@backend=mxnet")


def test_tensorflow_adapter_declares_what_the_raw_op_lacks():
    adapter = registry.resolve("tensorflow")
    assert adapter.semantics == "torch"
    assert {"weight", "ignore_index", "label_smoothing", "reduction_mean"} <= adapter.unsupported


#: every case of these files, in float64 and float32, except the two that expect an error
#: for an out-of-range label, which Keras does not raise (a divergence, reported as
#: missing_error under both dialects)
FILES = ("weights.yaml", "ignore_index.yaml", "seed.yaml", "reductions.yaml", "smoothing.yaml")
RAISES_NOT = {"ignore_index/negative_one_target_minus_100_out_of_range", "seed/label_out_of_range"}


def test_keras_conforms_under_keras_semantics_and_differs_under_torchs(monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # Keras reads it once, on its first import
    pytest.importorskip("keras")
    cases = harness.load_cases([harness.builtin_suite() / f for f in FILES])
    cases = [c for c in cases if c.id not in RAISES_NOT]
    results = harness.run(cases, ["keras@backend=jax"])
    assert {r.semantics for r in results} == {"keras"}
    bad = [r for r in results if not r.conforming]
    assert not bad, harness.summary(bad)
    differ = [r for r in results if r.status_under_torch.value == "fail"]
    assert any(r.case_id == "seed/weighted_mean" for r in differ)
    assert len(differ) >= 40, len(differ)
