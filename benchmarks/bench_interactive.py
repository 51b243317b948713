"""Interactive labeling (smart tools): latency per interaction, clicks to quality, and how
close the model's windowed probabilities are to the whole image's.

``latency``: ``/predict`` with a smart tool's context through the real web app (Flask,
images fetched from a local HTTP server standing in for Label Studio, the RLE answer
encoded), on 512 x 512 and 2048 x 2048 nucleus-like images: the first interaction on a task
(fetch, decode, working image, with a model: its input and its run on the window the prompt
reads, segmentation, answer) and each further click (the task's cache: segmentation and
answer, the model only where a click reads pixels not run yet). Goal: first < 1 s, further
< 300 ms. With ``--workdir W --project P`` the model-guided path runs too (W's project P
model version must serve); the model is loaded and warmed up before the timing starts
(:meth:`~label_assistant.ml_backend.prelabels.Prelabels.warm_up`, as the service does after
``/setup``), and that time is reported apart.

``quality``: the standard click simulator of interactive-segmentation papers on the objects
of the shared DSB 2018 images (``stardist_dsb2018_sample``, ``dsb2018_stage1_train_subset``):
protocol ``clicks`` (the first click at the object's centre, each next one at the centre of
the largest error, positive or negative) gives IoU after 1, 3, 5 clicks and NoC@85 / NoC@90
(capped at 20); protocol ``box`` (the object's tight box, then corrective clicks) gives IoU
after the box and after 1, 3, 5 more clicks. For GrabCut alone and, with ``--workdir``,
model-guided (the serving version's probabilities read window by window, as the service
reads them: :meth:`~label_assistant.ml_backend.prelabels.Prelabels.probability_windows`).
Every object by default; ``--per-group K --seed S``: a seeded random sample of K objects of
each experiment group of the DSB subset (its manifest's ``group``) when CPU time is short
(the StarDist sample stays whole). Images a model was trained on are left out with
``--exclude FILE`` (a name a line). Results per dataset and per group, and over the images
the model serves. On an image the model does not know (the guard's domain), the model-guided
variant is GrabCut by the service's own rule, and its row repeats GrabCut's numbers.

``guesses``: the first guess GrabCut starts from after a box, without a model, on the same
objects as ``quality`` (every object, or ``--per-group``), boxes tight or ``--box-margin M``
wider on each side (a share of the object's size): an ellipse centred in the box, sized by
its contrast with a ring around it (:func:`~label_assistant.interactive.segment.
ellipse_guess`, the default), the box's inscribed ellipse, and the side of an Otsu split of
the box that touches its border less (:func:`~label_assistant.interactive.segment.
intensity_guess`, the earlier default): the box's IoU with the object for each, in one run.

``windows``: on images the model knows, each object's box read from a fresh
:class:`~label_assistant.interactive.probabilities.WindowedProbabilities` (the first
interaction's model run) against the whole image's tiled probabilities (the pre-label's):
mean absolute difference of the class probability in the box, share of box pixels whose
0.5 decision differs, and the time of each.

    python benchmarks/bench_interactive.py latency [--workdir W --project 1]
    python benchmarks/bench_interactive.py quality [--workdir W --project 1] [--per-group 20]
    python benchmarks/bench_interactive.py guesses [--per-group 20] [--box-margin 0.25]
    python benchmarks/bench_interactive.py windows --workdir W --project 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import print_table, shared_data, write_results  # noqa: E402

from label_assistant.devtools.samples import nuclei_image  # noqa: E402
from label_assistant.images import read_image  # noqa: E402
from label_assistant.interactive import Prompt, segment, working_image  # noqa: E402
from label_assistant.interactive.probabilities import Shifted  # noqa: E402
from label_assistant.interactive.simulate import (  # noqa: E402
    box_of,
    mask_iou,
    next_click,
    noc,
)

CONFIG = (
    '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
    '<Label value="Background"/><Label value="Nucleus"/></BrushLabels>'
    '<RectangleLabels name="box" toName="image" smart="true"><Label value="Nucleus"/>'
    '</RectangleLabels><KeyPointLabels name="click" toName="image" smart="true">'
    '<Label value="Nucleus"/></KeyPointLabels></View>'
)
CAP = 20


# --- latency -----------------------------------------------------------------------------


def _context(kind: str, xy: tuple[float, ...], size: int, positive: bool = True
             ) -> dict[str, Any]:
    base = {"id": f"{kind}{xy}", "to_name": "image", "original_width": size,
            "original_height": size, "image_rotation": 0}
    if kind == "box":
        x0, y0, x1, y1 = (100 * v / size for v in xy)
        return {**base, "type": "rectanglelabels", "from_name": "box",
                "value": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0,
                          "rotation": 0, "rectanglelabels": ["Nucleus"]}}
    return {**base, "type": "keypointlabels", "from_name": "click", "is_positive": positive,
            "value": {"x": 100 * xy[0] / size, "y": 100 * xy[1] / size, "width": 0.3,
                      "keypointlabels": ["Nucleus"]}}


def _latency_image(source: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` image and its instance map: ``synthetic`` (bright ellipses,
    :func:`~label_assistant.devtools.samples.nuclei_image`) or ``dsb`` (a dark DSB 2018
    image of the 520 x 696 group, not one a model of the docs was trained on, repeated to
    the size: a model trained on dark DSB images knows it, so that its path runs)."""
    if source == "synthetic":
        return nuclei_image(size, seed=size)
    root = shared_data("dsb2018_stage1_train_subset")
    if root is None:
        raise SystemExit("--image dsb needs ../shared/data/dsb2018_stage1_train_subset")
    names = sorted(n for n, g in _groups(root).items() if g == "520x696_c1_dark")
    name = names[-1]
    image = np.squeeze(read_image(root / "images" / name))
    labels = np.squeeze(read_image(root / "masks" / name)).astype(np.int32)
    reps = (-(-size // image.shape[0]), -(-size // image.shape[1]))
    tiled = np.tile(image, reps)[:size, :size]
    # each copy's objects get ids of their own
    copies = np.arange(reps[0] * reps[1]).reshape(reps)
    offsets = np.kron(copies, np.ones(labels.shape, np.int32))[:size, :size]
    instances = np.where(np.tile(labels, reps)[:size, :size] > 0,
                         np.tile(labels, reps)[:size, :size] + offsets * int(labels.max()), 0)
    return np.ascontiguousarray(tiled), instances


def latency(args: argparse.Namespace) -> list[dict[str, Any]]:
    from test_backend_support import ImageServer

    from label_assistant.ml_backend.app import create_app
    from label_assistant.ml_backend.settings import Settings

    server = ImageServer()
    rows = []
    try:
        variants = [("grabcut", None)]
        if args.workdir:
            variants.append(("model-guided", args.workdir))
        for variant, workdir in variants:
            with tempfile.TemporaryDirectory() as tmp:
                settings = Settings(workdir=Path(workdir or tmp), label_studio_url=server.origin,
                                    device="cpu")
                app = create_app(settings)
                client = app.test_client()
                project = f"{args.project}.1" if workdir else "1.1"
                if workdir:  # the service loads the model after /setup, not on a click
                    from label_assistant.labelstudio.config import parse_label_config

                    prelabels = app.extensions["label_assistant"]["predictor"]
                    started = time.perf_counter()
                    prelabels.warm_up(str(args.project), parse_label_config(CONFIG))
                    serving = prelabels.serving(str(args.project), parse_label_config(CONFIG))
                    if not hasattr(serving, "model"):
                        raise SystemExit(f"no model serves project {args.project} in {workdir}")
                    print(f"model {serving.version} loaded and warmed up in "
                          f"{time.perf_counter() - started:.1f} s (not in the timings)")
                for size in args.sizes:
                    image, instances = _latency_image(args.image, size)
                    for task in range(args.tasks):
                        path = f"/data/upload/{variant}-{size}-{task}.png"
                        server.add_png(path, image)
                        obj = instances == (task % int(instances.max())) + 1
                        rows += _one_task(client, project, path, obj, size, variant, task,
                                          args.clicks, args.first)
                        if workdir:
                            cache = app.extensions["label_assistant"]["interactive"].cache
                            probabilities = cache.entries()[-1].probabilities
                            rows[-1]["model_runs"] = getattr(probabilities, "runs", None)
                            rows[-1]["model_pixels"] = getattr(probabilities, "pixels_run",
                                                               None)
    finally:
        server.close()
    summary = []
    for variant in sorted({r["variant"] for r in rows}):
        for size in args.sizes:
            for kind in ("first", "further"):
                ms = [r["ms"] for r in rows if (r["variant"], r["size"], r["kind"]) ==
                      (variant, size, kind)]
                part = [r for r in rows if (r["variant"], r["size"]) == (variant, size)]
                if ms:
                    summary.append({
                        "variant": variant, "size": size, "interaction": kind, "n": len(ms),
                        "median_ms": statistics.median(ms), "max_ms": max(ms),
                        "methods": ",".join(sorted({str(r["method"]) for r in part
                                                    if (r["kind"] == "first") ==
                                                    (kind == "first")})),
                        "model_runs_per_task": _mean_of(part, "model_runs"),
                        "model_pixels_per_task": _mean_of(part, "model_pixels")})
    print_table(summary, ["variant", "size", "interaction", "n", "median_ms", "max_ms",
                          "methods", "model_runs_per_task", "model_pixels_per_task"])
    write_results("interactive_latency", rows, {"summary": summary, "image": args.image,
                                                "first": args.first, "clicks": args.clicks})
    return summary


def _mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _one_task(client: Any, project: str, path: str, obj: np.ndarray, size: int, variant: str,
              task: int, n_clicks: int, first: str = "box") -> list[dict[str, Any]]:
    """A box or a click at the object's centre (the first interaction on the task), then
    simulated corrective clicks."""
    box = box_of(obj)
    if first == "box":
        results = [_context("box", (box.x0, box.y0, box.x1, box.y1), size)]
    else:
        centre = next_click(np.zeros_like(obj), obj)
        results = [_context("click", (centre.x, centre.y), size)]
    rows = []
    prediction = np.zeros_like(obj)
    for i in range(n_clicks + 1):
        body = {"tasks": [{"id": task + 1, "data": {"image": path}}], "project": project,
                "label_config": CONFIG, "params": {"context": {"result": results}}}
        started = time.perf_counter()
        response = client.post("/predict", json=body)
        ms = 1000 * (time.perf_counter() - started)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        answer = response.json["results"][0]
        rows.append({"variant": variant, "size": size, "task": task,
                     "kind": "first" if i == 0 else "further", "ms": ms,
                     "method": answer.get("method"), "bytes": len(response.get_data())})
        if answer["result"]:
            from label_assistant.labelstudio.rle import decode_rle

            prediction = decode_rle(answer["result"][0]["value"]["rle"], size, size) > 128
        click = next_click(prediction, obj) or next_click(np.zeros_like(obj), obj)
        # Label Studio sends the clicks without the box (the backend remembers the box).
        clicks = [r for r in results if r["type"] == "keypointlabels"]
        results = clicks + [_context("click", (click.x, click.y), size, click.positive)]
    return rows


# --- clicks to quality ---------------------------------------------------------------------


def _groups(root: Path) -> dict[str, str]:
    """Image file name -> its experiment group (the manifest's ``group``; the dataset's name
    when its manifest has none)."""
    manifest = root / "manifest.json"
    data = json.loads(manifest.read_text()) if manifest.is_file() else {}
    return {Path(im["image_file"]).name: im["group"] for im in data.get("images", [])
            if "image_file" in im and "group" in im}


def objects(args: argparse.Namespace) -> list[tuple[str, str, Path, Path, list[int]]]:
    """``(dataset, group, image, mask, object ids)`` of each image measured: every object,
    or with ``--per-group K`` a random sample (seed ``--seed``) of K objects of each group
    of the DSB subset (the StarDist sample stays whole)."""
    exclude = set()
    if args.exclude:
        exclude = {line.strip() for line in args.exclude.read_text().splitlines() if line.strip()}
    found = []
    for name in args.datasets:
        root = shared_data(name)
        if root is None:
            print(f"skipping {name}: not in ../shared/data", file=sys.stderr)
            continue
        groups = _groups(root)
        images = [p for p in sorted((root / "images").iterdir()) if p.name not in exclude]
        ids = {p: [int(i) for i in np.unique(read_image(root / "masks" / p.name)) if i]
               for p in images}
        if args.per_group and name == "dsb2018_stage1_train_subset":
            rng = np.random.default_rng(args.seed)
            for group in sorted({groups.get(p.name, name) for p in images}):
                pairs = [(p, i) for p in images if groups.get(p.name, name) == group
                         for i in ids[p]]
                picked = sorted(rng.choice(len(pairs), min(args.per_group, len(pairs)),
                                           replace=False))
                ids_of: dict[Path, list[int]] = {}
                for k in picked:
                    ids_of.setdefault(pairs[k][0], []).append(pairs[k][1])
                found += [(name, group, p, root / "masks" / p.name, chosen)
                          for p, chosen in ids_of.items()]
        else:
            found += [(name, groups.get(p.name, name), p, root / "masks" / p.name, ids[p])
                      for p in images]
    return found


def _serving(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(Prelabels, serving model)`` of ``--workdir``'s project, loaded."""
    from label_assistant.labelstudio.config import parse_label_config
    from label_assistant.ml_backend.prelabels import Prelabels
    from label_assistant.workspace import Workspace

    prelabels = Prelabels(Workspace(args.workdir), device="cpu")
    serving = prelabels.serving(str(args.project), parse_label_config(CONFIG))
    if not hasattr(serving, "model"):
        raise SystemExit(f"no model serves project {args.project} in {args.workdir}")
    return prelabels, serving


def _image_rows(args: argparse.Namespace, serving: Any,
                item: tuple[str, str, Path, Path, list[int]]) -> list[dict[str, Any]]:
    """Both protocols on each asked-for object of one image, for each variant."""
    dataset, group, image_path, mask_path, ids = item
    image = read_image(image_path)
    truth_map = np.squeeze(read_image(mask_path))
    work = working_image(image)
    variants = [("grabcut", None)] if "grabcut" in args.variants else []
    if serving is not None and "model-guided" in args.variants:
        # as the service: one source per image, filled in as the prompts read it
        prelabels, version = serving
        variants.append(("model-guided", prelabels.probability_windows(image, version)))
    rows = []
    for oid in ids:
        # Around the object only (GrabCut's window is bounded anyway): the simulator's
        # distance transforms and the IoU need no more.
        rows_, cols_ = np.nonzero(truth_map == oid)
        pad = max(64, int(np.ptp(rows_)), int(np.ptp(cols_)))
        r0, c0 = max(0, rows_.min() - pad), max(0, cols_.min() - pad)
        crop = (slice(r0, rows_.max() + pad + 1), slice(c0, cols_.max() + pad + 1))
        truth = truth_map[crop] == oid
        measured: dict[str, Any] = {}
        for variant, probabilities in variants:
            if probabilities is None and "grabcut" in measured:
                # The model does not know this image: the model-guided variant is GrabCut,
                # the same call (no probabilities); its numbers are GrabCut's, not a rerun
                # that would differ only by OpenCV's random seeding.
                result = measured["grabcut"]
            else:
                p = None if probabilities is None else Shifted(probabilities, r0, c0,
                                                               truth.shape)
                result = _simulate(np.ascontiguousarray(work[crop]), truth, p)
            measured[variant] = result
            rows.append({"dataset": dataset, "group": group, "image": image_path.name,
                         "object": oid, "variant": variant, "pixels": int(truth.sum()),
                         "model_sees_image": probabilities is not None, **result})
    return rows


_WORKER: dict[str, Any] = {}


def _start_worker(args: argparse.Namespace) -> None:
    import cv2

    cv2.setNumThreads(1)
    _WORKER["args"] = args
    _WORKER["serving"] = _serving(args) if args.workdir else None


def _worker_rows(item: tuple[str, str, Path, Path, list[int]]) -> list[dict[str, Any]]:
    return _image_rows(_WORKER["args"], _WORKER["serving"], item)


def quality(args: argparse.Namespace) -> list[dict[str, Any]]:
    from concurrent.futures import ProcessPoolExecutor

    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    # the model's version, and a one-line exit before any work when none serves (each
    # worker process loads its own copy)
    version = getattr(_serving(args)[1], "version", None) if args.workdir else None
    files = objects(args)
    # --jobs processes, one image at a time each (GrabCut is single-threaded per call)
    with ProcessPoolExecutor(args.jobs, initializer=_start_worker, initargs=(args,)) as pool:
        for n, (item, found) in enumerate(zip(files, pool.map(_worker_rows, files),
                                              strict=True)):
            rows += found
            print(f"{n + 1}/{len(files)} {item[2].name[:16]}: {len(item[4])} objects, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    summary = summarize(rows)
    print_table(summary, ["dataset", "group", "variant", "objects", "box", "box+1", "box+3",
                          "box+5", "click1", "click3", "click5", "noc85", "noc90",
                          "ms_per_click"])
    write_results(f"interactive_quality_{'_'.join(args.variants)}_"
                  f"{'_'.join(d.split('_')[0] for d in args.datasets)}", rows, {
        "summary": summary, "per_group": args.per_group, "seed": args.seed,
        "excluded": args.exclude.read_text().split() if args.exclude else [], "cap": CAP,
        "model": version, "jobs": args.jobs, "seconds": time.perf_counter() - started})
    return summary


def _simulate(work: np.ndarray, truth: np.ndarray, probabilities: np.ndarray | None
              ) -> dict[str, Any]:
    """Both protocols on one object: IoUs after each click, NoC, time per segmentation."""
    times = []

    def run(prompt: Prompt) -> np.ndarray:
        t = time.perf_counter()
        mask = segment(work, prompt, probabilities, 1).mask
        times.append(time.perf_counter() - t)
        return mask

    out: dict[str, Any] = {}
    for protocol in ("clicks", "box"):
        box = box_of(truth) if protocol == "box" else None
        clicks: list[Any] = []
        prediction = run(Prompt(box=box)) if box is not None else np.zeros_like(truth)
        ious = [mask_iou(prediction, truth)] if box is not None else []
        while len(clicks) < CAP:
            click = next_click(prediction, truth)
            if click is None:  # perfect: it stays so
                ious += [1.0] * (CAP + (box is not None) - len(ious))
                break
            clicks.append(click)
            prediction = run(Prompt(box=box, clicks=tuple(clicks)))
            ious.append(mask_iou(prediction, truth))
            if len(clicks) >= 5 and ious[-1] >= 0.9:  # enough for every number reported
                break
        out[protocol] = [round(v, 4) for v in ious]
    clicks_ious = out["clicks"]
    return {"box": out["box"][0], "box_clicks": out["box"][1:6], "clicks": clicks_ious[:5],
            "noc85": noc(clicks_ious, 0.85, CAP), "noc90": noc(clicks_ious, 0.90, CAP),
            "ms_per_click": 1000 * statistics.mean(times)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means per dataset and variant, per experiment group (where a dataset has several),
    and over all objects."""
    def at(values: list[float], i: int) -> float:
        return values[i] if i < len(values) else values[-1]

    parts: list[tuple[str, str, list[dict[str, Any]]]] = []
    for dataset in sorted({r["dataset"] for r in rows}):
        parts.append((dataset, "all", [r for r in rows if r["dataset"] == dataset]))
        groups = sorted({r["group"] for r in rows if r["dataset"] == dataset})
        if len(groups) > 1:
            parts += [(dataset, g, [r for r in rows if (r["dataset"], r["group"]) ==
                                    (dataset, g)]) for g in groups]
    parts.append(("all", "all", rows))
    served = {(r["dataset"], r["image"]) for r in rows
              if r["variant"] == "model-guided" and r["model_sees_image"]}
    if served:  # both variants on the images the model knows, where they can differ
        parts.append(("all", "model serves", [r for r in rows
                                              if (r["dataset"], r["image"]) in served]))
    summary = []
    for dataset, group, chosen in parts:
        for variant in sorted({r["variant"] for r in chosen}):
            part = [r for r in chosen if r["variant"] == variant]
            summary.append({
                "dataset": dataset, "group": group, "variant": variant, "objects": len(part),
                "box": np.mean([r["box"] for r in part]),
                **{f"box+{k}": np.mean([at(r["box_clicks"], k - 1) for r in part])
                   for k in (1, 3, 5)},
                **{f"click{k}": np.mean([at(r["clicks"], k - 1) for r in part])
                   for k in (1, 3, 5)},
                "noc85": np.mean([r["noc85"] for r in part]),
                "noc90": np.mean([r["noc90"] for r in part]),
                "ms_per_click": np.mean([r["ms_per_click"] for r in part])})
    return [{k: float(v) if isinstance(v, np.floating) else v for k, v in s.items()}
            for s in summary]


# --- windowed probabilities against the whole image's -------------------------------------


GUESSES = ("fitted_ellipse", "inscribed_ellipse", "otsu_split")


def guesses(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The box's IoU with each first guess (see the module doc), per group and over all."""
    from label_assistant.interactive import Box
    from label_assistant.interactive.segment import box_to_mask, ellipse_guess, intensity_guess

    started = time.perf_counter()
    rows = []
    for dataset, group, image_path, mask_path, ids in objects(args):
        work = working_image(read_image(image_path))
        truth_map = np.squeeze(read_image(mask_path))
        height, width = truth_map.shape
        for oid in ids:
            truth = truth_map == oid
            tight = box_of(truth)
            dx = args.box_margin * (tight.x1 - tight.x0)
            dy = args.box_margin * (tight.y1 - tight.y0)
            box = Box(max(0.0, tight.x0 - dx), max(0.0, tight.y0 - dy),
                      min(float(width), tight.x1 + dx), min(float(height), tight.y1 + dy))
            r0, r1, c0, c1 = box.pixels(truth.shape)
            inside = work[r0:r1, c0:c1]
            row = {"dataset": dataset, "group": group}
            for name, first in (("fitted_ellipse", None),
                                ("inscribed_ellipse", ellipse_guess(inside, scales=(1.0,))),
                                ("otsu_split", intensity_guess(inside))):
                guess = None
                if first is not None:
                    guess = np.zeros(truth.shape, dtype=bool)
                    guess[r0:r1, c0:c1] = first
                row[name] = mask_iou(box_to_mask(work, box, guess=guess).mask, truth)
            rows.append(row)
    summary = []
    for dataset in sorted({r["dataset"] for r in rows}):
        part = [r for r in rows if r["dataset"] == dataset]
        for group in [None, *sorted({r["group"] for r in part})]:
            chosen = [r for r in part if group is None or r["group"] == group]
            summary.append({"dataset": dataset, "group": group or "all", "objects": len(chosen),
                            **{g: round(float(np.mean([r[g] for r in chosen])), 4)
                               for g in GUESSES}})
    summary.append({"dataset": "all", "group": "all", "objects": len(rows),
                    **{g: round(float(np.mean([r[g] for r in rows])), 4) for g in GUESSES}})
    print_table(summary, ["dataset", "group", "objects", *GUESSES])
    path = write_results("interactive_guesses", summary, {
        "per_group": args.per_group, "seed": args.seed, "box_margin": args.box_margin,
        "seconds": round(time.perf_counter() - started, 1)})
    print(f"written to {path}")
    return summary


def windows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from label_assistant.interactive.simulate import box_of as tight_box

    prelabels, serving = _serving(args)
    rows = []
    for dataset, group, image_path, mask_path, ids in objects(args):
        image = read_image(image_path)
        truth_map = np.squeeze(read_image(mask_path))
        x = serving.model_input(image)
        if not serving.familiar(x):
            continue
        started = time.perf_counter()
        whole = serving.predict(x).probabilities[1]
        whole_ms = 1000 * (time.perf_counter() - started)
        for oid in ids[:args.objects_per_image]:
            box = tight_box(truth_map == oid)
            r0, r1, c0, c1 = box.pixels(truth_map.shape)
            source = prelabels.probability_windows(image, serving)
            started = time.perf_counter()
            part = source.read(r0, r1, c0, c1)[1]
            window_ms = 1000 * (time.perf_counter() - started)
            reference = whole[r0:r1, c0:c1]
            rows.append({"dataset": dataset, "group": group, "image": image_path.name,
                         "object": oid, "box_pixels": int(part.size),
                         "mean_abs_diff": float(np.abs(part - reference).mean()),
                         "decision_differs": float(((part >= 0.5) != (reference >= 0.5))
                                                   .mean()),
                         "window_ms": window_ms, "window_pixels": source.pixels_run,
                         "whole_ms": whole_ms, "image_pixels": int(truth_map.size)})
    summary = [{"objects": len(rows),
                "images": len({r["image"] for r in rows}),
                **{k: float(np.mean([r[k] for r in rows])) for k in
                   ("mean_abs_diff", "decision_differs", "window_ms", "whole_ms",
                    "window_pixels", "image_pixels")},
                "max_decision_differs": float(max(r["decision_differs"] for r in rows))}] \
        if rows else []
    print_table(summary, list(summary[0]) if summary else ["objects"])
    write_results("interactive_windows", rows, {"summary": summary,
                                                "model": serving.version})
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["latency", "quality", "guesses", "windows"])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="a work directory whose project --project has a serving model")
    parser.add_argument("--project", default="1")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[512, 2048])
    parser.add_argument("--tasks", type=int, default=3, help="latency: tasks per size")
    parser.add_argument("--first", choices=["box", "click"], default="box",
                        help="latency: the first interaction on a task")
    parser.add_argument("--image", choices=["synthetic", "dsb"], default="synthetic",
                        help="latency: synthetic ellipses, or a dark DSB image repeated to "
                             "the size (one a model trained on dark DSB images knows)")
    parser.add_argument("--clicks", type=int, default=5, help="latency: clicks per task")
    parser.add_argument("--per-group", type=int, default=0,
                        help="quality, windows: a random sample of K objects of each "
                             "experiment group of the DSB subset (0: every object); the "
                             "StarDist sample stays whole")
    parser.add_argument("--datasets", type=lambda s: s.split(","),
                        default=["stardist_dsb2018_sample", "dsb2018_stage1_train_subset"],
                        help="quality, windows: the shared datasets to measure on")
    parser.add_argument("--seed", type=int, default=0, help="seed of --per-group's sample")
    parser.add_argument("--jobs", type=int, default=1,
                        help="quality: images measured at once, in that many processes")
    parser.add_argument("--objects-per-image", type=int, default=5,
                        help="windows: objects per image")
    parser.add_argument("--exclude", type=Path, default=None,
                        help="quality: file of image names to leave out (a model's training "
                             "images)")
    parser.add_argument("--box-margin", type=float, default=0.0,
                        help="guesses: boxes this share of the object's size wider on each "
                             "side (default 0: tight)")
    parser.add_argument("--variants", type=lambda s: s.split(","),
                        default=["grabcut", "model-guided"],
                        help="quality: grabcut, model-guided (needs --workdir), or both")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, got {args.jobs}")
    if args.box_margin < 0:
        parser.error(f"--box-margin must be 0 or more, got {args.box_margin}")
    {"latency": latency, "quality": quality, "guesses": guesses,
     "windows": windows}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
