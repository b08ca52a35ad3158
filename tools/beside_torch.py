"""Check a report's non-conformities by hand: each case's values through torch in float64 and
through the adapter again, side by side (docs/scoreboard.md cites what this prints).

    python tools/beside_torch.py reports/scoreboard/onnx-1.23.2.json.gz
    python tools/beside_torch.py REPORT --adapter keras@backend=jax --status fail
    python tools/beside_torch.py REPORT --case numerics/ --case invalid/weight --dtype float64

Run it in the framework's environment (it needs torch too). For every non-conforming
result (under torch's semantics: ``torch_status`` where the report has it) it prints the
case id, dtype and status, the inputs (short), ``torch.nn.functional.cross_entropy`` of the
float64 inputs (the values or the error it raises), and what the adapter returns or raises
on the case's own dtype. Nothing here is compared against a tolerance: it is for reading.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from harness import CONFORMING, load_adapter, load_suite
from harness.gate.baseline import read_report  # a .json or .json.gz report, checked

CONFORMING_NAMES = {s.value for s in CONFORMING}


def short(a: object, limit: int = 8) -> str:
    arr = np.asarray(a)
    flat = arr.reshape(-1)
    text = np.array2string(flat[:limit], precision=17, separator=", ", max_line_width=10**6)
    more = f" ... ({flat.size} values)" if flat.size > limit else ""
    return f"{text}{more} shape {arr.shape}" if arr.ndim > 1 or more else text


def torch_float64(inputs) -> str:
    import torch
    import torch.nn.functional as F

    def t64(a):
        return None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64))

    target = torch.from_numpy(np.asarray(inputs.target))
    if inputs.probability_target:
        target = target.double()
    try:
        loss = F.cross_entropy(
            t64(inputs.logits), target, weight=t64(inputs.weight),
            ignore_index=inputs.ignore_index, reduction=inputs.reduction,
            label_smoothing=inputs.label_smoothing,
        )  # fmt: skip
    except Exception as e:
        return f"raises {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return short(loss.numpy())


def adapter_output(adapter, inputs) -> str:
    try:
        with np.errstate(all="ignore"):
            out = adapter.run(inputs)
    except Exception as e:
        return f"raises {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return short(np.asarray(out.loss, dtype=np.float64))


def _selects(wanted: str, case_id: str) -> bool:
    return case_id == wanted or (wanted.endswith("/") and case_id.startswith(wanted))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path)
    p.add_argument("--adapter", help="the SPEC to run (default: the report's adapter spec)")
    p.add_argument("--status", action="append", help="only these statuses (repeatable)")
    p.add_argument(
        "--case", action="append", help="only this case id, or ids under it when it ends in '/'"
    )
    p.add_argument("--dtype", action="append", help="only these dtypes (repeatable)")
    args = p.parse_args(argv)
    doc = read_report(args.report)
    entry = doc["adapters"][0]
    adapter = load_adapter(args.adapter or entry.get("spec") or entry["name"])
    cases = {c.id: c for c in load_suite()}
    print(f"{args.report}: {entry.get('wraps', '')}; torch float64 beside it")
    for r in doc["results"]:
        status = r.get("torch_status", r["status"])
        if status in CONFORMING_NAMES or (args.status and status not in args.status):
            continue
        if args.case and not any(_selects(c, r["case_id"]) for c in args.case):
            continue
        if args.dtype and r["dtype"] not in args.dtype:
            continue
        case = cases.get(r["case_id"])
        if case is None:
            print(f"{r['case_id']} [{r['dtype']}]: not in this suite")
            continue
        inputs = case.inputs(r["dtype"], want_grad=False)
        print(f"{r['case_id']} [{r['dtype']}] {status}")
        print(f"  logits {short(inputs.logits)}; target {short(inputs.target)}", end="")
        if inputs.weight is not None:
            print(f"; weight {short(inputs.weight)}", end="")
        print(f"; reduction={inputs.reduction!r}, ignore_index={inputs.ignore_index}")
        print(f"  torch float64: {torch_float64(inputs)}")
        print(f"  {adapter.name} {r['dtype']}: {adapter_output(adapter, inputs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
