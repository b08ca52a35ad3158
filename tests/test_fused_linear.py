"""Fused linear cross-entropy (issue 16 item 2, docs/fused-linear.md): the exact matrix
product, the oracle against independent computations, the case format's errors, the runner's
checks of the three gradients, the reference adapters and the mutants."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import load_cases
from harness.adapters import Adapter, LinearCallInputs, LinearOutput
from harness.adapters.numpy_ref import NumpyAdapter
from harness.cases.loader import builtin_suite
from harness.errors import CaseFileError
from harness.execution.results import Status
from harness.execution.runner import run_one
from harness.oracle.exact_matmul import exact_matmul
from harness.oracle.lazy_mpmath import mpmath
from harness.oracle.linear import LinearProblem, fused_linear_cross_entropy
from tests.mutants.linear import (
    LINEAR_MUTANTS,
    ClassifierGradMissesIgnoredMask,
    LinearStepwise,
    LogitsAccumulatedInDtype,
)
from tests.mutants.score import first_kill
from tests.mutants.stepwise import Stepwise

FUSED_FILE = builtin_suite() / "fused_linear.yaml"


@pytest.fixture(scope="module")
def fused_cases():
    return load_cases([FUSED_FILE])


def _exact_product(a: np.ndarray, b: np.ndarray) -> list[list[Fraction]]:
    fa = [[Fraction(float(v)) for v in row] for row in a]
    fb = [[Fraction(float(v)) for v in row] for row in b.T]
    return [[sum((x * y for x, y in zip(r, c, strict=True)), Fraction(0)) for c in fb] for r in fa]


# -- the exact matrix product -----------------------------------------------------------------


def test_exact_matmul_of_float32_values_is_exact():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 200)).astype(np.float32).astype(np.float64)
    b = (rng.normal(size=(200, 4)) * np.exp(rng.normal(size=(200, 4)) * 3)).astype(np.float32)
    b = b.astype(np.float64)
    hi, lo, bound = exact_matmul(a, b)
    exact = _exact_product(a, b)
    assert not bound.any()
    for i in range(3):
        for j in range(4):
            assert Fraction(float(hi[i, j])) + Fraction(float(lo[i, j])) == exact[i][j]
    # and the plain float64 product is not (the test can fail)
    plain = a @ b
    assert any(Fraction(float(plain[i, j])) != exact[i][j] for i in range(3) for j in range(4))


def test_exact_matmul_of_wide_float64_values_is_within_its_bound():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 64)) * np.exp(rng.normal(size=(2, 64)) * 20)
    b = rng.normal(size=(64, 3))
    hi, lo, bound = exact_matmul(a, b)
    exact = _exact_product(a, b)
    for i in range(2):
        for j in range(3):
            size = sum(
                abs(Fraction(float(x)) * Fraction(float(y)))
                for x, y in zip(a[i], b[:, j], strict=True)
            )
            err = abs(Fraction(float(hi[i, j])) + Fraction(float(lo[i, j])) - exact[i][j])
            assert err <= Fraction(float(bound[i, j])) + size / 2**100


# -- the oracle -------------------------------------------------------------------------------


def test_oracle_matches_an_independent_200_bit_computation():
    """Loss and the three gradients from exact rational logits and a 200-bit softmax."""
    rng = np.random.default_rng(2)
    h = rng.normal(size=(4, 5)).astype(np.float32).astype(np.float64)
    w = rng.normal(size=(6, 5)).astype(np.float32).astype(np.float64)
    b = rng.normal(size=6).astype(np.float32).astype(np.float64)
    t = np.array([2, -100, 5, 0])
    got = fused_linear_cross_entropy(LinearProblem(h, w, b, t)).expected
    with mpmath.workprec(200):
        z = [
            [mpmath.mpf(row[v]) + mpmath.mpf(float(b[v])) for v in range(6)]
            for row in _mp_rows(_exact_product(h, w.T))
        ]
        kept = [n for n in range(4) if t[n] != -100]
        g = [[mpmath.mpf(0)] * 6 for _ in range(4)]
        total = mpmath.mpf(0)
        for n in kept:
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z[n]))
            total += lse - z[n][t[n]]
            for v in range(6):
                g[n][v] = (mpmath.exp(z[n][v] - lse) - (v == t[n])) / len(kept)
        loss = total / len(kept)
        # each gradient element: (exact value, sum of the magnitudes of its terms)
        gh = [[_sums(g[n][v] * w[v, k] for v in range(6)) for k in range(5)] for n in range(4)]
        gw = [[_sums(g[n][v] * h[n, k] for n in range(4)) for k in range(5)] for v in range(6)]
        gb = [[_sums(g[n][v] for n in range(4))] for v in range(6)]
    # the guarantee (docs/fused-linear.md): within one float64 rounding of the value plus one
    # of the magnitudes of its terms (G is rounded to float64 before the chain rule)
    u = 2.0**-53
    assert abs(float(got.loss) - float(loss)) <= 2 * u * abs(float(loss))
    for name, want in (("grad_hidden", gh), ("grad_classifier", gw), ("grad_bias", gb)):
        value = getattr(got, name).reshape(len(want), -1)
        for i, row in enumerate(want):
            for j, (exact, size) in enumerate(row):
                assert abs(value[i, j] - float(exact)) <= u * (abs(float(exact)) + float(size)), (
                    name, i, j,
                )  # fmt: skip
    assert np.all(got.grad_hidden[1] == 0.0)  # the ignored position


def _sums(terms) -> tuple:
    terms = list(terms)
    return mpmath.fsum(terms), mpmath.fsum(abs(x) for x in terms)


def _mp_rows(rows: list[list[Fraction]]) -> list[list]:
    return [[mpmath.mpf(x.numerator) / x.denominator for x in r] for r in rows]


def test_oracle_matches_torch_float64_autograd_on_sequences_with_a_shift():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    h = rng.normal(size=(2, 5, 4))
    w = rng.normal(size=(7, 4))
    t = np.array([[1, 4, 2, 6, 0], [3, 3, 1, -100, -100]])
    p = LinearProblem(h, w, None, np.concatenate([t[:, 1:], np.full((2, 1), -100)], axis=1),
                      label_smoothing=0.1, reduction="sum")  # fmt: skip
    got = fused_linear_cross_entropy(p).expected
    th, tw = torch.tensor(h, requires_grad=True), torch.tensor(w, requires_grad=True)
    logits = (th @ tw.T)[:, :-1].reshape(-1, 7)
    loss = torch.nn.functional.cross_entropy(
        logits, torch.tensor(t[:, 1:]).reshape(-1), label_smoothing=0.1, reduction="sum"
    )
    loss.backward()
    assert float(got.loss) == pytest.approx(loss.item(), rel=1e-13)
    np.testing.assert_allclose(got.grad_hidden, th.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.grad_classifier, tw.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert got.grad_bias is None


def test_every_corpus_case_has_a_negligible_oracle_error(fused_cases):
    """The splitting's truncation bound is 0 or far below the smallest tolerance."""
    for case in fused_cases:
        for dtype in ("float64", "bfloat16"):
            e = case.linear_expected_for(dtype)
            smallest = min(float(np.min(getattr(e, f"{n}_bound"))) for n in e.GRADIENTS
                           if getattr(e, n) is not None)  # fmt: skip
            assert e.oracle_error <= 2**-30 * smallest, (case.id, dtype, e.oracle_error)


# -- the reference adapters and the mutants ----------------------------------------------------


def _failures(adapter: Adapter, cases, dtypes=None) -> list[str]:
    out = []
    for case in cases:
        for dtype in case.dtypes if dtypes is None else dtypes:
            r = run_one(case, adapter, dtype)
            if r.status is not Status.PASS:
                out.append(f"{case.id} [{dtype}] {r.status}: {r.message}")
    return out


def test_numpy_and_the_float32_accumulating_stepwise_conform(fused_cases):
    assert _failures(NumpyAdapter(), fused_cases) == []
    assert _failures(LinearStepwise(), fused_cases) == []


def test_torch_conforms_on_every_fused_case(fused_cases):
    pytest.importorskip("torch")
    from harness.execution.registry import load

    assert _failures(load("torch"), fused_cases) == []


@pytest.mark.parametrize("mutant", LINEAR_MUTANTS, ids=lambda m: m.name)
def test_the_fused_cases_kill_every_linear_mutant(mutant, fused_cases):
    kill = first_kill(mutant(), fused_cases)
    assert kill.case_id is not None, f"{mutant.name} survived: {mutant.__doc__}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_ignored_row_mutant_fails_many_cases(fused_cases, dtype):
    killed = [c.name for c in fused_cases if not run_one(c, ClassifierGradMissesIgnoredMask(),
                                                          dtype).conforming]  # fmt: skip
    assert len(killed) >= 5, killed


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_in_dtype_accumulation_fails_where_float32_accumulation_passes(fused_cases, dtype):
    (case,) = [c for c in fused_cases if c.name == "long_dot_products_4096"]
    assert run_one(case, LogitsAccumulatedInDtype(), dtype).status is Status.FAIL
    assert run_one(case, LinearStepwise(), dtype).status is Status.PASS


# -- the runner --------------------------------------------------------------------------------


def _one(fused_cases, name: str = "mean_with_bias"):
    return next(c for c in fused_cases if c.name == name)


def test_fused_linear_is_opt_in(fused_cases):
    class Plain(Adapter):
        name = "plain"

    r = run_one(_one(fused_cases), Plain(), "float32")
    assert r.status is Status.UNSUPPORTED
    assert "fused_linear: not in the adapter's 'supports'" in r.message
    # an adapter that opts in without implementing run_linear is unsupported, not failed
    r = run_one(_one(fused_cases), Stepwise(), "float32")
    assert r.status is Status.UNSUPPORTED and "NotImplementedError" in r.message


class _Tweaked(LinearStepwise):
    """LinearStepwise with its output changed by ``tweak``."""

    def __init__(self, tweak) -> None:
        self.tweak = tweak

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        return self.tweak(inputs, super().run_linear(inputs))


@pytest.mark.parametrize(
    ("tweak", "message"),
    [
        (lambda i, o: dataclasses.replace(o, grad_bias=None), "grad_bias is None"),
        (lambda i, o: dataclasses.replace(o, grad_classifier=o.grad_classifier.T),
         "grad_classifier has shape (3, 5), expected (5, 3)"),
        (lambda i, o: o.loss, "expected adapters.LinearOutput"),
    ],
)  # fmt: skip
def test_bad_outputs_are_errors(fused_cases, tweak, message):
    r = run_one(_one(fused_cases), _Tweaked(tweak), "float32")
    assert r.status is Status.ERROR and message in r.message, r.message


def test_a_bias_gradient_without_a_bias_is_an_error(fused_cases):
    def add_bias(inputs, out):
        return dataclasses.replace(out, grad_bias=np.zeros(5, dtype=np.float32))

    r = run_one(_one(fused_cases, "mean_without_bias"), _Tweaked(add_bias), "float32")
    assert r.status is Status.ERROR and "the case has no bias" in r.message


def test_a_written_classifier_is_an_error(fused_cases):
    def scribble(inputs, out):
        inputs.classifier[0, 0] += 1.0
        return out

    r = run_one(_one(fused_cases), _Tweaked(scribble), "float32")
    assert r.status is Status.ERROR and "'classifier' (1 of 15 elements)" in r.message


def test_a_wrong_classifier_gradient_names_the_element(fused_cases):
    def off(inputs, out):
        g = out.grad_classifier.copy()
        g[4, 2] += 0.01
        return dataclasses.replace(out, grad_classifier=g)

    r = run_one(_one(fused_cases), _Tweaked(off), "float32")
    assert r.status is Status.FAIL and r.message.startswith("grad_classifier[4, 2]: expected")
    assert r.grad_errors is not None and r.grad_errors.max_ratio > 1


# -- the case format ---------------------------------------------------------------------------


def _load(tmp_path: Path, fields: str):
    path = tmp_path / "f.yaml"
    path.write_text("cases:\n  - name: c\n    why: test\n    expected: oracle\n" + fields)
    return load_cases([path])


BASE = (
    "    hidden: [[1.0, 2.0], [0.5, -1.0]]\n    classifier: [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]\n"
)


@pytest.mark.parametrize(
    ("fields", "field", "start"),
    [
        ("    hidden: [[1.0, 2.0]]\n    classifier: [[1.0, 0.0, 2.0]]\n    target: [0]\n",
         "classifier", "shape (1, 3), expected (V, 2)"),
        (BASE + "    bias: [0.0, 1.0]\n    target: [0, 1]\n", "bias", "shape (2,), expected (3,)"),
        (BASE + "    target: [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]\n", "target", "probabilities"),
        (BASE + "    target: [0, 3]\n", "target", "class index 3 outside [0, 3)"),
        (BASE + "    logits: [[1.0, 2.0, 3.0]]\n    target: [0, 1]\n", "logits", "a fused linear"),
        ("    hidden: [[1.0, 2.0]]\n    target: [0]\n", "classifier", "missing"),
        (BASE + "    target: [0, 1]\n    shift: 2\n", "shift", "2 must be below the sequence"),
        (BASE + "    target: [0, 1]\n    reduction: none\n    grad_output: [1.0]\n",
         "grad_output", "shape (1,), expected the loss shape (2,)"),
    ],
)  # fmt: skip
def test_case_errors_name_the_field(tmp_path, fields, field, start):
    with pytest.raises(CaseFileError) as info:
        _load(tmp_path, fields)
    assert info.value.field == field and info.value.detail.startswith(start), info.value.detail


def test_literal_expected_values_are_refused(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("cases:\n  - name: c\n    why: test\n" + BASE + "    target: [0, 1]\n"
                    "    expected: {loss: 1.0}\n")  # fmt: skip
    with pytest.raises(CaseFileError, match="takes 'expected: oracle'"):
        load_cases([path])


def test_sequences_take_the_loss_shape_of_the_target(tmp_path):
    (case,) = _load(
        tmp_path,
        "    hidden: [[[1.0, 2.0], [0.5, -1.0], [0.0, 1.0]]]\n"
        "    classifier: [[1.0, 0.0], [0.0, 1.0]]\n    target: [[0, 1, 1]]\n"
        "    reduction: none\n    shift: 1\n",
    )
    e = case.linear_expected_for("float32")
    assert e.loss.shape == (1, 3) and e.loss[0, 2] == 0.0 and e.grad_hidden.shape == (1, 3, 2)
    assert np.all(e.grad_hidden[0, 2] == 0.0)
    assert case.features() >= {"fused_linear", "shift", "reduction_none"}


# -- the pairwise set and the coverage table -----------------------------------------------------

LINEAR_PAIRWISE_FILE = builtin_suite() / "generated" / "fused_linear_pairwise.yaml"


def test_fused_linear_pairwise_file_is_what_the_generator_writes(tmp_path):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "tools" / "make_corpus.py"
    spec = importlib.util.spec_from_file_location("make_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    written = module.write_linear_pairwise(tmp_path / "out")
    assert written.read_text() == LINEAR_PAIRWISE_FILE.read_text(), "python tools/make_corpus.py"


def test_the_built_in_suite_covers_every_feasible_fused_linear_pair():
    from harness.cases import coverage
    from harness.cases.loader import load_paths

    rows, _ = coverage.rows_of(load_paths().cases)
    result = coverage.linear_pair_coverage(rows)
    assert [f"{pc.b}={vb}+{va}" for pc in result for va, vb in pc.missing] == []
    assert [pc.contradicting for pc in result if pc.contradicting] == []
    assert sum(len(pc.feasible) for pc in result) == 84


def test_a_fused_case_is_classified_by_the_logits_it_makes(tmp_path):
    from harness.cases import coverage

    (case,) = _load(
        tmp_path,
        "    hidden: [[[1.0, 2.0], [0.5, -1.0], [0.0, 1.0]]]\n"
        "    classifier: [[1.0, 0.0], [0.0, 1.0]]\n    target: [[0, 1, 1]]\n    shift: 1\n",
    )
    row = coverage.classify(case)
    assert (row["shape"], row["classes"], row["ignored"], row["shift"]) == ("N>1", "2", "some", "1")


def test_reference_adapters_pass_the_fused_pairwise_cases():
    cases = load_cases([LINEAR_PAIRWISE_FILE])
    assert _failures(NumpyAdapter(), cases) == []
    assert _failures(LinearStepwise(), cases) == []


# -- the bound's soundness ----------------------------------------------------------------------


class _LogitsOffByTheirBound(LinearStepwise):
    """A correct implementation whose logits are off by up to the whole error the model allows
    a correct matmul (``logit_error``, a random fraction of it with a random sign), then
    rounded to the dtype; the rest as LinearStepwise (float32 accumulation, G stored)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        from harness.oracle.linear import logits_of
        from harness.oracle.linear_bounds import logit_error

        p = LinearProblem.of_call(inputs)
        z, _ = logits_of(p)
        self._z = z + self.rng.uniform(-1.0, 1.0, z.shape) * logit_error(p, inputs.dtype, z)
        return super().run_linear(inputs)

    def logits(self, rows, w, b, dtype):
        from harness.dtypes import cast

        return cast(self._z, dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 4),
    h=st.integers(1, 48),
    v=st.integers(2, 9),
    dtype=st.sampled_from(["float64", "float32", "float16", "bfloat16"]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    smoothing=st.sampled_from([0.0, 0.2]),
    softcap=st.sampled_from([None, 3.0]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_an_implementation_using_the_allowed_logit_error_conforms(
    tmp_path_factory, n, h, v, dtype, reduction, smoothing, softcap, bias, seed
):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, v, n)
    target[rng.random(n) < 0.25] = -100
    fields = [
        f"    hidden: {_flow(rng.normal(size=(n, h)))}",
        f"    classifier: {_flow(rng.normal(size=(v, h)) * 0.5)}",
        f"    target: {target.tolist()}",
        f"    reduction: {reduction}",
        f"    label_smoothing: {smoothing}",
        f"    dtype: {dtype}",
    ]
    if bias:
        fields.append(f"    bias: {_flow(rng.normal(size=v) * 0.25)}")
    if softcap is not None:
        fields.append(f"    softcap: {softcap}")
    (case,) = _load(tmp_path_factory.mktemp("f"), "\n".join(fields) + "\n")
    r = run_one(case, _LogitsOffByTheirBound(seed), dtype)
    assert r.status is Status.PASS, r.message


def _flow(a: np.ndarray) -> str:
    """A nested YAML list with fixed-point numbers (YAML reads 9e-05 as text)."""
    if a.ndim == 1:
        return "[" + ", ".join(f"{x:.6f}" for x in a) + "]"
    return "[" + ", ".join(_flow(row) for row in a) + "]"


def test_the_repro_snippet_of_a_fused_case_runs(fused_cases, capsys):
    from harness.reports.repro import snippet

    exec(snippet(_one(fused_cases), "numpy", "float32"), {})
    out = capsys.readouterr().out
    assert "loss" in out and "max |grad_classifier - expected|" in out
