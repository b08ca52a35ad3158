"""The oracle: exact expected values and their rounding-error bounds.

Layer 1 (above ``harness.adapters``): imports nothing else of lossconf.
``problem`` holds the types (Problem, Expected); ``fast`` and ``exact`` compute;
``error_model`` bounds; ``cache`` keeps computed values on disk.
"""

from __future__ import annotations

from harness.oracle.exact import cross_entropy_mpmath  # noqa: F401  (benchmarks compare with it)
from harness.oracle.fast import cross_entropy_fast
from harness.oracle.problem import Expected, Problem

__all__ = ["Expected", "Problem", "cross_entropy"]


def cross_entropy(problem: Problem, *, want_grad: bool = True) -> Expected:
    """Expected loss (and gradient w.r.t. logits) of ``problem``, correctly rounded to float64.

    Computed by ``harness.oracle.fast`` (double-double arithmetic with an error
    bound per value, NumPy-vectorised); a value whose bound does not decide its
    rounding is recomputed here in mpmath. The results are bit-identical to
    ``cross_entropy_mpmath``, kernel fields included (softcap, logit_scale, z_loss,
    return_z_loss; shift is already in the problem's target).
    """
    return cross_entropy_fast(problem, want_grad=want_grad)
