"""``megatron``: Megatron-core's ``vocab_parallel_cross_entropy``, run with ``--world-size R``.

``megatron.core.tensor_parallel.vocab_parallel_cross_entropy(vocab_parallel_logits,
target, label_smoothing)`` takes this rank's shard of the logits, class last, and the
whole target with global class indices; it all-reduces the max, the target's logit and
the sum of exponentials over the tensor-parallel group and returns the per-position
loss, replicated, with a hand-written backward. The adapter makes that group the run's
ranks (``parallel_state.initialize_model_parallel(tensor_model_parallel_size=R)``) and
composes what the function lacks the way Megatron's own training loop does: an ignored
position gets target 0 and a loss mask of 0, and 'mean' is ``sum(loss * mask) /
sum(mask)``.

What it cannot do, declared or raised as unsupported (docs/kernel-features.md):
class weights and probability targets (no such arguments); float64 (it computes in
float32: ``calculate_logits_max`` calls ``.float()``); shards of unequal size (a rank
takes its first class to be ``rank * shard size``,
``VocabUtility.vocab_range_from_per_partition_vocab_size``: the vocabulary must be
padded to a multiple of R); a run without ``--world-size`` (it needs the
tensor-parallel group); fused linear cases (no ``fused_linear`` in ``supports``: the
function takes logits, and Megatron's matching layer, ``ColumnParallelLinear``, is a
module to train, not a loss; docs/fused-linear.md). Label smoothing is passed on:
Megatron puts ``eps / (C - 1)`` on each other class (PyTorch ``eps / C`` on every class)
and, with R > 1, takes C and the mean of the log-probabilities over the rank's own
shard, so those results fail.

Megatron subtracts the max in place in the float32 logits it is given ("In-place
subtraction reduces memory pressure"); the adapter passes a copy. Install it into its
own environment (``pip install megatron-core``; version 0.16.1 was run here): it is
not a dependency of lossconf.
"""

from __future__ import annotations

from typing import Any

from harness.adapters import VOCAB_PARALLEL, Adapter, CallInputs, Output, Unsupported
from harness.adapters.torch_ce import to_numpy, torch_dtype


class MegatronVocabParallel(Adapter):
    """megatron.core.tensor_parallel.vocab_parallel_cross_entropy, gradient by its backward."""

    name = "megatron"
    description = "Megatron-core vocab_parallel_cross_entropy (tensor-parallel group = the ranks)"
    requires = ("megatron",)
    supports = frozenset({VOCAB_PARALLEL})
    unsupported = frozenset({"weight", "probability_target", "float64"})
    unsupported_source = (
        "Megatron-core's vocab_parallel_cross_entropy has no class weights or probability "
        "targets and computes in float32"
    )

    def load(self) -> None:
        import megatron.core.tensor_parallel  # noqa: F401  (raises here when not installed)

    def version(self) -> str:
        from importlib.metadata import version

        return f"megatron-core {version('megatron-core')}"

    def run(self, inputs: CallInputs) -> Output:
        import torch
        from megatron.core import parallel_state
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

        shard = inputs.vocab_shard
        if shard is None:
            raise Unsupported(
                "Megatron-core needs its tensor-parallel group: run with --world-size"
            )
        if shard.vocab_size % shard.world_size:
            raise Unsupported(
                f"{shard.vocab_size} classes over {shard.world_size} ranks: Megatron-core "
                "needs shards of equal size (pad the vocabulary to a multiple of R)"
            )
        if not parallel_state.model_parallel_is_initialized():
            parallel_state.initialize_model_parallel(tensor_model_parallel_size=shard.world_size)
        x = torch.from_numpy(inputs.logits).to(shard.device, torch_dtype(inputs.dtype))
        x = x.clone().requires_grad_(inputs.want_grad)  # Megatron writes into its input
        class_last = x if x.ndim <= 2 else x.movedim(1, -1).contiguous()
        t = torch.from_numpy(inputs.target).to(shard.device)
        keep = t != inputs.ignore_index
        losses = vocab_parallel_cross_entropy(
            class_last, torch.where(keep, t, 0), inputs.label_smoothing
        )
        mask = keep.to(losses.dtype)
        loss = _reduce(losses * mask, mask, inputs.reduction)
        grad = None
        if inputs.want_grad:
            upstream = torch.ones_like(loss)
            if inputs.grad_output is not None:
                upstream = torch.from_numpy(inputs.grad_output).to(shard.device, loss.dtype)
            (g,) = torch.autograd.grad(loss, x, grad_outputs=upstream)
            grad = to_numpy(g.to(x.dtype), inputs.dtype)
        return Output(loss=to_numpy(loss.detach().to(x.dtype), inputs.dtype), grad=grad)


def _reduce(masked: Any, mask: Any, reduction: str) -> Any:
    """Megatron's training-loop reduction of per-position losses under a loss mask."""
    if reduction == "none":
        return masked
    if reduction == "sum":
        return masked.sum()
    if reduction == "mean":
        return masked.sum() / mask.sum()
    raise ValueError(f"reduction={reduction!r} must be one of none, mean, sum")
