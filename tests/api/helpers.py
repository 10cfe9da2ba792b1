"""Helpers for HTTP tests: fetching result URLs, test images, a decompression bomb."""

import base64
import io

import httpx
from PIL import Image


def fetch_png(client, url: str) -> Image.Image:
    """GET a result URL (through the TestClient for local files, else over HTTP)."""
    r = client.get(url) if url.startswith("http://testserver") else httpx.get(url)
    assert r.status_code == 200, (url, r.status_code)
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG"
    return img


def png_b64(w=64, h=64, color=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def bomb_b64() -> str:
    """A small PNG that decodes to 400 million pixels."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
