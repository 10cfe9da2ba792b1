"""Image guards: strict base64, allowed formats, pixel cap, encoding."""

import base64
import io

import pytest
from PIL import Image

from shared.errors import BadImage
from shared.images import b64decode_strict, check_image, encode, open_image


def png(w=16, h=16, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


def test_base64_plain_data_uri_and_missing_padding():
    data = png()
    text = base64.b64encode(data).decode()
    assert b64decode_strict(text) == data
    assert b64decode_strict("data:image/png;base64," + text) == data
    assert b64decode_strict(text.rstrip("=")) == data


@pytest.mark.parametrize("bad", ["", "   ", "not base64!!", "abc$def", "data:image/png;base64,%%%"])
def test_broken_base64_is_refused(bad):
    with pytest.raises(BadImage):
        b64decode_strict(bad)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats(fmt):
    assert open_image(png(fmt=fmt), 10_000).size == (16, 16)


def test_other_formats_and_garbage_refused():
    with pytest.raises(BadImage):
        check_image(png(fmt="GIF"), 10_000)
    with pytest.raises(BadImage):
        check_image(b"hello, not an image", 10_000)
    with pytest.raises(BadImage):
        check_image(png()[:40], 10_000)  # truncated


def test_pixel_cap_refuses_bombs_before_decoding():
    big = png(300, 300)
    with pytest.raises(BadImage, match="over the limit"):
        check_image(big, 200 * 200)
    assert check_image(big, 300 * 300) == big


def test_png_encoding_keeps_text_chunk():
    data = encode(Image.new("RGB", (8, 8)), "png", {"parameters": "hello\nSteps: 1"})
    assert Image.open(io.BytesIO(data)).info["parameters"] == "hello\nSteps: 1"
    assert encode(Image.new("RGB", (8, 8)), "jpeg")[:2] == b"\xff\xd8"
    assert encode(Image.new("RGB", (8, 8)), "webp")[8:12] == b"WEBP"
