"""Deliberately wrong vocab-parallel cross-entropies: each overrides one collective step of the
reference ``torch-vocab-split`` (adapters/torch_vocab_parallel.py) with a real bug.

``MUTANTS`` are right at world size 1, where every rank's shard is the whole class axis; at 2
and 4 ranks the suite must fail each of them (tests/test_vocab_parallel.py). ``ALWAYS_WRONG``
must fail at every world size. ``StartFromShardSize`` puts a fused linear call's target
columns at the wrong offset in the classifier rows' gradient as well. Rank processes load
them by SPEC, e.g. ``tests.mutants.vocab_parallel:MaxNotReduced``.
"""

from __future__ import annotations

from typing import Any

from harness.adapters.torch_vocab_parallel import TorchVocabParallel


class MaxNotReduced(TorchVocabParallel):
    """Each rank shifts by its own shard's maximum: the max is never all-reduced, so the
    shards' sums of exponentials are taken about different points and added."""

    name = "vocab_max_not_reduced"

    def global_max(self, x: Any, shard: Any) -> Any:
        return super().global_max(x, None)


class SumExpNotReduced(TorchVocabParallel):
    """The sum of exponentials stays the rank's own (taken from before the all-reduce that
    carries it): each rank normalises over its shard."""

    name = "vocab_sum_exp_not_reduced"

    def sums_after_max(self, rows: list[Any], shard: Any) -> list[Any]:
        return [rows[0], *super().sums_after_max(rows, shard)[1:]]


class TargetOnEveryLaterRank(TorchVocabParallel):
    """The owner test forgets the shard's end (``t >= start`` only): the target's logit is
    taken on its owner and again, at a clamped index, on every rank after it."""

    name = "vocab_target_on_every_later_rank"

    def target_terms(self, x: Any, w: Any, t: Any, keep: Any, start: int) -> Any:
        import torch

        own = keep & (t >= start)
        local = torch.clamp(t - start, 0, max(x.shape[1] - 1, 0))
        terms = torch.zeros((2, x.shape[0]), dtype=x.dtype, device=x.device)
        if x.shape[1] > 0:
            rows = torch.arange(x.shape[0], device=x.device)
            terms[0] = torch.where(own, x[rows, local], 0.0)
            terms[1] = torch.where(own, w[local], 0.0)
        return terms


class StartFromShardSize(TorchVocabParallel):
    """A rank takes its first class to be ``rank * (its shard's size)``, Megatron-core's
    ``vocab_range_from_per_partition_vocab_size``, which holds only for equal shards: with C
    not divisible by R the later ranks look for the target in the wrong shard."""

    name = "vocab_start_from_shard_size"

    def vocab_start(self, shard: Any, classes_here: int) -> int:
        return 0 if shard is None else shard.rank * classes_here


class HiddenGradNotReduced(TorchVocabParallel):
    """Fused linear: each rank returns its own G W_r as the hidden states' gradient, without
    the all-reduce that the backward of Megatron's ``copy_to_tensor_model_parallel_region``
    does (the part of the gradient that flows through the other ranks' classifier rows is
    lost)."""

    name = "vocab_hidden_grad_not_reduced"

    def grad_hidden(self, partial: Any, shard: Any) -> Any:
        return super().grad_hidden(partial, None)


class ClassifierGradMissesIgnoredMask(TorchVocabParallel):
    """Fused linear: the classifier rows' gradient takes the softmax of the ignored positions
    too (their G row should be 0): wrong at every world size, on every rank's rows."""

    name = "vocab_classifier_grad_misses_ignored_mask"

    def grad_classifier(self, g: Any, rows: Any, done: Any) -> Any:
        import torch

        leaked = g + torch.where(done.keep[:, None], 0.0, done.p)
        return leaked.T @ rows


#: the collectives' mutants: right at world size 1 (one rank holds every class)
MUTANTS = [
    MaxNotReduced,
    SumExpNotReduced,
    TargetOnEveryLaterRank,
    StartFromShardSize,
    HiddenGradNotReduced,
]
#: wrong at every world size
ALWAYS_WRONG = [ClassifierGradMissesIgnoredMask]
