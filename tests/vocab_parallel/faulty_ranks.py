"""Vocab-parallel adapters whose last rank misbehaves on the reduction 'sum' case of
tests/faulty_adapters/faulty_cases.yaml, and that are the reference on every other call.
Used by tests/test_vocab_parallel.py as ``faulty_ranks.py:exits`` and so on."""

from __future__ import annotations

import os
import time

from harness.adapters import CallInputs, Output
from harness.adapters.torch_vocab_parallel import TorchVocabParallel


def _faulty_rank(inputs: CallInputs) -> bool:
    shard = inputs.vocab_shard
    return inputs.reduction == "sum" and shard is not None and shard.rank == shard.world_size - 1


class RankExits(TorchVocabParallel):
    """The last rank's process exits (code 3) while the others wait in a collective."""

    name = "rank-exits"

    def run(self, inputs: CallInputs) -> Output:
        if _faulty_rank(inputs):
            os._exit(3)
        return super().run(inputs)


class RankHangs(TorchVocabParallel):
    """The last rank sleeps far past any timeout: every rank is stuck."""

    name = "rank-hangs"

    def run(self, inputs: CallInputs) -> Output:
        if _faulty_rank(inputs):
            time.sleep(600)
        return super().run(inputs)


class RankRaisesAlone(TorchVocabParallel):
    """The last rank raises before its first collective; the others wait in it."""

    name = "rank-raises_alone"

    def run(self, inputs: CallInputs) -> Output:
        if _faulty_rank(inputs):
            raise RuntimeError("only rank 1 fails")
        return super().run(inputs)


exits, hangs, raises_alone = RankExits, RankHangs, RankRaisesAlone
