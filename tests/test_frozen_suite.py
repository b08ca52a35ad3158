"""The built-in suite's frozen data (``harness.cases.frozen``) is what the code computes now.

Every frozen file holds exactly what the loader makes of its case file and what the oracle
and the error bounds give for its small problems, bit for bit (on a machine whose floating-
point functions differ from those of the machine that made it, the values, not the bounds:
the bounds are then not read). A user's file never reads it, nor an edited built-in file, nor
a load under other limits; and a run reports the same results with it and without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.cases import frozen
from harness.cases.loader import builtin_suite, check_file, discover, load_file, load_paths
from harness.oracle import cache as expected_cache
from harness.oracle.cache import read_arrays, write_arrays

SUITE = builtin_suite()
FILES = discover([SUITE])


@pytest.fixture
def fresh(monkeypatch):
    """No disk cache, empty in-memory expected values: everything is computed here."""
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")
    monkeypatch.setattr(expected_cache, "_memory", {})
    monkeypatch.setattr(expected_cache, "_linear_memory", {})


def _load(path: Path) -> list:
    cases, errors = check_file(path)
    assert not errors, errors
    return cases


def _same(got: object, want: object, where: str) -> None:
    """Equal, types included; arrays by dtype, shape and bytes (NaN payloads and -0.0 too)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert got.tobytes() == want.tobytes(), f"{where}: other values"
    elif isinstance(want, dict):
        assert isinstance(got, dict)
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            _same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple))
        assert len(got) == len(want), f"{where}: length"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, f"{where}[{i}]")
    elif dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            _same(getattr(got, f.name), getattr(want, f.name), f"{where}.{f.name}")
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), where
    else:
        assert repr(got) == repr(want), f"{where}: {got!r} != {want!r}"


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SUITE)) for p in FILES])
def test_frozen_data_is_what_the_code_computes_now(path, fresh):
    where = frozen.frozen_path(path, SUITE)
    assert where is not None and where.is_file(), (
        f"{path}: no frozen data; run python tools/make_corpus.py --frozen"
    )
    stored = read_arrays(where)
    assert stored is not None
    doc = json.loads(stored["doc"].tobytes())
    context = json.loads(stored["context"].tobytes())
    stale = f"{where} is stale: run python tools/make_corpus.py --frozen"

    made, cases = frozen.freeze(path, _load)  # computes the small problems' expected values
    made_doc = json.loads(made["doc"].tobytes())
    made_context = json.loads(made["context"].tobytes())
    computed = dict(expected_cache._memory), dict(expected_cache._linear_memory)
    expected_cache._memory.clear()
    expected_cache._linear_memory.clear()
    same_arithmetic = context["arithmetic"] == frozen.arithmetic()
    if same_arithmetic:  # the whole file, bounds included
        assert list(made) == list(stored), stale
        assert made_context == context, stale
        assert made_doc == doc, stale
        for name in made:
            assert made[name].tobytes() == stored[name].tobytes(), f"{stale} ({name})"

    # what a load reads back from it, against what the loader and the oracle give
    got = frozen.read(path, SUITE)
    assert got is not None, stale
    assert len(got) == len(cases), stale
    for g, w in zip(got, cases, strict=True):
        _same(g, w, f"{stale}: case {w.name!r}")
        assert g.__dict__.get("_bounded", {}).keys() <= set(w.dtypes)
    # what the file holds, by case and dtype
    records = {(i, dtype): (kind, rec) for i, dtype, kind, rec in doc["expected"]}
    for i, case in enumerate(cases):
        for dtype in case.dtypes if case.expect_error is None else ():
            if (i, dtype) not in records:
                continue  # a large problem: computed by every run
            kind, _ = records[(i, dtype)]
            if kind == "literal":
                want = case.expected_for(dtype)
                have = got[i].__dict__.get("_bounded", {}).get(dtype)
            elif kind == "linear":
                want = computed[1][(case.content_hash, dtype)]
                have = expected_cache._linear_memory.get((case.content_hash, dtype))
            else:
                want = computed[0][(case.content_hash, dtype)]
                have = expected_cache._memory.get((case.content_hash, dtype))
            if not same_arithmetic:
                assert have is None, "bounds of another machine's arithmetic were read"
                continue
            _same(have, want, f"{stale}: case {case.name!r} {dtype}")


def _suite_copy(tmp_path: Path) -> Path:
    """A folder laid out as the built-in suite: seed.yaml and its frozen data."""
    shutil.copy(SUITE / "seed.yaml", tmp_path / "seed.yaml")
    (tmp_path / frozen.FOLDER).mkdir()
    shutil.copy(SUITE / frozen.FOLDER / "seed.arrays", tmp_path / frozen.FOLDER / "seed.arrays")
    return tmp_path


def test_frozen_data_is_read_only_for_the_exact_bytes_flag_and_limits(tmp_path, fresh, monkeypatch):
    suite = _suite_copy(tmp_path)
    path = suite / "seed.yaml"
    cases = frozen.read(path, suite)
    assert cases is not None and [c.file for c in cases] == [path] * len(cases)
    assert frozen.read(path, suite, require_expected=False) is None
    with monkeypatch.context() as m:
        m.setenv("LOSSCONF_MAX_YAML_DEPTH", "50")
        assert frozen.read(path, suite) is None
    path.write_bytes(path.read_bytes() + b"# edited\n")
    assert frozen.read(path, suite) is None
    assert frozen.read(path, suite / "elsewhere") is None  # not a file of that suite


def test_a_users_copy_of_a_builtin_file_is_loaded_by_the_loader(tmp_path, fresh):
    copy = tmp_path / "seed.yaml"
    shutil.copy(SUITE / "seed.yaml", copy)
    before = dict(frozen.stats)
    cases = load_file(copy)
    assert frozen.stats == before
    assert cases and all(c.file == copy for c in cases)
    builtin = load_file(SUITE / "seed.yaml")
    assert frozen.stats["files"] == before["files"] + 1
    assert [c.content_hash for c in builtin] == [c.content_hash for c in cases]


def test_bounds_of_another_arithmetic_are_not_read(fresh, monkeypatch):
    monkeypatch.setattr(frozen, "arithmetic", lambda: "another machine")
    before = frozen.stats["expected"]
    cases = frozen.read(SUITE / "seed.yaml", SUITE)
    assert cases is not None and frozen.stats["expected"] == before
    assert not expected_cache._memory
    assert all("_bounded" not in c.__dict__ for c in cases)


def test_a_file_loaded_again_is_decoded_once_and_other_bytes_again(tmp_path, fresh, monkeypatch):
    """A process decodes a frozen document once (``frozen._decoded``): a second load gives
    new cases of the same content; arrays of other bytes under the same document are
    decoded again, never served from the first load."""
    suite = _suite_copy(tmp_path)
    path = suite / "seed.yaml"
    decoded = []
    real = frozen._decoder

    def counted(file, arrays):
        decoded.append(file)
        return real(file, arrays)

    monkeypatch.setattr(frozen, "_decoder", counted)
    first, second = frozen.read(path, suite), frozen.read(path, suite)
    assert first is not None and second is not None and decoded == [path]
    assert [c.id for c in second] == [c.id for c in first] and second[0] is not first[0]
    where = frozen.frozen_path(path, suite)
    arrays = {name: a.copy() for name, a in read_arrays(where).items()}
    blob = next(name for name in arrays if name.startswith("blob") and arrays[name].size)
    arrays[blob].reshape(-1)[:1] += 1  # another value, the same document
    write_arrays(where, arrays)
    again = frozen.read(path, suite)
    assert again is not None and decoded == [path, path]


def test_frozen_arrays_are_read_only(fresh):
    cases = frozen.read(SUITE / "seed.yaml", SUITE)
    assert cases is not None
    arrays = [c.logits_source for c in cases if isinstance(c.logits_source, np.ndarray)]
    assert arrays and not any(a.flags.writeable for a in arrays)


#: small, and between them literal and oracle values, kernel fields, fused linear cases and
#: invalid inputs
RUN_FILES = ("seed", "targets", "kernel", "fused_linear", "invalid")


def _left_to_every_run() -> list[str]:
    """The cases of ``RUN_FILES`` whose expected values their frozen data does not hold (large
    problems: the oracle computes them in every run, with frozen data or without). A run
    computes their values alike either way, so they are left out of the runs below (two
    thirds of this test's CPU); their inputs as read from the frozen data are the loader's,
    bit for bit (``test_frozen_data_is_what_the_code_computes_now``)."""
    ids = []
    for name in RUN_FILES:
        stored = read_arrays(frozen.frozen_path(SUITE / f"{name}.yaml", SUITE))
        assert stored is not None
        doc = json.loads(stored["doc"].tobytes())
        held = {index for index, _, _, _ in doc["expected"]}
        ids += [
            f"{name}/{case['name']}"
            for index, case in enumerate(doc["cases"])
            if index not in held and "expect_error" not in case
        ]
    return ids


def _run(report: Path) -> list[dict]:
    from harness.cli.main import main

    args = [a for name in RUN_FILES for a in ("--cases", str(SUITE / f"{name}.yaml"))]
    args += [a for case_id in _left_to_every_run() for a in ("-k", f"not {case_id}")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--adapter", "numpy", "-q", "--report", str(report), *args])
    assert code in (0, 1), out.getvalue()
    results = json.loads(report.read_text())["results"]
    volatile = ("seconds", "bytes", "time")
    return [{k: v for k, v in r.items() if not any(w in k for w in volatile)} for r in results]


def test_a_run_reports_the_same_with_and_without_frozen_data(tmp_path, fresh, monkeypatch):
    before = frozen.stats["files"]
    with_frozen = _run(tmp_path / "with.json")
    assert frozen.stats["files"] == before + len(RUN_FILES)
    monkeypatch.setattr(frozen, "enabled", False)
    monkeypatch.setattr(expected_cache, "_memory", {})
    monkeypatch.setattr(expected_cache, "_linear_memory", {})
    without = _run(tmp_path / "without.json")
    assert len(with_frozen) == len(without) > 100
    assert json.dumps(with_frozen, sort_keys=True) == json.dumps(without, sort_keys=True)
    assert load_paths([SUITE / "seed.yaml"]).cases


def test_a_file_whose_recipes_make_other_arrays_here_is_loaded_by_the_loader(fresh, monkeypatch):
    """NumPy's generator takes its tail draws from the C library's log1p, whose rounding
    differs between libraries: the arrays a recipe makes at load (weights, fingerprint
    checks) must be the frozen ones' bits, or the loader loads the file."""
    path = SUITE / "shapes.yaml"
    assert frozen.read(path, SUITE) is not None
    real = frozen.materialize

    def other_bits(spec, dtype):
        a = real(spec, dtype).copy()
        a.reshape(-1)[:1] = np.nextafter(a.reshape(-1)[:1], np.inf)
        return a

    monkeypatch.setattr(frozen, "materialize", other_bits)
    assert frozen.read(path, SUITE) is None
    assert frozen.read(SUITE / "seed.yaml", SUITE) is not None  # no recipe in it


def test_recipes_checked_once_per_machine_are_not_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(expected_cache, "_memory", {})
    monkeypatch.setattr(expected_cache, "_linear_memory", {})
    path = SUITE / "shapes.yaml"
    assert frozen.read(path, SUITE) is not None  # made and compared, then recorded
    assert list((tmp_path / frozen.FOLDER).iterdir())

    def refuse(spec, dtype):
        raise AssertionError("a recipe was made again")

    monkeypatch.setattr(frozen, "materialize", refuse)
    assert frozen.read(path, SUITE) is not None
