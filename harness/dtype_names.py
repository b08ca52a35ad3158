"""The names of the case dtypes, importable without NumPy.

The CLI's and the pytest plugin's option choices need them, and the plugin is imported by
every pytest session of an environment that has lossconf, whether it runs cases or not;
``harness.dtypes`` describes each format (with NumPy) under these names.
"""

from __future__ import annotations

#: every dtype a case may run in, widest first (the order of reports and --list)
DTYPE_NAMES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
