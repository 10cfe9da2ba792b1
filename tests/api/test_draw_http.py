"""Seed 000 over HTTP (/v1/draw), on the local engine and on the Modal wiring."""

import io

from PIL import Image


def test_draw_returns_urls_at_the_model_native_size(client):
    r = client.post("/v1/draw", json={"prompt": "a lighthouse", "size": "1:1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "draw" and body["model"] == "tiny-sd" and len(body["urls"]) == 1
    img = Image.open(io.BytesIO(client.get(body["urls"][0]).content))
    assert img.size == (512, 512)  # the tiny model's native size, read from its configs


def test_draw_error_envelope(client):
    r = client.post("/v1/draw", json={"prompt": "x", "size": "2:1"})
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "size"
