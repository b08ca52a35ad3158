"""Guards for the performance work (none of them timed): lazy imports, the disk caches,
the streaming oracle against the exact one, its memory bound, and ``--jobs``."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPORTED_AT_COLLECTION, NOT_AT_COLLECTION

from harness.cases import load_cache, loader
from harness.oracle import cache as expected_cache
from harness.oracle import cross_entropy
from harness.oracle import stream as oracle_stream
from harness.oracle.problem import Problem
from harness.oracle.stream import cross_entropy_streaming
from tests.conftest import REPO, run_cli

FRAMEWORKS = ("torch", "jax", "jaxlib", "optax")

SMALL_SUITE = """\
defaults:
  dtype: [float64, float32]
cases:
  - name: big_oracle
    why: "expected values computed by the oracle at run time (300 x 700 logits)"
    logits: {generate: normal, shape: [300, 700], seed: 1, std: 3.0}
    target: {generate: labels, shape: [300], seed: 2, classes: 700, ignore_fraction: 0.2}
    label_smoothing: 0.1
    expected: oracle
  - name: small_oracle
    why: "expected values from the exact oracle at run time"
    logits: [[0.5, -1.25, 2.0], [1.0, 0.0, -0.5]]
    target: [2, 0]
    expected: oracle
  - name: literal
    why: "a case with written expected values"
    logits: [[0.25, -1.0, 2.0], [1.5, 0.0, -0.5]]
    target: [2, 1]
    reduction: sum
    expected:
      loss: 2.0081211815135798
      grad: [[0.14202311267846235, 0.040690303047394745, -0.18271341572585711], [0.7361247243125939, -0.8357483723749122, 0.09962364806231833]]
"""


def test_no_test_file_imports_a_framework_at_collection():
    """Every pytest-xdist worker collects every file: a framework imported there costs each
    worker its import (tests/conftest.py, NOT_AT_COLLECTION)."""
    assert IMPORTED_AT_COLLECTION == {}, (
        f"imported at collection (of {NOT_AT_COLLECTION}): {IMPORTED_AT_COLLECTION}; import "
        "it in the tests, and decide a skip with importlib.util.find_spec"
    )


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """SMALL_SUITE's file and the environment of the subprocesses that run it: a cache
    folder of this module's, so the expected values of its oracle cases (300 x 700 logits)
    are computed once, by the module's first run, and read from the disk by the others."""
    folder = tmp_path_factory.mktemp("small-suite")
    path = folder / "suite.yaml"
    path.write_text(SMALL_SUITE)
    return path, {"LOSSCONF_CACHE_DIR": str(folder / "cache")}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(folder))
    monkeypatch.setattr(expected_cache, "_memory", {})
    return folder


#: the modules whose import the steps below watch
WATCH = (*FRAMEWORKS, "jsonschema", "mpmath")

#: in one fresh interpreter, each step of the JSON list argv[1] in turn ([name, code, its
#: sys.argv[1:], its LOSSCONF_CACHE_DIR]); prints {name: the watched modules imported so far}
STEPS = f"""
import json, os, sys
steps, out = json.loads(sys.argv[1]), {{}}
for name, code, args, cache in steps:
    os.environ["LOSSCONF_CACHE_DIR"] = cache
    sys.argv[1:] = args
    exec(code, {{"__name__": "__main__"}})
    out[name] = sorted(m for m in {WATCH!r} if m in sys.modules)
print(json.dumps(out))
"""


def _modules_after(steps: list[tuple[str, str, list[str], str]]) -> dict[str, list[str]]:
    """Run ``steps`` ([name, code, args, cache folder]) in turn in one fresh interpreter;
    return the watched modules imported when each had run (its own and its predecessors')."""
    out = subprocess.run(
        [sys.executable, "-c", STEPS, json.dumps(steps)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


LIST_CODE = """
import contextlib, io, sys
from harness.cli.main import build_parser, main
from harness.cases.loader import load_paths
files = sys.argv[1:]
build_parser()
assert len(load_paths(files or None).cases) > 0
with contextlib.redirect_stdout(io.StringIO()):
    assert main(['--list', *(a for f in files for a in ('--cases', f))]) == 0
"""


HELP_CODE = """
import contextlib, io
from harness.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    try: main(['--help'])
    except SystemExit: pass
"""


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, list[str]]:
    """The watched modules imported by ``--help`` and by ``--list`` loads (LIST_CODE), in two
    fresh interpreters (each costs its start-up and imports), not one per load. The first
    runs, in this order: ``help``; ``frozen``,
    a cold load (an empty cache folder) of the hand-written files of the built-in suite,
    which their frozen data serves (harness/cases/frozen.py); ``cold``, one of copies of them
    elsewhere, which are parsed and validated (the generated ones too cost seconds and go
    through the same code); ``first``, the whole built-in suite on the session's cache
    folder, which fills it when it is not warm yet. Each step sees what those before it
    imported: the steps checked to import nothing come first, so a step's list holds its own
    imports. The second interpreter runs ``warm``: the same load, now warm."""
    import shutil

    from harness.cache_folder import cache_dir as cache_folder

    tmp = tmp_path_factory.mktemp("imports")
    hand_written = sorted((REPO / "cases").glob("*.yaml"))
    copies = tmp / "copies"
    copies.mkdir()
    for path in hand_written:
        shutil.copy(path, copies / path.name)
    session = cache_folder()
    session = tmp / "warm" if session is None else session  # the session runs without one
    out = _modules_after([
        ("help", HELP_CODE, [], str(tmp / "cache-help")),
        ("frozen", LIST_CODE, [str(p) for p in hand_written], str(tmp / "cache")),
        ("cold", LIST_CODE, [str(copies / p.name) for p in hand_written],
         str(tmp / "cache-copies")),
        ("first", LIST_CODE, [], str(session)),
    ])  # fmt: skip
    return {**out, **_modules_after([("warm", LIST_CODE, [], str(session))])}


def test_list_and_loading_import_no_framework_and_warm_start_skips_schema_and_mpmath(imported):
    """Cold: the built-in files served by their frozen data, and copies of them parsed and
    validated. Warm: the whole built-in suite after a first run (which imports no framework
    either). See ``imported``."""
    frozen = imported["frozen"]
    assert frozen == [], f"a first --list of built-in files imported {frozen}"
    cold = imported["cold"]
    assert not set(cold) & set(FRAMEWORKS), cold
    assert "jsonschema" in cold  # the first load of a user's files validates every file
    first = imported["first"]
    assert not set(first) & set(FRAMEWORKS), first
    warm = imported["warm"]
    assert warm == [], f"a warm --list imported {warm}"


def test_help_imports_no_framework(imported):
    assert imported["help"] == []


def test_load_cache_serves_the_second_load_without_parsing(write, cache_dir, monkeypatch):
    path = write("suite.yaml", SMALL_SUITE)
    first = loader.load_paths([path]).cases
    assert list((cache_dir / "cases").glob("*.pickle"))

    def refuse(*a, **k):
        raise AssertionError("the file was parsed again")

    monkeypatch.setattr(loader, "_load_file", refuse)
    second = loader.load_paths([path]).cases
    assert [c.id for c in second] == [c.id for c in first]
    assert [c.content_hash for c in second] == [c.content_hash for c in first]
    np.testing.assert_array_equal(second[0].logits, first[0].logits)
    np.testing.assert_array_equal(
        second[2].expected["float32"].grad, first[2].expected["float32"].grad
    )
    assert second[0].line == first[0].line


def test_load_cache_never_serves_an_edited_file(write, cache_dir):
    path = write("suite.yaml", SMALL_SUITE)
    loader.load_paths([path])
    path.write_text(SMALL_SUITE.replace("reduction: sum", "reduction: none"))
    with pytest.raises(Exception, match="expected"):  # sum's scalar loss no longer fits 'none'
        loader.load_paths([path])


def test_load_cache_keeps_one_entry_per_file(write, cache_dir):
    path = write("suite.yaml", SMALL_SUITE)
    loader.load_paths([path])
    path.write_text(SMALL_SUITE.replace("seed: 1,", "seed: 3,"))
    assert loader.load_paths([path]).cases[0].logits_source["seed"] == 3
    assert len(list((cache_dir / "cases").glob("*.pickle"))) == 1


def test_load_cache_is_skipped_when_disabled(write, monkeypatch, tmp_path):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", "off")
    assert load_cache.get(write("suite.yaml", SMALL_SUITE), True) == (None, None)


def test_expected_values_come_from_disk_on_a_second_run(write, cache_dir):
    path = write("suite.yaml", SMALL_SUITE)
    case = loader.load_paths([path]).cases[0]
    before = dict(expected_cache.stats)
    first = expected_cache.oracle_expected(
        case.content_hash, "float32", lambda: case.problem("float32")
    )
    assert expected_cache.stats["computed"] == before["computed"] + 1
    stored = expected_cache.cache_path(case.content_hash, "float32")
    assert stored.is_file()
    expected_cache._memory.clear()
    second = expected_cache.oracle_expected(
        case.content_hash, "float32", lambda: case.problem("float32")
    )
    assert expected_cache.stats["disk_hits"] == before["disk_hits"] + 1
    assert expected_cache.stats["computed"] == before["computed"] + 1
    np.testing.assert_array_equal(second.grad, first.grad)
    assert float(second.loss) == float(first.loss)


def test_cli_second_run_reads_the_disk_cache(write, cli, cli_process, cache_dir):
    """Tamper with the cached loss: a second run that reads the cache must then fail. The
    first run writes it (here, with an empty in-memory cache: ``cache_dir``); the second is a
    fresh process, whose in-memory cache is empty, so only the disk can answer."""
    path = write("suite.yaml", SMALL_SUITE)
    env = {"LOSSCONF_CACHE_DIR": str(cache_dir)}
    first = cli("--cases", str(path), "-k", "small_oracle", "-q", env=env)
    assert first.returncode == 0, first.output
    entries = sorted(cache_dir.glob(f"*-float64-*{expected_cache.SUFFIX}"))
    assert len(entries) == 1
    arrays = expected_cache.read_arrays(entries[0])
    assert arrays is not None
    arrays["loss"] = arrays["loss"] + 1.0
    expected_cache.write_arrays(entries[0], arrays)  # a well-formed file with a wrong loss
    second = cli_process("--cases", str(path), "-k", "small_oracle", "-q", env=env)
    assert second.returncode == 1, second.output
    assert "1 not conforming" in second.output


def _problem(rng, shape, *, prob, weight, reduction, eps, ignore, special):
    x = rng.normal(0, 3, shape)
    if special == "neginf":
        x.flat[rng.integers(x.size)] = -np.inf
    elif special == "nan":
        x.flat[rng.integers(x.size)] = np.nan
    elif special == "peaked":
        x[0, 0] = 60.0  # a row whose target dominates: the log1p and s' paths
    c = shape[0] if len(shape) == 1 else shape[1]
    if prob:
        t = rng.uniform(0, 1, shape)
        ii = -100
    else:
        tshape = () if len(shape) == 1 else (shape[0], *shape[2:])
        t = rng.integers(0, c, tshape)
        if special == "peaked":
            t[0] = 0
        ii = int(t.flat[0]) if ignore and t.size > 1 else -100
    w = rng.uniform(0.1, 2, c) if weight else None
    go = None
    if reduction == "none" and not prob and len(shape) > 1:
        go = rng.normal(size=t.shape)
    return Problem(x, t, prob, weight=w, reduction=reduction, ignore_index=ii,
                   label_smoothing=eps, grad_output=go)  # fmt: skip


GRID = [
    (shape, prob, weight, reduction, eps, ignore, special)
    for shape, prob, weight, reduction, eps, ignore, special in [
        ((6, 7), False, False, "mean", 0.0, False, None),
        ((6, 7), False, True, "mean", 0.0, True, "peaked"),
        ((6, 7), False, True, "sum", 0.2, True, "neginf"),
        ((5,), False, False, "none", 0.0, False, None),
        ((3, 4, 2), False, True, "none", 0.1, True, "nan"),
        ((4, 50), True, True, "mean", 0.0, False, None),
        ((2, 3, 2, 2), True, False, "none", 0.3, False, "neginf"),
        ((8, 40), False, True, "mean", 1.0, True, "nan"),
        ((40, 60), True, True, "sum", 0.05, False, None),
        ((30, 80), False, True, "mean", 0.1, True, "peaked"),
    ]
]


@pytest.mark.parametrize("seed", range(len(GRID)), ids=lambda i: f"{GRID[i][0]}-{GRID[i][3]}-{i}")
def test_streaming_agrees_with_exact(seed):
    shape, prob, weight, reduction, eps, ignore, special = GRID[seed]
    rng = np.random.default_rng(seed)
    p = _problem(rng, shape, prob=prob, weight=weight, reduction=reduction, eps=eps,
                 ignore=ignore, special=special)  # fmt: skip
    exact, stream = cross_entropy(p), cross_entropy_streaming(p)
    c = shape[0] if len(shape) == 1 else shape[1]
    bound = (np.log2(c) + 8) * 2.0**-53  # harness/oracle/stream.py's stated relative bound
    for want, got in ((exact.loss, stream.loss), (exact.grad, stream.grad)):
        assert got.shape == want.shape and got.dtype == np.float64
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = np.isfinite(want)
        np.testing.assert_array_equal(
            got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)]
        )
        # cancelling terms (smoothing, probabilities) are at most the row's largest entry
        scale = np.max(np.abs(want[finite]), initial=0.0)
        np.testing.assert_allclose(got[finite], want[finite], rtol=bound, atol=bound * scale)


def test_streaming_target_gradient_keeps_its_digits_when_the_target_dominates():
    x = np.array([[40.0, 0.0, -1.0, 0.5]])  # p_target = 1 - 4e-18: 1 - p is all cancellation
    p = Problem(x, np.array([0]), False, reduction="sum")
    exact, stream = cross_entropy(p), cross_entropy_streaming(p)
    np.testing.assert_allclose(stream.grad, exact.grad, rtol=1e-14)
    np.testing.assert_allclose(stream.loss, exact.loss, rtol=1e-14)


def test_streaming_is_independent_of_chunking_and_of_the_carrier_dtype(monkeypatch):
    rng = np.random.default_rng(5)
    x32 = rng.normal(0, 4, (37, 300)).astype(np.float32)
    t = rng.integers(0, 300, 37)
    w = rng.uniform(0.5, 2, 300)
    kw = dict(weight=w, label_smoothing=0.1)
    whole = cross_entropy_streaming(Problem(x32.astype(np.float64), t, False, **kw))
    monkeypatch.setattr(oracle_stream, "CHUNK_BYTES", 3 * 300 * 8)  # 3 rows per chunk
    chunked = cross_entropy_streaming(Problem(x32, t, False, **kw))
    np.testing.assert_array_equal(chunked.grad, whole.grad)
    assert float(chunked.loss) == float(whole.loss)


def test_streaming_memory_is_the_gradient_plus_a_few_chunks(monkeypatch):
    monkeypatch.setattr(oracle_stream, "CHUNK_BYTES", 2**20)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((256, 4096), dtype=np.float32)  # 4 MiB
    t = rng.integers(0, 4096, 256)
    p = Problem(x, t, False, weight=rng.uniform(0.5, 2, 4096), label_smoothing=0.1)
    tracemalloc.start()
    try:
        result = cross_entropy_streaming(p, grad_dtype=np.float32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.grad.dtype == np.float32
    # the float32 gradient (4 MiB) plus a few 1 MiB chunk buffers: no whole-array float64 copy
    assert peak < x.nbytes + 5 * 2**20, peak
    loss_only_peak = _peak(lambda: cross_entropy_streaming(p, want_grad=False))
    assert loss_only_peak < 5 * 2**20, loss_only_peak


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _rows(report: Path) -> list[tuple[str, str, str, str]]:
    doc = json.loads(report.read_text())
    return [(r["case_id"], r["adapter"], r["dtype"], r["status"]) for r in doc["results"]]


@pytest.fixture(scope="module")
def serial(small_suite, tmp_path_factory) -> dict[str, list[tuple[str, str, str, str]]]:
    """The serial results of SMALL_SUITE (``--jobs 1``) through the numpy adapter and
    PRETEND_THREADED's, {adapter: its rows in the report's order}, for the ``--jobs`` tests
    to compare with: one run for both, whose serial order per adapter is a run's of that
    adapter alone (case x adapter x dtype). The pretence (jaxlib imported) matters to worker
    processes only; it stays in that run's process."""
    path, env = small_suite
    folder = tmp_path_factory.mktemp("serial")
    adapter = folder / "pretend.py"
    adapter.write_text(PRETEND_THREADED.lstrip())
    report = folder / "s.json"
    r = run_cli("--cases", str(path), "--adapter", "numpy", "--adapter", str(adapter),
                "--jobs", "1", "--report", str(report), "-q", env=env)  # fmt: skip
    assert r.returncode == 0, r.output
    rows = _rows(report)
    return {name: [row for row in rows if row[1] == name] for name in ("numpy", "pretend")}


def test_jobs_gives_the_serial_results_in_the_serial_order(small_suite, serial, cli_process,
                                                           tmp_path):  # fmt: skip
    # worker processes fork from the harness: a process of its own, not the test runner
    path, env = small_suite
    parallel = cli_process(
        "--cases", str(path), "--jobs", "2", "--report", str(tmp_path / "p.json"), "-q", env=env
    )
    assert parallel.returncode == 0, parallel.output
    assert _rows(tmp_path / "p.json") == serial["numpy"]
    assert len(serial["numpy"]) == 6


def test_jobs_rejects_a_negative_count(cli):
    r = cli("--jobs", "-1")
    assert r.returncode == 2
    assert "--jobs" in r.output and "must be >= 0" in r.output


HOG = """
import numpy as np
from harness import Adapter, Output
from harness.adapters.numpy_ref import NumpyAdapter


class Hog(Adapter):
    name = "hog"

    def run(self, inputs):
        scratch = np.ones(12_500_000)  # 100 MB, touched, then freed
        del scratch
        return NumpyAdapter().run(inputs)
"""


def test_json_report_has_time_and_peak_memory_per_adapter(small_suite, write, cli_process,
                                                          tmp_path):  # fmt: skip
    # peak memory is a per-process high-water mark: the test runner's own would hide the hog's
    path, env = small_suite
    hog = write("hog.py", HOG)
    out = tmp_path / "r.json"
    r = cli_process("--cases", str(path), "-k", "literal", "--adapter", "numpy", "--adapter", str(hog),
            "--report", str(out), "-q", env=env)  # fmt: skip
    assert r.returncode == 0, r.output
    doc = json.loads(out.read_text())
    adapters = {a["name"]: a for a in doc["adapters"]}
    for a in adapters.values():
        assert a["seconds"] > 0
    assert adapters["hog"]["peak_rss_bytes"] > adapters["numpy"]["peak_rss_bytes"] + 80e6
    hog_results = [x for x in doc["results"] if x["adapter"] == "hog"]
    assert max(x["peak_rss_bytes"] for x in hog_results) == adapters["hog"]["peak_rss_bytes"]


def test_workers_are_spawned_once_a_threaded_framework_is_imported(monkeypatch):
    from harness.execution import parallel

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.delitem(sys.modules, "jaxlib", raising=False)
    assert parallel.start_method() == ("fork" if sys.platform == "linux" else "spawn")
    monkeypatch.setitem(sys.modules, "jaxlib", object())
    assert parallel.start_method() == "spawn"


PRETEND_THREADED = """
import sys
import types

from harness.adapters.numpy_ref import NumpyAdapter

sys.modules.setdefault("jaxlib", types.ModuleType("jaxlib"))  # as if jax were loaded: spawn


class Pretend(NumpyAdapter):
    name = "pretend"
"""


def test_jobs_with_spawned_workers_gives_the_serial_results(small_suite, serial, write,
                                                           cli_process, tmp_path):  # fmt: skip
    path, env = small_suite
    adapter = write("pretend.py", PRETEND_THREADED)
    out = tmp_path / "r2.json"
    r = cli_process("--cases", str(path), "--adapter", str(adapter), "--jobs", "2",
                    "--report", str(out), "-q", env=env)  # fmt: skip
    assert r.returncode == 0, r.output
    reports = [serial["pretend"], _rows(out)]
    assert reports[0] == reports[1] and len(reports[0]) == 6


def test_batches_keep_order_and_isolate_large_cases():
    from types import SimpleNamespace

    from harness.execution.parallel import batches

    def case(size):
        return SimpleNamespace(logits_source=np.zeros(size), dtypes=("float32",))

    cases = [case(10)] * 50 + [case(100_000)] + [case(10)] * 50
    out = batches(cases, 2)
    assert [i for b in out for i in b] == list(range(101))  # every case once, in order
    assert [50] in out  # the large one alone
    assert len(out) > 2


#: the peaks are bytes objects, written through (every page resident): no NumPy import in
#: either image, which cost each a tenth of a second of CPU
INHERITED_PEAK = """
import os, sys
a = b"\\x01" * 200_000_000  # a 200 MB peak in the image that execs the harness
del a
os.execv(sys.executable, [sys.executable, "-c", '''
from harness.execution import peak_memory
peak_memory.reset()
idle = peak_memory.peak_bytes()
peak_memory.reset()
b = b"\\x01" * 50_000_000  # 50 MB
del b
print(idle, peak_memory.peak_bytes())
'''])
"""


def test_peak_memory_ignores_the_peak_inherited_across_exec():
    """ru_maxrss keeps the peak of the image before exec (a test runner's): it must not leak in."""
    out = subprocess.run(
        [sys.executable, "-c", INHERITED_PEAK], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    idle, during = map(int, out.split())
    assert idle < 150e6, idle  # not the parent's 200 MB
    assert during > idle + 40e6, (idle, during)
