"""Image fetching: only from Label Studio (or the allow-list), with limits, tokens and a cache."""

from __future__ import annotations

import numpy as np
import pytest
from test_backend_support import TOKEN, ImageServer, blob_image, data_url, png_bytes

from label_assistant.ml_backend.fetch import (
    FetchFailed,
    FetchRefused,
    FetchTooLarge,
    FetchUnreadable,
    ImageFetcher,
)
from label_assistant.ml_backend.origin import origin_of


@pytest.fixture
def server():
    s = ImageServer(require_token=TOKEN)
    yield s
    s.close()


@pytest.fixture
def other():
    s = ImageServer()
    yield s
    s.close()


def fetcher(server: ImageServer, tmp_path, **kwargs) -> ImageFetcher:
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    return ImageFetcher(label_studio_url=server.origin, token=TOKEN, timeout=5, **kwargs)


def test_origin_normalisation():
    assert origin_of("HTTP://Example.org:80/a?b") == "http://example.org"
    assert origin_of("https://example.org:8443/x") == "https://example.org:8443"
    assert origin_of("/relative") == ""


def test_relative_url_is_joined_to_the_label_studio_host_with_the_token(server, tmp_path):
    image, _ = blob_image()
    server.add_png("/data/local-files/?d=images/img0.png", image)
    got = fetcher(server, tmp_path).fetch_image("/data/local-files/?d=images/img0.png")
    assert got.image.shape == (64, 80, 1)
    assert np.array_equal(got.image[..., 0], image)
    assert server.requests[0][1]["Authorization"] == f"Token {TOKEN}"


def test_absolute_url_on_the_label_studio_host(server, tmp_path):
    image, _ = blob_image()
    url = server.add_png("/data/upload/1/a.png", image)
    assert fetcher(server, tmp_path).fetch_image(url).image.shape[:2] == (64, 80)


def test_other_hosts_and_schemes_are_refused_without_a_request(server, other, tmp_path):
    image, _ = blob_image()
    foreign = other.add_png("/a.png", image)
    f = fetcher(server, tmp_path)
    with pytest.raises(FetchRefused, match="not the Label Studio host"):
        f.fetch_image(foreign)
    for url in ("file:///etc/passwd", "s3://bucket/a.png", "ftp://127.0.0.1/a.png",
                "images/a.png"):
        with pytest.raises(FetchRefused):
            f.fetch_image(url)
    assert other.requests == []


def test_relative_url_without_a_known_host_is_refused(tmp_path):
    f = ImageFetcher(label_studio_url=None, cache_dir=tmp_path)
    with pytest.raises(FetchRefused, match="no Label Studio host is known"):
        f.fetch_image("/data/upload/1/a.png")


def test_redirect_to_another_origin_is_refused(server, other, tmp_path):
    image, _ = blob_image()
    target = other.add_png("/stolen.png", image)
    server.routes["/data/upload/1/r.png"] = (302, {"Location": target}, b"")
    with pytest.raises(FetchRefused, match="redirect from .* to .*stolen.png"):
        fetcher(server, tmp_path).fetch_image("/data/upload/1/r.png")
    assert other.requests == []


def test_redirect_within_the_origin_is_followed(server, tmp_path):
    image, _ = blob_image()
    server.add_png("/data/upload/1/real.png", image)
    server.routes["/data/upload/1/r.png"] = (302, {"Location": "/data/upload/1/real.png"}, b"")
    got = fetcher(server, tmp_path).fetch_image("/data/upload/1/r.png")
    assert got.image.shape[:2] == (64, 80)


def test_allow_listed_origin_is_fetched_without_the_token(server, other, tmp_path):
    image, _ = blob_image()
    url = other.add_png("/a.png", image)
    got = fetcher(server, tmp_path, allowed_origins=[other.origin]).fetch_image(url)
    assert got.image.shape[:2] == (64, 80)
    assert "Authorization" not in other.requests[0][1]


def test_oversized_download_is_refused(server, tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    data = png_bytes(image)
    server.routes["/big.png"] = (200, {}, data)
    server.routes["/big-chunked.png"] = (200, {"Transfer-Encoding": "chunked"}, data)
    f = fetcher(server, tmp_path, max_bytes=10_000)
    with pytest.raises(FetchTooLarge, match=r"over the limit of 10000 bytes"):
        f.fetch_image("/big.png")
    with pytest.raises(FetchTooLarge, match=r"over the limit of 10000 bytes"):
        f.fetch_image("/big-chunked.png")  # no Content-Length: stopped while streaming


def test_too_many_pixels_is_refused_before_decoding(server, tmp_path):
    server.routes["/wide.png"] = (200, {}, png_bytes(np.zeros((100, 200), np.uint8)))
    with pytest.raises(FetchTooLarge, match="200 x 100 = 20000 pixels, over the limit of 5000"):
        fetcher(server, tmp_path, max_pixels=5000).fetch_image("/wide.png")


def test_data_url(tmp_path):
    image, _ = blob_image()
    f = ImageFetcher(label_studio_url=None, cache_dir=tmp_path)
    got = f.fetch_image(data_url(png_bytes(image)))
    assert np.array_equal(got.image[..., 0], image)
    with pytest.raises(FetchTooLarge):
        ImageFetcher(label_studio_url=None, max_bytes=100).fetch_image(
            data_url(png_bytes(image)))
    with pytest.raises(FetchUnreadable, match="not a readable image|not an image"):
        f.fetch_image(data_url(b"this is not a png"))


def test_http_errors_say_whether_to_retry(server, tmp_path):
    with pytest.raises(FetchFailed, match="HTTP 404") as error:
        fetcher(server, tmp_path).fetch_image("/missing.png")
    assert not error.value.transient
    server.routes["/down.png"] = (503, {}, b"busy")
    with pytest.raises(FetchFailed, match="HTTP 503") as error:
        fetcher(server, tmp_path).fetch_image("/down.png")
    assert error.value.transient
    closed = ImageFetcher(label_studio_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(FetchFailed, match="can't connect") as error:
        closed.fetch_image("/data/upload/1/a.png")
    assert error.value.transient


def test_cache_answers_without_a_request_and_revalidates_when_old(server, tmp_path):
    image, _ = blob_image()
    server.routes["/data/upload/1/c.png"] = (200, {"ETag": '"v1"'}, png_bytes(image))
    f = fetcher(server, tmp_path)
    first = f.fetch_image("/data/upload/1/c.png")
    second = f.fetch_image("/data/upload/1/c.png")
    assert not first.from_cache and second.from_cache
    assert len(server.requests) == 1
    stale = fetcher(server, tmp_path, cache_ttl=1e-9)
    server.routes["/data/upload/1/c.png"] = (304, {}, b"")
    third = stale.fetch_image("/data/upload/1/c.png")
    assert third.from_cache and np.array_equal(third.image, first.image)
    assert server.requests[-1][1].get("If-None-Match") == '"v1"'
