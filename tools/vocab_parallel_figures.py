"""A vocab-parallel run of one adapter over the hand-written cases, summed up for the docs.

    python tools/vocab_parallel_figures.py --adapter torch-vocab-split --world-size 4
    python tools/vocab_parallel_figures.py --adapter megatron --world-size 2   # its own env

Prints the results by status, the non-conforming ones by the case features they share
(label smoothing, ignored targets, ...), and the reasons of the unsupported ones, as a
Markdown table (docs/kernel-features.md, through tools/refresh_docs.py).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import harness  # noqa: E402  (after the path: the checkout's harness, not an installed one)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--world-size", type=int, required=True)
    args = parser.parse_args()
    cases = harness.load_cases(sorted((REPO / "cases").glob("*.yaml")))
    start = time.perf_counter()
    results = harness.run(cases, args.adapter, world_size=args.world_size)
    seconds = time.perf_counter() - start
    adapter = harness.load_adapter(args.adapter)
    statuses = collections.Counter(r.status.value for r in results)
    print(f"{adapter.version()}, `--world-size {args.world_size}`, {len(cases)} hand-written "
          f"cases, {len(results)} results in {seconds:.0f} s: "
          + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))  # fmt: skip
    print()
    print("| results | status | what they share |")
    print("|---|---|---|")
    failing = [r for r in results if not r.conforming]
    for feature, group in _by_feature(failing).items():
        first = group[0]
        print(f"| {len(group)} | {'/'.join(sorted({r.status.value for r in group}))} | "
              f"`{feature}`, e.g. {first.case_id} {first.dtype}: "
              f"{first.message[:120].replace('|', '/')} |")  # fmt: skip
    reasons = collections.Counter(
        _reason(r.message) for r in results if r.status.value == "unsupported"
    )
    for reason, n in reasons.most_common():
        print(f"| {n} | unsupported | {reason} |")
    return 0


def _by_feature(results: list) -> dict[str, list]:
    """Non-conforming results under the first of their features in a telling order."""
    order = ("label_smoothing", "ignore_index", "grad_output", "reduction_none", "kdim",
             "unbatched", "empty", "reduction_sum", "reduction_mean")  # fmt: skip
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(next((f for f in order if f in r.features), "other"), []).append(r)
    return dict(sorted(out.items(), key=lambda item: -len(item[1])))


def _reason(message: str) -> str:
    """An unsupported result's message without its numbers, so equal reasons group."""
    text = re.sub(r"\d+ classes over \d+ ranks", "C classes over R ranks (C mod R != 0)", message)
    return text.replace("|", "/")[:160]


if __name__ == "__main__":
    sys.exit(main())
