"""The oracle (correctly rounded, harness.oracle.exact.cross_entropy): large-case throughput and
memory against one bare float64 logsumexp pass, the mpmath reference, and a cold first run.

Each large-case measurement runs in a fresh subprocess so ``ru_maxrss`` is its own peak:

    python benchmarks/bench_oracle.py                  # 4096 x 131072 float32 (2 GiB) + cold suite
    python benchmarks/bench_oracle.py --rows 256       # a quicker, smaller run
    python benchmarks/bench_oracle.py --modes suite    # only the cold first run of the suite

Large case: float32 N(0, 4^2) logits made in place; class-index targets with a
quarter ignored. Modes: ``nll`` (no weights, no smoothing: the common case),
``smooth`` (class weights and label smoothing 0.1: the most work per row),
``loss`` (``smooth`` without the gradient). The baseline is one bare NumPy
float64 log-sum-exp pass over the same array in row chunks (max, subtract, exp,
sum, log); each row gives wall seconds and the process's CPU seconds (every thread's:
numba's compiled kernel runs on all cores; on a busy machine the wall time of a parallel
loop grows more than its CPU time), and of those the system's (mostly the page faults of
the fresh float64 gradient). ``nll-thp`` is ``nll`` with the gradient's memory from
``np.zeros`` (NumPy advises transparent huge pages for it) instead of
``harness.oracle.pages.zeros``; ``nll-blocks`` is ``nll`` with the gradient made block of
rows by block of rows into the same 8 MiB (``harness.oracle.fast.RowBlocks``), as the
streaming path of large cases takes it: every entry computed, none of it fresh memory.
``mpmath`` times the 200-bit reference and the oracle on one 64 x 1000 case. ``libraries`` (not in the default modes) times the alternatives
on a 16 x 1000 case: mpmath with whichever backend it found (gmpy2 when
installed; ``MPMATH_NOGMPY=1`` forces pure Python) and python-flint's arb ball
arithmetic, if importable. ``suite`` runs ``python -m harness -q`` with an empty
``LOSSCONF_CACHE_DIR`` (a first run: the built-in files' frozen data, ``harness/cases/
frozen.py``, and every other expected value computed), then again warm; the same on a copy
of the files elsewhere (a user's files: no frozen data, every file parsed and every expected
value computed), best wall and CPU times; and measures in process the CPU time of the
expected values a first run computes (the oracle, its error bounds, the fused linear
oracle, the cache files written) and the oracle's share of a cold run without frozen data
(``suite-mpmath``: also with the previous oracle in its place, 200-bit mpmath up to 200,000
logits and the float64 streaming pass above). Its interpreters read Python's
bytecode cache (``child_env.py``), as a first run after installing does. Prints markdown
table rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from child_env import add_option, child_env, run_timed

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(rows: int, classes: int, mode: str):
    from harness.oracle.problem import Problem

    rng = np.random.default_rng(0)
    x = np.empty((rows, classes), dtype=np.float32)
    for lo in range(0, rows, 64):  # in pieces: never a float64 copy of the whole array
        x[lo : lo + 64] = rng.standard_normal((min(64, rows - lo), classes), dtype=np.float32) * 4
    t = rng.integers(0, classes, rows)
    t[rng.random(rows) < 0.25] = -100
    if mode in ("nll", "nll-thp", "nll-blocks"):
        return x, Problem(x, t, False)
    w = rng.uniform(0.5, 2.0, classes)
    return x, Problem(x, t, False, weight=w, label_smoothing=0.1)


def logsumexp_pass(x: np.ndarray) -> np.ndarray:
    """One bare float64 log-sum-exp over rows, in 8 MiB float64 chunks."""
    out = np.empty(x.shape[0])
    step = max(1, 2**20 // x.shape[1])
    buf = np.empty((min(step, x.shape[0]), x.shape[1]))
    for lo in range(0, x.shape[0], step):
        d = buf[: min(step, x.shape[0] - lo)]
        np.copyto(d, x[lo : lo + step])
        m = d.max(axis=1)
        d -= m[:, None]
        np.exp(d, out=d)
        out[lo : lo + step] = m + np.log(d.sum(axis=1))
    return out


def in_blocks(problem) -> None:
    """The oracle's loss and every gradient entry, the gradient block of rows by block of rows
    into the same 8 MiB of float64 (``RowBlocks``, as the streaming path of large cases takes
    it), each block read once as a consumer would."""
    from harness.execution.streaming import BLOCK_ELEMENTS
    from harness.oracle.fast import RowBlocks

    blocks = RowBlocks(problem, target_elements=BLOCK_ELEMENTS)
    assert blocks.possible
    n = problem.logits.shape[0]
    for lo in range(0, n, blocks.rows_per_block):
        grad, _ = blocks.block(lo, min(n, lo + blocks.rows_per_block))
        assert grad is not None
    blocks.finish()


def measure(mode: str, rows: int, classes: int) -> dict:
    from harness.oracle import cross_entropy, pages
    from harness.oracle import fast as oracle_fast

    if mode == "nll-thp":
        pages.MIN_BYTES = 1 << 62  # every array from np.zeros
    x, problem = make_inputs(rows, classes, mode)
    cross_entropy(problem.__class__(x[:1], problem.target[:1], False))  # tables, imports
    sys_cpu = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    start, cpu = time.perf_counter(), time.process_time()
    if mode == "baseline":
        logsumexp_pass(x)
    elif mode == "nll-blocks":
        in_blocks(problem)
    else:
        cross_entropy(problem, want_grad=mode != "loss")
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss * 1024
    return {
        "mode": mode,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "sys_seconds": usage.ru_stime - sys_cpu,
        "peak_bytes": peak,
        "logits_bytes": x.nbytes,
        "rows_mpmath": oracle_fast.stats["rows_mpmath"],
    }


def mpmath_vs_fast() -> str:
    from harness.oracle import cross_entropy
    from harness.oracle.exact import cross_entropy_mpmath
    from harness.oracle.problem import Problem

    rng = np.random.default_rng(1)
    p = Problem(rng.normal(size=(64, 1000)) * 3, rng.integers(0, 1000, 64), False)
    cross_entropy(Problem(p.logits[:1], p.target[:1], False))
    t0 = time.perf_counter()
    fast = cross_entropy(p)
    t1 = time.perf_counter()
    ref = cross_entropy_mpmath(p)
    t2 = time.perf_counter()
    same = np.array_equal(fast.grad, ref.grad) and np.array_equal(fast.loss, ref.loss)
    return (
        f"| 64 x 1000 float64, loss + grad | mpmath {t2 - t1:.2f} s | oracle {t1 - t0:.4f} s | "
        f"{(t2 - t1) / (t1 - t0):.0f}x | bit-identical: {same} |"
    )


def libraries() -> str:
    """The alternatives: mpmath's gmpy2 backend, python-flint's arb balls (if importable)."""
    import mpmath

    from harness.oracle import cross_entropy
    from harness.oracle.exact import cross_entropy_mpmath
    from harness.oracle.problem import Problem

    rng = np.random.default_rng(1)
    p = Problem(rng.normal(size=(16, 1000)) * 3, rng.integers(0, 1000, 16), False)
    cross_entropy(Problem(p.logits[:1], p.target[:1], False))
    t0 = time.perf_counter()
    cross_entropy_mpmath(p)
    t1 = time.perf_counter()
    cross_entropy(p)
    t2 = time.perf_counter()
    us = 1e6 / p.logits.size
    out = (
        f"| 16 x 1000, us per logit | mpmath 200-bit ({mpmath.libmp.BACKEND} backend) "
        f"{(t1 - t0) * us:.2f} | double-double oracle {(t2 - t1) * us:.3f} |"
    )
    try:
        import flint
    except ImportError:
        return out + " python-flint not installed |"
    flint.ctx.prec = 120
    t0 = time.perf_counter()
    for n in range(p.logits.shape[0]):  # loss and gradient in arb balls, no rounding check
        row = [flint.arb(float(v)) for v in p.logits[n]]
        m = float(p.logits[n].max())
        ex = [(v - m).exp() for v in row]
        z = sum(ex, flint.arb(0))
        -(row[p.target[n]] - m - z.log())
        g = [e / z for e in ex]
        g[p.target[n]] -= 1
        [float(v.mid()) for v in g]
    return out + f" python-flint arb 120-bit {(time.perf_counter() - t0) * us:.2f} |"


def _first_and_second_run(
    repeat: int, args: list[str], env: dict[str, str], fresh_numba: str | None = None
) -> tuple:
    """Best wall and CPU seconds (the child's user + system time) of a first run (an empty cache
    folder) and of a second one, over ``repeat`` fresh folders, and the last run's summary.
    ``fresh_numba``: a folder (the children's ``NUMBA_CACHE_DIR``) emptied before each first
    run."""
    best = {"cold": (math.inf, math.inf), "warm": (math.inf, math.inf)}
    summary = ""
    for _ in range(repeat):
        if fresh_numba is not None:
            shutil.rmtree(fresh_numba, ignore_errors=True)
            os.makedirs(fresh_numba)
        with tempfile.TemporaryDirectory() as cache:
            env = {**env, "LOSSCONF_CACHE_DIR": cache}
            for run in ("cold", "warm"):
                wall, cpu, out = run_timed(
                    [sys.executable, "-m", "harness", "-q", *args], env, ROOT
                )
                if out.returncode not in (0, 1):
                    raise SystemExit(f"python -m harness -q failed: {out.stderr.strip()}")
                best[run] = (min(best[run][0], wall), min(best[run][1], cpu))
            summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
    return (
        f"cold {best['cold'][0]:.2f} s (CPU {best['cold'][1]:.2f} s), "
        f"warm {best['warm'][0]:.2f} s (CPU {best['warm'][1]:.2f} s)",
        summary,
    )


def cold_suite(repeat: int, with_mpmath: bool, cases: list[str], env: dict[str, str]) -> list[str]:
    """A first run of the suite: ``repeat`` times an empty cache folder, a cold run and a warm
    one; the same for a copy of the built-in files elsewhere (a user's files: no frozen data,
    ``harness/cases/frozen.py``); then the oracle's share of a cold run, in process. ``env``:
    the children's environment (``child_env``: a first run after installing reads compiled
    bytecode)."""
    env = dict(env)
    selection = [a for path in cases for a in ("--cases", path)]
    lines = ["| first run of the suite | time | detail |", "|---|---|---|"]
    times, summary = _first_and_second_run(repeat, selection, env)
    lines.append(
        f"| `python -m harness -q{''.join(' ' + a for a in selection)}`, "
        f"empty LOSSCONF_CACHE_DIR (best of {repeat}) | {times} | {summary} |"
    )
    if not cases:  # the built-in suite: also where numba has never compiled its kernels
        with tempfile.TemporaryDirectory() as numba_cache:
            times, summary = _first_and_second_run(
                repeat, [], {**env, "NUMBA_CACHE_DIR": numba_cache}, fresh_numba=numba_cache
            )
        lines.append(
            f"| the same, numba's disk cache empty before each first run (a new machine: the "
            f"helper takes the NumPy path; best of {repeat}) | {times} | {summary} |"
        )
    if not cases:  # the built-in suite: also as a user's files, without its frozen data
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "cases"
            shutil.copytree(ROOT / "cases", copy, ignore=shutil.ignore_patterns("frozen"))
            times, summary = _first_and_second_run(repeat, ["--cases", str(copy)], env)
        lines.append(
            f"| the same files copied elsewhere (a user's files: no frozen data), "
            f"`--cases COPY` (best of {repeat}) | {times} | {summary} |"
        )
    # the oracle's share of a cold run: as a first run is (frozen data), without it, and with
    # the previous oracle
    for which in (["frozen"], [], ["mpmath"]) if with_mpmath else (["frozen"], []):
        with tempfile.TemporaryDirectory() as cache:
            env["LOSSCONF_CACHE_DIR"] = cache
            out = subprocess.run(
                [sys.executable, "-c", SUITE_ORACLE_SHARE, json.dumps(which), *selection],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )  # fmt: skip
            if out.returncode != 0:
                raise SystemExit(f"the in-process cold run failed: {out.stderr.strip()}")
            lines.append(out.stdout.strip().splitlines()[-1])
    return lines


SUITE_ORACLE_SHARE = """
import json, sys, time
from harness.cases import frozen
from harness.cli.main import main as cli
from harness.oracle import cache as expected_cache
from harness.oracle import exact
from harness.oracle import fast as oracle_fast
flags = json.loads(sys.argv[1])
reference = "mpmath" in flags
# "frozen": a first run as it is; else every expected value computed, as for a user's files
frozen.enabled = "frozen" in flags
def previous(problem, want_grad=True):  # before issue 13: mpmath up to 200,000 logits
    if problem.logits.size > 200_000:
        from harness.oracle.stream import cross_entropy_streaming
        return cross_entropy_streaming(problem, want_grad=want_grad)
    return exact.cross_entropy_mpmath(problem, want_grad=want_grad)
# the name the expected-value cache calls (harness.oracle.cross_entropy)
inner = previous if reference else expected_cache.cross_entropy
spent = {"calls": 0, "all": 0.0, "kernel": 0.0, "kernel_calls": 0}
def timed(problem, want_grad=True):
    start = time.process_time()
    try:
        return inner(problem, want_grad=want_grad)
    finally:
        took = time.process_time() - start
        spent["all"] += took
        spent["calls"] += 1
        if problem.kernel:
            spent["kernel"] += took
            spent["kernel_calls"] += 1
expected_cache.cross_entropy = timed
parts = {"bounds": 0.0, "linear": 0.0, "linear_calls": 0, "written": 0.0}
def timing(name, f, calls=None):
    def g(*a, **k):
        start = time.process_time()
        try:
            return f(*a, **k)
        finally:
            parts[name] += time.process_time() - start
            if calls:
                parts[calls] += 1
    return g
expected_cache.error_bounds = timing("bounds", expected_cache.error_bounds)
expected_cache.linear_bounds = timing("linear", expected_cache.linear_bounds)
expected_cache.fused_linear_cross_entropy = timing(
    "linear", expected_cache.fused_linear_cross_entropy, "linear_calls")
expected_cache.write_arrays = timing("written", expected_cache.write_arrays)
# the helper process's share (harness.execution.prefetch): its items' states, its CPU
from harness.execution import prefetch
helper = {"items": 0, "done": 0}
real_close = prefetch.Prefetch.close
def close(self):
    real_close(self)
    helper["items"] += len(self.items)
    helper["done"] += list(self.state[:]).count(prefetch.DONE)
prefetch.Prefetch.close = close
if not frozen.enabled:  # the oracle's whole cost in this process: no helper
    prefetch.MIN_LOGITS = 1 << 62
import resource
start = time.process_time()
code = cli(["-q", *sys.argv[2:]])
total = time.process_time() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN)
helper_cpu = children.ru_utime + children.ru_stime
assert code in (0, 1), code
s = oracle_fast.stats
kernel = (f"of which {spent['kernel']:.2f} s in {spent['kernel_calls']} problems with kernel "
          f"fields (softcap, logit_scale, z_loss)")
if frozen.enabled:
    computed = spent["all"] + parts["bounds"] + parts["linear"] + parts["written"]
    import os, pathlib
    folder = pathlib.Path(os.environ["LOSSCONF_CACHE_DIR"])
    written = sum(p.stat().st_size for p in folder.glob("*.arrays"))
    print(f"| the expected values a first run computes itself (frozen data for the rest; "
          f"in-process, CPU) | {computed:.2f} s of {total:.2f} s | {spent['calls']} oracle "
          f"calls {spent['all']:.2f} s, their error bounds {parts['bounds']:.2f} s, "
          f"{parts['linear_calls']} fused linear problems {parts['linear']:.2f} s, cache files "
          f"written {parts['written']:.2f} s ({written / 2**20:.1f} MiB); a helper process "
          f"computed {helper['done']} of the {helper['items']} values with {helper_cpu:.2f} s of "
          f"CPU on the other core |")
elif reference:
    print(f"| the previous oracle instead (mpmath, float64 streaming above 200,000 logits), "
          f"one cold run without frozen data (in-process, CPU) | "
          f"{spent['all']:.2f} s of {total:.2f} s | {spent['calls']} calls |")
else:
    print(f"| the oracle within one cold run without frozen data (in-process, CPU) | "
          f"{spent['all']:.2f} s of {total:.2f} s | "
          f"{spent['calls']} calls, {s['rows']} positions, {s['rows_mpmath']} recomputed in "
          f"mpmath, {s['whole_mpmath']} problems wholly in mpmath; {kernel} |")
"""


MODES = {
    "baseline": "bare float64 logsumexp pass",
    "loss": "oracle, weights + smoothing, loss only",
    "nll": "oracle, loss + float64 grad (no weights, no smoothing)",
    "nll-thp": "the same, the gradient's memory from `np.zeros` (huge pages)",
    "nll-blocks": "the same, the gradient block by block (the streaming path's form)",
    "smooth": "oracle, loss + float64 grad (weights + smoothing 0.1)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=131072)
    ap.add_argument("--modes", default="baseline,nll,smooth,loss,mpmath,suite,suite-mpmath")
    ap.add_argument("--repeat", type=int, default=3, help="cold suite runs (best is printed)")
    ap.add_argument(
        "--cases",
        action="append",
        default=[],
        help="suite modes: run these case files or folders instead of the built-in suite",
    )
    add_option(ap)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.rows, args.classes)))
        return
    modes = args.modes.split(",")
    results = {}
    for mode in (m for m in modes if m in MODES):
        cmd = [sys.executable, __file__, "--child", mode, f"--rows={args.rows}",
               f"--classes={args.classes}"]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        results[mode] = json.loads(out)
    if results:
        base = results.get("baseline", {}).get("seconds")
        print(
            f"| {args.rows} x {args.classes} float32 | seconds | ns per logit | CPU s (all "
            "threads) | of which system | throughput / baseline | peak RSS / logits bytes | "
            "positions recomputed in mpmath |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for mode, r in results.items():
            ratio = f"{base / r['seconds']:.3f}" if base else "-"
            ns = r["seconds"] / (args.rows * args.classes) * 1e9
            print(
                f"| {MODES[mode]} | {r['seconds']:.2f} | {ns:.1f} | {r['cpu_seconds']:.2f} | "
                f"{r['sys_seconds']:.2f} | {ratio} | "
                f"{r['peak_bytes'] / r['logits_bytes']:.2f} | {r['rows_mpmath']} |"
            )
    if "mpmath" in modes:
        print(mpmath_vs_fast())
    if "libraries" in modes:
        print(libraries())
    if "suite" in modes:
        env = child_env(args.keep_bytecode_env)
        print("\n".join(cold_suite(args.repeat, "suite-mpmath" in modes, args.cases, env)))


if __name__ == "__main__":
    main()
