"""The kernel authors' fields (issue 16, docs/kernel-features.md): softcap, logit_scale, z_loss,
return_z_loss and shift in the case format, the oracle, the error model, the reference
adapters, the runner (opt-in support, the returned z-loss, in-place backward), the mutants
and the coverage table. Everything in process; the oracle's values are checked against
independent formulas and finite differences."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness import Adapter, CallInputs, Output, load_cases
from harness.adapters import KERNEL_FEATURES
from harness.adapters.numpy_ref import NumpyAdapter
from harness.cases import coverage
from harness.cases.loader import builtin_suite, load_paths
from harness.errors import CaseFileError
from harness.execution.results import Status
from harness.execution.runner import run_one
from harness.oracle import cross_entropy
from harness.oracle.exact import cross_entropy_mpmath
from harness.oracle.problem import Problem, shift_target
from tests.mutants.bugs import ShiftOffByOne, SoftcapWithoutOuterScale, ZLossMeanOverN
from tests.mutants.score import first_kill
from tests.mutants.stepwise import Stepwise

KERNEL_FILE = builtin_suite() / "kernel.yaml"
PAIRWISE_FILE = builtin_suite() / "generated" / "kernel_pairwise.yaml"

X = np.array([[0.5, -1.25, 3.0, 0.75], [1.5, 0.25, -2.75, 1.0], [-2.0, 0.75, 0.25, -0.25]])


@pytest.fixture(scope="module")
def kernel_cases():
    return load_cases([KERNEL_FILE])


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "k.yaml"
    path.write_text("cases:\n" + body)
    return path


def _case(tmp_path: Path, **fields) -> object:
    lines = ["  - name: c", "    why: test", "    expected: oracle"]
    lines += [f"    {k}: {v}" for k, v in fields.items()]
    (case,) = load_cases([_write(tmp_path, "\n".join(lines) + "\n")])
    return case


# -- the oracle ------------------------------------------------------------------------------


def _plain_ce(z: np.ndarray, t: np.ndarray, ignore: int = -100) -> tuple[np.ndarray, np.ndarray]:
    """Per-position loss and lse of float64 rows (an independent float64 formula)."""
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    keep = t != ignore
    safe = np.where(keep, t, 0)
    return np.where(keep, lse - z[np.arange(len(t)), safe], 0.0), lse


def test_softcap_and_logit_scale_are_the_loss_of_s_tanh_a_x_over_s():
    t = np.array([2, 0, 1])
    r = cross_entropy(Problem(X, t, False, softcap=2.0, logit_scale=1.5, reduction="none"))
    loss, _ = _plain_ce(2.0 * np.tanh(1.5 * X / 2.0), t)
    np.testing.assert_allclose(r.loss, loss, rtol=1e-14)
    # the scale comes first: capping first gives another value
    other, _ = _plain_ce(1.5 * 2.0 * np.tanh(X / 2.0), t)
    assert np.abs(r.loss - other).max() > 0.1


def test_z_loss_adds_c_lse_squared_and_a_mean_divides_by_the_kept_count_not_the_weights():
    t = np.array([2, -100, 1])
    w = np.array([0.25, 2.0, 3.0, 1.0])
    p = Problem(X, t, False, weight=w, z_loss=0.5, return_z_loss=True)
    r = cross_entropy(p)
    per_pos, lse = _plain_ce(X, t)
    keep = t != -100
    ce_mean = (w[np.where(keep, t, 0)] * per_pos * keep).sum() / w[t[keep]].sum()
    z_mean = (0.5 * lse[keep] ** 2).sum() / keep.sum()
    assert float(r.loss) == pytest.approx(ce_mean + z_mean, rel=1e-14)
    assert float(r.z_loss) == pytest.approx(z_mean, rel=1e-14)


@pytest.mark.parametrize(
    "fields",
    [
        {"softcap": 1.5},
        {"logit_scale": 0.75, "softcap": 2.0, "z_loss": 0.25},
        {"z_loss": 0.5, "label_smoothing": 0.2, "weight": np.array([0.5, 2.0, 1.5, 1.0])},
    ],
    ids=["softcap", "all", "z_loss_smoothing_weights"],
)
def test_gradient_is_the_derivative_of_the_loss(fields):
    t = np.array([2, -100, 1])
    kw = {"reduction": "mean", **fields}
    r = cross_entropy(Problem(X, t, False, **kw))
    h = 1e-6
    for i, j in [(0, 0), (0, 2), (2, 1), (2, 3), (1, 0)]:
        up, down = X.copy(), X.copy()
        up[i, j] += h
        down[i, j] -= h
        numeric = (
            float(cross_entropy(Problem(up, t, False, **kw), want_grad=False).loss)
            - float(cross_entropy(Problem(down, t, False, **kw), want_grad=False).loss)
        ) / (2 * h)
        assert r.grad[i, j] == pytest.approx(numeric, abs=1e-8), (i, j)


def test_softcap_makes_infinite_logits_finite_with_zero_gradient():
    x = np.array([[np.inf, 1.0, -np.inf, 2.0]])
    r = cross_entropy(Problem(x, np.array([1]), False, softcap=30.0))
    z = np.array([[30.0, 30 * np.tanh(1 / 30), -30.0, 30 * np.tanh(2 / 30)]])
    assert float(r.loss) == pytest.approx(float(_plain_ce(z, np.array([1]))[0][0]), rel=1e-14)
    assert r.grad[0, 0] == 0.0 and r.grad[0, 2] == 0.0 and np.all(np.isfinite(r.grad))


def test_z_loss_with_every_target_ignored():
    t = np.array([-100, -100])
    mean = cross_entropy(Problem(X[:2], t, False, z_loss=0.25, return_z_loss=True))
    assert math.isnan(float(mean.loss)) and math.isnan(float(mean.z_loss))
    assert np.all(mean.grad == 0.0)
    total = cross_entropy(
        Problem(X[:2], t, False, z_loss=0.25, return_z_loss=True, reduction="sum")
    )
    assert float(total.loss) == 0.0 and float(total.z_loss) == 0.0


def test_kernel_problems_go_to_mpmath_and_plain_ones_stay_identical():
    t = np.array([2, 0, 1])
    kernel = Problem(X, t, False, softcap=3.0)
    a, b = cross_entropy(kernel), cross_entropy_mpmath(kernel)
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.grad, b.grad)
    plain = Problem(X, t, False, label_smoothing=0.1)
    c, d = cross_entropy(plain), cross_entropy_mpmath(plain)
    assert np.array_equal(c.loss, d.loss) and np.array_equal(c.grad, d.grad)
    assert c.z_loss is None


def test_shift_target_moves_targets_back_and_ignores_the_end():
    t = np.array([[5, 6, 7, 8], [1, 2, 3, 4]])
    assert shift_target(t, 1, -100).tolist() == [[6, 7, 8, -100], [2, 3, 4, -100]]
    assert shift_target(t, 3, 0).tolist() == [[8, 0, 0, 0], [4, 0, 0, 0]]
    assert shift_target(t, 0, -100) is t


def test_shift_equals_the_hand_shifted_target(tmp_path):
    logits = [[0.5, -1.25, 3.0], [1.5, 0.25, -2.75], [-2.0, 0.75, 0.25], [3.5, 2.0, 2.5]]
    shifted = _case(tmp_path, logits=logits, target=[0, 2, 1, 0], shift=1)
    by_hand = Problem(np.array(logits), np.array([2, 1, 0, -100]), False)
    for dtype in ("float64", "float32"):
        a = shifted.expected_for(dtype)
        b = cross_entropy(dataclasses.replace(by_hand, logits=shifted.problem(dtype).logits))
        assert np.array_equal(a.loss, b.loss) and np.array_equal(a.grad, b.grad)
    assert "shift" in shifted.features()


# -- the case format -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"softcap": 0.0}, "softcap", "must be a finite number > 0"),
        ({"softcap": -2.0}, "softcap", "must be a finite number > 0"),
        ({"logit_scale": 0.0}, "logit_scale", "> 0"),
        ({"z_loss": -0.5}, "z_loss", ">= 0"),
        ({"shift": 3}, "shift", "below the sequence length 3"),
        ({"shift": 1, "logits": "[0.5, 1.0]", "target": "1"}, "shift", "no sequence axis"),
        (
            {"shift": 1, "target": "[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]"},
            "shift",
            "class-index targets",
        ),
        ({"shift": -1}, "shift", ">= 0"),
        ({"return_z_loss": 1}, "return_z_loss", "is not valid"),
    ],
)
def test_bad_kernel_fields_name_the_field(tmp_path, fields, field, words):
    body = {"logits": "[[0.5, 1.0], [1.5, -1.0], [0.0, 2.0]]", "target": "[1, 0, 1]", **fields}
    lines = ["  - name: c", "    why: test", "    expected: oracle"]
    lines += [f"    {k}: {v}" for k, v in body.items()]
    with pytest.raises(CaseFileError) as e:
        load_paths([_write(tmp_path, "\n".join(lines) + "\n")])
    text = str(e.value)
    assert field in text and words in text, text


def test_literal_expected_values_carry_z_loss_exactly_when_it_is_returned(tmp_path):
    base = (
        "  - name: c\n    why: t\n    logits: [[0.5, 1.0]]\n    target: [1]\n    dtype: float64\n"
    )
    with pytest.raises(CaseFileError, match="give z_loss beside loss and grad"):
        load_paths(
            [_write(tmp_path, base + "    return_z_loss: true\n    expected: {loss: 0.5}\n")]
        )
    with pytest.raises(CaseFileError, match="needs 'return_z_loss: true'"):
        load_paths([_write(tmp_path, base + "    expected: {loss: 0.5, z_loss: 0.0}\n")])


def test_regen_writes_z_loss_and_the_file_loads_back(tmp_path, cli):
    path = _write(
        tmp_path,
        "  - name: c\n    why: t\n    logits: [[0.5, 1.0], [2.0, -1.0]]\n    target: [1, 0]\n"
        "    z_loss: 0.25\n    return_z_loss: true\n    reduction: none\n",
    )
    r = cli("regen", str(path))
    assert r.returncode == 0, r.output
    assert "z_loss: [" in path.read_text()
    (case,) = load_cases([path])
    want = cross_entropy(case.problem("float64"))
    assert np.array_equal(case.expected_for("float64").z_loss, want.z_loss)


# -- adapters and the runner -----------------------------------------------------------------


def test_reference_adapters_pass_every_kernel_case_in_every_dtype(kernel_cases):
    from harness.execution.registry import load

    adapters = [NumpyAdapter(), Stepwise()]
    pytest.importorskip("torch")
    adapters += [load("torch"), load("torch-module")]
    bad = [
        f"{c.id} {a.name} {d}: {r.status} {r.message}"
        for c in kernel_cases
        for a in adapters
        for d in c.dtypes
        if not (r := run_one(c, a, d)).conforming or r.status is Status.UNSUPPORTED
    ]
    assert bad == []


def test_reference_adapters_pass_the_kernel_pairwise_cases():
    cases = load_cases([PAIRWISE_FILE])
    for adapter in (NumpyAdapter(), Stepwise()):
        for c in cases:
            r = run_one(c, adapter, c.dtypes[0])
            assert r.status is Status.PASS, (c.id, adapter.name, r.message)


@pytest.mark.parametrize(
    ("mutant", "killed_by"),
    [
        (SoftcapWithoutOuterScale, "kernel/softcap_mean"),
        (ZLossMeanOverN, "kernel/z_loss_mean_with_ignored"),
        (ShiftOffByOne, "kernel/shift_one_sequence"),
    ],
)
def test_kernel_cases_kill_the_kernel_mutants(kernel_cases, mutant, killed_by):
    kill = first_kill(mutant(), kernel_cases)
    assert kill.case_id == killed_by, kill


class _Plain(Adapter):
    """An adapter written before the kernel fields: it would ignore them."""

    name = "plain"

    def run(self, inputs: CallInputs) -> Output:
        return NumpyAdapter().run(dataclasses.replace(inputs, softcap=None, shift=0))


def test_an_adapter_that_does_not_opt_in_is_unsupported_not_failed(kernel_cases):
    by_id = {c.id: c for c in kernel_cases}
    r = run_one(by_id["kernel/softcap_mean"], _Plain(), "float64")
    assert r.status is Status.UNSUPPORTED
    assert "softcap" in r.message and "'supports'" in r.message
    plain_case = by_id["kernel/z_loss_returned_without_z_loss"]
    assert run_one(plain_case, _Plain(), "float64").status is Status.UNSUPPORTED
    opted = type("Opted", (_Plain,), {"supports": frozenset({"softcap"})})()
    assert run_one(by_id["kernel/softcap_mean"], opted, "float64").status is Status.FAIL


def test_wrapped_functions_do_not_opt_in(kernel_cases):
    import harness

    adapter = harness.from_numpy(lambda x, t, **kw: 0.0, name="fn")
    assert adapter.supports == frozenset()
    r = run_one(kernel_cases[0], adapter, "float64")
    assert r.status is Status.UNSUPPORTED


class _NoZLoss(NumpyAdapter):
    name = "no-z-loss"

    def run(self, inputs: CallInputs) -> Output:
        out = super().run(inputs)
        return Output(out.loss, out.grad)


class _WrongZLoss(NumpyAdapter):
    name = "wrong-z-loss"

    def run(self, inputs: CallInputs) -> Output:
        out = super().run(inputs)
        z_loss = np.asarray(out.z_loss)
        # in the case's dtype under NumPy 1's value-based casting too (a 0-d float32 times a
        # Python float is float64 there, an error instead of the wrong value meant here)
        return Output(out.loss, out.grad, (z_loss * 1.001).astype(z_loss.dtype))


def test_the_returned_z_loss_is_checked_against_its_own_bound(kernel_cases):
    case = next(c for c in kernel_cases if c.name == "z_loss_returned_mean_with_smoothing")
    assert run_one(case, NumpyAdapter(), "float32").status is Status.PASS
    missing = run_one(case, _NoZLoss(), "float32")
    assert missing.status is Status.ERROR and "z_loss is None" in missing.message
    wrong = run_one(case, _WrongZLoss(), "float32")
    assert wrong.status is Status.FAIL and wrong.message.startswith("z_loss:")
    assert case.expected_for("float32").z_loss_bound is not None


class _InPlace(NumpyAdapter):
    """Writes the gradient it returns into the logits it was given (flash-attn's
    inplace_backward=True), and returns that very array."""

    name = "in-place"
    inplace_backward = True
    corrupt: str | None = None

    def run(self, inputs: CallInputs) -> Output:
        out = super().run(inputs)
        inputs.logits[...] = out.grad
        if self.corrupt == "logits":
            inputs.logits.reshape(-1)[0] += 1.0
        if self.corrupt == "target":
            inputs.target.reshape(-1)[0] = 0
        return Output(out.loss, inputs.logits if self.corrupt != "logits" else out.grad)


def test_inplace_backward_accepts_exactly_the_returned_gradient(kernel_cases):
    case = next(c for c in kernel_cases if c.name == "softcap_mean")
    assert run_one(case, _InPlace(), "float32").status is Status.PASS
    undeclared = type("Undeclared", (_InPlace,), {"inplace_backward": False})()
    r = run_one(case, undeclared, "float32")
    assert r.status is Status.ERROR and "modified its input 'logits'" in r.message
    for what in ("logits", "target"):
        bad = type("Bad", (_InPlace,), {"corrupt": what})()
        r = run_one(case, bad, "float32")
        assert r.status is Status.ERROR and f"'{what}'" in r.message, r.message
        assert "inplace_backward" in r.message


def test_inplace_backward_without_a_gradient_must_leave_the_logits_alone(kernel_cases):
    case = next(c for c in kernel_cases if c.name == "softcap_mean")

    class Scribbles(NumpyAdapter):
        name = "scribbles"
        inplace_backward = True

        def run(self, inputs: CallInputs) -> Output:
            out = super().run(inputs)
            inputs.logits[...] = 0
            return Output(out.loss, None)

    r = run_one(case, Scribbles(), "float64")
    assert r.status is Status.ERROR and "'logits'" in r.message


# -- coverage --------------------------------------------------------------------------------


def test_every_feasible_kernel_pair_is_covered_and_no_infeasible_one_occurs():
    rows, _ = coverage.rows_of(load_paths().cases)
    result = coverage.kernel_pair_coverage(rows)
    assert [f"{pc.a}={va} + {pc.b}={vb}" for pc in result for va, vb in pc.missing] == []
    assert [pc.contradicting for pc in result if pc.contradicting] == []
    for k, vk, b, vb in coverage.KERNEL_INFEASIBLE:
        assert vk in coverage.KERNEL_PARAMETERS[k]
        assert vb in {**coverage.PARAMETERS, **coverage.KERNEL_PARAMETERS}[b]


def test_a_shifted_case_is_classified_by_the_targets_it_is_scored_against(tmp_path):
    case = _case(
        tmp_path, logits="[[0.5, 1.0], [1.5, -1.0], [0.0, 2.0]]", target="[1, 0, 1]", shift=2
    )
    row = coverage.classify(case)
    assert row["ignored"] == "some" and row["shift"] == ">1"


def test_kernel_pairwise_file_is_what_the_generator_writes(tmp_path):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "tools" / "make_corpus.py"
    spec = importlib.util.spec_from_file_location("make_corpus", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    monkey_out = tmp_path / "out"
    written = module.write_kernel_pairwise(monkey_out)
    assert written.read_text() == PAIRWISE_FILE.read_text(), "run python tools/make_corpus.py"


def test_kernel_features_are_all_named_in_features():
    from harness import FEATURES

    assert set(FEATURES) >= KERNEL_FEATURES


# -- the error model's kernel terms ----------------------------------------------------------


def _legal_kernel(p: Problem, dtype: str):
    """The kernel fields as a careful implementation may compute them, rounding wherever the
    model allows: each step that forms z (a x, / s, tanh, s *) and dz/dx = a (1 - tanh**2)
    stored in the case dtype; the cross-entropy and lse in the compute precision with the
    log-probabilities, probabilities, products, losses and results stored in the dtype."""
    from harness.dtypes import cast
    from harness.oracle.error_model import COMPUTE_DTYPE

    def rd(a):
        return cast(np.asarray(a, dtype=np.float64), dtype).astype(np.float64)

    def rc(a):
        return cast(np.asarray(a, dtype=np.float64), COMPUTE_DTYPE[dtype]).astype(np.float64)

    x, t = p.rows()
    n, c = x.shape
    a_s = p.logit_scale
    if p.softcap is None:
        z, slope = rd(a_s * x), np.full_like(x, a_s)
    else:
        tt = rd(np.tanh(rd(rd(a_s * x) / p.softcap)))
        z, slope = rd(p.softcap * tt), rd(a_s * rd(1.0 - rd(tt * tt)))
    eps, w = p.label_smoothing, (np.ones(c) if p.weight is None else p.weight)
    m = z.max(axis=1, keepdims=True)
    d = rc(z - m)
    s = rc(np.sum(rc(np.exp(d)), axis=1, keepdims=True))
    lse = rc(m + rc(np.log(s)))[:, 0]
    logp = rd(rc(d - rc(np.log(s))))
    keep = t != p.ignore_index
    safe = np.where(keep, t, 0)
    a = np.zeros((n, c))
    a[np.arange(n), safe] = (1 - eps) * w[safe]
    a = rc(a + eps / c * w)
    a[~keep] = 0.0
    den = float(rc(np.sum(np.where(keep, w[safe], 0.0))))
    n_kept = float(np.count_nonzero(keep))
    per_pos = rd(rc(np.sum(rd(rc(-a * logp)), axis=1)))
    z_pos = np.where(keep, rd(rc(p.z_loss * rc(lse * lse))), 0.0)
    if p.reduction == "none":
        loss, z_out = rd(per_pos + z_pos), z_pos
        g = gz = np.ones(n)
    elif p.reduction == "sum":
        z_out = rd(rc(np.sum(z_pos)))
        loss = rd(rc(np.sum(per_pos)) + z_out)
        g = gz = np.ones(n)
    else:
        z_out = rd(rc(np.sum(z_pos)) / n_kept)
        loss = rd(rc(rc(np.sum(per_pos)) / den) + z_out)
        g, gz = np.full(n, rc(1.0 / den)), np.full(n, rc(1.0 / n_kept))
    prob = rd(rc(np.exp(logp)))
    big_a = rc(np.sum(a, axis=1, keepdims=True))
    grad_z = rc(rc(g[:, None] * rc(big_a * prob)) - rc(g[:, None] * a))
    grad_z = rc(grad_z + rc(np.where(keep, rc(2 * p.z_loss * gz * lse), 0.0)[:, None] * prob))
    grad = rd(rd(grad_z) * slope)
    grad[~keep] = 0.0
    return loss.reshape(p.loss_shape()), p.grad_from_rows(grad), z_out.reshape(p.loss_shape())


def _kernel_ratios(p: Problem, dtype: str, got) -> list[float]:
    from harness.execution.compare import compare
    from harness.oracle.error_model import error_bounds

    exact = cross_entropy(p)
    b = error_bounds(p, dtype, exact.loss, exact.grad, exact.z_loss)
    pairs = [(got[0], exact.loss, b.loss), (got[1], exact.grad, b.grad)]
    pairs.append((got[2], exact.z_loss, b.z_loss))
    return [compare(g, e, bd, dtype, "x").errors.max_ratio for g, e, bd in pairs]


@st.composite
def _kernel_problems(draw):
    dtype = draw(st.sampled_from(["float64", "float32", "float16", "bfloat16"]))
    n, c = draw(st.integers(1, 5)), draw(st.integers(2, 8))
    spread = draw(st.sampled_from([1.0, 4.0, 12.0, 60.0]))
    offset = draw(st.sampled_from([0.0, 30.0, -200.0]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    x = cast_to(offset + spread * rng.standard_normal((n, c)), dtype)
    t = rng.integers(0, c, size=n)
    if n > 1 and draw(st.booleans()):
        t[rng.choice(n, size=n // 2, replace=False)] = -100
    weight = None
    if draw(st.booleans()):
        weight = cast_to(rng.integers(1, 13, size=c) / 4.0, dtype)
    fields = {
        "softcap": draw(st.sampled_from([None, 1.5, 5.0, 30.0])),
        "logit_scale": draw(st.sampled_from([1.0, 0.125, 0.7, 4.0])),
        "z_loss": draw(st.sampled_from([0.0, 1e-4, 0.25])),
        "label_smoothing": draw(st.sampled_from([0.0, 0.1])),
        "reduction": draw(st.sampled_from(["none", "mean", "sum"])),
    }
    return dtype, Problem(x, t, False, weight=weight, return_z_loss=True, **fields)


def cast_to(a: np.ndarray, dtype: str) -> np.ndarray:
    from harness.dtypes import cast

    return cast(a, dtype).astype(np.float64)


@settings(max_examples=80, deadline=None)
@given(_kernel_problems())
def test_a_careful_kernel_implementation_always_conforms(drawn):
    dtype, p = drawn
    with np.errstate(all="ignore"):
        got = _legal_kernel(p, dtype)
    assume(np.all(np.isfinite(got[0])))
    assert max(_kernel_ratios(p, dtype, got)) <= 1.0


@pytest.mark.parametrize("mutant", [SoftcapWithoutOuterScale, ZLossMeanOverN, ShiftOffByOne])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_kernel_mutants_fail_in_every_precision(kernel_cases, mutant, dtype):
    """The bounds leave room for the roundings above, not for the bugs: even in bfloat16
    (z stored three times at 2**-8) each kernel mutant fails the cases of its field."""
    cases = [c for c in kernel_cases if dtype in c.dtypes]
    killed = [c.name for c in cases if not run_one(c, mutant(), dtype).conforming]
    assert len(killed) >= 5, killed
