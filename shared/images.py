"""Guards for user images (strict base64, PNG/JPEG/WebP only, a pixel cap) and fast encoding."""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image, PngImagePlugin

from shared.errors import BadImage

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}
MIN_SIDE = 8  # an input image narrower than this carries nothing to work from
_DATA_URI = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,", re.ASCII)
_WS = re.compile(r"\s+")


def b64decode_strict(text: str, field: str = "image") -> bytes:
    """Decode base64 (optionally a data: URI), refusing anything that is not valid base64."""
    if not isinstance(text, str) or not text.strip():
        raise BadImage(f"{field}: empty base64 string", param=field)
    body = _DATA_URI.sub("", text.strip(), count=1)
    body = _WS.sub("", body)
    # Clients often drop the padding; restore it, then refuse any non-alphabet character.
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadImage(f"{field}: invalid base64 ({e})", param=field) from e


def open_image(data: bytes, max_pixels: int, field: str = "image") -> Image.Image:
    """Open and fully decode an image, refusing other formats, bombs and truncated files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
            w, h = img.size
            if w * h > max_pixels:
                raise BadImage(f"{field}: {w}x{h} is over the limit of {max_pixels} pixels",
                               param=field)
            if min(w, h) < MIN_SIDE:
                raise BadImage(f"{field}: {w}x{h} is too small; each side needs at least "
                               f"{MIN_SIDE} pixels", param=field)
            img.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"{field}: image too large ({e})", param=field) from e
    except Exception as e:  # PIL raises many types for corrupt input
        raise BadImage(f"{field}: not a PNG, JPEG or WebP image ({type(e).__name__})",
                       param=field) from e
    return img


def check_image(data: bytes, max_pixels: int, field: str = "image") -> bytes:
    """Validate encoded image bytes at the edge, returning them unchanged."""
    open_image(data, max_pixels, field)
    return data


def encode(img: Image.Image, fmt: str = "png", text: dict[str, str] | None = None,
           quality: int | None = None) -> bytes:
    """Encode an image; PNG at compress level 1 (fast), with optional text chunks; JPEG and
    WebP at `quality` (default 90)."""
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt == "png":
        info = None
        if text:
            info = PngImagePlugin.PngInfo()
            for k, v in text.items():
                info.add_itxt(k, v) if not v.isascii() else info.add_text(k, v)
        img.save(buf, format="PNG", compress_level=1, pnginfo=info)
    elif fmt == "jpeg":
        img.convert("RGB").save(buf, format="JPEG", quality=90 if quality is None else quality)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=90 if quality is None else quality, method=4)
    else:
        raise ValueError(f"unknown format {fmt}")
    return buf.getvalue()
