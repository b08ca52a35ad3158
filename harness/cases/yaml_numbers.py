"""Numbers that YAML 1.1 reads as text: ``1e-5`` (no dot) and ``1.0e5`` (no exponent sign).

PyYAML follows YAML 1.1, whose floats need a dot and a signed exponent; a case file's
``1e-5`` arrives as the string ``'1e-5'``. Errors about such a value give the spelling
that YAML reads as the number meant.
"""

from __future__ import annotations

import re

_EXPONENT = re.compile(r"([-+]?)(\d+)(?:\.(\d*))?([eE])([-+]?)(\d+)")

HOW = "YAML reads an exponent without a dot and a sign as text"


def yaml_number_spelling(value: object) -> str | None:
    """The spelling YAML reads as the number ``value`` means (``'1e-5'`` -> ``'1.0e-5'``,
    ``'1.0e5'`` -> ``'1.0e+5'``); None when ``value`` is not such text."""
    if not isinstance(value, str):
        return None
    m = _EXPONENT.fullmatch(value.strip())
    if m is None:
        return None
    sign, whole, fraction, e, exponent_sign, exponent = m.groups()
    spelling = f"{sign}{whole}.{fraction or '0'}{e}{exponent_sign or '+'}{exponent}"
    return None if spelling == value.strip() else spelling


def text_number_message(value: object) -> str | None:
    """``"'1e-5' is text, not a number: ...; write 1.0e-5"``, or None when ``value`` is not
    a number spelt as text."""
    spelling = yaml_number_spelling(value)
    if spelling is None:
        return None
    return f"{value!r} is text, not a number: {HOW}; write {spelling}"
