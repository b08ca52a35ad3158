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


def looks_windows(target: str) -> bool:
    """Whether ``target`` starts with a drive (``C:\\``), whose colon is not an attribute's."""
    return len(target) > 2 and target[1] == ":" and target[2] in "\\/"


def file_adapter_name(target: str) -> str:
    """``../kernels/ce.py:fn`` -> ``ce.py:fn``: the file's name and the attribute of a SPEC's
    target (its options left out) that names a file (ends in ``.py`` or holds a folder);
    any other target (``torch``, ``pkg.module:attr``, a bare ``mine``) as it is."""
    path_part, colon, attr = (target, "", "") if looks_windows(target) else target.partition(":")
    if not (path_part.endswith(".py") or "/" in path_part or "\\" in path_part):
        return target
    return f"{PurePosixPath(path_part.replace(chr(92), '/')).name}{colon}{attr}"
