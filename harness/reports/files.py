"""Report files: the format follows the extension (``.json.gz``: the JSON report, gzip-compressed);
every format renders the JSON document."""

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
    ".json.gz": "harness.reports.json",  # which compresses it
    ".md": "harness.reports.markdown",
    ".xml": "harness.reports.junit",
    ".html": "harness.reports.html",
}


def format_of(path: Path) -> str | None:
    """The extension of FORMATS that ``path`` ends with (the longest: ``.json.gz`` before
    ``.gz``), None when none does."""
    ends = [ext for ext in FORMATS if path.name.endswith(ext) and path.name != ext]
    return max(ends, key=len) if ends else None


def check_paths(paths: Iterable[Path]) -> list[Path]:
    """Refuse unknown formats and unwritable places before anything runs."""
    out = []
    for path in paths:
        text = str(path)
        if format_of(path) is None:
            ext = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
            raise UsageError(
                f"--report {text}: unknown format {ext or '(no extension)'!r}; "
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
    importlib.import_module(FORMATS[format_of(path) or path.suffix]).write(path, document)
