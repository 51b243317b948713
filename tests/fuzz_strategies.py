"""Malformed requests for every route of the backend, as hypothesis strategies (no tests here).

Shared by ``tests/test_fuzz.py`` (a bounded CI run) and ``benchmarks/bench_fuzz.py`` (the long
run). A drawn :class:`Req` is one HTTP request: method, path, body bytes, and how the body
travels (``Content-Length``, a chunked body a server has de-chunked, or a chunked body whose
encoding is broken). Bodies start from what Label Studio 1.23.2 really sends (the captured
fixtures' shapes) and are broken one family at a time:

- wrong types at every known field (ids, project, action, annotation, task, result, config);
- ids that are huge, negative, floats, ``1e400``, strings, lists, dicts or bools;
- JSON nested 1,000 deep, lone surrogates (``"\\ud800"``) anywhere, ``NaN``;
- bodies with a UTF-8 BOM, in UTF-16 / UTF-32, garbage or truncated bytes;
- label configs: broken, namespaced, with entity expansion ("billion laughs") or an external
  entity, without an image or a control;
- annotation results: corrupted brush RLE (wrong values, lengths, headers), wrong
  ``original_width`` / ``original_height``, rotations, polygons with odd points;
- task images as ``data:`` URLs: truncated, a PNG header claiming 100000 x 100000, garbage,
  other schemes and hosts;
- ``/setup`` hostnames and tokens that are not URLs or headers.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from label_assistant.labelstudio.rle import encode_rle

CONFIG = (
    '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
    '<Label value="Background"/><Label value="Cell"/></BrushLabels></View>'
)
POLYGON_CONFIG = (
    '<View><Image name="image" value="$image"/><PolygonLabels name="poly" toName="image">'
    '<Label value="Background"/><Label value="Cell"/></PolygonLabels></View>'
)
#: CONFIG with Label Studio's smart tools (interactive labeling: box, clicks, extreme points).
SMART_CONFIG = CONFIG.replace("</View>", (
    '<RectangleLabels name="box" toName="image" smart="true"><Label value="Cell"/>'
    '</RectangleLabels><KeyPointLabels name="click" toName="image" smart="true">'
    '<Label value="Cell"/></KeyPointLabels><KeyPointLabels name="extreme" toName="image" '
    'smart="true"><Label value="Cell"/></KeyPointLabels></View>'))
HEIGHT, WIDTH = 64, 80
#: A closed port on this machine: a stored hostname that is valid but answers nothing, fast.
CLOSED = "http://127.0.0.1:9"

# --- images -------------------------------------------------------------------------------


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[10:30, 20:40] = 1
    return np.clip(mask * 170 + 40 + rng.normal(0, 6, mask.shape), 0, 255).astype(np.uint8)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")


GOOD_PNG = _png(_image())


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


GOOD_IMAGE = data_url(GOOD_PNG)

bad_image_refs = st.one_of(
    st.just(data_url(GOOD_PNG[: len(GOOD_PNG) // 2])),  # truncated
    st.just(data_url(_png_claiming(100_000, 100_000))),  # a bomb's header
    st.just(data_url(_png_claiming(0, 0))),
    st.just(data_url(_png_claiming(2**31 - 1, 1))),
    st.just(data_url(b"GIF89a" + b"\xff" * 20, "image/gif")),
    st.just(data_url(b"garbage" * 10)),
    st.just("data:image/png;base64,@@@not base64@@@"),
    st.just("data:image/png," + "A" * 100),
    st.just("data:;base64,"),
    st.just("/data/local-files/?d=images/img0.png"),  # relative: needs a Label Studio host
    st.just("http://elsewhere.invalid/x.png"),  # another host: refused, never fetched
    st.just("http://["),
    st.just("file:///etc/passwd"),
    st.just("s3://bucket/x.png"),
    st.just(""),
    st.binary(max_size=30).map(lambda b: data_url(b)),
    st.text(max_size=20),
    st.integers(),
    st.none(),
    st.lists(st.just(GOOD_IMAGE), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
#: Half good: the annotation is decoded only when its image is.
image_refs = st.booleans().flatmap(lambda good: st.just(GOOD_IMAGE) if good else bad_image_refs)

# --- scalars ------------------------------------------------------------------------------

LONE_SURROGATES = ["\ud800", "\udfff", "a\udc80b", "\ud83d"]  # JSON allows "\ud800" escapes

weird_strings = st.one_of(
    st.text(max_size=12),
    st.sampled_from(LONE_SURROGATES),
    st.sampled_from(["", " ", "\x00", "\n", "ÿ", "日本", "\u202e", "${jndi:x}", "../../etc",
                     "9" * 300, "1.1795273793", "-1", "0", "1e400", "NaN"]),
)


class Raw:
    """A number written into the JSON text as is (``1e400``, ``-0``, 300 digits)."""

    def __init__(self, text: str) -> None:
        self.text = text


ids = st.one_of(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=-(2**70), max_value=-1),
    st.integers(min_value=2**63, max_value=2**80),
    st.just(10**300),
    st.just(Raw("1e400")), st.just(Raw("-1e400")), st.just(Raw("1" * 400)),
    st.just(Raw("1.0")), st.just(Raw("-0")), st.just(Raw("1E2")),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    weird_strings,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["id", "x"]), st.integers(), max_size=2),
)

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    weird_strings, st.just(10**300), st.just(Raw("1e400")))

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(weird_strings, children, max_size=4)),
    max_leaves=12,
)

projects = st.one_of(
    st.just("1.1795273793"), st.just(1), st.just({"id": 1}), st.just({"id": 2}),
    st.just("2.1"), st.just("9" * 12 + ".1"), st.just("9" * 13 + ".1"), st.just("9" * 300),
    st.just({"id": "9" * 300}), st.just("0.1"), st.just("007.5"), st.just("²"),
    st.just("١٢.3"), st.just(-3), st.just(0), st.just({"id": None}), st.just({}),
    ids,
    st.dictionaries(st.sampled_from(["id", "label_config", "title"]), ids, max_size=3),
)

# --- label configs ------------------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
              for i in range(1, 10))
    + ']><View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
    '<Label value="Background"/><Label value="&lol9;"/></BrushLabels></View>'
)
QUADRATIC = (
    '<!DOCTYPE v [<!ENTITY a "' + "x" * 5000 + '">]><View><Image name="image" value="$image"/>'
    '<BrushLabels name="tag" toName="image"><Label value="Background"/><Label value="'
    + "&a;" * 2000 + '"/></BrushLabels></View>'
)
EXTERNAL = (
    '<!DOCTYPE v [<!ENTITY e SYSTEM "file:///etc/passwd">]><View><Image name="image" '
    'value="$image"/><BrushLabels name="tag" toName="image"><Label value="Background"/>'
    '<Label value="&e;"/></BrushLabels></View>'
)
NAMESPACED = (
    '<v:View xmlns:v="urn:x"><v:Image name="image" value="$image"/><v:BrushLabels name="tag" '
    'toName="image"><v:Label value="Background"/><v:Label value="Cell"/></v:BrushLabels>'
    '</v:View>'
)
BAD_CONFIGS = [
    "<View", "<View></Vie>", "", "   ", "not xml at all", "<View/>",
    '<View><Image name="image" value="$image"/></View>',
    '<View><Image name="image" value="image"/><BrushLabels name="t" toName="image">'
    '<Label value="Background"/></BrushLabels></View>',
    '<View><BrushLabels name="t" toName="image"><Label value="Cell"/></BrushLabels></View>',
    '<View><Image name="image" value="$image"/><BrushLabels name="t" toName="other">'
    '<Label value="Background"/></BrushLabels></View>',
    CONFIG.replace('"Background"', '"Backdrop"'),
    CONFIG.replace('<Label value="Cell"/>', '<Label value="Cell"/><Label value="Cell"/>'),
    NAMESPACED,
    '<View xmlns="urn:default"><Image name="image" value="$image"/><BrushLabels name="tag" '
    'toName="image"><Label value="Background"/><Label value="Cell"/></BrushLabels></View>',
    BILLION_LAUGHS, QUADRATIC, EXTERNAL,
    "<View>" * 5000 + "</View>" * 5000,
    "<View>\x00</View>",
    CONFIG.replace("Cell", "\ud800"),
    CONFIG.replace("BrushLabels", "PolygonLabels"),
    '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
    + "".join(f'<Label value="c{i}"/>' for i in range(300)) + "</BrushLabels></View>",
]
configs = st.one_of(
    st.just(CONFIG), st.just(POLYGON_CONFIG),
    st.sampled_from(BAD_CONFIGS),
    st.text(max_size=30),
    st.integers(), st.none(), st.lists(st.just(CONFIG), max_size=2),
)

# --- annotation results -------------------------------------------------------------------

_MASK = np.zeros((HEIGHT, WIDTH), np.uint8)
_MASK[10:30, 20:40] = 255
GOOD_RLE = encode_rle(_MASK)
_BACKGROUND = np.zeros((HEIGHT, WIDTH), np.uint8)
_BACKGROUND[:8] = 255
BACKGROUND_RLE = encode_rle(_BACKGROUND)


@st.composite
def rles(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["good"] * 3 + ["truncated", "flip", "extend", "values",
                                               "header", "other", "other_size"]))
    rle = list(GOOD_RLE)
    if kind == "truncated":
        rle = rle[: draw(st.integers(0, len(rle) - 1))]
    elif kind == "flip":
        i = draw(st.integers(0, len(rle) - 1))
        rle[i] = draw(st.integers(0, 255))
    elif kind == "extend":
        rle = rle + draw(st.lists(st.integers(0, 255), min_size=1, max_size=50))
    elif kind == "values":
        i = draw(st.integers(0, len(rle) - 1))
        rle[i] = draw(st.one_of(st.integers(256, 2**70), st.integers(-(2**70), -1),
                                st.floats(), st.text(max_size=3), st.none(), st.booleans(),
                                st.lists(st.integers(0, 255), max_size=2),
                                st.just(Raw("1e400"))))
    elif kind == "header":  # a header claiming another (or an enormous) size
        rle[:4] = draw(st.sampled_from([[255, 255, 255, 255], [0, 0, 0, 0], [0, 1, 0, 0],
                                        [128, 0, 0, 0]]))
    elif kind == "other":
        return draw(json_values)
    elif kind == "other_size":
        small = np.zeros((8, 8), np.uint8)
        small[2:5, 2:5] = 255
        rle = encode_rle(small)
    return rle


def _result(draw: st.DrawFn) -> dict[str, Any]:
    brush = draw(st.booleans())
    result: dict[str, Any] = {
        "id": draw(st.one_of(st.text(max_size=5), ids)),
        "from_name": "tag" if brush else "poly",
        "to_name": "image",
        "type": "brushlabels" if brush else "polygonlabels",
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "value": ({"format": "rle", "rle": draw(rles()), "brushlabels": ["Cell"]} if brush
                  else {"points": [[10, 10], [50, 10], [50, 50]], "polygonlabels": ["Cell"]}),
    }
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["original_width", "original_height", "image_rotation",
                                    "from_name", "to_name", "type", "value", "id", "labels",
                                    "format", "points", "extra"]))
        bad = draw(st.one_of(
            st.sampled_from([0, -1, 1, 2**31, 10**300, 80.0, 64.5, "80", 90, 180, 360, -90,
                             None, [], {}, True]),
            st.just(Raw("1e400")), json_values))
        if key in ("labels", "format", "points"):
            value = result["value"]
            if not isinstance(value, dict):
                continue
            if key == "labels":
                value["brushlabels" if brush else "polygonlabels"] = draw(st.one_of(
                    st.just(["Unknown"]), st.just(["Cell", "Background"]), st.just([]),
                    json_values))
            elif key == "points" and not brush:
                value["points"] = draw(st.one_of(
                    st.lists(st.lists(st.one_of(st.floats(), st.integers(),
                                                st.just(10**300)), max_size=3), max_size=5),
                    json_values))
            elif key == "format":
                value["format"] = bad
        else:
            result[key] = bad
    return result


@st.composite
def annotation_results(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    results = [_result(draw) for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):  # a background region too, as a good annotation has
        results.append({"id": "bg", "from_name": "tag", "to_name": "image",
                        "type": "brushlabels", "original_width": WIDTH,
                        "original_height": HEIGHT, "image_rotation": 0,
                        "value": {"format": "rle", "rle": BACKGROUND_RLE,
                                  "brushlabels": ["Background"]}})
    if draw(st.integers(0, 4)) == 0:
        results.append(draw(json_values))
    return results


def good_result() -> list[dict[str, Any]]:
    """An annotation the gate admits: a Cell square and background rows, on 80 x 64."""
    cell = {"id": "cell", "from_name": "tag", "to_name": "image", "type": "brushlabels",
            "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0,
            "value": {"format": "rle", "rle": GOOD_RLE, "brushlabels": ["Cell"]}}
    background = {**cell, "id": "bg", "value": {"format": "rle", "rle": BACKGROUND_RLE,
                                                "brushlabels": ["Background"]}}
    return [background, cell]


# --- bodies -------------------------------------------------------------------------------


def annotation_body(annotation_id: int = 1, task_id: int = 1, project: Any = 1,
                    image: str = GOOD_IMAGE, config: Any = CONFIG,
                    action: str = "ANNOTATION_CREATED") -> dict[str, Any]:
    """A webhook body shaped like Label Studio's (fixture 015), with a good annotation."""
    return {
        "action": action,
        "annotation": {"id": annotation_id, "result": good_result(), "was_cancelled": False,
                       "ground_truth": False, "lead_time": 1.5, "prediction": {},
                       "result_count": 2, "task": task_id, "project": project,
                       "completed_by": 1},
        "project": {"id": project, "title": "probe-seg", "label_config": config},
        "task": {"id": task_id, "data": {"image": image}, "meta": {}, "project": project},
    }


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = body
    for key in path[:-1]:
        if not isinstance(node, dict):
            return
        node = node.setdefault(key, {})
    if isinstance(node, dict):
        node[path[-1]] = value


def _drop(body: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = body
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


_WEBHOOK_FIELDS = {
    ("action",): st.one_of(st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED",
                                            "ANNOTATIONS_DELETED", "START_TRAINING",
                                            "TASKS_CREATED", "PROJECT_UPDATED", ""]),
                           weird_strings, json_values),
    ("project",): projects,
    ("project", "id"): ids,
    ("project", "label_config"): configs,
    ("annotation",): json_values,
    ("annotation", "id"): ids,
    ("annotation", "task"): ids,
    ("annotation", "result"): annotation_results(),
    ("annotation", "was_cancelled"): json_values,
    ("task",): json_values,
    ("task", "id"): ids,
    ("task", "data"): json_values,
    ("task", "data", "image"): image_refs,
    ("annotations",): st.one_of(st.lists(st.fixed_dictionaries({"id": ids}), max_size=3),
                                json_values),
}


@st.composite
def webhook_bodies(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(["ANNOTATION_CREATED"] * 3 + ["ANNOTATION_UPDATED"] * 2 + [
        "ANNOTATIONS_DELETED", "START_TRAINING", "TASKS_CREATED"]))
    body = annotation_body(annotation_id=draw(st.integers(1, 50)),
                           task_id=draw(st.integers(1, 20)), project=draw(st.integers(1, 3)),
                           image=draw(image_refs), action=action)
    body["annotation"]["result"] = draw(annotation_results())
    if action == "ANNOTATIONS_DELETED":
        body = {"action": action, "project": body["project"],
                "annotations": [{"id": draw(st.integers(1, 50))}]}
    elif action in ("START_TRAINING", "TASKS_CREATED"):
        body = {"action": action, "project": body["project"]}
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(sorted(_WEBHOOK_FIELDS)))
        if draw(st.integers(0, 4)) == 0:
            _drop(body, path)
        else:
            _set(body, path, draw(_WEBHOOK_FIELDS[path]))
    return body


@st.composite
def setup_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"project": draw(st.one_of(st.just("1.1795273793"), projects)),
                            "schema": draw(st.one_of(st.just(CONFIG), configs)),
                            "hostname": draw(st.one_of(
                                st.just(CLOSED), st.none(), st.just(""),
                                st.sampled_from(["http://[", "http://[::1", "http://host:99999",
                                                 "http://host:port", "ftp://host",
                                                 "http://", "//host", "host:80", "http:///x",
                                                 "http://a b", "http://h\n", "http://h\\@evil",
                                                 "http://user:pw@h", "http://h/?q#f",
                                                 "http://" + "h" * 3000, "\ud800",
                                                 "http://\ud800"]),
                                weird_strings, json_values)),
                            "access_token": draw(st.one_of(
                                st.just("0123456789abcdef"), st.none(),
                                st.sampled_from(["a b", "tok\n", "tök", "\ud800", "x" * 5000]),
                                weird_strings, json_values)),
                            "extra_params": draw(json_values)}
    if draw(st.integers(0, 3)) == 0:
        body["label_config"] = body.pop("schema")
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
        if draw(st.booleans()):
            body.pop(key, None)
    return body


@st.composite
def tasks(draw: st.DrawFn) -> Any:
    task = {"id": draw(ids), "data": {"image": draw(image_refs)}, "meta": {},
            "annotations": [], "predictions": []}
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(["id", "data", "meta", "annotations", "predictions"]))
        task[key] = draw(json_values)
    return task if draw(st.integers(0, 9)) else draw(json_values)


# --- smart-tool contexts (interactive labeling) ---------------------------------------------

percents = st.one_of(st.floats(0, 100), st.floats(allow_nan=False), st.integers(-5, 200),
                     st.just(Raw("1e400")), st.none(), weird_strings, st.booleans())


@st.composite
def context_results(draw: st.DrawFn) -> Any:
    """One region of a smart tool as Label Studio sends it, often broken somewhere."""
    kind = draw(st.sampled_from(["rectanglelabels", "keypointlabels", "keypointlabels"]))
    control = {"rectanglelabels": "box"}.get(kind) or draw(st.sampled_from(["click", "extreme"]))
    x, y = draw(st.floats(0, 90)), draw(st.floats(0, 90))
    value: dict[str, Any] = {"x": x, "y": y, kind: [draw(st.sampled_from(
        ["Cell", "Cell", "Cell", "Background", "Other", ""]))]}
    if kind == "rectanglelabels":
        value.update(width=draw(st.floats(0, 100 - x)), height=draw(st.floats(0, 100 - y)),
                     rotation=draw(st.sampled_from([0, 0, 0, 90, 360, -0.0])))
    else:
        value["width"] = 0.5
    result: dict[str, Any] = {
        "id": draw(st.text(max_size=6)), "type": kind, "from_name": control,
        "to_name": "image", "original_width": WIDTH, "original_height": HEIGHT,
        "image_rotation": 0, "value": value}
    if kind == "keypointlabels":
        result["is_positive"] = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):  # break something
        where = draw(st.sampled_from(["value", "top"]))
        target = value if where == "value" else result
        key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(st.one_of(percents, json_values))
    return result if draw(st.integers(0, 19)) else draw(json_values)


contexts = st.one_of(
    st.builds(lambda r: {"result": r}, st.lists(context_results(), max_size=6)),
    st.builds(lambda r: {"result": r}, json_values),
    json_values,
)


@st.composite
def predict_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tasks": draw(st.one_of(st.lists(tasks(), max_size=3), json_values)),
        "project": draw(st.one_of(st.just("1.1795273793"), projects)),
        "label_config": draw(st.one_of(st.just(CONFIG), st.just(SMART_CONFIG), configs)),
        "params": draw(st.one_of(st.just({"login": None, "password": None, "context": None}),
                                 st.builds(lambda c: {"login": None, "password": None,
                                                      "context": c}, contexts),
                                 json_values)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
        body.pop(key, None)
    return body


@st.composite
def train_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = {"project": draw(st.one_of(st.just("1.1795273793"), projects)),
            "label_config": draw(st.one_of(st.just(CONFIG), configs)),
            "annotations": draw(json_values), "params": draw(json_values)}
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
        body.pop(key, None)
    return body


# --- encoding a body into bytes -----------------------------------------------------------


def dumps(value: Any, ensure_ascii: bool = True) -> str:
    """JSON text, with :class:`Raw` numbers written as they are (json can't write them)."""
    raws: list[str] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return f"\x00RAW{len(raws) - 1}\x00"
        raise TypeError(type(obj).__name__)

    text = json.dumps(value, ensure_ascii=ensure_ascii, default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"\\u0000RAW{i}\\u0000"', raw).replace(f'"\x00RAW{i}\x00"', raw)
    return text


@st.composite
def encoded(draw: st.DrawFn, body: Any) -> bytes:
    """``body`` as the bytes of a request: mostly UTF-8 JSON, sometimes not."""
    how = draw(st.sampled_from(["ascii"] * 12 + ["utf8", "bom", "utf16", "utf16le", "utf32",
                                                "truncated", "garbage", "deep", "nan", "array",
                                                "latin1", "empty"]))
    text = dumps(body, ensure_ascii=how != "utf8")
    if how in ("ascii", "utf8"):
        return text.encode("utf-8", "surrogatepass")
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if how == "utf16":
        return text.encode("utf-16", "surrogatepass")
    if how == "utf16le":
        return text.encode("utf-16-le", "surrogatepass")
    if how == "utf32":
        return text.encode("utf-32", "surrogatepass")
    if how == "truncated":
        raw = text.encode("utf-8", "surrogatepass")
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if how == "garbage":
        return draw(st.binary(min_size=1, max_size=64))
    if how == "deep":
        depth = draw(st.sampled_from([99, 100, 101, 1000, 100_000]))
        key = draw(st.sampled_from(["a", "tasks", "annotation", "project"]))
        return (("{" + json.dumps(key) + ":") * depth + text + "}" * depth).encode()
    if how == "nan":
        return text.replace("1", "NaN", 1).encode("utf-8", "surrogatepass")
    if how == "array":
        return ("[" + text + "]").encode("utf-8", "surrogatepass")
    if how == "latin1":
        return text.replace('"', '"\xe9', 1).encode("latin-1", "replace")
    return b""


# --- requests -----------------------------------------------------------------------------


@dataclass
class Req:
    """One request: ``transport`` is ``length`` (Content-Length), ``chunked`` (a chunked body a
    server de-chunked: no length, the server ends the stream) or ``broken`` (a chunked body
    whose chunk size is ``ZZ``: reading it raises, as gunicorn's reader does)."""

    method: str
    path: str
    body: bytes = b""
    transport: str = "length"
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # hypothesis prints the failing one
        return (f"Req({self.method} {self.path} {self.transport} {len(self.body)} bytes: "
                f"{self.body[:300]!r})")


ROUTE_BODIES = {"/webhook": webhook_bodies(), "/setup": setup_bodies(),
                "/predict": predict_bodies(), "/train": train_bodies()}


@st.composite
def requests(draw: st.DrawFn) -> Req:
    """A request to any route, mostly the four POST routes with malformed bodies."""
    route = draw(st.sampled_from(["/webhook"] * 6 + ["/setup"] * 2 + ["/predict"] * 2
                                 + ["/train", "/metrics", "/versions", "/health", "/",
                                    "other"]))
    transport = draw(st.sampled_from(["length"] * 8 + ["chunked", "broken"]))
    headers = {"Content-Type": draw(st.sampled_from([
        "application/json", "application/json", "text/plain", "application/json; charset=utf-16",
        "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]))}
    if route in ROUTE_BODIES:
        body = draw(encoded(draw(ROUTE_BODIES[route])))
        return Req("POST", route, body, transport, headers)
    if route == "other":
        path = "/" + draw(st.text(st.characters(codec="ascii", exclude_characters="?#%"),
                                  max_size=12)).strip("/")
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                                       "HEAD"]))
        return Req(method, path, draw(st.binary(max_size=32)), transport, headers)
    method = draw(st.sampled_from(["GET", "GET", "POST", "HEAD", "DELETE"]))
    return Req(method, route, draw(st.binary(max_size=32)), transport, headers)


# --- sending ------------------------------------------------------------------------------


class _BrokenChunks(io.RawIOBase):
    """A de-chunking reader that meets a chunk size of ``ZZ`` (gunicorn's InvalidChunkSize)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            from gunicorn.http.errors import InvalidChunkSize
        except ImportError:  # pragma: no cover (gunicorn is a dependency)
            raise OSError("Invalid chunk size: 'ZZ'") from None
        raise InvalidChunkSize("ZZ")


def send(client: Any, req: Req) -> Any:
    """Send ``req`` through a Flask test client; the response."""
    if req.transport == "length":
        return client.open(req.path, method=req.method, data=req.body, headers=req.headers)
    # Transfer-Encoding: chunked, no length: the server de-chunks and says that it ends the
    # stream (wsgi.input_terminated), as gunicorn does.
    stream = io.BytesIO(req.body) if req.transport == "chunked" else _BrokenChunks()
    return client.open(req.path, method=req.method,
                       headers={**req.headers, "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input": stream, "wsgi.input_terminated": True})
