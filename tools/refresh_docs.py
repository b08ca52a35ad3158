"""Rewrite README.md's sample outputs and corpus figures from real runs of this checkout.

Produced here: the section between ``<!-- section: sample-report -->`` and its
end marker (two runs, pasted), the corpus size sentence, and the pasted outputs
of ``python -m harness coverage`` and ``python -m tests.mutants``. Run it after
changing the corpus, the adapters or the report layout:

    python tools/refresh_readme.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
README = REPO / "README.md"
BEGIN, END = "<!-- section: sample-report -->", "<!-- end section: sample-report -->"


def _run(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    return r.stdout.rstrip("\n")


def section() -> str:
    plain = _run()
    three = _run("--adapter", "torch", "--adapter", "jax", "--adapter", "numpy")
    m = re.search(r"^(\d+) of (\d+) results do not conform", three, re.M)
    failing = m.group(1) if m else "0"
    return f"""{BEGIN}
<!-- written by: python tools/refresh_readme.py -->
The built-in suite through the NumPy reference (the default adapter), pasted
from a run of this commit. Each result's *test ratio* is its error divided by
what the arithmetic allows (docs/tolerances.md): at most 1 conforms.

```
$ python -m harness
{plain}
```

Three implementations in one table; PyTorch's CPU half-precision defects show
up as the only failures ({failing} results;
`--expectations reports/baselines/torch-expectations.yaml` records them, so a
CI gate passes while they stay as they are):

```
$ python -m harness --adapter torch --adapter jax --adapter numpy
{three}
```
{END}"""


def _fenced_after(text: str, anchor: str, body: str) -> str:
    """Replace the body of the first fenced block after ``anchor`` (which must exist)."""
    at = text.index(anchor)
    open_ = text.index("```\n", at) + 4
    close = text.index("\n```", open_)
    return text[:open_] + body + text[close:]


def corpus_figures(text: str) -> str:
    from harness.cases.loader import load_paths

    cases = load_paths().cases
    runs = sum(len(c.dtypes) for c in cases)
    text = re.sub(
        r"`cases/` holds \d+ cases \(\d+ case x dtype runs\)",
        f"`cases/` holds {len(cases)} cases ({runs} case x dtype runs)",
        text,
    )
    quiet = _run("-q").splitlines()[-1]
    text = re.sub(
        r"The whole\nsuite through the numpy adapter: .*?\(2 shared cores\)\.",
        f"The whole\nsuite through the numpy adapter: `python -m harness -q` gives\n`{quiet}`.",
        text,
        flags=re.S,
    )
    coverage = "$ python -m harness coverage\n" + _run("coverage")
    text = _fenced_after(text, "and the ones never covered", coverage)
    mutants = subprocess.run(
        [sys.executable, "-m", "tests.mutants"], cwd=REPO, capture_output=True, text=True,
        check=False,
    ).stdout.rstrip("\n")  # fmt: skip
    return _fenced_after(text, "`python -m tests.mutants`:", mutants)


def main() -> int:
    text = README.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    text = corpus_figures(text[:start] + section() + text[stop:])
    README.write_text(text, encoding="utf-8")
    print(f"rewrote the sample-report section of {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
