"""What the oracle computes from and returns: ``Problem`` and ``Expected``, and the class-last
layout every part of the oracle works in.

Shapes: logits (C,), (N, C) or (N, C, d1, ..., dK); class-index target (),
(N,) or (N, d1, ..., dK); probability target the shape of logits; weight (C,).

The kernel authors' fields (docs/kernel-features.md): ``logit_scale`` a and ``softcap`` s
turn each logit x into z = s * tanh(a * x / s) (z = a * x without a softcap); ``z_loss`` c
adds c * lse(z)**2 to each kept position; ``shift`` is applied when a call becomes a
Problem (``shift_target``), so the oracle only ever sees the shifted target.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from harness.adapters import CallInputs
from harness.oracle.dialect import TORCH, Dialect


def class_last(a: np.ndarray) -> np.ndarray:
    """A logits-shaped array, (C,), (N, C) or (N, C, d1, ..., dK), as (P, C): the class axis
    last, positions flattened. A view for 1-D and 2-D input; a copy for K-dimensional input."""
    a = np.asarray(a)
    if a.ndim == 1:
        return a[None, :]
    c = a.shape[1]
    if a.ndim > 2:
        a = np.ascontiguousarray(np.moveaxis(a, 1, -1))
    return a.reshape(-1, c)


def class_axis_back(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``class_last``: (P, C) rows laid out as a logits array of ``shape`` (a view)."""
    if len(shape) <= 2:
        return rows.reshape(shape)
    moved = (shape[0], *shape[2:], shape[1])
    return np.moveaxis(rows.reshape(moved), -1, 1)


def float64_or_none(a: np.ndarray | None) -> np.ndarray | None:
    """An optional input array in float64 (the oracle's view of it)."""
    return None if a is None else np.asarray(a, dtype=np.float64)


def shift_target(target: np.ndarray, shift: int, ignore_index: int) -> np.ndarray:
    """Class indices (..., T) for causal language modelling: position t takes target t + shift
    along the last axis, and the last ``shift`` positions, which have no next target, take
    ``ignore_index`` (the loss keeps its shape; Hugging Face's ``ForCausalLMLoss`` convention)."""
    t = np.asarray(target)
    if shift == 0:
        return t
    out = np.full_like(t, ignore_index)
    out[..., : t.shape[-1] - shift] = t[..., shift:]
    return out


@dataclass(frozen=True)
class Expected:
    """Expected values in float64: ``loss`` of the reduced shape, ``grad`` of the logits' shape
    or None; with each element's rounding-error bound (``harness.oracle.error_model``) in
    ``loss_bound`` and ``grad_bound`` (same shapes), None until computed (literal values in a
    case file carry none until the run asks for them). ``z_loss`` (the loss's shape, with
    ``z_loss_bound``): the z-loss term alone, for a call with ``return_z_loss``; else None."""

    loss: np.ndarray
    grad: np.ndarray | None
    loss_bound: np.ndarray | None = None
    grad_bound: np.ndarray | None = None
    z_loss: np.ndarray | None = None
    z_loss_bound: np.ndarray | None = None


@dataclass(frozen=True)
class Problem:
    """One cross-entropy call, with inputs already cast to the case dtype and held in float64."""

    logits: np.ndarray
    target: np.ndarray
    probability_target: bool
    weight: np.ndarray | None = None
    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    grad_output: np.ndarray | None = None
    softcap: float | None = None
    logit_scale: float = 1.0
    z_loss: float = 0.0
    return_z_loss: bool = False
    #: the weighting and reduction rules (harness.oracle.dialect); PyTorch's by default
    dialect: Dialect = TORCH

    def digest(self) -> bytes:
        """A sha256 of every field (arrays by dtype, shape and bytes): problems with equal
        digests have the same oracle values."""
        h = hashlib.sha256()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                h.update(f"{f.name}:{value.dtype.str}{value.shape}".encode())
                h.update(np.ascontiguousarray(value).data)
            else:
                h.update(f"{f.name}={value!r};".encode())
        return h.digest()

    @property
    def target_weighted(self) -> bool:
        """Whether each position's whole loss takes w[y_n] (the dialect's sample weights, with
        label smoothing and class-index targets) instead of a weight per class."""
        return self.weight is not None and self.dialect.target_weight(
            self.probability_target, self.label_smoothing != 0
        )

    @property
    def transformed(self) -> bool:
        """Whether the logits are scaled or capped before the loss (z != x)."""
        return self.softcap is not None or self.logit_scale != 1.0

    @property
    def kernel(self) -> bool:
        """Whether any kernel field is in use (softcap, logit_scale, z_loss, return_z_loss)."""
        return self.transformed or self.z_loss != 0.0 or self.return_z_loss

    @classmethod
    def of_call(
        cls, inputs: CallInputs, dialect: Dialect = TORCH, *, carrier_logits: bool = False
    ) -> Problem:
        """The oracle's view of a call: its inputs (already cast to the call's dtype, in
        their carrier) held in float64, so expected values are those of the cast inputs;
        weighted and reduced under ``dialect``.
        ``carrier_logits``: keep the logits in their carrier dtype instead (no float64 copy;
        ``fast.RowBlocks`` and ``error_model.RowBounds`` convert them block by block)."""
        f64 = float64_or_none
        probability = inputs.probability_target
        target = inputs.target
        if inputs.shift and not probability:
            target = shift_target(target, inputs.shift, inputs.ignore_index)
        return cls(
            logits=np.asarray(inputs.logits, dtype=None if carrier_logits else np.float64),
            target=np.asarray(target, dtype=np.float64) if probability else target,
            probability_target=probability,
            weight=f64(inputs.weight),
            reduction=inputs.reduction,
            ignore_index=inputs.ignore_index,
            label_smoothing=inputs.label_smoothing,
            grad_output=f64(inputs.grad_output),
            softcap=None if inputs.softcap is None else float(inputs.softcap),
            logit_scale=float(inputs.logit_scale),
            z_loss=float(inputs.z_loss),
            return_z_loss=bool(inputs.return_z_loss),
            dialect=dialect,
        )

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Logits as (P, C) and the target as (P,) or (P, C): class axis last, positions flattened."""
        return class_last(np.asarray(self.logits, dtype=np.float64)), self.target_rows()

    def target_rows(self) -> np.ndarray:
        """The target as (P,) int64 class indices or (P, C) float64 probabilities."""
        t = np.asarray(self.target)
        if self.probability_target:
            return class_last(t.astype(np.float64))
        return t.astype(np.int64).reshape(-1)

    def loss_shape(self) -> tuple[int, ...]:
        if self.reduction != "none" or self.logits.ndim == 1:
            return ()
        return (self.logits.shape[0], *self.logits.shape[2:])

    def upstream(self) -> np.ndarray | None:
        """grad_output as one value per position (P,), for reduction 'none'."""
        if self.grad_output is None:
            return None
        return np.asarray(self.grad_output, dtype=np.float64).reshape(-1)

    def grad_from_rows(self, g: np.ndarray) -> np.ndarray:
        """Inverse of ``rows`` for a (P, C) gradient."""
        return class_axis_back(g, np.shape(self.logits))
