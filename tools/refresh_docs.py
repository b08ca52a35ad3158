"""Figures in README.md and docs/: produced by commands, stored with the command, checked.

Every figure in the documentation that comes from a run sits between two markers,

    <!-- figure:NAME -->
    ...
    <!-- /figure:NAME -->

(on one line for a figure inside a sentence), and is the rendering of one data file,
``docs/figures/SOURCE.json``, which holds the command that produced it, its output and
when and where it ran. ``tests/test_docs.py`` checks that every block equals the
rendering of its data file (a hand edit fails) and recomputes the cheap sources live.

A source is ``live`` (seconds, computed in-process; the tests recompute it), ``run``
(a command of seconds to minutes, re-run by default) or ``slow`` (over about five
minutes, or needing hardware or packages this machine lacks: re-run only when named;
its data file says where the figure was measured).

    python tools/refresh_docs.py                    # re-run live and run sources, rewrite blocks
    python tools/refresh_docs.py coverage history   # re-run these sources only, rewrite blocks
    python tools/refresh_docs.py --render           # rewrite the blocks from the data files
    python tools/refresh_docs.py --check            # exit 1 if a block differs from its data
    python tools/refresh_docs.py --list             # every source: cost and command
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIGURES_DIR = REPO / "docs" / "figures"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: tables printed by the CLI are as wide as the terminal says; figures use a fixed width
COLUMNS = "200"

BLOCK = re.compile(r"<!-- figure:([\w-]+) -->(.*?)<!-- /figure:\1 -->", re.S)


# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """One data file: what produces it and how costly that is."""

    name: str
    command: str  # as a reader would type it, in the repository root
    cost: str  # "live", "run" or "slow"
    produce: Callable[[], str] | None = None  # the output; None: run `command`
    env: dict[str, str] = field(default_factory=dict)
    ok_codes: tuple[int, ...] = (0,)
    #: when the command fails after printing some figures, store those, with a note
    partial_ok: bool = False

    def output(self) -> str:
        if self.produce is not None:
            return self.produce()
        return shell(self.command, self.env, self.ok_codes)


class SourceFailed(Exception):
    """A command exited with an unexpected status (``stdout``: what it printed before)."""

    def __init__(self, message: str, stdout: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout


def shell(command: str, env: dict[str, str] | None = None, ok_codes=(0,)) -> str:
    full_env = {**os.environ, "COLUMNS": COLUMNS, **(env or {})}
    proc = subprocess.run(
        command, shell=True, cwd=REPO, env=full_env, capture_output=True, text=True, check=False
    )
    if proc.returncode not in ok_codes:
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        raise SourceFailed(f"exit {proc.returncode}: {last}", proc.stdout.rstrip("\n"))
    return proc.stdout.rstrip("\n")


def _repo_on_path() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def live_suite_size() -> str:
    """Cases, case x dtype runs, and how many of those runs expect a value or an error."""
    from harness import load_suite

    cases = load_suite()
    runs = sum(len(c.dtypes) for c in cases)
    errors = sum(len(c.dtypes) for c in cases if c.expect_error is not None)
    by_dtype: dict[str, int] = {}
    for c in cases:
        if c.expect_error is None:
            for d in c.dtypes:
                by_dtype[d] = by_dtype.get(d, 0) + 1
    return json.dumps(
        {"cases": len(cases), "runs": runs, "invalid_input_runs": errors,
         "valid_runs_by_dtype": by_dtype},
        indent=1,
    )  # fmt: skip


def live_coverage() -> str:
    from harness import load_suite
    from harness.cases.coverage import render

    return render(load_suite())


def live_history() -> str:
    from harness.gate.history import load_runs, render

    return render(load_runs([REPO / "reports" / "history"]))


def live_scoreboard() -> str:
    from harness.gate.scoreboard import load_runs, render_markdown

    return render_markdown(load_runs([REPO / "reports" / "scoreboard"]))


def live_help() -> str:
    from harness.cli.main import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal's width
    try:
        return build_parser().format_help().rstrip("\n")
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def live_repro() -> str:
    from harness import load_suite
    from harness.reports.repro import snippet

    case = next(c for c in load_suite() if c.id == "seed/weighted_mean")
    return snippet(case, "./wrong.py", "float32")


def live_limits() -> str:
    from harness.cases.limits import ENVIRONMENT, Limits

    what = {
        "max_file_bytes": "bytes per case file",
        "max_yaml_nodes": "YAML values after expanding anchors and aliases (alias bombs)",
        "max_yaml_depth": "YAML nesting depth",
        "max_array_elements": "elements per array, literal or generated (`shape:`)",
    }
    rows = ["| bound | default | variable |", "|---|---|---|"]
    for name, var in ENVIRONMENT.items():
        rows.append(f"| {what[name]} | {_number(name, getattr(Limits(), name))} | `{var}` |")
    return "\n".join(rows)


def _number(name: str, n: int) -> str:
    if name.endswith("_bytes") and n % 2**20 == 0:
        return f"{n // 2**20} MiB"
    if n > 1024 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    return f"{n:,}"


def live_bad_case_files() -> str:
    return str(len(list((REPO / "tests" / "bad_cases").glob("*.yaml"))))


def live_mutant_count() -> str:
    _repo_on_path()
    from tests.mutants.bugs import MUTANTS

    return str(len(MUTANTS))


def fuzz_sample() -> str:
    """The fuzz run's terminal output and the first case it wrote, separated by a line."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "found.yaml"
        command = FUZZ_SAMPLE.replace("--out found.yaml", f"--out {out}")
        printed = shell(command, ok_codes=(1,))
        written = out.read_text(encoding="utf-8")
    printed = printed.replace(str(out), "found.yaml")
    return printed + "\n" + SPLIT + "\n" + written.rstrip("\n")


SPLIT = "----- found.yaml -----"
FUZZ_SAMPLE = (
    "python -m harness fuzz --adapter tests/fuzz_targets/wrong_rare_mean.py --examples 200 "
    "--out found.yaml"
)


def verify_command(report: str, cases: list[str], dtypes: list[str]) -> str:
    """tools/beside_torch.py on some non-conforming results of a scoreboard report."""
    chosen = " ".join([*(f"--case {c}" for c in cases), *(f"--dtype {d}" for d in dtypes)])
    return f"python tools/beside_torch.py reports/scoreboard/{report}.json.gz {chosen}"


#: one case of each kind of divergence docs/scoreboard.md explains, per framework
DIVERGENCES_ONNX = verify_command(
    "onnx-1.23.2",
    ["numerics/large_spread_sum", "numerics/large_spread_half",
     "half_precision/mean_over_70000_targets", "half_precision/confident_target_none",
     "half_precision/accumulate_c4096", "invalid/target_negative_one",
     "invalid/weight_too_long", "invalid/reduction_average", "shapes/empty_sum_zero"],
    ["float64", "float16", "bfloat16"],
)  # fmt: skip
DIVERGENCES_ONNXRUNTIME = verify_command(
    "onnxruntime-1.32.0",
    ["invalid/target_negative_one", "invalid/batch_mismatch_shorter",
     "torch_samples/moduleinfo_error_006_target_shape_index_kdim1_mean",
     "invalid/weight_too_long", "invalid/reduction_average", "shapes/empty_sum_zero"],
    ["float64"],
)  # fmt: skip
#: the scoreboard runs whose divergences docs/scoreboard.md explains: framework -> version
SCOREBOARD_RUNS = {
    "paddle": "3.3.1", "mlx": "0.32.4", "tinygrad": "0.14.0", "keras": "3.15.1",
    "tensorflow": "2.21.0",
}  # fmt: skip

SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source("suite-size", "python tools/refresh_docs.py suite-size", "live",
               live_suite_size),
        Source("coverage", "python -m harness coverage", "live", live_coverage),
        Source("history", "python -m harness history reports/history", "live", live_history),
        Source("scoreboard", "python -m harness scoreboard reports/scoreboard --format markdown",
               "live", live_scoreboard),
        Source("cli-help", "python -m harness --help", "live", live_help),
        Source("repro-snippet", "python tools/refresh_docs.py repro-snippet", "live", live_repro),
        Source("limits", "python tools/refresh_docs.py limits", "live", live_limits),
        Source("bad-case-files", "ls tests/bad_cases/*.yaml | wc -l", "live",
               live_bad_case_files),
        Source("mutant-count", "python tools/refresh_docs.py mutant-count", "live",
               live_mutant_count),
        Source("suite-numpy", "python -m harness", "run"),
        Source("suite-three-adapters", "python -m harness --adapter torch --adapter jax "
               "--adapter numpy", "run", ok_codes=(1,)),
        Source("builtin-divergences", "python -m harness --adapter torch-module --adapter optax",
               "run", ok_codes=(0, 1)),
        Source("mutation-score", "python -m tests.mutants", "run"),
        Source("verdict-ratios", "python tools/verdict_figures.py", "run"),
        Source("fuzz-sample", FUZZ_SAMPLE, "run", fuzz_sample),
        Source("bench-startup", "python benchmarks/bench_startup.py", "run"),
        Source("bench-overhead-numpy", "python benchmarks/bench_overhead.py --adapter numpy",
               "run"),
        Source("bench-overhead-torch", "OMP_NUM_THREADS=1 python benchmarks/bench_overhead.py "
               "--adapter torch", "run"),
        Source("bench-oracle-suite", "python benchmarks/bench_oracle.py --modes "
               "suite,suite-mpmath", "run"),
        Source("bench-oracle-mpmath", "python benchmarks/bench_oracle.py --modes mpmath", "run"),
        Source("bench-cache-and-jobs", "python benchmarks/bench_cache_and_jobs.py", "run",
               partial_ok=True),
        Source("bench-plugin", "python benchmarks/bench_plugin.py", "run"),
        Source("bench-isolation", "python benchmarks/bench_isolation.py", "run"),
        Source("bench-jax-compiles", "python benchmarks/bench_jax_compiles.py", "run"),
        Source("bench-torch-large", "python benchmarks/bench_torch_large.py", "run"),
        Source("bench-rank-start", "python benchmarks/bench_rank_start.py", "run"),
        Source("bench-llm-profile", "python benchmarks/bench_llm_scale.py profile", "slow"),
        Source("bench-llm-scale", "python benchmarks/bench_llm_scale.py table", "slow"),
        Source("bench-oracle-large", "python benchmarks/bench_oracle.py --modes "
               "baseline,nll,nll-blocks,nll-thp,smooth,loss", "slow"),
        Source("bench-oracle-libraries", "pip install gmpy2 python-flint && python "
               "benchmarks/bench_oracle.py --modes libraries --rows 16", "slow"),
        Source("bench-jax-compiles-unpadded", "git show 4116c04:adapters/jax_ce.py > "
               "old_jax_ce.py && python benchmarks/bench_jax_compiles.py --adapter "
               "old_jax_ce.py:JaxAdapter", "slow"),
        Source("bench-llm-scale-4gib", "python benchmarks/bench_llm_scale.py table --size "
               "8192x131072 --repeat 1", "slow"),
        Source("bench-jax-function", "python benchmarks/bench_jax_compiles.py --adapter jax "
               "--adapter examples/jax_fn.py:cross_entropy --floor", "slow"),
        Source("bench-jax-function-warm", "python benchmarks/bench_jax_compiles.py --adapter jax "
               "--adapter examples/jax_fn.py:cross_entropy --warm", "slow"),
        Source("bench-tests", "python benchmarks/bench_tests.py --repeat 2", "slow"),
        Source("fuzz-references", "python tools/fuzz_references.py", "slow", ok_codes=(0,)),
        Source("loader-fuzz", "python tools/fuzz_loader.py --examples 60000 --seed 0", "slow",
               ok_codes=(0,)),
        # in an environment with the framework (pip install 'lossconf[onnx]'): the script
        Source("divergences-onnx", DIVERGENCES_ONNX, "slow"),
        Source("divergences-onnxruntime", DIVERGENCES_ONNXRUNTIME, "slow"),
        Source("fused-linear-run", "python -m harness --adapter torch --adapter numpy "
               "--cases cases/fused_linear.yaml --cases cases/generated/fused_linear_pairwise.yaml",
               "run"),
        Source("bench-fused-linear-memory", "python benchmarks/bench_fused_linear_memory.py",
               "run"),
        Source("cce-run", "pip install -q cut-cross-entropy triton && python -m harness --adapter "
               "harness.adapters.cut_cross_entropy --cases cases/fused_linear.yaml --cases "
               "cases/generated/fused_linear_pairwise.yaml", "slow", ok_codes=(0, 1)),
        Source("cuda-run", "python -m harness --adapter torch --adapter torch@device=cuda "
               "--adapter jax --report cuda.json --report cuda.md", "slow", ok_codes=(0, 1)),
        Source("vocab-parallel-reference", "python tools/vocab_parallel_figures.py --adapter "
               "torch-vocab-split --world-size 4", "slow"),
        # MEGATRON_PYTHON: an interpreter whose environment has megatron-core and lossconf
        Source("vocab-parallel-megatron", "${MEGATRON_PYTHON:-python} "
               "tools/vocab_parallel_figures.py --adapter megatron --world-size 2", "slow"),
        # each in the framework's own environment (with torch): python -m pip install
        # 'lossconf[paddle]' torch (docs/scoreboard.md)
        *(Source(f"divergences-{name}", f"python tools/verify_divergences.py {name} "
                 f"reports/scoreboard/{name}-{version}.json.gz", "slow")
          for name, version in SCOREBOARD_RUNS.items()),
    ]
}  # fmt: skip


# ---------------------------------------------------------------------------- data files


def data_path(source: str) -> Path:
    return FIGURES_DIR / f"{source}.json"


def load(source: str) -> dict:
    path = data_path(source)
    if not path.exists():
        raise SystemExit(f"no {path.relative_to(REPO)}: run python tools/refresh_docs.py {source}")
    return json.loads(path.read_text(encoding="utf-8"))


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return head or "unknown"


def _tree_state() -> str:
    """'clean', or 'modified' when tracked files differ from the commit."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                            capture_output=True, text=True, check=False).stdout  # fmt: skip
    return "modified" if status.strip() else "clean"


#: how the note of a figure whose command stopped early begins (not kept by a re-run)
STOPPED = "The command stopped"


def _kept_note(name: str) -> str | None:
    """The note written by hand into a figure's data file (what it costs to re-run, what it
    was measured with): a re-run keeps it; a note this tool wrote about a command that
    stopped early is not kept."""
    try:
        old = json.loads(data_path(name).read_text(encoding="utf-8"))
        note = old["recorded"].get("note")
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return note if isinstance(note, str) and not note.startswith(STOPPED) else None


def produce(source: Source) -> dict:
    """Run one source and write its data file."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    note = None
    try:
        output = source.output()
    except SourceFailed as e:
        if not (source.partial_ok and e.stdout):
            raise
        output, note = e.stdout, f"{STOPPED} ({e}) after printing these lines."
    data: dict = {
        "command": source.command,
        "output": output,
        "recorded": {
            "by": f"python tools/refresh_docs.py {source.name}",
            "commit": _commit(),
            "working_tree": _tree_state(),
            "date": time.strftime("%Y-%m-%d"),
            "seconds": round(time.perf_counter() - start, 1),
            "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        },
    }
    notes = [n for n in (_kept_note(source.name), note) if n]
    if notes:
        data["recorded"]["note"] = " ".join(notes)
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    data_path(source.name).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data


# ---------------------------------------------------------------------------- renderings


def console(data: dict) -> str:
    return f"```\n$ {data['command']}\n{data['output']}\n```"


def verbatim(data: dict) -> str:
    return data["output"]


def provenance(data: dict) -> str:
    """One line under a measured figure: the command, commit, date and machine load."""
    rec = data["recorded"]
    where = rec.get("where", "the 2-core development machine")
    load = rec.get("load_average")
    load_text = f", load average {load[0]:g} to {load[1]:g}" if load else ""
    tree = " with uncommitted changes" if rec.get("working_tree") == "modified" else ""
    return (
        f"<sub>`{data['command']}` at commit {rec['commit']}{tree} ({rec['date']}), "
        f"{where}{load_text}.</sub>"
    )


def measured(data: dict) -> str:
    note = data["recorded"].get("note")
    text = data["output"] + "\n\n" + provenance(data)
    return text + (f"\n<sub>{note}</sub>" if note else "")


def console_measured(data: dict) -> str:
    """A command's output as a console block, with the provenance line under it."""
    return console(data) + "\n\n" + provenance(data)


def corpus_size(data: dict) -> str:
    size = json.loads(data["output"])
    return f"{size['cases']:,} cases ({size['runs']:,} case x dtype runs)"


def _failing(data: dict) -> str:
    m = re.search(r"^(\d+) of (\d+) results do not conform", data["output"], re.M)
    return m.group(1) if m else "0"


def _fuzz_terminal(data: dict) -> str:
    """The search table and its summary line (the messages and repro that follow are long)."""
    lines = data["output"].split("\n" + SPLIT + "\n")[0].splitlines()
    end = next(i for i, line in enumerate(lines) if re.match(r"\d+ examples in ", line))
    shown = "\n".join(lines[: end + 1])
    return f"```\n$ {data['command']}\n{shown}\n```"


def _fuzz_case(data: dict) -> str:
    written = data["output"].split("\n" + SPLIT + "\n")[1]
    lines = written.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("- name:"))
    stop = next((i for i in range(start + 1, len(lines))
                 if lines[i].lstrip().startswith("- name:")), len(lines))  # fmt: skip
    case = [re.sub(r'(why: ".{100}).*"$', r'\1 ..."', line) for line in lines[start:stop]]
    return "```yaml\n" + "\n".join(case) + "\n```"


@dataclass(frozen=True)
class Figure:
    """A block (or an inline figure) in a page: the rendering of one data file."""

    name: str
    source: str
    render: Callable[[dict], str]
    inline: bool = False


FIGURE_LIST = [
    Figure("suite-numpy", "suite-numpy", console),
    Figure("three-adapters", "suite-three-adapters", console),
    Figure("three-adapters-failing", "suite-three-adapters", _failing, inline=True),
    Figure("builtin-divergences", "builtin-divergences", console),
    Figure("corpus-size", "suite-size", corpus_size, inline=True),
    Figure("coverage", "coverage", console),
    Figure("mutation-score", "mutation-score", console),
    Figure("mutant-count", "mutant-count", verbatim, inline=True),
    Figure("verdict-ratios", "verdict-ratios", verbatim),
    Figure("history", "history", console),
    Figure("scoreboard", "scoreboard", lambda d: d["output"].split("\n\n", 1)[-1]),
    Figure("cli-help", "cli-help", console),
    Figure("repro-snippet", "repro-snippet", lambda d: f"```python\n{d['output']}\n```"),
    Figure("limits", "limits", verbatim),
    Figure("bad-case-files", "bad-case-files", verbatim, inline=True),
    Figure("fuzz-sample", "fuzz-sample", _fuzz_terminal),
    Figure("fuzz-sample-case", "fuzz-sample", _fuzz_case),
    Figure("fuzz-references", "fuzz-references", measured),
    Figure("loader-fuzz", "loader-fuzz", measured),
    Figure("cuda-run", "cuda-run", measured),
    Figure("divergences-onnx", "divergences-onnx", console_measured),
    Figure("divergences-onnxruntime", "divergences-onnxruntime", console_measured),
    Figure("fused-linear-run", "fused-linear-run", console),
    Figure("cce-run", "cce-run", measured),
    Figure("vocab-parallel-reference", "vocab-parallel-reference", measured),
    Figure("vocab-parallel-megatron", "vocab-parallel-megatron", measured),
    *(Figure(f"divergences-{name}", f"divergences-{name}", measured) for name in SCOREBOARD_RUNS),
    *(Figure(name, name, measured) for name in SOURCES if name.startswith("bench-")),
]
FIGURES: dict[str, Figure] = {f.name: f for f in FIGURE_LIST}


def rendering(figure: Figure) -> str:
    """What sits between the figure's markers."""
    text = figure.render(load(figure.source))
    return text if figure.inline else f"\n{text}\n"


def blocks(text: str) -> list[tuple[str, str]]:
    """(figure name, text between its markers) for every figure in a page."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def rewrite(text: str) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name not in FIGURES:
            raise SystemExit(f"unknown figure {name!r}: add it to FIGURE_LIST in {__file__}")
        return f"<!-- figure:{name} -->{rendering(FIGURES[name])}<!-- /figure:{name} -->"

    return BLOCK.sub(one, text)


def stale_pages() -> list[str]:
    """Pages where a block differs from the rendering of its data file."""
    return [
        str(page.relative_to(REPO))
        for page in PAGES
        if rewrite(page.read_text(encoding="utf-8")) != page.read_text(encoding="utf-8")
    ]


def render_pages() -> None:
    """Rewrite every block of every page from its data file (the pages that changed)."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote {page.relative_to(REPO)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sources", nargs="*", help="re-run only these sources (any cost)")
    p.add_argument("--render", action="store_true", help="re-run nothing; rewrite the blocks")
    p.add_argument("--check", action="store_true", help="exit 1 when a block is stale")
    p.add_argument("--list", action="store_true", help="list the sources and exit")
    args = p.parse_args(argv)
    os.chdir(REPO)
    _repo_on_path()
    if args.list:
        for s in SOURCES.values():
            print(f"{s.name:24} {s.cost:5} {s.command}")
        return 0
    if args.check:
        stale = stale_pages()
        for page in stale:
            print(f"{page}: a figure differs from its data file (python tools/refresh_docs.py "
                  "--render)")  # fmt: skip
        return 1 if stale else 0
    unknown = [s for s in args.sources if s not in SOURCES]
    if unknown:
        p.error(f"unknown source(s) {', '.join(unknown)}; see --list")
    failed = []
    if not args.render:
        chosen = args.sources or [s.name for s in SOURCES.values() if s.cost != "slow"]
        for name in chosen:
            print(f"running {name}: {SOURCES[name].command}", flush=True)
            try:
                data = produce(SOURCES[name])
            except SourceFailed as e:
                print(f"  FAILED ({e}); {data_path(name).name} kept as it was", flush=True)
                failed.append(name)
                continue
            print(f"  {data['recorded']['seconds']} s", flush=True)
            # the pages follow each data file at once: a later source that runs the test suite
            # (bench-tests) must find no block that differs from its data file
            render_pages()
    render_pages()
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
