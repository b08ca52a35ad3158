"""Fuzz the reference implementations: every property must hold for them, or the harness is wrong.

``python -m harness fuzz`` writes a finding only when the reference implementations
(``harness.fuzz.search.REFERENCES``: the numpy adapter in every dtype, torch in float64 and
float32) pass the same call. That is only meaningful if they pass every property on
their own; this script checks it. It searches each property (``oracle`` and the
metamorphic relations of ``harness.fuzz.metamorphic``) against each reference, one
dtype at a time, with no reference gate: any violation is a finding, shrunk by
hypothesis and printed, and means a bug in the property's comparison or a gap in
the error model (``harness.oracle.error_model``).

    python tools/fuzz_references.py                      # 2,000 examples per property
    python tools/fuzz_references.py --examples 200 --adapter numpy --dtype float16

It prints one markdown row per property x adapter x dtype: examples run (shrinking
included), examples where the property does not apply, findings, the largest test
ratio seen where the property held (1 is the limit) and seconds; exit status 1
when anything was found. tests/test_fuzz.py runs a seeded slice of it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.cases.writer import flow as _flow
from harness.dtypes import DTYPE_NAMES
from harness.fuzz.search import REFERENCES, PropertyReport, property_names, search

DEFAULT_EXAMPLES = 2000


@dataclass
class Row:
    prop: str
    adapter: str
    dtype: str  # one dtype, or several joined by '+'
    report: PropertyReport
    seconds: float

    def cells(self) -> list[str]:
        r = self.report
        found = "1" if r.finding is not None else "0"
        found_text = found if r.error is None else f"could not settle: {r.error}"
        return [self.prop, self.adapter, self.dtype, str(r.examples), str(r.not_applicable),
                found_text, f"{r.max_ratio:.3g}", f"{self.seconds:.1f}"]  # fmt: skip


HEADERS = ["property", "adapter", "dtype", "examples", "not applicable", "findings",
           "max ratio", "seconds"]  # fmt: skip


def reference_targets(adapters: list[str] | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """(adapter spec, dtypes it is a reference for), from harness.fuzz.search.REFERENCES."""
    out = []
    for spec, dtypes in REFERENCES:
        if adapters and spec not in adapters:
            continue
        out.append((spec, tuple(dtypes or DTYPE_NAMES)))
    return out


def fuzz_references(
    *,
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    adapters: list[str] | None = None,
    dtypes: list[str] | None = None,
    props: list[str] | None = None,
    split_dtypes: bool = True,
    on_row=None,
) -> list[Row]:
    """Search every property against every reference; one search per dtype (``split_dtypes``)
    or one over all of an adapter's dtypes. A reference that cannot load here is skipped."""
    from harness.errors import AdapterLoadError
    from harness.execution.registry import load
    from harness.fuzz.strategies import Space

    rows = []
    for spec, ref_dtypes in reference_targets(adapters):
        wanted = tuple(d for d in ref_dtypes if not dtypes or d in dtypes)
        if not wanted:
            continue
        try:
            adapter = load(spec)
        except AdapterLoadError as e:
            print(f"skipping {spec}: {e}", file=sys.stderr)
            continue
        groups = [(d,) for d in wanted] if split_dtypes else [wanted]
        for group in groups:
            space = Space(dtypes=group, unsupported=frozenset(adapter.unsupported))
            for prop in props or property_names():
                report = PropertyReport(prop)
                start = time.perf_counter()
                search(prop, adapter, space, examples=examples, seed=seed, database=None,
                       report=report, references=None)  # fmt: skip
                row = Row(prop, spec, "+".join(group), report, time.perf_counter() - start)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                    help=f"examples per property, adapter and dtype ({DEFAULT_EXAMPLES})")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adapter", dest="adapters", action="append",
                    choices=[spec for spec, _ in REFERENCES])  # fmt: skip
    ap.add_argument("--dtype", dest="dtypes", action="append", choices=DTYPE_NAMES)
    ap.add_argument("--property", dest="props", action="append", choices=property_names())
    ap.add_argument("--mixed-dtypes", action="store_true",
                    help="one search over all of an adapter's dtypes, not one per dtype")  # fmt: skip
    args = ap.parse_args(argv)
    print(markdown_row(HEADERS))
    print(markdown_row(["---"] * len(HEADERS)))

    def show(row: Row) -> None:
        print(markdown_row(row.cells()), flush=True)

    start = time.perf_counter()
    rows = fuzz_references(
        examples=args.examples, seed=args.seed, adapters=args.adapters, dtypes=args.dtypes,
        props=args.props, split_dtypes=not args.mixed_dtypes, on_row=show,
    )  # fmt: skip
    total = sum(r.report.examples for r in rows)
    bad = [r for r in rows if r.report.finding is not None or r.report.error is not None]
    worst = max((r.report.max_ratio for r in rows), default=0.0)
    print(
        f"\n{len(rows)} searches, {total} examples, {len(bad)} with findings, "
        f"largest test ratio {worst:.3g}, {time.perf_counter() - start:.0f} s "
        f"(--examples {args.examples} --seed {args.seed})"
    )
    for r in bad:
        f = r.report.finding
        if f is None:
            print(f"\n{r.prop} / {r.adapter} [{r.dtype}]: could not settle: {r.report.error}")
            continue
        print(f"\n{r.prop} / {r.adapter} [{f.dtype}]: {f.message}")
        print(f"  the call: {_flow(f.fields)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
