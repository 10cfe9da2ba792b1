"""Seed 002: POST /txt2img and /img2img, form-encoded and JSON."""

import pytest

from tests.api.helpers import bomb_b64, fetch_png, png_b64

FAST = {"num_inference_steps": "3", "width": "64", "height": "64"}


def test_form_encoded_txt2img_returns_urls_of_pngs(client):
    r = client.post("/txt2img", data={"prompt": "Anime girl", "seed": "10086", "num_outputs": "2",
                                      "width": "72", "height": "48", "num_inference_steps": "3",
                                      "guidance_scale": "7"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and len(body["images"]) == 2
    assert [i["seed"] for i in body["images"]] == [10086, 10087]
    for item in body["images"]:
        assert item["mime_type"] == "image/png"
        assert fetch_png(client, item["image_url"]).size == (72, 48)


def test_json_body_and_same_seed_same_bytes(client):
    a = client.post("/txt2img", json={"prompt": "cat", "seed": 5, **FAST}).json()
    b = client.post("/txt2img", json={"prompt": "cat", "seed": 5, **FAST}).json()
    url_a, url_b = a["images"][0]["image_url"], b["images"][0]["image_url"]
    assert url_a != url_b  # unique keys per job
    assert client.get(url_a).content == client.get(url_b).content


def test_img2img_defaults_to_init_image_size(client):
    r = client.post("/img2img", data={"prompt": "cat", "init_image": png_b64(80, 40),
                                      "strength": "0.5", "num_inference_steps": "4"})
    assert r.status_code == 200, r.text
    assert fetch_png(client, r.json()["images"][0]["image_url"]).size == (80, 40)


@pytest.mark.parametrize("fields,bad", [
    ({"prompt": ""}, "prompt"), ({}, "prompt"),
    ({"prompt": "x", "width": "0"}, "width"), ({"prompt": "x", "width": "2000"}, "width"),
    ({"prompt": "x", "num_inference_steps": "0"}, "num_inference_steps"),
    ({"prompt": "x", "num_inference_steps": "151"}, "num_inference_steps"),
    ({"prompt": "x", "num_outputs": "5"}, "num_outputs"),
    ({"prompt": "x", "guidance_scale": "21"}, "guidance_scale"),
    ({"prompt": "x", "seed": "abc"}, "seed"),
])
def test_out_of_range_fields(client, fields, bad):
    r = client.post("/txt2img", data=fields)
    assert r.status_code == 422
    body = r.json()
    assert body["status"] == "error" and bad in body["errors"]


@pytest.mark.parametrize("init,status", [
    ("not base64 at all!", 400), (png_b64()[:-10] + "!!!!", 400),
    ("aGVsbG8gd29ybGQ=", 400),  # valid base64 of "hello world": not an image
])
def test_bad_init_images(client, init, status):
    r = client.post("/img2img", data={"prompt": "x", "init_image": init})
    assert r.status_code == status and r.json()["status"] == "error"
    assert "init_image" in r.json()["message"]


def test_decompression_bomb_is_refused(client):
    r = client.post("/img2img", json={"prompt": "x", "init_image": bomb_b64()})
    assert r.status_code == 400 and "pixels" in r.json()["message"]


def test_img2img_strength_range(client):
    for s in ("0", "1", "1.5"):
        r = client.post("/img2img", data={"prompt": "x", "init_image": png_b64(), "strength": s})
        assert r.status_code == 422 and "strength" in r.json()["errors"]


def test_oversized_body_413_and_server_goes_on(make_app):
    from fastapi.testclient import TestClient

    with TestClient(make_app(max_body_bytes=1000)) as c:
        r = c.post("/txt2img", data={"prompt": "x" * 5000})
        assert r.status_code == 413 and r.json()["status"] == "error"
        assert c.post("/txt2img", data={"prompt": "ok", **FAST}).status_code == 200


def test_invalid_json_is_400(client):
    r = client.post("/txt2img", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["status"] == "error"


def test_keys_required_when_configured(make_app):
    from fastapi.testclient import TestClient

    with TestClient(make_app(api_keys="k1,k2")) as c:
        assert c.post("/txt2img", data={"prompt": "x", **FAST}).status_code == 401
        assert c.post("/txt2img", data={"prompt": "x", **FAST},
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/txt2img", data={"prompt": "x", **FAST},
                    headers={"Authorization": "Bearer k2"})
        assert ok.status_code == 200
        assert c.post("/txt2img", data={"prompt": "x", "key": "k1", **FAST}).status_code == 200


def test_s3_backend_end_to_end(make_app, s3_bucket):
    from fastapi.testclient import TestClient

    endpoint, bucket = s3_bucket
    with TestClient(make_app(s3_bucket=bucket, s3_endpoint_url=endpoint,
                             s3_region="us-east-1")) as c:
        r = c.post("/txt2img", data={"prompt": "x", "num_outputs": "2", **FAST})
        assert r.status_code == 200, r.text
        urls = [i["image_url"] for i in r.json()["images"]]
        assert all(u.startswith(endpoint) for u in urls)
        assert [fetch_png(c, u).size for u in urls] == [(64, 64), (64, 64)]


def test_s3_down_fails_in_envelope(make_app):
    from fastapi.testclient import TestClient

    from conftest import free_port

    with TestClient(make_app(s3_bucket="b", s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
                             s3_region="us-east-1", s3_upload_attempts=1)) as c:
        r = c.post("/txt2img", data={"prompt": "x", **FAST})
        assert r.status_code == 502
        body = r.json()
        assert body["status"] == "error" and "upload" in body["message"]
        assert "images" not in body
