"""The experiment's reports: results.csv, results.json, summary.md and the learning curves."""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from label_assistant.files import write_atomic as _write_atomic
from label_assistant.metrics import dice_iou_from_confusion
from label_assistant.model.registry import json_default
from label_assistant.reporting.plots import plot_gain, plot_learning_curves
from label_assistant.simulate.data import Dataset
from label_assistant.simulate.settings import FULL_DATA, SimulationSettings

# ---------------------------------------------------------------- reports

CSV_COLUMNS = (
    "strategy", "seed", "round", "labeled_images", "admitted", "quarantined", "labeled_pixels",
    "labeled_pixel_share", "test_dice", "test_dice_all", "test_iou", "serving_version",
    "candidate", "promoted", "candidate_test_dice", "candidate_val_dice_all",
    "champion_val_dice_all", "init", "train_seconds", "select_seconds", "eval_seconds",
    "round_seconds", "epochs_run", "prelabel_source", "prelabel_dice", "inspection_warnings",
    "verdict", "error",
)


def _stats(values: list[float | None]) -> tuple[float | None, float | None, int]:
    known = [v for v in values if v is not None]
    if not known:
        return None, None, 0
    sd = float(np.std(known, ddof=1)) if len(known) > 1 else 0.0
    return float(np.mean(known)), sd, len(known)


#: The two views of a round: the test Dice of what serves (``test_dice``: what annotators
#: get, Otsu until a candidate wins) and of the round's candidate, trained on the images
#: selected so far (``candidate_test_dice``: what the selection bought; the reference
#: paper's number). The full-data baseline is a trained model: comparable with the second.
SERVING, CANDIDATE = "test_dice", "candidate_test_dice"

#: The same two views with each test image counted once: the mean of the per-image Dice.
#: The pooled Dice above weighs an image by its pixels; on the DSB 2018 split, 2 of its 9
#: groups (1024 x 1024 and 603 x 1272 px) hold 61% of the test pixels, so a strategy's
#: pooled gain is mostly its gain on those two. With a test split stratified over groups,
#: the per-image mean weighs every group alike ("one image per experiment"). Derived from
#: the rows' per-image lists (:func:`with_image_means`), so older rows have it too.
SERVING_PER_IMAGE, CANDIDATE_PER_IMAGE = "test_image_mean_dice", "candidate_test_image_mean_dice"

#: What the bootstrap over test images resamples in each view: the pooled views sum the
#: resampled images' confusion matrices and take the pooled Dice of the sum (as the view's
#: own number is taken), the per-image views average the resampled images' Dice.
IMAGE_RESAMPLED = {SERVING: ("pooled", "test_image_confusions"),
                   CANDIDATE: ("pooled", "candidate_test_image_confusions"),
                   SERVING_PER_IMAGE: ("mean", "test_image_dice"),
                   CANDIDATE_PER_IMAGE: ("mean", "candidate_test_image_dice")}


def with_image_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the per-image means (:data:`SERVING_PER_IMAGE`,
    :data:`CANDIDATE_PER_IMAGE`; None without per-image Dice). The full-data baseline's
    candidate view is its own test Dice, as for the pooled Dice."""
    out = []
    for r in rows:
        r = dict(r)
        for mean_key, list_key in ((SERVING_PER_IMAGE, "test_image_dice"),
                                   (CANDIDATE_PER_IMAGE, "candidate_test_image_dice")):
            values = np.array([np.nan if v is None else v for v in r.get(list_key) or []],
                              dtype=float)
            r[mean_key] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        out.append(r)
    return out


def curves(rows: list[dict[str, Any]], strategies: Sequence[str], key: str = SERVING
           ) -> dict[str, list[dict]]:
    """Per strategy and round: images, mean labeled pixels, Dice (``key``) mean/sd over
    seeds."""
    out: dict[str, list[dict]] = {}
    for strategy in strategies:
        by_round: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            if r["strategy"] == strategy:
                by_round.setdefault(r["round"], []).append(r)
        points = []
        for rnd in sorted(by_round):
            group = by_round[rnd]
            mean, sd, n = _stats([g.get(key) for g in group])
            points.append({
                "round": rnd, "images": float(np.mean([g["labeled_images"] for g in group])),
                "pixels": float(np.mean([g["labeled_pixels"] for g in group])),
                "dice_mean": mean, "dice_sd": sd, "seeds": n,
            })
        out[strategy] = points
    return out


def write_reports(out: Path, rows: list[dict[str, Any]], settings: SimulationSettings,
                  data: Dataset, otsu_test_dice: float | None = None) -> None:
    """results.csv, results.json, the learning curves (``dice_vs_images.png``,
    ``dice_vs_pixels.png``: what serves; ``*_candidate.png``: the candidates), the gain over
    random (``gain_vs_random.png``, ``gain_vs_random_candidate.png``; the candidates with
    each test image counted once: ``gain_vs_random_candidate_per_image.png``) and summary.md."""
    out = Path(out)
    ordered = sorted(rows, key=lambda r: (r["strategy"] != FULL_DATA, r["strategy"], r["seed"],
                                          r["round"]))
    _write_csv(out / "results.csv", ordered)
    summary = summarize(rows, settings, otsu_test_dice)
    _write_atomic(out / "results.json", json.dumps(
        {"settings": {**asdict(settings), "data": data.fingerprint()},
         "rows": [{k: v for k, v in r.items() if k != "next"} for r in ordered],
         "curves": curves(rows, [FULL_DATA, *settings.strategies]), "summary": summary},
        indent=2, default=json_default) + "\n")
    full_mean, full_sd, _ = _stats([r["test_dice"] for r in rows if r["strategy"] == FULL_DATA])
    plot_learning_curves(out, curves(rows, settings.strategies), full_mean, full_sd, FULL_DATA)
    plot_learning_curves(out, curves(rows, settings.strategies, CANDIDATE), full_mean, full_sd,
                         FULL_DATA, suffix="_candidate")
    plot_gain(out, summary["versus_random"], BASELINE)
    plot_gain(out, summary["versus_random_candidate"], BASELINE, suffix="_candidate")
    plot_gain(out, summary["versus_random_candidate_per_image"], BASELINE,
              suffix="_candidate_per_image", measure="per-image Dice")
    _write_atomic(out / "summary.md", summary_markdown(summary, settings, data))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(path, text.getvalue())


def guard(rows: list[dict[str, Any]], otsu_test_dice: float | None) -> dict[str, Any]:
    """The champion/challenger rule at work: candidates trained, promoted and kept, and the
    rounds in which what served scored below Otsu on the test images (the goal: none)."""
    runs = [r for r in rows if r["strategy"] != FULL_DATA and r.get("promoted") is not None]
    below = [f"{r['strategy']} seed {r['seed']} round {r['round']}" for r in rows
             if r["strategy"] != FULL_DATA and otsu_test_dice is not None
             and r.get("test_dice") is not None and r["test_dice"] < otsu_test_dice - 1e-9]
    return {"otsu_test_dice": otsu_test_dice, "candidates": len(runs),
            "promoted": sum(1 for r in runs if r["promoted"]),
            "kept": sum(1 for r in runs if not r["promoted"]),
            "serving_below_otsu": below}


#: The baseline every strategy is compared with, and the comparison's confidence.
BASELINE = "random"
CONFIDENCE = 0.95
RESAMPLES = 2000


def versus_random(rows: list[dict[str, Any]], settings: SimulationSettings,
                  key: str = SERVING) -> list[dict[str, Any]]:
    """Per strategy and round, the paired difference of test Dice (``key``) to random.

    Pairs are seeds (a seed fixes the training seed and the oracle's annotations for every
    strategy; the test split is the same for all). ``diff``: the mean over seeds of
    (strategy - random); ``low``/``high``: its two-sided 95% t-interval over seeds (the
    decision: ``significant`` when it excludes 0; needs 2 seeds or more). ``image_low`` /
    ``image_high``: a second view, a bootstrap interval of the same difference with seeds
    and test images resampled (hierarchical: :func:`_image_interval`), which also counts
    test-image variation as evidence; None where the rows lack what it resamples (rows
    written before the per-image confusions were kept have no pooled one)."""
    from scipy import stats

    by_key = {(r["strategy"], r["seed"], r["round"]): r for r in rows}
    out = []
    for strategy in settings.strategies:
        if strategy == BASELINE:
            continue
        for rnd in range(settings.rounds + 1):
            pairs = [(by_key[(strategy, seed, rnd)], by_key[(BASELINE, seed, rnd)])
                     for seed in settings.seeds
                     if (strategy, seed, rnd) in by_key and (BASELINE, seed, rnd) in by_key]
            pairs = [(a, b) for a, b in pairs if a.get(key) is not None
                     and b.get(key) is not None]
            if not pairs:
                continue
            diffs = np.array([a[key] - b[key] for a, b in pairs])
            item: dict[str, Any] = {
                "strategy": strategy, "round": rnd, "images": pairs[0][0]["labeled_images"],
                "seeds": len(diffs), "diff": float(diffs.mean()), "low": None, "high": None,
                "significant": False, "image_low": None, "image_high": None,
            }
            if len(diffs) >= 2:
                sd = float(diffs.std(ddof=1))
                half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(diffs) - 1)) * sd \
                    / np.sqrt(len(diffs))
                item.update(low=float(diffs.mean() - half), high=float(diffs.mean() + half))
                item["significant"] = bool(item["low"] > 0 or item["high"] < 0)
            item.update(_image_interval(pairs, *IMAGE_RESAMPLED[key], seed=rnd))
            out.append(item)
    return out


def _image_interval(pairs: list[tuple[dict[str, Any], dict[str, Any]]], statistic: str,
                    key: str, seed: int) -> dict[str, float]:
    """Hierarchical bootstrap (seeds, then each chosen seed's test images, both strategies on
    the same resampled images) of the mean over seeds of the Dice difference. ``statistic``
    "pooled": ``key`` holds each test image's confusion matrix and a resample's Dice is the
    pooled foreground Dice of their sum; "mean": ``key`` holds each test image's Dice and a
    resample's Dice is their mean. Empty when a pair lacks ``key``."""
    per_seed = []
    for a, b in pairs:
        da, db = a.get(key), b.get(key)
        if not da or not db or len(da) != len(db):
            return {}
        if statistic == "pooled":
            per_seed.append((np.asarray(da, dtype=np.int64), np.asarray(db, dtype=np.int64)))
        else:
            d = np.array([x - y for x, y in zip(da, db, strict=True)
                          if x is not None and y is not None])
            if d.size:
                per_seed.append(d)
    if not per_seed:
        return {}
    rng = np.random.default_rng(seed)
    n_seeds = len(per_seed)
    # stats[c, i, j]: seed c's difference on its own image resample for draw i, position j
    stats = np.empty((n_seeds, RESAMPLES, n_seeds))
    for c, values in enumerate(per_seed):
        n_images = len(values[0]) if statistic == "pooled" else values.size
        idx = rng.integers(n_images, size=(RESAMPLES, n_seeds, n_images))
        if statistic == "pooled":
            stats[c] = _pooled_dice(values[0][idx]) - _pooled_dice(values[1][idx])
        else:
            stats[c] = values[idx].mean(axis=-1)
    chosen = rng.integers(n_seeds, size=(RESAMPLES, n_seeds))
    means = np.nanmean(stats[chosen, np.arange(RESAMPLES)[:, None], np.arange(n_seeds)],
                       axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    return {"image_low": float(np.nanpercentile(means, tail)),
            "image_high": float(np.nanpercentile(means, 100 - tail))}


def _pooled_dice(confusions: np.ndarray) -> np.ndarray:
    """The pooled foreground Dice (as the rows' ``test_dice``) of per-image confusion
    matrices summed over the images: (..., images, K+1, K+1) -> (...)."""
    dice = dice_iou_from_confusion(confusions.sum(axis=-3))[0][..., 1:]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without foreground
        return np.nanmean(dice, axis=-1)


def summarize(rows: list[dict[str, Any]], settings: SimulationSettings,
              otsu_test_dice: float | None = None) -> dict[str, Any]:
    """Full-data Dice, per strategy and budget: Dice mean/sd and share of full data, and the
    champion/challenger counts (:func:`guard`); the candidates also with each test image
    counted once (``*_per_image``: :data:`CANDIDATE_PER_IMAGE`)."""
    rows = with_image_means(rows)
    full_mean, full_sd, full_n = _stats([r["test_dice"] for r in rows
                                         if r["strategy"] == FULL_DATA])
    per_image_full = _stats([r[SERVING_PER_IMAGE] for r in rows if r["strategy"] == FULL_DATA])
    table = []
    for strategy, points in curves(rows, settings.strategies).items():
        for p in points:
            share = (p["dice_mean"] / full_mean if p["dice_mean"] is not None and full_mean
                     else None)
            table.append({"strategy": strategy, "round": p["round"], "images": p["images"],
                          "pixels": p["pixels"], "dice_mean": p["dice_mean"],
                          "dice_sd": p["dice_sd"], "seeds": p["seeds"], "share_of_full": share})
    per_image_rows = [{**r, CANDIDATE_PER_IMAGE: r[SERVING_PER_IMAGE]}
                      if r["strategy"] == FULL_DATA else r for r in rows]
    return {"full_data": {"dice_mean": full_mean, "dice_sd": full_sd, "seeds": full_n},
            "table": table, "best_final": _best_final(table, settings),
            "versus_random": versus_random(rows, settings, SERVING),
            "versus_random_candidate": versus_random(rows, settings, CANDIDATE),
            "candidate_table": [
                {"strategy": strategy, **p} for strategy, points
                in curves(rows, settings.strategies, CANDIDATE).items() for p in points],
            "full_data_per_image": dict(zip(("dice_mean", "dice_sd", "seeds"), per_image_full,
                                            strict=True)),
            "versus_random_candidate_per_image": versus_random(per_image_rows, settings,
                                                               CANDIDATE_PER_IMAGE),
            "candidate_table_per_image": [
                {"strategy": strategy, **p} for strategy, points
                in curves(rows, settings.strategies, CANDIDATE_PER_IMAGE).items()
                for p in points],
            "guard": guard(rows, otsu_test_dice)}


def _best_final(table: list[dict[str, Any]], settings: SimulationSettings) -> dict | None:
    final = [t for t in table if t["round"] == settings.rounds and t["dice_mean"] is not None]
    if not final:
        return None
    best = max(final, key=lambda t: t["dice_mean"])
    random_final = next((t for t in final if t["strategy"] == "random"), None)
    return {**best, "random_dice_mean": random_final["dice_mean"] if random_final else None}


def _pm(mean: float | None, sd: float | None) -> str:
    return "-" if mean is None else f"{mean:.4f} ± {sd or 0.0:.4f}"


def summary_markdown(summary: dict[str, Any], settings: SimulationSettings,
                     data: Dataset) -> str:
    full = summary["full_data"]
    n_all = len(data.pool) + len(data.test)
    lines = [
        "# Active-learning simulation",
        "",
        f"Pool {len(data.pool)} images, test {len(data.test)} ({settings.test_split}); "
        f"{settings.annotation} annotation"
        + (f" ({settings.sparse_fraction:.0%} of pixels)" if settings.annotation == "sparse"
           else "")
        + f"; seeds {', '.join(map(str, settings.seeds))}; rounds of "
        f"{settings.initial} + {settings.rounds} x {settings.per_round} images.",
        "",
        "## Final round (test Dice, mean ± sd over seeds)",
        "",
        "| strategy | images labeled | test Dice | share of full-data Dice |",
        "|---|---|---|---|",
        f"| {FULL_DATA} | {len(data.pool)} of {n_all} | {_pm(full['dice_mean'], full['dice_sd'])}"
        " | 100% |",
    ]
    final = [t for t in summary["table"] if t["round"] == settings.rounds]
    for t in final:
        share = "-" if t["share_of_full"] is None else f"{t['share_of_full']:.1%}"
        lines.append(f"| {t['strategy']} | {t['images']:.0f} of {n_all} | "
                     f"{_pm(t['dice_mean'], t['dice_sd'])} | {share} |")
    lines += ["", "## Every round (test Dice mean; share of full data)", ""]
    budgets = settings.budgets
    lines.append("| strategy | " + " | ".join(f"{b} images" for b in budgets) + " |")
    lines.append("|---|" + "---|" * len(budgets))
    for strategy in settings.strategies:
        cells = []
        for r in range(len(budgets)):
            t = next((t for t in summary["table"] if t["strategy"] == strategy
                      and t["round"] == r), None)
            if t is None or t["dice_mean"] is None:
                cells.append("-")
            else:
                share = "" if t["share_of_full"] is None else f" ({t['share_of_full']:.1%})"
                cells.append(f"{t['dice_mean']:.4f}{share}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    best = summary["best_final"]
    if best is not None:
        lines += ["", _best_line(best, n_all)]
    per_image_full = summary.get("full_data_per_image") or {}
    for title, candidates, reference in (
            ("", summary.get("candidate_table") or [], full),
            (", each test image counted once", summary.get("candidate_table_per_image") or [],
             per_image_full)):
        if not any(c["dice_mean"] is not None for c in candidates):
            continue
        what = "the mean of the per-image test Dice" if title else "test Dice"
        lines += ["", f"## Every round, the candidate trained on the selected images{title} "
                  f"({what}, mean ± sd over seeds; share of full data)", ""]
        if reference.get("dice_mean") is not None:
            lines += [f"Full data: {_pm(reference['dice_mean'], reference['dice_sd'])}.", ""]
        lines += ["| strategy | " + " | ".join(f"{b} images" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for strategy in settings.strategies:
            cells = []
            for r in range(len(budgets)):
                c = next((c for c in candidates if c["strategy"] == strategy
                          and c["round"] == r), None)
                if c is None or c["dice_mean"] is None:
                    cells.append("-")
                    continue
                share = f" ({c['dice_mean'] / reference['dice_mean']:.1%})" \
                    if reference.get("dice_mean") else ""
                cells.append(f"{_pm(c['dice_mean'], c['dice_sd'])}{share}")
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    for title, versus in (("what serves", summary.get("versus_random") or []),
                          ("the candidate trained on the selected images",
                           summary.get("versus_random_candidate") or []),
                          ("the candidate, each test image counted once",
                           summary.get("versus_random_candidate_per_image") or [])):
        if not versus:
            continue
        lines += ["", f"## Against {BASELINE}, {title} (test Dice difference, paired by seed)",
                  "", f"Mean over seeds of (strategy - {BASELINE}); 95% t-interval over seeds "
                  "(significant when it excludes 0); beside it a bootstrap interval of the "
                  "same difference over seeds and test images (\"-\" for rows without what it "
                  "resamples).", "",
                  "| strategy | round | images | difference | 95% interval (seeds) | "
                  "significant | 95% interval (seeds x images) |",
                  "|---|---|---|---|---|---|---|"]
        for v in versus:
            seeds = "-" if v["low"] is None else f"[{v['low']:+.4f}, {v['high']:+.4f}]"
            images = "-" if v["image_low"] is None else \
                f"[{v['image_low']:+.4f}, {v['image_high']:+.4f}]"
            lines.append(f"| {v['strategy']} | {v['round']} | {v['images']} | "
                         f"{v['diff']:+.4f} | {seeds} | "
                         f"{'yes' if v['significant'] else 'no'} | {images} |")
    g = summary.get("guard") or {}
    if g.get("candidates"):
        otsu = g["otsu_test_dice"]
        lines += ["", "## Champion and challenger", "",
                  f"Candidates trained {g['candidates']}: promoted {g['promoted']}, kept "
                  f"{g['kept']}. Otsu's test Dice {'-' if otsu is None else f'{otsu:.4f}'}; "
                  "rounds where what served scored below it: "
                  + (", ".join(g["serving_below_otsu"]) or "none") + "."]
    return "\n".join(lines) + "\n"


def _best_line(best: dict[str, Any], n_all: int) -> str:
    text = (f"Best at the final budget: **{best['strategy']}** with {best['images']:.0f} of "
            f"{n_all} images ({best['images'] / n_all:.0%}), Dice {best['dice_mean']:.4f}")
    if best["share_of_full"] is not None:
        text += f" = {best['share_of_full']:.1%} of the full-data Dice"
    if best["random_dice_mean"] is not None:
        diff = best["dice_mean"] - best["random_dice_mean"]
        text += f"; random at the same budget {best['random_dice_mean']:.4f} ({diff:+.4f})"
    return text + "."

