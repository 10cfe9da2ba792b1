"""Seed 003 over HTTP against the real app on the tiny model: bodies, jobs, images, features."""

from __future__ import annotations

import base64
import io
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from shared.dialects.modelslab import render
from tests.http_helpers import SMALL, b64png, fetch_png, poll

@pytest.fixture
def app_client(make_app):
    """TestClient factory with settings overrides; closes every client at the end."""
    clients = []

    def make(**kw):
        c = TestClient(make_app(**kw))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def test_text2img_success_with_urls_that_fetch_pngs(client):
    r = client.post("/api/v3/text2img", json={"key": "", "prompt": "a cat", "samples": "2",
                                              "seed": 11, **SMALL})
    assert r.status_code == 200
    out = r.json()
    assert out["status"] == "success" and isinstance(out["id"], int)
    assert len(out["output"]) == 2 and out["nsfw_content_detected"] is False
    for url in out["output"]:
        assert fetch_png(client, url).size == (64, 64)
    meta = out["meta"]
    assert (meta["W"], meta["H"], meta["n_samples"], meta["steps"]) == (64, 64, 2, 2)
    assert (meta["seed"], meta["prompt"], meta["model"]) == (11, "a cat", "tiny-sd")
    assert out["generationTime"] > 0


def test_v4_dreambooth_needs_a_known_model_id(client):
    r = client.post("/api/v4/dreambooth", json={"prompt": "a cat"})
    assert r.status_code == 400 and r.json() == render.MODEL_NOT_FOUND
    assert client.post("/api/v4/dreambooth", json={"prompt": "a cat", "model_id": "nope"}).json() \
        == {"status": "error", "message": "Model id not found"}
    out = client.post("/api/v4/dreambooth", json={"prompt": "a cat", "model_id": "tiny-sd",
                                                  "scheduler": "EulerDiscreteScheduler",
                                                  **SMALL}).json()
    assert out["status"] == "success" and out["meta"]["scheduler"] == "EulerDiscreteScheduler"


def test_an_unknown_lora_is_refused_before_any_job(client):
    """Not a `failed` job later: a 404 in ModelsLab's body at once, nothing queued."""
    r = client.post("/api/v4/dreambooth", json={"prompt": "a cat", "model_id": "tiny-sd",
                                                "lora_model": "more_details", **SMALL})
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["status"] == "error" and "more_details" in str(body["message"])
    assert "id" not in body  # no job was made: nothing to fetch
    tagged = client.post("/api/v3/text2img", json={"prompt": "a cat <lora:absent:1>", **SMALL})
    assert tagged.status_code == 404 and "absent" in str(tagged.json()["message"])


def test_invalid_key_gets_the_seed_body(app_client):
    c = app_client(api_keys="k1,k2")
    for body in ({"prompt": "a cat"}, {"key": "wrong", "prompt": "a cat"}):
        r = c.post("/api/v3/text2img", json=body)
        assert r.status_code == 401 and r.json() == render.INVALID_KEY  # the seed's body
    assert c.post("/api/v3/fetch/1", json={"key": "nope"}).json() == render.INVALID_KEY
    assert c.post("/api/v3/text2img", json={"key": "k2", "prompt": "a cat", **SMALL}
                  ).json()["status"] == "success"


def test_missing_prompt_gets_the_validation_map(client):
    r = client.post("/api/v3/text2img", json={"key": "", "width": "512"})
    assert r.status_code == 400  # upstream's error-codes page: invalid parameters are 400
    assert r.json() == {"status": "error", "message": {"prompt": ["The prompt field is required."]}}


def test_the_same_request_within_30s_is_rate_limited(client):
    body = {"key": "", "prompt": "spam", "seed": 5, **SMALL}
    assert client.post("/api/v3/text2img", json=body).json()["status"] == "success"
    again = client.post("/api/v3/text2img", json=body)
    assert again.status_code == 429 and again.json() == render.RATE_LIMIT
    assert client.post("/api/v3/text2img", json={**body, "seed": 6}).json()["status"] == "success"


def test_a_crash_before_the_job_gets_the_seed_failed_body(make_settings, engine):
    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.storage import make_storage

    class BrokenRegistry:
        def resolve(self, name):
            raise RuntimeError("disk gone")

    class Broken(LocalBackend):
        registry = BrokenRegistry()

    settings = make_settings()
    with TestClient(create_app(settings, Broken(engine, make_storage(settings)))) as c:
        r = c.post("/api/v3/text2img", json={"prompt": "x"})
        assert r.status_code == 500 and r.json() == render.FAILED


def test_a_failed_job_says_failed(make_settings, engine):
    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.errors import StorageFailed
    from shared.storage import make_storage

    class NoBucket(LocalBackend):
        async def generate(self, req, *, job_id=None, keep_bytes=False):
            raise StorageFailed("bucket unreachable")

    settings = make_settings()
    with TestClient(create_app(settings, NoBucket(engine, make_storage(settings)))) as c:
        out = c.post("/api/v3/text2img", json={"prompt": "x"}).json()
        assert out["status"] == "failed" and out["message"] == "Failed, Try Again"
        assert out["output"] == "" and out["error"] == "bucket unreachable"
        assert c.post(f"/api/v3/fetch/{out['id']}", json={}).json() == out


def test_slow_job_answers_processing_then_fetch_gives_success(app_client):
    c = app_client(sync_wait_seconds=0)
    out = c.post("/api/v3/text2img", json={"prompt": "a slow cat", "samples": "2", **SMALL}).json()
    assert out["status"] == "processing"
    assert set(out) == {"status", "tip", "eta", "messege", "fetch_result", "id", "output", "meta",
                        "future_links"}
    assert out["messege"] == "Try to fetch request after given estimated time"
    assert out["fetch_result"] == f"http://testserver/api/v3/fetch/{out['id']}"
    assert out["output"] == [] and out["eta"] > 0 and len(out["future_links"]) == 2
    done = poll(c, out["fetch_result"])
    assert done["status"] == "success" and done["id"] == out["id"]
    assert done["output"] == out["future_links"]
    assert all(fetch_png(c, u).size == (64, 64) for u in done["output"])
    assert done["meta"]["seed"] == out["meta"]["seed"]


def test_v4_fetch_takes_request_id_in_the_body(app_client):
    c = app_client(sync_wait_seconds=0)
    out = c.post("/api/v4/dreambooth", json={"prompt": "a cat", "model_id": "tiny-sd",
                                             **SMALL}).json()
    assert out["status"] == "processing"
    assert out["fetch_result"].endswith(f"/api/v4/dreambooth/fetch/{out['id']}")
    done = poll(c, "/api/v4/dreambooth/fetch", {"key": "", "request_id": str(out["id"])})
    assert done["status"] == "success" and done["output"] == out["future_links"]
    assert c.post("/api/v4/dreambooth/fetch", json={"request_id": out["id"]}).json() == done
    assert c.post("/api/v4/dreambooth/fetch", json={}).json() == {
        "status": "error", "message": {"request_id": ["The request id field is required."]}}
    assert c.post("/api/v3/fetch/123", json={}).json() == render.REQUEST_NOT_FOUND


def test_base64_in_and_out(client):
    out = client.post("/api/v3/img2img", json={
        "prompt": "a cat", "init_image": b64png(), "base64": "yes", "strength": "0.8",
        **SMALL}).json()
    assert out["status"] == "success" and out["meta"]["init_image"] == "base64"
    img = Image.open(io.BytesIO(base64.b64decode(out["output"][0])))
    assert img.format == "PNG" and img.size == (64, 64)
    assert fetch_png(client, out["proxy_links"][0]).size == (64, 64)


def test_inpaint_with_base64_images(client):
    out = client.post("/api/v4/dreambooth/inpaint", json={
        "prompt": "a cat", "model_id": "tiny-sd", "init_image": b64png(),
        "mask_image": b64png(color=(255, 255, 255)), "base64": "yes", **SMALL}).json()
    assert out["status"] == "success" and len(out["output"]) == 1


def test_bad_init_image_is_a_field_error(client):
    out = client.post("/api/v3/img2img", json={"prompt": "a", "init_image": "%%%", **SMALL}).json()
    assert out["status"] == "error" and list(out["message"]) == ["init_image"]


def test_panorama_and_self_attention_run_for_real(client):
    out = client.post("/api/v3/text2img", json={"prompt": "a wide valley", "panorama": "yes",
                                                **SMALL, "width": "128"}).json()
    assert out["status"] == "success" and out["meta"]["panorama"] == "yes"
    assert fetch_png(client, out["output"][0]).size == (128, 64)
    out = client.post("/api/v3/text2img", json={"prompt": "a cat", "self_attention": "yes",
                                                **SMALL}).json()
    assert out["status"] == "success" and out["meta"]["self_attention"] == "yes"


@pytest.mark.parametrize("switch", ["multi_lingual", "upscale"])
def test_unavailable_switches_are_refused_clearly(client, switch):
    out = client.post("/api/v3/text2img", json={"prompt": "a cat", switch: "yes"}).json()
    assert out["status"] == "error" and list(out["message"]) == [switch]
    assert f'{switch} "no"' in out["message"][switch][0]


def test_system_load(client):
    assert client.post("/api/v3/system_load", json={"key": ""}).json() == {
        "queue_num": 0, "queue_time": 0, "status": "ok"}


def test_processing_flow_over_a_real_server(live_server):
    """uvicorn with its lifespan: the job runner starts, finishes the job and serves the files."""
    import httpx

    base = live_server(sync_wait_seconds=0)
    out = httpx.post(base + "/api/v3/text2img",
                     json={"prompt": "served", "samples": "1", **SMALL}, timeout=60).json()
    assert out["status"] == "processing" and out["fetch_result"].startswith(base)
    for _ in range(600):
        done = httpx.post(out["fetch_result"], json={}, timeout=60).json()
        if done["status"] != "processing":
            break
        time.sleep(0.1)
    assert done["status"] == "success" and done["output"] == out["future_links"]
    img = httpx.get(done["output"][0], timeout=60)
    assert img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size == (64, 64)
