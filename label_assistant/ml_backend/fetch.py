"""Fetching task images: only from Label Studio (or an allow-list), with limits and a cache.

Accepted image references (a task's ``data[<image field>]``):

- ``data:image/...;base64,...`` URLs: decoded in place, no network;
- URLs relative to the Label Studio host (``/data/local-files/?d=...``, ``/data/upload/...``):
  joined to the host from ``/setup`` (``hostname``) or ``LABEL_STUDIO_URL``
  (:func:`.origin.project_origin`);
- absolute ``http(s)`` URLs whose origin is the Label Studio host or one of the allowed
  extra origins (``LA_ALLOWED_ORIGINS``).

Everything else is refused before any request: other hosts, ``file:``, ``s3:`` and other
schemes, and URLs whose host two URL parsers could read differently
(:func:`.origin.split_origin`: control characters or whitespace other than a space
anywhere; a backslash, ``@`` user info, ``%``, a space or non-ASCII in the host part; or
``urllib.parse`` and urllib3, which requests connects with, disagreeing on scheme, host or
port). Redirects are followed by hand, each ``Location`` checked the same way.
Link-local and cloud metadata addresses are refused whatever the allow-list says:
``169.254.0.0/16``, ``fe80::/10``, ``fd00:ec2::254``, ``100.100.100.200``, the names
``metadata`` and ``metadata.google.internal``, and any host name that resolves
(``getaddrinfo``, just before each request) to one of them; loopback stays allowed (Label
Studio is often on ``localhost``). The ``Authorization: Token <token>`` header goes to the Label
Studio origin only, never to an allow-listed or redirected-to other origin.

Limits: downloads are streamed and stopped past ``max_bytes``. Before any pixel is decoded,
the image's width x height is read from its header (:func:`label_assistant.images.image_size`:
tifffile's first page for TIFFs, Pillow's header otherwise, the larger when both read it)
and refused past ``max_pixels``; so is a header that decodes to more than 4 values per
pixel (a volumetric TIFF page). For the TIFF compressions tifffile decodes in Python with no
output bound (zlib/deflate, LZMA, PackBits), each segment's decoded size is counted with a
bounded decoder first and the image refused when a segment inflates past its share of the
page. An image whose header no decoder can read is refused as unreadable.

Cache: ``W/cache/images/<key>.bin`` with a ``.json`` record (URL, ETag, Last-Modified, size,
sha256), the key being the sha256 of the URL and of the token it was fetched with. Only bytes
that decoded as an image within the limits are stored. An entry younger than ``cache_ttl`` is
used without a request; an older one is revalidated (``If-None-Match`` /
``If-Modified-Since``; a 304 keeps it). The cache is bounded by ``cache_bytes``
(``LA_IMAGE_CACHE_BYTES``; 0: no cache): an entry that would take it past the bound first
evicts the least recently used entries (a hit refreshes the entry's mtime). Writers take an
``flock`` on ``.lock`` in the folder; readers take none (an entry unlinked while read stays
readable on POSIX, and one unlinked before it is opened is a miss).

Originals: a task imported by ``label-assistant import`` names its original plane in its
data (``la_original``, a content hash; :mod:`label_assistant.microscopy.originals`), and
:meth:`ImageFetcher.task_image` reads that plane from the work directory
(``W/originals/``), in its own values, instead of the 8-bit display PNG Label Studio
shows. A missing, malformed or changed original is refused (:class:`FetchOriginalMissing`,
never the PNG in its place). Every part of the backend that needs a task's image (``/predict``,
the intake gate, ranking) asks :meth:`ImageFetcher.task_image`.

Errors are :class:`FetchError` subclasses (``ValueError``) with one-line reasons naming the
URL; ``transient`` says whether trying again later may help (network errors, 5xx, 429).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import numpy as np

from label_assistant.files import write_atomic
from label_assistant.images import ImageError, image_size, read_image
from label_assistant.ml_backend.origin import Origin, UnsafeURL, format_origin, split_origin
from label_assistant.ml_backend.protocol import task_image_url

log = logging.getLogger(__name__)

_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_DATA_URL = re.compile(r"^data:(?P<type>[^,;]*)(?P<params>(;[^,;]*)*?),(?P<data>.*)$", re.S)
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Decoded values per pixel past which a header is refused (RGBA is 4).
_MAX_VALUES_PER_PIXEL = 4
#: Host names of cloud metadata services, refused whatever they resolve to.
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal"})
#: Metadata addresses outside the link-local ranges (AWS IPv6, Alibaba Cloud).
_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254",
                                                                    "100.100.100.200"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: Temporary files of a crashed writer older than this (seconds) are removed by eviction.
_STALE_TEMP = 3600.0


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


class FetchOriginalMissing(FetchError):
    """The task names an original plane that the work directory lacks (or that changed)."""


def _short(url: str, limit: int = 160) -> str:
    """The URL for a one-line message: control characters escaped, long ones cut."""
    if url.startswith("data:"):
        return url[:40] + "..."
    url = "".join(c if c.isprintable() else repr(c)[1:-1] for c in url)
    return url if len(url) <= limit else url[: limit - 3] + "..."


def forbidden_address(address: str) -> bool:
    """True for a link-local or cloud metadata IP address (IPv4-mapped and NAT64 forms too);
    False for anything else, loopback and names included."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_link_local or ip in _METADATA_ADDRESSES


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
        if head[:4] in _TIFF_MAGICS:
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
        cache_bytes: int = 1024 * 1024 * 1024,
        workspace: Any = None,
    ) -> None:
        self.base_url = label_studio_url.strip().rstrip("/") if label_studio_url else None
        self.ls_origin = _origin_or_empty(self.base_url) if self.base_url else ""
        self.token = token
        self.allowed = {self.ls_origin} | {_origin_or_empty(o) for o in allowed_origins}
        self.allowed.discard("")
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.timeout = timeout
        self.cache_bytes = max(0, int(cache_bytes))
        self.cache_dir = Path(cache_dir) if cache_dir and self.cache_bytes else None
        self.cache_ttl = cache_ttl
        self.workspace = workspace  # where imported originals are (None: tasks naming one fail)

    @classmethod
    def for_origin(cls, settings: Any, origin: Origin | None) -> ImageFetcher:
        """A fetcher for a project's Label Studio (:func:`.origin.project_origin`): relative
        URLs are joined to its address, and its token goes to that origin only."""
        cache_bytes = settings.image_cache_bytes
        return cls(
            label_studio_url=origin.url if origin else None,
            token=origin.token if origin else None,
            allowed_origins=settings.allowed_origins,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            timeout=settings.fetch_timeout,
            cache_dir=settings.workspace.image_cache if cache_bytes > 0 else None,
            cache_ttl=settings.image_cache_ttl,
            cache_bytes=cache_bytes,
            workspace=settings.workspace,
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
        """Refuse a URL that is ambiguous, not http(s), not allowed, or a metadata host (no
        network: see :meth:`_check_address` for what the host resolves to)."""
        what = f"redirect from {_short(after)} to" if after else "image URL"
        try:
            scheme, host, port = split_origin(url)
        except UnsafeURL as error:
            raise FetchRefused(f"{what} {_short(url)}: refused, {error}") from None
        if scheme not in ("http", "https"):
            raise FetchRefused(f"{what} {_short(url)}: not an http(s) URL")
        if host.rstrip(".") in _METADATA_NAMES or forbidden_address(host):
            raise FetchRefused(f"{what} {_short(url)}: {host} is a link-local or cloud "
                               "metadata address, never fetched")
        origin = format_origin(scheme, host, port)
        if origin in self.allowed:
            return
        allowed = ", ".join(sorted(self.allowed)) or "none (no Label Studio host is known)"
        raise FetchRefused(f"{what} {_short(url)}: host {origin} is not the Label Studio "
                           f"host (allowed: {allowed}; add others to LA_ALLOWED_ORIGINS)")

    def _check_address(self, url: str) -> None:
        """Refuse a host that resolves to any link-local or metadata address (just before
        connecting to it)."""
        scheme, host, port = split_origin(url)  # checked already by _check_origin
        try:
            infos = socket.getaddrinfo(host, port or (443 if scheme == "https" else 80),
                                       type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise FetchFailed(f"{_short(url)}: can't resolve {host} "
                              f"({type(error).__name__})", transient=True) from None
        for info in infos:
            address = str(info[4][0])
            if forbidden_address(address):
                raise FetchRefused(f"{_short(url)}: {host} resolves to {address}, a link-local "
                                   "or cloud metadata address, never fetched")

    # --- fetching ------------------------------------------------------------------------------

    def fetch_image(self, url: Any) -> FetchedImage:
        """Fetch and decode an image, within the byte and pixel limits."""
        resolved = self.resolve(url)
        name = _short(resolved)
        if resolved[:5].lower() == "data:":
            data = self._data_url(resolved)
            return FetchedImage(resolved, data, self._decode(data, name), False)
        data, record = self._fetch(resolved)
        try:
            image = self._decode(data, name)
        except FetchError:
            if record is None:  # cached bytes that no longer pass (the limits changed)
                self._cache_drop(resolved)
            raise
        if record is not None:  # fresh from the network and an image: worth keeping
            self._cache_put(resolved, data, record)
        return FetchedImage(resolved, data, image, record is None)

    def task_image(self, task: Any, config: Any) -> FetchedImage:
        """The image a task is predicted and trained on: its original plane when its data
        names one (module doc, "Originals"), else the image its label config shows."""
        from label_assistant.microscopy.originals import (
            ORIGINAL_FIELD,
            SOURCE_FIELD,
            OriginalError,
            load_original,
        )
        url = task_image_url(task, config)
        data_fields = task.get("data") or {}
        digest = data_fields.get(ORIGINAL_FIELD)
        if digest is None:
            return self.fetch_image(url)
        if self.workspace is None:
            raise FetchOriginalMissing(f"task {task.get('id')}: it names an original plane "
                                       "but no work directory is known")
        try:
            data, image = load_original(self.workspace, digest, data_fields.get(SOURCE_FIELD))
        except OriginalError as error:
            raise FetchOriginalMissing(f"task {task.get('id')}: {error}") from None
        if image.shape[0] * image.shape[1] > self.max_pixels:
            raise FetchTooLarge(self._pixels_message(f"original {digest}", image.shape[1],
                                                     image.shape[0]))
        return FetchedImage(f"original:{digest}", data, image, True)

    def fetch_bytes(self, url: Any) -> bytes:
        """The image's bytes, within the limits (they are decoded once to check them)."""
        return self.fetch_image(url).data

    def _decode(self, data: bytes, name: str) -> np.ndarray:
        self._check_pixels(data, name)
        try:
            image = read_image(data)
        except ImageError as error:
            reason = str(error).removeprefix("<bytes>: ")
            raise FetchUnreadable(f"{name}: {reason}") from None
        if image.shape[0] * image.shape[1] > self.max_pixels:
            raise FetchTooLarge(self._pixels_message(name, image.shape[1], image.shape[0]))
        return image

    def _pixels_message(self, name: str, width: int, height: int) -> str:
        return (f"{name}: the image is {width} x {height} = {width * height} pixels, over the "
                f"limit of {self.max_pixels} (LA_MAX_IMAGE_PIXELS)")

    def _check_pixels(self, data: bytes, name: str) -> None:
        """Refuse an image whose header says it is too large, before any pixel is decoded."""
        from PIL import Image

        try:
            height, width, values = image_size(data)
        except Image.DecompressionBombError:
            raise FetchTooLarge(f"{name}: the image is over Pillow's decompression-bomb "
                                "limit") from None
        except ImageError as error:
            reason = str(error).removeprefix("<bytes>: ")
            raise FetchUnreadable(f"{name}: {reason}") from None
        if width * height > self.max_pixels:
            raise FetchTooLarge(self._pixels_message(name, width, height))
        if values > _MAX_VALUES_PER_PIXEL * self.max_pixels:
            raise FetchTooLarge(f"{name}: the image decodes to {values} values, over "
                                f"{_MAX_VALUES_PER_PIXEL} per pixel of the limit of "
                                f"{self.max_pixels} (LA_MAX_IMAGE_PIXELS)")
        if data[:4] in _TIFF_MAGICS:
            _check_tiff_segments(data, name)

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

    # --- the cache -----------------------------------------------------------------------------

    def _cache_paths(self, url: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        token = hashlib.sha256(self.token.encode()).hexdigest() if self.token else ""
        key = hashlib.sha256(f"{url}\n{token}".encode()).hexdigest()
        return self.cache_dir / f"{key}.bin", self.cache_dir / f"{key}.json"

    def _cache_read(self, paths: tuple[Path, Path], record: dict[str, Any]) -> bytes | None:
        """The entry's bytes when they are the ones its record describes; None otherwise."""
        try:
            data = paths[0].read_bytes()
        except OSError:
            return None
        if len(data) != record.get("size") or \
                hashlib.sha256(data).hexdigest() != record.get("sha256"):
            return None
        with contextlib.suppress(OSError):
            os.utime(paths[0])  # recently used: the last to be evicted
        return data

    def _cache_put(self, url: str, data: bytes, meta: dict[str, Any]) -> None:
        """Store a decoded image's bytes, evicting the least recently used entries first."""
        paths = self._cache_paths(url)
        if paths is None:
            return
        record = json.dumps({**meta, "url": url, "size": len(data),
                             "sha256": hashlib.sha256(data).hexdigest(),
                             "checked_at": time.time()}).encode()
        if len(data) + len(record) > self.cache_bytes:
            return  # larger than the whole cache
        try:
            with _cache_lock(self.cache_dir):
                _evict(self.cache_dir, self.cache_bytes - len(data) - len(record),
                       keep=paths[0].stem)
                write_atomic(paths[0], data)
                write_atomic(paths[1], record)
        except OSError as error:  # a full disk must not fail the fetch
            log.warning("image cache %s: can't store %s (%s)", self.cache_dir, _short(url),
                        error)

    def _cache_drop(self, url: str) -> None:
        paths = self._cache_paths(url)
        if paths is not None:
            for path in (paths[1], paths[0]):
                with contextlib.suppress(OSError):
                    path.unlink()

    # --- HTTP with the cache -------------------------------------------------------------------

    def _fetch(self, url: str) -> tuple[bytes, dict[str, Any] | None]:
        """The URL's bytes, and the record to cache them under when they came from the
        network (None: from the cache, checked by its sha256)."""
        paths = self._cache_paths(url)
        record = _read_record(paths) if paths is not None else None
        if paths is not None and record is not None \
                and time.time() - record.get("checked_at", 0) < self.cache_ttl:
            data = self._cache_read(paths, record)
            if data is not None:
                return data, None
            record = None
        conditional = {}
        if record is not None:
            if record.get("etag"):
                conditional["If-None-Match"] = record["etag"]
            if record.get("last_modified"):
                conditional["If-Modified-Since"] = record["last_modified"]
        status, data, headers = self._get(url, conditional)
        if status == 304 and paths is not None and record is not None:
            cached = self._cache_read(paths, record)
            if cached is not None:
                record["checked_at"] = time.time()
                with contextlib.suppress(OSError):
                    write_atomic(paths[1], json.dumps(record).encode())
                return cached, None
            status, data, headers = self._get(url, {})
        if status != 200:
            raise FetchFailed(f"{_short(url)}: HTTP {status} without a cached copy")
        return data, {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}

    def _get(self, url: str, extra_headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """GET with redirects followed by hand (each hop checked); (status, body, headers)."""
        import requests

        session = _session()
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_origin(current)  # again: cheap, and every hop passes through here
            self._check_address(current)
            headers = dict(extra_headers)
            if self.token and self.ls_origin and _origin_or_empty(current) == self.ls_origin:
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
                    target = urljoin(current, location.strip())
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


def _origin_or_empty(url: str) -> str:
    try:
        return format_origin(*split_origin(url))
    except UnsafeURL:
        return ""


# --- TIFF segments -----------------------------------------------------------------------------

_ZLIB, _LZMA, _PACKBITS = (8, 32946), (34925,), (32773,)


def _check_tiff_segments(data: bytes, name: str) -> None:
    """Refuse a TIFF whose first page has a segment that inflates past its decoded size.

    tifffile (without imagecodecs) inflates zlib, LZMA and PackBits segments with no output
    bound: a 16 x 16 page whose one tile is a 400 KB zlib stream of zeros makes 400 MB. Here
    each segment is inflated by a bounded decoder that stops past the segment's share.
    """
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            compression = int(page.compression)
            if compression not in (*_ZLIB, *_LZMA, *_PACKBITS):
                return  # none, or a codec tifffile bounds or hands to Pillow/libtiff
            segment = int(np.prod(page.chunks)) * page.dtype.itemsize
            offsets, counts = page.dataoffsets, page.databytecounts
    except Exception:
        return  # tifffile can't read it: read_image hands it to Pillow, which bounds it
    limit = 2 * segment + 4096  # writers may pad; a bomb is 100s of times over
    if sum(min(int(c), len(data)) for c in counts) > 2 * len(data):
        raise FetchTooLarge(f"{name}: the TIFF's segments overlap (they add up to more than "
                            "the file)")
    for offset, count in zip(offsets, counts, strict=False):
        chunk = data[int(offset): int(offset) + int(count)]
        if not chunk:
            continue
        if compression in _ZLIB:
            size = _inflated_zlib(chunk, limit)
        elif compression in _LZMA:
            size = _inflated_lzma(chunk, limit)
        else:
            size = _inflated_packbits(chunk, limit)
        if size > limit:
            raise FetchTooLarge(f"{name}: a TIFF segment inflates past {limit} bytes, its "
                                f"share of the image (a decompression bomb)")


def _inflated_zlib(chunk: bytes, limit: int) -> int:
    import zlib

    decoder, total, pending = zlib.decompressobj(), 0, chunk
    try:
        while True:
            out = decoder.decompress(pending, _CHUNK * 16)
            total += len(out)
            if total > limit:
                return total
            pending = decoder.unconsumed_tail
            if decoder.eof or (not pending and not out):
                return total
    except zlib.error:
        return 0  # tifffile fails on it too, and read_image hands it to Pillow


def _inflated_lzma(chunk: bytes, limit: int) -> int:
    import lzma

    total, pending = 0, chunk
    try:
        while pending:  # lzma.decompress (tifffile's) reads concatenated streams: so do we
            decoder = lzma.LZMADecompressor()
            out = decoder.decompress(pending, max_length=_CHUNK * 16)
            total += len(out)
            while total <= limit and not decoder.eof and not decoder.needs_input:
                total += len(decoder.decompress(b"", max_length=_CHUNK * 16))
            if total > limit or not decoder.eof:
                return total
            pending = decoder.unused_data
    except lzma.LZMAError:
        return 0
    return total


def _inflated_packbits(chunk: bytes, limit: int) -> int:
    total, i, n = 0, 0, len(chunk)
    while i < n and total <= limit:
        header = chunk[i]
        if header < 128:  # a literal run of header + 1 bytes
            total += header + 1
            i += header + 2
        elif header > 128:  # one byte repeated 257 - header times
            total += 257 - header
            i += 2
        else:
            i += 1  # no-op
    return total


# --- cache housekeeping ------------------------------------------------------------------------


_local_cache_lock = threading.Lock()


@contextlib.contextmanager
def _cache_lock(folder: Path) -> Any:
    """An exclusive ``flock`` on ``folder/.lock``: one writer (thread or process) at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: one writer per process at least
        with _local_cache_lock:
            yield
        return
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _evict(folder: Path, room: int, keep: str) -> None:
    """Remove the least recently used entries (``.bin`` mtime) until the folder's entries,
    but ``keep``'s, fit in ``room`` bytes. Called with the cache lock held."""
    entries: dict[str, list[float]] = {}  # key -> [bytes, last used]
    now = time.time()
    try:
        scan = list(os.scandir(folder))
    except OSError:
        return
    for entry in scan:
        stem, ext = os.path.splitext(entry.name)
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if entry.name.startswith(".tmp-"):  # a crashed writer's leftovers
            if now - info.st_mtime > _STALE_TEMP:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            continue
        if ext not in (".bin", ".json") or stem == keep:
            continue
        sizes = entries.setdefault(stem, [0, 0.0])
        sizes[0] += info.st_size
        if ext == ".bin":
            sizes[1] = info.st_mtime
    total = sum(int(size) for size, _ in entries.values())
    for stem, (size, _) in sorted(entries.items(), key=lambda item: item[1][1]):
        if total <= room:
            break
        for ext in (".json", ".bin"):  # the record first: a reader then sees a miss
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / f"{stem}{ext}")
        total -= int(size)


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
    return record if isinstance(record, dict) and record.get("sha256") else None
