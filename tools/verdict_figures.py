"""Figures for docs/tolerances.md: the worst test ratio of correct implementations.

Runs the built-in suite (PyTorch's own samples included) through the numpy
reference, the float32-accumulating stepwise reference (tests/mutants/stepwise.py),
torch and jax (when installed), and writes one table per adapter and dtype: the
worst loss and gradient test ratio, and the results that do not conform, split
into known defects (a case tagged ``divergence:*``, or a torch result that
reports/baselines/torch-expectations.yaml allows, each with its reason) and the
rest (false alarms, which must be 0 for a correct implementation).

    python tools/verdict_figures.py            # print the table
    python tools/refresh_docs.py verdict-ratios   # store it and rewrite docs/tolerances.md
"""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tabulate import tabulate  # noqa: E402

from harness import load_adapter, load_suite, run_case  # noqa: E402
from harness.execution.registry import describe as adapter_info  # noqa: E402
from harness.gate import expectations  # noqa: E402

TORCH_EXPECTATIONS = REPO / "reports" / "baselines" / "torch-expectations.yaml"


def _adapters() -> list:
    specs = ["numpy", "tests/mutants/stepwise.py"]
    specs += [name for name in ("torch", "jax") if importlib.util.find_spec(name)]
    return [load_adapter(s) for s in specs]


def measure() -> tuple[str, dict]:
    cases = [c for c in load_suite() if c.expect_error is None]
    worst: dict = defaultdict(lambda: [0.0, 0.0, 0, 0, 0])  # loss, grad, runs, known, other
    versions = {}
    known = expectations.load(TORCH_EXPECTATIONS)
    for adapter in _adapters():
        versions[adapter.name] = adapter.version()
        info = adapter_info(adapter, adapter.name)
        for case in cases:
            divergent = any(t.startswith("divergence:") for t in case.tags)
            for dtype in case.dtypes:
                r = run_case(case, adapter, dtype)
                row = worst[(adapter.name, dtype)]
                row[2] += 1
                if not r.conforming:
                    allowed = adapter.name == "torch" and known.match(r, info) is not None
                    row[3 if divergent or allowed else 4] += 1
                    continue
                for i, e in enumerate((r.loss_errors, r.grad_errors)):
                    if e is not None and e.max_ratio == e.max_ratio:
                        row[i] = max(row[i], e.max_ratio)
    rows = [
        [a, d, runs, f"{lq:.2g}", f"{gq:.2g}", div, other]
        for (a, d), (lq, gq, runs, div, other) in worst.items()
    ]
    headers = [
        "adapter", "dtype", "runs", "worst loss ratio", "worst grad ratio",
        "known defects", "other non-conforming",
    ]  # fmt: skip
    return tabulate(rows, headers, tablefmt="github"), versions


def main() -> int:
    table, versions = measure()
    import numpy

    env = "; ".join(f"{k}: {v}" for k, v in versions.items()) or f"numpy {numpy.__version__}"
    print(
        f"Built-in suite, every valid case and dtype ({env}); conforming results only in the "
        f"ratio columns:\n\n{table}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
