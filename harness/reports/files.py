"""Report files: the format follows the extension; every format renders the JSON document."""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from harness.errors import UsageError

#: report extension -> module with write(path, document) (the document is the JSON report's)
FORMATS = {
    ".json": "harness.reports.json",
    ".md": "harness.reports.markdown",
    ".xml": "harness.reports.junit",
    ".html": "harness.reports.html",
}


def check_paths(paths: Iterable[Path]) -> list[Path]:
    """Refuse unknown formats and unwritable places before anything runs."""
    out = []
    for path in paths:
        text = str(path)
        if path.suffix not in FORMATS:
            raise UsageError(
                f"--report {text}: unknown format {path.suffix or '(no extension)'!r}; "
                f"expected one of {', '.join(FORMATS)}"
            )
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise UsageError(f"--report {text}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise UsageError(f"--report {text}: not writable")
        if path.is_dir():
            raise UsageError(f"--report {text}: is a folder; name a file in it")
        try:  # os.access says yes to root, and knows nothing of read-only mounts: try it
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UsageError(f"--report {text}: cannot write in {folder}: {e.strerror}") from None
        out.append(path)
    return out


def write(path: Path, document: dict) -> None:
    """Write ``document`` to ``path`` in the format of its extension (checked by check_paths).

    The renderers are imported here, by name, so that a run loads only the ones it writes
    (the HTML report pulls in matplotlib)."""
    importlib.import_module(FORMATS[path.suffix]).write(path, document)
