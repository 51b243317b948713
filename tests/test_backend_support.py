"""Helpers for the backend tests (no tests here): a local image server, images, payloads."""

from __future__ import annotations

import base64
import copy
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / \
    "label-studio-1.23.2"
#: The Label Studio host the fixtures were captured from.
FIXTURE_HOST = "http://127.0.0.1:52521"
TOKEN = "0123456789abcdef0123456789abcdef01234567"

CONFIG = (
    '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
    '<Label value="Background"/><Label value="Cell"/></BrushLabels></View>'
)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def blob_image(height: int = 64, width: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 image with three bright squares on a dark noisy background, and its mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(3):
        y = int(rng.integers(6, height - 14))
        x = int(rng.integers(6, width - 14))
        mask[y : y + 9, x : x + 9] = 1
    image = np.clip(mask * 170 + 40 + rng.normal(0, 6, mask.shape), 0, 255).astype(np.uint8)
    return image, mask


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def fixture(name: str) -> dict[str, Any]:
    """The JSON body Label Studio sent, from a captured fixture file."""
    return copy.deepcopy(json.loads((FIXTURES / name).read_text())["json"])


def rewrite_hosts(body: Any, origin: str) -> Any:
    """The body with the fixtures' Label Studio host replaced by ``origin``."""
    return json.loads(json.dumps(body).replace(FIXTURE_HOST, origin))


class ImageServer:
    """A tiny HTTP server on 127.0.0.1 in a thread; ``routes[path] = (status, headers, body)``.

    The path includes the query string (``/data/local-files/?d=images/img0.png``). Every
    request is recorded with its headers; ``require_token`` answers 401 without the token.
    """

    def __init__(self, require_token: str | None = None) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.require_token = require_token
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, dict(self.headers)))
                if server.require_token and \
                        self.headers.get("Authorization") != f"Token {server.require_token}":
                    self._send(401, {}, b"no token")
                    return
                route = server.routes.get(self.path)
                if route is None:
                    self._send(404, {}, b"not found")
                    return
                self._send(*route)

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                chunked = headers.get("Transfer-Encoding") == "chunked"
                for k, v in headers.items():
                    self.send_header(k, v)
                if not chunked:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if chunked:
                    for i in range(0, len(body), 4096):
                        part = body[i : i + 4096]
                        try:
                            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                        except OSError:
                            return  # the client stopped reading: that is the point
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    try:
                        self.wfile.write(body)
                    except OSError:
                        return

            def log_message(self, *args: Any) -> None:
                pass

        Handler.protocol_version = "HTTP/1.1"
        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that stop reading (size limits) reset the connection

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add_png(self, path: str, array: np.ndarray) -> str:
        self.routes[path] = (200, {"Content-Type": "image/png"}, png_bytes(array))
        return self.origin + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def annotation_event(
    action: str,
    *,
    annotation_id: int,
    task_id: int,
    image: str,
    label_map: np.ndarray | None,
    config_xml: str = CONFIG,
    include_background: bool = True,
    results: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A webhook body shaped like fixture 015, with results drawn from ``label_map``."""
    from label_assistant.labelstudio import label_map_to_results, parse_label_config

    body = fixture("015_POST_webhook_ANNOTATION_CREATED.json")
    if results is None:
        config = parse_label_config(config_xml)
        results = label_map_to_results(label_map, config, include_background=include_background)
    body["action"] = action
    body["annotation"].update(id=annotation_id, task=task_id, result=results)
    body["task"].update(id=task_id, data={"image": image})
    body["project"]["label_config"] = config_xml
    return body


def labeled(mask: np.ndarray, background_rows: int = 12) -> np.ndarray:
    """A partial label map: the mask's class pixels, background in the top rows, rest 255."""
    label_map = np.full(mask.shape, 255, np.uint8)
    label_map[:background_rows][mask[:background_rows] == 0] = 0
    label_map[mask > 0] = 1
    return label_map
