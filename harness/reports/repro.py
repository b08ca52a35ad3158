"""Copy-pasteable reproductions: a few lines of Python, using only the public API, that load one case and call one adapter.

Reproducing a failure is where users of conformance suites say most of their
time goes, so every non-conforming result carries a snippet (printed with
``-v``, stored in the JSON and HTML reports). The snippet loads the case file
by path (the built-in suite when the case came from it), loads the adapter by
the same ``--adapter`` SPEC the run used, and prints got vs expected.
"""

from __future__ import annotations

from pathlib import Path

from harness.cases.loader import builtin_suite
from harness.cases.model import Case


def _case_file_argument(case: Case) -> str:
    """Python source for the list of paths to load."""
    path = Path(case.file).resolve()
    try:  # the built-in suite, wherever lossconf is installed
        inside = path.relative_to(builtin_suite().resolve())
        return f"[builtin_suite() / {str(inside)!r}]"
    except ValueError:
        pass
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return f"[Path({shown!r})]"


def snippet(case: Case, adapter_spec: str, dtype: str, semantics: str = "torch") -> str:
    """Python source reproducing ``case`` through the adapter ``adapter_spec`` in ``dtype``;
    the expected values are those of the adapter's ``semantics`` (its dialect)."""
    paths = _case_file_argument(case)
    lines = [
        f"# lossconf repro: {case.id} [{dtype}] through --adapter {adapter_spec}",
        "from pathlib import Path" if "Path(" in paths else "",
        f"from harness import {'builtin_suite, ' if 'builtin_suite' in paths else ''}load_adapter, load_cases",
        f"case = {{c.id: c for c in load_cases({paths})}}[{case.id!r}]",
        f"inputs = case.inputs({dtype!r})",
        f"out = load_adapter({adapter_spec!r}).run(inputs)",
    ]
    if case.fused:  # fused linear cross-entropy: run_linear and its three gradients
        lines[-2:] = [
            f"inputs = case.linear_inputs({dtype!r})",
            f"out = load_adapter({adapter_spec!r}).run_linear(inputs)",
            f"want = case.linear_expected_for({dtype!r})",
            "print('loss', out.loss, 'expected', want.loss)",
            "for name in want.GRADIENTS:",
            "    got, exp = getattr(out, name), getattr(want, name)",
            "    if got is not None and exp is not None:",
            "        print('max |' + name + ' - expected|', abs(got - exp).max())",
        ]
        return "\n".join(line for line in lines if line)
    if case.expect_error is not None:
        lines[-1] += f"  # should raise: {case.expect_error}"
        lines.append("print('returned instead of raising:', out.loss)")
    else:
        lines += [
            f"want = case.expected_for({dtype!r})"
            if semantics == "torch"
            else f"want = case.expected_for({dtype!r}, {semantics!r})  # {semantics} semantics",
            "print('loss', out.loss, 'expected', want.loss)",
            "if want.grad is not None and out.grad is not None:",
            "    print('max |grad - expected|', abs(out.grad - want.grad).max())",
        ]
    return "\n".join(line for line in lines if line)
