"""Issue 17: LLM-scale cases end to end, the whole harness against the bare call.

    python benchmarks/bench_llm_scale.py profile                # phases of one run, 2048 x 65536
    python benchmarks/bench_llm_scale.py table                  # bare vs harness, 2048 x 65536
    python benchmarks/bench_llm_scale.py table --size 8192x131072 --repeat 1   # 4 GiB logits

``profile`` runs the issue's case (float32 logits ``normal``, seed 1; labels, seed 2;
``reduction: mean``, ``expected: oracle``, caches off) through ``runner.run_one`` in this
process, once on the plain path (every array whole, as before the streaming path) and once on
the streaming path (``harness.execution.streaming``), and prints each phase's wall and CPU
seconds and the process's peak resident memory during it. The phases are timed by wrapping the
functions that do them; "other" is the rest of ``run_one``.

``table`` runs each side in a fresh interpreter under ``/usr/bin/time`` (wall, user + system
CPU, peak RSS), best of ``--repeat``: bare is a script that makes the same logits as a user's
script would (float64 blocks of rows from the recipe's generator cast into the float32 logits,
so that no float64 copy counts against it; nothing of the harness imported) and calls the
adapter's function (``F.cross_entropy`` + ``backward()``, or
``numpy_ref.cross_entropy_with_z_loss``); harness is
``python -m harness --adapter A --cases big.yaml`` with ``LOSSCONF_CACHE_DIR=off``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASE = """cases:
  - name: big
    why: scale
    logits: {{generate: normal, shape: [{rows}, {classes}], seed: 1}}
    target: {{generate: labels, shape: [{rows}], seed: 2, classes: {classes}}}
    reduction: mean
    dtype: float32
    expected: oracle
"""

BARE = """
import sys
import numpy as np
rows, classes, adapter = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if adapter == "torch":
    import torch
    import torch.nn.functional as F
# the recipe's values (generate: normal, seed 1), made as a script would: float64 blocks of
# rows from one generator, each cast into the float32 logits
x = np.empty((rows, classes), np.float32)
rng = np.random.default_rng(1)
step = max(1, (1 << 20) // classes)
for at in range(0, rows, step):
    x[at : at + step] = rng.normal(0.0, 1.0, (min(step, rows - at), classes))
t = np.random.default_rng(2).integers(0, classes, rows)
if adapter == "torch":
    xt = torch.from_numpy(x).requires_grad_(True)
    loss = F.cross_entropy(xt, torch.from_numpy(t))
    loss.backward()
    print(float(loss))
else:
    from harness.adapters import CallInputs
    from harness.adapters.numpy_ref import cross_entropy_with_z_loss
    loss, grad, _ = cross_entropy_with_z_loss(
        CallInputs(x, t, None, "mean", -100, 0.0, "float32"), "float32")
    print(float(loss))
"""


def _write_case(folder: Path, rows: int, classes: int) -> Path:
    path = folder / "big.yaml"
    path.write_text(CASE.format(rows=rows, classes=classes))
    return path


def _env(rows: int, classes: int) -> dict[str, str]:
    # the 4 GiB case is above the default array limit (2**28 elements)
    limit = str(max(2**28, rows * classes))
    return {**os.environ, "LOSSCONF_CACHE_DIR": "off", "LOSSCONF_MAX_ELEMENTS": limit}


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, user + system s, peak RSS bytes) of a command, from /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        fmt = "%e %U %S %M"
        r = subprocess.run(
            ["/usr/bin/time", "-o", out.name, "-f", fmt, *argv],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode not in (0,):
            raise SystemExit(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        wall, user, system, kb = out.read().split()[-4:]
    return float(wall), float(user) + float(system), int(kb) * 1024


def table(rows: int, classes: int, adapters: list[str], repeat: int) -> None:
    logits_bytes = rows * classes * 4
    env = _env(rows, classes)
    print(
        f"| {rows} x {classes} float32 ({logits_bytes / 2**30:g} GiB) | wall s | CPU s "
        "| peak RSS GiB | peak / logits bytes | wall / bare | peak / bare |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        case = _write_case(Path(tmp), rows, classes)
        for adapter in adapters:
            sides = {
                "bare": [sys.executable, "-c", BARE, str(rows), str(classes), adapter],
                "harness": [sys.executable, "-m", "harness", "-q", "--adapter", adapter,
                            "--cases", str(case)],
            }  # fmt: skip
            best: dict[str, tuple[float, float, int]] = {}
            for _ in range(repeat):
                for side, argv in sides.items():
                    got = _timed(argv, env)
                    old = best.get(side)
                    best[side] = got if old is None else tuple(map(min, old, got))  # type: ignore[assignment]
            bare = best["bare"]
            for side, (wall, cpu, peak) in best.items():
                label = "bare call" if side == "bare" else "`python -m harness`"
                print(
                    f"| {adapter}: {label} | {wall:.1f} | {cpu:.1f} | {peak / 2**30:.2f} "
                    f"| {peak / logits_bytes:.2f} | {wall / bare[0]:.2f} | {peak / bare[2]:.2f} |"
                )


# ---------------------------------------------------------------------------- profile


class Phases:
    """Wall, CPU and peak RSS per phase, from wrapped functions (nested calls count once)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self.depth = 0
        #: the peak over every phase (each phase resets the high-water mark)
        self.max_peak = 0

    def wrap(self, owner: object, name: str, phase: str, stack: contextlib.ExitStack) -> None:
        from harness.execution import peak_memory

        real = getattr(owner, name)

        @functools.wraps(real)
        def timed(*args, **kwargs):
            if self.depth:
                return real(*args, **kwargs)
            self.depth += 1
            peak_memory.reset()
            w, c = time.perf_counter(), time.process_time()
            try:
                return real(*args, **kwargs)
            finally:
                self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - w
                self.cpu[phase] = self.cpu.get(phase, 0.0) + time.process_time() - c
                self.peak[phase] = max(self.peak.get(phase, 0), peak_memory.peak_bytes())
                self.max_peak = max(self.max_peak, self.peak[phase])
                self.depth -= 1

        stack.enter_context(_patched(owner, name, timed))


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _profile_one(case_path: Path, adapter_name: str, streamed: bool) -> tuple[Phases, dict]:
    import numpy as np

    from harness.cases import model
    from harness.cases.loader import load_file
    from harness.execution import peak_memory, runner, streaming
    from harness.execution.registry import load
    from harness.oracle import cache
    from harness.oracle.problem import Problem

    adapter = load(adapter_name)
    (case,) = load_file(case_path)
    phases = Phases()
    with contextlib.ExitStack() as stack:
        if not streamed:  # the plain path: every array whole
            stack.enter_context(_patched(cache, "LARGE_ELEMENTS", 2**62))
        w = functools.partial(phases.wrap, stack=stack)
        # plain path
        w(model, "materialize", "generation in float64 (logits and targets)")
        w(model, "cast", "casting to float32")
        w(runner, "snapshot", "input snapshot (copy)")
        w(runner, "mutations", "in-place check (compare with the copy)")
        w(Problem, "of_call", "the oracle's view of the inputs")
        w(cache, "cross_entropy", "oracle")
        w(cache, "error_bounds", "error bounds")
        w(runner, "to_array", "output checks and float64 copies")
        w(runner, "compare", "comparison")
        w(cache, "_write", "cache write")
        # streaming path (the functions it calls on other threads, and those it calls
        # inside these, count in these)
        w(
            streaming,
            "fresh_inputs",
            "generation in float32 blocks (+ cast; beside: checksums, oracle, deltas)",
        )
        w(streaming.LogitsDigest, "matches", "in-place check (checksums after)")
        w(streaming, "check_gradient",
          "deltas decoded, error bounds and comparison (threads), loss")  # fmt: skip
        w(type(adapter), "run", "adapter call")
        peak_memory.reset()
        wall, cpu = time.perf_counter(), time.process_time()
        result = runner.run_one(case, adapter, "float32")
        total = {
            "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
            "peak": max(phases.max_peak, peak_memory.peak_bytes()),
            "status": result.status.value,
            "logits_bytes": int(np.prod(case.logits_shape)) * 4,
        }
    return phases, total


def profile(rows: int, classes: int, adapter: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_case(Path(tmp), rows, classes)
        os.environ.update(_env(rows, classes))
        runs = {}
        for streamed in (False, True):
            # a fresh process each, so one path's freed memory does not lower the other's peak
            runs[streamed] = _profile_in_child(path, adapter, streamed)
    print(f"| {rows} x {classes} float32, {adapter} | plain path: wall s | CPU s | peak GiB "
          "| streaming path: wall s | CPU s | peak GiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    names = []
    for streamed in (False, True):
        for name in runs[streamed]["phases"]:
            if name not in names:
                names.append(name)
    for name in [*names, "other", "whole run_one"]:
        cells = []
        for streamed in (False, True):
            r = runs[streamed]
            if name == "whole run_one":
                cells += [f"{r['wall']:.2f}", f"{r['cpu']:.2f}", f"{r['peak'] / 2**30:.2f}"]
            elif name == "other":
                wall = r["wall"] - sum(p[0] for p in r["phases"].values())
                cpu = r["cpu"] - sum(p[1] for p in r["phases"].values())
                cells += [f"{wall:.2f}", f"{cpu:.2f}", ""]
            elif name in r["phases"]:
                wall, cpu, peak = r["phases"][name]
                cells += [f"{wall:.2f}", f"{cpu:.2f}", f"{peak / 2**30:.2f}"]
            else:
                cells += ["", "", ""]
        label = f"**{name}**" if name == "whole run_one" else name
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for streamed in (False, True):
        r = runs[streamed]
        path_name = "streaming" if streamed else "plain"
        print(
            f"{path_name} path: status {r['status']}, peak {r['peak'] / r['logits_bytes']:.2f}x "
            "the logits' bytes."
        )


def _profile_in_child(path: Path, adapter: str, streamed: bool) -> dict:
    import json

    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import bench_llm_scale as b; "
        f"p, t = b._profile_one(b.Path({str(path)!r}), {adapter!r}, {streamed!r}); "
        "print(json.dumps({**t, 'phases': {k: [p.wall[k], p.cpu[k], p.peak[k]] "
        "for k in p.wall}}))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    if r.returncode:
        raise SystemExit(f"profile ({'streaming' if streamed else 'plain'}) failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("profile", "table"))
    ap.add_argument("--size", default="2048x65536", help="ROWSxCLASSES (default 2048x65536)")
    ap.add_argument("--adapter", action="append", help="torch, numpy (table: both by default)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows, classes = (int(v) for v in args.size.lower().split("x"))
    if args.mode == "profile":
        profile(rows, classes, (args.adapter or ["torch"])[0])
    else:
        table(rows, classes, args.adapter or ["torch", "numpy"], args.repeat)


if __name__ == "__main__":
    main()
