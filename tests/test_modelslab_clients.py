"""Seed 003 as today's clients call it: v6 routes, key and fields from the query string or a
header, fetch ids as numbers or strings, model lists, system load, unknown paths."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from shared.dialects.modelslab import render
from tests.http_helpers import SMALL, b64png, fetch_png, poll


@pytest.fixture
def keyed(make_app):
    with TestClient(make_app(api_keys="k1")) as c:
        yield c


def test_v6_quickstart_body_over_real_http(live_server):
    """The body of docs.modelslab.com's quickstart (v6), sent with httpx to a live server."""
    base = live_server()
    body = {"key": "", "prompt": "a lion at sunset", "model_id": "tiny-sd", "width": 64,
            "height": 64, "samples": 1, "num_inference_steps": 2, "guidance_scale": 7.5,
            "seed": 3, "enhance_prompt": "no"}
    out = httpx.post(base + "/api/v6/images/text2img", json=body, timeout=120).json()
    assert out["status"] == "success" and isinstance(out["id"], int)
    img = fetch_png(httpx, out["output"][0])
    assert img.size == (64, 64) and any(lo < hi for lo, hi in img.getextrema())
    # v6 fetch by body (request_id as a string and as a number) and by path
    for rid in (str(out["id"]), out["id"]):
        again = httpx.post(base + "/api/v6/images/fetch", json={"key": "", "request_id": rid})
        assert again.json()["output"] == out["output"]
    for path in (f"/api/v6/images/fetch/{out['id']}", f"/api/v6/fetch/{out['id']}"):
        assert httpx.post(base + path, json={}).json()["output"] == out["output"]


def test_v6_needs_model_id_and_img2img_inpaint_work(client):
    assert client.post("/api/v6/images/text2img", json={"prompt": "a cat"}).json() == \
        render.MODEL_NOT_FOUND
    init = b64png()
    out = client.post("/api/v6/images/img2img", json={
        "model_id": "tiny-sd", "prompt": "a cat", "init_image": init, "strength": 0.6,
        **SMALL}).json()
    assert out["status"] == "success" and out["meta"]["strength"] == 0.6
    out = client.post("/api/v6/images/inpaint", json={
        "model_id": "tiny-sd", "prompt": "a cat", "init_image": init, "mask_image": init,
        **SMALL}).json()
    assert out["status"] == "success" and fetch_png(client, out["output"][0]).size == (64, 64)


def test_v6_processing_points_fetch_result_at_v6(make_app):
    with TestClient(make_app(sync_wait_seconds=0)) as c:
        out = c.post("/api/v6/images/text2img", json={"model_id": "tiny-sd", "prompt": "slow",
                                                      **SMALL}).json()
        if out["status"] == "processing":
            assert out["fetch_result"].endswith(f"/api/v6/images/fetch/{out['id']}")
            out = poll(c, out["fetch_result"])
        assert out["status"] == "success"


def test_v3_dreambooth_alias_needs_a_model(client):
    assert client.post("/api/v3/dreambooth", json={"prompt": "a cat"}).json() == \
        render.MODEL_NOT_FOUND
    out = client.post("/api/v3/dreambooth", json={"model_id": "tiny-sd", "prompt": "a cat",
                                                  **SMALL}).json()
    assert out["status"] == "success"
    got = client.post("/api/v3/dreambooth/fetch", json={"request_id": out["id"]}).json()
    assert got["output"] == out["output"]


def test_query_string_fields_and_key_with_an_empty_body(keyed):
    q = "key=k1&prompt=a+red+cat&width=64&height=64&num_inference_steps=2&enhance_prompt=no&seed=4"
    out = keyed.post("/api/v3/text2img?" + q).json()
    assert out["status"] == "success" and out["meta"]["prompt"] == "a red cat"
    assert out["meta"]["seed"] == 4 and fetch_png(keyed, out["output"][0]).size == (64, 64)
    # spam filter on the effective request: another query-string prompt is another request
    assert keyed.post("/api/v3/text2img?" + q.replace("red", "blue")).json()["status"] == \
        "success"
    assert keyed.post("/api/v3/text2img?" + q).json() == render.RATE_LIMIT
    # body fields win over the query string
    out = keyed.post("/api/v3/text2img?" + q, json={"prompt": "a dog"}).json()
    assert out["status"] == "success" and out["meta"]["prompt"] == "a dog"


def test_key_in_a_header_or_the_query(keyed):
    body = {"prompt": "hdr", **SMALL}
    assert keyed.post("/api/v3/text2img", json=body).json() == render.INVALID_KEY
    assert keyed.post("/api/v3/text2img", json=body, headers={"key": "nope"}).json() == \
        render.INVALID_KEY
    out = keyed.post("/api/v3/text2img", json=body, headers={"key": "k1"}).json()
    assert out["status"] == "success"
    got = keyed.post(f"/api/v3/fetch/{out['id']}?key=k1").json()
    assert got["output"] == out["output"]
    # the v3 fetch with request_id in the body too
    got = keyed.post("/api/v3/fetch", json={"key": "k1", "request_id": str(out["id"])}).json()
    assert got["output"] == out["output"]
    gone = keyed.post("/api/v3/fetch", json={"key": "k1", "request_id": 1})
    assert gone.status_code == 404 and gone.json() == render.REQUEST_NOT_FOUND
    assert keyed.post("/api/v3/fetch", json={"key": "k1"}).json()["message"] == \
        {"request_id": ["The request id field is required."]}


def test_model_lists_come_from_the_registry(client, models_dir):
    for path in ("/api/v4/dreambooth/model_list", "/api/v6/images/model_list"):
        items = client.post(path, json={"key": ""}).json()
        assert [m["model_id"] for m in items] == ["tiny-sd"]
        assert items[0]["status"] == "model_ready"


def test_system_load_counts_the_real_queue(client):
    assert client.post("/api/v3/system_load", json={}).json() == \
        {"queue_num": 0, "queue_time": 0.0, "status": "ok"}
    client.app.state.admission.active += 2  # two generations admitted by other dialects
    try:
        out = client.post("/api/v6/images/system_load", json={}).json()
    finally:
        client.app.state.admission.active -= 2
    assert out["queue_num"] == 2 and out["queue_time"] > 0


@pytest.mark.parametrize("method,path", [("POST", "/api/v3/nope"), ("GET", "/api/v6/images/x"),
                                         ("GET", "/api/v3/text2img"), ("PUT", "/api/")])
def test_unknown_api_paths_answer_in_modelslab_shape(client, method, path):
    r = client.request(method, path)
    assert r.status_code == 404
    body = r.json()
    assert body["status"] == "error" and "detail" not in body and path in body["message"]
