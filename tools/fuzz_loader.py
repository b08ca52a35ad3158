"""Mutation fuzzing of the case-file loader: whatever loads must run, whatever does not load
must fail with a ``CaseFileError`` naming the file, and nothing may hang.

Each example takes one case of a shipped case file (with the file's ``defaults``), as a
small YAML document, and applies one to three seeded mutations to its text: a value
replaced by an edge token (``.nan``, ``1e309``, ``[]``, a huge integer, a recipe with
bad parameters, ...), a line deleted or duplicated, a byte flipped, a token spliced into
a list, an indentation changed. Then:

1. ``harness.cases.loader.load_file`` must return cases or raise ``CaseFileError``;
2. for every case it returns, the run's own preparation must succeed for every dtype:
   its inputs (``Case.inputs``) and, for cases up to 4,096 logits, its expected values
   (``Case.expected_for``), as ``python -m harness`` would make them; recipes above
   65,536 elements are not made (their parameters are checked like the others);
3. each example finishes within 10 seconds.

Anything else is a crash: the file is kept under ``--keep DIR`` to reproduce it.
``tests/test_loader_fuzz.py`` runs a seeded slice of 300 examples on every test run.

Usage::

    python tools/fuzz_loader.py --examples 60000 [--seed 0] [--keep crashes/]

Its figure in docs/robustness.md comes from ``python tools/refresh_docs.py loader-fuzz``,
which runs it (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
os.environ.setdefault("LOSSCONF_CACHE_DIR", "off")  # every example is loaded afresh

import yaml  # noqa: E402

from harness.cases.generate import FingerprintMismatch  # noqa: E402
from harness.cases.loader import SafeYamlLoader, builtin_suite, discover, load_file  # noqa: E402
from harness.errors import CaseFileError  # noqa: E402

#: tokens that replace a value
EDGE_TOKENS = (
    ".nan", ".inf", "-.inf", "1e309", "-1e309", "1e-320", "0", "-0.0", "-1", "-2", "1",
    "2", "3", "99999999999999999999999", "-99999999999999999999999", "9223372036854775808",
    "[]", "[[]]", "{}", "null", "true", "false", '"text"', "''", "[1, 2]", "[[1.0], [2.0, 3.0]]",
    "[.nan]", "none", "mean", "sum", "float16", "bfloat16", "int8", "oracle",
    "{generate: labels, shape: [2], seed: 1, classes: 0}",
    "{generate: labels, shape: [2], seed: 1, classes: 99999999999999999999999}",
    "{generate: labels, shape: [2], seed: 1, classes: 3, ignore_fraction: 1.5}",
    "{generate: labels, shape: [2], seed: 1, classes: 3, ignore_fraction: .nan}",
    "{generate: labels, shape: [2], seed: 1, classes: 3, ignore_index: 1e400}",
    "{generate: normal, shape: [-1, 3]}",
    "{generate: normal, shape: [2, 3], std: -1}",
    "{generate: normal, shape: [2, 3], std: .inf}",
    "{generate: normal, shape: [2, 3], mean: .nan}",
    "{generate: normal, shape: [2, 3], seed: -5}",
    "{generate: normal, shape: [2, 3], seed: 1.5}",
    "{generate: normal, shape: [2, 3], classes: 3}",
    "{generate: uniform, shape: [2, 3], low: 1, high: 0}",
    "{generate: probabilities, shape: [2, 3], std: 2}",
    "{generate: full, shape: [2, 3], value: .nan}",
    "{generate: full, shape: [2, 3], value: 99999999999999999999999}",
    "{generate: full, shape: [0, 3]}",
    "{generate: nope, shape: [2]}",
    "{generate: normal}",
    '{generate: normal, shape: [2, 3], sha256: "0000000000000000"}',
)  # fmt: skip
MUTATIONS = ("replace", "delete", "duplicate", "flip", "splice", "indent")
#: recipes above this many elements are checked, not made, by this fuzzer
MAKE_ELEMENTS = 1 << 16
#: cases up to this many logits also get their expected values
ORACLE_ELEMENTS = 4096
HANG_SECONDS = 10


def case_documents(path: Path) -> list[str]:
    """One small YAML document per case of ``path``: its ``defaults`` and that one case."""
    text = path.read_text(encoding="utf-8")
    root = yaml.compose(text, Loader=SafeYamlLoader)
    parts = {k.value: v for k, v in root.value}
    keys = {k.value: k for k, _ in root.value}
    defaults = ""
    if "defaults" in parts:
        start = text.rfind("\n", 0, keys["defaults"].start_mark.index) + 1
        defaults = text[start : parts["defaults"].end_mark.index].rstrip() + "\n"
    docs = []
    for item in parts["cases"].value:
        line_start = text.rfind("\n", 0, item.start_mark.index) + 1
        body = text[line_start : item.end_mark.index]
        docs.append(f"{defaults}cases:\n{body}\n")
    return docs


@functools.lru_cache(maxsize=1)
def corpus() -> list[tuple[str, str]]:
    """(file name, document) for every case of the built-in suite."""
    return [
        (path.name, doc) for path in discover([builtin_suite()]) for doc in case_documents(path)
    ]


_TOKEN = None


def _tokens(line: str) -> list[tuple[int, int]]:
    """Spans of the scalar values in a line (after ': ', '- ', '[', ',' or '{')."""
    import re

    global _TOKEN
    if _TOKEN is None:
        _TOKEN = re.compile(r"(?<=[:\[,{-] )[^\s,\[\]{}:#][^,\[\]{}#]*?(?=\s*(?:[,\]}]|$|#))")
    return [m.span() for m in _TOKEN.finditer(line)]


def mutate(text: str, rng: random.Random) -> tuple[str, list[str]]:
    """``text`` with one to three mutations; returns the new text and what was done."""
    done = []
    for _ in range(rng.randint(1, 3)):
        lines = text.split("\n")
        kind = rng.choice(MUTATIONS)
        i = rng.randrange(len(lines))
        if kind == "replace":
            spans = [(j, s) for j, line in enumerate(lines) for s in _tokens(line)]
            if not spans:
                continue
            j, (a, b) = rng.choice(spans)
            token = rng.choice(EDGE_TOKENS)
            lines[j] = lines[j][:a] + token + lines[j][b:]
            done.append(f"line {j + 1}: value -> {token}")
        elif kind == "delete" and len(lines) > 1:
            del lines[i]
            done.append(f"line {i + 1} deleted")
        elif kind == "duplicate":
            lines.insert(i, lines[i])
            done.append(f"line {i + 1} duplicated")
        elif kind == "flip" and lines[i]:
            k = rng.randrange(len(lines[i]))
            ch = chr(rng.choice([0, 9, 10, 34, 35, 38, 39, 42, 45, 58, 91, 93, 123, 125, 0xFFFD]))
            lines[i] = lines[i][:k] + ch + lines[i][k + 1 :]
            done.append(f"line {i + 1}: char {k} -> {ch!r}")
        elif kind == "splice":
            j = next(
                (j for j in rng.sample(range(len(lines)), len(lines)) if "[" in lines[j]), None
            )
            if j is None:
                continue
            k = lines[j].index("[") + 1
            token = rng.choice(EDGE_TOKENS)
            lines[j] = f"{lines[j][:k]}{token}, {lines[j][k:]}"
            done.append(f"line {j + 1}: {token} spliced into a list")
        elif kind == "indent":
            delta = rng.choice([-2, -1, 1, 2])
            lines[i] = " " * delta + lines[i] if delta > 0 else lines[i][-delta:]
            done.append(f"line {i + 1}: indentation {delta:+d}")
        text = "\n".join(lines)
    return text, done


@dataclass
class Outcome:
    kind: str  # "loaded", "rejected", "crash", "hang"
    detail: str = ""


def _shape_size(source: object) -> int:
    if isinstance(source, dict):
        return math.prod(int(s) for s in source["shape"])
    return int(getattr(source, "size", 0))


def check(path: Path) -> Outcome:
    """Load ``path`` and prepare its cases as a run would (see the module docstring)."""
    try:
        cases = load_file(path)
    except CaseFileError:
        return Outcome("rejected")
    except Exception as e:
        return Outcome("crash", f"load_file: {type(e).__name__}: {e}")
    for case in cases:
        sizes = [_shape_size(case.logits_source), _shape_size(case.target_source)]
        if max(sizes) > MAKE_ELEMENTS:
            continue
        for dtype in case.dtypes:
            try:
                case.inputs(dtype)
                if case.expect_error is None and sizes[0] <= ORACLE_ELEMENTS:
                    case.expected_for(dtype)
            except FingerprintMismatch:
                continue  # reported as an 'error' result by a run: not a crash
            except Exception as e:
                return Outcome("crash", f"case {case.name!r} [{dtype}]: {type(e).__name__}: {e}")
    return Outcome("loaded")


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)
    crashes: list[tuple[str, str, list[str], str]] = field(default_factory=list)
    seconds: float = 0.0


def run(examples: int, seed: int, *, keep: Path | None = None, docs=None) -> Tally:
    """``examples`` mutated documents from ``docs`` (default: the whole corpus)."""
    docs = docs if docs is not None else corpus()
    rng = random.Random(seed)
    tally = Tally()
    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(examples):
                name, doc = docs[rng.randrange(len(docs))]
                text, done = mutate(doc, rng)
                path = Path(tmp) / f"m{n}_{name}"
                path.write_text(text, encoding="utf-8", errors="surrogatepass")
                signal.alarm(HANG_SECONDS)
                try:
                    outcome = check(path)
                except _Hang:
                    outcome = Outcome("hang", f"more than {HANG_SECONDS} s")
                finally:
                    signal.alarm(0)
                tally.counts[outcome.kind] += 1
                if outcome.kind in ("crash", "hang"):
                    tally.crashes.append((name, text, done, outcome.detail))
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / path.name).write_text(text, encoding="utf-8")
                path.unlink()
    finally:
        signal.signal(signal.SIGALRM, previous)
    tally.seconds = time.perf_counter() - start
    return tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--examples", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep crashing files here")
    args = p.parse_args(argv)
    tally = run(args.examples, args.seed, keep=args.keep)
    c = tally.counts
    print(
        f"{args.examples} mutated files in {tally.seconds:.0f} s: {c['loaded']} loaded and "
        f"prepared, {c['rejected']} rejected with a CaseFileError, {c['crash']} crashes, "
        f"{c['hang']} hangs"
    )
    for name, _, done, detail in tally.crashes[:20]:
        print(f"  {name}: {'; '.join(done)}: {detail}")
    return 1 if tally.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
