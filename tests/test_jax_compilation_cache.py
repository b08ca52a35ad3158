"""The JAX adapters keep XLA's compiled programs in lossconf's cache folder (JAX's persistent
compilation cache, ``adapters/jax_ce.py`` ``keep_compiled_programs``): a later run reads them
back instead of compiling, with the same results; a folder the user configured is left as
it is, and ``LOSSCONF_CACHE_DIR=off`` keeps nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

pytest.importorskip("jax")

#: for each (adapter, cache folder) named: run a few cases through the adapter with that folder
#: as LOSSCONF_CACHE_DIR, forget every compiled program held in memory, run them again; print
#: the persistent cache's hits and misses of each run and the results (one list per adapter).
#: Between two adapters JAX's persistent cache is put back as a fresh process has it (no folder
#: configured, not initialized: ``reset_cache``), so each adapter's own ``load`` must set it up.
PROGRAM = textwrap.dedent(
    """
    import json, os, sys
    import jax
    from jax.experimental.compilation_cache import compilation_cache
    from harness import load_adapter, load_cases, run

    events = []
    jax.monitoring.register_event_listener(lambda name, **_: events.append(name))
    cases = load_cases("cases/seed.yaml")[:1]
    out = []
    for spec, folder in zip(sys.argv[1::2], sys.argv[2::2]):
        if out:
            jax.config.update("jax_compilation_cache_dir", None)
            compilation_cache.reset_cache()
        os.environ["LOSSCONF_CACHE_DIR"] = folder
        adapter = load_adapter(spec)
        runs = []
        for attempt in range(2):
            events.clear()
            results = run(cases, adapter)
            runs.append({
                "hits": events.count("/jax/compilation_cache/cache_hits"),
                "misses": events.count("/jax/compilation_cache/cache_misses"),
                "results": [(r.case_id, r.dtype, r.status.value, str(r.loss_errors),
                             str(r.grad_errors)) for r in results],
            })
            jax.clear_caches()  # the next run compiles again: from the disk, if it can
        out.append(runs)
    print(json.dumps(out))
    """
)


def _runs(adapters: dict[str, Path], env: dict | None = None) -> list[list[dict]]:
    """Each adapter's two runs, with its cache folder, in one fresh interpreter."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    args = [str(x) for pair in adapters.items() for x in pair]
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, cwd=REPO,
        env={**full, **(env or {})}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


ADAPTERS = ["jax", "examples/jax_fn.py:cross_entropy"]


@pytest.fixture(scope="module")
def both_adapters(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """Both adapters' runs in one interpreter (one start-up and JAX import, not two), each with
    a cache folder of its own: {adapter: (its folder, its two runs)}."""
    folders = {a: tmp_path_factory.mktemp("cache") for a in ADAPTERS}
    runs = _runs(folders)
    return {a: (folders[a], r) for a, r in zip(ADAPTERS, runs, strict=True)}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_second_run_reads_the_programs_back_with_the_same_results(adapter, both_adapters):
    folder, (first, second) = both_adapters[adapter]
    assert first["misses"] > 0 and first["hits"] == 0, first
    assert any((folder / "jax").iterdir()), "no compiled program was kept"
    assert second["hits"] >= first["misses"] and second["misses"] == 0, second
    assert second["results"] == first["results"]
    assert all(status == "pass" for _, _, status, *_ in first["results"]), first["results"]


def test_a_folder_the_user_configured_is_left_as_it_is(tmp_path):
    theirs = tmp_path / "theirs"
    ((first, second),) = _runs(
        {"jax": tmp_path / "ours"},
        {"JAX_COMPILATION_CACHE_DIR": str(theirs), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"},
    )  # fmt: skip
    assert any(theirs.iterdir()) and not (tmp_path / "ours" / "jax").exists()
    assert second["results"] == first["results"]


def test_cache_off_keeps_no_program(monkeypatch):
    import jax

    from harness.adapters.jax_ce import keep_compiled_programs

    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    before = getattr(jax.config, "jax_compilation_cache_dir", None)
    keep_compiled_programs()
    assert getattr(jax.config, "jax_compilation_cache_dir", None) == before
