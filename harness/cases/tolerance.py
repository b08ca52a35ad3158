"""A case's ``tolerance:`` field: extra room beyond the error model, for a stated reason.

Every verdict comes from the error model (``harness.oracle.error_model``): a value
passes when ``|got - expected| <= THRESHOLD * bound``, with a bound computed per
element from the arithmetic. A case may widen that for a genuine exception the
model does not cover, for every dtype or per dtype, and says why::

    tolerance: {grad_atol: 1e-3, reason: "..."}
    tolerance: {float16: {loss_rtol: 1e-2}, reason: "..."}

The four numbers add ``atol + rtol * |expected|`` to what is allowed; they are 0
unless a case sets them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

TOLERANCE_KEYS = ("loss_rtol", "loss_atol", "grad_rtol", "grad_atol")


@dataclass(frozen=True)
class Tolerance:
    """Room added to the error model's allowance (all 0 by default)."""

    loss_rtol: float = 0.0
    loss_atol: float = 0.0
    grad_rtol: float = 0.0
    grad_atol: float = 0.0

    def with_overrides(self, overrides: dict[str, float]) -> Tolerance:
        return replace(self, **{k: float(v) for k, v in overrides.items()})


NONE = Tolerance()


def resolve(dtype: str, overrides: dict) -> Tolerance:
    """The extra room for ``dtype`` from a case's ``tolerance`` field (already validated)."""
    flat = {k: v for k, v in overrides.items() if k in TOLERANCE_KEYS}
    per_dtype = {k: v for k, v in overrides.get(dtype, {}).items() if k in TOLERANCE_KEYS}
    return NONE.with_overrides({**flat, **per_dtype})
