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


# --- link-local and cloud metadata addresses -----------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1:8080/a.png",
    "http://[fe80::1]/a.png",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/a.png",
    "http://[64:ff9b::a9fe:a9fe]/a.png",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
    "http://METADATA.google.internal./x",
])
def test_metadata_addresses_are_refused_even_when_allow_listed(url, tmp_path, monkeypatch):
    def no_lookup(*args, **kwargs):
        raise AssertionError("refused before any lookup")

    monkeypatch.setattr("socket.getaddrinfo", no_lookup)
    origin = url.split("/", 3)[:3]
    f = ImageFetcher(label_studio_url="/".join(origin), token=TOKEN,
                     allowed_origins=["/".join(origin)], timeout=2, cache_dir=tmp_path)
    with pytest.raises(FetchRefused, match="link-local or cloud metadata address"):
        f.fetch_image(url)
    with pytest.raises(FetchRefused, match="link-local or cloud metadata address"):
        f.fetch_image("/data/upload/1/a.png")  # relative to it: the same


def test_a_name_resolving_to_a_link_local_address_is_refused_before_connecting(tmp_path,
                                                                               monkeypatch):
    import socket

    real = socket.getaddrinfo
    connected = []

    def resolver(host, port, *args, **kwargs):
        if host == "images.example.test":  # one of its addresses is link-local
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr("socket.getaddrinfo", resolver)
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: connected.append(a))
    f = ImageFetcher(label_studio_url="http://images.example.test:8080", token=TOKEN,
                     timeout=2, cache_dir=tmp_path)
    with pytest.raises(FetchRefused, match="resolves to 169.254.169.254"):
        f.fetch_image("/data/upload/1/a.png")
    assert connected == []


def test_a_numeric_host_name_of_the_metadata_address_is_refused(tmp_path):
    # 2852039166 is 169.254.169.254 as one number: getaddrinfo (inet_aton) resolves it.
    f = ImageFetcher(label_studio_url="http://2852039166", token=TOKEN, timeout=2,
                     cache_dir=tmp_path)
    with pytest.raises(FetchRefused, match="resolves to 169.254.169.254"):
        f.fetch_image("/latest/meta-data/")


def test_a_redirect_to_a_metadata_address_is_refused(server, tmp_path):
    server.routes["/data/upload/1/r.png"] = (
        302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    f = fetcher(server, tmp_path, allowed_origins=["http://169.254.169.254"])
    with pytest.raises(FetchRefused, match="redirect from .* link-local or cloud metadata"):
        f.fetch_image("/data/upload/1/r.png")


def test_loopback_stays_allowed_by_name_and_address(server, tmp_path):
    image, _ = blob_image()
    server.add_png("/data/upload/1/a.png", image)
    port = server.origin.rsplit(":", 1)[1]
    for host in ("localhost", "127.0.0.1"):
        f = ImageFetcher(label_studio_url=f"http://{host}:{port}", token=TOKEN, timeout=5)
        assert f.fetch_image("/data/upload/1/a.png").image.shape[:2] == (64, 80)


# --- the pixel limit before any decoder ----------------------------------------------------------


def _tiff(array=None, **kwargs) -> bytes:
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _no_decoding(monkeypatch):
    """Make every pixel decoder fail the test if it is called."""
    import tifffile
    from PIL import ImageFile

    def decoded(*args, **kwargs):
        raise AssertionError("a pixel was decoded")

    monkeypatch.setattr("label_assistant.ml_backend.fetch.read_image", decoded)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", decoded)
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)


@pytest.fixture(scope="module")
def float_bomb() -> bytes:
    """9000 x 9000 float64 zeros (648 MB decoded), zlib-compressed to well under 1 MB."""
    def tiles():
        zeros = np.zeros((1024, 1024), np.float64)
        for _ in range(9 * 9):
            yield zeros

    return _tiff(tiles(), shape=(9000, 9000), dtype="float64", tile=(1024, 1024),
                 compression="zlib")


def test_a_tiff_bomb_pillow_cannot_open_is_refused_before_decoding(server, tmp_path,
                                                                   monkeypatch, float_bomb):
    import io
    import tracemalloc

    from PIL import Image

    assert len(float_bomb) < 1_000_000
    with pytest.raises(Exception):  # noqa: B017 (why the old header check skipped it)
        Image.open(io.BytesIO(float_bomb))
    server.routes["/data/upload/1/bomb.tif"] = (200, {}, float_bomb)
    _no_decoding(monkeypatch)
    f = fetcher(server, tmp_path)  # the default limit: 64 Mpx
    tracemalloc.start()
    try:
        with pytest.raises(FetchTooLarge, match="9000 x 9000 = 81000000 pixels, over the limit"):
            f.fetch_image("/data/upload/1/bomb.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024, peak  # 648 MB if it had been decoded
    assert not list((tmp_path / "cache").glob("*.bin"))  # and nothing was cached


def test_a_tiff_volume_page_is_counted_whole(tmp_path, monkeypatch):
    data = _tiff(np.zeros((40, 32, 32), np.uint8), volumetric=True, tile=(8, 16, 16))
    _no_decoding(monkeypatch)
    f = ImageFetcher(label_studio_url=None, max_pixels=32 * 32 * 2)
    from test_backend_support import data_url as as_url

    with pytest.raises(FetchTooLarge, match="decodes to 40960 values"):
        f.fetch_image(as_url(data, "image/tiff"))


def test_only_the_first_page_of_a_stack_counts(tmp_path):
    from test_backend_support import data_url as as_url

    stack = np.arange(3 * 64 * 80, dtype=np.uint16).reshape(3, 64, 80)
    f = ImageFetcher(label_studio_url=None, max_pixels=64 * 80)
    got = f.fetch_image(as_url(_tiff(stack, photometric="minisblack"), "image/tiff"))
    assert got.image.shape == (64, 80, 1)
    assert np.array_equal(got.image[..., 0], stack[0])
    big_first = _tiff(np.zeros((2, 100, 100), np.uint8), photometric="minisblack")
    with pytest.raises(FetchTooLarge, match="100 x 100"):
        f.fetch_image(as_url(big_first, "image/tiff"))


def _segment_bomb(compression: str, payload: bytes, tag: int | None = None) -> bytes:
    """A 16 x 16 uint8 TIFF whose one tile is ``payload``, stored as compressed as it is."""
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, iter([payload]), shape=(16, 16), dtype="uint8", tile=(16, 16),
                     compression=compression)
    if tag is not None:
        buffer.seek(0)
        with tifffile.TiffFile(buffer, mode="r+b") as tif:
            tif.pages.first.tags["Compression"].overwrite(tag)
    return buffer.getvalue()


def _zeros_compressed(kind: str, size: int) -> bytes:
    import lzma
    import zlib

    encoder = zlib.compressobj(9) if kind == "zlib" else lzma.LZMACompressor()
    block = bytes(1 << 20)
    parts = [encoder.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + encoder.flush()


@pytest.mark.parametrize("kind", ["zlib", "lzma", "packbits"])
def test_a_tiny_tiff_whose_segment_inflates_is_refused(kind, tmp_path, monkeypatch):
    """16 x 16 pixels by the header, 64 MB (packbits: 64 MB of Python ints) by the data."""
    import tracemalloc

    from test_backend_support import data_url as as_url

    if kind == "packbits":  # each 2 bytes make 128 zeros; tifffile can't write it: retag
        data = _segment_bomb("zlib", b"\x81\x00" * (1 << 20), tag=32773)
    else:
        data = _segment_bomb(kind, _zeros_compressed(kind, 64 << 20))
    assert len(data) < 3 << 20
    _no_decoding(monkeypatch)
    f = ImageFetcher(label_studio_url=None)
    tracemalloc.start()
    try:
        with pytest.raises(FetchTooLarge, match="a TIFF segment inflates past"):
            f.fetch_image(as_url(data, "image/tiff"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 1024 * 1024, peak


@pytest.mark.parametrize("compression", ["zlib", "lzma", None])
def test_ordinary_compressed_tiffs_still_read(compression):
    from test_backend_support import data_url as as_url

    image = np.random.default_rng(1).integers(0, 4000, (70, 90), dtype=np.uint16)
    data = _tiff(image, compression=compression, rowsperstrip=16)
    got = ImageFetcher(label_studio_url=None).fetch_image(as_url(data, "image/tiff"))
    assert np.array_equal(got.image[..., 0], image)


def test_bytes_no_decoder_reads_are_refused_before_decoding(server, tmp_path, monkeypatch):
    server.routes["/data/upload/1/x.png"] = (200, {}, b"\x89PNG\r\n\x1a\n not really")
    _no_decoding(monkeypatch)
    with pytest.raises(FetchUnreadable):
        fetcher(server, tmp_path).fetch_image("/data/upload/1/x.png")


# --- the cache: images only, bounded -------------------------------------------------------------


def _cache_size(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.suffix in (".bin", ".json")) if folder.is_dir() else 0


def test_only_images_are_cached(server, tmp_path):
    server.routes["/data/upload/1/page.html"] = (200, {}, b"<html>not an image</html>" * 400)
    server.routes["/data/upload/1/big.png"] = (200, {}, png_bytes(np.zeros((100, 200), np.uint8)))
    f = fetcher(server, tmp_path, max_pixels=6000)
    for path, error in (("/data/upload/1/page.html", FetchUnreadable),
                        ("/data/upload/1/big.png", FetchTooLarge)):
        for _ in range(2):
            with pytest.raises(error):
                f.fetch_image(path)
    assert len(server.requests) == 4  # asked again each time: nothing was kept
    assert not list((tmp_path / "cache").glob("*.bin"))
    image, _ = blob_image()
    server.add_png("/data/upload/1/ok.png", image)
    f.fetch_image("/data/upload/1/ok.png")
    assert len(list((tmp_path / "cache").glob("*.bin"))) == 1


def test_the_cache_stays_under_its_bound_and_keeps_the_recently_used(server, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):  # ~10 KB each, incompressible
        server.add_png(f"/data/upload/1/n{i}.png",
                       rng.integers(0, 255, (100, 100), dtype=np.uint8))
    one = len(server.routes["/data/upload/1/n0.png"][2]) + 400
    bound = 4 * one
    f = fetcher(server, tmp_path, cache_bytes=bound)
    cache = tmp_path / "cache"
    f.fetch_image("/data/upload/1/n0.png")
    for i in range(1, 12):
        f.fetch_image("/data/upload/1/n0.png")  # a hit: n0 stays the most recently used
        f.fetch_image(f"/data/upload/1/n{i}.png")
        assert _cache_size(cache) <= bound
    assert 3 <= len(list(cache.glob("*.bin"))) <= 4
    requests_before = len(server.requests)
    assert f.fetch_image("/data/upload/1/n0.png").from_cache
    assert f.fetch_image("/data/upload/1/n11.png").from_cache
    assert not f.fetch_image("/data/upload/1/n1.png").from_cache  # evicted long ago
    assert len(server.requests) == requests_before + 1


def test_a_zero_bound_disables_the_cache(server, tmp_path):
    from label_assistant.ml_backend.settings import Settings

    image, _ = blob_image()
    server.add_png("/data/upload/1/a.png", image)
    settings = Settings(workdir=tmp_path / "work", fetch_timeout=5, image_cache_bytes=0)
    from label_assistant.ml_backend.origin import Origin

    f = ImageFetcher.for_origin(settings, Origin(server.origin, TOKEN, "setup"))
    assert f.cache_dir is None
    assert not f.fetch_image("/data/upload/1/a.png").from_cache
    assert not f.fetch_image("/data/upload/1/a.png").from_cache
    assert len(server.requests) == 2
    assert not (tmp_path / "work" / "cache").exists()
    bounded = ImageFetcher.for_origin(
        Settings(workdir=tmp_path / "work", image_cache_bytes=12345), None)
    assert (bounded.cache_bytes, bounded.cache_dir) == (12345, settings.workspace.image_cache)


def test_a_cached_entry_that_changed_on_disk_is_fetched_again(server, tmp_path):
    image, _ = blob_image()
    server.add_png("/data/upload/1/a.png", image)
    f = fetcher(server, tmp_path)
    f.fetch_image("/data/upload/1/a.png")
    (entry,) = (tmp_path / "cache").glob("*.bin")
    entry.write_bytes(b"not what was fetched")
    got = f.fetch_image("/data/upload/1/a.png")
    assert not got.from_cache and np.array_equal(got.image[..., 0], image)
    assert len(server.requests) == 2


def test_entries_are_kept_per_token(server, other, tmp_path):
    image, _ = blob_image()
    url = other.add_png("/a.png", image)
    with_token = fetcher(server, tmp_path, allowed_origins=[other.origin])
    without = ImageFetcher(label_studio_url=other.origin, timeout=5,
                           cache_dir=tmp_path / "cache")
    with_token.fetch_image(url)
    assert not without.fetch_image(url).from_cache  # fetched with another (no) token
    assert len(other.requests) == 2


def test_concurrent_writers_keep_the_bound(server, tmp_path):
    import threading

    rng = np.random.default_rng(1)
    for i in range(16):
        server.add_png(f"/data/upload/1/t{i}.png",
                       rng.integers(0, 255, (80, 80), dtype=np.uint8))
    bound = 5 * (len(server.routes["/data/upload/1/t0.png"][2]) + 400)
    errors = []

    def work(offset: int) -> None:
        f = fetcher(server, tmp_path, cache_bytes=bound, cache_ttl=1e-9)
        try:
            for i in range(16):
                f.fetch_image(f"/data/upload/1/t{(i + offset) % 16}.png")
        except Exception as error:  # pragma: no cover (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k * 3,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _cache_size(tmp_path / "cache") <= bound
