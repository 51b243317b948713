"""Helpers shared by the benchmarks: where the data is, where results go, the table."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def shared_data(name: str) -> Path | None:
    """``../shared/data/<name>``, or a copy in ``.devdata/`` (carried to a GPU machine)."""
    for base in (ROOT.parent / "shared" / "data", ROOT / ".devdata"):
        if (base / name).is_dir():
            return base / name
    return None


def dsb_folders(max_side: int, work: Path) -> tuple[Path, Path]:
    """Folders of links to the DSB 2018 subset's images (and masks) whose longer side is at
    most ``max_side``, and ``work/groups.csv`` (name,group: each image's experiment group from
    the subset's manifest.json)."""
    root = shared_data("dsb2018_stage1_train_subset")
    if root is None:
        raise SystemExit("skipped: ../shared/data/dsb2018_stage1_train_subset not found")
    manifest = json.loads((root / "manifest.json").read_text())
    images, masks = work / "images", work / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    groups = ["name,group"]
    for item in manifest["images"]:
        if max(item["height"], item["width"]) > max_side:
            continue
        for folder, key in ((images, "image_file"), (masks, "mask_file")):
            link = folder / Path(item[key]).name
            if not link.exists():
                link.symlink_to(root / item[key])
        groups.append(f"{Path(item['image_file']).name},{item['group']}")
    (work / "groups.csv").write_text("\n".join(groups) + "\n")
    return images, masks


def machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_results(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None,
                  out: Path | None = None) -> Path:
    """Write ``{"benchmark", "when", "machine", "rows", ...}`` as JSON; returns the path."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine(), **(extra or {}), "rows": rows}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned table of the chosen columns."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
