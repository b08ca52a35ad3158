"""Built-in adapters: torch, torch-module, jax, optax; values, dtypes, options, --list."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from harness import CallInputs
from harness.adapters.numpy_ref import cross_entropy as numpy_cross_entropy
from harness.dtypes import cast, is_exact
from harness.execution.registry import load

SEED = str(REPO / "cases" / "seed.yaml")  # stable cases, whatever the corpus holds today

LOGITS = np.array([[0.25, -1.0, 2.0, 0.5], [1.5, 0.0, -0.5, -1.0], [-0.5, 0.5, 1.0, 3.0]])
TARGET = np.array([2, -100, 1])
WEIGHT = np.array([0.5, 2.0, 1.0, 0.25])


def call(dtype: str, **kw) -> CallInputs:
    """A call with weights, an ignored row and smoothing, in ``dtype``."""
    args = {
        "logits": cast(LOGITS, dtype),
        "target": TARGET,
        "weight": cast(WEIGHT, dtype),
        "reduction": "mean",
        "ignore_index": -100,
        "label_smoothing": 0.125,
        "dtype": dtype,
    }
    args.update(kw)
    return CallInputs(**args)


@pytest.mark.parametrize("name", ["torch", "torch-module", "jax"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_full_featured_adapters_match_the_numpy_reference_in_float64(name, reduction):
    inputs = call("float64", reduction=reduction)
    out = load(name).run(inputs)
    loss, grad = numpy_cross_entropy(inputs)
    np.testing.assert_allclose(out.loss, loss, rtol=1e-12)
    np.testing.assert_allclose(out.grad, grad, rtol=1e-10, atol=1e-14)
    assert out.loss.dtype == np.float64 and out.grad.shape == LOGITS.shape


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_bfloat16_crosses_as_float32_holding_exact_bfloat16(name):
    out = load(name).run(call("bfloat16"))
    assert out.loss.dtype == np.float32 and out.grad.dtype == np.float32
    assert is_exact(out.loss, "bfloat16") and is_exact(out.grad, "bfloat16")
    expected, _ = numpy_cross_entropy(call("bfloat16"))
    assert abs(float(out.loss) - float(expected)) <= 2e-2 * abs(float(expected))


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_float16_stays_float16(name):
    out = load(name).run(call("float16", reduction="none"))
    assert out.loss.dtype == np.float16 and out.grad.dtype == np.float16
    assert out.loss[1] == 0.0 and not out.grad[1].any()  # the ignored row


def test_grad_output_is_the_upstream_gradient_for_none():
    go = np.array([1.0, 5.0, -2.0])
    for name in ("torch", "jax", "optax"):
        inputs = call("float64", reduction="none", weight=None, label_smoothing=0.0,
                      target=np.array([2, 0, 1]), grad_output=go)  # fmt: skip
        out = load(name).run(inputs)
        _, grad = numpy_cross_entropy(inputs)
        np.testing.assert_allclose(out.grad, grad, rtol=1e-10, err_msg=name)


def test_jax_enables_x64_only_inside_the_call():
    import jax

    out = load("jax").run(call("float64"))
    assert out.loss.dtype == np.float64
    assert not jax.config.jax_enable_x64
    assert jax.numpy.ones(1).dtype == np.float32


def test_all_ignored_mean_is_nan_with_zero_gradient():
    inputs = call("float32", target=np.array([-100, -100, -100]), label_smoothing=0.0)
    for name in ("torch", "jax"):
        out = load(name).run(inputs)
        assert np.isnan(out.loss), name
        assert np.array_equal(out.grad, np.zeros_like(out.grad)), name


def test_invalid_inputs_raise():
    for name in ("torch", "jax"):
        with pytest.raises(Exception, match=r"(?i)out of bounds|index"):
            load(name).run(call("float32", target=np.array([2, 7, 1]), want_grad=False))
        with pytest.raises(Exception, match=r"(?i)smoothing"):
            load(name).run(call("float32", label_smoothing=1.5, want_grad=False))


def test_versions_name_what_is_wrapped():
    import jax
    import optax
    import torch

    assert load("torch").version() == f"torch {torch.__version__}"
    assert load("jax").version() == f"jax {jax.__version__}, optax {optax.__version__}"
    assert load("optax").version().startswith(f"optax {optax.__version__}")


def test_three_adapters_print_one_table(cli):
    r = cli("--adapter", "torch", "--adapter", "jax", "--adapter", "numpy",
            "--cases", SEED, "-k", "article", "--dtype", "float32")  # fmt: skip
    assert r.returncode == 0, r.output
    table = r.stdout.split("\n\n")[0].splitlines()
    assert table[0].split()[:3] == ["adapter", "wraps", "results"]
    rows = {line.split()[0]: line for line in table[2:]}
    assert set(rows) == {"torch", "jax", "numpy"}
    assert "torch 2." in rows["torch"] and "optax" in rows["jax"]


def test_optax_reports_unsupported_with_its_source(cli):
    r = cli("--adapter", "optax", "--cases", SEED, "-k", "weighted", "-v")
    assert r.returncode == 0, r.output
    assert "unsupported" in r.stdout
    assert re.search(
        r"needs [a-z_, ]*weight[a-z_, ]* \(declared by adapters/optax_raw.py", r.stdout
    )


def test_list_shows_every_builtin_and_whether_it_loads(cli):
    r = cli("--list", "--cases", SEED)
    assert r.returncode == 0, r.output
    for name in ("numpy", "torch", "torch-module", "jax", "optax"):
        line = next(ln for ln in r.stdout.splitlines() if ln.split()[:1] == [name])
        assert "available" in line


def test_list_says_why_an_adapter_cannot_load(cli_process, tmp_path):
    # a torch that cannot be found: a sitecustomize hides it from importlib (a fresh process)
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'torch' else _find(n, *a)\n"
    )
    r = cli_process("--list", "--cases", SEED, env={"PYTHONPATH": str(tmp_path)})
    line = next(ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["torch"])
    assert "not installed: torch" in line


def test_cuda_device_without_cuda_is_a_load_error(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here: this checks the message on a machine without it")
    r = cli("--adapter", "torch@device=cuda", "--cases", SEED)
    assert r.returncode == 2
    assert "torch.cuda.is_available() is False" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("--adapter", "torch:device=tpu", "--cases", SEED)
    assert r.returncode == 2 and "expected one of cpu, cuda, mps" in r.stderr


def test_adapter_modules_import_no_framework():
    code = (
        "import sys, harness.adapters.torch_ce, harness.adapters.jax_ce, harness.adapters.optax_raw, harness.adapters.wrap\n"
        "import harness.execution.registry\n"
        "print(sorted(m for m in ('torch', 'jax', 'optax') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_jax_does_not_cancel_on_huge_logits():
    """optax's integer-label loss gives 8.0 here (lse - x[y] in float32); -log_softmax gives 8.000336."""
    x = np.array([[1e8, 1e8 + 8]], dtype=np.float32)
    inputs = CallInputs(x, np.array([0]), None, "mean", -100, 0.0, "float32")
    out = load("jax").run(inputs)
    assert abs(float(out.loss) - np.log1p(np.exp(8.0))) < 1e-5


def test_out_of_range_target_is_caught_on_the_host_off_cpu():
    """On CUDA an out-of-range target is a device assert that poisons the process."""
    from harness.adapters.torch_ce import TorchAdapter

    bad = call("float32", target=np.array([2, 4, 1]), want_grad=False)
    with pytest.raises(IndexError, match="checked on the host"):
        TorchAdapter(device="cuda").run(bad)  # raises before any tensor reaches CUDA


# jax: padded buckets (adapters/jax_ce.py pads (P, C) rows; masks keep padding out)

NINF, NAN = -np.inf, np.nan
X23 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])
PADDING_CALLS = {  # name: CallInputs keyword arguments beyond the float64 defaults
    "weighted_ignored_smoothing_mean": dict(
        logits=LOGITS, target=TARGET, weight=WEIGHT, label_smoothing=0.125
    ),
    "weighted_smoothing_sum": dict(
        logits=LOGITS, target=np.array([2, 0, 1]), weight=WEIGHT, label_smoothing=0.3,
        reduction="sum",
    ),
    "none_with_grad_output": dict(
        logits=LOGITS, target=TARGET, weight=WEIGHT, label_smoothing=0.2, reduction="none",
        grad_output=np.array([2.0, 7.0, -0.5]),
    ),
    "neg_inf_off_target": dict(logits=np.array([[0.0, NINF, 1.0]]), target=np.array([2])),
    "neg_inf_off_target_none": dict(
        logits=np.array([[0.0, NINF, 1.0]]), target=np.array([2]), reduction="none"
    ),
    "neg_inf_off_target_smoothing": dict(
        logits=np.array([[0.0, NINF, 1.0]]), target=np.array([2]), label_smoothing=0.1
    ),
    "neg_inf_on_target": dict(logits=np.array([[0.0, NINF, 1.0]]), target=np.array([1])),
    "row_of_neg_inf_ignored": dict(
        logits=np.array([[NINF, NINF, NINF], [0.0, 1.0, 2.0]]), target=np.array([-100, 0])
    ),
    "nan_row": dict(logits=np.array([[NAN, 0.0, 1.0], [0.0, 1.0, 2.0]]), target=np.array([0, 1])),
    "all_ignored_mean_smoothing": dict(
        logits=X23, target=np.array([-100, -100]), label_smoothing=0.2
    ),
    "zero_total_weight_smoothing": dict(
        logits=X23, target=np.array([0, 0]), weight=np.array([0.0, 1.0, 2.0]),
        label_smoothing=0.2,
    ),
    "empty_batch_mean": dict(logits=np.zeros((0, 3)), target=np.zeros(0, np.int64)),
    "empty_batch_none": dict(
        logits=np.zeros((0, 3)), target=np.zeros(0, np.int64), reduction="none"
    ),
    "kdim_none": dict(
        logits=np.arange(24.0).reshape(2, 3, 2, 2) / 7, target=np.array([[[0, 2], [1, -100]],
        [[2, 2], [0, 1]]]), reduction="none", grad_output=np.arange(8.0).reshape(2, 2, 2),
    ),
    "unbatched": dict(logits=np.array([0.5, -1.0, 2.0]), target=np.array(1), label_smoothing=0.1),
    "ignore_index_beyond_int32": dict(
        logits=X23, target=np.array([2**40, 1]), ignore_index=2**40, reduction="sum"
    ),
    "negative_smoothing_is_zero": dict(
        logits=X23, target=np.array([0, 2]), label_smoothing=-0.5
    ),
    "probability_smoothing_weighted_mean": dict(
        logits=X23, target=np.array([[0.25, 0.75, 0.0], [1.0, 0.0, 0.0]]),
        weight=np.array([0.5, 1.0, 3.0]), label_smoothing=0.3,
    ),
    "probability_zero_on_neg_inf": dict(
        logits=np.array([[0.0, NINF, 1.0]]), target=np.array([[0.5, 0.0, 0.5]]), reduction="sum"
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PADDING_CALLS))
def test_jax_padding_never_changes_a_value(name):
    """float64 through the padded (64, 8) program against the 200-bit oracle, nan for nan."""
    from harness.oracle import cross_entropy as oracle
    from harness.oracle.problem import Problem

    args = {"weight": None, "reduction": "mean", "ignore_index": -100, "label_smoothing": 0.0,
            "dtype": "float64"} | PADDING_CALLS[name]  # fmt: skip
    inputs = CallInputs(**args)
    out = load("jax").run(inputs)
    problem = Problem(
        inputs.logits, inputs.target, inputs.probability_target, inputs.weight,
        inputs.reduction, inputs.ignore_index, max(0.0, inputs.label_smoothing),
        inputs.grad_output,
    )  # fmt: skip
    want = oracle(problem)
    assert out.loss.shape == want.loss.shape and out.grad.shape == want.grad.shape
    np.testing.assert_allclose(out.loss, want.loss, rtol=1e-13, atol=0, equal_nan=True)
    np.testing.assert_allclose(out.grad, want.grad, rtol=1e-12, atol=1e-15, equal_nan=True)


def test_jax_buckets():
    from harness.adapters.jax_ce import bucket

    assert [bucket(n, 64) for n in (0, 1, 64, 65, 1000, 1024, 1025, 70000)] == [
        64, 64, 64, 128, 1024, 1024, 2048, 70656,
    ]  # fmt: skip
    assert bucket(50257, 8) == 51200 and bucket(3, 8) == 8


def test_jax_compiles_once_per_bucket_across_dtypes_and_options():
    """Half precision shares float32's program; sizes, options and reductions are arguments."""
    from harness.adapters import jax_ce

    rng = np.random.default_rng(4)
    adapter = load("jax")
    before = sum(jax_ce.TRACES.values())
    for p, c in ((1, 9), (5, 12), (64, 16)):  # one bucket: (64, 16)
        for dtype in ("float32", "float16", "bfloat16"):
            for reduction, eps, ii in (("mean", 0.0, -100), ("sum", 0.2, 0), ("none", 0.0, 3)):
                inputs = CallInputs(cast(rng.normal(size=(p, c)), dtype), rng.integers(0, c, p),
                                    None, reduction, ii, eps, dtype)  # fmt: skip
                loss, grad = numpy_cross_entropy(inputs)
                out = adapter.run(inputs)
                tol = 1e-5 if dtype == "float32" else 2e-2
                np.testing.assert_allclose(out.loss, loss, rtol=tol, atol=tol)
                np.testing.assert_allclose(out.grad, grad, rtol=tol, atol=tol)
    assert sum(jax_ce.TRACES.values()) - before == 1
    adapter.run(CallInputs(rng.normal(size=(3, 10)), np.array([0, 1, 2]), None, "mean", -100,
                           0.0, "float64"))  # fmt: skip
    assert sum(jax_ce.TRACES.values()) - before == 2  # float64 (x64) has its own


def test_jax_cross_entropy_function_unpadded_under_jit():
    """harness.adapters.jax_ce.cross_entropy: F.cross_entropy's signature on JAX arrays, jit and grad."""
    import jax

    from harness.adapters.jax_ce import cross_entropy

    x = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4) / 5
    t = np.array([[0, 2, -100, 1], [2, 2, 0, 1]])
    w = np.array([0.5, 2.0, 1.0], dtype=np.float32)
    loss, grad = jax.jit(
        jax.value_and_grad(lambda x: cross_entropy(x, t, w, label_smoothing=0.25))
    )(x)  # fmt: skip
    want, want_grad = numpy_cross_entropy(CallInputs(x, t, w, "mean", -100, 0.25, "float32"))
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
