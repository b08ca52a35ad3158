"""Default tolerances per dtype, separate for the loss and the gradient.

A value passes when ``|got - expected| <= atol + rtol * |expected|`` (NumPy's
``isclose`` rule). Cases override any of the four numbers, for every dtype or
per dtype::

    tolerance: {loss_rtol: 1e-4}             # all dtypes of the case
    tolerance: {float16: {grad_atol: 1e-3}}  # one dtype

How the defaults were chosen: a correct implementation that accumulates in at
least float32 and rounds once to the case dtype is off by at most a few units
in the last place (ulp) of that dtype: rtol is about 2 ulp (4 for float32,
whose reductions are themselves float32), atol covers results that are zero
or subnormal. The field's numbers (PyTorch, jax test_util) are close to these;
see SEMANTICS.md. Checked both ways by tests/test_mutants.py: a float32-accumulating
implementation (tests/mutants/stepwise.py) passes every case in every dtype, and
a naive in-dtype one (``HalfPrecisionAccumulation``) fails the half-precision
accumulation cases (C = 4096 and 32000, a mean over 70000 targets).

Gradients in half precision are differences of terms of size up to max(w); a
framework that stores log_softmax in the dtype (PyTorch and JAX autograd) loses
about an ulp *of those terms* to cancellation, which no per-element rtol can
absorb. Cases whose gradient terms are O(1) therefore raise ``grad_atol`` for
float16/bfloat16 in the case file (the grid and a few half-precision cases), and
the defaults stay tight so large cases, whose gradients are tiny, are still checked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

TOLERANCE_KEYS = ("loss_rtol", "loss_atol", "grad_rtol", "grad_atol")


@dataclass(frozen=True)
class Tolerance:
    loss_rtol: float
    loss_atol: float
    grad_rtol: float
    grad_atol: float

    def with_overrides(self, overrides: dict[str, float]) -> Tolerance:
        return replace(self, **{k: float(v) for k, v in overrides.items()})


DEFAULTS: dict[str, Tolerance] = {
    "float64": Tolerance(loss_rtol=1e-10, loss_atol=1e-12, grad_rtol=1e-10, grad_atol=1e-12),
    "float32": Tolerance(loss_rtol=5e-6, loss_atol=1e-6, grad_rtol=5e-6, grad_atol=1e-7),
    "float16": Tolerance(loss_rtol=2e-3, loss_atol=1e-5, grad_rtol=2e-3, grad_atol=1e-5),
    "bfloat16": Tolerance(loss_rtol=1.6e-2, loss_atol=1e-5, grad_rtol=1.6e-2, grad_atol=1e-5),
}


def resolve(dtype: str, overrides: dict) -> Tolerance:
    """The tolerance for ``dtype`` after a case's ``tolerance`` field (already validated)."""
    flat = {k: v for k, v in overrides.items() if k in TOLERANCE_KEYS}
    per_dtype = overrides.get(dtype, {})
    return DEFAULTS[dtype].with_overrides({**flat, **per_dtype})
