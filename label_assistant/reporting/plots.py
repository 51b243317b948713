"""Every matplotlib figure of the project, drawn to PNG files (Agg backend: no display).

- the rounds of one project (:mod:`.report`): validation Dice per class, labeled pixels per
  class, and the training curves of every version;
- the simulator's learning curves (:mod:`label_assistant.simulate.reports`): test Dice against
  labeled images and against labeled pixels, one line per strategy.

A figure is written next to its place and renamed, so a reader never sees half a PNG.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

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


def plot_learning_curves(out: Path, curves: dict[str, list[dict[str, Any]]],
                         full_mean: float | None, full_sd: float | None,
                         full_label: str = "full-data", suffix: str = "") -> list[Path]:
    """Dice vs labeled images and vs labeled pixels (``dice_vs_images.png``,
    ``dice_vs_pixels.png`` in ``out``, ``suffix`` before ``.png``): per strategy a mean line
    with its ±sd band (points ``images``, ``pixels``, ``dice_mean``, ``dice_sd``), and the
    full-data line."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    written = []
    for x_key, label, name in (("images", "labeled images", f"dice_vs_images{suffix}.png"),
                               ("pixels", "labeled pixels", f"dice_vs_pixels{suffix}.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
        for strategy, points in curves.items():
            points = [p for p in points if p["dice_mean"] is not None]
            if not points:
                continue
            x = np.array([p[x_key] for p in points])
            y = np.array([p["dice_mean"] for p in points])
            sd = np.array([p["dice_sd"] for p in points])
            (line,) = ax.plot(x, y, marker="o", label=strategy)
            ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.15)
        if full_mean is not None:
            ax.axhline(full_mean, color="black", linestyle="--", label=full_label)
            ax.axhspan(full_mean - (full_sd or 0.0), full_mean + (full_sd or 0.0),
                       color="black", alpha=0.08)
        if x_key == "images":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(label)
        ax.set_ylabel("test Dice (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _save(fig, out / name)
        written.append(out / name)
    return written


def plot_gain(out: Path, versus: list[dict[str, Any]], baseline: str = "random",
              suffix: str = "", measure: str = "test Dice") -> Path | None:
    """``gain_vs_random{suffix}.png``: per strategy, the mean difference of ``measure`` to the
    baseline by labeled images, with its 95% interval over seeds as error bars (None: nothing
    to plot)."""
    if not versus:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    strategies = list(dict.fromkeys(v["strategy"] for v in versus))
    for k, strategy in enumerate(strategies):
        points = [v for v in versus if v["strategy"] == strategy]
        shift = (k - (len(strategies) - 1) / 2) * 0.15  # keep the error bars apart
        x = np.array([p["images"] for p in points], float) + shift
        y = np.array([p["diff"] for p in points])
        low = np.array([p["diff"] if p["low"] is None else p["low"] for p in points])
        high = np.array([p["diff"] if p["high"] is None else p["high"] for p in points])
        ax.errorbar(x, y, yerr=np.vstack([y - low, high - y]), marker="o", capsize=3,
                    label=strategy)
    ax.axhline(0.0, color="black", linewidth=1)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(f"{measure} - {baseline}\n(mean, 95% interval over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out / f"gain_vs_random{suffix}.png"
    _save(fig, path)
    return path
