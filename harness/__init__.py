"""lossconf: a conformance suite and harness for cross-entropy implementations.

The import package is ``harness``; the distribution is ``lossconf``. This module is
the public API: everything in ``__all__`` is importable from here, and examples,
docs and repro snippets use nothing else. The subpackages are layers, each importing
only those below it (checked by ``lint-imports``, see ``pyproject.toml``)::

    harness.cli, harness.api, harness.pytest_plugin    command line, Python API, plugin
    harness.gate | harness.fuzz                        CI verdict, baselines | fuzzing
    harness.reports                                    the JSON document and renderings
    harness.execution                                  configuration, runner, results
    harness.cases                                      case files, the Case record
    harness.oracle                                     exact values, error bounds
    harness.adapters                                   the adapter protocol, built-ins
    harness.errors, harness.exit_codes, harness.dtypes, harness.atomic

Names are imported on first use (PEP 562), so ``import harness`` is cheap and
imports no framework: torch and jax are imported inside their adapters.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from typing import TYPE_CHECKING, Any

from harness.version import VERSION as __version__  # noqa: F401  (the package version)


class _CheckoutAdapters:
    """Finds ``harness.adapters`` in a source checkout: the repository's top-level
    ``adapters/`` folder, which an installation puts at ``harness/adapters`` (pyproject's
    package-dir), and an editable installation maps there with a finder of its own."""

    def __init__(self, root: str) -> None:
        self.root = root

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        if name != "harness.adapters":
            return None
        # the folder "adapters" under the checkout's root, as the package harness.adapters;
        # its own modules are then found through its __path__ as usual
        return importlib.machinery.PathFinder.find_spec(name, [self.root])


def _find_adapters_in_a_checkout() -> None:
    """When this package is the checkout's ``harness/`` folder rather than an installed
    copy (``python -m harness`` in the repository's root puts the checkout first on
    sys.path, ahead of a regular installation of it), the built-in adapters are found in
    the checkout's ``adapters/`` folder. An installed copy has its own ``adapters/``."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if os.path.isdir(os.path.join(here, "adapters")):
        return  # an installation
    if os.path.isfile(os.path.join(root, "adapters", "__init__.py")):
        sys.meta_path.append(_CheckoutAdapters(root))


_find_adapters_in_a_checkout()

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # the adapter protocol
    "Adapter": "harness.adapters",
    "CallInputs": "harness.adapters",
    "Output": "harness.adapters",
    "LinearCallInputs": "harness.adapters",
    "LinearOutput": "harness.adapters",
    "Unsupported": "harness.adapters",
    "FEATURES": "harness.adapters",
    # wrapping a plain cross-entropy function
    "from_torch": "harness.adapters.wrap",
    "from_jax": "harness.adapters.wrap",
    "from_numpy": "harness.adapters.wrap",
    # cases, adapters, runs
    "Case": "harness.cases.model",
    "Expected": "harness.oracle.problem",
    "builtin_suite": "harness.api",
    "load_cases": "harness.api",
    "load_suite": "harness.api",
    "load_adapter": "harness.api",
    "run": "harness.api",
    "run_case": "harness.api",
    "summary": "harness.api",
    "main": "harness.api",
    "RunConfig": "harness.execution.config",
    "Result": "harness.execution.results",
    "Status": "harness.execution.results",
    "CONFORMING": "harness.execution.results",
    # errors and exit codes
    "LossconfError": "harness.errors",
    "UsageError": "harness.errors",
    "CaseFileError": "harness.errors",
    "AdapterLoadError": "harness.errors",
    "ExitCode": "harness.exit_codes",
}

#: the same names as _EXPORTS (tests/test_public_api.py checks it)
__all__ = [
    "CONFORMING",
    "FEATURES",
    "Adapter",
    "AdapterLoadError",
    "CallInputs",
    "Case",
    "CaseFileError",
    "ExitCode",
    "Expected",
    "LinearCallInputs",
    "LinearOutput",
    "LossconfError",
    "Output",
    "Result",
    "RunConfig",
    "Status",
    "Unsupported",
    "UsageError",
    "builtin_suite",
    "from_jax",
    "from_numpy",
    "from_torch",
    "load_adapter",
    "load_cases",
    "load_suite",
    "main",
    "run",
    "run_case",
    "summary",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from harness.adapters import (
        FEATURES,
        Adapter,
        CallInputs,
        LinearCallInputs,
        LinearOutput,
        Output,
        Unsupported,
    )
    from harness.adapters.wrap import from_jax, from_numpy, from_torch
    from harness.api import (
        builtin_suite,
        load_adapter,
        load_cases,
        load_suite,
        main,
        run,
        run_case,
        summary,
    )
    from harness.cases.model import Case
    from harness.errors import AdapterLoadError, CaseFileError, LossconfError, UsageError
    from harness.execution.config import RunConfig
    from harness.execution.results import CONFORMING, Result, Status
    from harness.exit_codes import ExitCode
    from harness.oracle.problem import Expected
