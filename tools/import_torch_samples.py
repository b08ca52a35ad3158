"""Write cases/generated/torch_samples.yaml from PyTorch's own test inputs for cross-entropy.

Sources, all from the installed torch (which must be TORCH_VERSION unless
``--allow-version``; the file says which version it came from):

- OpInfo ``nn.functional.cross_entropy`` in
  ``torch.testing._internal.common_methods_invocations.op_db``: its
  ``sample_inputs_func`` (``sample_inputs_cross_entropy``);
- ModuleInfo ``torch.nn.CrossEntropyLoss`` in
  ``torch.testing._internal.common_modules.module_db``: its
  ``module_inputs_func`` (constructor kwargs + forward input) and its
  ``module_error_inputs_func`` (inputs torch must reject).

Each source is called for device ``cpu``, dtype float64, ``requires_grad=True``
(and ``training=True`` for modules) right after ``torch.manual_seed(SEED)`` and
``random.seed(SEED)``, so the values are the same on every run. Each sample
becomes one case holding its logits, target (class indices or probabilities),
weight, reduction, ignore_index and label_smoothing exactly as the sample
passes them, with ``expected: oracle`` and every dtype. The call is also made
with torch: a sample torch rejects becomes an ``expect_error`` case when the
error is one of ``harness.cases.model.ERROR_KINDS``, and is skipped otherwise; so is a
sample the case format cannot express. The header of the file counts both.

Values are written as ``harness.cases.writer`` writes them (Python's shortest repr),
so the float64 values read back exactly. They come from torch's random
generator, which the recipes of harness/cases/generate.py (NumPy's PCG64) cannot
reproduce, so every array is a literal::

    python tools/import_torch_samples.py            # writes cases/generated/torch_samples.yaml
    python tools/import_torch_samples.py --out F    # somewhere else

``torch.testing._internal`` needs the ``expecttest`` package (``pip install expecttest``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from harness.cases.model import ERROR_KINDS  # noqa: E402
from harness.cases.writer import flow as _flow  # noqa: E402
from harness.cases.writer import format_array, format_number  # noqa: E402

OUT = REPO / "cases" / "generated" / "torch_samples.yaml"
TORCH_VERSION = "2.13.0"
SEED = 0
DTYPES = ["float64", "float32", "float16", "bfloat16"]
OPINFO_NAME = "nn.functional.cross_entropy"

#: torch's error message -> the harness's error kind (harness/cases/model.py ERROR_KINDS)
ERROR_PATTERNS: list[tuple[str, str]] = [
    (r"Target -?\d+ is out of bounds", "index_out_of_range"),
    (r"Expected input batch_size .* to match target batch_size", "target_shape"),
    (r"Expected target size", "target_shape"),
    # an integer target of the input's shape takes the probability path
    (r"Expected floating point type for target with class probabilities", "target_shape"),
    # a floating target not of the input's shape takes the class-index path
    (r"expected target dtype to be Long or Byte", "target_shape"),
    (r"weight tensor should be defined either for all", "weight_shape"),
    (r"ignore_index is not supported for floating point target", "ignore_index_with_probabilities"),
    (r"label_smoothing must be between 0\.0 and 1\.0", "label_smoothing_range"),
    (r"is not a valid value for reduction", "reduction"),
]
assert {kind for _, kind in ERROR_PATTERNS} <= set(ERROR_KINDS)

#: why a sample is skipped (the file's header lists each with its count)
SKIP_REASONS = {
    "device": "not on the CPU (the case format has no device)",
    "dtype": "logits not float64 (the case format reads every input as float64 and casts it)",
    "target_dtype": "a target neither integer nor floating",
    "legacy_args": "size_average/reduce given (legacy arguments the case format lacks)",
    "extra_args": "arguments cross_entropy does not take, or forward keyword arguments",
    "argument_type": "weight not a tensor, or a reduction, ignore_index or label_smoothing of "
    "another type than the case format's",
    "nonfinite_target": "non-finite probability targets (the case format allows them only "
    "in an expect_error case)",
    "unmapped_error": "torch raises an error that is none of harness/cases/model.py ERROR_KINDS",
    "error_not_raised": "an error input that torch accepts",
}


@dataclass
class Sample:
    """One call taken from a torch test source, as the case format holds it."""

    source: str  # "opinfo", "moduleinfo" or "moduleinfo_error"
    index: int  # position in its source's list
    desc: str  # ModuleInfo's desc ('' for OpInfo)
    logits: object  # torch.Tensor (float64)
    target: object  # torch.Tensor (integer: class indices; floating: probabilities)
    options: dict = field(default_factory=dict)  # weight, reduction, ignore_index, label_smoothing
    expect_error: str | None = None
    error_text: str = ""  # torch's error, for an expect_error case
    skip: str | None = None  # a key of SKIP_REASONS

    @property
    def probability(self) -> bool:
        return self.target.is_floating_point()


class VersionError(Exception):
    pass


def check_version(torch_version: str, allow: bool) -> None:
    if not torch_version.startswith(TORCH_VERSION) and not allow:
        raise VersionError(
            f"torch {torch_version} is installed, but cases/generated/torch_samples.yaml comes "
            f"from torch {TORCH_VERSION}: install torch=={TORCH_VERSION}, or pass "
            "--allow-version to write a file that says it came from this version"
        )


def _seed() -> None:
    import torch

    torch.manual_seed(SEED)
    random.seed(SEED)


# ---------------------------------------------------------------- reading the sources


def _bind(fn, args: tuple, kwargs: dict) -> dict | None:
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        return None
    return dict(bound.arguments)


def _from_call(source: str, index: int, desc: str, logits, target, options: dict) -> Sample:
    """A Sample from a bound call (``options``: the keyword arguments passed, beyond the two)."""
    import torch

    s = Sample(source, index, desc, logits, target)
    if options.get("size_average") is not None or options.get("reduce") is not None:
        s.skip = "legacy_args"
        return s
    options = {k: v for k, v in options.items() if k not in ("size_average", "reduce")}
    tensors = [logits, target] + [v for v in options.values() if isinstance(v, torch.Tensor)]
    if not all(isinstance(t, torch.Tensor) for t in (logits, target)):
        s.skip = "argument_type"
        return s
    if any(t.device.type != "cpu" for t in tensors):
        s.skip = "device"
        return s
    if logits.dtype != torch.float64:
        s.skip = "dtype"
        return s
    if target.is_complex() or target.dtype == torch.bool:
        s.skip = "target_dtype"
        return s
    weight = options.get("weight")
    if weight is not None and not (isinstance(weight, torch.Tensor) and weight.is_floating_point()):
        s.skip = "argument_type"
        return s
    types = {"reduction": (str,), "ignore_index": (int,), "label_smoothing": (float, int)}
    for key, allowed in types.items():
        value = options.get(key)
        if key in options and (isinstance(value, bool) or not isinstance(value, allowed)):
            s.skip = "argument_type"
            return s
    s.options = options
    return s


def opinfo_samples() -> list[Sample]:
    import torch
    import torch.nn.functional as F
    from torch.testing._internal.common_methods_invocations import op_db

    (op,) = [o for o in op_db if o.name == OPINFO_NAME and o.variant_test_name == ""]
    _seed()
    raw = list(op.sample_inputs_func(op, "cpu", torch.float64, requires_grad=True))
    out = []
    for i, sample in enumerate(raw):
        bound = _bind(F.cross_entropy, (sample.input, *sample.args), sample.kwargs)
        if bound is None:
            out.append(Sample("opinfo", i, "", sample.input, None, skip="extra_args"))
            continue
        logits, target = bound.pop("input"), bound.pop("target")
        out.append(_from_call("opinfo", i, "", logits, target, bound))
    return out


def moduleinfo_samples() -> list[Sample]:
    import torch
    from torch.testing._internal.common_modules import module_db

    (info,) = [m for m in module_db if m.module_cls is torch.nn.CrossEntropyLoss]
    ctor = torch.nn.CrossEntropyLoss.__init__
    out = []
    _seed()
    inputs = info.module_inputs_func(info, "cpu", torch.float64, requires_grad=True, training=True)
    for i, mi in enumerate(inputs):
        out.append(_module_sample("moduleinfo", i, mi, ctor))
    errors_func = getattr(info, "module_error_inputs_func", None)
    if errors_func is not None:
        _seed()
        errors = errors_func(info, "cpu", torch.float64, requires_grad=True, training=True)
        for i, err in enumerate(errors):
            out.append(_module_sample("moduleinfo_error", i, err.module_error_input, ctor))
    return out


def _module_sample(source: str, i: int, mi, ctor) -> Sample:
    c, f = mi.constructor_input, mi.forward_input
    bound = _bind(ctor, (None, *c.args), c.kwargs)
    desc = getattr(mi, "desc", "") or ""
    if bound is None or len(f.args) != 2 or f.kwargs:
        logits = f.args[0] if f.args else None
        return Sample(source, i, desc, logits, None, skip="extra_args")
    bound.pop("self")
    return _from_call(source, i, desc, f.args[0], f.args[1], bound)


# ---------------------------------------------------------------- what torch says


def _torch_error(s: Sample) -> Exception | None:
    """Make the sample's call with torch (float64, CPU); the exception it raises, if any."""
    import torch
    import torch.nn.functional as F

    logits = s.logits.detach().clone().requires_grad_(True)
    target = s.target.detach().clone()
    try:
        if s.source == "opinfo":
            loss = F.cross_entropy(logits, target, **s.options)
        else:
            loss = torch.nn.CrossEntropyLoss(**s.options)(logits, target)
        loss.sum().backward()
    except Exception as e:
        return e
    return None


def error_kind(message: str) -> str | None:
    for pattern, kind in ERROR_PATTERNS:
        if re.search(pattern, message):
            return kind
    return None


def classify(s: Sample) -> None:
    """Set ``expect_error`` (or ``skip``) from what torch does with the call."""
    import torch

    if s.skip is not None:
        return
    err = _torch_error(s)
    if err is None:
        if s.source == "moduleinfo_error":
            s.skip = "error_not_raised"
        elif s.probability and not bool(torch.isfinite(s.target).all()):
            s.skip = "nonfinite_target"
        return
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    kind = error_kind(str(err))
    if kind is None:
        s.skip = "unmapped_error"
        return
    s.expect_error = kind
    s.error_text = f"{type(err).__name__}: {message}"


def collect() -> list[Sample]:
    samples = opinfo_samples() + moduleinfo_samples()
    for s in samples:
        classify(s)
    return samples


# ---------------------------------------------------------------- writing the file


def case_name(s: Sample) -> str:
    parts = [s.source, f"{s.index:03d}"]
    if s.expect_error:
        parts.append(s.expect_error)
    parts.append("prob" if s.probability else "index")
    if s.options.get("weight") is not None:
        parts.append("weight")
    if "ignore_index" in s.options:
        parts.append("ii")
    if s.options.get("label_smoothing"):
        parts.append("ls")
    ndim = s.logits.dim()
    if ndim == 1:
        parts.append("unbatched")
    elif ndim > 2:
        parts.append(f"kdim{ndim - 2}")
    reduction = s.options.get("reduction", "mean")
    parts.append(reduction if re.fullmatch(r"[A-Za-z0-9_]+", str(reduction)) else "reduction")
    return "_".join(parts)


def _describe_call(s: Sample) -> str:
    target = "probability" if s.probability else "class-index"
    text = f"logits {tuple(s.logits.shape)}, {target} target {tuple(s.target.shape)}"
    for key, value in s.options.items():
        if key == "weight":
            text += "" if value is None else f", weight {tuple(value.shape)}"
        else:
            text += f", {key} {value!r}"
    return text


def case_why(s: Sample, torch_version: str) -> str:
    base = torch_version.split("+")[0]
    if s.source == "opinfo":
        where = (
            f"OpInfo {OPINFO_NAME}, torch {base}, sample {s.index} "
            "(sample_inputs_cross_entropy, cpu, float64)"
        )
    elif s.source == "moduleinfo":
        where = (
            f"ModuleInfo nn.CrossEntropyLoss, torch {base}, module input {s.index} "
            f"'{s.desc}' (module_inputs_torch_nn_CrossEntropyLoss, cpu, float64)"
        )
    else:
        where = (
            f"ModuleInfo nn.CrossEntropyLoss, torch {base}, error input {s.index} "
            "(module_error_inputs_torch_nn_CrossEntropyLoss, cpu, float64)"
        )
    why = f"{where}: {_describe_call(s)}"
    if s.expect_error:
        why += f"; torch raises {s.error_text}"
    return why


def _array(t) -> str:
    """A tensor as a YAML literal: integers stay integers, floats read back exactly as float64."""
    import torch

    t = t.detach()
    if t.numel() == 0:
        value = 0 if not t.is_floating_point() else 0.0
        return _flow({"generate": "full", "shape": list(t.shape), "value": value})
    if t.is_floating_point():
        return format_array(t.to(torch.float64).numpy())
    return _flow(t.to(torch.int64).tolist())


def render_case(s: Sample, torch_version: str) -> str:
    lines = [f"  - name: {case_name(s)}", f"    why: {json.dumps(case_why(s, torch_version))}"]
    lines.append(f"    logits: {_array(s.logits)}")
    lines.append(f"    target: {_array(s.target)}")
    for key in ("weight", "reduction", "ignore_index", "label_smoothing"):
        if key not in s.options:
            continue
        value = s.options[key]
        if key == "weight":
            text = "null" if value is None else _array(value)
        elif key == "label_smoothing":
            text = format_number(value)
        elif key == "reduction":
            text = json.dumps(value)
        else:
            text = str(int(value))
        lines.append(f"    {key}: {text}")
    if s.expect_error:
        lines.append(f"    expect_error: {s.expect_error}")
    else:
        lines.append("    expected: oracle")
    return "\n".join(lines)


def render(samples: list[Sample], torch_version: str) -> str:
    base = torch_version.split("+")[0]
    kept = [s for s in samples if s.skip is None]
    by_source = Counter(s.source for s in kept)
    errors = sum(1 for s in kept if s.expect_error)
    skipped = Counter(s.skip for s in samples if s.skip is not None)
    grad_targets = sum(
        1 for s in kept if s.probability and s.target.requires_grad and not s.expect_error
    )
    header = [
        f"# Generated by tools/import_torch_samples.py from torch {base}. Do not edit by hand:",
        "# change the script and run it again (python tools/import_torch_samples.py).",
        f"# Sources: OpInfo '{OPINFO_NAME}' (sample_inputs_cross_entropy) and ModuleInfo",
        "# torch.nn.CrossEntropyLoss (module_inputs_torch_nn_CrossEntropyLoss,",
        "# module_error_inputs_torch_nn_CrossEntropyLoss), each called for device cpu, dtype",
        f"# float64, requires_grad=True after torch.manual_seed({SEED}) and random.seed({SEED}).",
        "# Arrays are literals (torch's random streams are not the recipes' NumPy ones), written",
        "# as Python's shortest repr, so the float64 values read back exactly.",
        f"# {len(samples)} samples: {len(kept)} cases ({by_source['opinfo']} OpInfo, "
        f"{by_source['moduleinfo']} ModuleInfo, {by_source['moduleinfo_error']} ModuleInfo "
        f"error inputs); {errors} expect_error (torch rejects the call).",
        f"# Skipped: {sum(skipped.values())}.",
    ]
    for key, reason in SKIP_REASONS.items():
        header.append(f"#   {skipped.get(key, 0)} {key}: {reason}")
    header += [
        f"# Not checked: the gradient w.r.t. the target, which {grad_targets} samples ask for",
        "# (probability targets with requires_grad); the case format checks the logits' gradient.",
        "# torch's own dtypes per source differ (ModuleInfo: no bfloat16); every case runs in all four.",
    ]
    body = [
        f"description: PyTorch {base}'s own test inputs for cross-entropy (OpInfo and ModuleInfo)",
        "defaults:",
        f"  dtype: {_flow(DTYPES)}",
        "  tags: [torch_samples]",
        "",
        "cases:",
    ]
    body += [render_case(s, torch_version) for s in kept]
    return "\n".join(header + body) + "\n"


def write(out: Path, torch_version: str) -> list[Sample]:
    """Collect the samples and write the case file (no version check); every sample, skipped too."""
    samples = collect()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(samples, torch_version), encoding="utf-8")
    return samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    p.add_argument(
        "--allow-version",
        action="store_true",
        help=f"run under a torch other than {TORCH_VERSION} (the file then names that version)",
    )
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("import_torch_samples: torch is not installed", file=sys.stderr)
        return 2
    try:
        check_version(torch.__version__, args.allow_version)
    except VersionError as e:
        print(f"import_torch_samples: {e}", file=sys.stderr)
        return 2
    try:
        samples = write(args.out, torch.__version__)
    except ModuleNotFoundError as e:
        print(
            f"import_torch_samples: {e} (torch.testing._internal needs it: pip install {e.name})",
            file=sys.stderr,
        )
        return 2
    kept = sum(1 for s in samples if s.skip is None)
    print(f"{args.out}: {kept} cases from {len(samples)} samples", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
