"""Losses as kernel libraries ship them, and other callables, load as adapters.

A torch loss module class (options in the constructor, ``forward(input, target)``, as
``torch.nn.CrossEntropyLoss``, Liger-Kernel's and flash-attn's losses are written) is
constructed with each case's options; what its constructor lacks is ``unsupported``, as for
a function's signature. An instance, whose options are fixed, is refused with a message
that names its class. A callable object and a ``functools.partial`` are functions like any
other: their framework is found and the report names them."""

from __future__ import annotations

import sys
import textwrap

import pytest

import harness
from harness.errors import AdapterLoadError

pytest.importorskip("torch")

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
