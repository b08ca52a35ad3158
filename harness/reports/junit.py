"""The JUnit XML report: one <testcase> per case x adapter x dtype, for CI systems.

One <testsuite> per adapter (its wrapped library and device as properties).
``fail`` and ``missing_error`` are <failure>; ``error``, ``crash`` and
``timeout`` are <error>; ``unsupported`` is <skipped>; a non-conformity that
an expectation allows is <skipped type="expected"> with the reason, as pytest
writes an xfail. The verdict is the one under the adapter's semantics; an adapter of another
dialect than PyTorch's gets, on each testcase, the properties ``semantics``, ``torch_status``
and ``torch_message`` (its verdict under PyTorch's semantics). classname is ``lossconf.<adapter>.<case file>``, name is
``<case name>[<dtype>]``; the adapter and the file are written with letters, digits, ``_``
and ``-`` only (``../my_ce.py`` as ``my_ce_py``), since CI tree views split the class name
at dots, and the adapter's own name is a property of its suite. An interrupted run
(``complete: false``) gets a suite ``lossconf.run`` with one <error type="interrupted">, so
that no CI system reads the results it has as the whole run.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.atomic import write_atomic
from harness.reports.document import by_adapter, interruption, torch_status

FAILURE = frozenset({"fail", "missing_error"})
ERROR = frozenset({"error", "crash", "timeout"})


def _text(value: object) -> str:
    """XML 1.0 cannot hold most control characters: drop them."""
    return "".join(ch for ch in str(value) if ch in "\t\n\r" or ord(ch) >= 0x20)


def class_part(text: str) -> str:
    """``text`` as one part of a dotted class name: runs of other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", text).strip("_") or "_"


def _incomplete(root: ET.Element, message: str, totals: dict[str, int]) -> None:
    """The marker of an interrupted run: a suite with one error saying what is missing."""
    suite = ET.SubElement(root, "testsuite", name="lossconf.run", tests="1", failures="0",
                          errors="1", skipped="0", time="0.000000")  # fmt: skip
    tc = ET.SubElement(suite, "testcase", classname="lossconf.run", name="incomplete", time="0")
    el = ET.SubElement(tc, "error", type="interrupted", message=message)
    el.text = message + "; the reports hold only the results made before it stopped"
    totals["tests"] += 1
    totals["errors"] += 1


def build(doc: dict) -> ET.Element:
    root = ET.Element("testsuites", name="lossconf")
    info = {a["name"]: a for a in doc["adapters"]}
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for adapter, results in by_adapter(doc).items():
        suite = ET.SubElement(root, "testsuite", name=f"lossconf.{class_part(adapter)}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="adapter", value=_text(adapter))
        for key in ("wraps", "device", "spec", "semantics"):
            if info.get(adapter, {}).get(key):
                ET.SubElement(props, "property", name=key, value=_text(info[adapter][key]))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        seconds = 0.0
        for r in results:
            stem, _, name = r["case_id"].partition("/")
            tc = ET.SubElement(
                suite,
                "testcase",
                classname=f"lossconf.{class_part(adapter)}.{class_part(stem)}",
                name=f"{name}[{r['dtype']}]",
                time=f"{r.get('seconds', 0.0):.6f}",
            )
            seconds += r.get("seconds", 0.0)
            counts["tests"] += 1
            ratios = [
                (what, e["max_ratio"])
                for what, e in (("loss", r.get("loss_errors")), ("grad", r.get("grad_errors")))
                if e and e.get("max_ratio") is not None
            ]
            other = r.get("semantics", "torch") != "torch"
            if ratios or other:
                tc_props = ET.SubElement(tc, "properties")
                # the test ratio (error / allowed; at most 1 conforms) of each value
                for what, q in ratios:
                    ET.SubElement(tc_props, "property", name=f"{what}_test_ratio", value=f"{q:.3g}")
                if other:  # the verdict is the dialect's; PyTorch's beside it
                    ET.SubElement(tc_props, "property", name="semantics", value=r["semantics"])
                    ET.SubElement(tc_props, "property", name="torch_status", value=torch_status(r))
                    if r.get("torch_message"):
                        ET.SubElement(
                            tc_props, "property", name="torch_message",
                            value=_text(r["torch_message"][:500]),
                        )  # fmt: skip
            status, message = r["status"], _text(r.get("message") or r["status"])
            detail = message + (f"\n\nrepro:\n{r['repro']}" if r.get("repro") else "")
            if r.get("expected"):
                reason = (r.get("expectation") or {}).get("reason", "")
                el = ET.SubElement(
                    tc, "skipped", type="expected", message=_text(f"expected {status}: {reason}")
                )
                el.text = _text(detail)
                counts["skipped"] += 1
            elif status in FAILURE:
                el = ET.SubElement(tc, "failure", type=status, message=message[:500])
                el.text = _text(detail)
                counts["failures"] += 1
            elif status in ERROR:
                el = ET.SubElement(tc, "error", type=status, message=message[:500])
                el.text = _text(detail)
                counts["errors"] += 1
            elif status == "unsupported":
                ET.SubElement(tc, "skipped", type="unsupported", message=message[:500])
                counts["skipped"] += 1
        suite.set("time", f"{seconds:.6f}")
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    stopped = interruption(doc)
    if stopped:
        _incomplete(root, stopped, totals)
    for key, value in totals.items():
        root.set(key, str(value))
    if doc.get("timestamp"):
        root.set("timestamp", doc["timestamp"])
    return root


def render(doc: dict) -> str:
    root = build(doc)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write(path: str | Path, doc: dict) -> None:
    write_atomic(path, render(doc))
