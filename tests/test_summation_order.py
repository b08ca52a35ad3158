"""No false alarm for a legitimate order of summation, and no pass for a skewed softmax.

The tolerance's length terms are the probabilistic ``sqrt(n) u`` of Higham and Mary
(docs/tolerances.md), not the worst case ``(n - 1) u``. A hand-written kernel that sums a
row's exponentials one after another in float32 (one loop per row: the order furthest from
the pairwise sums of NumPy and PyTorch that an implementation is likely to use) must
conform on the suite's widest float32 rows, with label smoothing, weights and ignored
positions. The same implementation whose softmax is scaled by ``1 - 4e-4`` per row (what
``torch.compile``'s CPU code gives for the gradient of ``accumulate_c32000_smoothing_sum``,
forty times the ``sqrt(C) u`` scale, while eager PyTorch is within it) must not.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness import Adapter, CallInputs, Output, builtin_suite, load_cases, run

#: the suite's float32 rows of 1000 to 50257 classes (with smoothing, weights, ignored rows)
WIDE = (
    "half_precision/accumulate_c32000_mean",
    "half_precision/accumulate_c32000_smoothing_sum",
    "shapes/c1000_generated_weighted",
    "shapes/c50257_generated",
)


class SequentialSum(Adapter):
    """Cross-entropy in float32 with each row's exponentials summed one after another
    (``np.cumsum`` adds in order, in the array's dtype); ``skew`` scales every softmax."""

    name = "sequential-float32-sum"
    unsupported = frozenset(
        {"probability_target", "kdim", "unbatched", "empty", "invalid_input", "grad_output",
         "softcap", "logit_scale", "z_loss", "return_z_loss", "shift", "vocab_parallel",
         "fused_linear", "float64", "float16", "bfloat16"}
    )  # fmt: skip

    def __init__(self, skew: float = 0.0) -> None:
        self.skew = np.float32(skew)

    def run(self, inputs: CallInputs) -> Output:
        x = np.asarray(inputs.logits, np.float32)
        n, c = x.shape
        t = np.asarray(inputs.target)
        keep = t != inputs.ignore_index
        y = np.where(keep, t, 0)
        w = np.ones(c, np.float32) if inputs.weight is None else np.asarray(inputs.weight)
        eps = np.float32(inputs.label_smoothing)
        m = x.max(axis=1, keepdims=True)
        e = np.exp(x - m)
        s = np.cumsum(e, axis=1, dtype=np.float32)[:, -1:]  # sequential, in float32
        logp = (x - m) - np.log(s)
        rows = np.arange(n)
        wy = np.where(keep, w[y], np.float32(0))
        # loss_n = -(1 - eps) w_y logp_y - eps/C sum_c w_c logp_c (PyTorch's smoothing)
        smooth = (logp * w).sum(axis=1) / np.float32(c)
        per_row = -(np.float32(1) - eps) * wy * logp[rows, y] - eps * smooth
        per_row = np.where(keep, per_row, np.float32(0))
        coeff = np.zeros_like(x)  # d loss_n / d logp_nc
        coeff[rows, y] = -(np.float32(1) - eps) * wy
        coeff -= np.where(keep, eps / np.float32(c), np.float32(0))[:, None] * w[None, :]
        if inputs.reduction == "mean":
            scale = np.float32(1) / wy.sum()
            loss = per_row.sum() * scale
        elif inputs.reduction == "sum":
            scale, loss = np.float32(1), per_row.sum()
        else:
            scale, loss = np.float32(1), per_row
        coeff *= scale
        p = np.exp(logp) * (np.float32(1) - self.skew)
        grad = coeff - p * coeff.sum(axis=1, keepdims=True)
        return Output(np.asarray(loss, np.float32), grad.astype(np.float32))


@pytest.fixture(scope="module")
def wide_cases() -> list:
    cases = {c.id: c for c in load_cases([builtin_suite()])}
    return [cases[i] for i in WIDE]


def _by_case(results: list) -> dict[str, object]:
    return {r.case_id: r for r in results if r.dtype == "float32"}


def test_a_sequential_float32_sum_conforms(wide_cases):
    results = _by_case(run(wide_cases, SequentialSum()))
    assert set(results) == set(WIDE)
    for case_id, r in results.items():
        assert r.conforming, f"{case_id}: {r.status.value}: {r.message}"


def test_a_softmax_skewed_as_torch_compile_s_is_caught(wide_cases):
    results = _by_case(run(wide_cases, SequentialSum(skew=4e-4)))
    caught = {case_id for case_id, r in results.items() if not r.conforming}
    assert caught == set(WIDE)
