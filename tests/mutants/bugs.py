"""Deliberately wrong cross-entropies: each overrides one step of ``Stepwise`` with a real bug.

Every bug here has been seen in the wild or follows a documented convention of
another library (see docs/semantics.md, "Other frameworks differ"). The suite must
fail each of them on at least one case (tests/test_mutants.py).
"""

from __future__ import annotations

import numpy as np

from harness import CallInputs
from harness.dtypes import cast
from tests.mutants.linear import LINEAR_MUTANTS
from tests.mutants.stepwise import Stepwise


class MeanDividesByN(Stepwise):
    """Weighted mean divided by the number of kept targets instead of sum_n w[y_n]."""

    name = "mean_divides_by_n"

    def index_denominator(self, wy, keep):
        return wy.dtype.type(keep.sum())

    def mean_upstream(self, denominator, keep, wy):
        return np.full(len(keep), 1 / denominator)


class MeanGradientUsesN(Stepwise):
    """Correct weighted-mean loss, but the backward pass scales by 1/N (a hand-written backward)."""

    name = "mean_gradient_uses_n"

    def mean_upstream(self, denominator, keep, wy):
        return np.full(len(keep), 1 / max(len(keep), 1))


class SmoothingIgnoresWeights(Stepwise):
    """The smoothing term sums -l[n, c] without the class weights w[c]."""

    name = "smoothing_ignores_weights"

    def smoothed(self, nll, lp, safe, keep, w, eps, c):
        share = eps / c
        smooth = np.where(keep, -self.row_sum(lp), 0)
        a = _smoothed_coeffs(lp, safe, keep, w, np.ones_like(w), eps, share)
        return (1 - eps) * nll + share * smooth, a


class SmoothingCountsIgnoredRows(Stepwise):
    """Ignored rows still contribute their smoothing term eps/C * -sum_c w[c] l[n, c]."""

    name = "smoothing_counts_ignored_rows"

    def smoothed(self, nll, lp, safe, keep, w, eps, c):
        loss, a = super().smoothed(nll, lp, safe, keep, w, eps, c)
        extra = np.where(keep, 0, -self.row_sum(w * lp)) * (eps / c)
        a = a + (eps / c) * w * (~keep)[:, None]
        return loss + extra, a

    def mask_ignored_grad(self, g, keep):
        return g


class SmoothingOverCMinusOne(Stepwise):
    """Megatron's convention: 1 - eps on the target and eps/(C-1) on every other class."""

    name = "smoothing_eps_over_c_minus_1"

    def smoothed(self, nll, lp, safe, keep, w, eps, c):
        share = eps / max(c - 1, 1)
        onehot = np.zeros_like(lp)
        onehot[np.arange(len(lp)), safe] = 1
        q = (1 - eps) * onehot + share * (1 - onehot)
        a = w * q * keep[:, None]
        return np.where(keep, -self.row_sum(a * lp), 0), a


class NoMaxShift(Stepwise):
    """log_softmax as x - log(sum(exp(x))) without subtracting the row maximum: exp overflows."""

    name = "no_max_shift"

    def log_softmax(self, rows):
        with np.errstate(all="ignore"):
            return rows - np.log(self.row_sum(np.exp(rows)))[:, None]


class LogOfSoftmax(Stepwise):
    """log(softmax(x)) in two steps: the softmax underflows to 0 and its log to -inf."""

    name = "log_of_softmax"

    def log_softmax(self, rows):
        with np.errstate(all="ignore"):
            e = np.exp(rows - rows.max(axis=1, initial=-np.inf)[:, None])
            return np.log(e / self.row_sum(e)[:, None])


class HalfPrecisionAccumulation(Stepwise):
    """Sums in the input dtype, one element at a time (a naive float16/bfloat16 kernel)."""

    name = "half_precision_accumulation"

    def acc(self, dtype):
        return np.dtype(np.float16 if dtype == "float16" else super().acc(dtype))

    def _naive(self, v: np.ndarray) -> np.ndarray:
        if self.dtype == "float16":
            v = v.astype(np.float16)
            return np.add.accumulate(v, axis=-1)[..., -1] if v.shape[-1] else v.sum(axis=-1)
        if self.dtype == "bfloat16":
            out = np.zeros(v.shape[:-1], dtype=np.float32)
            for j in range(v.shape[-1]):
                out = cast(out + v[..., j], "bfloat16")
            return out
        return v.sum(axis=-1)

    def row_sum(self, v):
        return self._naive(v)

    def total(self, v):
        return self._naive(v)


class GradientLeaksIntoIgnored(Stepwise):
    """Ignored rows get softmax - onehot(label 0) gradients: the mask is applied to the loss only."""

    name = "gradient_leaks_into_ignored"

    def mask_ignored_grad(self, g, keep):
        g[~keep, 0] = -1.0
        return g


class ClampsBadLabels(Stepwise):
    """Out-of-range class indices are clamped into [0, C) instead of raising (a gather with clamp)."""

    name = "clamps_bad_labels"

    def validate(self, x, t, inputs):
        c = x.shape[0] if x.ndim == 1 else x.shape[1]
        if not inputs.probability_target:
            keep = t != inputs.ignore_index
            np.copyto(t, np.clip(t, 0, c - 1), where=keep)
        super().validate(x, t, inputs)


class NegativeLabelsWrap(Stepwise):
    """Only the upper bound is checked: label -1 wraps around to the last class (Python indexing)."""

    name = "negative_labels_wrap"

    def validate(self, x, t, inputs):
        c = x.shape[0] if x.ndim == 1 else x.shape[1]
        if not inputs.probability_target:
            wrap = (t < 0) & (t != inputs.ignore_index) & (t >= -c)
            t[wrap] += c
        super().validate(x, t, inputs)


class LastAxisIsClassAxis(Stepwise):
    """K-dimensional input flattened with reshape(-1, C) instead of moving the class axis last."""

    name = "last_axis_is_class_axis"

    def to_rows(self, a):
        if a.ndim <= 2:
            return super().to_rows(a)
        return a.reshape(-1, a.shape[1])

    def from_rows(self, g, shape):
        if len(shape) <= 2:
            return super().from_rows(g, shape)
        return g.reshape(shape)


class ProbabilityMeanDividesByWeights(Stepwise):
    """Soft targets: the mean divides by sum_n sum_c w[c] y[n, c] (the index-target rule misapplied)."""

    name = "probability_mean_divides_by_weights"

    def soft_denominator(self, y, w, n_pos):
        return (w * y).sum()


class ProbabilityTargetsIgnoreWeights(Stepwise):
    """Class weights are dropped for soft targets."""

    name = "probability_targets_ignore_weights"

    def soft_coefficients(self, y, w):
        return y


class ProbabilityTargetsNotSmoothed(Stepwise):
    """label_smoothing is applied to class indices only, never to soft targets."""

    name = "probability_targets_not_smoothed"

    def soft_targets(self, y, eps, c):
        return y


class NegativeProbabilitiesClipped(Stepwise):
    """Soft targets are clipped to [0, inf) (PyTorch takes them as they are)."""

    name = "negative_probabilities_clipped"

    def soft_targets(self, y, eps, c):
        return super().soft_targets(np.maximum(y, 0), eps, c)


class AllIgnoredMeanIsZero(Stepwise):
    """A mean over zero total weight gives 0 instead of nan (Keras's and Liger's convention)."""

    name = "all_ignored_mean_is_zero"

    def mean(self, total, denominator):
        return total / denominator if denominator != 0 else total * 0


class AllIgnoredGradientNan(Stepwise):
    """Backward computed as (softmax - onehot) * mask / denominator: 0/0 = nan when all are ignored."""

    name = "all_ignored_gradient_nan"

    def mask_ignored_grad(self, g, keep):
        if not keep.any():
            return np.full_like(g, np.nan)
        return super().mask_ignored_grad(g, keep)


class IgnoreIndexOnlyDefault(Stepwise):
    """ignore_index hard-coded to -100: a custom ignore_index is treated as a label."""

    name = "ignore_index_only_default"

    def keep(self, labels, ignore_index):
        return labels != -100

    def validate(self, x, t, inputs):
        super().validate(x, t, inputs)
        c = x.shape[0] if x.ndim == 1 else x.shape[1]
        if not inputs.probability_target and np.any((t != -100) & ((t < 0) | (t >= c))):
            raise IndexError("target out of bounds")


class InRangeIgnoredClassLeavesSoftmax(Stepwise):
    """An in-range ignore_index class is masked out of the softmax (its logit set to -inf)."""

    name = "ignored_class_leaves_softmax"

    def run(self, inputs: CallInputs):
        self._ii = inputs.ignore_index
        return super().run(inputs)

    def log_softmax(self, rows):
        if 0 <= self._ii < rows.shape[1] and rows.shape[1] > 1:
            rows = rows.copy()
            rows[:, self._ii] = -np.inf
            out = super().log_softmax(rows)
            out[:, self._ii] = 0  # never the target of a kept row
            return out
        return super().log_softmax(rows)


class UnbatchedKeepsBatchAxis(Stepwise):
    """Unbatched (C,) input is run as (1, C) and the loss comes back as shape (1,) for 'none'."""

    name = "unbatched_keeps_batch_axis"

    def loss_shape(self, x):
        return (1,) if x.ndim == 1 else super().loss_shape(x)


class UnknownReductionMeansMean(Stepwise):
    """Any reduction string other than 'none' or 'sum' silently means 'mean'."""

    name = "unknown_reduction_means_mean"

    def validate(self, x, t, inputs):
        if inputs.reduction not in ("none", "sum"):
            inputs = _with(inputs, reduction="mean")
        super().validate(x, t, inputs)


class SmoothingNotBounded(Stepwise):
    """label_smoothing > 1 is accepted (the target weight 1 - eps goes negative)."""

    name = "smoothing_not_bounded"

    def validate(self, x, t, inputs):
        super().validate(x, t, _with(inputs, label_smoothing=min(inputs.label_smoothing, 1.0)))


class WeightLengthNotChecked(Stepwise):
    """A weight vector of the wrong length is truncated or padded with ones instead of raising."""

    name = "weight_length_not_checked"

    def validate(self, x, t, inputs):
        c = x.shape[0] if x.ndim == 1 else x.shape[1]
        if inputs.weight is not None and inputs.weight.shape != (c,):
            fixed = np.ones(c, dtype=inputs.weight.dtype)
            flat = inputs.weight.reshape(-1)[:c]
            fixed[: len(flat)] = flat
            object.__setattr__(inputs, "weight", fixed)
        super().validate(x, t, inputs)


class SoftcapWithoutOuterScale(Stepwise):
    """Softcap as tanh(x / s), without multiplying back by s: the logits land in (-1, 1)."""

    name = "softcap_without_outer_scale"

    def transform(self, rows, inputs):
        if inputs.softcap is None:
            return super().transform(rows, inputs)
        a = rows.dtype.type(inputs.logit_scale)
        s = rows.dtype.type(inputs.softcap)
        t = np.tanh(rows * a / s)
        return t, a / s * (1 - t * t)


class ZLossMeanOverN(Stepwise):
    """The z-loss mean divides by every position N, ignored ones included, not the kept count."""

    name = "z_loss_mean_over_n"

    def z_denominator(self, keep):
        return np.float64(len(keep))


class ShiftOffByOne(Stepwise):
    """Causal shift by k - 1: position t is scored against target t + k - 1 (for k = 1, its own)."""

    name = "shift_off_by_one"

    def shifted(self, t, shift, ignore_index):
        return super().shifted(t, max(shift - 1, 0), ignore_index)


def _with(inputs: CallInputs, **changes) -> CallInputs:
    from dataclasses import replace

    return replace(inputs, **changes)


def _smoothed_coeffs(lp, safe, keep, w_target, w_smooth, eps, share):
    a = np.zeros_like(lp)
    a[np.arange(len(lp)), safe] = np.where(keep, w_target[safe], 0)
    return (1 - eps) * a + share * w_smooth * keep[:, None]


MUTANTS: tuple[type[Stepwise], ...] = (
    MeanDividesByN,
    MeanGradientUsesN,
    SmoothingIgnoresWeights,
    SmoothingCountsIgnoredRows,
    SmoothingOverCMinusOne,
    NoMaxShift,
    LogOfSoftmax,
    HalfPrecisionAccumulation,
    GradientLeaksIntoIgnored,
    ClampsBadLabels,
    NegativeLabelsWrap,
    LastAxisIsClassAxis,
    ProbabilityMeanDividesByWeights,
    ProbabilityTargetsIgnoreWeights,
    ProbabilityTargetsNotSmoothed,
    NegativeProbabilitiesClipped,
    AllIgnoredMeanIsZero,
    AllIgnoredGradientNan,
    IgnoreIndexOnlyDefault,
    InRangeIgnoredClassLeavesSoftmax,
    UnbatchedKeepsBatchAxis,
    UnknownReductionMeansMean,
    SmoothingNotBounded,
    WeightLengthNotChecked,
    SoftcapWithoutOuterScale,
    ZLossMeanOverN,
    ShiftOffByOne,
    *LINEAR_MUTANTS,  # fused linear cross-entropy's steps (tests/mutants/linear.py)
)
