"""The adapter protocol: how lossconf calls an implementation under test.

An adapter receives one call's inputs as NumPy arrays (``CallInputs``) and
returns the loss and the gradient w.r.t. the logits as NumPy arrays
(``Output``), or raises. Built-in adapters live in this package, one module
each, and import their framework only inside ``load``/``run``.

Writing one::

    from harness.adapters import Adapter, CallInputs, Output

    class Mine(Adapter):
        name = "mine"
        unsupported = frozenset({"label_smoothing", "float16"})

        def run(self, inputs: CallInputs) -> Output:
            ...

Features an adapter may declare ``unsupported`` (a case needing one is
reported ``unsupported``, not ``fail``): see ``FEATURES``; dtypes are declared
by name (``"float16"``, ``"bfloat16"``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Features a case may exercise; an adapter lists those it lacks in ``unsupported``.
FEATURES: dict[str, str] = {
    "probability_target": "targets given as class probabilities (shape of the logits)",
    "weight": "per-class weights",
    "ignore_index": "targets equal to ignore_index, or a non-default ignore_index",
    "label_smoothing": "label_smoothing > 0",
    "reduction_none": "reduction='none'",
    "reduction_mean": "reduction='mean'",
    "reduction_sum": "reduction='sum'",
    "kdim": "K-dimensional input (N, C, d1, ..., dK)",
    "unbatched": "unbatched input (C,)",
    "empty": "a batch with no positions",
    "grad_output": "a given upstream gradient for reduction='none'",
    "invalid_input": "raising an error for invalid input",
    "grad": "a gradient w.r.t. the logits",
}


class Unsupported(Exception):
    """Raised by an adapter for a feature it does not implement (reported as 'unsupported')."""


@dataclass(frozen=True)
class CallInputs:
    """One cross-entropy call, in NumPy arrays.

    Attributes:
        logits: (C,), (N, C) or (N, C, d1, ..., dK), in the carrier dtype of ``dtype``
            (float32 arrays holding exact bfloat16 values when ``dtype`` is bfloat16).
        target: class indices, int64 of shape (), (N,) or (N, d1, ..., dK); or
            probabilities of the logits' shape and dtype.
        weight: (C,) in the logits' dtype, or None.
        reduction: 'none', 'mean' or 'sum' (anything else in invalid-input cases).
        ignore_index: as in PyTorch (default -100).
        label_smoothing: in [0, 1] (anything in invalid-input cases).
        dtype: 'float64', 'float32', 'float16' or 'bfloat16': the dtype to compute in.
        grad_output: upstream gradient for reduction='none' (the loss's shape), or None
            meaning ones, i.e. the gradient of the sum.
        want_grad: whether the gradient w.r.t. logits is wanted.
    """

    logits: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None
    reduction: str
    ignore_index: int
    label_smoothing: float
    dtype: str
    grad_output: np.ndarray | None = None
    want_grad: bool = True

    @property
    def probability_target(self) -> bool:
        return np.issubdtype(self.target.dtype, np.floating)


@dataclass
class Output:
    """What an adapter returns: ``loss`` (0-d for mean/sum) and ``grad`` (logits' shape) or None."""

    loss: object
    grad: object | None = None


class Adapter:
    """Base class for adapters. Subclasses set ``name`` and implement ``run``.

    ``unsupported`` lists feature names (see ``FEATURES``) and dtype names the
    adapter lacks. ``load`` imports the framework and raises ImportError (or any
    exception) when it cannot be used here; ``version`` names what is wrapped.
    """

    name: str = "adapter"
    description: str = ""
    unsupported: frozenset[str] = frozenset()
    #: where the unsupported claims come from, shown in reports
    unsupported_source: str = "declared by the adapter"

    def load(self) -> None:
        """Import what the adapter needs; raise if it cannot run here."""

    def version(self) -> str:
        """The wrapped library and its version, e.g. 'torch 2.13.0'."""
        return "unknown"

    def device(self) -> str:
        return "cpu"

    def run(self, inputs: CallInputs) -> Output:
        raise NotImplementedError
