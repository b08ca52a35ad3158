"""The oracle of fused linear cross-entropy: hidden states and a classifier instead of logits.

Shapes: hidden (N, H) or (B, T, H); classifier (V, H); bias (V,) or None; target
(N,) or (B, T) class indices; grad_output the target's shape. With P = N (or B*T)
positions::

    z (P, V)        = hidden @ classifier.T + bias           the logits
    loss            = the cross-entropy of z (every field of harness.oracle.Problem)
    G (P, V)        = dLoss/dz
    grad_hidden     = G @ classifier                          (P, H), hidden's shape
    grad_classifier = G.T @ hidden                            (V, H)
    grad_bias       = G summed over positions                 (V,)

Precision (docs/fused-linear.md): the logits are formed by ``exact_matmul`` (the
bias added in double-double) and rounded to float64 once; the loss and G are the
exact values of ``harness.oracle.cross_entropy`` on those logits, correctly rounded;
the three gradients are the exact products of that G with the inputs, rounded once.
So each expected value is within one float64 rounding of its own magnitude plus
2**-53 of the sum of the magnitudes it is formed from (the logits' rounding passed
on), plus the splitting's truncation bound, which is 0 for float32, bfloat16 and
float16 inputs of moderate range and returned in ``LinearExpected.oracle_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.adapters import LinearCallInputs
from harness.oracle import cross_entropy
from harness.oracle.exact_matmul import exact_matmul, two_sum
from harness.oracle.problem import Expected, Problem, float64_or_none, shift_target

#: classifier rows per block: the oracle's temporaries stay near 8 float64 copies of a
#: block (2**22 elements = 32 MiB each) whatever the vocabulary
BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class LinearProblem:
    """One fused linear cross-entropy call, inputs cast to the case dtype and held in float64
    (the classifier in its carrier dtype: its values are exact either way, and a float64 copy
    would cost V x H x 8 bytes); the target already shifted (``shift_target``)."""

    hidden: np.ndarray
    classifier: np.ndarray
    bias: np.ndarray | None
    target: np.ndarray
    weight: np.ndarray | None = None
    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    grad_output: np.ndarray | None = None
    softcap: float | None = None
    logit_scale: float = 1.0
    z_loss: float = 0.0
    return_z_loss: bool = False

    @classmethod
    def of_call(cls, inputs: LinearCallInputs) -> LinearProblem:
        f64 = float64_or_none
        target = np.asarray(inputs.target)
        if inputs.shift:
            target = shift_target(target, inputs.shift, inputs.ignore_index)
        return cls(
            hidden=np.asarray(inputs.hidden, dtype=np.float64),
            classifier=np.asarray(inputs.classifier),
            bias=f64(inputs.bias),
            target=target,
            weight=f64(inputs.weight),
            reduction=inputs.reduction,
            ignore_index=inputs.ignore_index,
            label_smoothing=inputs.label_smoothing,
            grad_output=f64(inputs.grad_output),
            softcap=None if inputs.softcap is None else float(inputs.softcap),
            logit_scale=float(inputs.logit_scale),
            z_loss=float(inputs.z_loss),
            return_z_loss=bool(inputs.return_z_loss),
        )

    def hidden_rows(self) -> np.ndarray:
        """Hidden states as (P, H)."""
        return self.hidden.reshape(-1, self.hidden.shape[-1])

    def blocks(self) -> list[slice]:
        """Blocks of classifier rows (vocabulary entries), each of about BLOCK_ELEMENTS."""
        v, h = self.classifier.shape
        step = max(1, BLOCK_ELEMENTS // max(1, h))
        return [slice(lo, min(v, lo + step)) for lo in range(0, v, step)] or [slice(0, 0)]

    def logits_problem(self, logits: np.ndarray) -> Problem:
        """The cross-entropy of (P, V) ``logits`` with this call's target and fields."""
        go = None if self.grad_output is None else self.grad_output.reshape(-1)
        return Problem(
            logits=logits,
            target=self.target.reshape(-1).astype(np.int64),
            probability_target=False,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            grad_output=go,
            softcap=self.softcap,
            logit_scale=self.logit_scale,
            z_loss=self.z_loss,
            return_z_loss=self.return_z_loss,
        )

    def loss_shape(self) -> tuple[int, ...]:
        return () if self.reduction != "none" else tuple(self.target.shape)


@dataclass(frozen=True)
class LinearExpected:
    """Expected values in float64 and their error bounds (``harness.oracle.linear_bounds``),
    None until computed. ``oracle_error``: a bound of the oracle's own error beyond one
    float64 rounding per value (the splitting's truncation; 0 in the corpus)."""

    loss: np.ndarray
    grad_hidden: np.ndarray | None
    grad_classifier: np.ndarray | None
    grad_bias: np.ndarray | None
    loss_bound: np.ndarray | None = None
    grad_hidden_bound: np.ndarray | None = None
    grad_classifier_bound: np.ndarray | None = None
    grad_bias_bound: np.ndarray | None = None
    z_loss: np.ndarray | None = None
    z_loss_bound: np.ndarray | None = None
    oracle_error: float = 0.0

    #: the gradients, in the order reports name them
    GRADIENTS: ClassVar[tuple[str, ...]] = ("grad_hidden", "grad_classifier", "grad_bias")


@dataclass(frozen=True)
class LinearValues:
    """What ``fused_linear_cross_entropy`` computes: the expected values and the intermediate
    quantities the error bounds need (the logits and the cross-entropy on them)."""

    expected: LinearExpected
    logits: np.ndarray  # (P, V), the exact logits rounded to float64
    problem: Problem  # the cross-entropy on them
    ce: Expected  # its loss and G = dLoss/dz (P, V)


def logits_of(p: LinearProblem) -> tuple[np.ndarray, float]:
    """z = hidden @ classifier.T + bias (P, V), rounded to float64 once, and the bound of the
    splitting's truncation (0 when the inputs' digits run out first)."""
    h = p.hidden_rows()
    z = np.empty((h.shape[0], p.classifier.shape[0]))
    truncation = 0.0
    for block in p.blocks():
        hi, lo, bound = exact_matmul(h, p.classifier[block].T)
        if p.bias is not None:
            hi, err = two_sum(hi, np.broadcast_to(p.bias[block], hi.shape))
            lo = lo + err
        z[:, block] = hi + lo
        truncation = max(truncation, float(bound.max(initial=0.0)))
    return z, truncation


def fused_linear_cross_entropy(p: LinearProblem, *, want_grad: bool = True) -> LinearValues:
    """Expected loss and gradients of ``p`` (no bounds: ``harness.oracle.linear_bounds``)."""
    z, truncation = logits_of(p)
    problem = p.logits_problem(z)
    ce = cross_entropy(problem, want_grad=want_grad)
    loss = np.asarray(ce.loss).reshape(p.loss_shape())
    z_loss = None if ce.z_loss is None else np.asarray(ce.z_loss).reshape(p.loss_shape())
    if not want_grad or ce.grad is None:
        expected = LinearExpected(loss, None, None, None, z_loss=z_loss, oracle_error=truncation)
        return LinearValues(expected, z, problem, ce)
    g = ce.grad
    h = p.hidden_rows()
    grad_h, grad_w, grad_b, trunc_g = chain_rule(g, h, p.classifier, p.blocks())
    expected = LinearExpected(
        loss,
        grad_h.reshape(p.hidden.shape),
        grad_w,
        grad_b if p.bias is not None else None,
        z_loss=z_loss,
        oracle_error=max(truncation, trunc_g),
    )
    return LinearValues(expected, z, problem, ce)


def chain_rule(
    g: np.ndarray, h: np.ndarray, w: np.ndarray, blocks: list[slice]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(g @ w, g.T @ h, g.sum(0), truncation)`` for g (P, V), h (P, H), w (V, H), each
    formed exactly and rounded once; a non-finite g (a NaN loss's gradient) is multiplied in
    plain float64, which carries its NaN where PyTorch's would be."""
    if not np.isfinite(g).all():
        with np.errstate(invalid="ignore", over="ignore"):
            return g @ w, g.T @ h, g.sum(axis=0), 0.0
    p_rows, v = g.shape
    acc_hi = np.zeros((p_rows, w.shape[1]))
    acc_lo = np.zeros_like(acc_hi)
    grad_w = np.empty(w.shape)
    truncation = 0.0
    for block in blocks:
        hi, lo, bound = exact_matmul(g[:, block], w[block])
        acc_hi, err = two_sum(acc_hi, hi)
        acc_lo += err + lo
        truncation = max(truncation, float(bound.max(initial=0.0)))
        hi, lo, bound = exact_matmul(g[:, block].T, h)
        grad_w[block] = hi + lo
        truncation = max(truncation, float(bound.max(initial=0.0)))
    hi, lo, bound = exact_matmul(np.ones((1, p_rows)), g)
    truncation = max(truncation, float(bound.max(initial=0.0)))
    return acc_hi + acc_lo, grad_w, (hi + lo).reshape(v), truncation
