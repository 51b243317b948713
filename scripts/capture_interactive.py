"""What Label Studio 1.23.2's smart tools send: drive its labeling screen and record every
``/predict`` it makes (the measurement behind ``docs/interactive.md``).

    python scripts/capture_interactive.py --out /tmp/captured
        [--screenshot docs/images/interactive.png]

Starts a fresh Label Studio (``.ls-venv``) and label-assistant's backend in this process
(recording each request body), creates a project with the demo's label config (brush +
smart rectangle + smart keypoints + extreme points), uploads a 512 x 512 and a 2048 x 2048
nucleus image, retrieves pre-labels, then in headless Chromium (playwright; ``--chromium``)
turns Auto-Annotation on and, on each image: draws a box, makes clicks (one negative: Alt),
four extreme points, waits for Label Studio's draft, clicks again. Every recorded body is
written as ``NNN_<step>.json`` with its size; ``summary.json`` lists them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from label_assistant.devtools.demo import LABEL_CONFIG
from label_assistant.devtools.labelstudio_server import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    LabelStudioServer,
    free_port,
    init_data_dir,
)
from label_assistant.labelstudio.client import LabelStudioClient


def nuclei(size: int, seed: int) -> np.ndarray:
    """A fluorescence-like image: bright ellipses on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), 30.0)
    for _ in range(max(4, size * size // 20000)):
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        ry, rx = rng.uniform(0.02, 0.05, 2) * size
        image[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = rng.uniform(140, 220)
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


class Recorder:
    """WSGI middleware keeping every request body (path, size, JSON)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        import io

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        with self.lock:
            self.calls.append({"path": environ.get("PATH_INFO"), "bytes": len(body),
                               "when": time.time(), "body": body})
        return self.app(environ, start_response)

    def predicts_since(self, n: int) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls[n:] if c["path"] == "/predict"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--template", type=Path, default=None,
                        help="an initialised Label Studio data dir to copy")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    from label_assistant.devtools.labelstudio_server import copy_data_dir
    from label_assistant.ml_backend.app import create_app
    from label_assistant.ml_backend.settings import Settings

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="la-capture-"))
    files = tmp / "files"
    files.mkdir()
    images = {}
    for size in (512, 2048):
        path = files / f"nuclei-{size}.png"
        Image.fromarray(nuclei(size, size)).save(path)
        images[size] = path
    data_dir = tmp / "ls"
    if args.template:
        copy_data_dir(args.template, data_dir)
    else:
        print(f"label-studio init: {init_data_dir(data_dir):.0f} s", flush=True)
    with LabelStudioServer(document_root=files) as ls:
        ls.start(data_dir)
        print(f"label studio at {ls.url}", flush=True)
        port = free_port()
        settings = Settings(workdir=tmp / "work", label_studio_url=ls.url,
                            label_studio_api_key=ls.token)
        recorder = Recorder(create_app(settings))
        server = make_server("127.0.0.1", port, recorder, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        backend = f"http://127.0.0.1:{port}"
        client = LabelStudioClient(ls.url, ls.token)
        project = client.create_project("interactive capture", LABEL_CONFIG)
        tasks = dict(zip((512, 2048), client.upload_files(project, [images[512], images[2048]]),
                         strict=True))
        client.connect_backend(project, backend, is_interactive=True)
        client.retrieve_predictions(project)
        steps: list[tuple[str, int]] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=args.chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{ls.url}/user/login")
            page.fill("input[name=email]", DEFAULT_USERNAME)
            page.fill("input[name=password]", DEFAULT_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.evaluate("localStorage.setItem('autoAnnotation', 'true')")
            for size, task in tasks.items():
                steps += drive(page, ls.url, project, task, size, recorder, args)
            browser.close()
        server.shutdown()
    summary = []
    for i, (step, first) in enumerate(steps):
        for j, call in enumerate(recorder.predicts_since(first)[:1]):
            name = f"{i:03d}_{step}.json"
            body = json.loads(call["body"])
            (args.out / name).write_text(json.dumps(body, indent=1))
            context = (body.get("params") or {}).get("context")
            task = (body.get("tasks") or [{}])[0]
            summary.append({"file": name, "step": step, "bytes": call["bytes"], "n": j,
                            "context_results": len((context or {}).get("result") or []),
                            "task_keys": sorted(task),
                            "drafts": len(task.get("drafts") or []),
                            "predictions": len(task.get("predictions") or []),
                            "annotations": len(task.get("annotations") or [])})
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for row in summary:
        print(row)
    return 0


def drive(page: Any, url: str, project: int, task: int, size: int, recorder: Recorder,
          args: argparse.Namespace) -> list[tuple[str, int]]:
    """One task's interactions; ``(step, index of the first call it may have made)``."""
    page.goto(f"{url}/projects/{project}/data?task={task}")
    page.wait_for_load_state("networkidle")
    page.wait_for_selector("canvas", timeout=60_000)
    time.sleep(3)
    toggle = page.locator("[data-testid=bottombar-auto-annotation-toggle] input")
    if toggle.count() and not toggle.first.is_checked():
        toggle.first.check(force=True)
    canvas = page.locator("canvas").first
    box = canvas.bounding_box()
    steps: list[tuple[str, int]] = []

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    def step(name: str, action: Any, wait: float = 4.0) -> None:
        first = len(recorder.calls)
        action()
        time.sleep(wait)
        steps.append((f"{size}_{name}", first))
        print(f"{size} {name}: {len(recorder.predicts_since(first))} /predict", flush=True)

    def label(index: int) -> None:  # the "Nucleus" of the index-th control
        page.locator(".lsf-label", has_text="Nucleus").nth(index).click()

    def drag() -> None:
        label(1)
        page.mouse.move(*at(0.30, 0.30))
        page.mouse.down()
        page.mouse.move(*at(0.45, 0.42), steps=8)
        page.mouse.up()

    def click(fx: float, fy: float, alt: bool = False) -> None:
        label(2)
        if alt:
            page.keyboard.down("Alt")
        page.mouse.click(*at(fx, fy))
        if alt:
            page.keyboard.up("Alt")

    step("box", drag)
    if args.screenshot and size == 512:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.screenshot))
    step("click1", lambda: click(0.60, 0.60))
    step("click2", lambda: click(0.62, 0.63))
    step("click3_negative", lambda: click(0.70, 0.70, alt=True))

    def extreme() -> None:
        label(3)
        for fx, fy in ((0.20, 0.75), (0.30, 0.75), (0.25, 0.70), (0.25, 0.80)):
            page.mouse.click(*at(fx, fy))
            time.sleep(1.5)

    step("extreme4", extreme)
    time.sleep(20)  # Label Studio saves a draft of the changed annotation meanwhile
    step("click4_after_draft", lambda: click(0.64, 0.61))
    return steps


if __name__ == "__main__":
    sys.exit(main())
