"""The Case record: one conformance case, loaded and validated, with its inputs per dtype.

Inputs are kept as written (float64 values, int64 class indices); ``inputs``
casts them to a dtype for an adapter and ``problem`` gives the oracle the same
cast values in float64, so expected values are those of the cast inputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.adapters import CallInputs, LinearCallInputs, kernel_features_of
from harness.cases.generate import materialize, materialize_blockwise
from harness.cases.tolerance import Tolerance, resolve
from harness.dtypes import carrier, cast, cast_into
from harness.oracle.cache import oracle_expected, oracle_linear_expected
from harness.oracle.dialect import TORCH, Dialect, dialect_named
from harness.oracle.error_model import error_bounds
from harness.oracle.linear import LinearExpected, LinearProblem
from harness.oracle.problem import Expected, Problem

#: The errors an invalid-input case may expect (``expect_error: KIND``).
ERROR_KINDS: dict[str, str] = {
    "index_out_of_range": "a class index >= C, or negative and not ignore_index",
    "target_shape": "target shape does not fit the input (batch or spatial size mismatch, "
    "a probability target not of the input's shape, an integer target of the input's shape)",
    "weight_shape": "weight not of shape (C,)",
    "ignore_index_with_probabilities": "ignore_index >= 0 with probability targets",
    "label_smoothing_range": "label_smoothing > 1",
    "reduction": "a reduction other than 'none', 'mean', 'sum'",
}

REDUCTIONS = ("none", "mean", "sum")


def _source_shape(source: np.ndarray | dict | None) -> tuple[int, ...]:
    """The shape of a case field's array or recipe (without making it)."""
    assert source is not None
    if isinstance(source, dict):
        return tuple(int(s) for s in source["shape"])
    return tuple(source.shape)


def content_hash_of(content: dict) -> str:
    """The identity of a case: sha256 of its merged YAML mapping in canonical JSON (16 hex digits)."""
    text = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(eq=False)
class Case:
    name: str
    file: Path
    why: str
    #: or a harness.cases.generate spec, materialised on first use; None for a fused linear case
    logits_source: np.ndarray | dict | None
    target_source: np.ndarray | dict
    weight: np.ndarray | None = None
    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    dtypes: tuple[str, ...] = ("float64", "float32")
    expected: dict[str, Expected] | None = None  # None: computed by the oracle when needed
    expect_error: str | None = None
    grad_output: np.ndarray | None = None
    tolerance_overrides: dict = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    loss: str = "cross_entropy"
    line: int | None = None
    #: the kernel authors' fields (docs/kernel-features.md); the defaults mean plain
    #: cross-entropy
    softcap: float | None = None
    logit_scale: float = 1.0
    z_loss: float = 0.0
    return_z_loss: bool = False
    shift: int = 0
    #: fused linear cross-entropy (docs/fused-linear.md): hidden states (N, H) or (B, T, H),
    #: a classifier (V, H) and an optional bias (V,) instead of logits (arrays or recipes)
    hidden_source: np.ndarray | dict | None = None
    classifier_source: np.ndarray | dict | None = None
    bias_source: np.ndarray | dict | None = None
    #: sha256 of the case's canonical content (inputs, recipes with their fingerprints,
    #: options, expectations; not the selected dtypes), computed once by the loader and
    #: carried by every copy (selection, the load cache, pickling to workers): the key of
    #: every cached expected value and of baseline comparisons
    content_hash: str = ""

    def __post_init__(self) -> None:
        if not self.content_hash:
            raise ValueError(f"case {self.name!r}: content_hash is required (see content_hash_of)")

    @functools.cached_property
    def id(self) -> str:
        # once per case (every result names it; Path.stem costs microseconds); name and file
        # never change once a case is made (copies with other fields are new Cases)
        return f"{self.file.stem}/{self.name}"

    @property
    def fused(self) -> bool:
        """Whether this is a fused linear case (hidden states and a classifier, no logits)."""
        return self.hidden_source is not None

    @functools.cached_property
    def logits(self) -> np.ndarray:
        if self.logits_source is None:
            raise TypeError(f"case {self.id!r} is a fused linear case: it has no logits")
        return materialize(self.logits_source, np.float64)

    @functools.cached_property
    def hidden(self) -> np.ndarray:
        assert self.hidden_source is not None, "only fused linear cases have hidden states"
        return materialize(self.hidden_source, np.float64)

    @functools.cached_property
    def classifier(self) -> np.ndarray:
        assert self.classifier_source is not None, "only fused linear cases have a classifier"
        return materialize(self.classifier_source, np.float64)

    @functools.cached_property
    def bias(self) -> np.ndarray | None:
        return None if self.bias_source is None else materialize(self.bias_source, np.float64)

    @functools.cached_property
    def target(self) -> np.ndarray:
        return materialize(self.target_source, None)

    @functools.cached_property
    def logits_shape(self) -> tuple[int, ...]:
        """The logits' shape, without making a generated array; for a fused linear case, the
        (P, V) logits its hidden states and classifier make."""
        # once per case (every call asks, through streaming.applies); the sources never change
        source = self.logits_source
        if source is None:
            hidden = _source_shape(self.hidden_source)
            return (math.prod(hidden[:-1]), _source_shape(self.classifier_source)[0])
        if isinstance(source, dict):
            return tuple(int(s) for s in source["shape"])
        return source.shape

    @functools.cached_property
    def logits_size(self) -> int:
        return math.prod(self.logits_shape)

    @property
    def probability_target(self) -> bool:
        return np.issubdtype(self.target.dtype, np.floating)

    def features(self) -> frozenset[str]:
        """The adapter features this case exercises (names from ``harness.FEATURES``)."""
        return self._features

    @functools.cached_property
    def sorted_features(self) -> tuple[str, ...]:
        """``features()`` in sorted order (every result records them)."""
        return tuple(sorted(self.features()))

    @functools.cached_property
    def _features(self) -> frozenset[str]:
        # computed once per case: it scans the target, and every dtype and adapter asks
        if self.fused:
            return self._linear_features()
        f = {f"reduction_{self.reduction}"} if self.reduction in REDUCTIONS else set()
        if self.expect_error is not None:
            f.add("invalid_input")
        else:
            f.add("grad")
        if self.probability_target:
            f.add("probability_target")
        elif self.ignore_index != -100 or np.any(self.target == self.ignore_index):
            f.add("ignore_index")
        if self.weight is not None:
            f.add("weight")
        if self.label_smoothing != 0:
            f.add("label_smoothing")
        ndim = len(self.logits_shape)
        if ndim == 1:
            f.add("unbatched")
        elif ndim > 2:
            f.add("kdim")
        if self.logits_size == 0:
            f.add("empty")
        if self.grad_output is not None:
            f.add("grad_output")
        f |= kernel_features_of(
            self.softcap, self.logit_scale, self.z_loss, self.return_z_loss, self.shift
        )
        return frozenset(f)

    def _linear_features(self) -> frozenset[str]:
        f = {f"reduction_{self.reduction}", "grad", "fused_linear"}
        if self.ignore_index != -100 or np.any(self.target == self.ignore_index):
            f.add("ignore_index")
        if self.weight is not None:
            f.add("weight")
        if self.label_smoothing != 0:
            f.add("label_smoothing")
        if self.grad_output is not None:
            f.add("grad_output")
        f |= kernel_features_of(
            self.softcap, self.logit_scale, self.z_loss, self.return_z_loss, self.shift
        )
        return frozenset(f)

    def tolerance(self, dtype: str) -> Tolerance:
        # resolved once per dtype: every adapter's call asks
        cache = self.__dict__.setdefault("_tolerance_cache", {})
        if dtype not in cache:
            cache[dtype] = resolve(dtype, self.tolerance_overrides)
        return cache[dtype]

    def inputs(self, dtype: str, *, want_grad: bool = True) -> CallInputs:
        """Fresh arrays cast to ``dtype`` (carrier dtypes, see harness.dtypes).

        Every call returns new arrays, so an adapter that writes to its inputs
        harms only its own call; cases that keep their cast arrays copy them.
        """
        logits, target, weight, grad_output = cast = self._cast(dtype)
        if self.__dict__["_cast_cache"].get(dtype) is cast:  # kept: copies of each
            arrays = (
                logits.copy(),
                target.copy(),
                None if weight is None else weight.copy(),
                None if grad_output is None else grad_output.copy(),
            )
        else:  # cast for this call alone; only a class-index target is the case's own array
            arrays = (
                logits,
                target.copy() if target is self.target else target,
                weight,
                grad_output,
            )
        return self._call(dtype, arrays, want_grad=want_grad and self.expect_error is None)

    def blockwise_inputs(
        self,
        dtype: str,
        *,
        want_grad: bool = True,
        on_block: Callable[[np.ndarray], None] | None = None,
        on_start: Callable[[CallInputs], None] | None = None,
    ) -> CallInputs:
        """Fresh inputs like ``inputs``, with the logits made directly in ``dtype``'s carrier,
        block by block (``generate.materialize_blockwise``): for large cases, which then never
        hold a float64 copy of their logits. ``on_block`` sees each block of the logits as made
        (whole leading rows, in order); ``on_start`` the inputs before the first block (their
        logits not yet written). The values are those of ``inputs``."""
        assert self.logits_source is not None, "fused linear cases do not stream"
        target, weight, grad_output = (
            None if a is None else a.copy() for a in self._cast_rest(dtype)
        )
        want_grad = want_grad and self.expect_error is None
        made: list[CallInputs] = []

        def start(logits: np.ndarray) -> None:
            made.append(
                self._call(dtype, (logits, target, weight, grad_output), want_grad=want_grad)
            )
            if on_start is not None:
                on_start(made[0])

        materialize_blockwise(
            self.logits_source, carrier(dtype),
            lambda block, rows: cast_into(block, dtype, rows), on_block, start,
        )  # fmt: skip
        return made[0]

    def _cast_rest(self, dtype: str) -> tuple:
        """(target, weight, grad_output) in ``dtype``'s carrier (targets of class indices as is)."""
        target = cast(self.target, dtype) if self.probability_target else self.target
        return (
            target,
            None if self.weight is None else cast(self.weight, dtype),
            None if self.grad_output is None else cast(self.grad_output, dtype),
        )

    def _call(self, dtype: str, arrays: tuple, *, want_grad: bool) -> CallInputs:
        logits, target, weight, grad_output = arrays
        # the fields of CallInputs(...) in one dict update: its frozen dataclass __init__ sets
        # each of its 15 fields through object.__setattr__, several microseconds a call
        # (the same instance: tests/test_case_inputs.py)
        call = object.__new__(CallInputs)
        call.__dict__.update(
            self._call_fields,
            logits=logits,
            target=target,
            weight=weight,
            dtype=dtype,
            grad_output=grad_output,
            want_grad=want_grad,
        )
        return call

    @functools.cached_property
    def _call_fields(self) -> dict[str, object]:
        """The fields of this case's CallInputs that are the same in every call."""
        return {
            "reduction": self.reduction,
            "ignore_index": self.ignore_index,
            "label_smoothing": self.label_smoothing,
            "softcap": self.softcap,
            "logit_scale": self.logit_scale,
            "z_loss": self.z_loss,
            "return_z_loss": self.return_z_loss,
            "shift": self.shift,
            "vocab_shard": None,
        }

    #: cases with at most this many logits (a fused linear case: classifier elements) keep
    #: their cast inputs between calls: then a call copies each input once, and the kept
    #: arrays are what the check of in-place writes compares with (a case cast for each call
    #: casts, and copies for that check). A run holds such a case's expected values and their
    #: bounds, 16 bytes a logit in each dtype (``harness.oracle.cache``); its kept inputs are
    #: at most 8 more. 1 << 20: 8 MiB of float64 logits.
    CAST_CACHE_ELEMENTS = 1 << 20

    def _cast(self, dtype: str) -> tuple:
        """(logits, target, weight, grad_output) in ``dtype``'s carrier; never hand these out."""
        cache = self.__dict__.setdefault("_cast_cache", {})
        if dtype in cache:
            return cache[dtype]
        arrays = (cast(self.logits, dtype), *self._cast_rest(dtype))
        if self.logits.size <= self.CAST_CACHE_ELEMENTS:
            cache[dtype] = arrays
        return arrays

    def kept_inputs(self, dtype: str) -> dict[str, np.ndarray] | None:
        """The arrays that ``inputs(dtype)`` copies, by CallInputs field, when this case keeps
        them (after a first ``inputs``; see ``CAST_CACHE_ELEMENTS``), else None: what a call's
        inputs held before the call, for the check of in-place writes without another copy.
        Read only."""
        found = self.__dict__.setdefault("_kept_inputs", {})
        if dtype in found:
            return found[dtype]
        if self.fused:
            kept = self.__dict__.get("_linear_cast_cache", {}).get(dtype)
            names: tuple[str, ...] = LinearCallInputs.ARRAYS
        else:
            kept = self.__dict__.get("_cast_cache", {}).get(dtype)
            names = ("logits", "target", "weight", "grad_output")
        if kept is None:
            return None
        found[dtype] = {k: v for k, v in zip(names, kept, strict=True) if isinstance(v, np.ndarray)}
        return found[dtype]

    def problem(self, dtype: str, dialect: Dialect = TORCH) -> Problem:
        """The oracle's view of this case in ``dtype``: cast values, held in float64, weighted
        and reduced under ``dialect``."""
        return Problem.of_call(self._call(dtype, self._cast(dtype), want_grad=False), dialect)

    def expected_for(self, dtype: str, dialect: Dialect | str = TORCH) -> Expected:
        """Expected values and their error bounds for ``dtype``: from the file, or from the
        oracle when the file says so (bounds from ``harness.oracle.error_model`` either way).

        Under a ``dialect`` whose rules differ from PyTorch's on a feature this case uses
        (``Dialect.differs_on``), the oracle computes them under the dialect; values written
        in the file are PyTorch's, used where the dialect agrees. ``dialect``: a Dialect or
        its name ('keras')."""
        if isinstance(dialect, str):
            dialect = dialect_named(dialect)
        if not self.features().isdisjoint(dialect.differs_on):
            key = f"{self.content_hash}@{dialect.name}"
            return oracle_expected(key, dtype, lambda: self.problem(dtype, dialect))
        if self.expected is None:
            return oracle_expected(self.content_hash, dtype, lambda: self.problem(dtype))
        done = self.__dict__.setdefault("_bounded", {})
        if dtype not in done:
            e = self.expected[dtype]
            b = error_bounds(self.problem(dtype), dtype, e.loss, e.grad, e.z_loss)
            done[dtype] = Expected(e.loss, e.grad, b.loss, b.grad, e.z_loss, b.z_loss)
        return done[dtype]

    # -- fused linear cross-entropy (docs/fused-linear.md) -----------------------------------

    def linear_inputs(self, dtype: str, *, want_grad: bool = True) -> LinearCallInputs:
        """Fresh arrays of a fused linear case, cast to ``dtype`` (carrier dtypes)."""
        arrays = tuple(None if a is None else a.copy() for a in self._linear_cast(dtype))
        return self._linear_call(dtype, arrays, want_grad=want_grad)

    def _linear_call(self, dtype: str, arrays: tuple, *, want_grad: bool) -> LinearCallInputs:
        hidden, classifier, bias, target, weight, grad_output = arrays
        return LinearCallInputs(
            hidden=hidden,
            classifier=classifier,
            bias=bias,
            target=target,
            weight=weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            dtype=dtype,
            grad_output=grad_output,
            want_grad=want_grad,
            softcap=self.softcap,
            logit_scale=self.logit_scale,
            z_loss=self.z_loss,
            return_z_loss=self.return_z_loss,
            shift=self.shift,
        )

    def _linear_cast(self, dtype: str) -> tuple:
        """(hidden, classifier, bias, target, weight, grad_output) in ``dtype``'s carrier."""
        cache = self.__dict__.setdefault("_linear_cast_cache", {})
        if dtype in cache:
            return cache[dtype]

        def cast_or_none(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else cast(a, dtype)

        arrays = (
            cast(self.hidden, dtype),
            cast(self.classifier, dtype),
            cast_or_none(self.bias),
            self.target,
            cast_or_none(self.weight),
            cast_or_none(self.grad_output),
        )
        if self.linear_size <= self.CAST_CACHE_ELEMENTS:
            cache[dtype] = arrays
        return arrays

    @property
    def linear_size(self) -> int:
        """Elements of the classifier (what a fused linear case's memory goes with), from the
        shape alone (a recipe is not made)."""
        source = self.classifier_source
        if isinstance(source, dict):
            return math.prod(int(n) for n in source["shape"])
        return 0 if source is None else int(source.size)

    def linear_problem(self, dtype: str) -> LinearProblem:
        """The oracle's view of this fused linear case in ``dtype``."""
        return LinearProblem.of_call(
            self._linear_call(dtype, self._linear_cast(dtype), want_grad=False)
        )

    def linear_expected_for(self, dtype: str) -> LinearExpected:
        """Expected values and bounds of this fused linear case (always from the oracle)."""
        return oracle_linear_expected(
            self.content_hash, dtype, lambda: self.linear_problem(dtype), self.linear_size
        )
