"""Type-check the installed ``harness`` package with mypy (the configuration is
``[tool.mypy]`` in ``pyproject.toml``); CI runs this script.

Why a script and not plain ``mypy harness``: the built-in adapters live in the
top-level ``adapters/`` folder and install as ``harness.adapters`` through
setuptools' ``package-dir`` mapping (an import hook in an editable install).
mypy does not run import hooks, so ``mypy harness`` cannot resolve
``harness.adapters``, and ``mypy adapters`` would name its modules
``adapters.*``, an import name the installed package does not have.

So this script lays out the installed package in a temporary folder::

    T/harness/<entry>   -> harness/<entry>   (a symlink for each entry)
    T/harness/adapters  -> adapters/

runs mypy on ``T/harness`` with the repository's configuration (mypy follows
the symlinks and names the modules ``harness.*``), writes mypy's report with
the paths turned back into the repository's (``harness/adapters/x.py`` ->
``adapters/x.py``), and exits with mypy's exit code (0: no error)::

    python tools/typecheck.py                 # the whole package
    python tools/typecheck.py --no-incremental   # extra arguments go to mypy

mypy's cache is the repository's ``.mypy_cache/`` (mypy marks it ignored by
git): a first run took 33 s on the 2-core machine (most of it torch's and
numpy's stubs), a second one under 1 s.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "harness"
#: folders installed inside ``harness`` from elsewhere (``[tool.setuptools.package-dir]``);
#: ``harness.suite`` (``cases/``) holds data only and is left out
MAPPED = {"adapters": REPO / "adapters"}


def lay_out(root: Path) -> Path:
    """Build ``root/harness`` as the installed package, of symlinks; return it."""
    package = root / "harness"
    package.mkdir()
    for entry in sorted(PACKAGE.iterdir()):
        if entry.name != "__pycache__" and entry.name not in MAPPED:
            (package / entry.name).symlink_to(entry)
    for name, source in MAPPED.items():
        (package / name).symlink_to(source)
    return package


def to_repository_paths(text: str) -> str:
    """Turn the laid-out paths in mypy's report back into the repository's."""
    for name, source in MAPPED.items():
        mapped = os.path.relpath(source, Path.cwd())
        text = re.sub(rf"(?m)^harness/{name}/", f"{mapped}/", text)
    package = os.path.relpath(PACKAGE, Path.cwd())
    if package != "harness":
        text = re.sub(r"(?m)^harness/", f"{package}/", text)
    return text


def main(argv: list[str]) -> int:
    config = REPO / "pyproject.toml"
    cache = REPO / ".mypy_cache"
    with tempfile.TemporaryDirectory(prefix="lossconf-typecheck-") as tmp:
        lay_out(Path(tmp))
        # mypy runs inside the layout so that it names files harness/...; the
        # configuration and the cache are the repository's
        command = [sys.executable, "-m", "mypy", "--config-file", str(config)]
        command += ["--cache-dir", str(cache), *argv, "harness"]
        proc = subprocess.run(
            command,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
    sys.stdout.write(to_repository_paths(proc.stdout))
    sys.stderr.write(to_repository_paths(proc.stderr))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
