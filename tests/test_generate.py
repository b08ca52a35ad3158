"""Seeded recipes (``harness.cases.generate``) make the same values on every machine: their
fingerprints are checked at every load, so a recipe whose values depend on NumPy's version,
the CPU's instruction set or the C library makes the built-in suite unloadable there (NumPy
1.26's ``np.exp`` differs from 2.4's in the last bit: the probabilities recipe used it; the
C library's ``log1p`` makes the last bits of NumPy's rare tail draws of a normal)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap

import mpmath
import numpy as np
import pytest

from harness.cases import generate
from harness.cases.loader import builtin_suite


def test_portable_exp_is_within_a_few_ulp_of_the_exponential():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-700.0, 700.0, 2001), -rng.exponential(5.0, 2000), [0.0]])
    got = generate.portable_exp(x)
    for xi, gi in zip(x.tolist(), got.tolist(), strict=True):
        want = float(mpmath.exp(mpmath.mpf(xi)))
        assert abs(gi - want) <= 4 * math.ulp(want), (xi, gi, want)
    assert generate.portable_exp(np.array([-800.0, -1e6])).tolist() == [0.0, 0.0]


def test_portable_exp_uses_no_vendor_exponential(monkeypatch):
    """Only IEEE's exactly rounded operations: NumPy's and libm's exponentials are not used."""

    def vendor_exp(*args, **kwargs):
        raise AssertionError("np.exp's last bit depends on the NumPy version and the CPU")

    monkeypatch.setattr(np, "exp", vendor_exp)
    monkeypatch.setattr(math, "exp", vendor_exp)
    spec = {"generate": "probabilities", "shape": [3, 5, 2], "seed": 7, "std": 2.0}
    p = generate.build(spec)
    assert p.shape == (3, 5, 2) and np.allclose(p.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("spec", "fingerprint", "exact"),
    [
        ({"generate": "probabilities", "shape": [1, 10000, 1, 1], "seed": 2073831709},
         "c9fe5a6b21825c01", "86ca0747bb36509c"),
        ({"generate": "probabilities", "shape": [1, 4, 2, 2, 1, 3], "seed": 45},
         "acc1d61cd4b973f5", "bd847b379a8fda83"),
    ],
)  # fmt: skip
def test_recipes_make_the_bits_the_corpus_was_written_with(spec, fingerprint, exact):
    """The fingerprints of the corpus, and the float64 bits, as NumPy 1.26 and 2.4 both make
    them (no normal value of these is a tail draw)."""
    a = generate.build(spec)
    assert generate.fingerprint(a) == fingerprint
    assert generate.exact_fingerprint(a) == exact


def _one_ulp_off(a: np.ndarray, where: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[where] = np.nextafter(b[where], np.inf)
    return b


def test_the_fingerprint_ignores_the_last_bits_and_sees_any_other_change():
    """Last-bit differences of some values (another C library's tail draws) keep the
    fingerprint; a value changed beyond a float32 ulp, another seed or another shape do not;
    integers are hashed as they are."""
    spec = {"generate": "normal", "shape": [50, 40], "seed": 3, "std": 2.0}
    a = generate.build(spec)
    tails = np.abs(a) > 2.0 * 3.0  # any few values: which ones does not matter
    assert tails.any()
    assert generate.fingerprint(_one_ulp_off(a, tails)) == generate.fingerprint(a)
    assert generate.exact_fingerprint(_one_ulp_off(a, tails)) != generate.exact_fingerprint(a)
    changed = a.copy()
    changed[7, 3] *= 1 + 2.0**-20
    assert generate.fingerprint(changed) != generate.fingerprint(a)
    assert generate.fingerprint(generate.build({**spec, "seed": 4})) != generate.fingerprint(a)
    assert generate.fingerprint(a.reshape(40, 50)) == generate.fingerprint(a)  # bytes, C order
    labels = generate.build({"generate": "labels", "shape": [9], "seed": 1, "classes": 5})
    assert generate.fingerprint(labels) == generate.exact_fingerprint(labels)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "blocks"])
def test_float64_digests_of_older_case_files_are_still_accepted(stream, monkeypatch):
    """Case files written before hold the sha256 of the float64 bytes: both paths accept it,
    and the fingerprint; a wrong one is refused naming both."""
    monkeypatch.setattr(generate, "BLOCK_ELEMENTS", 64)
    spec = {"generate": "normal", "shape": [30, 10], "seed": 5}
    a = generate.build(spec)

    def made(want: str) -> np.ndarray:
        source = {**spec, "sha256": want}
        if stream:
            return np.concatenate(list(generate.blocks(source)))
        return generate.materialize(source, None)

    for want in (generate.fingerprint(a), generate.exact_fingerprint(a)):
        assert made(want).tobytes() == a.tobytes()
    with pytest.raises(generate.FingerprintMismatch, match=generate.fingerprint(a)):
        made("0123456789abcdef")


#: log1p as another C library rounds it: the x87 extended-precision result rounded to double,
#: nearly always the correctly rounded value (glibc's is not on about 7% of the tail's inputs)
LOG1P_SHIM = """
#include <math.h>
double log1p(double x) { return (double)log1pl((long double)x); }
"""

#: a recipe of the corpus (cases/shapes.yaml) with tail draws whose last bits the shim changes
TAIL_RECIPE = {"generate": "normal", "shape": [201, 1000], "seed": 12, "std": 3.0}


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("cc") is None,
    reason="needs a C compiler and LD_PRELOAD (Linux) to give NumPy another log1p",
)
def test_the_built_in_suite_loads_under_a_c_library_that_rounds_log1p_otherwise(tmp_path):
    """NumPy's normal generator takes its tail draws from the C library's log1p. Under a
    log1p rounded otherwise (LD_PRELOAD), the recipes' float64 bits change, and every
    fingerprinted case file of the built-in suite still loads. With float64 digests it did
    not: 'generated array has fingerprint ..., the case says ...' for seven cases."""
    shim = tmp_path / "liblog1p.so"
    (tmp_path / "shim.c").write_text(LOG1P_SHIM)
    subprocess.run(
        ["cc", "-O2", "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "shim.c"), "-lm"],
        check=True,
    )
    files = [
        str(f)
        for f in sorted(builtin_suite().rglob("*.yaml"))
        if "sha256:" in f.read_text(encoding="utf-8")
    ]
    assert len(files) >= 5
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from harness.cases import generate
        from harness.cases.loader import check_file
        a = generate.build({recipe!r})
        print(generate.exact_fingerprint(a), generate.fingerprint(a))
        for f in sys.argv[1:]:
            for e in check_file(Path(f))[1]:
                print("ERROR", e)
        """
    ).format(recipe=TAIL_RECIPE)
    env = {**os.environ, "LD_PRELOAD": str(shim), "LOSSCONF_CACHE_DIR": "off"}
    out = subprocess.run(
        [sys.executable, "-c", script, *files], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    first, *errors = out.stdout.splitlines()
    a = generate.build(TAIL_RECIPE)
    assert first.split() == [first.split()[0], generate.fingerprint(a)]
    assert first.split()[0] != generate.exact_fingerprint(a), "the shim changed no value"
    assert not errors, "\n".join(errors)
