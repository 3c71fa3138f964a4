"""What an evaluation run leaves behind: ``results.md`` (a Markdown table), ``results.json`` and ``miou.png``.

Files are replaced atomically, so an interrupted run never leaves a truncated file, and they are rewritten after
every dataset, so the datasets already evaluated survive a failure on a later one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from adaptiveclick.storage.files import atomic_write

from .metrics import DatasetResult

RESULTS_JSON = "results.json"
RESULTS_TABLE = "results.md"
MIOU_PLOT = "miou.png"
TABLE_HEADERS = [
    "Dataset",
    "Instances",
    "NoC@85",
    "NoC@90",
    "NoF@85",
    "NoF@90",
    "mIoU@1",
    "mIoU@5",
    "mIoU@last",
    "SPC, s",
    "Time",
]  # SPC: seconds per click


def format_duration(seconds: float) -> str:
    return str(timedelta(seconds=int(round(seconds))))


def table_rows(results: Mapping[str, DatasetResult]) -> list[list[str]]:
    rows = []
    for name, r in results.items():
        miou = r.miou_per_click
        rows.append(
            [
                name,
                str(r.n_instances),
                f"{r.noc(0.85):.2f}",
                f"{r.noc(0.90):.2f}",
                str(r.nof(0.85)),
                str(r.nof(0.90)),
                f"{miou[0]:.4f}",
                f"{miou[min(4, r.n_clicks - 1)]:.4f}",
                f"{miou[-1]:.4f}",
                f"{r.seconds_per_click:.3f}",
                format_duration(r.elapsed_seconds),
            ]
        )
    return rows


def markdown_table(results: Mapping[str, DatasetResult]) -> str:
    headers = list(TABLE_HEADERS)
    clicks = {r.n_clicks for r in results.values()}
    if len(clicks) == 1:
        n = clicks.pop()
        headers[7], headers[8] = f"mIoU@{min(5, n)}", f"mIoU@{n}"
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping[str, DatasetResult], facts: Sequence[str]) -> str:
    """The results table under a list of facts about the run (predictor, mode, command, ...)."""
    head = "# NoC evaluation\n\n" + "".join(f"- {fact}\n" for fact in facts)
    return f"{head}\n{markdown_table(results)}"


def results_json(results: Mapping[str, DatasetResult]) -> dict:
    return {name: r.to_json() for name, r in results.items()}


def plot_miou(results: Mapping[str, DatasetResult], title: str = "") -> Figure:
    """mIoU after each click, one line per dataset (NoC@90 in the legend)."""
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)  # no pyplot: no global state, no display needed
    axes = figure.add_subplot()
    for name, r in results.items():
        clicks = range(1, r.n_clicks + 1)
        axes.plot(clicks, r.miou_per_click, marker="o", markersize=3, label=f"{name} (NoC@90 {r.noc(0.90):.2f})")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("clicks")
    axes.set_ylabel("mIoU")
    axes.set_ylim(0.0, 1.0)
    if results:
        axes.set_xlim(1, max(2, *(r.n_clicks for r in results.values())))
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return figure


def write_report(
    out_dir: Path, results: Mapping[str, DatasetResult], facts: Sequence[str], title: str = ""
) -> list[Path]:
    """Write the three files into ``out_dir`` (created if needed); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, data, plot = out_dir / RESULTS_TABLE, out_dir / RESULTS_JSON, out_dir / MIOU_PLOT
    atomic_write(table, lambda f: f.write(results_markdown(results, facts).encode()))
    atomic_write(data, lambda f: f.write((json.dumps(results_json(results), indent=1) + "\n").encode()))
    figure = plot_miou(results, title)
    atomic_write(plot, lambda f: figure.savefig(f, format="png"))
    return [table, data, plot]
