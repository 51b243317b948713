"""Plots and a self-contained HTML page of the training rounds (``label-assistant report``).

Everything is drawn from the history :func:`label_assistant.reporting.rounds.gather` builds, so the
page shows the numbers ``label-assistant rounds`` prints. Three PNGs (matplotlib, Agg backend:
files only, no display needed on a server) and ``index.html``, which links them by relative
name: the folder can be copied or served as it is. The page loads nothing from the network
(no external CSS, scripts or fonts), so it opens the same behind a firewall or from a mail.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from label_assistant.files import write_atomic
from label_assistant.reporting.plots import plot_curves, plot_dice, plot_labeled_pixels
from label_assistant.reporting.rounds import (
    CLASS_COLUMNS,
    COLUMNS,
    class_cells,
    job_cells,
    timeline,
    version_cells,
)

DICE_PNG = "dice_by_class.png"
PIXELS_PNG = "labeled_pixels.png"
CURVES_PNG = "training_curves.png"
INDEX_HTML = "index.html"
#: The plots, with the caption the page gives each.
PLOTS = {
    DICE_PNG: "Validation Dice per class (foreground) and their mean, per version (best epoch).",
    PIXELS_PNG: "Labeled pixels per class per version (training + validation images), against "
                "the minimum each class needs.",
    CURVES_PNG: "Training loss and validation mean Dice per epoch; the current version bold.",
}
# --- the page ----------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
th:nth-child(-n+4), td:nth-child(-n+4), th:last-child, td:last-child { text-align: left; }
tr.current td { font-weight: bold; background: #fff3f0; }
tr.classes td { border-bottom: 1px solid #999; }
tr.job td { color: #a33; }
table.classes { margin-left: 2em; font-size: 0.95em; }
table.classes td, table.classes th { border: none; padding: 0 0.6em; text-align: right; }
table.classes td:first-child, table.classes th:first-child { text-align: left; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
.meta { color: #666; }
"""


def _cells(tag: str, cells: list[str]) -> str:
    return "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells)


def _classes_table(row: dict[str, Any]) -> str:
    rows = "".join(f"<tr>{_cells('td', cells)}</tr>" for cells in class_cells(row))
    head = _cells("th", [c[0] for c in CLASS_COLUMNS])
    return f'<table class="classes"><tr>{head}</tr>{rows}</table>'


def rounds_table(history: dict[str, Any]) -> str:
    """The ``rounds`` table in HTML: the same columns, classes in a small table per version."""
    span = len(COLUMNS)
    body = []
    for kind, item in timeline(history):
        if kind == "job":
            *first, status = job_cells(item)
            body.append(f'<tr class="job">{_cells("td", first)}'
                        f'<td colspan="{span - len(first)}">{html.escape(status)}</td></tr>')
            continue
        css = "current" if item["current"] else "version"
        body.append(f'<tr class="{css}">{_cells("td", version_cells(item))}</tr>')
        body.append(f'<tr class="classes"><td colspan="{span}">{_classes_table(item)}</td></tr>')
    head = _cells("th", [c[0] for c in COLUMNS])
    return f'<table class="rounds"><tr>{head}</tr>{"".join(body)}</table>'


def _image_src(path: Path, embed: bool) -> str:
    if not embed:
        return html.escape(path.name)
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(history: dict[str, Any], plots: list[Path], *, minimum: int,
                generated: datetime, embed: bool = False) -> str:
    """The page: what it shows, the rounds table, the plots (linked by name, or embedded)."""
    where = f"project {history['project']}" if history["project"] else "work directory"
    title = f"Training rounds: {where}"
    meta = [
        f"Generated {generated.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        f"models: {history['models']}",
        f"current version: {history['current'] or 'none'}",
        f"backend store: {history['store'] or 'none (quarantined shown as -)'}",
        f"minimum labeled pixels per class: {minimum:,}",
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="meta">' + "<br>".join(html.escape(m) for m in meta) + "</p>",
    ]
    if not history["versions"]:
        parts.append("<p><strong>No model versions yet</strong>: nothing to plot. Train a "
                     "round (label-assistant train, or the backend's training jobs) first.</p>")
    if history["versions"] or history["jobs"]:
        parts += [
            "<h2>Rounds</h2>",
            "<p>* = current version. Times in UTC. admitted: annotations the version learned "
            "from; quarantined: annotations held back by the gate by the time it was made; "
            "labeled px: training + validation images.</p>",
            rounds_table(history),
        ]
    for plot in plots:
        caption = PLOTS.get(plot.name, "")
        parts.append(
            f'<figure><a href="{html.escape(plot.name)}"><img src="{_image_src(plot, embed)}" '
            f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)}'
            "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(history: dict[str, Any], out: Path, *, minimum: int, embed: bool = False,
                 generated: datetime | None = None) -> list[Path]:
    """Write the plots and ``index.html`` into ``out``; returns the paths written.

    Without versions only the page is written (saying so): empty plots would tell nothing.
    The rows need their ``curve`` (``gather(..., include_curves=True)``).
    """
    out.mkdir(parents=True, exist_ok=True)
    versions = history["versions"]
    plots: list[Path] = []
    if versions:
        plots = [
            plot_dice(versions, out / DICE_PNG),
            plot_labeled_pixels(versions, minimum, out / PIXELS_PNG),
            plot_curves(versions, out / CURVES_PNG),
        ]
    generated = generated or datetime.now(timezone.utc)
    page = write_atomic(out / INDEX_HTML, render_html(history, plots, minimum=minimum,
                                                      generated=generated, embed=embed))
    return [*plots, page]


__all__ = ["PLOTS", "plot_curves", "plot_dice", "plot_labeled_pixels", "render_html",
           "rounds_table", "write_report"]
