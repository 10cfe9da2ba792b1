"""Seed 002 over HTTP (/txt2img, /img2img), on the local engine and on the Modal wiring."""

import base64
import io

import httpx
from PIL import Image

SMALL = {"width": 64, "height": 64, "num_inference_steps": 2}


def png(w=64, h=64) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 40, 40)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def fetch(client, url: str) -> Image.Image:
    """The image behind a result URL (the app's /files route, or any HTTP server)."""
    r = client.get(url) if url.startswith("http://testserver") else httpx.get(url)
    assert r.status_code == 200, url
    return Image.open(io.BytesIO(r.content))


def test_txt2img_form_encoded_returns_fetchable_urls(client):
    r = client.post("/txt2img", data={"prompt": "a red cube", "seed": "7", "num_outputs": "2",
                                      **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    assert [i["seed"] for i in body["images"]] == [7, 8]
    for item in body["images"]:
        assert item["mime_type"] == "image/png"
        assert fetch(client, item["image_url"]).size == (64, 64)


def test_img2img_json_keeps_the_init_size(client):
    r = client.post("/img2img", json={"prompt": "x", "init_image": png(72, 48), "strength": 0.5,
                                      "num_inference_steps": 2})
    assert r.status_code == 200, r.text
    assert fetch(client, r.json()["images"][0]["image_url"]).size == (72, 48)


def test_validation_error_in_the_form_envelope(client):
    r = client.post("/txt2img", data={"prompt": "x", "num_outputs": "9"})
    assert r.status_code == 422
    assert r.json()["status"] == "error" and "num_outputs" in r.json()["errors"]


def test_unknown_model_is_404_from_the_engine_side(client):
    r = client.post("/txt2img", json={"prompt": "x", "model": "nope", **SMALL})
    assert r.status_code == 404
    assert "nope" in r.json()["message"]


def test_key_required_when_configured(make_app):
    from fastapi.testclient import TestClient

    with TestClient(make_app(api_keys="k1")) as c:
        assert c.post("/txt2img", json={"prompt": "x", **SMALL}).status_code == 401
        ok = c.post("/txt2img", json={"prompt": "x", **SMALL},
                    headers={"Authorization": "Bearer k1"})
        assert ok.status_code == 200, ok.text


def test_results_go_to_the_bucket(make_app, s3_bucket):
    from fastapi.testclient import TestClient

    endpoint, bucket = s3_bucket
    with TestClient(make_app(s3_bucket=bucket, s3_endpoint_url=endpoint,
                             s3_region="us-east-1")) as c:
        r = c.post("/txt2img", json={"prompt": "x", **SMALL})
    url = r.json()["images"][0]["image_url"]
    assert url.startswith(f"{endpoint}/{bucket}/sdgate/")
    assert fetch(c, url).size == (64, 64)
