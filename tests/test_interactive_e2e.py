"""Interactive labeling end to end with a real Label Studio 1.23.2 and ``label-assistant
serve``: the demo's label config (brush + smart tools), the backend connected as interactive
with basic auth, and Label Studio's own endpoint ``POST /api/ml/{id}/interactive-annotating``
(what the labeling screen calls for each smart-tool region): a box, then clicks, come back
as one brush suggestion for that object, which Label Studio stores unchanged when the
annotator submits it."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from labelstudio_harness import *  # noqa: F403
from test_backend_e2e import AUTH, serve
from test_backend_support import data_url, png_bytes

from label_assistant.devtools.demo import CLASS_NAME, LABEL_CONFIG
from label_assistant.labelstudio.rle import decode_rle

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

H, W = 96, 128


def scene() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    target = ((yy - 40) / 14) ** 2 + ((xx - 50) / 20) ** 2 <= 1
    rng = np.random.default_rng(3)
    image = np.clip(40 + 160 * target + rng.normal(0, 10, (H, W)), 0, 255).astype(np.uint8)
    return image, target


def rect(x0, y0, x1, y1):
    return {"id": "box1", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": 100 * x0 / W, "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W,
                      "height": 100 * (y1 - y0) / H, "rotation": 0,
                      "rectanglelabels": [CLASS_NAME]}}


def point(x, y, positive=True):
    return {"id": f"kp{x}", "type": "keypointlabels", "from_name": "click", "to_name": "image",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "is_positive": positive,
            "value": {"x": 100 * x / W, "y": 100 * y / H, "width": 0.6,
                      "keypointlabels": [CLASS_NAME]}}


def test_a_smart_tool_call_through_label_studio_gives_a_stored_suggestion(
        labelstudio_module, tmp_path):
    ls = labelstudio_module
    image, target = scene()
    with serve(tmp_path, ls) as (url, _workdir, log):
        project = ls.client.create_project("interactive e2e", LABEL_CONFIG)
        (task,) = ls.client.import_tasks(project, [{"image": data_url(png_bytes(image))}])
        backend = ls.client.connect_backend(project, url, is_interactive=True, basic_auth=AUTH)
        headers = {"Authorization": f"Token {ls.token}"}

        def interact(results):
            response = requests.post(f"{ls.url}/api/ml/{backend}/interactive-annotating",
                                     json={"task": task, "context": {"result": results}},
                                     headers=headers, timeout=60)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert "errors" not in answer, (answer, log.read_text()[-2000:])
            return answer["data"]

        box = interact([rect(28, 24, 72, 56)])
        (suggestion,) = box["result"]
        assert suggestion["type"] == "brushlabels"
        assert suggestion["value"]["brushlabels"] == [CLASS_NAME]
        mask = decode_rle(suggestion["value"]["rle"], H, W) > 128
        assert (mask & target).sum() / (mask | target).sum() >= 0.85

        # Label Studio sends clicks without the box; the backend remembers it.
        clicked = interact([point(50, 40), point(60, 40, positive=False)])
        (refined,) = clicked["result"]
        assert not (decode_rle(refined["value"]["rle"], H, W) > 128)[40, 60]

        # Accepting the suggestion and submitting: Label Studio stores it as it came.
        ls.sdk.annotations.create(id=task, result=[suggestion])
        (stored,) = ls.sdk.annotations.list(id=task)
        (result,) = stored.result
        assert result["value"]["rle"] == suggestion["value"]["rle"]
        assert result["value"]["brushlabels"] == [CLASS_NAME]
