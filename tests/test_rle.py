"""The brush RLE codec against the Label Studio SDK's and against a port of the frontend's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from label_studio_sdk.converter import brush as sdk

from label_assistant.labelstudio.rle import (
    RLEError,
    RLEHeaderError,
    RLEShapeError,
    RLEStreamError,
    RLETruncatedError,
    RLETypeError,
    RLEValueError,
    decode_rle,
    encode_rle,
    rle_header,
)


def sdk_alpha(rle: list[int], height: int, width: int) -> np.ndarray:
    return sdk.decode_rle(rle).reshape(height, width, 4)[:, :, 3]


class _Bits:
    """MSB-first bit writer (what thi.ng's BitOutputStream does)."""

    def __init__(self) -> None:
        self.bits: list[str] = []

    def write(self, value: int, width: int) -> None:
        self.bits.append(format(value, f"0{width}b")[-width:] if width else "")

    def bytes(self) -> list[int]:
        s = "".join(self.bits)
        s += "0" * (-len(s) % 8)  # rle-pack pads to a byte, never a whole extra byte
        return [int(s[i : i + 8], 2) for i in range(0, len(s), 8)]


def rlepack_encode(words: list[int], word_size: int = 8, sizes=(3, 4, 8, 16)) -> list[int]:
    """Line-by-line port of thi.ng/rle-pack ``encodeBinary``, the Label Studio frontend's encoder.

    Unlike the SDK it writes literal blocks and pads with 0..7 bits.
    """
    out = _Bits()
    num = len(words)
    out.write(num, 32)
    out.write(word_size - 1, 5)
    for s in sizes:
        out.write(s - 1, 4)
    r0, r1, r2, r3 = (1 << s for s in sizes)

    def size_of(m: int) -> int:
        return 0 if m < r0 else 1 if m < r1 else 2 if m < r2 else 3

    state = {"n": 0, "val": None}
    chunk: list[int] = []

    def write_rle() -> None:
        t = size_of(state["n"])
        out.write(1, 1)
        out.write(t, 2)
        out.write(state["n"], sizes[t])
        out.write(state["val"], word_size)
        state["n"] = 0

    def write_chunk() -> None:
        m = len(chunk) - 1
        t = size_of(m)
        out.write(0, 1)
        out.write(t, 2)
        out.write(m, sizes[t])
        for w in chunk:
            out.write(w, word_size)
        chunk.clear()

    tail = True
    n1 = num - 1
    for i, x in enumerate(words):
        if state["val"] is None:
            state["val"] = x
        elif x != state["val"]:
            if state["n"] > 0:
                write_rle()
            else:
                chunk.append(state["val"])
                if len(chunk) == r3:
                    write_chunk()
            state["val"] = x
        else:
            if chunk:
                write_chunk()
            state["n"] += 1
            if state["n"] == r3:
                state["n"] -= 1
                write_rle()
                tail = i < n1
        if i == n1:
            break
    if chunk:
        chunk.append(state["val"])
        write_chunk()
    elif tail:
        write_rle()
    return out.bytes()


# ---------------------------------------------------------------------------------------
# small cases whose answer is obvious


def test_one_pixel_known_bytes():
    # header: num = 4 words, word size 8, sizes 3/4/8/16; one block "1 00 011 00000000"
    # (4 words of 0); 67 bits padded to 72 -> 9 bytes.
    rle = encode_rle(np.zeros((1, 1), np.uint8))
    bits = "".join(format(b, "08b") for b in rle)
    assert bits[:32] == format(4, "032b")
    assert bits[32:53] == "00111" + "0010" + "0011" + "0111" + "1111"
    assert bits[53:67] == "1" + "00" + "011" + "00000000"
    assert bits[67:] == "00000"
    assert rle == sdk.mask2rle(np.zeros((1, 1), np.uint8))
    assert rle_header(rle) == (4, 8, (3, 4, 8, 16))


def test_small_mask_round_trip_and_sdk():
    mask = np.array([[0, 255, 255], [255, 0, 7]], np.uint8)
    rle = encode_rle(mask)
    assert rle == sdk.mask2rle(mask)
    out = decode_rle(rle, 2, 3)
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, mask)


def test_bool_mask_is_255():
    mask = np.array([[True, False], [False, True]])
    assert encode_rle(mask) == sdk.mask2rle(mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(decode_rle(encode_rle(mask), 2, 2), mask * 255)


@pytest.mark.parametrize(
    "shape",
    [(128, 128), (128, 129), (200, 100), (300, 300)],  # 65536, 66048, 80000, 360000 words
)
def test_runs_longer_than_2_16_words(shape):
    mask = np.zeros(shape, np.uint8)
    mask[-1, -1] = 255
    rle = encode_rle(mask)
    assert rle == sdk.mask2rle(mask)
    np.testing.assert_array_equal(decode_rle(rle, *shape), mask)


def test_numpy_input_accepted():
    mask = np.eye(5, dtype=np.uint8) * 255
    rle = encode_rle(mask)
    for arr in (np.array(rle, np.int64), np.array(rle, np.uint8), tuple(rle)):
        np.testing.assert_array_equal(decode_rle(arr, 5, 5), mask)


# ---------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "mask, error",
    [
        (np.zeros((2, 2), np.int32), RLETypeError),
        (np.zeros((2, 2), np.float32), RLETypeError),
        (np.zeros((2, 2, 4), np.uint8), RLETypeError),
        (np.zeros(4, np.uint8), RLETypeError),
        ([[0, 255]], RLETypeError),
        (np.zeros((0, 3), np.uint8), RLEShapeError),
        (np.zeros((3, 0), bool), RLEShapeError),
    ],
)
def test_encode_rejects(mask, error):
    with pytest.raises(error):
        encode_rle(mask)


MASK = np.array([[0, 255, 255, 0], [255, 255, 0, 0], [0, 0, 0, 9]], np.uint8)
RLE = encode_rle(MASK)


@pytest.mark.parametrize(
    "rle, error",
    [
        (RLE[:-2], RLETruncatedError),
        (RLE[:5], RLETruncatedError),
        ([], RLETruncatedError),
        (RLE[:-1] + [255], RLEStreamError),  # non-zero padding
        (RLE + [0, 0], RLEStreamError),  # trailing bytes
        (RLE[:3] + [300] + RLE[4:], RLEValueError),
        ([-1] + RLE[1:], RLEValueError),
        ([2**70] + RLE[1:], RLEValueError),
        ([float(v) for v in RLE], RLETypeError),
        ([str(v) for v in RLE], RLETypeError),
        ([[v] for v in RLE], RLETypeError),
        ("1,2,3", RLETypeError),
        (None, RLETypeError),
        (np.array(RLE, np.float64), RLETypeError),
        (bytes(RLE), RLETypeError),
    ],
)
def test_decode_rejects(rle, error):
    with pytest.raises(error):
        decode_rle(rle, 3, 4)


@pytest.mark.parametrize("hw", [(3, 5), (2, 4), (1, 1), (4, 4)])
def test_decode_rejects_other_size(hw):
    with pytest.raises(RLEHeaderError, match="expected 4 x"):
        decode_rle(RLE, *hw)


def test_header_cannot_tell_a_transposed_size():
    # The header holds only 4 x W x H: a 4 x 3 read of a 3 x 4 mask is not detectable here
    # (which is why annotations check original_width/height against the image).
    assert decode_rle(RLE, 4, 3).shape == (4, 3)


@pytest.mark.parametrize("hw", [(0, 4), (3, -4), (3.0, 4), (True, 4), ("3", 4), (None, 4)])
def test_decode_rejects_bad_size(hw):
    with pytest.raises(RLEShapeError):
        decode_rle(RLE, *hw)


def test_decode_rejects_run_past_the_end():
    # Header: 4 words; one repeat block of 8 words (count field 7 in 3 bits).
    b = _Bits()
    for value, width in [(4, 32), (7, 5), (2, 4), (3, 4), (7, 4), (15, 4), (1, 1), (0, 2),
                         (7, 3), (0, 8)]:
        b.write(value, width)
    with pytest.raises(RLEStreamError, match="past"):
        decode_rle(b.bytes(), 1, 1)


def test_decode_rejects_word_over_255():
    # word size 9, one repeat block of value 300
    b = _Bits()
    for value, width in [(4, 32), (8, 5), (2, 4), (3, 4), (7, 4), (15, 4), (1, 1), (0, 2),
                         (3, 3), (300, 9)]:
        b.write(value, width)
    with pytest.raises(RLEStreamError, match="300"):
        decode_rle(b.bytes(), 1, 1)


def test_errors_are_value_errors():
    assert issubclass(RLEError, ValueError)
    for cls in (RLETypeError, RLEValueError, RLEShapeError, RLEHeaderError, RLETruncatedError,
                RLEStreamError):
        assert issubclass(cls, RLEError)


# ---------------------------------------------------------------------------------------
# properties


@st.composite
def masks(draw, max_side: int = 40) -> np.ndarray:
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    kind = draw(st.sampled_from(["binary", "sparse", "any"]))
    if kind == "any":  # noise over all byte values
        return draw(hnp.arrays(np.uint8, (h, w)))
    if kind == "sparse":  # mostly one value with a few others: long runs plus noise
        return draw(hnp.arrays(np.uint8, (h, w), elements=st.sampled_from([0, 255, 128]),
                               fill=st.just(0)))
    # runs: rows of a random length pattern
    runs = draw(st.lists(st.tuples(st.integers(1, 3 * w), st.sampled_from([0, 255])),
                         min_size=1, max_size=12))
    flat = np.concatenate([np.full(n, v, np.uint8) for n, v in runs])
    return np.resize(flat, (h, w))


@settings(max_examples=150, deadline=None)
@given(masks())
def test_encode_equals_sdk_and_round_trips(mask):
    rle = encode_rle(mask)
    assert rle == sdk.mask2rle(mask)
    out = decode_rle(rle, *mask.shape)
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(out, sdk_alpha(rle, *mask.shape))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, 200))))
def test_thin_masks(shape):
    mask = np.zeros(shape, np.uint8)
    mask[:, ::3] = 255
    rle = encode_rle(mask)
    assert rle == sdk.mask2rle(mask)
    np.testing.assert_array_equal(decode_rle(rle, *shape), mask)


@settings(max_examples=100, deadline=None)
@given(masks(max_side=24))
def test_reads_frontend_encoder(mask):
    # The frontend writes the (anti-aliased) alpha into R, G, B and A, as rle-pack streams.
    words = np.repeat(mask.ravel(), 4).tolist()
    rle = rlepack_encode(words)
    np.testing.assert_array_equal(decode_rle(rle, *mask.shape), mask)
    np.testing.assert_array_equal(decode_rle(rle, *mask.shape), sdk_alpha(rle, *mask.shape))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.data(),
    st.sampled_from([(3, 4, 8, 16), (1, 2, 3, 4), (2, 2, 16, 16)]),
    st.sampled_from([8, 5, 12]),
)
def test_reads_literal_blocks_and_other_formats(h, w, data, sizes, word_size):
    # Channels that differ (no equal neighbours) give literal blocks; other word/run sizes
    # are legal rle-pack streams too.
    top = min(255, 2**word_size - 1)
    words = data.draw(st.lists(st.integers(0, top), min_size=4 * h * w, max_size=4 * h * w))
    rle = rlepack_encode(words, word_size, sizes)
    expect = np.array(words, np.int64).reshape(h, w, 4)[:, :, 3]
    np.testing.assert_array_equal(decode_rle(rle, h, w), expect)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=0, max_size=40), st.integers(1, 3),
       st.integers(1, 3))
def test_garbage_is_rejected_or_matches_sdk(tail, h, w):
    # A valid header for h x w, then random blocks: either an RLEError or the SDK's answer.
    head = [0, 0, 0, 4 * h * w, 0b00111001, 0b00011011, 0b11111000]
    rle = head[:6] + [head[6] | (tail[0] & 0b111 if tail else 0)] + tail[1:]
    try:
        out = decode_rle(rle, h, w)
    except RLEError:
        return
    assert out.shape == (h, w) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, sdk_alpha(rle, h, w))


# ---------------------------------------------------------------------------------------
# real payloads


def _brush_results(obj):
    if isinstance(obj, dict):
        if obj.get("type") == "brushlabels" and isinstance(obj.get("value"), dict):
            yield obj
        for v in obj.values():
            yield from _brush_results(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _brush_results(v)


def test_real_label_studio_payloads(ls_fixtures):
    seen = 0
    for path in sorted(ls_fixtures.rglob("*.json")):
        for result in _brush_results(json.loads(path.read_text())):
            h, w = result["original_height"], result["original_width"]
            rle = result["value"]["rle"]
            out = decode_rle(rle, h, w)
            np.testing.assert_array_equal(out, sdk_alpha(rle, h, w))
            assert encode_rle(out) == rle  # the server stored exactly the SDK's bytes
            seen += 1
    assert seen > 0


@pytest.mark.parametrize("chunk", [8, 61, 1000])
def test_chunked_parsing_gives_the_same_answer(monkeypatch, chunk):
    # Large streams are parsed in chunks of bit positions; tiny chunks exercise the seams,
    # including literal blocks longer than a chunk.
    from label_assistant.labelstudio import rle as rle_module

    monkeypatch.setattr(rle_module, "_CHUNK_BITS", chunk)
    rng = np.random.default_rng(chunk)
    mask = (rng.random((17, 23)) < 0.3).astype(np.uint8) * 255
    np.testing.assert_array_equal(decode_rle(encode_rle(mask), 17, 23), mask)
    words = rng.integers(0, 256, 4 * 9 * 7).tolist()  # all literal blocks
    expect = np.array(words).reshape(9, 7, 4)[:, :, 3]
    np.testing.assert_array_equal(decode_rle(rlepack_encode(words), 9, 7), expect)
    with pytest.raises(RLETruncatedError):
        decode_rle(encode_rle(mask)[:-4], 17, 23)
