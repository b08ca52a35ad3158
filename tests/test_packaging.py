"""What a regular (non-editable) install ships, and that it works from a user's own folder.

The distribution installs one import name, ``harness``: the built-in adapters
(``adapters/``) install as ``harness.adapters`` and the suite (``cases/``) as
``harness.suite``, so a user's ``adapters.py`` or ``cases/`` never shadows ours.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Path]:
    """A fresh ``pip install --target`` of this checkout, at the same path in every session.

    The load cache keys a case file by its path (``harness.cases.load_cache``): in a new
    folder each session, ``--list`` parsed and validated the ~1,100 installed cases anew (2 s
    of CPU, most of this file's). The folder is emptied and installed into again each time,
    so what is tested is this checkout's install; only the validated cases of unchanged files
    are read back. A second session of the same checkout running meanwhile (the folder is
    locked) installs into a folder of its own."""
    name = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    stable = Path(tempfile.gettempdir()) / f"lossconf-tests-site-{os.getuid()}-{name}"
    with open(f"{stable}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            target = stable
        except BlockingIOError:
            target = tmp_path_factory.mktemp("site")
        shutil.rmtree(target, ignore_errors=True)
        # --no-compile: pip's compiling of every module to bytecode (a fifth of the install's
        # CPU) is not what is tested; the runs below compile the modules they import. Nor is
        # pip's look-up of a newer pip
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--no-compile", "--disable-pip-version-check", "--target", str(target), str(REPO)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        yield target


def _run(args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True
    )  # fmt: skip


def test_the_install_has_one_top_level_package(site):
    # what pip's --target holds besides import packages: metadata and the `lossconf` script
    top = sorted(p.name for p in site.iterdir() if not p.name.endswith("-info") and p.name != "bin")
    assert top == ["harness"], top
    assert (site / "harness" / "adapters" / "numpy_ref.py").is_file()
    assert (site / "harness" / "cases" / "schema.json").is_file()
    assert (site / "harness" / "reports" / "report.schema.json").is_file()
    suite = site / "harness" / "suite"
    shipped = sorted(p.relative_to(suite) for p in suite.rglob("*.yaml"))
    in_repo = sorted(p.relative_to(REPO / "cases") for p in (REPO / "cases").rglob("*.yaml"))
    assert shipped == in_repo
    # the frozen data of the built-in files (harness/cases/frozen.py)
    frozen = sorted(p.relative_to(suite) for p in suite.rglob("*.arrays"))
    assert frozen == sorted(
        p.relative_to(REPO / "cases") for p in (REPO / "cases").rglob("*.arrays")
    )
    assert frozen


def test_list_works_in_a_folder_with_the_users_own_adapters_and_cases(site, tmp_path):
    """A user's folder holding adapters.py, harness_utils.py and cases/ of their own."""
    (tmp_path / "adapters.py").write_text("raise ImportError('the user module was imported')\n")
    (tmp_path / "harness_utils.py").write_text("raise ImportError('imported by mistake')\n")
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "mine.yaml").write_text(
        "cases:\n  - name: tiny\n    why: the user's own case\n"
        "    logits: [[1.0, 2.0]]\n    target: [1]\n    expected: oracle\n"
    )
    r = _run(["-m", "harness", "--list"], tmp_path, site)
    assert r.returncode == 0, r.stderr
    assert "seed/article_1x5" in r.stdout  # the built-in suite, not ./cases
    r = _run(["-m", "harness", "--cases", "cases", "-q"], tmp_path, site)
    assert r.returncode == 0, r.stderr
    assert "2 results, 0 not conforming" in r.stdout


def test_the_readme_command_works_in_the_checkout_over_a_regular_install(site):
    """README: ``pip install . && python -m harness`` in the clone's root. ``-m`` puts the
    root first on sys.path, so the checkout's ``harness/`` is imported, not the installed
    copy, and the checkout has its adapters in the top-level ``adapters/``. Simulated
    without site processing (``-S``), so the editable install this suite runs under does not
    map ``harness.adapters`` for it: the installed copy and the environment's packages come
    from PYTHONPATH, whose .pth files are not run."""
    import sysconfig

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]),
    }
    r = subprocess.run(
        [sys.executable, "-S", "-m", "harness", "-k", "seed/article_1x5", "-q"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "0 not conforming" in r.stdout
    where = subprocess.run(
        [sys.executable, "-S", "-c", "import harness.adapters as a; print(a.__file__)"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert where.stdout.strip() == str(REPO / "adapters" / "__init__.py"), where.stderr


def test_the_public_api_works_from_the_install(site, tmp_path):
    code = (
        "import harness\n"
        "cases = [c for c in harness.load_suite() if c.id == 'seed/article_1x5']\n"
        "results = harness.run(cases, 'numpy')\n"
        "assert results and all(r.conforming for r in results), results\n"
        "print(len(results), harness.__version__)\n"
    )
    r = _run(["-c", code], tmp_path, site)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == harness_version()


def harness_version() -> str:
    from harness.version import VERSION

    return VERSION
