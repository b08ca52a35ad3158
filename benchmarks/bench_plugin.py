"""Issue 13's plugin target: the pytest plugin within 1.2x the CLI on the same selection.

    python benchmarks/bench_plugin.py                       # the whole built-in suite, numpy
    python benchmarks/bench_plugin.py --adapter torch -k weight

Runs one selection both ways, each in a fresh interpreter, with a warm cache folder (filled
by a first, untimed CLI run: both read the same cases and expected values):

- CLI: ``python -m harness -q --adapter A [-k K]``;
- plugin: ``python -m pytest -q -p no:cacheprovider --lossconf-adapter A [--lossconf-k K]``
  in a folder of its own (no conftest, an empty ``pytest.ini`` given with ``-c``: a case
  path must not make pytest take this repository's configuration),
  with the plugins installed in the environment (hypothesis's, xdist's) as a user has them,
  and again with ``-p no:hypothesispytest -p no:xdist``, which shows what those cost;
- pytest's own floor: as many empty tests (``def test_empty(i): pass``, parametrized) as the
  selection has results, with the same plugins left out: what pytest's test protocol
  (setup, call, teardown, capture, logging, reports) costs per item before any of ours.

Wall and CPU time (user + system of the child), best of ``--repeat``, interleaved; prints
one markdown table.

The children run with Python's bytecode cache on (``child_env.py``); the untimed first
runs write the ``.pyc`` files. ``--no-warm-up`` leaves them out (the CLI's first run, which
fills the cache folder and counts the selection, is then also its first timed run): a smoke
run (tests/test_benchmarks.py), whose times may include a first run's extra work.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from child_env import add_option, child_env, run_timed

REPO = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds of one command, and its last output line; exits on failure."""
    wall, cpu, proc = run_timed(cmd, env, cwd)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return wall, cpu, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="numpy")
    ap.add_argument("-k", dest="keyword", help="a keyword selection (the CLI's -k)")
    ap.add_argument("--cases", help="a case file or folder instead of the built-in suite")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="leave out the untimed first runs (a smoke run)",
    )
    add_option(ap)
    args = ap.parse_args()
    py = sys.executable
    cli_sel = ["--adapter", args.adapter]
    plugin_sel = ["--lossconf-adapter", args.adapter]
    if args.keyword:
        cli_sel += ["-k", args.keyword]
        plugin_sel += ["--lossconf-k", args.keyword]
    if args.cases:
        path = str(Path(args.cases).resolve())
        cli_sel += ["--cases", path]
        plugin_sel += ["--lossconf-cases", path]
    ini = ["-c", "pytest.ini"]  # in the run's folder (below)
    runs = {
        "CLI: `python -m harness -q`": [py, "-m", "harness", "-q", *cli_sel],
        "plugin: `python -m pytest -q -p no:cacheprovider`": [
            py, "-m", "pytest", *ini, "-q", "-p", "no:cacheprovider", *plugin_sel,
        ],
        "plugin, without hypothesis's and xdist's plugins": [
            py, "-m", "pytest", *ini, "-q", "-p", "no:cacheprovider",
            "-p", "no:hypothesispytest", "-p", "no:xdist", *plugin_sel,
        ],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "project"
        folder.mkdir()
        (folder / "pytest.ini").write_text("[pytest]\n")
        env = child_env(args.keep_bytecode_env, LOSSCONF_CACHE_DIR=str(Path(tmp) / "cache"))
        # fills the caches (cases, expected values, bytecode); and the selection's size:
        # "N results, M not conforming"
        first = timed(runs["CLI: `python -m harness -q`"], env, folder)
        for label, cmd in runs.items():
            if label.startswith("plugin") and args.warm_up:
                timed(cmd, env, folder)
        n_items = int(first[2].split()[0])
        empty = Path(tmp) / "empty"
        empty.mkdir()
        (empty / "test_empty.py").write_text(
            f"import pytest\n\n@pytest.mark.parametrize('i', range({n_items}))\n"
            "def test_empty(i):\n    pass\n"
        )
        runs[f"pytest alone: {n_items} empty tests, same plugins left out"] = [
            py, "-m", "pytest", *ini, "-q", "-p", "no:cacheprovider",
            "-p", "no:hypothesispytest", "-p", "no:xdist", str(empty / "test_empty.py"),
        ]  # fmt: skip
        best: dict[str, list[float]] = {k: [float("inf"), float("inf")] for k in runs}
        summary = {}
        for i in range(args.repeat):
            for label, cmd in runs.items():
                if i == 0 and label.startswith("CLI") and not args.warm_up:
                    wall, cpu, summary[label] = first
                else:
                    wall, cpu, summary[label] = timed(cmd, env, folder)
                best[label] = [min(best[label][0], wall), min(best[label][1], cpu)]
    cli_wall, cli_cpu = best["CLI: `python -m harness -q`"]
    selection = " ".join(
        [f"-k {args.keyword}"] * bool(args.keyword) + [f"--cases {args.cases}"] * bool(args.cases)
    )
    print(
        f"| {args.adapter}, {selection or 'the built-in suite'} | wall s (best of {args.repeat}) | CPU s | "
        "x CLI (wall) | x CLI (CPU) | last line |"
    )
    print("|---|---|---|---|---|---|")
    for label, (wall, cpu) in best.items():
        print(
            f"| {label} | {wall:.2f} | {cpu:.2f} | {wall / cli_wall:.2f} | {cpu / cli_cpu:.2f} "
            f"| {summary[label]} |"
        )


if __name__ == "__main__":
    main()
