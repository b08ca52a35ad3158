"""The per-call path's shortcuts give what the plain code gives: a case's CallInputs built
without the dataclass constructor, inputs of cases that keep their cast arrays and of cases
cast for each call, the in-place write check on both, and compare on outputs in their
carrier dtype."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import harness
from harness.adapters import CallInputs
from harness.cases.model import Case
from harness.dtypes import cast
from harness.execution.compare import compare
from harness.execution.results import Status
from harness.execution.runner import run_one

CASES = """\
defaults:
  dtype: [float64, float32, float16, bfloat16]
cases:
  - name: indices
    why: "class indices, weights and grad_output"
    logits: [[0.5, -1.25, 2.0], [1.0, 0.0, -0.5]]
    target: [2, 0]
    weight: [0.5, 2.0, 1.0]
    reduction: none
    grad_output: [1.5, -0.25]
    expected: oracle
  - name: probabilities
    why: "probability targets, smoothing, kernel fields"
    logits: [[0.5, -1.25, 2.0], [1.0, 0.0, -0.5]]
    target: [[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]]
    label_smoothing: 0.1
    softcap: 3.0
    logit_scale: 0.5
    z_loss: 0.001
    return_z_loss: true
    expected: oracle
"""


@pytest.fixture
def cases(tmp_path) -> list[Case]:
    path = tmp_path / "call_path.yaml"
    path.write_text(CASES)
    return harness.load_cases(path)


def _constructed(case: Case, dtype: str, inputs: CallInputs) -> CallInputs:
    """What the dataclass constructor makes of the same fields."""
    return CallInputs(
        logits=inputs.logits,
        target=inputs.target,
        weight=inputs.weight,
        reduction=case.reduction,
        ignore_index=case.ignore_index,
        label_smoothing=case.label_smoothing,
        dtype=dtype,
        grad_output=inputs.grad_output,
        want_grad=inputs.want_grad,
        softcap=case.softcap,
        logit_scale=case.logit_scale,
        z_loss=case.z_loss,
        return_z_loss=case.return_z_loss,
        shift=case.shift,
    )


def _arrays(inputs: CallInputs) -> list[np.ndarray]:
    fields = (inputs.logits, inputs.target, inputs.weight, inputs.grad_output)
    return [a for a in fields if a is not None]


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "cast-per-call"])
def test_inputs_are_the_constructors_fields_in_fresh_arrays(cases, monkeypatch, keep):
    if not keep:
        monkeypatch.setattr(Case, "CAST_CACHE_ELEMENTS", 0)
    for case in cases:
        for dtype in case.dtypes:
            first, second = case.inputs(dtype), case.inputs(dtype, want_grad=False)
            assert second.want_grad is False
            for inputs in (first, second):
                built = _constructed(case, dtype, inputs)
                assert type(inputs) is CallInputs
                assert vars(inputs).keys() == vars(built).keys()
                assert all(vars(inputs)[k] is v for k, v in vars(built).items())
                with pytest.raises(dataclasses.FrozenInstanceError):
                    inputs.dtype = "float64"  # type: ignore[misc]
            # the values of the cast inputs, in new arrays every call, none of them the case's
            own = [case.logits, case.target, case.weight, case.grad_output]
            assert (case.kept_inputs(dtype) is not None) is keep
            kept = list((case.kept_inputs(dtype) or {}).values())
            for a, b in zip(_arrays(first), _arrays(second), strict=True):
                assert a.tobytes() == b.tobytes() and a.dtype == b.dtype
                for other in [b, *own, *kept]:
                    assert other is None or not np.shares_memory(a, other)
            assert first.logits.tobytes() == cast(case.logits, dtype).tobytes()


class _WritesTarget(harness.Adapter):
    """Correct values, but it overwrites the class indices it was given."""

    name = "writes-target"

    def run(self, inputs: CallInputs) -> harness.Output:
        out = harness.load_adapter("numpy").run(inputs)
        inputs.target[...] = 0
        return out


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "cast-per-call"])
def test_an_in_place_write_is_an_error_and_harms_only_its_own_call(cases, monkeypatch, keep):
    if not keep:
        monkeypatch.setattr(Case, "CAST_CACHE_ELEMENTS", 0)
    case = cases[0]
    before = case.target.copy()
    for dtype in case.dtypes:
        r = run_one(case, _WritesTarget(), dtype)
        assert r.status is Status.ERROR
        assert r.message.startswith("modified its input 'target' (1 of 2 elements) in place")
        assert r.message.endswith("(otherwise: pass)")
        assert run_one(case, harness.load_adapter("numpy"), dtype).status is Status.PASS
    assert case.target.tobytes() == before.tobytes()


@pytest.mark.parametrize("size", [1, 7, 40, 20000])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_compare_reads_a_carrier_array_as_its_float64_values(size, dtype):
    """The same Comparison, field for field, whether the output comes in its carrier dtype or
    converted to float64 first: a scalar, the Python float path, the NumPy path (one block and
    several), within the bounds and not, with a NaN."""
    rng = np.random.default_rng(size)
    expected = rng.normal(size=size)
    got = cast(expected * (1 + rng.normal(size=size) * 1e-3), dtype)
    for bound in (np.full(size, 1e-2), np.full(size, 1e-6)):
        for values in (got, np.where(np.arange(size) == size // 2, np.nan, got).astype(got.dtype)):
            plain = compare(values.astype(np.float64), expected, bound, dtype, "grad")
            assert compare(values, expected, bound, dtype, "grad") == plain
            # lists: the general path, which converts everything first
            as_lists = compare(values.tolist(), expected.tolist(), bound.tolist(), dtype, "grad")
            assert as_lists == plain
