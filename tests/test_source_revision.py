"""The caches' source revision (``harness.source_revision``) covers every lossconf module that
decides a loaded case or an expected value, and both caches' keys follow it: code that
changed never has its predecessor's values read back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from harness import source_revision as revision
from harness.cases import load_cache
from harness.oracle import cache as expected_cache
from tests.conftest import REPO

#: imported by a load and an oracle run, and deciding no value: the public facade, whose
#: names are imported lazily from the modules that do the work, where the caches are, how
#: their files are written and when old ones are removed, and how many cores the row kernel
#: may use (each row is computed on its own: ``tests/test_oracle_compiled.py``)
NOT_VALUE_CODE = {
    "harness", "harness.cache_folder", "harness.atomic", "harness.cache_prune", "harness.cores"
}  # fmt: skip

#: in a fresh interpreter with the caches off: load plain, kernel and fused linear case files
#: and compute the expected values of a slice, with the compiled kernel on every plain
#: problem it can take (when numba is installed); print the lossconf modules loaded
PROGRAM = textwrap.dedent(
    """
    import json, sys
    from harness.cases.loader import load_paths
    from harness.oracle import compiled
    compiled.MIN_LOGITS = 1
    files = ["cases/seed.yaml", "cases/kernel.yaml", "cases/fused_linear.yaml"]
    cases = load_paths(files).cases
    plain = [c for c in cases if not c.fused and c.expect_error is None][::3]
    fused = [c for c in cases if c.fused and c.expect_error is None][:2]
    for c in plain:
        for d in c.dtypes:
            c.expected_for(d)
            c.expected_for(d, "keras")
    for c in fused:
        for d in c.dtypes:
            c.linear_expected_for(d)
    print(json.dumps(sorted(
        (name, getattr(m, "__file__", None)) for name, m in sys.modules.items()
        if name == "harness" or name.startswith("harness.")
    )))
    """
)


def test_every_module_a_load_and_the_oracle_import_is_covered():
    env = {"LOSSCONF_CACHE_DIR": "off", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, cwd=REPO, env=env,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    covered = {path.resolve() for path in revision.files()}
    missing = [
        name
        for name, file in loaded
        if name not in NOT_VALUE_CODE and (file is None or _resolved(file) not in covered)
    ]
    assert not missing, f"modules that decide values but not the caches' keys: {missing}"
    names = {name for name, _ in loaded}
    assert {"harness.oracle.bounds", "harness.oracle.dialect", "harness.cases.yaml_numbers"} <= (
        names
    ), "the slice no longer reaches modules the revision once left out"


def _resolved(file: str):
    from pathlib import Path

    return Path(file).resolve()


@pytest.fixture
def copied_package(tmp_path, monkeypatch):
    """A copy of the files the revision reads, which the revision then reads instead."""
    root = tmp_path / "harness"
    here = revision._HERE
    for package in revision.PACKAGES:
        shutil.copytree(here / package, root / package, ignore=shutil.ignore_patterns("__py*"))
    for name in revision.MODULES:
        shutil.copy(here / name, root / name)
    monkeypatch.setattr(revision, "_HERE", root)
    revision.source_revision.cache_clear()
    yield root
    revision.source_revision.cache_clear()


@pytest.mark.parametrize(
    "changed",
    ["oracle/bounds.py", "oracle/_kernel.py", "oracle/dialect.py", "cases/yaml_numbers.py",
     "cases/schema.json", "dtypes.py"],
)  # fmt: skip
def test_a_change_to_any_covered_file_changes_the_revision(copied_package, changed):
    before = revision.source_revision()
    path = copied_package / changed
    path.write_bytes(path.read_bytes() + b"\n")
    revision.source_revision.cache_clear()
    assert revision.source_revision() != before, changed


def test_both_caches_key_by_the_revision(monkeypatch, tmp_path):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(tmp_path))
    case_file = REPO / "cases" / "shapes.yaml"
    names = []
    for fake in ("one", "two"):
        monkeypatch.setattr(expected_cache, "source_revision", lambda fake=fake: fake)
        monkeypatch.setattr(load_cache, "source_revision", lambda fake=fake: fake)
        expected_cache.oracle_revision.cache_clear()
        names.append(
            (
                expected_cache.cache_path("0123456789abcdef", "float32").name,
                load_cache._key(case_file, case_file.read_bytes(), True),
            )
        )
    expected_cache.oracle_revision.cache_clear()
    (values_one, cases_one), (values_two, cases_two) = names
    assert values_one != values_two, "the expected values' file ignores the revision"
    assert cases_one != cases_two, "the loaded cases' entry ignores the revision"
