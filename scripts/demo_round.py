"""A demo training round, as the trial that found the blob: measured in a real Label Studio.

Starts what ``make demo`` starts (Label Studio 1.23.2 and the backend, in a fresh
``demo-data/round``), then plays the annotator of the trial: on three tasks it accepts the
nuclei of the Otsu pre-label and paints Background only as bands along the image edges. The
backend admits them and trains a round. The script waits for the round, then reports:

- how long the round took (the job's training time and the wall time from the third
  annotation to the verdict), and the verdict: promoted or kept, and why;
- what serves now, and the Dice of its pre-labels against the demo images' true masks, next
  to Otsu's: the goal is that what annotators see is at least as good as Otsu;
- the pre-label Label Studio shows on the next task (its model version).

It leaves both servers up (Ctrl-C stops them) when ``--keep`` is given, for a screenshot:

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/demo_round.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from label_assistant.devtools import demo  # noqa: E402


def border_annotation(otsu_map: np.ndarray, band: int = 12) -> np.ndarray:
    """The trial's annotation: the Otsu pre-label's nuclei as they are, Background in bands
    along the edges (and so the corners), the rest unlabeled."""
    label_map = np.full(otsu_map.shape, 255, np.uint8)
    for edge in (np.s_[:band], np.s_[-band:], np.s_[:, :band], np.s_[:, -band:]):
        label_map[edge] = 0
    label_map[otsu_map == 1] = 1
    return label_map


def main() -> int:
    from label_assistant.assist.pre import OtsuPrelabeler
    from label_assistant.images import read_image
    from label_assistant.labelmap import instances_to_label_map
    from label_assistant.labelstudio import label_map_to_results, parse_label_config
    from label_assistant.ml_backend.store import Store
    from label_assistant.model.predictor import serving
    from label_assistant.model.promotion import score
    from label_assistant.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the servers up at the end")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-data" / "round" / "round.json")
    args = parser.parse_args()
    folder = ROOT / "demo-data" / "round"
    samples = demo.make_samples(folder)
    otsu = OtsuPrelabeler()
    with demo.label_studio(folder, None) as ls, demo.backend(folder, ls, None) as be:
        project = demo.set_up(ls, be, samples, folder)
        client = project.client
        ids = project.task_ids
        annotated = []
        for sample in [s for s in samples if s.truth is not None][:3]:
            image = read_image(sample.path)
            pre = otsu.prelabel(image).label_map
            results = label_map_to_results(border_annotation(pre),
                                           parse_label_config(demo.LABEL_CONFIG),
                                           include_background=True)
            client.sdk.annotations.create(id=ids[sample.name], result=results)
            annotated.append(sample.name)
        submitted = time.monotonic()
        store = Store.for_workdir(be.workdir)
        job = demo._wait("the training round", lambda: next(
            (j for j in store.jobs(str(project.project)) if j["state"] in ("done", "failed")),
            None), 1800, 2.0)
        wall = time.monotonic() - submitted
        registry = Workspace(be.workdir).registry(project.project)
        info = registry.get(job["version"]) if job["version"] else None
        now = serving(registry, ["Background", demo.CLASS_NAME], device="cpu")
        truths, served, otsus = [], [], []
        for sample in samples:
            if sample.truth is None or sample.name in annotated:
                continue
            image = read_image(sample.path)
            truths.append(instances_to_label_map(demo.load_truth(sample)))
            served.append(now.prelabel(image).label_map)
            otsus.append(otsu.prelabel(image).label_map)
        ours, theirs = score(truths, served, 1), score(truths, otsus, 1)
        demo.retrieve_prelabels(client, project.project, list(ids.values()))
        first = client.next_task_as_displayed(project.project, project.view)
        shown = [p for p in client.predictions(project.project) if p["task"] == first["id"]]
        report = {
            "job": {k: job[k] for k in ("state", "version", "promoted", "detail", "error")},
            "train_seconds": (info.metrics or {}).get("train_seconds") if info else None,
            "epochs_run": (info.metrics or {}).get("epochs_run") if info else None,
            "init": (info.metrics or {}).get("init") if info else None,
            "wall_seconds_from_third_annotation": round(wall, 1),
            "serving": now.version,
            "serving_dice_all": ours.mean_dice, "serving_dice": list(ours.dice),
            "otsu_dice_all": theirs.mean_dice, "otsu_dice": list(theirs.dice),
            "at_least_otsu": ours.mean_dice >= theirs.mean_dice - 1e-9,
            "next_task": first["id"],
            "next_task_prelabel_versions": sorted({p["model_version"] for p in shown}),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        if args.keep:
            print(f"up: {ls.url} (login {ls.username} / {ls.password}); Ctrl-C stops",
                  flush=True)
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0 if report["at_least_otsu"] else 1


if __name__ == "__main__":
    sys.exit(main())
