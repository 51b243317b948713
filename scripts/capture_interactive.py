"""What Label Studio 1.23.2 sends to an interactive backend: record every ``/predict`` of
its interactive endpoint (the measurement behind ``docs/interactive.md``).

    python scripts/capture_interactive.py --out /tmp/captured [--template DIR]

Starts a fresh Label Studio (``.ls-venv``; ``--template``: copy an initialised data dir) and
label-assistant's backend in this process, recording each request body. Creates a project
with the demo's label config (brush + smart rectangle, keypoints, extreme points), uploads a
512 x 512 and a 2048 x 2048 nucleus image, retrieves pre-labels (so the tasks carry a
prediction, as in the demo), connects the backend as interactive, and calls Label Studio's
own ``POST /api/ml/{id}/interactive-annotating`` (what the labeling screen calls after each
smart-tool region) with contexts shaped as the 1.23.2 labeling screen builds them (see
``docs/interactive.md``): a box, one, two and three accumulated clicks (the third
negative), four extreme points, then the same click after a draft was saved. Every recorded
``/predict`` body is written as ``NNN_<size>_<step>.json``; ``summary.json`` lists sizes.

The contexts are built here, not by a browser; the real labeling screen's, recorded later in
headless Chromium (``tests/fixtures/interactive/browser_*.json``), have the same shape
(``docs/interactive.md``, "On the real screen").
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

import requests
from PIL import Image

from label_assistant.devtools.demo import CLASS_NAME, LABEL_CONFIG
from label_assistant.devtools.labelstudio_server import (
    LabelStudioServer,
    copy_data_dir,
    free_port,
    init_data_dir,
)
from label_assistant.devtools.samples import nuclei_image
from label_assistant.labelstudio.client import LabelStudioClient


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


def region(kind: str, control: str, size: int, x: float, y: float, n: int,
           positive: bool = True, w: float = 0.0, h: float = 0.0) -> dict[str, Any]:
    """A smart region as the 1.23.2 labeling screen serializes it (percent coordinates;
    keypoints of a smart tool carry ``is_positive`` and ``value.labels``)."""
    base = {"id": f"{control}{n}", "from_name": control, "to_name": "image",
            "type": kind, "origin": "manual", "original_width": size,
            "original_height": size, "image_rotation": 0}
    if kind == "rectanglelabels":
        return {**base, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                                  "rectanglelabels": [CLASS_NAME]}}
    return {**base, "is_positive": positive,
            "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [CLASS_NAME],
                      "labels": [CLASS_NAME]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--template", type=Path, default=None,
                        help="an initialised Label Studio data dir to copy")
    args = parser.parse_args()
    from werkzeug.serving import make_server

    from label_assistant.ml_backend.app import create_app
    from label_assistant.ml_backend.settings import Settings

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="la-capture-"))
    files = tmp / "files"
    files.mkdir()
    images = {}
    for size in (512, 2048):
        path = files / f"nuclei-{size}.png"
        Image.fromarray(nuclei_image(size, size)[0]).save(path)
        images[size] = path
    data_dir = tmp / "ls"
    if args.template:
        copy_data_dir(args.template, data_dir)
    else:
        print(f"label-studio init: {init_data_dir(data_dir):.0f} s", flush=True)
    rows = []
    with LabelStudioServer(document_root=files) as ls:
        ls.start(data_dir)
        port = free_port()
        settings = Settings(workdir=tmp / "work", label_studio_url=ls.url,
                            label_studio_api_key=ls.token)
        recorder = Recorder(create_app(settings))
        server = make_server("127.0.0.1", port, recorder, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = LabelStudioClient(ls.url, ls.token)
        project = client.create_project("interactive capture", LABEL_CONFIG)
        tasks = dict(zip((512, 2048), client.upload_files(project, [images[512], images[2048]]),
                         strict=True))
        backend = client.connect_backend(project, f"http://127.0.0.1:{port}",
                                         is_interactive=True)
        client.retrieve_predictions(project)
        headers = {"Authorization": f"Token {ls.token}"}

        def call(size: int, step: str, results: list[dict[str, Any]]) -> None:
            first = len(recorder.calls)
            started = time.perf_counter()
            response = requests.post(
                f"{ls.url}/api/ml/{backend}/interactive-annotating", headers=headers,
                json={"task": tasks[size], "context": {"result": results}}, timeout=120)
            seconds = time.perf_counter() - started
            answer = response.json()
            data = answer.get("data") or {}
            (sent,) = recorder.predicts_since(first)
            body = json.loads(sent["body"])
            name = f"{len(rows):03d}_{size}_{step}.json"
            (args.out / name).write_text(json.dumps(body, indent=1))
            task = body["tasks"][0]
            rows.append({"file": name, "status": response.status_code,
                         "request_bytes": sent["bytes"], "answer_keys": sorted(answer),
                         "suggestion_results": len(data.get("result") or []),
                         "errors": answer.get("errors"), "seconds": round(seconds, 3),
                         "task_keys": sorted(task), "drafts": len(task.get("drafts") or []),
                         "predictions": len(task.get("predictions") or []),
                         "annotations": len(task.get("annotations") or [])})
            print(rows[-1], flush=True)

        for size in (512, 2048):
            c1 = region("keypointlabels", "click", size, 60.0, 60.0, 1)
            c2 = region("keypointlabels", "click", size, 62.0, 63.0, 2)
            c3 = region("keypointlabels", "click", size, 70.0, 70.0, 3, positive=False)
            call(size, "box", [region("rectanglelabels", "box", size, 30, 30, 0, w=15, h=12)])
            call(size, "click1", [c1])
            call(size, "click2", [c1, c2])
            call(size, "click3_negative", [c1, c2, c3])
            extreme = [region("keypointlabels", "extreme", size, x, y, i)
                       for i, (x, y) in enumerate(((20, 75), (30, 75), (25, 70), (25, 80)))]
            call(size, "extreme4", extreme)
            requests.post(f"{ls.url}/api/tasks/{tasks[size]}/drafts", headers=headers,
                          json={"result": [c1], "lead_time": 1.0}, timeout=30)
            call(size, "click1_after_draft", [c1])
        server.shutdown()
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
