"""A torch function whose loss comes back in another dtype is judged by its values, as the
JAX and NumPy wrappers' are: fused kernels keep the loss in float32 for half-precision
logits, and the wrapper rounds it to the case's dtype instead of the run refusing it."""

from __future__ import annotations

import importlib.util
import textwrap

import pytest

import harness

# torch is imported when a wrapped function is first called: importing it at collection cost
# every pytest-xdist worker 1.5 s of CPU, wherever these tests ran
if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed", allow_module_level=True)

CASES = textwrap.dedent(
    """
    defaults:
      dtype: [float64, float32, float16, bfloat16]
    cases:
      - name: mean
        why: a reduced loss
        logits: {generate: normal, shape: [6, 50], seed: 3}
        target: {generate: labels, shape: [6], seed: 4, classes: 50}
        reduction: mean
        expected: oracle
      - name: none_with_weights
        why: per-position losses, class weights
        logits: {generate: normal, shape: [5, 7], seed: 5, std: 4}
        target: [0, 6, 3, 3, 1]
        weight: [0.5, 1, 2, 1, 1, 0.25, 3]
        reduction: none
        expected: oracle
    """
)


def in_float32(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """What a fused kernel does: every dtype computed in float32, the loss left in float32."""
    import torch.nn.functional as F

    w = None if weight is None else weight.float()
    return F.cross_entropy(input.float(), target, w, ignore_index=ignore_index, reduction=reduction)


def half_in_float32(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Half precision computed in float32 (loss left in float32), float32 and float64 as given."""
    import torch
    import torch.nn.functional as F

    low = input.dtype in (torch.float16, torch.bfloat16)
    x = input.float() if low else input
    w = None if weight is None else weight.to(x.dtype)
    return F.cross_entropy(x, target, w, ignore_index=ignore_index, reduction=reduction)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    path = tmp_path_factory.mktemp("cases") / "dtypes.yaml"
    path.write_text(CASES)
    return harness.load_cases(path)


def test_a_float32_loss_of_a_half_precision_case_is_judged_by_its_value(cases):
    results = harness.run(cases, harness.from_torch(half_in_float32))
    assert len(results) == 8
    bad = [(r.case_id, r.dtype, r.status.value, r.message) for r in results if not r.conforming]
    assert bad == [], f"a float32 loss rounded to the case's dtype should conform: {bad}"


def test_a_float64_case_computed_in_float32_fails_by_its_values_not_its_dtype(cases):
    results = harness.run(cases, harness.from_torch(in_float32))
    by_dtype = {}
    for r in results:
        by_dtype.setdefault(r.dtype, []).append(r)
    for r in by_dtype["float64"]:
        assert r.status.value == "fail", f"{r.case_id}: {r.status.value} {r.message}"
        assert "dtype" not in r.message, r.message
        assert "test ratio" in r.message, r.message
    for dtype in ("float32", "float16", "bfloat16"):
        bad = [(r.case_id, r.message) for r in by_dtype[dtype] if not r.conforming]
        assert bad == [], f"{dtype}: {bad}"
