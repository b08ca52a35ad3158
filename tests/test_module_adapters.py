"""Losses as kernel libraries ship them, and other callables, load as adapters.

A torch loss module class (options in the constructor, ``forward(input, target)``, as
``torch.nn.CrossEntropyLoss``, Liger-Kernel's and flash-attn's losses are written) is
constructed with each case's options; what its constructor lacks is ``unsupported``, as for
a function's signature. An instance, whose options are fixed, is refused with a message
that names its class. A callable object and a ``functools.partial`` are functions like any
other: their framework is found and the report names them."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap

import pytest

import harness
from harness.errors import AdapterLoadError

# torch itself is imported by the tests that load the modules: importing it at collection
# cost every pytest-xdist worker 1.5 s of CPU, wherever these tests ran
if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed", allow_module_level=True)

#: four cases over the options a loss module's constructor takes, in float64 and float32
CASES = "defaults:\n  dtype: [float64, float32]\ncases:\n" + "".join(
    f"""  - name: {name}
    why: {why}
    logits: {{generate: normal, shape: [5, 6], seed: 7}}
    target: {target}
    expected: oracle
{extra}"""
    for name, why, target, extra in [
        ("mean", "the defaults", "[0, 5, 2, 2, 1]", "    reduction: mean\n"),
        ("sum_weighted", "class weights", "[0, 5, 2, 2, 1]",
         "    reduction: sum\n    weight: [1, 0.5, 2, 1, 0.25, 3]\n"),
        ("none_ignored", "an ignored position", "[0, -100, 2, 2, 1]", "    reduction: none\n"),
        ("smoothing", "label smoothing", "[0, 5, 2, 2, 1]",
         "    reduction: mean\n    label_smoothing: 0.2\n"),
    ]
)  # fmt: skip

MODULES = textwrap.dedent(
    """
    import functools

    import torch
    import torch.nn.functional as F


    class FullLoss(torch.nn.Module):
        def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
            super().__init__()
            self.weight, self.ignore_index = weight, ignore_index
            self.reduction, self.label_smoothing = reduction, label_smoothing

        def forward(self, input, target):
            return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                                   reduction=self.reduction, label_smoothing=self.label_smoothing)


    class NoSmoothing(torch.nn.Module):
        def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
            super().__init__()
            self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction

        def forward(self, input, target):
            return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                                   reduction=self.reduction)


    class Callable:
        def __call__(self, input, target, weight=None, ignore_index=-100, reduction="mean",
                     label_smoothing=0.0):
            return F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                                   reduction=reduction, label_smoothing=label_smoothing)


    instance = FullLoss(reduction="sum")
    callable_object = Callable()
    partial = functools.partial(F.cross_entropy)
    """
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("module_adapters")
    (path / "cases.yaml").write_text(CASES)
    (path / "losses.py").write_text(MODULES)
    return path


@pytest.fixture(scope="module")
def cases(folder):
    return harness.load_cases(folder / "cases.yaml")


def _statuses(results):
    return {(r.case_id, r.dtype): r.status.value for r in results}


@pytest.mark.parametrize(
    "attr", ["FullLoss", "callable_object", "partial"], ids=["module class", "object", "partial"]
)
def test_loads_and_conforms_as_torch_does(folder, cases, attr):
    adapter = harness.load_adapter(f"{folder / 'losses.py'}:{attr}")
    assert adapter.framework == "torch", f"{attr}: framework {adapter.framework}, not torch"
    assert "on torch" in adapter.version(), adapter.version()
    results = harness.run(cases, adapter)
    assert set(_statuses(results).values()) == {"pass"}, _statuses(results)
    assert _statuses(results).keys() == _statuses(harness.run(cases, "torch")).keys()


def test_a_module_class_is_constructed_with_each_case_s_options(folder, cases):
    adapter = harness.load_adapter(f"{folder / 'losses.py'}:NoSmoothing")
    results = {(r.case_id.split("/")[-1], r.dtype): r for r in harness.run(cases, adapter)}
    for dtype in ("float64", "float32"):
        unsupported = results[("smoothing", dtype)]
        assert unsupported.status.value == "unsupported", unsupported.message
        assert "label_smoothing" in unsupported.message
        for name in ("mean", "sum_weighted", "none_ignored"):
            result = results[(name, dtype)]
            assert result.status.value == "pass", f"{name} [{dtype}]: {result.message}"
    assert "inferred from the signature NoSmoothing(input, target, *, weight=None" in (
        adapter.unsupported_source
    )


def test_from_torch_takes_a_module_class(cases):
    torch = pytest.importorskip("torch")
    results = harness.run(cases, harness.from_torch(torch.nn.CrossEntropyLoss))
    assert {r.status.value for r in results} == {"pass"}


def test_an_instance_is_refused_with_its_class_named(folder):
    with pytest.raises(AdapterLoadError, match="instance of the torch module FullLoss") as e:
        harness.load_adapter(f"{folder / 'losses.py'}:instance")
    assert "name its class instead" in str(e.value)


def test_an_adapter_file_imports_its_siblings_from_any_folder(tmp_path, monkeypatch, cases):
    """As Python runs a script: the file's folder is on sys.path while it is imported and
    after (a function may import its kernel when called), whatever the working directory,
    and also for the ``lossconf`` script, whose sys.path holds no working directory."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    kernel = tmp_path / "kernels"
    kernel.mkdir()
    (kernel / "my_fused_ce.py").write_text(
        "import torch.nn.functional as F\n\n"
        "def forward(x, t, weight, ignore_index, reduction, label_smoothing):\n"
        "    return F.cross_entropy(x, t, weight, ignore_index=ignore_index,\n"
        "                           reduction=reduction, label_smoothing=label_smoothing)\n"
    )
    (kernel / "adapter.py").write_text(
        "import torch\n\n"
        "def cross_entropy(input, target, weight=None, ignore_index=-100, reduction='mean',\n"
        "                  label_smoothing=0.0):\n"
        "    import my_fused_ce  # when called, as kernels often are\n"
        "    return my_fused_ce.forward(input, target, weight, ignore_index, reduction,\n"
        "                               label_smoothing)\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delitem(sys.modules, "my_fused_ce", raising=False)
    adapter = harness.load_adapter("../kernels/adapter.py")
    results = harness.run(cases, adapter)
    assert {r.status.value for r in results} == {"pass"}, [r.message for r in results]


def test_a_file_adapter_has_one_name_from_every_folder(folder, monkeypatch):
    """Expectations, baselines and history match results by adapter name: a file named as
    ``losses.py:FullLoss``, ``./losses.py:FullLoss`` or by its path from elsewhere is one
    adapter, ``losses.py:FullLoss``; ``name=`` names it otherwise."""
    monkeypatch.chdir(folder)
    spellings = ["losses.py:FullLoss", "./losses.py:FullLoss", f"{folder}/losses.py:FullLoss"]
    names = {harness.load_adapter(s).name for s in spellings}
    monkeypatch.chdir(folder.parent)
    names.add(harness.load_adapter(f"{folder.name}/losses.py:FullLoss").name)
    assert names == {"losses.py:FullLoss"}
    renamed = harness.load_adapter(f"{folder.name}/losses.py:FullLoss@name=full")
    assert renamed.name == "full"


def test_expectations_recorded_in_one_folder_hold_in_another(folder, tmp_path, monkeypatch):
    from harness.cli.main import main

    cases = folder / "odd.yaml"
    cases.write_text(
        "cases:\n  - name: wrong\n    why: a loss the module gets wrong\n"
        "    logits: [[1.0, 2.0]]\n    target: [1]\n    reduction: mean\n    dtype: [float64]\n"
        "    expected: {loss: 1.0, grad: [[0.25, -0.25]]}\n"
    )
    expectations = tmp_path / "exp.yaml"
    monkeypatch.chdir(folder)
    assert main(["expectations", "update", str(expectations), "--cases", "odd.yaml",
                 "--adapter", "./losses.py:FullLoss", "-q"]) == 0  # fmt: skip
    text = expectations.read_text()
    assert "adapter: losses.py:FullLoss" in text, text
    # an entry written with the path as it was spelled before names were the file's
    expectations.write_text(text.replace("adapter: losses.py", "adapter: ./losses.py"))
    monkeypatch.chdir(tmp_path)
    spec = f"{os.path.relpath(folder, tmp_path)}/losses.py:FullLoss"
    argv = ["--cases", str(cases), "--adapter", spec, "--expectations", str(expectations), "-q"]
    assert main(argv) == 0, "the recorded non-conformity should be expected from here too"


def test_two_files_of_one_name_ask_for_name(folder, tmp_path):
    other = tmp_path / "losses.py"
    other.write_text((folder / "losses.py").read_text())
    from harness.execution.session import load_adapters

    with pytest.raises(harness.UsageError, match=r"name= \(--adapter SPEC@name=NAME\)"):
        load_adapters([f"{folder}/losses.py:FullLoss", f"{other}:FullLoss"])
    named = load_adapters([f"{folder}/losses.py:FullLoss", f"{other}:FullLoss@name=other"])
    assert [a.name for a in named] == ["losses.py:FullLoss", "other"]
