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
by name (``"float16"``, ``"bfloat16"``, ...). The kernel authors' fields
(``KERNEL_FEATURES``: softcap, logit_scale, z_loss, return_z_loss, shift) are
opt-in instead: an adapter lists those it implements in ``supports``, and one
that predates them is reported ``unsupported`` for their cases, never failed
(docs/kernel-features.md gives each field's formula).

Fused linear cross-entropy (``"fused_linear"`` in ``supports``): the case gives hidden
states and a classifier instead of logits; the runner calls ``Adapter.run_linear`` with a
``LinearCallInputs`` and expects a ``LinearOutput`` (the loss and the gradients w.r.t. the
hidden states, the classifier and the bias; docs/fused-linear.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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
    "softcap": "logits soft-capped to s * tanh(logits / s)",
    "logit_scale": "logits multiplied by logit_scale before the loss",
    "z_loss": "the z-loss term z_loss * lse**2 added per position",
    "return_z_loss": "the z-loss term returned as its own output (Output.z_loss)",
    "shift": "causal language modelling: position t scored against target t + shift",
    "fused_linear": "hidden states and a classifier instead of logits (Adapter.run_linear)",
    "vocab_parallel": "the class axis split across ranks under torch.distributed (--world-size)",
}

#: The kernel authors' features: opt-in (``Adapter.supports``), since an adapter written
#: before they existed would silently ignore them and fail every case that uses one.
KERNEL_FEATURES: frozenset[str] = frozenset(
    {"softcap", "logit_scale", "z_loss", "return_z_loss", "shift", "fused_linear"}
)


#: What an adapter lists in ``supports`` to be run with ``--world-size R``: it then takes a
#: shard of the class axis and a process group (``CallInputs.vocab_shard``).
VOCAB_PARALLEL = "vocab_parallel"


class Unsupported(Exception):
    """Raised by an adapter for a feature it does not implement (reported as 'unsupported')."""


@dataclass(frozen=True)
class VocabShard:
    """One rank's part of a vocab-parallel call (``--world-size R``, docs/kernel-features.md).

    The class axis of C classes is split into R contiguous shards, the first ``C % R`` of
    ``ceil(C / R)`` classes and the others of ``floor(C / R)`` (``numpy.array_split``'s rule;
    a shard is empty when C < R). This rank holds classes ``[vocab_start, vocab_end)``.

    Attributes:
        rank, world_size: this process's rank in ``group`` and the number of ranks R.
        vocab_start, vocab_end: the global class indices of this rank's shard.
        vocab_size: C, the classes of all shards together.
        group: the ``torch.distributed`` process group of the R ranks (gloo on CPU, nccl
            when the adapter's device is cuda); collectives go through it.
        device: where this rank's tensors belong: ``cpu``, or ``cuda:<rank>`` under nccl.
    """

    rank: int
    world_size: int
    vocab_start: int
    vocab_end: int
    vocab_size: int
    group: object = None
    device: str = "cpu"


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
        softcap: s > 0: the logits become s * tanh(logits / s) (after ``logit_scale``);
            None: no capping.
        logit_scale: a > 0: the logits are multiplied by a first (1.0: unchanged).
        z_loss: c >= 0: c * lse**2 is added to each kept position's loss, lse the
            log-sum-exp of its (scaled, capped) logits; a ``mean`` divides its sum by the
            number of kept positions, not by the weights (0.0: no term).
        return_z_loss: also return the z-loss term alone, reduced like the loss
            (``Output.z_loss``).
        shift: k >= 0: position t along the target's last axis is scored against
            target[..., t + k]; the last k positions are ignored (0: no shift).
        vocab_shard: in a vocab-parallel run (``--world-size``), this rank's place in the
            split; ``logits``, a ``weight`` and probability targets then hold only the
            classes ``[vocab_start, vocab_end)`` of the class axis, while class-index
            targets stay whole, with global class indices (as in Megatron-core). The
            adapter returns the loss replicated (the whole loss on every rank, identical)
            and the gradient of its shard. None in an ordinary run.
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
    softcap: float | None = None
    logit_scale: float = 1.0
    z_loss: float = 0.0
    return_z_loss: bool = False
    shift: int = 0
    vocab_shard: VocabShard | None = None

    @property
    def probability_target(self) -> bool:
        return np.issubdtype(self.target.dtype, np.floating)

    def kernel_features(self) -> frozenset[str]:
        """The ``KERNEL_FEATURES`` this call uses (empty for plain cross-entropy)."""
        return kernel_features_of(
            self.softcap, self.logit_scale, self.z_loss, self.return_z_loss, self.shift
        )


def kernel_features_of(
    softcap: float | None, logit_scale: float, z_loss: float, return_z_loss: bool, shift: int
) -> frozenset[str]:
    """The ``KERNEL_FEATURES`` that these field values use (the defaults use none)."""
    used = {
        "softcap": softcap is not None,
        "logit_scale": logit_scale != 1.0,
        "z_loss": z_loss != 0.0,
        "return_z_loss": return_z_loss,
        "shift": shift != 0,
    }
    return frozenset(name for name, on in used.items() if on)


@dataclass(frozen=True)
class LinearCallInputs:
    """One fused linear cross-entropy call: the logits are ``hidden @ classifier.T + bias``,
    formed by the implementation; the loss is that of ``CallInputs`` on them.

    Every array is in the carrier dtype of ``dtype`` (see ``CallInputs``).

    Attributes:
        hidden: hidden states (N, H), or (B, T, H) for a batch of sequences.
        classifier: the classifier (output embedding) (V, H); row v makes the logit of
            class v, so a vocabulary shard of it is a block of rows (with the same block
            of ``bias`` and ``weight``).
        bias: (V,) or None.
        target: class indices, int64 (N,) or (B, T) (no probability targets).
        The other attributes are those of ``CallInputs``; ``grad_output`` has the loss's
        shape, (N,) or (B, T); ``shift`` acts along T.
        vocab_shard: in a vocab-parallel run (``--world-size``), this rank's place in the
            split; ``classifier``, ``bias`` and ``weight`` then hold only the rows
            ``[vocab_start, vocab_end)``, while ``hidden`` and the targets (global class
            indices) stay whole. The adapter returns the loss and ``grad_hidden`` replicated
            (the whole value, all-reduced over the ranks, identical on every rank: Megatron's
            column-parallel output layer) and the gradients of its own classifier and bias
            rows. None in an ordinary run.
    """

    hidden: np.ndarray
    classifier: np.ndarray
    bias: np.ndarray | None
    target: np.ndarray
    weight: np.ndarray | None
    reduction: str
    ignore_index: int
    label_smoothing: float
    dtype: str
    grad_output: np.ndarray | None = None
    want_grad: bool = True
    softcap: float | None = None
    logit_scale: float = 1.0
    z_loss: float = 0.0
    return_z_loss: bool = False
    shift: int = 0
    vocab_shard: VocabShard | None = None

    #: the input arrays, as the runner checks them for in-place writes
    ARRAYS: ClassVar[tuple[str, ...]] = (
        "hidden", "classifier", "bias", "target", "weight", "grad_output",
    )  # fmt: skip

    @property
    def probability_target(self) -> bool:
        return False

    def kernel_features(self) -> frozenset[str]:
        """The ``KERNEL_FEATURES`` this call uses (``fused_linear`` always)."""
        used = kernel_features_of(
            self.softcap, self.logit_scale, self.z_loss, self.return_z_loss, self.shift
        )
        return used | {"fused_linear"}


@dataclass
class LinearOutput:
    """What ``Adapter.run_linear`` returns: ``loss`` (0-d for mean/sum, else the target's
    shape); ``grad_hidden`` (hidden's shape), ``grad_classifier`` (V, H) and ``grad_bias``
    (V,), the gradients w.r.t. the inputs (None when the call does not want them;
    ``grad_bias`` None when there is no bias); ``z_loss`` as in ``Output``."""

    loss: object
    grad_hidden: object | None = None
    grad_classifier: object | None = None
    grad_bias: object | None = None
    z_loss: object | None = None


@dataclass
class Output:
    """What an adapter returns: ``loss`` (0-d for mean/sum) and ``grad`` (logits' shape) or None;
    ``z_loss``, the z-loss term alone (the loss's shape), when the call asks ``return_z_loss``."""

    loss: object
    grad: object | None = None
    z_loss: object | None = None


class Adapter:
    """Base class for adapters. Subclasses set ``name`` and implement ``run``.

    ``unsupported`` lists feature names (see ``FEATURES``) and dtype names the
    adapter lacks; ``supports`` the opt-in ``KERNEL_FEATURES`` it implements.
    ``inplace_backward``: the adapter may write the gradient it returns into the logits
    array it was given (flash-attn's ``inplace_backward=True``, Liger's in-place
    gradient); the input-mutation check then accepts exactly that write.
    ``load`` imports the framework and raises ImportError (or any exception) when
    it cannot be used here; ``version`` names what is wrapped.
    ``semantics``: the dialect the implementation follows by design (``"torch"``, ``"keras"``,
    ``"onnx"``: ``harness.oracle.dialect``); each result is judged under it and, beside it,
    under PyTorch's. ``--adapter SPEC@semantics=keras`` overrides it.
    """

    name: str = "adapter"
    description: str = ""
    unsupported: frozenset[str] = frozenset()
    supports: frozenset[str] = frozenset()
    inplace_backward: bool = False
    semantics: str = "torch"
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

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        """A fused linear cross-entropy call (for adapters with ``fused_linear`` in
        ``supports``)."""
        raise NotImplementedError
