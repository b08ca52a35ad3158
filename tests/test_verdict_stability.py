"""Verdicts cannot depend on how a run was started.

A large slice of the built-in suite (``SLICE``, below) runs through the numpy reference
adapter in every way a user can start it: with a cold disk cache, the same again warm, with ``LOSSCONF_CACHE_DIR=off``, with
``-k`` and ``--dtype`` selections, with ``--jobs 2``, with ``--isolate`` and through the
pytest plugin. Every result, keyed by (case_id, adapter, dtype), must carry the same
status, case hash, message, loss and gradient errors (every numeric field of every
``*_errors`` mapping, whatever fields compare.py adds) as in the cold run; only per-run
measurements (seconds, peak memory, timestamps) may differ.

Guards the bug fixed by "Case identity: content_hash is a field ...": a case copied by
``--dtype`` selection after a load from the on-disk load cache hashed its (dropped) YAML
mapping, so every such case had the same content hash and shared ``expected: oracle``
values through the expected-value cache; a warm second ``--dtype float64`` run reported 9
false failures.

Every run uses the same deterministic slice of the built-in suite (``SLICE``): the
hand-written files (shapes, half_precision, numerics, kernel, ... with their ``expected:
oracle`` cases of many shapes: empty, (3, 100), (201, 1000), (4, 50257) through the
streaming oracle, (70000, 4), (1, 3, 280, 250); and cases with literal expected values, one
set for every dtype or one per dtype), about 600 results. Not in it: the generated files
(``cases/generated``: the grids' 2600 results carry literal values per dtype like the
hand-written ones and would multiply the cost of every run by five; pairwise and
torch_samples have oracle values that cost 10 s and more on a cold cache), nor ``SLOW``.
Only the cold run and the ``LOSSCONF_CACHE_DIR=off`` run compute expected values; every
other mode runs on the cache the cold run filled.

The command runs in this process (``harness.cli.main.main``, the entry point of
``python -m harness``) with the in-memory caches of expected values emptied before each run,
as in a fresh process, so only the disk cache carries values from one run to the next; the
command's process contract is tests/test_cli.py's. The pytest plugin runs the same way, in
a pytest session of its own in this process (``pytester``); the plugin in a process of its
own is tests/test_pytest_plugin.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import harness

ROOT = Path(harness.__file__).resolve().parent.parent
#: the hand-written cases whose expected values take seconds in the exact 200-bit oracle, left
#: out of every run: 3 dtypes x 64000 logits with label smoothing (6.5 s on an idle core), and
#: a softcapped 6 x 4096 kernel case in 3 dtypes (4.8 s)
SLOW = ("half_precision/accumulate_c32000_smoothing_sum", "kernel/gemma_like_bfloat16_c4096")
#: the -k terms that leave them out
NOT_SLOW = [term for case_id in SLOW for term in ("-k", f"not {case_id}")]
#: files of the slice that must exist (the rest of cases/*.yaml joins them)
REQUIRED = ("shapes", "half_precision", "numerics", "targets")


def slice_files() -> list[Path]:
    """The hand-written case files, in a fixed order."""
    cases = ROOT / "cases"
    files = sorted(cases.glob("*.yaml"))
    names = {str(f.relative_to(cases).with_suffix("")) for f in files}
    assert set(REQUIRED) <= names, f"case files gone: {set(REQUIRED) - names}"
    return files


#: the options that choose the slice, before any option of a mode
SLICE = [*(a for f in slice_files() for a in ("--cases", str(f))), *NOT_SLOW]
#: content_hash of an empty mapping: the hash every colliding case got before the fix
EMPTY_MAPPING_HASH = hashlib.sha256(b"{}").hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# running the CLI and the plugin


class Run:
    def __init__(self, returncode: int, output: str, doc: dict) -> None:
        self.returncode, self.output, self.doc = returncode, output, doc
        self.verdicts = verdicts(doc)

    @property
    def nonconforming(self) -> int:
        from harness.execution.results import CONFORMING

        conforming = {s.value for s in CONFORMING}
        return sum(n for s, n in self.doc["summary"].items() if s not in conforming)


def lossconf(cache: Path | str, report: Path, *args: str) -> Run:
    """``python -m harness --adapter numpy -q --report REPORT SLICE ARGS`` with this cache, in
    this process (``main``), as a fresh process would run it: with
    ``LOSSCONF_CACHE_DIR=cache`` and empty in-memory caches of expected values, so every value
    comes from the disk cache or is computed, never from an earlier run of this process.
    ``--jobs`` and ``--isolate`` start worker processes of their own, as from the command."""
    from harness.cases import frozen
    from harness.cli.main import main
    from harness.oracle import cache as expected_cache

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as m:
        m.setenv("LOSSCONF_CACHE_DIR", str(cache))
        m.chdir(ROOT)
        m.setattr(expected_cache, "_memory", {})
        m.setattr(expected_cache, "_linear_memory", {})
        # the caches are what this test is about: the built-in files' frozen data
        # (harness/cases/frozen.py) would stand in for them; the plugin's run reads it
        m.setattr(frozen, "enabled", False)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--adapter", "numpy", "-q", "--report", str(report), *SLICE, *args])
    output = out.getvalue() + err.getvalue()
    assert code in (0, 1), f"{args}: exit {code}\n{output}"
    doc = json.loads(report.read_text())
    assert doc["complete"], output
    run = Run(code, output, doc)
    assert code == (1 if run.nonconforming else 0), output
    return run


# ---------------------------------------------------------------------------------------------
# what a verdict is


def _volatile(field: str) -> bool:
    """Per-run measurements: wall time, memory, timestamps."""
    f = field.lower()
    return f.endswith(("seconds", "bytes")) or "time" in f


def _canon(value: object) -> object:
    """A comparable form: NaN equals NaN (JSON NaN is a float), lists and mappings recursively."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return value


def _verdict(result: dict) -> dict:
    """The fields of a result that a way of starting the run must not change.

    status, case_hash, message and the reported losses; every field of every ``*_errors``
    mapping (loss_errors, grad_errors and any added later), compared generically; and any
    other numeric field, except measurements (``_volatile``).
    """
    out = {
        k: result.get(k) for k in ("status", "case_hash", "message", "expected_loss", "got_loss")
    }
    for key, value in result.items():
        if _volatile(key):
            continue
        if key.endswith("_errors"):
            assert value is None or isinstance(value, dict), (key, value)
            out[key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return _canon(out)


def verdicts(doc: dict) -> dict[tuple[str, str, str], dict]:
    out: dict[tuple[str, str, str], dict] = {}
    for r in doc["results"]:
        key = (r["case_id"], r["adapter"], r["dtype"])
        assert key not in out, f"two results for {key}"
        out[key] = _verdict(r)
    return out


def selected(key: tuple[str, str, str], tags: dict, keywords=(), dtypes=()) -> bool:
    """Whether ``-k KEYWORDS --dtype DTYPES`` keeps the result ``key`` (README: Command line)."""
    case_id, _, dtype = key
    for term in keywords:
        negate = term.startswith(("!", "not "))
        term = term[1:] if term.startswith("!") else term[4:] if negate else term
        text = term.strip().lower()
        hit = text in case_id.lower() or any(text in t.lower() for t in tags[case_id])
        if hit == negate:
            return False
    return not dtypes or dtype in dtypes


def assert_same_verdicts(got: Run, reference: Run, keywords=(), dtypes=(), mode: str = "") -> None:
    tags = {r["case_id"]: r["tags"] for r in reference.doc["results"]}
    want = {k: v for k, v in reference.verdicts.items() if selected(k, tags, keywords, dtypes)}
    assert want, f"{mode}: the selection is empty"
    missing, extra = want.keys() - got.verdicts.keys(), got.verdicts.keys() - want.keys()
    assert not missing and not extra, (
        f"{mode}: {len(missing)} results missing (e.g. {sorted(missing)[:3]}), "
        f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})"
    )
    differ = [
        f"{key} {field}: cold run {want[key].get(field)!r}, {mode} {got.verdicts[key].get(field)!r}"
        for key in sorted(want)
        for field in sorted(want[key].keys() | got.verdicts[key].keys())
        if want[key].get(field) != got.verdicts[key].get(field)
    ]
    assert not differ, f"{mode}: {len(differ)} fields differ from the cold run:\n" + "\n".join(
        differ[:15]
    )
    # the report's case table: the same content hash for every selected case
    ref_cases = reference.doc["suite"]["cases"]
    ids = {k[0] for k in want}
    assert got.doc["suite"]["cases"] == {i: ref_cases[i] for i in ids}, mode


def expected_suffix() -> str:
    """The name ending of a file of expected values in the cache folder."""
    from harness.oracle.cache import SUFFIX

    return SUFFIX


def _cache_files(cache: Path) -> dict[str, int]:
    return {
        str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# the cold run every mode is compared with


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lossconf-cache")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def reference(cache, reports) -> Run:
    """The slice with an empty cache folder: every file parsed and validated, every
    ``expected: oracle`` value computed; the folder is warm afterwards."""
    assert not any(cache.iterdir())
    run = lossconf(cache, reports / "cold.json")
    files = _cache_files(cache)
    assert any(f.endswith(expected_suffix()) for f in files), "no expected value was cached"
    assert any(f.startswith("cases") and f.endswith(".pickle") for f in files), (
        "no case file cached"
    )
    assert len(run.verdicts) > 500, "the slice shrank: check what this test covers"
    hashes = run.doc["suite"]["cases"]
    assert len(set(hashes.values())) == len(hashes), "two cases of the suite share a content hash"
    return run


def test_warm_cache_gives_the_cold_verdicts_and_recomputes_nothing(reference, cache, reports):
    before = _cache_files(cache)
    run = lossconf(cache, reports / "warm.json")
    assert_same_verdicts(run, reference, mode="warm")
    # warm indeed: no case file re-validated, no expected value recomputed
    assert _cache_files(cache) == before


#: the dtypes of the ``LOSSCONF_CACHE_DIR=off`` run: it computes every expected value again,
#: as the cold run did (the cost of both is the oracle's), so it takes two of the four: a wide
#: and a narrow one, every case of the slice in at least one of them
OFF_DTYPES = ("float64", "float16")


def test_cache_off_gives_the_cold_verdicts(reference, reports):
    dtypes = [a for d in OFF_DTYPES for a in ("--dtype", d)]
    run = lossconf("off", reports / "off.json", *dtypes)
    assert_same_verdicts(run, reference, (), OFF_DTYPES, mode="LOSSCONF_CACHE_DIR=off")
    assert set(run.doc["suite"]["cases"]) == set(reference.doc["suite"]["cases"]), (
        "a case of the slice has neither dtype: the off run must see every case"
    )


#: name -> (-k terms, --dtype values, other options); all run on the cache the cold run filled.
#: A --dtype that drops some of a case's dtypes copies the case (harness/cases/select.py): the copies
#: of shapes' oracle cases (float32, float64) and half_precision's (float16) collided before the fix
MODES = {
    "-k": (("not targets", "!seed"), (), ()),
    "-k shapes --dtype float32": (("shapes",), ("float32",), ()),
    "-k half_precision --dtype float16": (("half_precision",), ("float16",), ()),
    "--jobs 2": ((), (), ("--jobs", "2")),
    "--jobs 2 --dtype float32": ((), ("float32",), ("--jobs", "2")),
    "--isolate": ((), (), ("--isolate",)),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_mode_gives_the_cold_verdicts(mode, reference, cache, reports):
    keywords, dtypes, options = MODES[mode]
    args = [*options]
    for k in keywords:
        args += ["-k", k]
    for d in dtypes:
        args += ["--dtype", d]
    run = lossconf(cache, reports / f"mode-{list(MODES).index(mode)}.json", *args)
    assert_same_verdicts(run, reference, keywords, dtypes, mode=mode)


#: the plugin's slice: every dtype but float32 (pytest adds about 1.5 ms per item); the dtype
#: selection copies cases, as above
PLUGIN_KEYWORDS: tuple[str, ...] = ()
PLUGIN_DTYPES = ("float64", "float16", "bfloat16")


@pytest.mark.usefixtures("imported_before_any_inner_session")
def test_pytest_plugin_gives_the_cold_verdicts(reference, cache, pytester, monkeypatch):
    """The plugin writes no JSON report (``--report`` is CLI-only); each item records its
    status as the ``lossconf_status`` property, which --junitxml writes. Error figures are
    not reported there, so the status and pytest's outcome of each item are compared.

    A pytest session of its own in this process (``pytester``), with the in-memory caches of
    expected values emptied as ``lossconf`` empties them for the command: every value comes
    from the frozen data, as in a fresh process, or from the disk cache the cold run filled.
    What needs a process of its own (pytest-xdist, the plugin's imports) is
    tests/test_pytest_plugin.py's."""
    from harness.oracle import cache as expected_cache

    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(cache))
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(expected_cache, "_memory", {})
    monkeypatch.setattr(expected_cache, "_linear_memory", {})
    here = pytester.path  # the session's folder, its working directory
    xml = here / "junit.xml"
    args = ["--lossconf-adapter", "numpy"]
    args += [a for f in slice_files() for a in ("--lossconf-cases", str(f))]
    keywords = (*(f"not {case_id}" for case_id in SLOW), *PLUGIN_KEYWORDS)
    args += [a for k in keywords for a in ("--lossconf-k", k)]
    args += [a for d in PLUGIN_DTYPES for a in ("--lossconf-dtype", d)]
    # a configuration file of its own: pytest would otherwise find this repository's (the case
    # files' folder is under it) and run the items with its addopts (pytest-xdist workers)
    ini = here / "pytest.ini"
    ini.write_text("[pytest]\n")
    # (no hypothesis test among the items: its plugin stays out)
    result = pytester.runpytest_inprocess(
        "-c", str(ini), "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
        "--rootdir", str(here), "-q", *args, f"--junitxml={xml}",
    )  # fmt: skip
    assert result.ret in (0, 1), "\n".join(result.outlines[-40:] + result.errlines)
    got = {}
    for tc in ET.parse(xml).getroot().iter("testcase"):
        name = tc.get("name")  # <case id>[<adapter>-<dtype>]
        case_id, _, inner = name[:-1].rpartition("[")
        adapter, _, dtype = inner.rpartition("-")
        status = {p.get("name"): p.get("value") for p in tc.iter("property")}["lossconf_status"]
        outcome = next(
            (o for o in ("failure", "error", "skipped") if tc.find(o) is not None), "pass"
        )
        assert (case_id, adapter, dtype) not in got, name
        got[(case_id, adapter, dtype)] = (status, outcome)
    tags = {r["case_id"]: r["tags"] for r in reference.doc["results"]}
    outcome_of = {"pass": "pass", "raised": "pass", "unsupported": "skipped"}
    want = {
        k: (v["status"], outcome_of.get(v["status"], "failure"))
        for k, v in reference.verdicts.items()
        if selected(k, tags, PLUGIN_KEYWORDS, PLUGIN_DTYPES)
    }
    assert len(want) > 300
    missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
    assert not missing and not extra, (sorted(missing)[:3], sorted(extra)[:3])
    differ = [
        f"{k}: cold run {want[k]}, plugin {got[k]}" for k in sorted(want) if want[k] != got[k]
    ]
    assert not differ, f"{len(differ)} items differ:\n" + "\n".join(differ[:15])


def test_dtype_float64_twice_on_a_warm_cache_conforms(reference, cache, tmp_path):
    """The original report: ``python -m harness --dtype float64 -q`` run twice, on the files
    of the slice (the whole built-in suite then). Before the fix the cases read back from the
    load cache and copied by ``--dtype`` had one content hash, so the first oracle value
    computed was stored and read back for all 10 float64 ``expected: oracle`` cases: 9
    results did not conform.

    The folder starts with the load cache of the cold run (its case files, a copy) and no
    expected value, so the first run computes and stores them and the second reads them."""
    fresh = tmp_path / "cache"
    shutil.copytree(cache / "cases", fresh / "cases")
    for attempt in ("first", "second"):
        run = lossconf(fresh, tmp_path / f"{attempt}.json", "--dtype", "float64")
        assert run.nonconforming == 0, f"{attempt} run:\n{run.output}"
        assert "0 not conforming" in run.output
        assert_same_verdicts(run, reference, (), ("float64",), mode=f"{attempt} --dtype float64")
        if attempt == "first":
            stored = _cache_files(fresh)
            assert any(f.endswith(expected_suffix()) for f in stored), (
                "no expected value was stored"
            )
    assert _cache_files(fresh) == stored, "the second run was not warm"


# ---------------------------------------------------------------------------------------------
# case identity, in process


def test_distinct_cases_keep_distinct_hashes_after_selection_and_the_load_cache(
    reference, cache, monkeypatch
):
    from harness.cases.loader import load_paths
    from harness.cases.select import select

    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(cache))
    fresh = reference.doc["suite"]["cases"]  # computed by the loader from the YAML (cold run)
    pickles = {k: v for k, v in _cache_files(cache).items() if k.endswith(".pickle")}
    loaded = [c for c in load_paths(slice_files()).cases if c.id not in SLOW]
    assert {k: v for k, v in _cache_files(cache).items() if k.endswith(".pickle")} == pickles, (
        "the load cache missed: this test must see cases read back from the pickles"
    )
    assert {c.id: c.content_hash for c in loaded} == fresh
    for keywords, dtypes in [
        (None, ["float64"]),
        (None, ["float16", "bfloat16"]),
        (["shapes"], ["float32"]),
        (["half_precision"], ["float16"]),
        (["kernel"], ["float64"]),
        (["not weights"], None),
    ]:
        chosen = select(loaded, keywords, dtypes)
        assert chosen, (keywords, dtypes)
        for cases in (chosen, pickle.loads(pickle.dumps(chosen))):  # as sent to --jobs workers
            hashes = {c.id: c.content_hash for c in cases}
            assert hashes == {i: fresh[i] for i in hashes}, (keywords, dtypes)
            assert len(set(hashes.values())) == len(hashes), (keywords, dtypes)
            assert EMPTY_MAPPING_HASH not in hashes.values()


def _old_scheme_revision() -> str:
    """A revision as written before KEY_SCHEME 2: a hash of the oracle's source alone."""
    from harness.oracle import cache as expected_cache

    here = Path(expected_cache.__file__).parent
    h = hashlib.sha256()
    for name in ("exact.py", "stream.py"):  # the oracle source, without the scheme
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def test_expected_values_under_the_old_key_scheme_are_never_read(
    reference, cache, tmp_path, monkeypatch
):
    from harness.cases.loader import load_paths
    from harness.oracle import cache as expected_cache
    from harness.oracle import cross_entropy

    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(cache))  # cases from the warm load cache
    cases = [
        c
        for c in load_paths(
            [ROOT / "cases" / "shapes.yaml", ROOT / "cases" / "half_precision.yaml"]
        ).cases
        # the small ones: what is read or computed does not depend on the size, the cost does
        if c.expected is None and c.expect_error is None and c.logits_size <= 10_000
    ]
    assert len({c.logits.shape for c in cases}) >= 5, "expected: oracle cases of several shapes"
    old = _old_scheme_revision()
    assert getattr(expected_cache, "KEY_SCHEME", 1) >= 2
    assert expected_cache.oracle_revision() != old, "the key scheme does not enter the file names"

    # the folder of a user who ran the buggy version: wrong values under the old names, for
    # each case's own hash and for the hash every selected case collided on
    stale = tmp_path / "stale"
    stale.mkdir()
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(stale))
    want = {}
    for c in cases:
        for dtype in c.dtypes:
            r = cross_entropy(c.problem(dtype))
            want[c.id, dtype] = r
            poison = {"loss": np.full_like(r.loss, 7.0)}
            if r.grad is not None:
                poison["grad"] = np.full_like(r.grad, -3.0)
            for h in (c.content_hash, EMPTY_MAPPING_HASH):
                expected_cache.write_arrays(
                    stale / f"{h}-{dtype}-{old}{expected_cache.SUFFIX}", poison
                )
    planted = set(os.listdir(stale))

    monkeypatch.setattr(expected_cache, "_memory", {})
    disk_hits = expected_cache.stats["disk_hits"]
    for c in cases:
        for dtype in c.dtypes:
            got = expected_cache.oracle_expected(
                c.content_hash, dtype, lambda c=c, dtype=dtype: c.problem(dtype)
            )
            np.testing.assert_array_equal(got.loss, want[c.id, dtype].loss, err_msg=c.id)
            if want[c.id, dtype].grad is None:
                assert got.grad is None
            else:
                np.testing.assert_array_equal(got.grad, want[c.id, dtype].grad, err_msg=c.id)
            assert expected_cache.cache_path(c.content_hash, dtype).name not in planted
    assert expected_cache.stats["disk_hits"] == disk_hits, "a stale file was read"
