"""The name of an adapter that a file SPEC names, the same from whatever folder it is named.

Results, expectations, baselines and history match an adapter by its name. A function in a
file is named by its SPEC, which a user spells from the folder they are in (``mine.py``,
``./mine.py``, ``../kernels/mine.py``): the name keeps the file's name and the attribute
only, so that an expectations file or a baseline recorded in one folder matches a run
started in another (a CI job's checkout, a developer's shell). Two files of the same name in
one run are told apart with the ``name=`` option (``--adapter a/ce.py@name=ce-a``).
"""

from __future__ import annotations

from pathlib import PurePosixPath


def split_target(target: str) -> tuple[str, str, str]:
    """A SPEC's target (its options left out) as ``(path or module, ':' or '', attribute)``;
    a Windows drive's colon (``C:\\``) is not an attribute's."""
    if len(target) > 2 and target[1] == ":" and target[2] in "\\/":
        return target, "", ""
    return target.partition(":")


def names_file(path_part: str) -> bool:
    """Whether the first part of a SPEC's target names a file: ends in ``.py`` or holds a
    folder (``harness.execution.registry`` imports it as a file)."""
    return path_part.endswith(".py") or "/" in path_part


def file_adapter_name(target: str) -> str:
    """``../kernels/ce.py:fn`` -> ``ce.py:fn``: the file's name and the attribute of a SPEC's
    target that names a file; any other target (``torch``, ``pkg.module:attr``, a bare
    ``mine``) as it is."""
    path_part, colon, attr = split_target(target)
    if not names_file(path_part):
        return target
    return f"{PurePosixPath(path_part.replace(chr(92), '/')).name}{colon}{attr}"
