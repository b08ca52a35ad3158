"""The revision of the code that decides a case's values: part of every cache key.

Both disk caches hold what this code computed: the loaded cases (``harness.cases.load_cache``)
and the expected values with their error bounds (``harness.oracle.cache``). A value computed
by other code must never be read back (after an upgrade, or an edit in a checkout), or a
cache could change a verdict. So the key takes the source of every file that can change
such a value: all of the case model, loader and recipes (``harness.cases``), all of the
oracle, its error bounds and its compiled kernels (``harness.oracle``), the modules of the
bottom layer they import, and the adapter protocol (``CallInputs``). Whole subpackages,
not a list of modules, so a module added to either is covered without anyone remembering
to add it; ``tests/test_source_revision.py`` checks that every lossconf module a load and
an oracle run import is covered.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

_HERE = Path(__file__).resolve().parent
#: subpackages of harness whose every Python file and JSON Schema counts
PACKAGES = ("cases", "oracle")
#: modules of the bottom layer that they import, and this one (how the key is made)
MODULES = (
    "dtypes.py", "dtype_names.py", "errors.py", "exit_codes.py", "version.py",
    "source_revision.py",
)  # fmt: skip


def files() -> list[Path]:
    """The files the revision hashes, in a fixed order."""
    out: list[Path] = []
    for package in PACKAGES:
        folder = _HERE / package
        out += sorted(p for p in folder.iterdir() if p.suffix in (".py", ".json"))
    out += [_HERE / name for name in MODULES]
    # installed from the repository's adapters/ folder (pyproject's package-dir), so found
    # through the import system; find_spec imports only its parent, harness itself
    spec = importlib.util.find_spec("harness.adapters")
    if spec is not None and spec.origin:
        out.append(Path(spec.origin))
    return out


@functools.lru_cache(maxsize=1)
def source_revision() -> str:
    """sha256 over the names and bytes of ``files()`` (16 hex digits)."""
    h = hashlib.sha256()
    for path in files():
        h.update(f"{path.parent.name}/{path.name}\0".encode())
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]
