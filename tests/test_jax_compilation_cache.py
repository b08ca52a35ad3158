"""The JAX adapters keep XLA's compiled programs in lossconf's cache folder (JAX's persistent
compilation cache, ``adapters/jax_ce.py`` ``keep_compiled_programs``): a later run reads them
back instead of compiling, with the same results; a folder the user configured is left as
it is, and ``LOSSCONF_CACHE_DIR=off`` keeps nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

# jax itself is imported by the one test that uses it in this process: importing it at
# collection cost every pytest-xdist worker 1.4 s of CPU, wherever the JAX tests ran
if importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed", allow_module_level=True)

#: for each setting in the JSON list argv[1] ({"adapter", "cache": LOSSCONF_CACHE_DIR, and
#: "theirs": a JAX_COMPILATION_CACHE_DIR the user set, or null}): run a few cases through the
#: adapter, forget every compiled program held in memory, run them again; print the persistent
#: cache's hits and misses of each run and the results (one list per setting). Before each
#: setting JAX's persistent cache is put back as a fresh interpreter has it, started with that
#: environment (the folder JAX takes from JAX_COMPILATION_CACHE_DIR when it is imported, else
#: none; not initialized: ``reset_cache``), so each adapter's own ``load`` sets it up, or not.
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
    for setting in json.loads(sys.argv[1]):
        os.environ["LOSSCONF_CACHE_DIR"] = setting["cache"]
        if setting["theirs"] is None:
            os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
            jax.config.update("jax_compilation_cache_dir", None)
        else:  # and JAX keeps programs however fast they compile, as the user asked
            os.environ["JAX_COMPILATION_CACHE_DIR"] = setting["theirs"]
            jax.config.update("jax_compilation_cache_dir", setting["theirs"])
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        compilation_cache.reset_cache()
        adapter = load_adapter(setting["adapter"])
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

ADAPTERS = ["jax", "examples/jax_fn.py:cross_entropy"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """{setting: (its folder, its two runs)} for each adapter with a lossconf cache folder of
    its own, and the jax adapter with a folder the user configured (``theirs``, under which
    ``ours`` is the lossconf cache folder): all in one fresh interpreter (one start-up and JAX
    import, not three), without the suite's JAX variables."""
    base = tmp_path_factory.mktemp("jax-programs")
    settings = {a: {"adapter": a, "cache": str(base / str(i)), "theirs": None}
                for i, a in enumerate(ADAPTERS)}  # fmt: skip
    settings["theirs"] = {
        "adapter": "jax",
        "cache": str(base / "ours"),
        "theirs": str(base / "theirs"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, json.dumps(list(settings.values()))],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = dict(zip(settings, json.loads(proc.stdout.splitlines()[-1]), strict=True))
    folders = {name: Path(setting["cache"]) for name, setting in settings.items()}
    folders["theirs"] = base
    return {name: (folders[name], out[name]) for name in settings}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_second_run_reads_the_programs_back_with_the_same_results(adapter, runs):
    folder, (first, second) = runs[adapter]
    assert first["misses"] > 0 and first["hits"] == 0, first
    assert any((folder / "jax").iterdir()), "no compiled program was kept"
    assert second["hits"] >= first["misses"] and second["misses"] == 0, second
    assert second["results"] == first["results"]
    assert all(status == "pass" for _, _, status, *_ in first["results"]), first["results"]


def test_a_folder_the_user_configured_is_left_as_it_is(runs):
    base, (first, second) = runs["theirs"]
    assert any((base / "theirs").iterdir()) and not (base / "ours" / "jax").exists()
    assert first["misses"] > 0 and second["hits"] >= first["misses"], (first, second)
    assert second["results"] == first["results"]


def test_cache_off_keeps_no_program(monkeypatch):
    import jax

    from harness.adapters.jax_ce import keep_compiled_programs

    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    before = getattr(jax.config, "jax_compilation_cache_dir", None)
    keep_compiled_programs()
    assert getattr(jax.config, "jax_compilation_cache_dir", None) == before
