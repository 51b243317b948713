"""Plots and a self-contained HTML page of the training rounds (``label-assistant report``).

Everything is drawn from the history :func:`label_assistant.rounds.gather` builds, so the
page shows the numbers ``label-assistant rounds`` prints. Three PNGs (matplotlib, Agg backend:
files only, no display needed on a server) and ``index.html``, which links them by relative
name: the folder can be copied or served as it is. The page loads nothing from the network
(no external CSS, scripts or fonts), so it opens the same behind a firewall or from a mail.
"""

from __future__ import annotations

import base64
import html
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from label_assistant.rounds import (
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
_CURRENT_COLOR = "#d62728"


def class_order(versions: list[dict[str, Any]], background: bool = True) -> list[str]:
    """Every class name met in the versions, in first-seen order (background first if kept)."""
    names: list[str] = []
    for row in versions:
        for i, name in enumerate(row["classes"]):
            if (background or i > 0) and name not in names:
                names.append(name)
    return names


def _value(mapping: dict[str, Any] | None, key: str) -> float:
    value = (mapping or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Write the figure next to its place, then rename: a reader never sees half a PNG."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp)
    _pyplot().close(fig)
    os.replace(tmp, path)


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center",
            transform=ax.transAxes, color="gray")


def _version_axis(ax: Any, versions: list[dict[str, Any]]) -> None:
    ax.set_xticks(range(len(versions)))
    ax.set_xticklabels([r["version"] for r in versions],
                       rotation=45 if len(versions) > 8 else 0, fontsize=8)
    ax.set_xlabel("version (training round)")
    for i, row in enumerate(versions):
        if row["current"]:
            ax.axvline(i, color=_CURRENT_COLOR, alpha=0.25, linewidth=6, label="current")
    ax.set_xlim(-0.5, len(versions) - 0.5)
    ax.grid(alpha=0.3)


def plot_dice(versions: list[dict[str, Any]], path: Path) -> Path:
    """Validation Dice per foreground class and the mean, over versions."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=120)
    x = list(range(len(versions)))
    names = class_order(versions, background=False)
    drawn = False
    for name in names:
        y = [_value(r["val_dice_by_class"], name) for r in versions]
        if any(not math.isnan(v) for v in y):
            # One class: the mean is that class's Dice, drawn over it; the label says so.
            ax.plot(x, y, marker="o", label=name if len(names) > 1 else f"{name} (= mean)")
            drawn = True
    mean = [float(r["val_mean_dice"]) if isinstance(r["val_mean_dice"], (int, float))
            else math.nan for r in versions]
    if len(names) > 1 and any(not math.isnan(v) for v in mean):
        ax.plot(x, mean, marker="s", color="black", linestyle="--", label="mean")
        drawn = True
    if not drawn:
        _no_data(ax, "validation Dice")
    _version_axis(ax, versions)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("validation Dice")
    ax.set_title("Validation Dice per class (best epoch)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return path


def plot_labeled_pixels(versions: list[dict[str, Any]], minimum: int, path: Path) -> Path:
    """Labeled pixels per class per version; the minimum per class as a dashed line.

    A log scale when every count is positive and they span over two decades (background
    usually dwarfs the classes).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=120)
    x = list(range(len(versions)))
    values: list[float] = []
    for name in class_order(versions):
        y = [_value(r["labeled_pixels_by_class"], name) for r in versions]
        if any(not math.isnan(v) for v in y):
            ax.plot(x, y, marker="o", label=name)
            values += [v for v in y if not math.isnan(v)]
    if not values:
        _no_data(ax, "labeled pixels")
    ax.axhline(minimum, color="gray", linestyle="--", label=f"minimum per class ({minimum:,})")
    positive = [v for v in [*values, minimum] if v > 0]
    if values and len(positive) == len(values) + 1 and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
    _version_axis(ax, versions)
    ax.set_ylabel("labeled pixels")
    ax.set_title("Labeled pixels per class (training + validation images)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return path


def plot_curves(versions: list[dict[str, Any]], path: Path) -> Path:
    """Train loss and validation mean Dice per epoch, one line per version; current bold.

    The rows need their ``curve`` (``gather(..., include_curves=True)``).

    Older versions are drawn light to dark; with more than twelve, only the current one is
    named in the legend.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(10.0, 4.2), dpi=120)
    cmap = plt.get_cmap("viridis")
    n = len(versions)
    drawn = {"train_loss": False, "val_mean_dice": False}
    for i, row in enumerate(versions):
        curve = [e for e in row.get("curve") or [] if isinstance(e, dict)]
        current = row["current"]
        style = {"color": _CURRENT_COLOR, "linewidth": 2.6, "alpha": 1.0, "zorder": 3} \
            if current else {"color": cmap(0.15 + 0.7 * i / max(n - 1, 1)), "linewidth": 1.0,
                             "alpha": 0.7, "zorder": 2}
        label = f"{row['version']} (current)" if current else \
            (row["version"] if n <= 12 else None)
        for ax, key in ((loss_ax, "train_loss"), (dice_ax, "val_mean_dice")):
            points = [(e.get("epoch", k + 1), e[key]) for k, e in enumerate(curve)
                      if isinstance(e.get(key), (int, float))]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="." if len(points) < 30 else None, label=label, **style)
                drawn[key] = True
    for ax, key, title in ((loss_ax, "train_loss", "training loss"),
                           (dice_ax, "val_mean_dice", "validation mean Dice")):
        if not drawn[key]:
            _no_data(ax, title)
        else:
            ax.legend(fontsize=7)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(title)
        ax.set_title(f"{title[0].upper()}{title[1:]} per epoch", fontsize=10)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return path


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
    page = out / INDEX_HTML
    tmp = page.with_name(f".{page.name}.tmp")
    tmp.write_text(render_html(history, plots, minimum=minimum, generated=generated,
                               embed=embed), encoding="utf-8")
    os.replace(tmp, page)
    return [*plots, page]


__all__ = ["PLOTS", "plot_curves", "plot_dice", "plot_labeled_pixels", "render_html",
           "rounds_table", "write_report"]
