"""Runs the suite against several framework versions, one virtual environment each.

    nox -s history            # every version below; then: rm -rf .nox (the venvs are large)
    nox -s "history(version='torch-2.14.1')"

Each run writes reports/history/<adapter>-<version>.json; then
``python -m harness history reports/history`` compares them. A run whose
results do not all conform (exit 1) still counts: that is what is recorded.
"""

from __future__ import annotations

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
        "--report", f"reports/history/{version}.json",
        success_codes=[0, 1],
    )  # fmt: skip
