"""A regular, non-editable install finds the built-in suite from any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_non_editable_install_ships_the_suite(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    suite = target / "harness" / "suite"
    shipped = sorted(p.relative_to(suite) for p in suite.rglob("*.yaml"))
    in_repo = sorted(p.relative_to(REPO / "cases") for p in (REPO / "cases").rglob("*.yaml"))
    assert shipped == in_repo
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run(
        [sys.executable, "-m", "harness", "--list"], cwd=elsewhere, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "seed/article_1x5" in r.stdout
    assert Path(target / "harness" / "case_schema.json").is_file()
