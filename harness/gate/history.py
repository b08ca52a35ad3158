"""``python -m harness history REPORT...|FOLDER [--plot out.png]``: accuracy across versions.

Each (report, adapter) pair is one run. Runs are grouped by wrapped library
(torch, jax, numpy) and ordered by its version; for every matrix group
(see ``harness.reports.matrix``) a cell shows ``conforming/run`` and the worst test
ratio (error / allowed; ``r``), or the worst error in ulp (``u``) for reports
written before test ratios existed. A cell is marked ``!`` when, against the
previous version of the same library and adapter, fewer results conform or the
worst finite test ratio grew beyond 2x above a third of the limit (the rule of
``harness.gate.baseline``). Below the table,
every case that changed status between consecutive versions is listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.adapter_names import file_adapter_name
from harness.execution.results import Status, is_conforming
from harness.gate.baseline import DEFAULT_GROWTH, grew, read_report
from harness.gate.expectations import version_key
from harness.reports import json as report_json
from harness.reports.document import worst_ratio, worst_ulp
from harness.reports.matrix import GROUPS, groups_of

COLUMNS = (*GROUPS, "all")


@dataclass
class Run:
    """One adapter's results in one report."""

    path: Path
    adapter: str
    library: str
    version: str
    python: str
    numpy: str
    results: list[dict]
    #: group -> (conforming, run, worst finite ulp, worst finite test ratio)
    cells: dict[str, tuple[int, int, float | None, float | None]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.adapter} {self.version}".strip()


def _summarise(run: Run) -> None:
    acc: dict[str, list] = {g: [0, 0, None, None] for g in COLUMNS}
    for r in run.results:
        if r["status"] == "unsupported":
            continue
        groups = r.get("groups") or groups_of(
            r["case_id"], r.get("features", ()), r.get("tags", ()), r["dtype"]
        )
        u, q = worst_ulp(r), worst_ratio(r)
        for g in [*groups, "all"]:
            cell = acc[g]
            cell[0] += is_conforming(r["status"])  # unsupported ones are skipped above
            cell[1] += 1
            if u is not None and math.isfinite(u):
                cell[2] = u if cell[2] is None else max(cell[2], u)
            if q is not None and math.isfinite(q):
                cell[3] = q if cell[3] is None else max(cell[3], q)
    run.cells = {g: (c[0], c[1], c[2], c[3]) for g, c in acc.items()}


def load_runs(paths: list[Path]) -> list[Run]:
    """Runs from report files and folders of reports (``*.json``, ``*.json.gz``), ordered by
    library then version."""
    files = report_json.report_files(paths, "history")
    runs = []
    for f in files:
        doc = read_report(f)
        env = doc.get("environment", {})
        for a in doc["adapters"]:
            wraps = a.get("wraps", "")
            library = a.get("library") or wraps.partition(" ")[0]
            version = a.get("version") or wraps.partition(" ")[2]
            run = Run(
                f,
                file_adapter_name(a["name"]),  # one series however a file's path was spelled
                library,
                version,
                env.get("python", ""),
                env.get("numpy", ""),
                [r for r in doc["results"] if r["adapter"] == a["name"]],
            )
            _summarise(run)
            runs.append(run)
    runs.sort(key=lambda r: (r.library, r.adapter, version_key(r.version), str(r.path)))
    return runs


def _previous(runs: list[Run], i: int) -> Run | None:
    if i == 0:
        return None
    prev = runs[i - 1]
    same = prev.library == runs[i].library and prev.adapter == runs[i].adapter
    return prev if same else None


def regressed_cell(prev: tuple | None, cur: tuple) -> bool:
    if prev is None or cur[1] == 0:
        return False
    fewer = prev[1] and cur[0] / cur[1] < prev[0] / prev[1]
    return bool(fewer or grew(prev[3], cur[3], DEFAULT_GROWTH))


def _cell(c: tuple[int, int, float | None, float | None]) -> str:
    ok, run, u, q = c
    if run == 0:
        return "n/a"
    if q is not None:
        return f"{ok}/{run} {q:.2g}r"
    return f"{ok}/{run}" + ("" if u is None else f" {u:.3g}u")


def table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows; a regressed cell ends with ' !'."""
    headers = ["run", "python", "numpy", *COLUMNS]
    rows = []
    for i, run in enumerate(runs):
        prev = _previous(runs, i)
        row = [run.label, run.python, run.numpy]
        for g in COLUMNS:
            text = _cell(run.cells[g])
            if regressed_cell(prev.cells[g] if prev else None, run.cells[g]):
                text += " !"
            row.append(text)
        rows.append(row)
    return headers, rows


def _ran_and_conformed(status: str) -> bool:
    """A status change worth listing: losing support for a case counts as one."""
    return is_conforming(status) and status != Status.UNSUPPORTED.value


def status_changes(runs: list[Run]) -> list[list[str]]:
    """(from, to, case, dtype, status before, status after) for consecutive versions."""
    out = []
    for i, run in enumerate(runs):
        prev = _previous(runs, i)
        if prev is None:
            continue
        before = {(r["case_id"], r["dtype"]): r for r in prev.results}
        for r in run.results:
            o = before.get((r["case_id"], r["dtype"]))
            if o is None or o.get("case_hash") != r.get("case_hash"):
                continue
            if _ran_and_conformed(o["status"]) != _ran_and_conformed(r["status"]):
                out.append(
                    [prev.label, run.label, r["case_id"], r["dtype"], o["status"], r["status"]]
                )
    return out


def render(runs: list[Run]) -> str:
    from tabulate import tabulate

    headers, rows = table(runs)
    parts = [
        "Conforming/run and worst error (ulp) per group; '!' marks a regression "
        "against the previous version of the same adapter.",
        tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True),
    ]
    changes = status_changes(runs)
    parts.append("")
    if changes:
        parts += [
            f"Status changes between consecutive versions ({len(changes)}):",
            tabulate(changes, headers=["from", "to", "case", "dtype", "was", "now"]),
        ]
    else:
        parts.append("No case changed status between consecutive versions.")
    return "\n".join(parts)


def plot(runs: list[Run], out: Path) -> None:
    """Two panels per library: fraction conforming and worst ulp per group, by version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[Run]] = {}
    for run in runs:
        series.setdefault(run.adapter, []).append(run)
    fig, axes = plt.subplots(2, len(series), figsize=(4.5 * len(series), 6), squeeze=False, dpi=90)
    for j, (adapter, rs) in enumerate(series.items()):
        xs = [r.version or r.path.stem for r in rs]
        for g in COLUMNS:
            frac = [r.cells[g][0] / r.cells[g][1] if r.cells[g][1] else math.nan for r in rs]
            ulps = [r.cells[g][2] if r.cells[g][2] is not None else math.nan for r in rs]
            if not all(math.isnan(v) for v in frac):
                axes[0][j].plot(xs, frac, marker="o", label=g)
                axes[1][j].plot(xs, ulps, marker="o", label=g)
        axes[0][j].set_title(adapter)
        axes[0][j].set_ylabel("fraction conforming")
        axes[1][j].set_ylabel("worst error (ulp)")
        axes[1][j].set_yscale("symlog", linthresh=1.0)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
