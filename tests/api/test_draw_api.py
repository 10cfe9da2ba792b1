"""Seed 000: POST /v1/draw."""

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import fetch_png

# /v1/draw has no steps field; keep the tests fast by drawing 1:1 at the default steps.


def test_draw_returns_documented_shape(client):
    r = client.post("/v1/draw", json={"prompt": "cat", "size": "16:9", "quantity": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"urls", "object", "prompt", "model", "created", "end_at"}
    assert body["object"] == "draw" and body["prompt"] == "cat" and body["model"] == "tiny-sd"
    assert body["end_at"] >= body["created"]
    assert len(body["urls"]) == 2
    assert fetch_png(client, body["urls"][0]).size == (680, 384)


def test_defaults_one_square_image(client):
    body = client.post("/v1/draw", json={"prompt": "cat", "extra": "ignored"}).json()
    assert len(body["urls"]) == 1
    assert fetch_png(client, body["urls"][0]).size == (512, 512)


@pytest.mark.parametrize("payload,param", [
    ({"size": "1:1"}, "prompt"), ({"prompt": "x", "size": "2:1"}, "size"),
    ({"prompt": "x", "quantity": 0}, "quantity"), ({"prompt": "x", "quantity": 5}, "quantity"),
])
def test_bad_inputs(client, payload, param):
    r = client.post("/v1/draw", json=payload)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["param"] == param and err["message"]


def test_unknown_model_404(client):
    r = client.post("/v1/draw", json={"prompt": "x", "model": "sdxl-missing"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("headers,status", [
    ({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"API-KEY": "nope"}, 401),
    ({"Authorization": "Bearer sk-1"}, 200), ({"API-KEY": "sk-1"}, 200),
])
def test_auth_headers(make_app, headers, status):
    with TestClient(make_app(api_keys="sk-1")) as c:
        r = c.post("/v1/draw", json={"prompt": "x", "size": "9:16"}, headers=headers)
        assert r.status_code == status, r.text
        if status == 401:
            assert r.json()["error"]["code"] == "invalid_api_key"
