"""Semantics dialects: how a framework weights and reduces the per-position cross-entropy.

The oracle computes PyTorch's semantics by default (``TORCH``). Other frameworks differ by
design in a few places, all in the final weighting and reduction: Keras applies a class
weight as a sample weight ``w[y_n]`` on the whole position's loss and averages over the
positions it keeps, with ``divide_no_nan``. A ``Dialect`` names those choices; the oracle
(``harness.oracle.exact`` and ``harness.oracle.fast``) and the error model read them where the
terms are weighted and reduced, nowhere else. docs/semantics.md writes out each dialect with
its source.

Fields (the value ``TORCH`` takes first):

- ``weight_scope``: ``"class"``, ``w[c]`` multiplies each class's term inside the sum over
  classes (so under label smoothing every class's weight enters a position's loss);
  ``"target"``, the position's whole loss is multiplied by ``w[y_n]`` (a sample weight).
  The two agree without label smoothing; probability targets have no ``y_n`` and keep
  ``"class"``.
- ``mean_divisor``: ``"target_weights"``, a ``mean`` over class-index targets divides by the
  sum of ``w[y_n]`` over the kept positions; ``"kept_positions"``, by their number.
  Probability targets divide by the number of positions in every dialect.
- ``empty_mean``: ``"nan"``, a ``mean`` with a zero divisor is 0/0 = NaN (its gradient 0);
  ``"zero"``, it is 0 (``divide_no_nan``).
- ``ignored_rows``: ``"kept"``, an ignored position's logits still go through the softmax, so
  a NaN in them makes its gradient NaN; ``"zeroed"``, they are replaced by zeros first, so an
  ignored position's gradient is always 0.
- ``undefined``: features (``harness.adapters.FEATURES``) the dialect does not define: a case
  that needs one is ``unsupported`` under it.
- ``differs_on``: the features of a case where the dialect's values may differ from
  PyTorch's; a case using none of them has PyTorch's expected values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Dialect:
    """One framework's weighting and reduction rules (see the module docstring)."""

    name: str
    source: str  # where the rules were read: framework, file, version
    weight_scope: Literal["class", "target"] = "class"
    mean_divisor: Literal["target_weights", "kept_positions"] = "target_weights"
    empty_mean: Literal["nan", "zero"] = "nan"
    ignored_rows: Literal["kept", "zeroed"] = "kept"
    undefined: frozenset[str] = frozenset()
    differs_on: frozenset[str] = frozenset()

    @property
    def is_torch(self) -> bool:
        """Whether the oracle computes exactly PyTorch's values under this dialect."""
        return not self.differs_on

    def divisor_term(self, target_weight: T, one: T) -> T:
        """What a kept class-index position adds to a ``mean``'s divisor: its ``w[y_n]``
        or ``one`` (in the caller's number type)."""
        return target_weight if self.mean_divisor == "target_weights" else one

    def target_weight(self, probability_target: bool, smoothing: bool) -> bool:
        """Whether the position's whole loss takes ``w[y_n]`` (instead of per-class weights):
        only where the two differ, class-index targets with label smoothing."""
        return self.weight_scope == "target" and smoothing and not probability_target


TORCH = Dialect(
    name="torch",
    source="torch.nn.functional.cross_entropy (aten/src/ATen/native/LossNLL.cpp), torch 2.13",
)

KERAS = Dialect(
    name="keras",
    source=(
        "keras 3.15.1: keras/src/losses/loss.py (reduce_weighted_values, apply_mask, "
        "reduce_values: sum_over_batch_size, divide_no_nan), keras/src/losses/losses.py "
        "(sparse_categorical_crossentropy with ignore_class; categorical_crossentropy with "
        "label_smoothing)"
    ),
    weight_scope="target",
    mean_divisor="kept_positions",
    empty_mean="zero",
    ignored_rows="zeroed",
    differs_on=frozenset({"weight", "ignore_index", "empty"}),
)

ONNX = Dialect(
    name="onnx",
    source=(
        "ONNX SoftmaxCrossEntropyLoss (onnx/defs/math/defs.cc, opset 13; the reference "
        "onnx/reference/ops/op_softmax_cross_entropy_loss.py), onnx 1.23.2"
    ),
    undefined=frozenset({"label_smoothing", "probability_target", "unbatched"}),
)

#: every dialect by name: what ``semantics=`` accepts
DIALECTS: dict[str, Dialect] = {d.name: d for d in (TORCH, KERAS, ONNX)}


def dialect_named(name: str, where: str = "semantics") -> Dialect:
    """The dialect called ``name``; ValueError naming ``where`` and the known names."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(
            f"{where}={name!r}: unknown semantics; expected one of {', '.join(DIALECTS)}"
        ) from None
