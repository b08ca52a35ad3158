"""Runs the suite against several frameworks and framework versions, one virtual environment each.

    nox -s history            # every version below; then: rm -rf .nox (the venvs are large)
    nox -s "history(version='torch-2.14.1')"
    nox -s scoreboard         # every framework of the scoreboard, each at its newest release
    nox -s "scoreboard(framework='onnxruntime')" -- onnxruntime==1.20.1   # another version

``history`` writes reports/history/<adapter>-<version>.json.gz and
``python -m harness history reports/history`` compares them. ``scoreboard`` writes
reports/scoreboard/<framework>-<version>.json.gz (gzip: a run is 3 to 4 MB of JSON), the
version read from the report (what
the adapter found installed), and ``python -m harness scoreboard reports/scoreboard``
renders the table. A run whose results do not all conform (exit 1) still counts: that
is what is recorded.

An environment made by hand works too (the scoreboard's frameworks are large):
``PATH=/path/to/venv/bin:$PATH nox --no-venv --no-install -s "scoreboard(framework='onnx')"``
runs the same session with that environment's python, installing nothing.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["history"]
nox.options.reuse_existing_virtualenvs = False

#: run name -> (adapter, pip requirements pinning the framework)
MATRIX: dict[str, tuple[str, list[str]]] = {
    "torch-2.13.0": ("torch", ["torch==2.13.0"]),
    "torch-2.14.1": ("torch", ["torch==2.14.1"]),
    "jax-0.9.2": ("jax", ["jax==0.9.2", "jaxlib==0.9.2", "optax"]),
    "jax-0.10.2": ("jax", ["jax==0.10.2", "jaxlib==0.10.2", "optax"]),
    "numpy-1.26.4": ("numpy", ["numpy==1.26.4"]),
    "numpy-2.4.6": ("numpy", ["numpy==2.4.6"]),
}


@nox.session
@nox.parametrize("version", list(MATRIX))
def history(session: nox.Session, version: str) -> None:
    adapter, requirements = MATRIX[version]
    # the project and the pinned framework in one resolve, so the pin wins
    session.install(".", *requirements)
    session.run(
        "python", "-m", "harness", "--adapter", adapter, "-q",
        "--report", f"reports/history/{version}.json.gz",
        success_codes=[0, 1],
    )  # fmt: skip


#: framework -> (adapter, what to install with the project: its extra, or requirements)
SCOREBOARD: dict[str, tuple[str, list[str]]] = {
    "torch": ("torch", [".[torch]"]),
    "numpy": ("numpy", ["."]),
    "jax": ("jax", [".[jax]"]),
    "optax": ("optax", [".[jax]"]),
    "onnx": ("onnx", [".[onnx]"]),
    "onnxruntime": ("onnxruntime", [".[onnxruntime]"]),
    "paddle": ("paddle", [".[paddle]"]),
    "mlx": ("mlx", [".[mlx]"]),
    # Keras 3 on JAX, judged under the keras dialect and, beside it, torch's
    "keras": ("keras", [".[keras]"]),
    # the raw tf.nn op (per-position losses only)
    "tensorflow": ("tensorflow", [".[tensorflow]"]),
    # the CPU device compiles with $CC (clang; bfloat16 needs clang >= 17: CC=clang-19)
    "tinygrad": ("tinygrad", [".[tinygrad]"]),
}


#: frameworks run with --isolate: a crash is then one result, not the end of the run (mlx 0.32
#: reads and writes outside its buffers for a class index beyond C)
ISOLATED = {"paddle", "mlx"}


def scoreboard_name(adapter: str, version: str) -> str:
    """reports/scoreboard's file name: the adapter and its library's version
    ('jax' + '0.10.2, optax 0.2.8' -> 'jax-0.10.2.json.gz')."""
    return f"{adapter}-{version.split()[0].rstrip(',') or 'unknown'}.json.gz"


@nox.session
@nox.parametrize("framework", list(SCOREBOARD))
def scoreboard(session: nox.Session, framework: str) -> None:
    """The suite on one framework; posargs pin its version (``-- onnxruntime==1.20.1``)."""
    adapter, requirements = SCOREBOARD[framework]
    session.install(*requirements, *session.posargs)
    raw = Path(session.create_tmp()) / f"{framework}.json.gz"
    session.run(
        "python", "-m", "harness", "--adapter", adapter, "-q", "--report", str(raw),
        *(["--isolate"] if framework in ISOLATED else []), success_codes=[0, 1],
    )  # fmt: skip
    with gzip.open(raw, "rt", encoding="utf-8") as f:
        entry = json.load(f)["adapters"][0]
    out = Path("reports/scoreboard") / scoreboard_name(adapter, entry.get("version", ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(raw, out)
    session.log(f"wrote {out} ({entry.get('wraps', '')})")
