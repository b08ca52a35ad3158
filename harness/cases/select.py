"""Choosing cases and dtypes from the command line (-k, --case, --dtype).

``-k`` takes pytest-style expressions: words joined by ``and``, ``or``, ``not`` (or ``!``)
and parentheses, ``not`` binding tightest and ``or`` loosest. A word matches a case whose id
or one of whose tags contains it, ignoring case: ``-k "half_precision and not
mean_over_70000"``. Repeated ``-k`` must all hold. ``--case`` takes exact ids.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable

from harness.cases.model import Case
from harness.errors import UsageError

OPERATORS = ("and", "or", "not")

#: a test of one case, as a parsed -k expression gives it
Matcher = Callable[[Case], bool]

_TOKEN = re.compile(r"[()]|![^\s()]*|[^\s()!][^\s()]*")


def _contains(word: str) -> Matcher:
    word = word.lower()
    return lambda case: word in case.id.lower() or any(word in t.lower() for t in case.tags)


class _Parser:
    """Recursive descent over the tokens of one -k expression (grammar in the module doc)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, int]] = []  # (token, 1-based column)
        for m in _TOKEN.finditer(text):
            token, column = m.group(), m.start() + 1
            while token.startswith("!") and token != "!":  # '!word': the old 'not word'
                self.tokens.append(("!", column))
                token, column = token[1:], column + 1
            self.tokens.append((token, column))
        self.at = 0

    def parse(self) -> Matcher:
        if not self.tokens:
            return lambda case: True
        matcher = self._or()
        if self.at < len(self.tokens):
            token, column = self.tokens[self.at]
            if token == ")":
                self._fail(f"unexpected ')' at column {column}")
            self._fail(f"expected 'and' or 'or' before {token!r} at column {column}")
        return matcher

    def _peek(self) -> str | None:
        return self.tokens[self.at][0] if self.at < len(self.tokens) else None

    def _fail(self, problem: str) -> None:
        raise UsageError(f"-k {self.text!r}: {problem}")

    def _or(self) -> Matcher:
        terms = [self._and()]
        while self._peek() == "or":
            self.at += 1
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else lambda case: any(t(case) for t in terms)

    def _and(self) -> Matcher:
        terms = [self._not()]
        while self._peek() == "and":
            self.at += 1
            terms.append(self._not())
        return terms[0] if len(terms) == 1 else lambda case: all(t(case) for t in terms)

    def _not(self) -> Matcher:
        token = self._peek()
        if token in ("not", "!"):
            self.at += 1
            inner = self._not()
            return lambda case: not inner(case)
        if token == "(":
            self.at += 1
            inner = self._or()
            if self._peek() is None:
                self._fail("expected ')' at the end")
            token, column = self.tokens[self.at]
            if token != ")":
                self._fail(f"expected 'and', 'or' or ')' before {token!r} at column {column}")
            self.at += 1
            return inner
        if token is None:
            self._fail("expected a word or '(' at the end")
        token, column = self.tokens[self.at]
        if token in OPERATORS or token == ")":
            self._fail(f"expected a word or '(' before {token!r} at column {column}")
        self.at += 1
        return _contains(token)


def keyword_matcher(expression: str) -> Matcher:
    """The test of one ``-k`` expression; UsageError names the expression and the place."""
    return _Parser(expression).parse()


def _check_ids(cases: list[Case], ids: list[str]) -> set[str]:
    known = {c.id for c in cases}
    for wanted in ids:
        if wanted not in known:
            close = difflib.get_close_matches(wanted, sorted(known), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise UsageError(f"--case {wanted!r}: no case has this id{hint}")
    return set(ids)


def select(
    cases: list[Case],
    keywords: list[str] | None,
    dtypes: list[str] | None,
    ids: list[str] | None = None,
) -> list[Case]:
    """Cases matching every -k expression and, with ``ids``, having one of those exact ids;
    with ``dtypes`` each case keeps only those dtypes. Suite order is kept."""
    matchers = [keyword_matcher(k) for k in keywords or ()]
    chosen_ids = _check_ids(cases, ids) if ids else None
    out = []
    for case in cases:
        if chosen_ids is not None and case.id not in chosen_ids:
            continue
        if not all(m(case) for m in matchers):
            continue
        if dtypes:
            chosen = tuple(d for d in case.dtypes if d in dtypes)
            if not chosen:
                continue
            if chosen != case.dtypes:
                case = dataclasses.replace(case, dtypes=chosen)
        out.append(case)
    return out
