"""The JAX adapters keep XLA's compiled programs in lossconf's cache folder (JAX's persistent
compilation cache, ``adapters/jax_ce.py`` ``keep_compiled_programs``): a later run reads them
back instead of compiling, with the same results; a folder the user configured is left as
it is, and ``LOSSCONF_CACHE_DIR=off`` keeps nothing."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# jax itself is imported by the fixture and the test that use it in this process: importing it
# at collection cost every pytest-xdist worker 1.4 s of CPU, wherever the JAX tests ran
if importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed", allow_module_level=True)

ADAPTERS = ["jax", "examples/jax_fn.py:cross_entropy"]

#: the config options the runs set, and the value a fresh interpreter has for each when no
#: ``JAX_*`` variable is set (JAX's defaults: no folder, and only programs that took a second
#: to compile are kept)
FRESH = {
    "jax_compilation_cache_dir": None,
    "jax_persistent_cache_min_compile_time_secs": 1.0,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """{setting: (its folder, its two runs)} for each adapter with a lossconf cache folder of
    its own, and the jax adapter with a folder the user configured (``theirs``, under which
    ``ours`` is the lossconf cache folder). Each setting runs a case through the adapter,
    forgets every compiled program held in memory, and runs it again; a run records the
    persistent cache's hits and misses and the results.

    In this process (JAX is imported here anyway: a subprocess would cost a start-up and a
    second JAX import): before each setting JAX's persistent cache is put back as a fresh interpreter
    has it, started with that environment and without the suite's ``JAX_*`` variables (the
    folder and the threshold of ``FRESH``, or the user's; not initialized: ``reset_cache``),
    and the programs compiled before are forgotten, so each adapter's own ``load`` sets the
    cache up, or not, and the first run compiles. Afterwards the suite's settings are put
    back and the cache is initialized again from them at the next compile."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from harness import load_adapter, load_cases, run

    base = tmp_path_factory.mktemp("jax-programs")
    settings = {a: {"adapter": a, "cache": str(base / str(i)), "theirs": None}
                for i, a in enumerate(ADAPTERS)}  # fmt: skip
    settings["theirs"] = {
        "adapter": "jax",
        "cache": str(base / "ours"),
        "theirs": str(base / "theirs"),
    }
    # One case, one dtype: the claim needs some program compiled, kept and read back, not
    # many (each costs a compile per setting). float64's is compiled under jax.enable_x64,
    # a setting JAX's cache key holds.
    case = load_cases(str(REPO / "cases" / "seed.yaml"))[0]
    cases = [dataclasses.replace(case, dtypes=("float64",))]
    events: list[str] = []

    def listen(name: str, **_) -> None:
        events.append(name)

    suite = {name: getattr(jax.config, name) for name in FRESH}
    saved_path, modules = sys.path[:], set(sys.modules)
    out = {}
    with pytest.MonkeyPatch.context() as m:
        m.chdir(REPO)  # the adapter's SPEC is relative to the checkout
        for key in [k for k in os.environ if k.startswith("JAX_")]:
            m.delenv(key)
        jax.monitoring.register_event_listener(listen)
        try:
            for name, setting in settings.items():
                m.setenv("LOSSCONF_CACHE_DIR", setting["cache"])
                for option, value in FRESH.items():
                    jax.config.update(option, value)
                if setting["theirs"] is not None:
                    # and JAX keeps programs however fast they compile, as the user asked
                    m.setenv("JAX_COMPILATION_CACHE_DIR", setting["theirs"])
                    jax.config.update("jax_compilation_cache_dir", setting["theirs"])
                    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
                compilation_cache.reset_cache()
                jax.clear_caches()  # what this process compiled before: the first run compiles
                adapter = load_adapter(setting["adapter"])
                out[name] = []
                for _attempt in range(2):
                    events.clear()
                    results = run(cases, adapter)
                    out[name].append({
                        "hits": events.count("/jax/compilation_cache/cache_hits"),
                        "misses": events.count("/jax/compilation_cache/cache_misses"),
                        "results": [(r.case_id, r.dtype, r.status.value, str(r.loss_errors),
                                     str(r.grad_errors)) for r in results],
                    })  # fmt: skip
                    jax.clear_caches()  # the next run compiles again: from the disk, if it can
        finally:
            jax.monitoring.unregister_event_listener(listen)
            for option, value in suite.items():
                jax.config.update(option, value)
            compilation_cache.reset_cache()
            sys.path[:] = saved_path
            for module in set(sys.modules) - modules:  # the example, imported from its file
                if module.startswith("lossconf_user_"):
                    del sys.modules[module]
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
