"""Explain every non-conforming result of a framework's scoreboard run, and check each
explanation by hand against PyTorch in float64.

    python tools/verify_divergences.py mlx reports/scoreboard/mlx-0.32.4.json.gz

Run it in the framework's own environment (with torch beside it). For each framework,
``DIVERGENCES`` lists what its results can diverge by; ``classify`` gives each
non-conforming result of the report to the first divergence whose ``matches`` holds for
the case's inputs (no framework needed: ``tests/test_scoreboard_divergences.py`` checks
the committed reports). Then, for each divergence, the smallest case it explains is
recomputed by hand: the framework's own function called directly on the case's exact
values (a few lines, not the adapter), and ``torch.nn.functional.cross_entropy`` on the
same values in float64. The divergence is confirmed when the two differ in the way it
says (``differs``). The output is the Markdown list of docs/scoreboard.md (one figure per
framework, ``python tools/refresh_docs.py divergences-mlx``).

Exit status: 0 when every non-conforming result is explained and every repro confirms
its divergence; 1 otherwise (the unexplained results and unconfirmed repros are listed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests import this file as tools.verify_divergences
    sys.path.insert(0, str(REPO))

import harness  # noqa: E402
from harness import CallInputs, Case  # noqa: E402
from harness.dtypes import is_exact  # noqa: E402
from harness.gate.baseline import read_report  # noqa: E402  (.json or .json.gz)

#: statuses that need an explanation
NOT_CONFORMING = ("fail", "error", "missing_error", "crash", "timeout")
#: unit roundoff by dtype: "differs" thresholds are multiples of it
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


@dataclass(frozen=True)
class Outcome:
    """What one call gave: the loss and the gradient of its sum (float64), or an error."""

    loss: np.ndarray | None = None
    grad: np.ndarray | None = None
    error: str | None = None
    crashed: bool = False

    def text(self, with_grad: bool) -> str:
        if self.crashed:
            return str(self.error)
        if self.error is not None:
            return f"raises {self.error}"
        text = f"loss {_values(self.loss)}"
        return f"{text}, gradient {_values(self.grad)}" if with_grad else text


@dataclass(frozen=True)
class Divergence:
    """One way a framework departs from PyTorch's semantics.

    ``matches(inputs, case)``: whether it explains a non-conforming result of this case
    (its inputs in the result's dtype); ``differs(framework, torch, inputs)``: whether a
    by-hand recomputation shows it. The repro prints the losses, and the gradients when
    the losses agree. For an adapter with a dialect of its own, ``own`` says which results
    it explains: those that do not conform under that dialect either (True: the
    framework's own divergence), those that do (False: a rule of the dialect), or any
    (None).
    """

    key: str
    title: str
    explanation: str
    matches: Callable[[CallInputs, Case], bool]
    differs: Callable[[Outcome, Outcome, CallInputs], bool]
    own: bool | None = None


# ----------------------------------------------------------------------------- predicates


def _has_weight(i: CallInputs) -> bool:
    return i.weight is not None


def _ignores(i: CallInputs) -> bool:
    """Index targets of which some equal ignore_index."""
    return not i.probability_target and bool(np.any(i.target == i.ignore_index))


def _kdim(i: CallInputs) -> bool:
    return i.logits.ndim > 2


def _unnormalised(i: CallInputs) -> bool:
    """Probability targets whose rows do not sum to 1 or hold a negative value."""
    if not i.probability_target or i.target.size == 0:
        return False
    t = i.target.astype(np.float64)
    sums = t.sum(axis=0 if t.ndim == 1 else 1)
    return bool(not np.allclose(sums, 1.0, rtol=0, atol=1e-6) or (t < 0).any())


def _spread(i: CallInputs) -> float:
    """The largest gap between a row's maximum and another of its logits (inf for a -inf)."""
    x = np.asarray(i.logits, np.float64)
    if x.size == 0:
        return 0.0
    rows = np.moveaxis(x.reshape(1, -1) if x.ndim == 1 else x, 1, -1).reshape(
        -1, x.shape[0 if x.ndim == 1 else 1]
    )
    with np.errstate(invalid="ignore"):
        return float(np.nanmax(rows.max(axis=1, keepdims=True) - rows))


def _error_kind(case: Case) -> str | None:
    return case.expect_error


def raised(framework: Outcome, torch: Outcome, inputs: CallInputs) -> bool:
    """The framework raised (a Python error) where PyTorch returns."""
    return framework.error is not None and not framework.crashed and torch.error is None


def returned(framework: Outcome, torch: Outcome, inputs: CallInputs) -> bool:
    """The framework returned, or crashed, where PyTorch raises (an invalid call)."""
    return (framework.error is None or framework.crashed) and torch.error is not None


def _far(a: np.ndarray | None, b: np.ndarray | None, rtol: float) -> bool:
    """Whether ``a`` differs from ``b`` by more than ``rtol`` relative to ``b`` (elementwise),
    or in where NaN and infinities are."""
    if a is None or b is None:
        return a is not b
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return True
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.where(finite, 0, a), np.where(finite, 0, b), equal_nan=True):
        return True
    return bool(np.any(np.abs(a - b)[finite] > rtol * np.abs(b)[finite]))


def values_off(
    rtol_units: float, at_least: float = 0.0
) -> Callable[[Outcome, Outcome, CallInputs], bool]:
    """The losses or the gradients differ, relative to PyTorch's, by more than
    ``rtol_units`` unit roundoffs of the call's dtype and more than ``at_least``."""

    def differs(framework: Outcome, torch: Outcome, inputs: CallInputs) -> bool:
        if framework.error is not None or torch.error is not None:
            return False
        rtol = max(rtol_units * UNIT_ROUNDOFF[inputs.dtype], at_least)
        return _far(framework.loss, torch.loss, rtol) or _far(framework.grad, torch.grad, rtol)

    return differs


#: a float64 result at float32's accuracy: off by more than 2**10 float64 roundoffs
FLOAT64_AT_FLOAT32 = 2.0**10
#: a different value, whatever the dtype: off by 0.1% and by 64 unit roundoffs
CLEARLY = values_off(64, at_least=1e-3)


def half_precision_arithmetic(
    explanation: str,
    title: str = "float16 and bfloat16 are computed in their own precision",
    own: bool | None = None,
) -> Divergence:
    """A framework that computes a float16 or bfloat16 call in that dtype, where PyTorch's
    CPU kernels compute log_softmax in float32: the values are off by more than 8 unit
    roundoffs of the dtype."""
    return Divergence(
        "half-precision-arithmetic",
        title,
        explanation,
        lambda i, c: i.dtype in ("float16", "bfloat16"),
        values_off(8),
        own=own,
    )


# ----------------------------------------------------------------------------- mlx


def _mlx_native(i: CallInputs) -> Outcome:
    import mlx.core as mx
    import mlx.nn as nn

    dt = {"float64": mx.float64, "float32": mx.float32, "float16": mx.float16,
          "bfloat16": mx.bfloat16}[i.dtype]  # fmt: skip
    x = mx.array(np.array(i.logits)).astype(dt)
    t = mx.array(np.array(i.target))
    t = t.astype(dt) if i.probability_target else t
    w = None if i.weight is None else mx.take(mx.array(np.array(i.weight)).astype(dt), t)

    def f(x: Any) -> Any:
        return nn.losses.cross_entropy(
            x, t, weights=w, axis=0 if x.ndim == 1 else 1,
            label_smoothing=i.label_smoothing, reduction=i.reduction,
        )  # fmt: skip

    loss, grad = f(x), mx.grad(lambda x: f(x).sum())(x)
    return Outcome(np.array(loss.astype(mx.float64)), np.array(grad.astype(mx.float64)))


MLX = [
    Divergence(
        "smoothing-one",
        "`label_smoothing=1.0` raises",
        "mlx accepts label smoothing in [0, 1) only (`ValueError: Label smoothing must be in "
        "[0, 1)`); PyTorch accepts [0, 1], where 1 gives the uniform target.",
        lambda i, c: i.label_smoothing == 1.0,
        raised,
    ),
    Divergence(
        "empty",
        "an empty batch raises",
        "`mx.logsumexp` of no positions raises `ValueError: [logsumexp] Received empty "
        "array`; PyTorch gives an empty `none`, a 0 `sum` and a NaN `mean`.",
        lambda i, c: i.logits.size == 0,
        raised,
    ),
    Divergence(
        "invalid-not-checked",
        "invalid calls return a value",
        "mlx checks neither that class indices lie in [0, C) (`take_along_axis` reads outside "
        "the row: garbage, and a segmentation fault for an index of 10**6) nor the weight's length (the adapter's `mx.take(weight, target)` reads what the "
        "targets index), nor a batch of targets that broadcasts; PyTorch raises for each.",
        lambda i, c: _error_kind(c) is not None,
        returned,
    ),
    Divergence(
        "per-position-weights",
        "weights are per position: a weighted mean divides by N, smoothing is weighted by w[y]",
        "mlx's `weights` multiply each position's loss (the adapter passes `weight[target]`), "
        "and `mean` is `mx.mean` of the weighted losses: it divides by the number of positions, "
        "where PyTorch divides by the sum of the targets' weights (so a zero total weight gives "
        "0, not NaN). With label smoothing the whole smoothed loss is multiplied by w[y], where "
        "PyTorch weighs the smoothing term of each class by that class's weight.",
        lambda i, c: _has_weight(i) and (i.reduction == "mean" or i.label_smoothing > 0),
        CLEARLY,
    ),
    Divergence(
        "unnormalised-probabilities",
        "probability targets are assumed to sum to 1",
        "mlx computes `lse(x) - sum(y * x)` (and smooths with the mean of the logits), which "
        "equals PyTorch's `-sum(y * log_softmax(x))` only when each row of y sums to 1; "
        "PyTorch does not require it (`sum(y) * lse(x) - sum(y * x)`).",
        lambda i, c: _unnormalised(i),
        CLEARLY,
    ),
    Divergence(
        "float64-at-float32-accuracy",
        "float64 is computed at float32's accuracy",
        "On the CPU mlx's float64 `logsumexp` is accurate to float32's precision, not "
        "float64's (the run's `numerics/huge_1e300_float64` also gives NaN).",
        lambda i, c: i.dtype == "float64",
        values_off(FLOAT64_AT_FLOAT32),
    ),
    half_precision_arithmetic(
        "On the CPU mlx computes and reduces in the logits' dtype (its docstring says so: "
        "'upcast them to get the same accuracy'): `lse(x) - x[y]` cancels to 0 for a confident "
        "position, and a float16 sum over many positions overflows to inf. PyTorch's CPU "
        "kernels compute log_softmax in float32 for half inputs.",
    ),
]

# ----------------------------------------------------------------------------- paddle


def _paddle_native(i: CallInputs) -> Outcome:
    import paddle
    import paddle.nn.functional as F

    x = paddle.to_tensor(np.array(i.logits), stop_gradient=False)
    w = None if i.weight is None else paddle.to_tensor(np.array(i.weight))
    loss = F.cross_entropy(
        x, paddle.to_tensor(np.array(i.target)), weight=w, ignore_index=i.ignore_index,
        reduction=i.reduction, soft_label=i.probability_target,
        axis=0 if x.ndim == 1 else 1, label_smoothing=i.label_smoothing,
    )  # fmt: skip
    (grad,) = paddle.grad([loss.sum()], [x])
    return Outcome(loss.numpy().astype(np.float64), grad.numpy().astype(np.float64))


def _smoothing_index(i: CallInputs) -> bool:
    return i.label_smoothing > 0 and not i.probability_target


def _soft(i: CallInputs) -> bool:
    """Paddle's soft-label path: probability targets, or any label smoothing."""
    return i.probability_target or i.label_smoothing > 0


def _mean_of_nothing(i: CallInputs) -> bool:
    """A mean whose PyTorch denominator is 0: every target ignored, or kept weights
    summing to 0 (index targets)."""
    if i.reduction != "mean" or i.probability_target or i.logits.size == 0:
        return False
    keep = i.target != i.ignore_index
    w = np.ones(i.logits.shape[0 if i.logits.ndim == 1 else 1]) if i.weight is None else i.weight
    return float(np.sum(np.where(keep, np.asarray(w)[np.where(keep, i.target, 0)], 0))) == 0.0


PADDLE = [
    Divergence(
        "smoothing-kdim",
        "label smoothing of K-dimensional input takes its depth from the last axis",
        "With `label_smoothing > 0` paddle turns class indices into one-hot rows with "
        "`one_hot(label, input.shape[-1])`, the last axis's size, not the class axis's "
        "(`axis=1`): the call raises (an index beyond that size, or one-hot rows of the "
        "wrong length) or smooths over the wrong classes.",
        lambda i, c: _smoothing_index(i) and _kdim(i),
        lambda a, b, i: raised(a, b, i) or CLEARLY(a, b, i),
    ),
    Divergence(
        "smoothing-ignored",
        "label smoothing with an ignored target raises",
        "`one_hot` of an ignored target (-100, or any index outside [0, C)) raises "
        "`Illegal index value`; an ignored target inside [0, C) is smoothed and counted as a "
        "real one. PyTorch leaves ignored positions out of both terms.",
        lambda i, c: _smoothing_index(i) and _ignores(i),
        lambda a, b, i: raised(a, b, i) or CLEARLY(a, b, i),
    ),
    Divergence(
        "soft-label-weight-kdim",
        "class weights with soft labels on K-dimensional input raise",
        "paddle maps the weight onto soft labels (probability targets, or smoothed indices) "
        "by `matmul(label, weight)`, which assumes the class axis is the last: with `axis=1` "
        "and K-dimensional input the shapes do not fit (`In operator matmul ...`).",
        lambda i, c: _has_weight(i) and _soft(i) and _kdim(i),
        raised,
    ),
    Divergence(
        "smoothing-mean-nonnegative-ignore-index",
        "a smoothed mean with ignore_index >= 0 divides by N * C",
        "With `label_smoothing > 0` the labels are soft (N, C) rows, and a `mean` with "
        "`ignore_index >= 0` counts the entries of those rows that differ from ignore_index: "
        "it divides by about N * C instead of the number of kept targets.",
        lambda i, c: _smoothing_index(i) and i.reduction == "mean" and i.ignore_index >= 0,
        CLEARLY,
    ),
    Divergence(
        "soft-label-weight",
        "class weights with soft labels weigh the whole row by sum(w * y)",
        "For soft labels (probability targets, or smoothed indices) paddle computes "
        "`(sum_c w[c] y[c]) * (-sum_c y[c] log p[c])` and divides a mean by the sum of those "
        "row weights; PyTorch computes `-sum_c w[c] y[c] log p[c]` and divides a mean of "
        "probability targets by N (of smoothed indices: by the sum of w[y]).",
        lambda i, c: _has_weight(i) and _soft(i),
        CLEARLY,
    ),
    Divergence(
        "smoothing-probability-kdim",
        "label smoothing of K-dimensional probability targets divides by the last axis",
        "`label_smooth` adds `eps / D` with D the size of the label's last axis, not of the "
        "class axis (`axis=1`).",
        lambda i, c: i.probability_target and i.label_smoothing > 0 and _kdim(i),
        CLEARLY,
    ),
    Divergence(
        "mean-of-nothing",
        "a mean over no kept target (or a zero total weight) is 0, not NaN",
        "paddle divides by `count + (count == 0)` (and `weight_sum + (weight_sum == 0)`) "
        "where PyTorch gives 0/0 = NaN.",
        lambda i, c: _mean_of_nothing(i),
        CLEARLY,
    ),
    Divergence(
        "ignored-mean-negative-index",
        "a mean with a negative ignore_index divides by N",
        "With `ignore_index < 0` (PyTorch's default is -100) and no weight, paddle's `mean` is "
        "`mean_all` of the losses, ignored positions included (as 0): it divides by N, not by "
        "the number of kept targets. A non-negative ignore_index is counted right.",
        lambda i, c: i.reduction == "mean" and _ignores(i) and i.ignore_index < 0,
        CLEARLY,
    ),
    Divergence(
        "log-softmax-clamped",
        "log-probabilities are clamped at about -64",
        "paddle's softmax clips each logit minus its row's maximum at -64 (`ValueClip` in "
        "its softmax kernel): a -inf logit, or one more than 64 below the maximum, gives a "
        "finite loss and a small non-zero gradient where PyTorch gives inf, the exact loss "
        "and 0 (and NaN for 0 * log 0 of a probability target).",
        lambda i, c: _spread(i) > 60,
        CLEARLY,
    ),
    Divergence(
        "probability-ignore-index-zero",
        "ignore_index=0 with probability targets is accepted",
        "paddle rejects `ignore_index > 0` with soft labels, PyTorch `ignore_index >= 0`: "
        "0 passes, and is not applied.",
        lambda i, c: c.expect_error == "ignore_index_with_probabilities",
        returned,
    ),
    Divergence(
        "smoothing-float32",
        "float64 label smoothing is computed in float32",
        "paddle builds the smoothed labels in float32 (`one_hot` gives float32; `label_smooth`'s "
        "epsilon is a float32 attribute) and casts them to float64, so eps / C and 1 - eps "
        "carry float32 rounding into a float64 loss.",
        lambda i, c: i.label_smoothing > 0 and i.dtype == "float64",
        values_off(FLOAT64_AT_FLOAT32),
    ),
    Divergence(
        "soft-label-gradient",
        "the gradient of probability targets assumes they sum to 1",
        "paddle's backward for soft labels is `softmax(x) - y`; the derivative of its own "
        "forward `-sum y log_softmax(x)` is `sum(y) * softmax(x) - y`, so the gradient is "
        "wrong (the loss is right) for rows that do not sum to 1.",
        lambda i, c: _unnormalised(i),
        CLEARLY,
    ),
]

# ----------------------------------------------------------------------------- tinygrad


def _tinygrad_native(i: CallInputs) -> Outcome:
    from tinygrad import Tensor, dtypes

    dt = {"float64": dtypes.float64, "float32": dtypes.float32, "float16": dtypes.float16,
          "bfloat16": dtypes.bfloat16}[i.dtype]  # fmt: skip
    x = Tensor(np.array(i.logits, order="C")).cast(dt)
    t = Tensor(np.array(i.target, order="C"))
    eps, red = i.label_smoothing, i.reduction
    if i.probability_target:  # the function with PyTorch's name and class axis
        loss = x.cross_entropy(t.cast(dt), reduction=red, label_smoothing=eps)
    elif i.weight is None:  # the one with ignore_index; class axis last
        xl = x.permute(0, *range(2, x.ndim), 1) if x.ndim > 2 else x
        loss = xl.sparse_categorical_crossentropy(
            t, ignore_index=i.ignore_index, label_smoothing=eps, reduction=red
        )
    else:  # the one with class weights
        w = Tensor(np.array(i.weight, order="C")).cast(dt)
        x2, t2 = (x.reshape(1, -1), t.reshape(1)) if x.ndim == 1 else (x, t)
        loss = x2.log_softmax(1).nll_loss(t2, w, ignore_index=i.ignore_index, reduction=red)
    (grad,) = loss.sum().gradient(x)
    return Outcome(loss.cast(dtypes.float64).numpy(), grad.cast(dtypes.float64).numpy())


def _all_ignored_mean(i: CallInputs) -> bool:
    return (
        i.reduction == "mean"
        and not i.probability_target
        and i.target.size > 0
        and bool(np.all(i.target == i.ignore_index))
    )


TINYGRAD = [
    Divergence(
        "invalid-not-checked",
        "invalid calls return a value",
        "tinygrad picks the target class by comparing with `arange(C)` (a one-hot mask), so a "
        "class index outside [0, C) selects nothing and gives a loss instead of an error.",
        lambda i, c: c.expect_error is not None,
        returned,
    ),
    Divergence(
        "ignore-index-minus-one",
        "`ignore_index=-1` ignores nothing",
        "`sparse_categorical_crossentropy` builds its mask as `Y != ignore_index` unless "
        "ignore_index is -1 (its default), where every position is kept: a target of -1 "
        "adds 0 (or the smoothing term) and counts in the mean's denominator.",
        lambda i, c: not i.probability_target and i.ignore_index == -1 and _ignores(i),
        CLEARLY,
    ),
    Divergence(
        "all-ignored-full-smoothing",
        "label_smoothing=1 with every target ignored gives a value",
        "With `label_smoothing=1.0` and every target ignored, `sparse_categorical_crossentropy` "
        "returns a finite mean with a non-zero gradient; PyTorch gives 0/0 = NaN and a zero "
        "gradient (the smoothing term of an ignored position is masked out, as it is by "
        "tinygrad for smaller label_smoothing).",
        lambda i, c: _all_ignored_mean(i) and i.label_smoothing == 1.0 and i.weight is None,
        CLEARLY,
    ),
    Divergence(
        "all-ignored-weighted-mean",
        "a weighted mean over no kept target is -0, not NaN",
        "`log_softmax().nll_loss(weight=...)` divides the masked sum by the masked weights "
        "and returns -0 when every target is ignored; PyTorch gives 0/0 = NaN.",
        lambda i, c: _all_ignored_mean(i) and i.weight is not None,
        CLEARLY,
    ),
    Divergence(
        "all-ignored-mean-gradient",
        "a mean over no kept target has a NaN gradient",
        "When every target is ignored, `sparse_categorical_crossentropy`'s mean is NaN "
        "(0/0, as PyTorch's) and so is its gradient; PyTorch's gradient is zero there.",
        lambda i, c: _all_ignored_mean(i),
        CLEARLY,
    ),
    Divergence(
        "neg-inf-logit-half",
        "a -inf logit gives NaN in float16 and bfloat16",
        "`sparse_categorical_crossentropy` (`tinygrad/mixin/op.py`, tinygrad 0.14.0) sums `log_probs * "
        "one_hot(y)` over the classes: in float16 and bfloat16 the -inf log-probability of a "
        "non-target class times its 0 is NaN, where PyTorch gives the finite loss (tinygrad's "
        "float32 and float64 kernels do too).",
        lambda i, c: i.dtype in ("float16", "bfloat16") and _neg_inf_logit(i),
        CLEARLY,
    ),
    half_precision_arithmetic(
        "tinygrad computes the log-softmax and the reductions in the tensor's dtype: a "
        "confident position's loss rounds to 0 (or to the nearest half-precision value), where "
        "PyTorch's CPU kernels compute log_softmax in float32 for half inputs.",
    ),
]

# ----------------------------------------------------------------------------- keras


def _keras_native(i: CallInputs) -> Outcome:
    """Keras 3's losses called as a Keras user does (class axis last, a sample weight w[y]),
    on JAX, in the case's dtype; the gradient of the sum by ``jax.vjp``."""
    import os

    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import keras

    x, t = np.asarray(i.logits, np.float64), np.asarray(i.target)
    if x.ndim == 1:
        x, t = x[None, :], t[None, ...]
    else:
        x = np.moveaxis(x, 1, -1)
        t = np.moveaxis(t, 1, -1) if i.probability_target and t.ndim == x.ndim else t
    reduction = {"mean": "sum_over_batch_size"}.get(i.reduction, i.reduction)
    eps, sw = float(i.label_smoothing), None
    if i.probability_target or eps:
        y = t if i.probability_target else np.eye(x.shape[-1])[t]
        loss_fn = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=eps, reduction=reduction, dtype=i.dtype
        )
    else:
        y = t
        loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=int(i.ignore_index), reduction=reduction,
            dtype=i.dtype,
        )  # fmt: skip
    if i.weight is not None and not i.probability_target:
        sw = np.asarray(i.weight, np.float64)[np.where(t != i.ignore_index, t, 0)]
    xs = jnp.asarray(x, dtype=jnp.dtype(i.dtype))
    loss, vjp = jax.vjp(lambda v: loss_fn(y, v, sample_weight=sw), xs)
    (grad,) = vjp(jnp.ones_like(loss))
    grad = np.asarray(grad, np.float64)
    grad = grad.reshape(i.logits.shape) if i.logits.ndim == 1 else np.moveaxis(grad, -1, 1)
    return Outcome(np.asarray(loss, np.float64), grad)


def _shape_differs(framework: Outcome, torch: Outcome, inputs: CallInputs) -> bool:
    return (
        framework.error is None
        and torch.error is None
        and np.shape(framework.loss) != np.shape(torch.loss)
    )


def _labels_inexact(i: CallInputs) -> bool:
    """Class indices that the case's (half) dtype cannot represent."""
    if i.probability_target or i.dtype not in ("float16", "bfloat16"):
        return False
    return not is_exact(np.asarray(i.target, np.float64), i.dtype)


def _neg_inf_logit(i: CallInputs) -> bool:
    return not i.probability_target and bool(np.isneginf(np.asarray(i.logits)).any())


def _nan_in_ignored_row(i: CallInputs) -> bool:
    """Index targets with a non-finite logit in a position whose target is ignored."""
    if i.probability_target or not _ignores(i):
        return False
    x = np.asarray(i.logits, np.float64)
    rows = ~np.isfinite(x).all(axis=0 if x.ndim == 1 else 1)
    return bool(np.any(rows & (np.asarray(i.target) == i.ignore_index)))


KERAS_SOURCE = "keras 3.15.1, `keras/src/losses/loss.py`"

KERAS = [
    Divergence(
        "invalid-not-checked",
        "invalid calls return a value",
        "Keras validates none of the arguments PyTorch rejects: a class index outside [0, C) "
        "gets a one-hot row of zeros from `jax.nn.one_hot` (in "
        "`keras/src/backend/jax/nn.py`'s `sparse_categorical_crossentropy`), so its loss is 0; "
        "`CategoricalCrossentropy` takes `label_smoothing` > 1; and a class weight of the wrong "
        "length or an `ignore_index` with probability targets has nothing to be checked "
        "against (Keras losses have neither: the adapter passes `w[y]` as the sample weight, "
        "and `CategoricalCrossentropy` has no `ignore_class`).",
        lambda i, c: c.expect_error is not None,
        returned,
        own=True,
    ),
    Divergence(
        "empty-batch",
        "a reduced loss over an empty batch is an empty array",
        f"`reduce_values` ({KERAS_SOURCE}) returns the per-position losses unreduced when "
        "their shape is `(0,)`, so `sum` and `sum_over_batch_size` of an empty batch give "
        "an array of shape (0,), not a scalar (PyTorch: 0 and NaN; the keras dialect: 0 and "
        "0).",
        lambda i, c: i.logits.size == 0 and i.logits.ndim == 2 and i.reduction != "none",
        _shape_differs,
        own=True,
    ),
    Divergence(
        "labels-in-loss-dtype",
        "class indices are rounded to the loss's dtype",
        "`Loss.__call__` converts `y_true` to the loss's dtype before the loss function casts "
        f"it back to int32 ({KERAS_SOURCE}, `keras/src/backend/jax/nn.py`): with "
        "`dtype='bfloat16'` a class index above 256 (float16: above 2048) that the dtype "
        "cannot represent becomes a neighbouring class. With Keras's default `dtype=None` "
        "(`floatx()`, float32) the labels stay exact.",
        lambda i, c: _labels_inexact(i),
        CLEARLY,
        own=True,
    ),
    Divergence(
        "neg-inf-logit",
        "a -inf logit gives NaN",
        "`sparse_categorical_crossentropy` computes `-sum(one_hot(y) * log_softmax(x))` "
        "(`keras/src/backend/jax/nn.py`): a -inf logit of a class other than the target "
        "makes `0 * -inf = NaN`, where PyTorch picks `log_softmax(x)[y]` and gives a finite "
        "loss. Under both dialects.",
        lambda i, c: _neg_inf_logit(i),
        CLEARLY,
        own=True,
    ),
    half_precision_arithmetic(
        "The loss is computed in its dtype (the adapter passes `dtype=` the case's, as a user "
        "asking for a half-precision loss does): `log_softmax` and the reductions run in "
        "float16 or bfloat16, so a confident position's loss rounds to -0 and a float16 sum "
        "over 70,000 positions overflows. PyTorch's CPU kernels compute log_softmax in "
        "float32 for half inputs. Under both dialects; with Keras's default `dtype=None` "
        "(`floatx()`, float32) a half-precision input is computed in float32.",
        own=True,
    ),
    Divergence(
        "dialect-nothing-kept",
        "(dialect) a mean over no kept target is 0",
        "Keras divides with `divide_no_nan` (`apply_mask`, `reduce_values`, "
        f"{KERAS_SOURCE}): every target ignored, kept sample weights summing to 0, or an "
        "input with no position (N x C x 0) give a mean of 0 and a zero gradient where "
        "PyTorch gives 0/0 = NaN. Conforms under the keras dialect.",
        lambda i, c: _mean_of_nothing(i) or (i.logits.size == 0 and i.reduction == "mean"),
        CLEARLY,
        own=False,
    ),
    Divergence(
        "dialect-ignored-row",
        "(dialect) an ignored position's NaN logits do not reach the gradient",
        "With `ignore_class`, `sparse_categorical_crossentropy` replaces an ignored position's "
        "logits by zeros before the softmax (`ops.where(valid_mask, y_pred, 0)`, "
        "`keras/src/losses/losses.py`): the gradient is 0 where PyTorch's is NaN. Conforms "
        "under the keras dialect.",
        lambda i, c: _nan_in_ignored_row(i),
        CLEARLY,
        own=False,
    ),
    Divergence(
        "dialect-smoothing-weight",
        "(dialect) with label smoothing the whole loss carries w[y]",
        "Keras weighs each position's loss by its sample weight w[y] "
        f"(`reduce_weighted_values`, {KERAS_SOURCE}), the smoothing term included; PyTorch "
        "weighs the smoothing term of each class by that class's weight. Conforms under the "
        "keras dialect.",
        lambda i, c: _has_weight(i) and _smoothing_index(i),
        CLEARLY,
        own=False,
    ),
    Divergence(
        "dialect-weighted-mean",
        "(dialect) a weighted mean divides by the number of kept positions",
        "`sum_over_batch_size` divides the sum of the weighted losses by the number of "
        f"positions, the ignored ones masked out (`apply_mask`, `reduce_values`, "
        f"{KERAS_SOURCE}); PyTorch divides by the sum of the kept targets' weights. Conforms "
        "under the keras dialect.",
        lambda i, c: _has_weight(i) and i.reduction == "mean" and not i.probability_target,
        CLEARLY,
        own=False,
    ),
]

# ----------------------------------------------------------------------------- tensorflow


def _tensorflow_native(i: CallInputs) -> Outcome:
    """``tf.nn.(sparse_)softmax_cross_entropy_with_logits`` in the case's dtype, class axis
    last; the gradient of the sum by ``tf.GradientTape``."""
    import tensorflow as tf

    x, t = np.asarray(i.logits, np.float64), np.asarray(i.target)
    if x.ndim == 1:
        x, t = x[None, :], t[None, ...]
    else:
        x = np.moveaxis(x, 1, -1)
        t = np.moveaxis(t, 1, -1) if i.probability_target and t.ndim == x.ndim else t
    xs = tf.Variable(tf.cast(tf.constant(x), i.dtype))
    with tf.GradientTape() as tape:
        if i.probability_target:
            loss = tf.nn.softmax_cross_entropy_with_logits(tf.cast(t, i.dtype), xs)
        else:
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(t), xs)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, xs).numpy().astype(np.float64)
    grad = grad.reshape(i.logits.shape) if i.logits.ndim == 1 else np.moveaxis(grad, -1, 1)
    loss = loss.numpy().astype(np.float64)
    return Outcome(loss.reshape(()) if i.logits.ndim == 1 else loss, grad)


TENSORFLOW = [
    Divergence(
        "unnormalised-probabilities-gradient",
        "the gradient of probability targets assumes they sum to 1",
        "`softmax_cross_entropy_with_logits`'s fused kernel returns `softmax(x) - y` as the "
        "gradient (`backprop: prob - labels` in `tensorflow/core/kernels/xent_op.h`, tensorflow "
        "2.21.0); the derivative of its own loss "
        "`-sum(y * log_softmax(x))` is `sum(y) * softmax(x) - y`, so the gradient is wrong "
        "(the loss is right) for rows that do not sum to 1.",
        lambda i, c: _unnormalised(i),
        CLEARLY,
    ),
    half_precision_arithmetic(
        "The CPU kernel computes a bfloat16 call in bfloat16: the log-softmax rounds a "
        "confident position's loss to 0 (its float16 results conform). PyTorch's CPU kernels "
        "compute log_softmax in float32 for half inputs.",
        title="bfloat16 is computed in bfloat16",
    ),
]

# ----------------------------------------------------------------------------- registry

#: framework -> (its divergences, in the order they are tried; the by-hand call)
FRAMEWORKS: dict[str, tuple[list[Divergence], Callable[[CallInputs], Outcome]]] = {
    "mlx": (MLX, _mlx_native),
    "paddle": (PADDLE, _paddle_native),
    "tinygrad": (TINYGRAD, _tinygrad_native),
    "keras": (KERAS, _keras_native),
    "tensorflow": (TENSORFLOW, _tensorflow_native),
}


# ----------------------------------------------------------------------------- classify


@dataclass
class Explained:
    divergence: Divergence
    results: list[dict]


def classify(
    framework: str, report: dict, cases: dict[str, Case]
) -> tuple[list[Explained], list[dict]]:
    """Each non-conforming result of ``report`` under the first divergence of ``framework``
    that matches it; the results no divergence explains."""
    divergences = FRAMEWORKS[framework][0]
    groups = {d.key: Explained(d, []) for d in divergences}
    unexplained = []
    for r in report["results"]:
        status = r.get("torch_status", r["status"])
        if status not in NOT_CONFORMING:
            continue
        case = cases[r["case_id"]]
        inputs = case.inputs(r["dtype"])
        fails_own = r["status"] in NOT_CONFORMING
        for d in divergences:
            if d.own is not None and d.own != fails_own:
                continue
            if d.matches(inputs, case):
                groups[d.key].results.append(r)
                break
        else:
            unexplained.append(r)
    return [g for g in groups.values() if g.results], unexplained


# ----------------------------------------------------------------------------- by hand


def torch_float64(i: CallInputs) -> Outcome:
    """``F.cross_entropy`` on the same values in float64; the gradient is that of the sum."""
    import torch
    import torch.nn.functional as F

    x = torch.tensor(np.asarray(i.logits, np.float64), requires_grad=True)
    if i.probability_target:
        t = torch.tensor(np.asarray(i.target, np.float64))
    else:
        t = torch.tensor(np.asarray(i.target))
    w = None if i.weight is None else torch.tensor(np.asarray(i.weight, np.float64))
    try:
        loss = F.cross_entropy(x, t, weight=w, ignore_index=i.ignore_index,
                               reduction=i.reduction, label_smoothing=i.label_smoothing)  # fmt: skip
        (grad,) = torch.autograd.grad(loss.sum(), x)
    except Exception as e:
        return Outcome(error=f"{type(e).__name__}: {_first_line(e)}")
    return Outcome(loss.detach().numpy(), grad.numpy())


def _call_in_child(call: Callable[[CallInputs], Outcome], i: CallInputs, conn: Any) -> None:
    try:
        conn.send(call(i))
    except Exception as e:
        conn.send(Outcome(error=f"{type(e).__name__}: {_first_line(e)}"))


def by_hand(call: Callable[[CallInputs], Outcome], i: CallInputs) -> Outcome:
    """``call(i)`` in a fresh process: an invalid call may crash the framework (mlx 0.32
    reads and writes outside its buffers for a class index beyond C: a segmentation fault),
    which then is the outcome, ``crashed``."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_call_in_child, args=(call, i, child))
    process.start()
    child.close()
    outcome = None
    if parent.poll(600):  # also true when the child died, and recv then raises EOFError
        try:
            outcome = parent.recv()
        except EOFError:
            outcome = None
    process.join(60)
    if outcome is None:
        return Outcome(error=f"crashed (exit code {process.exitcode})", crashed=True)
    return outcome


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 160 else line[:157] + "..."


def _values(a: Any) -> str:
    if a is None:
        return "None"
    a = np.asarray(a)
    if a.size <= 8:
        text = np.array2string(a, precision=17, separator=", ", floatmode="maxprec")
        return " ".join(text.split())
    return f"array of shape {a.shape}, first {np.array2string(a.reshape(-1)[:4], precision=6, separator=', ')}"


def _inputs_text(i: CallInputs) -> str:
    parts = [f"logits {_values(i.logits)}", f"target {_values(i.target)}"]
    if i.weight is not None:
        parts.append(f"weight {_values(i.weight)}")
    parts.append(f"reduction={i.reduction!r}")
    if i.ignore_index != -100:
        parts.append(f"ignore_index={i.ignore_index}")
    if i.label_smoothing:
        parts.append(f"label_smoothing={i.label_smoothing}")
    return ", ".join(parts)


def repro_order(group: Explained, cases: dict[str, Case]) -> list[dict]:
    """The group's results in the order to try as its repro: those of its most common
    status first, then non-empty inputs, the fewest features, the smallest logits,
    float64 first."""
    dtype_rank = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
    statuses = Counter(r.get("torch_status", r["status"]) for r in group.results)
    common = statuses.most_common(1)[0][0]

    def key(r: dict) -> tuple[bool, bool, int, int, int, str]:
        n = cases[r["case_id"]].inputs(r["dtype"]).logits.size
        status = r.get("torch_status", r["status"])
        return (status != common, n == 0, len(r["features"]), n, dtype_rank[r["dtype"]],
                r["case_id"])  # fmt: skip

    return sorted(group.results, key=key)


def render_group(
    framework: str, version: str, group: Explained, cases: dict[str, Case], tries: int = 5
) -> tuple[str, bool]:
    """The divergence's Markdown entry and whether a by-hand repro confirmed it (the
    smallest of its cases first, up to ``tries`` of them)."""
    d = group.divergence
    statuses = Counter(r.get("torch_status", r["status"]) for r in group.results)
    dtypes = sorted({r["dtype"] for r in group.results}, key=list(UNIT_ROUNDOFF).index)
    count = ", ".join(f"{n} {s}" for s, n in statuses.most_common())
    lines = [f"- **{d.title}** ({count}; {', '.join(dtypes)}). {d.explanation}"]
    call = FRAMEWORKS[framework][1]
    failed = []
    for r in repro_order(group, cases)[:tries]:
        case = cases[r["case_id"]]
        inputs = case.inputs(r["dtype"])
        mine, ref = by_hand(call, inputs), torch_float64(inputs)
        with_grad = (
            mine.error is None
            and ref.error is None
            and not _far(mine.loss, ref.loss, FLOAT64_AT_FLOAT32 * UNIT_ROUNDOFF[inputs.dtype])
        )
        if d.differs(mine, ref, inputs):
            lines.append(
                f"  Repro `{case.id}` [{r['dtype']}]: {_inputs_text(inputs)}.\n"
                f"  {framework} {version}: {mine.text(with_grad)}; "
                f"torch float64: {ref.text(with_grad)}."
            )
            return "\n".join(lines), True
        failed.append(f"  NOT CONFIRMED on `{case.id}` [{r['dtype']}]: {framework} "
                      f"{mine.text(True)}; torch float64 {ref.text(True)}.")  # fmt: skip
    return "\n".join(lines + failed), False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=sorted(FRAMEWORKS))
    parser.add_argument("report", type=Path)
    parser.add_argument("--classify-only", action="store_true",
                        help="no by-hand repros (no framework needed)")  # fmt: skip
    args = parser.parse_args(argv)
    report = read_report(args.report)
    cases = {c.id: c for c in harness.load_suite()}
    groups, unexplained = classify(args.framework, report, cases)
    adapter = report["adapters"][0]
    version = adapter.get("version", "")
    total = sum(len(g.results) for g in groups) + len(unexplained)
    semantics = adapter.get("semantics", "torch")
    own = sum(r["status"] in NOT_CONFORMING for r in report["results"])
    under_own = f" ({own} under its own {semantics} semantics)" if semantics != "torch" else ""
    print(f"{args.framework} {version} ({adapter.get('wraps', '')}, {adapter.get('device', '')}): "
          f"{total} of {len(report['results'])} results do not conform to PyTorch's "
          f"semantics{under_own}, by {len(groups)} divergences, each checked by hand against "
          f"torch float64 on the smallest case it explains:\n")  # fmt: skip
    ok = not unexplained
    for g in groups:
        if args.classify_only:
            print(f"- {g.divergence.key}: {len(g.results)}")
            continue
        text, confirmed = render_group(args.framework, version, g, cases)
        print(text)
        ok = ok and confirmed
    for r in unexplained:
        print(f"- UNEXPLAINED `{r['case_id']}` [{r['dtype']}] {r['status']}: {r['message'][:200]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
