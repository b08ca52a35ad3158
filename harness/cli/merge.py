"""``python -m harness merge SHARD.json ...``: the shards of a ``--shard I/N`` run as one report
and one gate verdict (exit 0, 1 as a run's; 2 when the files are not the N shards of one run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from harness.cli import program
from harness.cli.options import RUN_OPTIONS, config_from
from harness.cli.run import check_inputs
from harness.exit_codes import ExitCode
from harness.gate import render
from harness.gate.baseline import key_of
from harness.gate.merge import merge
from harness.reports import document, files

#: the run options that apply to a merge: what to write and how to judge
MERGE_OPTIONS = ("report", "expectations", "baseline", "growth-factor")
#: non-conforming results listed in the terminal
SHOWN = 20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=program.name("merge"),
        description="Merge the JSON reports of the N shards of a run (--shard I/N) into the "
        "report of the whole run, judged again with --expectations and --baseline: the same "
        "results, in the same order, and the same verdict as one unsharded run. Exit 0 when it "
        "conforms, 1 when not, 2 when a shard is missing, given twice or incomplete, or the "
        "shards ran different suites, selections, lossconf or framework versions.",
    )
    p.add_argument("shards", nargs="+", type=Path, metavar="SHARD.json",
                   help="the JSON report of every shard, in any order")  # fmt: skip
    for opt in RUN_OPTIONS:
        if opt.name in MERGE_OPTIONS:
            p.add_argument(f"--{opt.name}", dest=opt.dest, help=opt.help, **opt.kwargs)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="list expected non-conformities; repros"
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    config = config_from(args)
    inputs = check_inputs(config)
    merged = merge(args.shards, config, inputs)
    doc = merged.document
    if not config.quiet:
        headers, rows = document.summary_rows(doc)
        print(tabulate(rows, headers=headers))
        print(
            f"\nmerged {len(doc['merged_from'])} shards: "
            + ", ".join(
                f"{m['shard']} {m['file']} ({m['results']} results)" for m in doc["merged_from"]
            )
        )
        blocking = document.blocking(doc)
        if blocking:
            rows = [[*key_of(r), r["status"], r["message"][:70]] for r in blocking[:SHOWN]]
            more = f" (the first {SHOWN}; the reports list all)" if len(blocking) > SHOWN else ""
            print(f"\nNot conforming{more}:")
            print(tabulate(rows, headers=["case", "adapter", "dtype", "status", "message"]))
    print(document.headline(doc))
    print(render.gate(merged.outcome, merged.results, doc, verbose=config.verbose))
    render.warn_unused(merged.outcome, config.expectations)
    # as a run's: invalid case files skipped under --keep-going make it exit 2, and the report
    # says the exit code
    code = ExitCode.USAGE if doc["load_errors"] else merged.outcome.exit_code
    doc["gate"]["exit_code"] = int(code)
    for path in config.reports:
        files.write(path, doc)
        print(f"wrote {path}", file=sys.stderr)
    if doc["load_errors"]:
        print(
            f"lossconf: error: the shards skipped {len(doc['load_errors'])} invalid case file(s) "
            "(see load_errors in the report); their cases did not run",
            file=sys.stderr,
        )
    return code
