"""The JUnit XML report: one <testcase> per case x adapter x dtype, for CI systems.

One <testsuite> per adapter (its wrapped library and device as properties).
``fail`` and ``missing_error`` are <failure>; ``error``, ``crash`` and
``timeout`` are <error>; ``unsupported`` is <skipped>; a non-conformity that
an expectation allows is <skipped type="expected"> with the reason, as pytest
writes an xfail. classname is ``lossconf.<adapter>.<case file>``, name is
``<case name>[<dtype>]``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.atomic import write_atomic
from harness.reports.document import by_adapter

FAILURE = frozenset({"fail", "missing_error"})
ERROR = frozenset({"error", "crash", "timeout"})


def _text(value: object) -> str:
    """XML 1.0 cannot hold most control characters: drop them."""
    return "".join(ch for ch in str(value) if ch in "\t\n\r" or ord(ch) >= 0x20)


def build(doc: dict) -> ET.Element:
    root = ET.Element("testsuites", name="lossconf")
    info = {a["name"]: a for a in doc["adapters"]}
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for adapter, results in by_adapter(doc).items():
        suite = ET.SubElement(root, "testsuite", name=f"lossconf.{adapter}")
        props = ET.SubElement(suite, "properties")
        for key in ("wraps", "device", "spec"):
            if info.get(adapter, {}).get(key):
                ET.SubElement(props, "property", name=key, value=_text(info[adapter][key]))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        seconds = 0.0
        for r in results:
            stem, _, name = r["case_id"].partition("/")
            tc = ET.SubElement(
                suite,
                "testcase",
                classname=f"lossconf.{adapter}.{stem}",
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
            if ratios:  # the test ratio (error / allowed; at most 1 conforms) of each value
                tc_props = ET.SubElement(tc, "properties")
                for what, q in ratios:
                    ET.SubElement(tc_props, "property", name=f"{what}_test_ratio", value=f"{q:.3g}")
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
