"""Backend latency: /predict against the bare model, and webhook acknowledgement under training.

Starts the real service (``label-assistant serve``: gunicorn + the worker process) on a free
port of 127.0.0.1 with a published Unet-resnet18 version (random weights: speed only), then:

1. ``/predict`` for one 512 x 512 task and for a batch of 30 (``data:`` URLs), next to the
   bare model's tiled forward (`predict_proba`) on the same image in this process.
   Goal (issue 5): overhead at most 15%.
2. While a training job runs in its own process (loading the CPU), N webhook
   ``ANNOTATION_CREATED`` posts: acknowledgement latency percentiles. Goal: p99 under 50 ms.

    python benchmarks/bench_backend.py [--webhooks 300 --repeats 5]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, write_results  # noqa: E402

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Background"/><Label value="Cell"/>
  </BrushLabels>
</View>"""


def _wait_and_setup(base: str, seconds: float) -> None:
    """Wait for the service's /health, then set up project 1.1 with :data:`CONFIG`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    requests.post(f"{base}/setup", json={"project": "1.1", "schema": CONFIG}, timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _publish_model(workdir: Path) -> None:
    from label_assistant.model.factory import ModelSpec, create_model
    from label_assistant.workspace import Workspace

    spec = ModelSpec(classes=("Background", "Cell"))
    model = create_model(spec)
    Workspace(workdir).registry("1").publish(
        model.state_dict(), spec=spec.to_dict(), class_names=["Background", "Cell"],
        label_config_hash=None, manifest={}, metrics={}, curve=[],
        config={"inference_tile": 512}, parent=None)


def _start_training_load(tmp: Path) -> subprocess.Popen:
    """A real training job (model.job) on synthetic data, long enough to outlast the test."""
    from PIL import Image

    from label_assistant.ml_backend.jobs import start_process
    from label_assistant.model import job

    (tmp / "img").mkdir()
    (tmp / "lbl").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        label = (rng.random((256, 256)) > 0.7).astype(np.uint8)
        Image.fromarray((label * 200).astype(np.uint8)).save(tmp / "img" / f"{i}.png")
        Image.fromarray(label).save(tmp / "lbl" / f"{i}.png")
    request = {"images": sorted(str(p) for p in (tmp / "img").iterdir()),
               "labels": sorted(str(p) for p in (tmp / "lbl").iterdir()),
               "class_names": ["Background", "Cell"], "registry": str(tmp / "models"),
               "config": {"epochs": 1000, "steps_per_epoch": 10, "batch_size": 4, "tile": 128,
                          "device": "cpu", "val_fraction": 0.0}}
    return start_process(job.write_request(tmp / "job", request))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--webhooks", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from label_assistant.images import normalize_for_model, read_image
    from label_assistant.model.inference import predict_proba
    from label_assistant.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="la-bench-backend-"))
    workdir = tmp / "work"
    _publish_model(workdir)
    rng = np.random.default_rng(1)
    image = (rng.random((512, 512)) * 255).astype(np.uint8)
    url = _png_data_url(image)
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LA_SINK": "none", "LA_TRAIN_AFTER": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "label_assistant", "serve", "--port", str(port),
         "--workdir", str(workdir), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    rows = []
    training = None
    try:
        _wait_and_setup(base, seconds=60)

        def predict(n: int) -> float:
            tasks = [{"id": i + 1, "data": {"image": url}} for i in range(n)]
            start = time.perf_counter()
            answer = requests.post(f"{base}/predict", json={
                "tasks": tasks, "project": "1.1", "label_config": CONFIG}, timeout=600)
            elapsed = time.perf_counter() - start
            results = answer.json()["results"]
            assert len(results) == n and results[0]["model_version"] == "v0001", results[0]
            return elapsed

        predict(1)  # the server loads the model on first use
        model, _ = Workspace(workdir).registry("1").load_model("current")
        torch.set_num_threads(torch.get_num_threads())
        x = normalize_for_model(read_image(base64.b64decode(url.split(",", 1)[1])))
        predict_proba(model, x, tile=512)  # warm
        bare, single, batch = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predict_proba(model, x, tile=512)
            bare.append(time.perf_counter() - start)
            single.append(predict(1))
        for _ in range(max(1, args.repeats // 3)):
            batch.append(predict(args.batch) / args.batch)
        bare_s, single_s, batch_s = (float(np.median(v)) for v in (bare, single, batch))
        rows.append({"case": "bare model, 512x512", "seconds_per_task": bare_s,
                     "overhead": 0.0})
        rows.append({"case": "/predict, 1 task", "seconds_per_task": single_s,
                     "overhead": single_s / bare_s - 1})
        rows.append({"case": f"/predict, batch of {args.batch}", "seconds_per_task": batch_s,
                     "overhead": batch_s / bare_s - 1})

        fixture = ROOT.parent / "shared" / "fixtures" / "label-studio-1.23.2" / \
            "015_POST_webhook_ANNOTATION_CREATED.json"
        if fixture.exists():
            body = json.loads(fixture.read_text())["json"]
        else:
            body = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": CONFIG},
                    "annotation": {"id": 1, "result": []}, "task": {"id": 1, "data": {}}}
        body["task"]["data"]["image"] = url
        training = _start_training_load(tmp)
        time.sleep(15)  # past the job's start-up, into training
        latencies = []
        session = requests.Session()
        for i in range(args.webhooks):
            body["annotation"]["id"] = 1000 + i
            start = time.perf_counter()
            assert session.post(f"{base}/webhook", json=body, timeout=5).ok
            latencies.append((time.perf_counter() - start) * 1000)
        running = training.poll() is None
        p = np.percentile(latencies, [50, 90, 99])
        rows.append({"case": f"webhook ack during training ({args.webhooks})",
                     "p50_ms": float(p[0]), "p90_ms": float(p[1]), "p99_ms": float(p[2]),
                     "max_ms": float(max(latencies)), "training_running": running})
    finally:
        if training is not None and training.poll() is None:
            training.kill()
        server.terminate()
        server.wait(timeout=30)
    path = write_results("bench_backend", rows, {"goal": "predict overhead <= 15%, "
                                                 "webhook p99 < 50 ms"}, args.out)
    print_table(rows, ["case", "seconds_per_task", "overhead", "p50_ms", "p90_ms", "p99_ms",
                       "max_ms", "training_running"])
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
