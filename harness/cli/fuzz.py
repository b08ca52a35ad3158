"""``python -m harness fuzz``: search an adapter for failing calls, write them as cases."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from harness.adapters import Adapter
from harness.cases.loader import load_file
from harness.cli import program
from harness.dtypes import DTYPE_NAMES
from harness.errors import UsageError
from harness.execution.registry import load
from harness.exit_codes import ExitCode
from harness.fuzz import search as fuzz_search
from harness.fuzz.search import (
    Outcomes,
    PropertyReport,
    References,
    WrittenCase,
    flow,
    property_names,
    run_search,
    settle_findings,
    write_file,
)
from harness.reports.repro import snippet

if TYPE_CHECKING:
    from harness.fuzz.strategies import Space


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=program.name("fuzz"),
        description=(fuzz_search.__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 nothing found; 1 a property failed (case written), a reference "
        "fails too (nothing written) or a search did not settle; 2 usage error",
    )
    p.add_argument("--adapter", default="numpy", metavar="SPEC", help="implementation to fuzz")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--examples", type=int, metavar="N", help="examples per property (default 100)"
    )
    budget.add_argument(
        "--budget", type=float, metavar="SECONDS", help="search until this much time is spent"
    )
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    p.add_argument(
        "--dtype",
        dest="dtypes",
        action="append",
        choices=DTYPE_NAMES,
        metavar="DTYPE",
        help=f"generate only these dtypes (repeatable; one of {', '.join(DTYPE_NAMES)})",
    )
    p.add_argument(
        "--property",
        dest="props",
        action="append",
        metavar="NAME",
        help="check only these properties (repeatable): " + ", ".join(property_names()),
    )
    p.add_argument("--out", metavar="FILE.yaml", help="write the minimal failing cases here")
    p.add_argument(
        "--database", metavar="DIR", help="keep hypothesis's example database in DIR (default none)"
    )
    p.add_argument(
        "--max-classes", type=int, default=6, metavar="C", help="largest C of literal cases (6)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks for errors")
    return p


def _settle(args: argparse.Namespace, adapter: Adapter) -> Space:
    # hypothesis (an optional extra, checked by require_hypothesis first) comes with strategies
    from harness.fuzz.strategies import Space

    if args.examples is not None and args.examples < 1:
        raise UsageError(f"--examples {args.examples}: must be at least 1")
    if args.budget is not None and args.budget <= 0:
        raise UsageError(f"--budget {args.budget}: must be positive")
    if args.max_classes < 1:
        raise UsageError(f"--max-classes {args.max_classes}: must be at least 1")
    known = property_names()
    for name in args.props or ():
        if name not in known:
            raise UsageError(f"--property {name!r}: must be one of {', '.join(known)}")
    wanted = args.dtypes or list(DTYPE_NAMES)
    dtypes = tuple(d for d in dict.fromkeys(wanted) if d not in adapter.unsupported)
    if not dtypes:
        raise UsageError(
            f"adapter {adapter.name!r} declares every requested dtype unsupported "
            f"({', '.join(wanted)}): nothing to fuzz"
        )
    if args.out is not None and Path(args.out).suffix not in (".yaml", ".yml"):
        raise UsageError(f"--out {args.out}: a case file must end in .yaml or .yml")
    return Space(
        dtypes=dtypes, unsupported=frozenset(adapter.unsupported), max_classes=args.max_classes
    )


def _command_text(args: argparse.Namespace) -> str:
    parts = ["python -m harness fuzz", f"--adapter {args.adapter}", f"--seed {args.seed}"]
    if args.examples is not None:
        parts.append(f"--examples {args.examples}")
    if args.budget is not None:
        parts.append(f"--budget {args.budget:g}")
    parts += [f"--dtype {d}" for d in args.dtypes or ()]
    parts += [f"--property {p}" for p in args.props or ()]
    return " ".join(parts)


def _result(r: PropertyReport, outcomes: Outcomes) -> str:
    if r.error is not None:
        return f"could not settle: {r.error}"
    parts = []
    if r.finding is not None:
        if outcomes.is_written.get(r.prop, True):
            parts.append(f"FAILED [{r.finding.dtype}]")
        else:
            refs = ", ".join(dict.fromkeys(d.reference for d in outcomes.blocked[r.prop]))
            parts.append(f"not written: reference {refs} fails too [{r.finding.dtype}]")
    d = r.disagreement  # the first of r.disagreements, kept
    if r.disagreements and d is not None:
        parts.append(
            f"reference {d.reference} fails too on {r.disagreements} "
            f"call{'s' if r.disagreements > 1 else ''} [{d.dtype}]"
        )
    return "; ".join(parts) or "ok"


def _table(reports: list[PropertyReport], outcomes: Outcomes | None = None) -> str:
    outcomes = outcomes or Outcomes()
    rows = [
        [r.prop, r.examples, r.not_applicable, f"{r.max_ratio:.3g}", _result(r, outcomes)]
        for r in reports
    ]
    headers = ["property", "examples", "not applicable", "max ratio", "result"]
    return tabulate(
        rows,
        headers=headers,
        tablefmt="simple",
        disable_numparse=True,
        colalign=("left", "right", "right", "right", "left"),
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    fuzz_search.require_hypothesis()
    adapter = load(args.adapter)
    space = _settle(args, adapter)
    command = _command_text(args)
    references = References()
    print(f"fuzzing adapter {adapter.name} ({adapter.version()}), dtypes {', '.join(space.dtypes)}")
    start = time.perf_counter()
    reports = run_search(
        adapter,
        space,
        props=args.props,
        examples=args.examples,
        budget=args.budget,
        seed=args.seed,
        database=None if args.database is None else Path(args.database),
        references=references,
    )
    seconds = time.perf_counter() - start
    outcomes = settle_findings(reports, adapter, command, references)
    print(_table(reports, outcomes))
    total = sum(r.examples for r in reports)
    print(f"\n{total} examples in {seconds:.1f} s (max ratio: the largest test ratio where the "
          "property held; 1 is the limit)")  # fmt: skip
    for spec, why in references.unavailable.items():
        print(f"reference {spec} not used: {why}")
    errors = [r for r in reports if r.error is not None]
    shared = [(r.prop, r.disagreement) for r in reports if r.disagreement is not None]
    for prop, d in shared:
        print(f"\n{prop}: not a finding, {d.text()}")
        print(f"  the call: {flow(d.fields)}")
    findings = [r.finding for r in reports if r.finding is not None]
    if not findings:
        if not errors and not shared:
            print("no failure found")
            return ExitCode.OK
        print("no failure of the adapter found" + ("; some searches did not settle" * bool(errors)))
        return ExitCode.NONCONFORMING
    for f in findings:
        print(f"\n{f.prop} [{f.dtype}]: {f.message}")
        for note in outcomes.notes.get(f.prop, ()):
            print(f"  {note}")
    written = outcomes.written
    if not written:
        print("\nno case written: a reference implementation fails every finding too")
        return ExitCode.NONCONFORMING
    if args.out is None:
        print("\nminimal failing cases (write them with --out FILE.yaml):\ncases:")
        print("\n".join(c.text for c in written))
        return ExitCode.NONCONFORMING
    out = Path(args.out)
    write_file(out, written, command)
    print(f"\nwrote {len(written)} cases to {out}; reproduce with:")
    print(f"  python -m harness --adapter {args.adapter} --cases {out}")
    _print_snippet(out, written[0], args.adapter)
    return ExitCode.NONCONFORMING


def _print_snippet(path: Path, first: WrittenCase, adapter_spec: str) -> None:
    case = next(c for c in load_file(path) if c.name == first.name)
    print("\nor in Python:\n")
    print(snippet(case, adapter_spec, first.dtype))
