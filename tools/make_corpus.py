"""Write the combinatorial grid of the built-in suite, and fill in recipe fingerprints.

The grid is target kind x weight x ignore_index x label_smoothing x reduction x
shape, each case run in float64, float32, float16 and bfloat16. Inputs are
drawn from one seeded generator per case (seeded by the case's position in the
grid) and quantised to multiples of 1/8 (logits, probabilities) and 1/4
(weights), so they are exact in every dtype and one set of expected values
serves all four. Expected values come from the oracle afterwards::

    python tools/make_corpus.py                      # writes cases/generated/grid_*.yaml
    python -m harness regen cases/generated          # fills in expected values

``--fingerprints FILE...`` replaces ``sha256: FILL`` in the recipes of hand-written
case files with the fingerprint of the array the recipe makes (see
harness/generate.py); existing fingerprints are never touched.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from harness.regen import fill_fingerprints

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "cases" / "generated"
SEED = 20260
DTYPES = ["float64", "float32", "float16", "bfloat16"]
#: absolute gradient tolerance for the grid's half-precision runs (see render)
HALF_GRAD_ATOL = {"float16": 2.5e-3, "bfloat16": 2.5e-2}

#: name -> logits shape; C is axis 1 (axis 0 when unbatched)
SHAPES: dict[str, tuple[int, ...]] = {
    "n3c5": (3, 5),
    "n1c4": (1, 4),
    "kdim_n2c3d2": (2, 3, 2),
    "unbatched_c4": (4,),
}
WEIGHTS = ("none", "uniform", "positive", "some_zero")
#: name -> (ignore_index, which positions are ignored)
IGNORES: dict[str, tuple[int, str]] = {
    "none": (-100, "none"),
    "some": (-100, "some"),
    "all": (-100, "all"),
    "in_range": (1, "some"),
    "out_of_range": (255, "some"),
}
SMOOTHINGS = (0.0, 0.15, 1.0)
REDUCTIONS = ("none", "mean", "sum")


@dataclass(frozen=True)
class Spec:
    """One grid point."""

    probability: bool
    weight: str
    ignore: str
    smoothing: float
    reduction: str
    shape: str

    @property
    def name(self) -> str:
        kind = "prob" if self.probability else "index"
        parts = [kind, f"w-{self.weight}"]
        if not self.probability:
            parts.append(f"ii-{self.ignore}")
        parts += [f"ls-{self.smoothing:g}", self.reduction, self.shape]
        return "_".join(parts)

    def why(self) -> str:
        kind = "probability targets" if self.probability else "class-index targets"
        ignore = "" if self.probability else f", ignore {self.ignore}"
        return (
            f"grid point: {kind}, weights {self.weight}{ignore}, label_smoothing "
            f"{self.smoothing:g}, reduction {self.reduction}, logits {SHAPES[self.shape]}"
        )

    def tags(self) -> list[str]:
        tags = ["grid"]
        if self.probability:
            tags.append("targets")
        if self.weight != "none":
            tags.append("weights")
        if not self.probability and self.ignore != "none":
            tags.append("ignore_index")
        if self.smoothing:
            tags.append("smoothing")
        if len(SHAPES[self.shape]) == 1:
            tags.append("unbatched")
        elif len(SHAPES[self.shape]) > 2:
            tags.append("kdim")
        return tags


def grid() -> list[Spec]:
    """Every grid point that is a valid call (single-position shapes cannot have 'some' ignored)."""
    out = []
    for prob, weight, ignore, eps, red, shape in itertools.product(
        (False, True), WEIGHTS, IGNORES, SMOOTHINGS, REDUCTIONS, SHAPES
    ):
        if prob and ignore != "none":
            continue  # ignore_index >= 0 raises with probabilities; negative ones do nothing
        positions = int(np.prod(_index_shape(SHAPES[shape]), dtype=np.int64))
        if IGNORES[ignore][1] == "some" and positions < 2:
            continue
        out.append(Spec(prob, weight, ignore, eps, red, shape))
    return out


def _index_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return () if len(shape) == 1 else (shape[0], *shape[2:])


def _eighths(rng: np.random.Generator, shape: tuple[int, ...], limit: int) -> np.ndarray:
    """Multiples of 1/8 in [-limit/8, limit/8]: exact in float16 and bfloat16."""
    return rng.integers(-limit, limit + 1, size=shape) / 8.0


def inputs(spec: Spec, rng: np.random.Generator) -> dict:
    """The case's inputs as plain lists: logits (shape), target, weight (C,) or None."""
    shape = SHAPES[spec.shape]
    c = shape[0] if len(shape) == 1 else shape[1]
    logits = _eighths(rng, shape, 24)
    case: dict = {"logits": logits.tolist()}
    if spec.probability:
        # 8 units of mass spread over the classes at each position: rows of eighths summing to 1
        moved = (*_index_shape(shape), c)
        counts = rng.multinomial(8, np.ones(c) / c, size=_index_shape(shape) or None)
        target = np.asarray(counts, dtype=np.float64).reshape(moved) / 8.0
        if len(shape) > 1:
            target = np.moveaxis(target, -1, 1)
        case["target"] = target.tolist()
    else:
        ii, which = IGNORES[spec.ignore]
        target = rng.integers(0, c, size=_index_shape(shape))
        if which == "all":
            target = np.full_like(target, ii)
        elif which == "some":
            flat = target.reshape(-1)
            ignored = rng.choice(flat.size, size=max(1, flat.size // 3), replace=False)
            flat[ignored] = ii
            if ii in range(c):  # make sure some kept position uses another class
                kept = np.setdiff1d(np.arange(flat.size), ignored)
                flat[kept] = np.where(flat[kept] == ii, (ii + 1) % c, flat[kept])
        case["target"] = target.tolist()
        if ii != -100:
            case["ignore_index"] = ii
    if spec.weight == "uniform":
        case["weight"] = [1.5] * c
    elif spec.weight == "positive":
        case["weight"] = (rng.integers(1, 13, size=c) / 4.0).tolist()
    elif spec.weight == "some_zero":
        w = rng.integers(1, 13, size=c) / 4.0
        w[rng.choice(c, size=max(1, c // 3), replace=False)] = 0.0
        if not spec.probability:
            # keep the weighted mean's denominator away from 0 (that edge has hand-written cases)
            kept = [y for y in np.ravel(case["target"]) if 0 <= y < c and y != ii]
            if kept and not w[kept].any():
                w[kept[0]] = 1.0
        case["weight"] = w.tolist()
    return case


def _flow(value: object) -> str:
    """A value as one line of flow-style YAML."""
    if not isinstance(value, list):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


def render(specs: list[Spec], title: str) -> str:
    lines = [
        "# Written by tools/make_corpus.py; expected values by 'python -m harness regen'.",
        "# Do not edit by hand: change the generator and run both again.",
        f"description: {title}",
        "defaults:",
        f"  dtype: {_flow(DTYPES)}",
        "  tags: [grid]",
        "  # Gradients here are differences of terms up to max(w) = 3 in size; a half-precision",
        "  # framework that stores log_softmax in the dtype (PyTorch, JAX autograd) loses about",
        "  # an ulp of those terms to cancellation: atol is ~1.3 ulp of the dtype at 3.",
        f"  tolerance: {{float16: {{grad_atol: {HALF_GRAD_ATOL['float16']}}}, "
        f"bfloat16: {{grad_atol: {HALF_GRAD_ATOL['bfloat16']}}}}}",
        "",
        "cases:",
    ]
    for spec in specs:
        rng = np.random.default_rng([SEED, _stable_index(spec)])
        fields = inputs(spec, rng)
        lines.append(f"  - name: {spec.name}")
        lines.append(f'    why: "{spec.why()}"')
        lines.append(f"    logits: {_flow(fields['logits'])}")
        lines.append(f"    target: {_flow(fields['target'])}")
        if "weight" in fields:
            lines.append(f"    weight: {_flow(fields['weight'])}")
        if "ignore_index" in fields:
            lines.append(f"    ignore_index: {fields['ignore_index']}")
        if spec.smoothing:
            lines.append(f"    label_smoothing: {spec.smoothing}")
        lines.append(f"    reduction: {spec.reduction}")
        extra = [t for t in spec.tags() if t != "grid"]
        if extra:
            lines.append(f"    tags: {_flow(extra)}")
    return "\n".join(lines) + "\n"


def _stable_index(spec: Spec) -> int:
    """A seed component from the spec's name, so adding grid values never reseeds other cases."""
    return int.from_bytes(hashlib.sha256(spec.name.encode()).digest()[:8], "little")


def write_grid(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    specs = grid()
    files = {
        "grid_index.yaml": (
            [s for s in specs if not s.probability],
            "class-index targets, every combination of weight, ignore_index, label_smoothing, "
            "reduction and shape",
        ),
        "grid_probability.yaml": (
            [s for s in specs if s.probability],
            "probability targets, every combination of weight, label_smoothing, reduction and shape",
        ),
    }
    written = []
    for name, (chosen, title) in files.items():
        path = out / name
        path.write_text(render(chosen, title), encoding="utf-8")
        written.append(path)
        print(f"{path}: {len(chosen)} cases", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--fingerprints",
        nargs="+",
        metavar="FILE",
        help="fill 'sha256: FILL' in these case files instead of writing the grid",
    )
    args = p.parse_args(argv)
    if args.fingerprints:
        for name in args.fingerprints:
            n = fill_fingerprints(Path(name))  # also done by 'python -m harness regen'
            print(f"{name}: {n} fingerprints filled", file=sys.stderr)
        return 0
    write_grid()
    return 0


if __name__ == "__main__":
    sys.exit(main())
