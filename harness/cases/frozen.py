"""The built-in suite's loaded cases and expected values, frozen at development time.

Data flows one way, as in ONNX's backend tests: ``python tools/make_corpus.py --frozen``
loads each built-in case file with the loader, computes the expected values and error
bounds of its small problems with the oracle, and writes them beside the case files
(``cases/frozen/<file>.arrays``, shipped as package data). A first run on a machine then
reads them instead of parsing YAML, checking the schema and running the oracle.

They are used only when they are exactly what the code would compute now:

- only for a file of the installed built-in suite (``builtin_suite()``), never for a user's
  file, even one with the same bytes elsewhere, and only when the file's bytes, the
  ``require_expected`` flag and the limits in force (``harness.cases.limits``) are those
  they were made from: an edited built-in file is loaded by the loader;
- the error bounds (and the expected values, which travel with them) only when the
  machine's floating-point functions give the bits they gave where the data was made
  (``arithmetic()``: NumPy's version and a probe of the functions the bounds call, whose
  SIMD implementations differ in the last bit between NumPy versions and CPUs); else they
  are computed as without frozen data;
- ``tests/test_frozen_suite.py`` compares every frozen case and value with what the loader
  and the oracle compute now, bit for bit, so the data cannot go stale silently (a change
  to the loader or the oracle that changes a result fails it until the tool is run again).

The format is that of the expected-value cache (``harness.oracle.cache.write_arrays``):
a JSON document (stored as the bytes of the array ``doc``) describes the cases, with each
array a reference to a stored array; no pickle, so any NumPy and Python can read it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import platform
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from harness.atomic import write_atomic
from harness.cache_folder import cache_dir
from harness.cache_prune import after_write, used
from harness.cases import build, limits
from harness.cases.generate import materialize
from harness.cases.model import Case
from harness.oracle import cache as expected_cache
from harness.oracle.linear import LinearExpected
from harness.oracle.problem import Expected
from harness.source_revision import source_revision

FORMAT = 1
FOLDER = "frozen"
#: expected values of a problem are frozen when their arrays (values and bounds) hold at most
#: this many bytes: the small problems, whose oracle calls and bounds cost a few milliseconds
#: each; a large one's values are computed (the repository stays small)
MAX_EXPECTED_BYTES = 1 << 16
#: what a run reads (tests and benchmarks)
stats = {"files": 0, "expected": 0}
#: off: never read (tests of what a run computes without it)
enabled = True


@functools.lru_cache(maxsize=1)
def arithmetic() -> str:
    """A fingerprint of this machine's floating-point library as the error bounds use it:
    NumPy's version, the machine, and the bits of a probe of each kind of call the bounds
    make whose result may differ between machines: NumPy's exp, log, tanh, cosh, sqrt (SIMD
    and scalar paths: several lengths), its sums (pairwise, SIMD-dispatched), a matrix
    product (BLAS kernels) and Python's ``math`` functions. About a millisecond."""
    h = hashlib.sha256(f"{np.__version__} {platform.machine()}".encode())
    x = np.linspace(-30.0, 30.0, 1031) * np.pi
    positive = np.abs(x) + 1e-300
    probes: list[tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]] = [
        *((f, x) for f in (np.exp, np.tanh, np.cosh, np.expm1)),
        *((f, positive) for f in (np.log, np.sqrt, np.log1p)),
    ]
    for f, arg in probes:
        for n in (1, 3, 8, 17, 100, 1031):
            h.update(f(arg[:n]).tobytes())
    grid = np.sin(np.arange(64 * 96, dtype=np.float64)).reshape(64, 96) * 1e3
    for n in (1, 7, 16, 33, 96):
        h.update(grid[:, :n].sum(axis=1).tobytes() + grid[:n].sum(axis=0).tobytes())
        h.update(np.sum(grid[:, :n]).tobytes() + np.sum(x[: n * 10]).tobytes())
    h.update((grid[:16] @ grid[16:].T).tobytes() + (grid[:, :40].T @ grid[:, 40:]).tobytes())
    for v in x[::97].tolist():
        h.update(repr((math.exp(v), math.tanh(v), math.log(abs(v) + 1e-300))).encode())
    return h.hexdigest()[:16]


def frozen_path(path: Path, suite: Path) -> Path | None:
    """Where the frozen data of the built-in case file ``path`` lives, or None when ``path``
    is not a file of ``suite`` (the built-in suite's folder)."""
    try:
        relative = path.resolve().relative_to(suite.resolve())
    except ValueError:
        return None
    return suite / FOLDER / relative.with_suffix(expected_cache.SUFFIX)


def _context(data: bytes, require_expected: bool) -> dict:
    return {
        "format": FORMAT,
        "yaml_sha256": hashlib.sha256(data).hexdigest(),
        "require_expected": require_expected,
        "limits": repr(limits.current()),
    }


# -- encoding: JSON with tagged objects, arrays stored beside it ------------------------------


class _Encoder:
    """Case fields as JSON, arrays as references into one flat array per dtype (``blob-<dtype>``:
    a few stored arrays instead of thousands); equal arrays are stored once."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.blobs: dict[str, list[bytes]] = {}
        self.sizes: dict[str, int] = {}
        self.seen: dict[tuple, list] = {}

    def __call__(self, x: object) -> object:
        if x is None or type(x) in (bool, int, float, str):
            return x
        if type(x) is list:
            return [self(v) for v in x]
        if type(x) is tuple:
            return {"$tuple": [self(v) for v in x]}
        if type(x) is dict:
            assert all(type(k) is str for k in x), x
            return {"$dict": [[k, self(v)] for k, v in x.items()]}
        if type(x) is np.ndarray:
            return {"$array": self.array(x)}
        if isinstance(x, Path):
            assert x == self.file, (x, self.file)
            return {"$file": None}
        if type(x) in (Expected, LinearExpected):
            return {f"${type(x).__name__}": self.fields(x)}
        raise TypeError(f"{type(x).__name__} cannot be frozen: {x!r}")

    def array(self, a: np.ndarray) -> list:
        data = np.ascontiguousarray(a).tobytes()
        key = (a.dtype.str, a.shape, data)
        if key not in self.seen:
            kind = a.dtype.str
            self.blobs.setdefault(kind, []).append(data)
            start = self.sizes.get(kind, 0)
            self.sizes[kind] = start + a.size
            self.seen[key] = [kind, start, list(a.shape)]
        return self.seen[key]

    def fields(self, record: object) -> dict:
        """A dataclass's fields, less those at their default (the decoder gets them back)."""
        out = {}
        for f in dataclasses.fields(record):  # type: ignore[arg-type]
            value = getattr(record, f.name)
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            if type(value) is type(default) and repr(value) == repr(default):
                continue
            out[f.name] = self(value)
        return out

    def stored(self) -> dict[str, np.ndarray]:
        return {
            f"blob{kind}": np.frombuffer(b"".join(chunks), np.dtype(kind))
            for kind, chunks in self.blobs.items()
        }


def _decoder(file: Path, arrays: dict[str, np.ndarray]) -> Callable[[dict], Any]:
    """The ``object_hook`` that turns the JSON objects of a frozen document back into what
    ``_Encoder`` encoded: tagged objects (one key, starting with ``$``) become their value;
    others (a record's fields) stay mappings. Called innermost first, by the JSON parser."""
    blobs = {name[4:]: a for name, a in arrays.items() if name.startswith("blob")}
    for a in blobs.values():
        a.flags.writeable = False  # one array may stand for several equal fields
    records = {"$Expected": Expected, "$LinearExpected": LinearExpected}

    def decode(x: dict) -> Any:
        if len(x) != 1:
            return x
        ((tag, value),) = x.items()
        if tag == "$array":
            kind, start, shape = value
            return blobs[kind][start : start + math.prod(shape)].reshape(shape)
        if tag == "$tuple":
            return tuple(value)
        if tag == "$dict":
            return dict(value)
        if tag == "$file":
            return file
        if tag in records:
            return records[tag](**value)
        return x

    return decode


def _expected_bytes(record: object) -> int:
    return sum(v.nbytes for v in vars(record).values() if isinstance(v, np.ndarray))


def _too_large(case: Case) -> bool:
    """Whether the oracle's values of ``case`` surely exceed ``MAX_EXPECTED_BYTES`` (a gradient
    and its bound, float64, per input element): not worth computing to find out."""
    if case.expected is not None:
        return False  # literal values: bounding them is cheap; their size decides
    # a fused linear case: at least its classifier's gradient (V x H)
    elements = case.linear_size if case.fused else case.logits_size
    return 16 * elements > MAX_EXPECTED_BYTES


def _recipe_inputs(case: Case) -> list[tuple[dict, np.dtype | None]]:
    """The inputs of ``case`` that a recipe makes when used, with the dtype it is made in
    (their values come from NumPy's generator, whose tail draws go through the C library's
    log1p)."""
    floats = (case.logits_source, case.hidden_source, case.classifier_source, case.bias_source)
    made: list[tuple[dict, np.dtype | None]] = [
        (s, np.dtype(np.float64)) for s in floats if isinstance(s, dict)
    ]
    if isinstance(case.target_source, dict):
        made.append((case.target_source, None))
    return made


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(f"{a.dtype.str} {a.shape}".encode() + a.tobytes()).hexdigest()[:32]


@contextlib.contextmanager
def _recording_recipes(made: list) -> Iterator[None]:
    """Record every array a recipe makes while loading (``harness.cases.build``: the weights
    and upstream gradients it holds as arrays, and the fingerprint checks of small recipes):
    ``[recipe, dtype, digest of the array]``."""
    original = build.materialize

    def recorded(spec: dict, dtype: DTypeLike | None) -> np.ndarray:
        a = original(spec, dtype)
        made.append([spec, None if dtype is None else np.dtype(dtype).str, _digest(a)])
        return a

    build.materialize = recorded  # type: ignore[assignment]
    try:
        yield
    finally:
        build.materialize = original


def _recipes_match(made: list) -> bool:
    """Whether this machine's generator makes the arrays it made where the data was frozen."""
    for spec, dtype, digest in made:
        try:
            if _digest(materialize(spec, None if dtype is None else np.dtype(dtype))) != digest:
                return False
        except ValueError:  # a fingerprint that no longer matches: the loader reports it
            return False
    return True


def _recipes_checked(context: bytes, *, mark: bool = False) -> bool:
    """Whether this machine made a frozen file's recipe arrays as recorded, in an earlier run
    (``mark``: record that it did): an empty file in ``<cache dir>/frozen/`` named by the
    frozen context, NumPy's and Python's versions and ``harness.source_revision``, the key of
    the load cache's entries (``harness.cases.load_cache``), which rest on the same arrays.
    Re-making them costs about 0.1 s for the built-in suite; looking for the file, a stat."""
    folder = cache_dir()
    if folder is None:
        return False
    key = hashlib.sha256(context)
    key.update(f"{np.__version__} {sys.version} {source_revision()}".encode())
    marker = folder / FOLDER / key.hexdigest()[:32]
    if not mark:
        if not marker.is_file():
            return False
        used(marker)
        return True
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(marker, b"")
    except OSError:  # an unwritable folder: checked again next time
        return True
    after_write(folder)
    return True


def freeze(
    path: Path, load: Callable[[Path], list[Case]], *, require_expected: bool = True
) -> tuple[dict[str, np.ndarray], list[Case]]:
    """The frozen data of one valid case file (named arrays for ``write_arrays``) and its
    cases, as ``load(path)`` (the loader) makes them. Computes the expected values of its
    small problems with the oracle, in every dtype the case runs in; the inputs of those a
    recipe makes are recorded with the arrays the loader made (``_recipes_match``)."""
    made: list = []
    with _recording_recipes(made):
        cases = load(path)
    encode = _Encoder(path)
    encoded_cases = [encode.fields(case) for case in cases]
    expected = []
    for index, case in enumerate(cases):
        if case.expect_error is not None or _too_large(case):
            continue
        # inputs a recipe makes: recorded like the loader's, so a machine whose generator
        # makes other bits reads none of this file
        for spec, made_in in _recipe_inputs(case):
            array = materialize(spec, made_in)
            made.append([spec, None if made_in is None else made_in.str, _digest(array)])
        for dtype in case.dtypes:
            record: Expected | LinearExpected
            if case.fused:
                kind, record = "linear", case.linear_expected_for(dtype)
            else:
                kind = "oracle" if case.expected is None else "literal"
                record = case.expected_for(dtype)
            if _expected_bytes(record) <= MAX_EXPECTED_BYTES:
                expected.append([index, dtype, kind, encode(record)])
    context = {
        **_context(path.read_bytes(), require_expected),
        "arithmetic": arithmetic(),
        "recipes": made,
    }
    doc = {"cases": encoded_cases, "expected": expected}
    arrays = {
        "context": np.frombuffer(json.dumps(context).encode(), np.uint8),
        "doc": np.frombuffer(json.dumps(doc, separators=(",", ":")).encode(), np.uint8),
        **encode.stored(),
    }
    return arrays, cases


#: {built-in file: (the digest of its frozen arrays, its document decoded)}: a process that
#: loads a file again (the API, the pytest plugin, a test suite) decodes its document once,
#: which was most of a load's time. What the document holds is shared by the cases of every
#: load and never changed: its arrays are read-only, Expected records frozen, and a Case
#: keeps what it computes in its own ``__dict__``
_decoded: dict[Path, tuple[bytes, dict]] = {}


def _document(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    """The frozen document of ``path`` decoded (``_decoder``), from ``_decoded`` when its
    arrays are the same bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).data)
    key = digest.digest()
    known = _decoded.get(path)
    if known is not None and known[0] == key:
        return known[1]
    doc = json.loads(arrays["doc"].tobytes(), object_hook=_decoder(path, arrays))
    _decoded[path] = (key, doc)
    return doc


def read(path: Path, suite: Path, *, require_expected: bool = True) -> list[Case] | None:
    """The cases of the built-in file ``path`` from its frozen data, or None when there is
    none or it does not match (see the module's docstring). Expected values that match this
    machine's arithmetic are handed to the expected-value cache (and literal values' bounds
    to their case), so the oracle does not compute them."""
    where = frozen_path(path, suite) if enabled else None
    if where is None or not where.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    arrays = expected_cache.read_arrays(where)
    if arrays is None or not {"context", "doc"} <= arrays.keys():
        return None
    context = json.loads(arrays["context"].tobytes())
    if any(context.get(k) != v for k, v in _context(data, require_expected).items()):
        return None
    if context["recipes"] and not _recipes_checked(arrays["context"].tobytes()):
        if not _recipes_match(context["recipes"]):  # the arrays the loader makes differ here
            return None
        _recipes_checked(arrays["context"].tobytes(), mark=True)
    doc = _document(path, arrays)
    cases = [Case(**fields) for fields in doc["cases"]]
    if context["arithmetic"] == arithmetic():
        for index, dtype, kind, value in doc["expected"]:
            case = cases[index]
            if kind == "literal":
                case.__dict__.setdefault("_bounded", {})[dtype] = value
            elif kind == "linear":
                expected_cache.remember_linear(case.content_hash, dtype, value)
            else:
                expected_cache.remember(case.content_hash, dtype, value)
            stats["expected"] += 1
    stats["files"] += 1
    return cases
