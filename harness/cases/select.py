"""Choosing cases and dtypes from the command line (-k, --dtype)."""

from __future__ import annotations

import dataclasses

from harness.cases.model import Case


def _matches(case: Case, text: str) -> bool:
    text = text.lower()
    return text in case.id.lower() or any(text in t.lower() for t in case.tags)


def select(cases: list[Case], keywords: list[str] | None, dtypes: list[str] | None) -> list[Case]:
    """Cases matching every -k term; with ``dtypes`` each case keeps only those dtypes."""
    out = []
    for case in cases:
        keep = True
        for term in keywords or ():
            term = term.strip()
            negate = term.startswith("!") or term.startswith("not ")
            if negate:
                term = term[1:] if term.startswith("!") else term[4:]
            if _matches(case, term.strip()) == negate:
                keep = False
                break
        if not keep:
            continue
        if dtypes:
            chosen = tuple(d for d in case.dtypes if d in dtypes)
            if not chosen:
                continue
            if chosen != case.dtypes:
                case = dataclasses.replace(case, dtypes=chosen)
        out.append(case)
    return out
