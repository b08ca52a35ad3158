"""The HTML report: one self-contained file, viewable offline.

Summary, conformance matrix, the non-conforming results grouped by cause
(``harness.reports.causes``) and then each with expected vs got and its repro
snippet, expected non-conformities, and a plot of the error distribution (the
worst test ratio of loss and gradient per result, from 0) for each adapter and
dtype. The plot is drawn with matplotlib (the ``html`` extra), imported only
here, and embedded as a base64 PNG; without matplotlib the report says so and
is otherwise complete.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.reports import causes, matrix
from harness.atomic import write_atomic
from harness.reports.document import (
    DIFFERENCE_HEADERS,
    blocking,
    difference_row,
    differs_under_torch,
    expected,
    headline,
    summary_rows,
    torch_status,
    unexpected_passes,
    verdict,
)

if TYPE_CHECKING:  # matplotlib is optional (the html extra): imported where it draws
    from matplotlib.figure import Figure

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.PASS{color:#176b2c}.FAIL{color:#b00020}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:90%}
td.bad{background:#fde8ea}td.good{background:#e8f6ec}details{margin:.3em 0}
"""


def esc(value: object) -> str:
    return html.escape(str(value))


def table(
    headers: list[str], rows: Sequence[Sequence[object]], classes: list[list[str]] | None = None
) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, v in enumerate(row):
            cls = classes[i][j] if classes else ""
            cells.append(f'<td class="{cls}">{esc(v)}</td>' if cls else f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _matrix_html(doc: dict) -> str:
    headers, rows = matrix.rows(doc["results"])
    classes = []
    for row in rows:
        cls = [""]
        for text in row[1:]:
            ok, _, run = text.partition("/")
            cls.append("" if not run else ("good" if ok == run else "bad"))
        classes.append(cls)
    return table(headers, rows, classes)


def error_plot_png(doc: dict) -> bytes | None:
    """PNG bytes of the test-ratio distribution per adapter x dtype; None without matplotlib."""
    fig = error_figure(doc)
    if fig is None:
        return None
    import matplotlib.pyplot as plt  # error_figure imported it: matplotlib is there

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def error_figure(doc: dict) -> Figure | None:
    """The figure of ``error_plot_png``: test ratios are >= 0, so the axis starts at 0 (a
    symmetric log scale would spend half its height on negative values)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups: dict[str, list[float]] = {}
    for r in doc["results"]:
        values = [
            e.get("max_ratio", e["max_ulp"])
            for e in (r.get("loss_errors"), r.get("grad_errors"))
            if e
        ]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if finite:
            groups.setdefault(f"{r['adapter']}\n{r['dtype']}", []).append(max(finite))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(groups) + 2), 3.6), dpi=90)
    if groups:
        labels = sorted(groups)
        for i, label in enumerate(labels):
            ys = groups[label]
            # a fixed, tiny horizontal spread so overlapping points stay visible
            xs = [i + ((k % 7) - 3) * 0.04 for k in range(len(ys))]
            ax.scatter(xs, ys, s=10, alpha=0.6)
        ax.boxplot([groups[k] for k in labels], positions=range(len(labels)), widths=0.5,
                   showfliers=False)  # fmt: skip
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.axhline(1.0, color="red", linewidth=0.8)  # the limit: above it a result fails
        top = max(max(v) for v in groups.values())
        ax.set_ylim(0, 2 * max(top, 1.0))  # room above the largest point and the limit
    ax.set_ylabel("worst test ratio per result (error / allowed)")
    ax.set_title("Error distribution per adapter and dtype")
    fig.tight_layout()
    return fig


def _result_block(r: dict) -> str:
    exp_line = ""
    if r.get("expectation"):
        exp_line = f"<p>expectation: {esc(r['expectation']['reason'])}</p>"
    repro = (
        f"<details><summary>repro</summary><pre>{esc(r['repro'])}</pre></details>"
        if r.get("repro")
        else ""
    )
    values = ""  # an error or a missing error has no loss to show
    if r.get("expected_loss") is not None or r.get("got_loss") is not None:
        values = (
            f"<p>expected loss: <code>{esc(r.get('expected_loss'))}</code>, "
            f"got: <code>{esc(r.get('got_loss'))}</code></p>"
        )
    under = ""
    if r.get("semantics", "torch") != "torch":
        under = f" ({esc(r['semantics'])} semantics; under torch's: {esc(torch_status(r))})"
    return (
        f"<h4>{esc(r['case_id'])} &middot; {esc(r['adapter'])} &middot; {esc(r['dtype'])} "
        f"&middot; {esc(r['status'])}{under}</h4>"
        f"{values}<pre>{esc(r.get('message', ''))}</pre>{exp_line}{repro}"
    )


def render(doc: dict) -> str:
    v = verdict(doc)
    env = doc.get("environment", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>lossconf report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>lossconf: <span class='{v}'>{v}</span></h1>",
        f"<p>{esc(headline(doc))}</p>",
        f"<p>harness {esc(doc.get('harness_version'))}, Python {esc(env.get('python'))}, "
        f"NumPy {esc(env.get('numpy'))}, {esc(env.get('platform'))}, {esc(doc.get('timestamp'))}</p>",
        "<h2>Summary</h2>",
        table(*summary_rows(doc)),
        "<h2>Conformance matrix (conforming/run)</h2>",
        _matrix_html(doc),
        "<h2>Worst test ratio (error / allowed; at most 1 conforms)</h2>",
        table(*matrix.ratio_rows(doc["results"])),
        "<h2>Error distribution</h2>",
    ]
    png = error_plot_png(doc)
    if png is None:
        parts.append(
            "<p>(install matplotlib, <code>pip install lossconf[html]</code>, for the plot)</p>"
        )
    else:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<img alt='error distribution' src='data:image/png;base64,{data}'>")
    differences = differs_under_torch(doc)
    if differences:
        parts.append(f"<h2>Differences from PyTorch's semantics ({len(differences)})</h2>")
        parts.append(
            "<p>Results of adapters with semantics of their own, judged under PyTorch's "
            "(the gate reads the verdict under the adapter's own).</p>"
        )
        rows = [difference_row(r, width=None) for r in differences]
        parts.append(table(DIFFERENCE_HEADERS, rows))
    bad = blocking(doc)
    found = causes.group(bad)
    if len(found) < len(bad):
        parts.append(f"<h2>Non-conforming results ({len(bad)}) by cause ({len(found)})</h2>")
        parts.append(table(causes.HEADERS, causes.table_rows(found, width=None, sep=", ")))
    parts.append(f"<h2>Non-conforming results ({len(bad)})</h2>")
    parts += [_result_block(r) for r in bad] or ["<p>none</p>"]
    ups = unexpected_passes(doc)
    if ups:
        parts.append(f"<h2>Unexpected passes ({len(ups)})</h2>")
        parts.append(
            table(
                ["case", "adapter", "dtype"],
                [[r["case_id"], r["adapter"], r["dtype"]] for r in ups],
            )
        )
    exp = expected(doc)
    if exp:
        parts.append(f"<h2>Expected non-conformities ({len(exp)})</h2>")
        parts += [_result_block(r) for r in exp]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(path: str | Path, doc: dict) -> None:
    write_atomic(path, render(doc))
