"""User-supplied adapters, loaded as a user would, from temporary folders: files, bare names,
packages on the path, entry points. The command runs in process (``cli``): the loading rules
are logic, and the fixture restores ``sys.path`` and forgets the user's modules afterwards."""

from __future__ import annotations

import textwrap

import pytest
from conftest import REPO

SEED = str(REPO / "cases" / "seed.yaml")

TORCH_NO_SMOOTHING = """
import torch.nn.functional as F

def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean"):
    return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
                           reduction=reduction)
"""

TORCH_RAISES = """
import torch.nn.functional as F

def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    if label_smoothing:
        raise NotImplementedError("no label smoothing yet")
    return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
                           reduction=reduction)
"""

NUMPY_WITH_GRAD = """
import numpy as np
from harness.adapters.wrap import from_numpy

def _rows(x, t):
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p, np.arange(len(t))

def ce(input, target):
    p, i = _rows(input.astype(np.float64), target)
    return -np.log(p[i, target]).mean()

def ce_grad(input, target, grad_output=None):
    p, i = _rows(input.astype(np.float64), target)
    p[i, target] -= 1
    return p / len(target)

adapter = from_numpy(ce, grad=ce_grad, unsupported={"probability_target", "kdim", "unbatched",
                                                    "empty", "invalid_input"})
"""


def _write(folder, name: str, text: str):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_file_function_without_smoothing_is_unsupported_not_fail(cli, tmp_path):
    _write(tmp_path, "my_ce.py", TORCH_NO_SMOOTHING)
    r = cli("--adapter", "./my_ce.py:cross_entropy", "--cases", SEED, "-k", "smoothing",
            "--dtype", "float64", "-v", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.output
    assert "fail" not in r.stdout
    assert "needs label_smoothing (label_smoothing inferred from the signature" in r.stdout
    assert "my_ce.py" in r.stdout


def test_not_implemented_error_is_unsupported_and_says_so(cli, tmp_path):
    _write(tmp_path, "my_ce.py", TORCH_RAISES)
    r = cli("--adapter", "my_ce.py:cross_entropy", "--cases", SEED, "-k", "smoothing",
            "--dtype", "float32", "-v", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.output
    assert "raised by the adapter: NotImplementedError: no label smoothing yet" in r.stdout


def test_bare_name_finds_a_file_in_the_working_directory(cli, tmp_path):
    _write(tmp_path, "mine.py", NUMPY_WITH_GRAD)
    r = cli("--adapter", "mine", "--cases", SEED, cwd=tmp_path)
    assert r.returncode == 0, r.output
    assert "ce (mine.py:" in r.stdout and "on numpy" in r.stdout
    assert "unsupported" in r.stdout and "pass" in r.stdout


def test_package_module_attr_from_another_directory(cli, tmp_path):
    pkgs = tmp_path / "pkgs"
    _write(pkgs, "mypkg/__init__.py", "")
    _write(pkgs, "mypkg/ce.py", TORCH_RAISES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli("--adapter", "mypkg.ce:cross_entropy", "--cases", SEED, "--dtype", "float32",
            cwd=elsewhere, path=(pkgs,))  # fmt: skip
    assert r.returncode == 0, r.output
    assert "mypkg.ce:cross_entropy" in r.stdout and "torch 2." in r.stdout


def test_entry_point_from_an_installed_package(cli, tmp_path):
    site = tmp_path / "site"
    _write(site, "lossconf_testpkg/__init__.py", TORCH_RAISES)
    _write(site, "lossconf_testpkg-0.1.dist-info/METADATA",
           "Metadata-Version: 2.1\nName: lossconf-testpkg\nVersion: 0.1\n")  # fmt: skip
    _write(site, "lossconf_testpkg-0.1.dist-info/entry_points.txt",
           "[lossconf.adapters]\nmy-ep = lossconf_testpkg:cross_entropy\n")  # fmt: skip
    r = cli("--adapter", "my-ep", "--cases", SEED, "--dtype", "float64", cwd=tmp_path, path=(site,))
    assert r.returncode == 0, r.output
    assert r.stdout.splitlines()[2].startswith("my-ep")
    listed = cli("--list", "--cases", SEED, cwd=tmp_path, path=(site,))
    assert any(line.split()[:1] == ["my-ep"] for line in listed.stdout.splitlines())


def test_loading_errors_name_what_was_tried_and_exit_2(cli, tmp_path):
    _write(tmp_path, "broken.py", "import torchx_does_not_exist\n")
    _write(tmp_path, "notfn.py", "value = 3\n")
    cases = {
        "nosuch": "not found; tried built-in names",
        "nosuch.mod:fn": "module 'nosuch.mod'",
        "./missing.py": "file missing.py",
        "./notfn.py:other": "module has no attribute 'other'",
        "./notfn.py:value": "is a int",
        "./broken.py": "ModuleNotFoundError: No module named 'torchx_does_not_exist'",
    }
    for spec, text in cases.items():
        r = cli("--adapter", spec, "--cases", SEED, cwd=tmp_path)
        assert r.returncode == 2, (spec, r.output)
        assert text in r.stderr, (spec, r.stderr)
        assert "Known adapters: numpy, torch, torch-module, jax, optax" in r.stderr, spec
        assert "Traceback" not in r.stderr, spec
    r = cli("--adapter", "./broken.py", "--cases", SEED, "-v", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_bad_declarations_and_options_are_load_errors(cli, tmp_path):
    _write(tmp_path, "my_ce.py", TORCH_NO_SMOOTHING)
    r = cli("--adapter", "./my_ce.py:cross_entropy@unsupported=smoothing", "--cases", SEED,
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "unsupported=['smoothing'] not known" in r.stderr
    r = cli("--adapter", "./my_ce.py:cross_entropy@jit=0", "--cases", SEED, cwd=tmp_path)
    assert r.returncode == 2 and "do not apply to a torch function" in r.stderr


def test_command_line_declaration_and_framework(cli, tmp_path):
    _write(tmp_path, "my_ce.py", TORCH_NO_SMOOTHING)
    spec = "./my_ce.py:cross_entropy@framework=torch,unsupported=weight+float32"
    r = cli("--adapter", spec, "--cases", SEED, "-k", "weighted", "-v", cwd=tmp_path)
    assert r.returncode == 0, r.output
    assert "declared by the command line" in r.stdout


def test_examples_conform_on_the_seed_cases(cli):
    r = cli("--adapter", "examples/seed_numpy.py", "--adapter", "examples/torch_autograd.py:cross_entropy",
            "--adapter", "examples/jax_fn.py:cross_entropy", "--cases", SEED, "--dtype", "float32",
            "-v", cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.output
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines()[2:5]}
    assert set(rows) == {"seed-article", "torch_autograd.py:cross_entropy", "jax-example"}
    # the article's computation is checked for the loss only, and passes where it applies
    assert rows["seed-article"][-2] == "-"  # no gradient was checked (worst grad ratio)
    assert "raised by the adapter: NotImplementedError: label_smoothing" in r.stdout


def test_examples_find_real_bugs(cli):
    """The article's loop has no max shift: huge logits overflow (an error, not a pass)."""
    r = cli("--adapter", "examples/seed_numpy.py", "-k", "huge", "--dtype", "float64", cwd=REPO)
    assert r.returncode == 1, r.output  # cases/numerics.yaml has huge-logit cases
    assert "OverflowError" in r.stdout or "fail" in r.stdout


def test_jax_function_that_cannot_be_traced_runs_eagerly(tmp_path):
    import numpy as np

    from harness.adapters import CallInputs
    from harness.adapters.wrap import from_jax

    def picky(input, target, reduction="mean"):
        import jax

        if int(target.max()) >= input.shape[-1]:  # needs concrete targets: not jittable
            raise IndexError("target out of range")
        lp = jax.nn.log_softmax(input, axis=-1)
        return -lp[np.arange(len(target)), target].mean()

    adapter = from_jax(picky)
    x = np.array([[0.5, 1.0, -1.0], [2.0, 0.0, 0.0]], dtype=np.float32)
    out = adapter.run(CallInputs(x, np.array([1, 0]), None, "mean", -100, 0.0, "float32"))
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert np.isclose(out.loss, -np.log(p[[0, 1], [1, 0]]).mean(), rtol=1e-6)
    assert out.grad.shape == x.shape and adapter(x, np.array([1, 0])) is not None
    bad = CallInputs(x, np.array([1, 3]), None, "mean", -100, 0.0, "float32", want_grad=False)
    with pytest.raises(IndexError, match="target out of range"):
        adapter.run(bad)


def test_a_module_with_a_cross_entropy_function_needs_no_attr(cli, tmp_path):
    _write(tmp_path, "my_ce.py", TORCH_NO_SMOOTHING)
    r = cli("--adapter", "my_ce", "--cases", SEED, cwd=tmp_path)
    assert r.returncode == 0, r.output
    assert "cross_entropy (my_ce.py:" in r.stdout
    r = cli("--adapter", "./my_ce.py", "--cases", SEED, cwd=tmp_path)
    assert r.returncode == 0, r.output
    _write(tmp_path, "empty.py", "value = 3\n")
    r = cli("--adapter", "./empty.py", "--cases", SEED, cwd=tmp_path)
    assert r.returncode == 2 and "no 'cross_entropy' function" in r.stderr
