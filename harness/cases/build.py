"""Semantic checks of one case mapping (already schema-valid) and its conversion to a Case.

The schema checks structure; this module checks what a schema cannot: arrays
are rectangular and numeric, shapes agree with each other and with the
reduction, labels are integers in range, expected values have the right shape.
Invalid-input cases (``expect_error``) skip the checks their inputs exist to break.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.cases import limits
from harness.cases.generate import (
    COMMON_KEYS,
    PARAMETERS,
    RECIPES,
    FingerprintMismatch,
    materialize,
)
from harness.cases.model import ERROR_KINDS, REDUCTIONS, Case, content_hash_of
from harness.cases.yaml_numbers import text_number_message
from harness.dtypes import DTYPE_NAMES, is_exact
from harness.errors import CaseFileError
from harness.oracle.problem import Expected

#: recipes up to this many elements are made, and their sha256 checked, when the file loads;
#: larger ones when a run first needs them (a mismatch is then an ``error`` result)
FINGERPRINT_AT_LOAD = 2**20


class _Fail(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


def _array(value: object, field: str, *, finite: bool = False) -> np.ndarray | dict:
    """A literal nested list as int64 (all integers) or float64 array, or a checked recipe."""
    if isinstance(value, dict):
        return _recipe(value, field)
    _check_rectangular(value, field)
    obj = np.array(value, dtype=object)
    bound = limits.current().max_array_elements
    if limits.exceeds(obj.size, bound):
        raise _Fail(
            field,
            f"{obj.size:,} elements, above {limits.describe('max_array_elements', bound)}",
        )
    kinds = {type(v) for v in obj.flat}
    if bool in kinds:
        raise _Fail(field, "booleans are not numbers (write 0/1 or 0.0/1.0)")
    bad = kinds - {int, float}
    if bad:
        example = next(v for v in obj.flat if type(v) in bad)
        message = text_number_message(example)  # '1e-5': YAML's text, not a number
        raise _Fail(
            field, message or f"{example!r} is not a number (expected a nested list of numbers)"
        )
    if kinds <= {int}:
        try:
            return obj.astype(np.int64)
        except OverflowError:
            raise _Fail(field, "integer too large for int64") from None
    out = obj.astype(np.float64)
    if finite and not np.all(np.isfinite(out)):
        raise _Fail(field, "non-finite values are not allowed here (only in logits)")
    return out


def _check_rectangular(value: object, field: str) -> None:
    """Refuse ragged nested lists, naming the first row whose length differs (breadth first)."""
    level: list[tuple[str, object]] = [("", value)]
    while level and isinstance(level[0][1], list):
        lists = [(where, v) for where, v in level if isinstance(v, list)]
        if len(lists) != len(level):
            where, v = next((w, v) for w, v in level if not isinstance(v, list))
            raise _Fail(f"{field}{where}", f"{v!r} where a list is due: ragged nested list")
        first_where, first = lists[0]
        for where, v in lists:
            if len(v) != len(first):
                raise _Fail(
                    f"{field}{where}",
                    f"ragged nested list: {len(v)} items here, {len(first)} in "
                    f"{field}{first_where or ''}; every row must have the same length",
                )
        level = [(f"{where}[{i}]", item) for where, v in lists for i, item in enumerate(v)]
    if any(isinstance(v, list) for _, v in level):
        where, v = next((w, v) for w, v in level if isinstance(v, list))
        raise _Fail(f"{field}{where}", "a list where a number is due: ragged nested list")


_INT64 = np.iinfo(np.int64)


def _recipe(spec: dict, field: str) -> dict:
    """Check a recipe so that ``generate.build`` cannot fail on it: what loads, a run can make.

    The schema has checked the keys and their types and ranges; this checks what it cannot:
    which parameters apply to which recipe, finite values, ``low < high``, int64 bounds."""
    kind = spec.get("generate")
    if kind not in RECIPES:
        raise _Fail(f"{field}.generate", f"{kind!r} must be one of {', '.join(RECIPES)}")
    unknown = set(spec) - set(COMMON_KEYS) - set(PARAMETERS[kind])
    if unknown:
        name = sorted(unknown)[0]
        takes = ", ".join(PARAMETERS[kind]) or "none"
        raise _Fail(
            f"{field}.{name}",
            f"does not apply to a {kind!r} recipe (its parameters: {takes}; every recipe "
            f"takes {', '.join(COMMON_KEYS)})",
        )
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise _Fail(f"{field}.shape", f"{shape!r} must be a list of non-negative integers")
    bound = limits.current().max_array_elements
    if limits.exceeds(math.prod(shape), bound):
        raise _Fail(
            f"{field}.shape",
            f"{shape} has {math.prod(shape):,} elements, above "
            f"{limits.describe('max_array_elements', bound)}",
        )
    if kind == "probabilities" and not shape:
        raise _Fail(f"{field}.shape", "[] is a scalar: probabilities need a class axis")
    seed = spec.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        raise _Fail(f"{field}.seed", f"{seed!r} must be a non-negative integer")
    for name in ("mean", "std", "low", "high", "ignore_fraction"):
        value = spec.get(name)
        if value is not None and not (_is_number(value) and math.isfinite(value)):
            raise _Fail(f"{field}.{name}", f"{value!r} must be a finite number")
    if spec.get("std", 0) < 0:
        raise _Fail(f"{field}.std", f"{spec['std']!r} must be >= 0")
    if not 0 <= spec.get("ignore_fraction", 0) <= 1:
        raise _Fail(f"{field}.ignore_fraction", f"{spec['ignore_fraction']!r} must be in [0, 1]")
    if kind == "uniform" and not spec.get("low", 0.0) < spec.get("high", 1.0):
        raise _Fail(
            f"{field}.low",
            f"low={spec.get('low', 0.0)!r} must be below high={spec.get('high', 1.0)!r}",
        )
    if kind == "labels":
        classes = spec.get("classes")
        if (
            not isinstance(classes, int)
            or isinstance(classes, bool)
            or not 1 <= classes <= _INT64.max
        ):
            raise _Fail(
                f"{field}.classes",
                f"{classes!r}: a 'labels' recipe needs an integer 'classes' >= 1",
            )
    for name in ("ignore_index", "value"):
        value = spec.get(name)
        if value is None:
            continue
        if not _is_number(value):
            raise _Fail(f"{field}.{name}", f"{value!r} must be a number")
        if name == "ignore_index" and not _is_int(value):
            raise _Fail(f"{field}.{name}", f"{value!r} must be an integer")
        if _is_int(value) and not _INT64.min <= value <= _INT64.max:
            raise _Fail(f"{field}.{name}", f"{value!r} does not fit in int64")
    sha = spec.get("sha256")
    if sha is not None and not (
        isinstance(sha, str) and len(sha) == 16 and all(c in "0123456789abcdef" for c in sha)
    ):
        raise _Fail(
            f"{field}.sha256",
            f"{sha!r} must be 16 lowercase hex digits in quotes ('python -m harness regen' "
            "writes it)",
        )
    if sha is not None and not limits.exceeds(math.prod(shape), FINGERPRINT_AT_LOAD):
        try:
            materialize(spec, None)
        except FingerprintMismatch as e:
            raise _Fail(f"{field}.sha256", str(e)) from None
    return dict(spec)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _small(a: np.ndarray | dict) -> np.ndarray:
    """Weights and upstream gradients are small: recipes for them are made at once, as float64."""
    return (materialize(a, np.float64) if isinstance(a, dict) else a).astype(np.float64)


def _shape(a: np.ndarray | dict) -> tuple[int, ...]:
    return tuple(a["shape"]) if isinstance(a, dict) else a.shape


def _is_float(a: np.ndarray | dict) -> bool:
    if isinstance(a, dict):
        if a["generate"] == "full":
            return not isinstance(a.get("value", 0.0), int)
        return a["generate"] != "labels"
    return np.issubdtype(a.dtype, np.floating)


def build_case(path: Path, raw: dict, defaults: dict, *, require_expected: bool = True) -> Case:
    """Check one case mapping and build its Case; raise CaseFileError naming the field."""
    name = raw["name"]
    merged = {**defaults, **raw}
    if "tags" in defaults and "tags" in raw:
        merged["tags"] = list(dict.fromkeys([*defaults["tags"], *raw["tags"]]))
    try:
        return _build(path, name, merged, raw, require_expected)
    except _Fail as f:
        key = f.field.split(".")[0].split("[")[0]
        line = getattr(raw, "key_lines", {}).get(key, getattr(raw, "line", None))
        raise CaseFileError(path, f.message, case=name, field=f.field, line=line) from None


def _build(path: Path, name: str, m: dict, raw: dict, require_expected: bool) -> Case:
    expect_error = m.get("expect_error")
    if expect_error is not None and expect_error not in ERROR_KINDS:
        raise _Fail("expect_error", f"{expect_error!r} must be one of {', '.join(ERROR_KINDS)}")
    strict = expect_error is None
    if "hidden" in m or "classifier" in m:
        return _build_linear(path, name, m, raw, require_expected)
    if "logits" not in m:
        raise _Fail("logits", "missing required field: 'logits' (or 'hidden' and 'classifier')")

    logits = _array(m["logits"], "logits")
    target = _array(m["target"], "target", finite=False)
    weight = None if m.get("weight") is None else _small(_array(m["weight"], "weight", finite=True))
    grad_output = None
    if "grad_output" in m:
        grad_output = _small(_array(m["grad_output"], "grad_output", finite=True))
    reduction = m.get("reduction", "mean")
    ignore_index = m.get("ignore_index", -100)
    smoothing = float(m.get("label_smoothing", 0.0))
    dtypes = m.get("dtype", ["float64", "float32"])
    dtypes = tuple([dtypes] if isinstance(dtypes, str) else dtypes)
    xs = _shape(logits)

    if len(xs) == 0:
        raise _Fail("logits", "a scalar: expected shape (C,), (N, C) or (N, C, d1, ...)")
    kernel = _kernel_fields(m, xs, target)
    if strict:
        _check_call(logits, target, weight, reduction, ignore_index, smoothing)
        if grad_output is not None:
            if reduction != "none":
                raise _Fail("grad_output", f"only for reduction 'none', not {reduction!r}")
            want = _loss_shape(xs, "none")
            if _shape(grad_output) != want:
                raise _Fail(
                    "grad_output", f"shape {_shape(grad_output)}, expected the loss shape {want}"
                )

    expected = None
    if "expected" in m:
        if not strict:
            raise _Fail("expected", "an expect_error case has no expected values")
        if m["expected"] != "oracle":
            expected = _expected(m["expected"], dtypes, xs, reduction, logits, target, weight)
            _check_expected_z_loss(m["expected"], dtypes, kernel["return_z_loss"])
    elif strict and require_expected:
        raise _Fail(
            "expected",
            "missing: write the values, 'expected: oracle', or run 'python -m harness regen FILE'",
        )

    return Case(
        name=name,
        file=Path(path),
        why=m["why"],
        logits_source=logits,
        target_source=target,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        dtypes=dtypes,
        expected=expected,
        expect_error=expect_error,
        grad_output=grad_output,
        tolerance_overrides=dict(m.get("tolerance", {})),
        tags=tuple(m.get("tags", ())),
        loss=m.get("loss", "cross_entropy"),
        line=getattr(raw, "line", None),
        content_hash=content_hash_of(_plain(m)),
        **kernel,
    )


def _kernel_fields(m: dict, xs: tuple[int, ...], target: np.ndarray | dict) -> dict:
    """The kernel authors' fields (docs/kernel-features.md), checked: softcap, logit_scale,
    z_loss, return_z_loss, shift (absent: plain cross-entropy)."""
    softcap = m.get("softcap")
    if softcap is not None and not (math.isfinite(softcap) and softcap > 0):
        raise _Fail("softcap", f"{softcap!r} must be a finite number > 0 (or null: no softcap)")
    logit_scale = m.get("logit_scale", 1.0)
    if not (math.isfinite(logit_scale) and logit_scale > 0):
        raise _Fail("logit_scale", f"{logit_scale!r} must be a finite number > 0")
    z_loss = m.get("z_loss", 0.0)
    if not (math.isfinite(z_loss) and z_loss >= 0):
        raise _Fail("z_loss", f"{z_loss!r} must be a finite number >= 0 (the lse**2 scale)")
    shift = m.get("shift", 0)
    if shift:
        if _is_float(target):
            raise _Fail("shift", f"{shift}: a shift takes class-index targets, not probabilities")
        if len(xs) == 1:
            raise _Fail(
                "shift",
                f"{shift}: unbatched logits {xs} have no sequence axis to shift along "
                "(give (T, C) or (N, C, T))",
            )
        positions = xs[-1] if len(xs) > 2 else xs[0]
        if shift >= positions:
            raise _Fail(
                "shift",
                f"{shift} must be below the sequence length {positions} (the target's last "
                "axis): a shift of at least T scores no position",
            )
    return {
        "softcap": None if softcap is None else float(softcap),
        "logit_scale": float(logit_scale),
        "z_loss": float(z_loss),
        "return_z_loss": bool(m.get("return_z_loss", False)),
        "shift": int(shift),
    }


def _check_expected_z_loss(value: dict, dtypes: tuple[str, ...], returned: bool) -> None:
    """Literal expected values carry ``z_loss`` exactly when the case sets ``return_z_loss``."""
    per_dtype = not ("loss" in value or "grad" in value)
    entries = {d: value[d] for d in dtypes} if per_dtype else {"": value}
    for d, entry in entries.items():
        where = f"expected.{d}" if d else "expected"
        if returned and "z_loss" not in entry:
            raise _Fail(
                where,
                "return_z_loss is set: give z_loss beside loss and grad "
                "('python -m harness regen' writes it), or 'expected: oracle'",
            )
        if not returned and "z_loss" in entry:
            raise _Fail(f"{where}.z_loss", "a z_loss value needs 'return_z_loss: true'")


def _plain(value: Any) -> Any:
    """A LineDict tree as plain dicts and lists (for hashing and reports)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _loss_shape(xs: tuple[int, ...], reduction: str) -> tuple[int, ...]:
    if reduction != "none" or len(xs) == 1:
        return ()
    return (xs[0], *xs[2:])


def _check_call(logits, target, weight, reduction, ignore_index, smoothing) -> None:
    xs = _shape(logits)
    c = xs[0] if len(xs) == 1 else xs[1]
    if c < 1:
        raise _Fail("logits", f"shape {xs} has no classes (C = 0)")
    if reduction not in REDUCTIONS:
        raise _Fail(
            "reduction",
            f"{reduction!r} must be one of {', '.join(map(repr, REDUCTIONS))} "
            "(an invalid reduction belongs in a case with expect_error: reduction)",
        )
    if not 0.0 <= smoothing <= 1.0:
        raise _Fail(
            "label_smoothing",
            f"{smoothing!r} must lie in [0, 1] (use expect_error: label_smoothing_range for > 1)",
        )
    if weight is not None and _shape(weight) != (c,):
        raise _Fail("weight", f"shape {_shape(weight)}, expected ({c},) for C = {c} classes")
    ts = _shape(target)
    index_shape = () if len(xs) == 1 else (xs[0], *xs[2:])
    if _is_float(target):
        if ts != xs:
            hint = (
                " (class indices must be integers: write 3, not 3.0)" if ts == index_shape else ""
            )
            raise _Fail(
                "target", f"probability target of shape {ts}, expected the logits' shape {xs}{hint}"
            )
        if ignore_index >= 0:
            raise _Fail(
                "ignore_index",
                f"{ignore_index} >= 0 with probability targets raises in PyTorch "
                "(use expect_error: ignore_index_with_probabilities)",
            )
        if isinstance(target, np.ndarray) and not np.all(np.isfinite(target)):
            raise _Fail("target", "non-finite probabilities are not allowed")
        return
    if ts != index_shape:
        raise _Fail(
            "target", f"class-index target of shape {ts}, expected {index_shape} for logits {xs}"
        )
    if isinstance(target, dict):
        _check_label_recipe(target, c, ignore_index)
    if isinstance(target, np.ndarray):
        bad = (target != ignore_index) & ((target < 0) | (target >= c))
        if np.any(bad):
            raise _Fail(
                "target",
                f"class index {int(target[bad].flat[0])} outside [0, {c}) and not "
                f"ignore_index={ignore_index} (use expect_error: index_out_of_range)",
            )


def _check_label_recipe(spec: dict, c: int, ignore_index: int) -> None:
    """A class-index target recipe makes only indices in [0, C) or the case's ignore_index
    (its arrays are made when a run needs them: this is the check literal targets get)."""

    def valid(index: int) -> bool:
        return index == ignore_index or 0 <= index < c

    if spec["generate"] == "full":
        value = spec.get("value", 0)
        if not valid(value):
            raise _Fail(
                "target.value",
                f"class index {value} outside [0, {c}) and not ignore_index={ignore_index} "
                "(use expect_error: index_out_of_range)",
            )
        return
    if spec["classes"] > c:
        raise _Fail(
            "target.classes",
            f"{spec['classes']} classes, but the logits have C = {c}: indices {c} and above "
            "would be out of range (use expect_error: index_out_of_range)",
        )
    marker = spec.get("ignore_index", -100)
    if spec.get("ignore_fraction", 0) > 0 and not valid(marker):
        raise _Fail(
            "target.ignore_index",
            f"{marker} marks ignored targets, but the case's ignore_index is {ignore_index} "
            f"and {marker} is outside [0, {c}): give both the same value",
        )


def _expected(value, dtypes, xs, reduction, logits, target, weight) -> dict[str, Expected]:
    loss_shape = _loss_shape(xs, reduction)
    per_dtype = not ("loss" in value or "grad" in value)
    if per_dtype:
        missing = [d for d in dtypes if d not in value]
        extra = [d for d in value if d not in dtypes]
        if missing or extra:
            raise _Fail(
                "expected",
                f"per-dtype values for {sorted(value)}, but the case runs in {list(dtypes)}",
            )
        entries = {d: value[d] for d in dtypes}
    else:
        arrays = [a for a in (logits, weight) if isinstance(a, np.ndarray)]
        if _is_float(target) and isinstance(target, np.ndarray):
            arrays.append(target)
        inexact = [d for d in dtypes if not all(is_exact(a, d) for a in arrays)]
        if inexact:
            raise _Fail(
                "expected",
                f"one set of values for all dtypes, but the inputs are not exactly representable "
                f"in {inexact}: give values per dtype ('python -m harness regen' writes them)",
            )
        entries = dict.fromkeys(dtypes, value)
    out = {}
    for d, entry in entries.items():
        where = f"expected.{d}" if per_dtype else "expected"
        loss = _array(entry["loss"], f"{where}.loss")
        if isinstance(loss, dict) or loss.shape != loss_shape:
            raise _Fail(
                f"{where}.loss",
                f"shape {_shape(loss)}, expected {loss_shape} for reduction {reduction!r}",
            )
        grad: np.ndarray | None = None
        if "grad" in entry:
            given = _array(entry["grad"], f"{where}.grad")
            if isinstance(given, dict) or given.shape != xs:
                raise _Fail(
                    f"{where}.grad", f"shape {_shape(given)}, expected the logits' shape {xs}"
                )
            grad = given.astype(np.float64)
        z_loss: np.ndarray | None = None
        if "z_loss" in entry:
            z = _array(entry["z_loss"], f"{where}.z_loss")
            if isinstance(z, dict) or z.shape != loss_shape:
                raise _Fail(
                    f"{where}.z_loss",
                    f"shape {_shape(z)}, expected the loss's shape {loss_shape}",
                )
            z_loss = z.astype(np.float64)
        out[d] = Expected(loss.astype(np.float64), grad, z_loss=z_loss)
    for d in dtypes:
        if d not in DTYPE_NAMES:  # pragma: no cover - the schema already refuses it
            raise _Fail("dtype", f"{d!r} must be one of {', '.join(DTYPE_NAMES)}")
    return out


def _build_linear(path: Path, name: str, m: dict, raw: dict, require_expected: bool) -> Case:
    """A fused linear cross-entropy case (docs/fused-linear.md): hidden states (N, H) or
    (B, T, H), a classifier (V, H), an optional bias (V,), class-index targets."""
    for field in ("hidden", "classifier"):
        if field not in m:
            raise _Fail(field, "missing: a fused linear case gives hidden and classifier")
    if "logits" in m:
        raise _Fail("logits", "a fused linear case gives hidden and classifier, not logits")
    if m.get("expect_error") is not None:
        raise _Fail("expect_error", "fused linear cases check values: invalid input is not "
                    "among them (write it with logits)")  # fmt: skip
    hidden = _array(m["hidden"], "hidden", finite=True)
    classifier = _array(m["classifier"], "classifier", finite=True)
    bias = None if m.get("bias") is None else _array(m["bias"], "bias", finite=True)
    target = _array(m["target"], "target")
    weight = None if m.get("weight") is None else _small(_array(m["weight"], "weight", finite=True))
    grad_output = None
    if "grad_output" in m:
        grad_output = _small(_array(m["grad_output"], "grad_output", finite=True))
    hs, ws = _shape(hidden), _shape(classifier)
    for field, a in (("hidden", hidden), ("classifier", classifier), ("bias", bias)):
        if a is not None and not _is_float(a):
            raise _Fail(field, "integers: write floating values (1.0, not 1)")
    if len(hs) not in (2, 3) or 0 in hs:
        raise _Fail("hidden", f"shape {hs}, expected (N, H) or (B, T, H) with no empty axis")
    if len(ws) != 2 or ws[1] != hs[-1] or ws[0] < 1:
        raise _Fail(
            "classifier", f"shape {ws}, expected (V, {hs[-1]}): V >= 1 rows of the hidden size"
        )
    v = ws[0]
    if bias is not None and _shape(bias) != (v,):
        raise _Fail("bias", f"shape {_shape(bias)}, expected ({v},) for V = {v}")
    if _is_float(target):
        raise _Fail("target", "probabilities: a fused linear case takes class indices")
    # the logits' layout the plain checks know: (N, V) for (N, H), (B, V, T) for (B, T, H)
    xs = (hs[0], v) if len(hs) == 2 else (hs[0], v, hs[1])
    reduction = m.get("reduction", "mean")
    ignore_index = m.get("ignore_index", -100)
    smoothing = float(m.get("label_smoothing", 0.0))
    _check_call({"shape": list(xs)}, target, weight, reduction, ignore_index, smoothing)
    if grad_output is not None:
        if reduction != "none":
            raise _Fail("grad_output", f"only for reduction 'none', not {reduction!r}")
        if _shape(grad_output) != hs[:-1]:
            raise _Fail(
                "grad_output", f"shape {_shape(grad_output)}, expected the loss shape {hs[:-1]}"
            )
    kernel = _kernel_fields(m, xs, target)
    dtypes = m.get("dtype", ["float64", "float32"])
    dtypes = tuple([dtypes] if isinstance(dtypes, str) else dtypes)
    if "expected" in m:
        if m["expected"] != "oracle":
            raise _Fail("expected", "a fused linear case takes 'expected: oracle'")
    elif require_expected:
        raise _Fail("expected", "missing: a fused linear case takes 'expected: oracle'")
    return Case(
        name=name,
        file=Path(path),
        why=m["why"],
        logits_source=None,
        target_source=target,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        dtypes=dtypes,
        expected=None,
        grad_output=grad_output,
        tolerance_overrides=dict(m.get("tolerance", {})),
        tags=tuple(m.get("tags", ())),
        loss=m.get("loss", "cross_entropy"),
        line=getattr(raw, "line", None),
        content_hash=content_hash_of(_plain(m)),
        hidden_source=hidden,
        classifier_source=classifier,
        bias_source=bias,
        **kernel,
    )
