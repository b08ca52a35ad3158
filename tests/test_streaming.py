"""Large cases on the streaming path (harness/execution/streaming.py) give the results of the
plain path: the same statuses, messages, errors and test ratios, for conforming adapters and
for adapters that write to their inputs, return a wrong gradient or a malformed output.

The cases are small; the threshold and the block sizes are lowered so that they stream
through several blocks of rows (and several generated blocks)."""

from __future__ import annotations

import numpy as np
import pytest

from harness import CallInputs, Output
from harness.adapters.numpy_ref import NumpyAdapter
from harness.cases import generate
from harness.cases.loader import load_file
from harness.dtypes import carrier, cast, cast_into
from harness.execution import streaming
from harness.execution.compare import compare
from harness.execution.runner import run_one
from harness.oracle import cache, compiled, fast
from harness.oracle.error_model import RowBounds

CASES = """
defaults: {dtype: [float32, float64, bfloat16]}
cases:
  - name: mean
    why: scale
    expected: oracle
    logits: {generate: normal, shape: [37, 700], seed: 1, std: 3.0}
    target: {generate: labels, shape: [37], seed: 2, classes: 700, ignore_fraction: 0.2}
  - name: sum_weighted_smoothed
    why: scale
    expected: oracle
    logits: {generate: normal, shape: [29, 650], seed: 3}
    target: {generate: labels, shape: [29], seed: 4, classes: 650}
    weight: {generate: uniform, shape: [650], seed: 5, low: 0.5, high: 2.0}
    label_smoothing: 0.1
    reduction: sum
  - name: none_upstream
    why: scale
    expected: oracle
    logits: {generate: uniform, shape: [31, 600], seed: 6, low: -20, high: 20}
    target: {generate: labels, shape: [31], seed: 7, classes: 600}
    grad_output: {generate: normal, shape: [31], seed: 8}
    reduction: none
  - name: wide_rows
    why: scale
    expected: oracle
    logits: {generate: normal, shape: [5, 20000], seed: 9, std: 8.0}
    target: {generate: labels, shape: [5], seed: 10, classes: 20000}
"""


class Mutates(NumpyAdapter):
    name = "mutates"

    def run(self, inputs: CallInputs) -> Output:
        out = super().run(inputs)
        inputs.logits[3, :10] -= 1.0
        return out


class WrongGrad(NumpyAdapter):
    """Off by far more than rounding in one row, and by a few ulp everywhere else."""

    name = "wrong-grad"

    def run(self, inputs: CallInputs) -> Output:
        out = super().run(inputs)
        g = out.grad.astype(np.float64)
        g *= 1 + 4 * np.finfo(out.grad.dtype).eps
        row = min(7, g.shape[0] - 1)
        g[row] += 1e-3 * np.abs(g[row]).max()
        return Output(out.loss, cast(g, inputs.dtype))


class NanGrad(NumpyAdapter):
    name = "nan-grad"

    def run(self, inputs: CallInputs) -> Output:
        out = super().run(inputs)
        out.grad[-1, 5] = np.nan
        out.grad[2, 0] *= 2
        return out


class WrongGradDtype(NumpyAdapter):
    name = "wrong-grad-dtype"

    def run(self, inputs: CallInputs) -> Output:
        out = super().run(inputs)
        return Output(out.loss, out.grad.astype(np.float16))


class NoGrad(NumpyAdapter):
    name = "no-grad"

    def run(self, inputs: CallInputs) -> Output:
        return Output(super().run(inputs).loss, None)


class InPlace(NumpyAdapter):
    name = "in-place"
    inplace_backward = True

    def run(self, inputs: CallInputs) -> Output:
        out = super().run(inputs)
        inputs.logits[...] = out.grad
        return Output(out.loss, inputs.logits)


class LossOnly(NumpyAdapter):
    name = "loss-only"
    unsupported = frozenset({"grad"})


ADAPTERS = [
    NumpyAdapter(), Mutates(), WrongGrad(), NanGrad(), WrongGradDtype(), NoGrad(), InPlace(),
    LossOnly(),
]  # fmt: skip


def _fields(r) -> dict:
    d = r.to_dict()
    del d["seconds"], d["peak_rss_bytes"]
    return d


@pytest.fixture
def cases(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "big.yaml"
    path.write_text(CASES)
    return load_file(path)


def _run_all(cases, adapters=ADAPTERS) -> list[dict]:
    return [
        _fields(run_one(case, adapter, dtype))
        for case in cases
        for adapter in adapters
        for dtype in case.dtypes
    ]


@pytest.mark.parametrize("kernel", ["numpy", "compiled", "compiled-streaming"])
def test_streaming_gives_the_plain_paths_results(cases, monkeypatch, kernel):
    """``compiled``: the compiled oracle and bounds on these small cases, on both paths;
    ``compiled-streaming``: on the streaming path only, against NumPy on the plain one."""
    if kernel != "numpy" and not compiled.available():
        pytest.skip("numba is not installed (extra 'fast')")
    if kernel == "compiled":
        monkeypatch.setattr(compiled, "MIN_LOGITS", 1)
    plain = _run_all(cases)
    calls_bounds: list = []
    fused: list = []  # blocks checked in one compiled pass: whether every pair was within
    if kernel == "compiled-streaming":
        monkeypatch.setattr(compiled, "MIN_LOGITS", 1)
        kernels = compiled.bound_kernels
        monkeypatch.setattr(compiled, "bound_kernels", lambda: calls_bounds.append(1) or kernels())
        real_compare = RowBounds.compare_state

        def counted(self, *args):
            stats = real_compare(self, *args)
            fused.append(bool(stats[:, 0].all()))
            return stats

        monkeypatch.setattr(RowBounds, "compare_state", counted)
    assert not any(streaming.applies(c) for c in cases)
    monkeypatch.setattr(cache, "LARGE_ELEMENTS", 10_000)
    monkeypatch.setattr(streaming, "BLOCK_ELEMENTS", 3_000)
    monkeypatch.setattr(generate, "BLOCK_ELEMENTS", 2_000)
    assert all(streaming.applies(c) for c in cases)
    calls = []
    real = streaming.check_gradient
    monkeypatch.setattr(
        streaming, "check_gradient", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    kept = dict(streaming.stats)
    streamed = _run_all(cases)
    assert len(calls) > 20  # every result with a gradient went through the blocks
    assert streamed == plain
    # on the compiled kernels, the gradient computed while the logits were made was used
    # (``streaming.Ahead``) and decoded to the values kept
    used = streaming.stats["kept"] - kept["kept"]
    assert (used > 10) == (kernel != "numpy")
    assert streaming.stats["decode_mismatch"] == kept["decode_mismatch"]
    assert (len(calls_bounds) > 20) == (kernel == "compiled-streaming")
    # the fused pass decides the conforming blocks; the others go through ``compare``
    assert (set(fused) == {True, False}) == (kernel == "compiled-streaming")
    statuses = {(r["adapter"], r["status"]) for r in plain}
    # the faults are caught, and the conforming adapters conform
    for name, status in [
        ("numpy", "pass"), ("mutates", "error"), ("wrong-grad", "fail"), ("nan-grad", "fail"),
        ("wrong-grad-dtype", "error"), ("no-grad", "error"), ("in-place", "pass"),
        ("loss-only", "pass"),
    ]:  # fmt: skip
        assert statuses & {(name, s) for s in ("pass", "fail", "error")} == {(name, status)}
    mutated = next(r for r in streamed if r["adapter"] == "mutates")
    assert "modified its input 'logits' (10 of" in mutated["message"]


def test_streaming_keeps_only_the_loss_on_disk(cases, monkeypatch, tmp_path):
    monkeypatch.setattr(cache, "LARGE_ELEMENTS", 10_000)
    r = run_one(cases[0], NumpyAdapter(), "float32")
    assert r.status.value == "pass"
    files = sorted(p.name for p in (tmp_path / "cache").glob(f"*{cache.SUFFIX}"))
    assert len(files) == 1 and files[0].endswith(f"-loss{cache.SUFFIX}")
    stored = cache.read_arrays(tmp_path / "cache" / files[0])
    assert stored is not None and sorted(stored) == ["loss", "loss_bound"]
    # a loss-only adapter then needs no oracle pass at all
    before = dict(fast.stats)
    assert run_one(cases[0], LossOnly(), "float32").status.value == "pass"
    assert fast.stats["problems"] == before["problems"]


def test_blockwise_generation_gives_the_arrays_of_one_draw(monkeypatch):
    monkeypatch.setattr(generate, "BLOCK_ELEMENTS", 1_000)
    for spec in (
        {"generate": "normal", "shape": [33, 130], "seed": 4, "mean": 1.0, "std": 3.0},
        {"generate": "uniform", "shape": [17, 3, 41], "seed": 5, "low": -2.0, "high": 7.0},
        {"generate": "full", "shape": [9, 400], "value": 2.5},
        {"generate": "probabilities", "shape": [12, 300], "seed": 6},
    ):
        whole = generate.build(spec)
        blocks = list(generate.blocks(spec))
        assert len(blocks) > 1 or spec["generate"] == "probabilities"
        assert np.array_equal(np.concatenate(blocks).reshape(whole.shape), whole)
        for dtype in ("float32", "bfloat16", "float16"):
            made = generate.materialize_blockwise(
                spec, carrier(dtype), lambda b, rows, d=dtype: cast_into(b, d, rows)
            )  # fmt: skip
            want = cast(whole, dtype)  # the whole array's cast, bit for bit
            assert made.dtype == want.dtype and np.array_equal(
                made.view(np.uint8), want.view(np.uint8)
            )
    spec = {"generate": "normal", "shape": [30, 100], "seed": 1, "sha256": "0123456789abcdef"}
    with pytest.raises(generate.FingerprintMismatch):
        list(generate.blocks(spec))


def test_block_comparison_joins_blocks_like_one_comparison():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n, c = 9, 50
        e = rng.normal(size=(n, c)) * 10.0 ** rng.integers(-3, 3)
        b = np.abs(e) * 2.0**-24 + 1e-30
        g = e + rng.normal(size=(n, c)) * b * rng.choice([0.5, 3.0, 8.0])
        if trial % 3 == 0:
            e[rng.integers(n), rng.integers(c)] = np.nan
        if trial % 4 == 0:
            g[rng.integers(n), rng.integers(c)] = np.inf
        if trial % 5 == 0:
            g[rng.integers(n)] = e[rng.integers(n)]  # ties and swaps
        whole = compare(g, e, b, "float32", "grad", rtol=0.0, atol=0.0)
        joined = streaming.BlockComparison((n, c), "float32", "grad", 0.0, 0.0)
        order = rng.permutation(n)  # rows in any order
        for row in order:
            joined.add(int(row), g[row : row + 1], e[row : row + 1], b[row : row + 1])
        assert joined.result() == whole, trial


def test_blockwise_inputs_are_the_inputs(cases, monkeypatch):
    monkeypatch.setattr(generate, "BLOCK_ELEMENTS", 1_500)
    for case in cases:
        for dtype in ("float32", "bfloat16", "float16"):
            seen = []
            made = case.blockwise_inputs(dtype, on_block=seen.append)
            plain = case.inputs(dtype)
            assert made.logits.dtype == plain.logits.dtype
            assert np.array_equal(made.logits, plain.logits, equal_nan=True)
            assert len(seen) > 1 and sum(b.size for b in seen) == plain.logits.size
            digest = streaming.LogitsDigest()
            for block in seen:
                digest.add(block)
            assert digest.matches(made.logits)
            assert len(digest.crcs) == len(seen)  # one a block, checked on every core
            middle = made.logits.reshape(-1)[made.logits.size // 2 :]
            was = middle[0]
            middle[0] = was + 1  # a block in the middle
            assert not digest.matches(made.logits)
            middle[0] = was
            assert digest.matches(made.logits)
            made.logits[-1, -1] += 1
            assert not digest.matches(made.logits)
            assert not digest.matches(made.logits[:-1])  # fewer bytes


def test_the_numpy_reference_in_blocks_of_rows_gives_the_same_bits(cases, monkeypatch):
    """Blocks of one row against the whole array in one block: bit for bit, every output."""
    from harness.adapters import numpy_ref

    for case in cases:
        for dtype in ("float64", "float32", "bfloat16"):
            inputs = case.inputs(dtype)
            monkeypatch.setattr(numpy_ref, "BLOCK_ELEMENTS", 1)
            small = NumpyAdapter().run(inputs)
            monkeypatch.setattr(numpy_ref, "BLOCK_ELEMENTS", 1 << 30)
            whole = NumpyAdapter().run(inputs)
            for a, b in ((small.loss, whole.loss), (small.grad, whole.grad)):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert a.tobytes() == b.tobytes()


def test_preload_loads_the_kernels_the_streaming_path_calls(cases, monkeypatch):
    """``compiled.preload`` (run beside the generation) loads the argument types the compiled
    oracle and bounds are then called with, so that their first call loads nothing."""
    if not compiled.available():
        pytest.skip("numba is not installed (extra 'fast')")
    import numba

    from harness.oracle import _kernel

    names = (
        "row_chunk", "bound_shifts", "bound_rows", "bound_compare", "encode_deltas",
        "decode_deltas",
    )  # fmt: skip
    preloaded: set = set()
    called: set = set()
    loading: list = []  # non-empty while compiled.preload runs (a first call compiles too)
    for name in names:
        dispatcher = getattr(_kernel, name)
        real_compile = dispatcher.compile

        def record(sig, name=name, real_compile=real_compile):
            if loading:
                preloaded.add((name, tuple(sig)))
            return real_compile(sig)

        monkeypatch.setattr(dispatcher, "compile", record, raising=False)
    real_preload = compiled.preload

    def preload(*args):
        loading.append(1)
        try:
            real_preload(*args)
        finally:
            loading.clear()

    monkeypatch.setattr(compiled, "preload", preload)

    def watched(kernel, name):
        def call(*args):
            called.add((name, tuple(numba.typeof(a) for a in args)))
            return kernel(*args)

        call.compile = kernel.compile  # preload's, recorded above (``row_chunk`` is replaced)
        return call

    monkeypatch.setattr(_kernel, "row_chunk", watched(_kernel.row_chunk, "row_chunk"))
    monkeypatch.setattr(compiled, "bound_kernels", lambda: (
        watched(_kernel.bound_shifts, "bound_shifts"), watched(_kernel.bound_rows, "bound_rows"),
        watched(_kernel.bound_grad, "bound_grad"),
    ))  # fmt: skip
    monkeypatch.setattr(compiled, "fused_kernels", lambda: (
        watched(_kernel.bound_compare, "bound_compare"), _kernel.within
    ))  # fmt: skip
    monkeypatch.setattr(compiled, "delta_kernels", lambda: (
        watched(_kernel.encode_deltas, "encode_deltas"),
        watched(_kernel.decode_deltas, "decode_deltas"),
    ))  # fmt: skip
    monkeypatch.setattr(compiled, "MIN_LOGITS", 1)
    monkeypatch.setattr(cache, "LARGE_ELEMENTS", 10_000)
    for dtype in ("float32", "float64", "bfloat16"):
        assert run_one(cases[0], NumpyAdapter(), dtype).status.value == "pass"
    assert {name for name, _ in called} == set(names)
    assert called <= preloaded


#: a conforming adapter and two whose gradients fail (a wrong row, a NaN)
CONFORMING_AND_FAILING = [NumpyAdapter(), WrongGrad(), NanGrad()]


def _streamed(cases, monkeypatch) -> list[dict]:
    monkeypatch.setattr(compiled, "MIN_LOGITS", 1)
    monkeypatch.setattr(cache, "LARGE_ELEMENTS", 10_000)
    monkeypatch.setattr(streaming, "BLOCK_ELEMENTS", 3_000)
    monkeypatch.setattr(generate, "BLOCK_ELEMENTS", 2_000)
    return _run_all(cases, CONFORMING_AND_FAILING)


@pytest.mark.parametrize("fault", ["decode-mismatch", "encode-raises", "too-many-escapes"])
def test_a_gradient_kept_ahead_that_fails_is_computed_after_the_call(cases, monkeypatch, fault):
    """Whatever goes wrong with the gradient computed while the logits are made (a row that
    decodes otherwise, an error on the thread, more escapes than kept), the results are those
    of the plain path: the gradient is computed after the call instead."""
    if not compiled.available():
        pytest.skip("numba is not installed (extra 'fast')")
    from harness.oracle import deltas

    monkeypatch.setattr(compiled, "MIN_LOGITS", 1)
    plain = _run_all(cases, CONFORMING_AND_FAILING)
    if fault == "decode-mismatch":
        real_encode = deltas.Deltas.encode

        def off_by_one_step(self, lo, hi):
            real_encode(self, lo, hi)
            if lo == 0:
                self.deltas[0, 1] += 1  # row 0 no longer decodes to its entries

        monkeypatch.setattr(deltas.Deltas, "encode", off_by_one_step)
    elif fault == "encode-raises":

        def fails(self, lo, hi):
            raise RuntimeError("planted")

        monkeypatch.setattr(deltas.Deltas, "encode", fails)
    else:
        real_encode = deltas.Deltas.encode

        def escapes_past_the_limit(self, lo, hi):
            real_encode(self, lo, hi)
            self.usable = False  # as when more than deltas.MAX_ESCAPES entries escaped

        monkeypatch.setattr(deltas.Deltas, "encode", escapes_past_the_limit)
    before = dict(streaming.stats)
    assert _streamed(cases, monkeypatch) == plain
    mismatches = streaming.stats["decode_mismatch"] - before["decode_mismatch"]
    assert (mismatches > 0) == (fault == "decode-mismatch")
    if fault != "decode-mismatch":
        assert streaming.stats["kept"] == before["kept"]  # none was kept


def test_a_fingerprint_that_does_not_match_is_an_error_of_that_result(tmp_path, monkeypatch):
    """A large recipe whose values this NumPy does not make (its ``sha256`` differs) is an
    ``error`` of the result, found once the logits are made, while the gradient is being
    computed beside them; the thread beside is let go, not waited for."""
    from harness.cases import build

    monkeypatch.setenv("LOSSCONF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "FINGERPRINT_AT_LOAD", 1_000)  # checked when made, not loaded
    monkeypatch.setattr(compiled, "MIN_LOGITS", 1)
    monkeypatch.setattr(cache, "LARGE_ELEMENTS", 10_000)
    monkeypatch.setattr(generate, "BLOCK_ELEMENTS", 2_000)
    path = tmp_path / "wrong.yaml"
    path.write_text(
        CASES.split("  - name: sum_weighted_smoothed")[0].replace(
            "seed: 1, std: 3.0}", "seed: 1, std: 3.0, sha256: 0123456789abcdef}"
        )
    )
    (case,) = load_file(path)
    assert streaming.applies(case)
    stopped: list[bool] = []
    real_stop = streaming.Ahead.stop

    def stop(self, *, keep):
        stopped.append(keep)
        real_stop(self, keep=keep)

    monkeypatch.setattr(streaming.Ahead, "stop", stop)
    result = run_one(case, NumpyAdapter(), "float32")
    assert stopped == ([False] if compiled.available() else [])  # let go, not kept
    assert result.status.value == "error"
    assert "the case's inputs cannot be made" in result.message
    assert "fingerprint" in result.message
