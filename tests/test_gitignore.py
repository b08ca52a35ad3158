"""The files the documented commands write in the repository are ignored or tracked (issue 14,
item 12): running the README's CI gate in a clone leaves no untracked ``out.xml`` or
``summary.md`` behind.

The commands are those in the code blocks of README.md and docs/*.md (the ``--help`` figure's
examples included) and the commands ``tools/refresh_docs.py`` runs, in the repository root,
for the figures; what they write is what follows ``--report``, ``--out``, ``--plot``,
``--junitxml``, ``expectations update`` and a shell redirection.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

from conftest import REPO

FENCED = re.compile(r"```[a-z]*\n(.*?)```", re.S)
COMMAND = re.compile(r"python -m harness|lossconf |pytest |git show ")
WRITTEN = re.compile(
    r"(?:--report|--out|--plot|--junitxml|expectations update)[ =]([^\s|;&)]+)"
    r"|(?<![<>2&])>>? ?([^\s|;&)]+)"
)
#: a file name as a reader types it (not a placeholder such as X.json, FILE or $VAR)
CONCRETE = re.compile(r"^[a-z0-9_][a-z0-9_./-]*$")


def _refresh_commands() -> list[str]:
    module = sys.modules.get("refresh_docs")  # tests/test_docs.py may have loaded it
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "refresh_docs", REPO / "tools/refresh_docs.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["refresh_docs"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return [source.command for source in module.SOURCES.values()]


def documented_commands() -> list[str]:
    lines = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in FENCED.findall(page.read_text(encoding="utf-8")):
            lines += block.replace("\\\n", " ").splitlines()
    return [line for line in lines if COMMAND.search(line)] + _refresh_commands()


def written_paths(commands: list[str]) -> set[str]:
    found = set()
    for command in commands:
        for match in WRITTEN.finditer(command):
            path = next(g for g in match.groups() if g)
            if CONCRETE.match(path):
                found.add(path)
    return found


def _git(*args: str) -> int:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True).returncode


def test_what_the_documented_commands_write_is_ignored_or_tracked():
    paths = written_paths(documented_commands())
    assert {"out.xml", "summary.md", "out.json", "out.html", "found.yaml"} <= paths, paths
    left = [
        p
        for p in sorted(paths)
        if _git("check-ignore", "-q", "--no-index", p) != 0
        and _git("ls-files", "--error-unmatch", p) != 0
    ]
    assert not left, f"untracked after the documented commands, not in .gitignore: {left}"


def test_the_extraction_reads_flags_and_redirections_but_not_placeholders():
    commands = [
        "python -m harness --report a.json --report=b.md --report X.json | head -2",
        "git show HEAD:x.py > old.py && python -m harness fuzz --out found.yaml 2>&1",
        "pytest --junitxml=out.xml; python -m harness expectations update exp.yaml",
        'cat all.md >> "$GITHUB_STEP_SUMMARY"',
    ]
    assert written_paths(commands) == {
        "a.json", "b.md", "old.py", "found.yaml", "out.xml", "exp.yaml"
    }  # fmt: skip
