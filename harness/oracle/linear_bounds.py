"""Error bounds of fused linear cross-entropy: the matmul terms on top of the cross-entropy's.

A correct implementation forms the logits ``z = h W^T + b`` in the case dtype with
accumulation in the compute precision (float32 for half precision), feeds them to a
correct cross-entropy, and forms the three gradients from ``G = dLoss/dz`` by two more
matrix products and a sum (docs/tolerances.md, "Fused linear cross-entropy")::

    dz_nv     = u_c sqrt(H + 1) S_nv + u_d (|z_nv| + |z_nv - b_v|)    S = |h| |W|^T + |b|
    loss, G:    harness.oracle.error_model.error_bounds with logit_error = dz
    grad_h    : E_G |W|  + u_c sqrt(V) |G| |W|  + u_d |grad_h| + tiny_d
    grad_W    : E_G^T |h| + u_c sqrt(P) |G|^T |h| + u_d |grad_W| + tiny_d
    grad_b    : sum_n E_G + u_c sqrt(P) sum_n |G| + u_d |grad_b| + tiny_d

``E_G`` (P, V) is the bound of G (which counts G's own storage in the dtype); a length-k
sum loses ``sqrt(k) u_c`` of the sum of its terms' magnitudes (Higham and Mary's
probabilistic bound, as in ``error_model``); each result is stored in the dtype once.
The bounds are formed with float64 matrix products of magnitudes (they need no more).
"""

from __future__ import annotations

import numpy as np

from harness.oracle.error_model import (
    COMPUTE_DTYPE,
    error_bounds,
    length_factor,
    subnormal_spacing,
    unit_roundoff,
)
from harness.oracle.linear import LinearExpected, LinearProblem, LinearValues


def logit_error(p: LinearProblem, dtype: str, z: np.ndarray) -> np.ndarray:
    """The error (P, V) a correct implementation may make in each logit it forms."""
    u_d = unit_roundoff(dtype)
    u_c = unit_roundoff(COMPUTE_DTYPE[dtype])
    h = np.abs(p.hidden_rows())
    length = float(length_factor(h.shape[1] + 1))
    out = np.empty_like(z)
    for block in p.blocks():
        s = h @ np.abs(p.classifier[block]).T
        stored = np.abs(z[:, block])
        if p.bias is not None:
            s += np.abs(p.bias[block])
            # the product, then the bias added: two roundings to the dtype
            stored = stored + np.abs(z[:, block] - p.bias[block])
        out[:, block] = u_c * length * s + u_d * stored
    return out


def linear_bounds(p: LinearProblem, dtype: str, values: LinearValues) -> LinearExpected:
    """``values.expected`` with the bound of every element filled in."""
    e = values.expected
    dz = logit_error(p, dtype, values.logits)
    ce = values.ce
    b = error_bounds(values.problem, dtype, ce.loss, ce.grad, ce.z_loss, logit_error=dz)
    shape = p.loss_shape()
    loss_bound = np.asarray(b.loss).reshape(shape)
    z_bound = None if b.z_loss is None else np.asarray(b.z_loss).reshape(shape)
    if e.grad_hidden is None or ce.grad is None or b.grad is None:
        return _with(e, loss_bound, None, None, None, z_bound)
    u_d = unit_roundoff(dtype)
    u_c = unit_roundoff(COMPUTE_DTYPE[dtype])
    tiny = subnormal_spacing(dtype)
    g = np.abs(np.nan_to_num(ce.grad, nan=0.0, posinf=0.0, neginf=0.0))
    e_g = np.nan_to_num(b.grad, nan=0.0, posinf=np.inf)
    h = np.abs(p.hidden_rows())
    n_pos, v = g.shape
    grad_h = np.zeros((n_pos, h.shape[1]))
    grad_w = np.empty(p.classifier.shape)
    len_v = float(length_factor(v))
    len_p = float(length_factor(n_pos))
    assert e.grad_classifier is not None
    with np.errstate(invalid="ignore", over="ignore"):
        for block in p.blocks():  # block by block: the temporaries stay a few blocks
            w = np.abs(p.classifier[block]).astype(np.float64)
            grad_h += e_g[:, block] @ w + (u_c * len_v) * (g[:, block] @ w)
            bound_w = e_g[:, block].T @ h + (u_c * len_p) * (g[:, block].T @ h)
            grad_w[block] = _stored(bound_w, e.grad_classifier[block], u_d, tiny)
        grad_b = e_g.sum(axis=0) + (u_c * len_p) * g.sum(axis=0)
        grad_h = _stored(grad_h.reshape(e.grad_hidden.shape), e.grad_hidden, u_d, tiny)
        grad_b = _stored(grad_b, e.grad_bias, u_d, tiny) if e.grad_bias is not None else None
    return _with(e, loss_bound, grad_h, grad_w, grad_b, z_bound)


def _stored(bound: np.ndarray, value: np.ndarray | None, u_d: float, tiny: float) -> np.ndarray:
    """A gradient's bound plus its own storage in the dtype; 0 where the value is not finite
    (compared exactly)."""
    assert value is not None
    finite = np.isfinite(value)
    out = bound + u_d * np.abs(np.where(finite, value, 0.0)) + tiny
    return np.where(finite, out, 0.0)


def _with(
    e: LinearExpected,
    loss: np.ndarray,
    grad_h: np.ndarray | None,
    grad_w: np.ndarray | None,
    grad_b: np.ndarray | None,
    z_loss: np.ndarray | None,
) -> LinearExpected:
    return LinearExpected(
        e.loss, e.grad_hidden, e.grad_classifier, e.grad_bias,
        loss, grad_h, grad_w, grad_b, e.z_loss, z_loss, e.oracle_error,
    )  # fmt: skip
