"""``/predict`` with a smart tool's context (Flask test client): one object's brush result,
the per-task cache (one fetch, one model run per task), its bound, the origin rules, and
4xx or an empty result with a reason for contexts that can't be used."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from test_backend_support import ImageServer, data_url, png_bytes

from label_assistant.labelstudio.config import parse_label_config
from label_assistant.labelstudio.rle import decode_rle
from label_assistant.ml_backend.app import create_app
from label_assistant.ml_backend.interactive import TaskCache, TaskImage
from label_assistant.ml_backend.settings import Settings

SMART_CONFIG = (
    '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
    '<Label value="Background"/><Label value="Cell"/></BrushLabels>'
    '<RectangleLabels name="box" toName="image" smart="true"><Label value="Cell"/>'
    '</RectangleLabels><KeyPointLabels name="click" toName="image" smart="true">'
    '<Label value="Cell"/></KeyPointLabels><KeyPointLabels name="extreme" toName="image" '
    'smart="true"><Label value="Cell"/></KeyPointLabels></View>'
)
H, W = 96, 128


def scene() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    target = ((yy - 40) / 14) ** 2 + ((xx - 50) / 20) ** 2 <= 1
    other = ((yy - 75) / 9) ** 2 + ((xx - 105) / 9) ** 2 <= 1
    rng = np.random.default_rng(1)
    image = np.clip(40 + 160 * target + 160 * other + rng.normal(0, 10, (H, W)), 0, 255)
    return image.astype(np.uint8), target


IMAGE, TARGET = scene()
IMAGE_URL = data_url(png_bytes(IMAGE))


def rect(x0, y0, x1, y1, label="Cell", **extra):
    return {"id": "r1", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": 100 * x0 / W, "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W,
                      "height": 100 * (y1 - y0) / H, "rotation": 0,
                      "rectanglelabels": [label]}, **extra}


def point(x, y, positive=True, control="click", label="Cell"):
    return {"id": f"p{x}-{y}", "type": "keypointlabels", "from_name": control,
            "to_name": "image", "original_width": W, "original_height": H,
            "image_rotation": 0, "is_positive": positive,
            "value": {"x": 100 * x / W, "y": 100 * y / H, "width": 0.5,
                      "keypointlabels": [label]}}


def body(results, image=IMAGE_URL, task_id=1, config=SMART_CONFIG):
    return {"tasks": [{"id": task_id, "data": {"image": image}}], "project": "1.1",
            "label_config": config,
            "params": {"login": None, "password": None, "context": {"result": results}}}


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(workdir=tmp_path / "work"))


def mask_of(answer) -> np.ndarray:
    (result,) = answer["results"][0]["result"]
    assert result["type"] == "brushlabels" and result["value"]["brushlabels"] == ["Cell"]
    assert (result["original_width"], result["original_height"]) == (W, H)
    assert result["from_name"] == "tag" and result["to_name"] == "image"
    return decode_rle(result["value"]["rle"], H, W) > 128


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_a_box_gives_one_brush_result_for_that_object(app):
    response = app.test_client().post("/predict", json=body([rect(28, 24, 72, 56)]))
    assert response.status_code == 200, response.json
    assert iou(mask_of(response.json), TARGET) >= 0.85
    assert response.json["results"][0]["model_version"].startswith("otsu-")


def test_clicks_and_extreme_points(app):
    client = app.test_client()
    one = client.post("/predict", json=body([point(50, 40)]))
    assert iou(mask_of(one.json), TARGET) >= 0.8
    more = client.post("/predict", json=body([point(50, 40), point(105, 75, positive=False)]))
    assert iou(mask_of(more.json), TARGET) >= 0.8
    extremes = [point(30.5, 40.5, control="extreme"), point(69.5, 40.5, control="extreme"),
                point(50.5, 26.5, control="extreme"), point(50.5, 53.5, control="extreme")]
    waiting = client.post("/predict", json=body(extremes[:3]))
    assert waiting.status_code == 200 and waiting.json["results"][0]["result"] == []
    assert "3 of 4 extreme points" in waiting.json["reason"]
    done = client.post("/predict", json=body(extremes))
    assert iou(mask_of(done.json), TARGET) >= 0.85


def test_clicks_after_a_box_refine_the_box(app):
    client = app.test_client()
    client.post("/predict", json=body([rect(28, 24, 72, 56)]))
    # Label Studio sends the keypoints without the rectangle: the remembered box is used.
    response = client.post("/predict", json=body([point(60, 40, positive=False)]))
    assert response.json["results"][0]["method"] == "grabcut"
    assert not mask_of(response.json)[40, 60]
    # Only negative clicks and no box: nothing, with the reason.
    other = client.post("/predict", json=body([point(60, 40, positive=False)], task_id=2))
    assert other.json["results"][0]["result"] == [] and "positive" in other.json["reason"]


def test_the_task_image_is_fetched_once_and_reused(app, monkeypatch):
    from label_assistant.ml_backend import fetch

    calls = []
    original = fetch.ImageFetcher.fetch_image
    monkeypatch.setattr(fetch.ImageFetcher, "fetch_image",
                        lambda self, url: calls.append(url) or original(self, url))
    client = app.test_client()
    for x in (50, 45, 55):
        assert client.post("/predict", json=body([point(x, 40)])).status_code == 200
    assert len(calls) == 1
    cache = app.extensions["label_assistant"]["interactive"].cache
    assert (cache.hits, cache.misses) == (2, 1)


class FakeModel:
    """A serving model as Prelabels.serving gives one (a Predictor's interface): its model
    input is the target itself, so its probabilities see the target only, in any crop."""

    version = "v0001"
    model = object()
    class_names = ["Background", "Cell"]
    runs = 0
    pixels = 0

    def model_input(self, image):
        return np.where(TARGET, 0.95, 0.05).astype(np.float32)[None]

    def familiar(self, x):
        return True

    def predict(self, crop):
        FakeModel.runs += 1
        FakeModel.pixels += crop.shape[1] * crop.shape[2]
        return SimpleNamespace(probabilities=np.concatenate([1 - crop, crop]))


def test_model_guided_with_the_serving_models_probabilities_run_once(app, monkeypatch):
    prelabels = app.extensions["label_assistant"]["predictor"]
    monkeypatch.setattr(prelabels, "serving", lambda project, config: FakeModel())
    FakeModel.runs = 0
    client = app.test_client()
    box = client.post("/predict", json=body([rect(20, 18, 80, 62)]))
    assert box.json["results"][0]["method"] == "grabcut+model"
    assert box.json["model_version"] == "v0001"
    assert iou(mask_of(box.json), TARGET) >= 0.9
    click = client.post("/predict", json=body([point(50, 40)], task_id=3))
    assert click.json["results"][0]["method"] == "model-object"
    assert iou(mask_of(click.json), TARGET) >= 0.95
    client.post("/predict", json=body([point(52, 41)], task_id=3))
    # one image, one version: the box's window covered this small image, the clicks reuse it
    assert FakeModel.runs == 1


def test_a_model_that_fails_during_a_click_leaves_grabcut_to_answer(app, monkeypatch):
    class Broken(FakeModel):
        def predict(self, crop):
            raise RuntimeError("out of memory")

    prelabels = app.extensions["label_assistant"]["predictor"]
    monkeypatch.setattr(prelabels, "serving", lambda project, config: Broken())
    answer = app.test_client().post("/predict", json=body([rect(20, 18, 80, 62)], task_id=9))
    assert answer.status_code == 200
    assert answer.json["results"][0]["method"] == "grabcut"
    assert iou(mask_of(answer.json), TARGET) >= 0.8


def test_model_guided_on_a_large_image_runs_the_model_near_the_prompt(app, monkeypatch):
    big = np.zeros((1024, 1024), np.uint8)
    big[:H, :W] = IMAGE
    prelabels = app.extensions["label_assistant"]["predictor"]
    model = FakeModel()
    model.model_input = lambda image: np.pad(FakeModel.model_input(model, image),
                                             ((0, 0), (0, 1024 - H), (0, 1024 - W)))
    monkeypatch.setattr(prelabels, "serving", lambda project, config: model)
    FakeModel.runs = FakeModel.pixels = 0
    client = app.test_client()
    url = data_url(png_bytes(big))
    size = {"original_width": 1024, "original_height": 1024}
    answer = client.post("/predict", json=body([{**point(50 * W / 1024, 40 * H / 1024),
                                                 **size}], image=url))
    assert answer.json["results"][0]["method"] == "model-object"
    assert FakeModel.runs == 1 and FakeModel.pixels <= (128 + 2 * 32) ** 2  # one window
    (entry,) = app.extensions["label_assistant"]["interactive"].cache.entries()
    # the cache counts the whole probability array from the start: its bound holds
    assert entry.nbytes >= 2 * 4 * 1024 * 1024


def test_the_cache_is_bounded_in_bytes():
    def entry(n):
        return TaskImage(np.zeros((n, 10, 3), np.uint8), None, made=0.0)

    cache = TaskCache(max_bytes=3000, ttl=1e12)
    for key in "abc":
        cache.put(key, entry(40))  # 1200 bytes each
    assert len(cache) == 2 and cache.nbytes == 2400 and cache.get("a") is None
    cache.get("b")  # b is now the most recently used: c goes first
    cache.put("d", entry(40))
    assert cache.get("c") is None and cache.get("b") is not None
    cache.put("huge", entry(1000))  # larger than the bound: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2
    assert TaskCache(0, 1.0).put("x", entry(1)) is None
    stale = TaskCache(10_000, ttl=-1.0)
    stale.put("x", entry(1))
    assert stale.get("x") is None  # older than the TTL: made again


def test_images_from_elsewhere_are_refused_never_fetched(app):
    server = ImageServer()
    try:
        url = server.add_png("/x.png", IMAGE)
        response = app.test_client().post("/predict", json=body([rect(28, 24, 72, 56)],
                                                                image=url))
        assert response.status_code == 200
        assert response.json["results"][0]["result"] == []
        assert "not the Label Studio host" in response.json["errors"][0]["error"]
        assert server.requests == []
    finally:
        server.close()


@pytest.mark.parametrize(("context", "status", "words"), [
    ("nope", 400, "must be an object"),
    ({"result": "x"}, 400, "'result' list"),
    ({"result": [5]}, 400, "not an object"),
    ({"result": [rect(1, 1, 5, 5, label="Background")]}, 422, "not a class"),
    ({"result": [rect(1, 1, 5, 5, label="Dog")]}, 422, "not a class"),
    ({"result": [rect(1, 1, 5, 5), point(3, 3, label="Other")]}, 422, "several labels"),
    ({"result": [{**rect(1, 1, 5, 5), "original_width": 999}]}, 422, "999x96"),
    ({"result": [{**rect(1, 1, 5, 5), "image_rotation": 90}]}, 422, "rotated"),
    ({"result": [{**point(3, 3), "is_positive": "yes"}]}, 400, "is_positive"),
    ({"result": [{**point(3, 3), "value": {"x": 250, "y": 3, "keypointlabels": ["Cell"]}}]},
     422, "outside"),
    ({"result": [{**point(3, 3), "from_name": "nope"}]}, 422, "no region of a smart"),
    ({"result": [point(3, 3, control="extreme")] * 5}, 422, "5 extreme points"),
])
def test_bad_contexts_get_a_4xx_naming_the_problem(app, context, status, words):
    request = body([])
    request["params"]["context"] = context
    response = app.test_client().post("/predict", json=request)
    assert response.status_code == status, response.json
    assert words in response.json["error"]


def test_an_empty_context_is_an_empty_result_with_a_reason(app):
    response = app.test_client().post("/predict", json=body([]))
    assert response.status_code == 200
    assert response.json["results"][0]["result"] == [] and "no region" in response.json["reason"]


def test_an_interactive_request_is_for_one_task(app):
    request = body([rect(28, 24, 72, 56)])
    request["tasks"] *= 2
    assert app.test_client().post("/predict", json=request).status_code == 400


def test_the_smart_tools_add_no_class():
    config = parse_label_config(SMART_CONFIG)
    assert config.labels == ("Background", "Cell")
    assert [c.name for c in config.prompt_controls] == ["box", "click", "extreme"]
    assert all(c.smart for c in config.prompt_controls)
    assert config.brush_control.name == "tag"


def test_the_warm_up_runs_the_models_domain_check_and_one_small_forward_pass(app, monkeypatch):
    prelabels = app.extensions["label_assistant"]["predictor"]
    model = FakeModel()
    checked = []
    model.familiar = lambda x: checked.append(x.shape) or True
    monkeypatch.setattr(prelabels, "serving", lambda project, config: model)
    FakeModel.runs = 0
    prelabels.warm_up("1", parse_label_config(SMART_CONFIG))
    assert checked and FakeModel.runs == 1
