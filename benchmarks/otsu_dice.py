"""Dice of Otsu pre-labels against real masks, for a few parameter settings.

Data (../shared/data relative to the repository):
- ``stardist_dsb2018_sample``: fluorescence nuclei, instance mask -> foreground = mask > 0;
- ``isbi2012_em_membrane``: 30 EM slices, mask 0 = membrane, 255 = cell interior; class 1 =
  membrane (mask == 0); the interior Dice (background class of the pre-label vs mask == 255)
  is reported too.

Run: ``.venv/bin/python benchmarks/otsu_dice.py [--data DIR] [--out FILE]``; prints a table
and writes JSON (default ``benchmarks/results/otsu_dice.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from label_assistant.assist.pre import OtsuParams, otsu_prelabel
from label_assistant.images import read_image
from label_assistant.metrics import dice_per_class

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

BASE = OtsuParams()
SETTINGS: dict[str, OtsuParams] = {
    "default": BASE,
    "no-separate": replace(BASE, separate_touching=False),
    "no-cleanup": replace(BASE, min_size=0, fill_holes=False, separate_touching=False),
    "min_size=20": replace(BASE, min_size=20),
    "min_size=100": replace(BASE, min_size=100),
    "no-fill-holes": replace(BASE, fill_holes=False),
    "fill-any-hole": replace(BASE, max_hole_size=None),
    "no-smooth": replace(BASE, smooth_sigma=0.0),
    "smooth=2": replace(BASE, smooth_sigma=2.0),
    "equalize": replace(BASE, equalize=True),
    "local-31": replace(BASE, method="local", block_size=31),
    "local-51": replace(BASE, method="local", block_size=51),
    "local-101": replace(BASE, method="local", block_size=101),
    "local-101-no-separate": replace(BASE, method="local", separate_touching=False),
}


def _datasets(root: Path) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """name -> [(stem, image, truth label map with 1 = the object class)]."""
    out: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    nuclei = root / "stardist_dsb2018_sample"
    if nuclei.is_dir():
        out["dsb2018-nuclei"] = [
            (p.stem, read_image(p), (read_image(nuclei / "masks" / p.name)[..., 0] > 0)
             .astype(np.uint8))
            for p in sorted((nuclei / "images").glob("*.tif"))
        ]
    em = root / "isbi2012_em_membrane"
    if em.is_dir():
        out["isbi2012-membrane"] = [
            (p.stem, read_image(p), (read_image(em / "masks" / p.name)[..., 0] == 0)
             .astype(np.uint8))
            for p in sorted((em / "images").glob("*.png"))
        ]
    return out


def evaluate(items, params: OtsuParams) -> dict:
    fg, bg, polarities, seconds = [], [], [], []
    for _stem, image, truth in items:
        start = time.perf_counter()
        pre = otsu_prelabel(image, params)
        seconds.append(time.perf_counter() - start)
        dice = dice_per_class(truth, (pre.label_map > 0).astype(np.uint8), 1)
        fg.append(float(dice[1]))
        bg.append(float(dice[0]))
        polarities.append(pre.polarity)
    return {
        "version": params.version_name(),
        "params": asdict(params),
        "images": len(items),
        "dice_mean": float(np.mean(fg)),
        "dice_std": float(np.std(fg)),
        "dice_min": float(np.min(fg)),
        "background_dice_mean": float(np.mean(bg)),
        "polarity": sorted(set(polarities)),
        "seconds_per_image": float(np.median(seconds)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/otsu_dice.json")
    args = parser.parse_args(argv)
    data = _datasets(args.data)
    if not data:
        print(f"no data sets found under {args.data}")
        return 1
    results: dict[str, dict[str, dict]] = {}
    header = f"{'dataset':18} {'setting':22} {'n':>3} {'Dice':>6} {'±std':>6} {'min':>6} " \
             f"{'bgDice':>6} {'polarity':8} {'s/img':>6}"
    print(header)
    print("-" * len(header))
    for name, items in data.items():
        results[name] = {}
        for setting, params in SETTINGS.items():
            r = evaluate(items, params)
            results[name][setting] = r
            print(f"{name:18} {setting:22} {r['images']:>3} {r['dice_mean']:6.3f} "
                  f"{r['dice_std']:6.3f} {r['dice_min']:6.3f} {r['background_dice_mean']:6.3f} "
                  f"{','.join(r['polarity']):8} {r['seconds_per_image']:6.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(
        {"note": "Dice = foreground (class 1) Dice of the Otsu pre-label; bgDice = Dice of "
                 "the background (for ISBI: the cell interior, mask == 255)",
         "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
