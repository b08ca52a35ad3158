"""Seeded recipes (``harness.cases.generate``) make the same bits on every machine: their
fingerprints are checked at every load, so a recipe whose values depend on NumPy's version
or the CPU's instruction set makes the built-in suite unloadable there (NumPy 1.26's
``np.exp`` differs from 2.4's in the last bit: the probabilities recipe used it)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from harness.cases import generate


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
    ("spec", "fingerprint"),
    [
        ({"generate": "probabilities", "shape": [1, 10000, 1, 1], "seed": 2073831709},
         "86ca0747bb36509c"),
        ({"generate": "probabilities", "shape": [1, 4, 2, 2, 1, 3], "seed": 45},
         "bd847b379a8fda83"),
    ],
)  # fmt: skip
def test_recipes_make_the_bits_the_corpus_was_written_with(spec, fingerprint):
    """The fingerprints of the corpus, as NumPy 1.26 and 2.4 both make them."""
    assert generate.fingerprint(generate.build(spec)) == fingerprint
