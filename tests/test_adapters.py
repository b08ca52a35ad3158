"""Built-in adapters: torch, torch-module, jax, optax; values, dtypes, options, --list."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from adapters import CallInputs
from adapters.numpy_ref import cross_entropy as numpy_cross_entropy
from harness.dtypes import cast, is_exact
from harness.registry import load

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


def test_list_says_why_an_adapter_cannot_load(cli, tmp_path):
    # a torch that cannot be found: a sitecustomize hides it from importlib
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'torch' else _find(n, *a)\n"
    )
    r = cli("--list", "--cases", SEED, env={"PYTHONPATH": str(tmp_path)})
    line = next(ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["torch"])
    assert "not installed: torch" in line


def test_cuda_device_without_cuda_is_a_load_error(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    r = cli("--adapter", "torch@device=cuda", "--cases", SEED)
    assert r.returncode == 2
    assert "torch.cuda.is_available() is False" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("--adapter", "torch:device=tpu", "--cases", SEED)
    assert r.returncode == 2 and "expected one of cpu, cuda, mps" in r.stderr


def test_adapter_modules_import_no_framework():
    code = (
        "import sys, adapters.torch_ce, adapters.jax_ce, adapters.optax_raw, adapters.wrap\n"
        "import harness.registry\n"
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
    from adapters.torch_ce import TorchAdapter

    bad = call("float32", target=np.array([2, 4, 1]), want_grad=False)
    with pytest.raises(IndexError, match="checked on the host"):
        TorchAdapter(device="cuda").run(bad)  # raises before any tensor reaches CUDA
