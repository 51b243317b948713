"""Fetching task images: only from Label Studio (or an allow-list), with limits and a cache.

Accepted image references (a task's ``data[<image field>]``):

- ``data:image/...;base64,...`` URLs: decoded in place, no network;
- URLs relative to the Label Studio host (``/data/local-files/?d=...``, ``/data/upload/...``):
  joined to the host from ``/setup`` (``hostname``) or ``LABEL_STUDIO_URL``;
- absolute ``http(s)`` URLs whose origin is the Label Studio host or one of the allowed
  extra origins (``LA_ALLOWED_ORIGINS``).

Everything else is refused: other hosts, ``file:``, ``s3:`` and other schemes, and redirects
that leave the allowed origins (redirects are followed by hand, each hop checked). The
``Authorization: Token <token>`` header goes to the Label Studio origin only, never to an
allow-listed or redirected-to other origin.

Limits: downloads are streamed and stopped past ``max_bytes``; the image's width x height is
read from its header before decoding and refused past ``max_pixels``.

Cache: ``W/cache/images/<sha256 of the URL>.bin`` with a ``.json`` record (URL, ETag,
Last-Modified, size). An entry younger than ``cache_ttl`` is used without a request; an older
one is revalidated (``If-None-Match`` / ``If-Modified-Since``; a 304 keeps it).

Errors are :class:`FetchError` subclasses (``ValueError``) with one-line reasons;
``transient`` says whether trying again later may help (network errors, 5xx, 429).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import numpy as np

from label_assistant.files import write_atomic
from label_assistant.images import ImageError, read_image
from label_assistant.ml_backend.origin import Origin, origin_of

_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_DATA_URL = re.compile(r"^data:(?P<type>[^,;]*)(?P<params>(;[^,;]*)*?),(?P<data>.*)$", re.S)


class FetchError(ValueError):
    """An image that could not be fetched; the message is one line naming the URL."""

    transient = False


class FetchRefused(FetchError):
    """The URL is not allowed: scheme, host, a redirect elsewhere, or no host to resolve it."""


class FetchTooLarge(FetchError):
    """The image is over the byte or pixel limit."""


class FetchFailed(FetchError):
    """The request failed: an HTTP error status or a network error."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class FetchUnreadable(FetchError):
    """The bytes arrived but are not a readable image."""


def _short(url: str, limit: int = 160) -> str:
    if url.startswith("data:"):
        return url[:40] + "..."
    return url if len(url) <= limit else url[: limit - 3] + "..."


@dataclass(frozen=True)
class FetchedImage:
    """A fetched image: its bytes (as served) and the decoded ``(H, W, C)`` array."""

    url: str
    data: bytes
    image: np.ndarray
    from_cache: bool = False

    @property
    def suffix(self) -> str:
        """A file suffix for the bytes, from their first bytes."""
        head = self.data[:8]
        if head.startswith(b"\x89PNG"):
            return ".png"
        if head.startswith(b"\xff\xd8"):
            return ".jpg"
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return ".tif"
        return ".img"


class ImageFetcher:
    """Fetches the images of one project's tasks (one Label Studio host and token)."""

    def __init__(
        self,
        *,
        label_studio_url: str | None,
        token: str | None = None,
        allowed_origins: tuple[str, ...] | list[str] = (),
        max_bytes: int = 64 * 1024 * 1024,
        max_pixels: int = 64 * 1024 * 1024,
        timeout: float = 30.0,
        cache_dir: Path | None = None,
        cache_ttl: float = 3600.0,
    ) -> None:
        self.base_url = label_studio_url.rstrip("/") if label_studio_url else None
        self.ls_origin = origin_of(self.base_url) if self.base_url else ""
        self.token = token
        self.allowed = {self.ls_origin} | {origin_of(o) for o in allowed_origins}
        self.allowed.discard("")
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.timeout = timeout
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.cache_ttl = cache_ttl

    @classmethod
    def for_origin(cls, settings: Any, origin: Origin | None) -> ImageFetcher:
        """A fetcher for a project's Label Studio (:func:`.origin.project_origin`): relative
        URLs are joined to its address, and its token goes to that origin only."""
        return cls(
            label_studio_url=origin.url if origin else None,
            token=origin.token if origin else None,
            allowed_origins=settings.allowed_origins,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            timeout=settings.fetch_timeout,
            cache_dir=settings.workspace.image_cache,
            cache_ttl=settings.image_cache_ttl,
        )

    # --- URLs ----------------------------------------------------------------------------------

    def resolve(self, url: Any) -> str:
        """The absolute URL to fetch (or the ``data:`` URL); :class:`FetchRefused` if refused."""
        if not isinstance(url, str) or not url.strip():
            raise FetchRefused(f"the image reference {url!r} is not a URL")
        url = url.strip()
        if url[:5].lower() == "data:":
            return url
        scheme = urlsplit(url).scheme.lower()
        if not scheme:
            if not url.startswith("/"):
                raise FetchRefused(f"{_short(url)}: not an http(s) URL, a path on the Label "
                                   "Studio host (/data/...), or a data: URL")
            if not self.base_url:
                raise FetchRefused(f"{_short(url)}: a URL relative to Label Studio, but no Label "
                                   "Studio host is known (connect through /setup or set "
                                   "LABEL_STUDIO_URL)")
            url = urljoin(self.base_url + "/", url)
            scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchRefused(f"{_short(url)}: the scheme {scheme!r} is not fetched (only http(s) "
                               "from the Label Studio host, and data: URLs)")
        self._check_origin(url)
        return url

    def _check_origin(self, url: str, after: str | None = None) -> None:
        origin = origin_of(url)
        if origin and origin in self.allowed:
            return
        what = f"redirect from {_short(after)} to" if after else "image URL"
        allowed = ", ".join(sorted(self.allowed)) or "none (no Label Studio host is known)"
        raise FetchRefused(f"{what} {_short(url)}: host {origin or '?'} is not the Label Studio "
                           f"host (allowed: {allowed}; add others to LA_ALLOWED_ORIGINS)")

    # --- fetching ------------------------------------------------------------------------------

    def fetch_image(self, url: Any) -> FetchedImage:
        """Fetch and decode an image, within the byte and pixel limits."""
        resolved = self.resolve(url)
        if resolved[:5].lower() == "data:":
            data, cached = self._data_url(resolved), False
        else:
            data, cached = self._fetch_cached(resolved)
        name = _short(resolved)
        self._check_pixels(data, name)
        try:
            image = read_image(data)
        except ImageError as error:
            reason = str(error).removeprefix("<bytes>: ")
            raise FetchUnreadable(f"{name}: {reason}") from None
        if image.shape[0] * image.shape[1] > self.max_pixels:
            raise FetchTooLarge(self._pixels_message(name, image.shape[1], image.shape[0]))
        return FetchedImage(resolved, data, image, cached)

    def fetch_bytes(self, url: Any) -> bytes:
        """The image's bytes (no decoding), within the byte limit."""
        resolved = self.resolve(url)
        if resolved[:5].lower() == "data:":
            return self._data_url(resolved)
        return self._fetch_cached(resolved)[0]

    def _pixels_message(self, name: str, width: int, height: int) -> str:
        return (f"{name}: the image is {width} x {height} = {width * height} pixels, over the "
                f"limit of {self.max_pixels} (LA_MAX_IMAGE_PIXELS)")

    def _check_pixels(self, data: bytes, name: str) -> None:
        """Refuse an image whose header says it is too large, before decoding it."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
        except Image.DecompressionBombError:
            raise FetchTooLarge(f"{name}: the image is over Pillow's decompression-bomb "
                                "limit") from None
        except Exception:
            return  # not for Pillow (some TIFFs): the size is checked after decoding
        if width * height > self.max_pixels:
            raise FetchTooLarge(self._pixels_message(name, width, height))

    def _data_url(self, url: str) -> bytes:
        match = _DATA_URL.match(url)
        if not match:
            raise FetchUnreadable(f"{_short(url)}: a malformed data: URL")
        payload = match.group("data")
        is_base64 = any(p.strip().lower() == "base64" for p in match.group("params").split(";"))
        estimate = len(payload) * 3 // 4 if is_base64 else len(payload)
        if estimate > self.max_bytes:
            raise FetchTooLarge(f"{_short(url)}: the data: URL holds about {estimate} bytes, over "
                                f"the limit of {self.max_bytes} (LA_MAX_IMAGE_BYTES)")
        try:
            data = base64.b64decode(payload, validate=False) if is_base64 \
                else unquote_to_bytes(payload)
        except (binascii.Error, ValueError):
            raise FetchUnreadable(f"{_short(url)}: the data: URL is not valid base64") from None
        if not data:
            raise FetchUnreadable(f"{_short(url)}: the data: URL is empty")
        return data

    # --- HTTP with the cache -------------------------------------------------------------------

    def _cache_paths(self, url: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.cache_dir / f"{key}.bin", self.cache_dir / f"{key}.json"

    def _fetch_cached(self, url: str) -> tuple[bytes, bool]:
        paths = self._cache_paths(url)
        record: dict[str, Any] | None = None
        if paths is not None:
            record = _read_record(paths)
            if record is not None and time.time() - record.get("checked_at", 0) < self.cache_ttl:
                try:
                    return paths[0].read_bytes(), True
                except OSError:
                    record = None
        conditional = {}
        if record is not None:
            if record.get("etag"):
                conditional["If-None-Match"] = record["etag"]
            if record.get("last_modified"):
                conditional["If-Modified-Since"] = record["last_modified"]
        status, data, headers = self._get(url, conditional)
        if status == 304 and paths is not None and record is not None:
            try:
                data = paths[0].read_bytes()
            except OSError:
                status, data, headers = self._get(url, {})
            else:
                record["checked_at"] = time.time()
                write_atomic(paths[1], json.dumps(record).encode())
                return data, True
        if paths is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(paths[0], data)
            write_atomic(paths[1], json.dumps({
                "url": url, "size": len(data), "etag": headers.get("ETag"),
                "last_modified": headers.get("Last-Modified"), "checked_at": time.time(),
            }).encode())
        return data, False

    def _get(self, url: str, extra_headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """GET with redirects followed by hand (each hop checked); (status, body, headers)."""
        import requests

        session = _session()
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            headers = dict(extra_headers)
            if self.token and origin_of(current) == self.ls_origin:
                headers["Authorization"] = f"Token {self.token}"
            try:
                response = session.get(current, headers=headers, stream=True,
                                       allow_redirects=False, timeout=self.timeout)
            except requests.Timeout:
                raise FetchFailed(f"{_short(current)}: no answer within {self.timeout:g} s",
                                  transient=True) from None
            except requests.RequestException as error:
                reason = type(error).__name__
                raise FetchFailed(f"{_short(current)}: can't connect ({reason})",
                                  transient=True) from None
            with response:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchFailed(f"{_short(current)}: a redirect without a Location")
                    target = urljoin(current, location)
                    if urlsplit(target).scheme.lower() not in ("http", "https"):
                        raise FetchRefused(f"redirect from {_short(current)} to {_short(target)}: "
                                           "not an http(s) URL")
                    self._check_origin(target, after=current)
                    current = target
                    continue
                if response.status_code == 304:
                    return 304, b"", dict(response.headers)
                if response.status_code != 200:
                    transient = response.status_code >= 500 or response.status_code == 429
                    raise FetchFailed(f"{_short(current)}: HTTP {response.status_code} "
                                      f"{response.reason or ''}".rstrip(), transient=transient)
                return 200, self._read_body(response, current), dict(response.headers)
        raise FetchRefused(f"{_short(url)}: more than {_MAX_REDIRECTS} redirects")

    def _read_body(self, response: Any, url: str) -> bytes:
        too_large = (f"{_short(url)}: the image is over the limit of {self.max_bytes} bytes "
                     "(LA_MAX_IMAGE_BYTES)")
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            raise FetchTooLarge(too_large.replace("is over", f"is {length} bytes, over"))
        chunks, total = [], 0
        try:
            for chunk in response.iter_content(_CHUNK):
                total += len(chunk)
                if total > self.max_bytes:
                    raise FetchTooLarge(too_large)  # stop reading: the rest is never downloaded
                chunks.append(chunk)
        except FetchError:
            raise
        except Exception as error:
            raise FetchFailed(f"{_short(url)}: the download broke off ({type(error).__name__})",
                              transient=True) from None
        data = b"".join(chunks)
        if not data:
            raise FetchUnreadable(f"{_short(url)}: the server sent an empty body")
        return data


_sessions = threading.local()


def _session() -> Any:
    """A requests session per thread (connection reuse; sessions aren't shared safely)."""
    import requests

    session = getattr(_sessions, "session", None)
    if session is None or getattr(_sessions, "pid", None) != os.getpid():
        session = requests.Session()
        session.trust_env = False  # no proxies from the environment for Label Studio calls
        _sessions.session, _sessions.pid = session, os.getpid()
    return session


def _read_record(paths: tuple[Path, Path]) -> dict[str, Any] | None:
    try:
        record = json.loads(paths[1].read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and paths[0].is_file() else None
