"""The layer every API shape passes through: tenants isolated, bounded work, client mistakes 4xx."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from shared.dialects.base import key_id
from shared.progress import TASKS
from tests.http_helpers import SMALL, b64png

KA, KB = "sk-tenant-a", "sk-tenant-b"
A1111 = {"width": 64, "height": 64, "steps": 2}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(make_app):
    with TestClient(make_app(api_keys=f"{KA},{KB}", sync_wait_seconds=0)) as c:
        yield c


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), np.float32)


# -- tenants -------------------------------------------------------------------------------------
def test_a1111_options_are_per_key(keyed):
    r = keyed.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, headers=bearer(KA))
    assert r.status_code == 200, r.text
    assert keyed.get("/sdapi/v1/options", headers=bearer(KA)).json()[
        "CLIP_stop_at_last_layers"] == 2
    assert keyed.get("/sdapi/v1/options", headers=bearer(KB)).json()[
        "CLIP_stop_at_last_layers"] == 1
    # ...and the option reaches only A's images
    a = keyed.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, **A1111},
                   headers=bearer(KA)).json()
    b = keyed.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 3, **A1111},
                   headers=bearer(KB)).json()
    assert json.loads(a["info"])["clip_skip"] == 2 and json.loads(b["info"])["clip_skip"] == 1


def test_progress_interrupt_and_skip_see_only_the_callers_tasks(keyed):
    task = TASKS.open("shared-name", key_id(KA))
    task.begin("txt2img", 1)
    task.begin_call(10)
    try:
        other = keyed.get("/sdapi/v1/progress?id_task=shared-name", headers=bearer(KB)).json()
        assert other["state"]["job"] == "" and "id_task" not in other
        assert keyed.get("/sdapi/v1/progress", headers=bearer(KB)).json()["state"]["job"] == ""
        keyed.post("/sdapi/v1/interrupt", headers=bearer(KB))
        keyed.post("/sdapi/v1/skip", headers=bearer(KB))
        assert not task.interrupted and not task.skipped
        mine = keyed.get("/sdapi/v1/progress", headers=bearer(KA)).json()
        assert mine["id_task"] == "shared-name" and mine["state"]["sampling_steps"] == 10
        keyed.post("/sdapi/v1/interrupt", headers=bearer(KA))
        assert task.interrupted
    finally:
        task.finish()


def test_modelslab_jobs_are_invisible_to_other_keys(keyed):
    out = keyed.post("/api/v3/text2img", json={"key": KA, "prompt": "mine", **SMALL}).json()
    assert out["status"] in ("processing", "success"), out
    job = str(out["id"])
    theirs = keyed.post(f"/api/v3/fetch/{job}", json={"key": KB}).json()
    assert theirs == {"status": "error", "message": "Request not found"}
    for _ in range(300):
        mine = keyed.post(f"/api/v3/fetch/{job}", json={"key": KA}).json()
        if mine["status"] != "processing":
            break
        time.sleep(0.05)
    assert mine["status"] == "success" and len(mine["output"]) == 1
    assert keyed.app.state.jobs.store.get(job).owner == key_id(KA)
    assert KA not in json.dumps(keyed.app.state.jobs.store.get(job).model_dump(mode="json"))


class Interrupting:
    """The real backend, whose results come back marked interrupted."""

    def __init__(self, inner):
        self.inner, self.storage, self.registry = inner, inner.storage, inner.registry

    async def generate(self, req, **kw):
        result = await self.inner.generate(req, **kw)
        return result.model_copy(update={"interrupted": True})

    def native_size(self, model):
        return self.inner.native_size(model)


def test_an_interrupted_generation_is_never_a_success(make_app, make_settings):
    from shared.app import create_app

    app = make_app()
    with TestClient(create_app(make_settings(), Interrupting(app.state.backend))) as c:
        r = c.post("/v1/images/generations", json={"prompt": "x", "size": "256x256"})
        assert r.status_code == 409 and "interrupted" in r.json()["error"]["message"]
        r = c.post("/txt2img", data={"prompt": "x", "width": "64", "height": "64",
                                     "num_inference_steps": "2"})
        assert r.status_code == 409 and r.json()["status"] == "error"
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", **A1111})  # A1111 marks it itself
        assert r.status_code == 200 and len(r.json()["images"]) == 1


# -- bounded work --------------------------------------------------------------------------------
class Blocking:
    """A backend whose generation waits until released."""

    def __init__(self, inner):
        self.inner, self.storage, self.registry = inner, inner.storage, inner.registry
        self.release = asyncio.Event()

    async def generate(self, req, **kw):
        await self.release.wait()
        return await self.inner.generate(req, **kw)

    def native_size(self, model):
        return self.inner.native_size(model)


def test_a_full_queue_answers_503_with_retry_after_and_health_stays_fast(make_app, make_settings):
    from shared.app import create_app

    backend = Blocking(make_app().state.backend)
    app = create_app(make_settings(max_queue=1, busy_retry_seconds=7), backend)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            first = asyncio.ensure_future(c.post("/sdapi/v1/txt2img",
                                                 json={"prompt": "a", **A1111}))
            try:
                # wait (bounded) until the first request holds the only queue slot
                for _ in range(2000):
                    if app.state.admission.active == 1:
                        break
                    await asyncio.sleep(0.01)
                assert app.state.admission.active == 1, "the first request never got admitted"
                busy = await asyncio.wait_for(
                    c.post("/v1/images/generations", json={"prompt": "b"}), 30)
                # health answers while the only slot is held and generation is blocked
                health = await asyncio.wait_for(c.get("/health"), 30)
            finally:
                backend.release.set()
            return busy, health, await asyncio.wait_for(first, 120)

    busy, health, first = asyncio.run(scenario())
    assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
    assert busy.json()["error"]["code"] == "server_busy"
    assert health.status_code == 200
    assert first.status_code == 200 and len(first.json()["images"]) == 1


def test_the_compute_budget_and_prompt_limit_are_4xx(make_app):
    with TestClient(make_app(max_request_work=64 * 64 * 4, max_prompt_chars=50)) as c:
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", **A1111, "batch_size": 4})
        assert r.status_code == 400 and "SDGATE_MAX_REQUEST_WORK" in r.json()["detail"]
        r = c.post("/v1/images/generations", json={"prompt": "y" * 51, "size": "256x256"})
        assert r.status_code == 422 or r.status_code == 400
        assert "limit is 50" in r.json()["error"]["message"]
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", **A1111})  # within the budget
        assert r.status_code == 200


# -- client mistakes -----------------------------------------------------------------------------
def test_malformed_bodies_are_4xx_in_each_shape(client):
    no_boundary = client.post("/v1/images/edits", content=b"--x\r\n",
                              headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "multipart" in no_boundary.json()["error"]["message"]
    many = "&".join(f"f{i}=1" for i in range(5000))
    r = client.post("/txt2img", content=many,
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["status"] == "error"
    files = [("f%d" % i, (None, "1")) for i in range(1500)]
    r = client.post("/v1/images/edits", files=files)
    assert r.status_code == 400, r.text
    deep = "[" * 5000 + "]" * 5000
    for path in ("/sdapi/v1/txt2img", "/txt2img", "/v1/draw"):
        r = client.post(path, content='{"prompt": "x", "a": %s}' % deep,
                        headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, r.text)
    r = client.post("/api/v3/text2img", content='{"prompt": "x", "a": %s}' % deep,
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["status"] == "error"


def test_a_non_string_key_is_refused_not_a_crash(make_app):
    with TestClient(make_app(api_keys=KA)) as c:
        r = c.post("/txt2img", json={"prompt": "x", "key": 123})
        assert r.status_code == 401 and r.json()["status"] == "error"
        r = c.post("/api/v3/text2img", json={"prompt": "x", "key": {"a": 1}})
        assert r.json()["message"] == "Invalid Api Key"


def test_sizes_below_the_minimum_and_tiny_init_images_are_4xx(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 4, "height": 64, "steps": 2})
    assert r.status_code == 422 and r.json()["error"] == "RequestValidationError"
    for w, h in ((4, 4), (2, 2000)):
        r = client.post("/img2img", json={"prompt": "x", "init_image": b64png(size=(w, h)),
                                          "num_inference_steps": 2})
        assert r.status_code == 400 and "too small" in r.json()["message"], r.text


def test_seeds_near_2_64_wrap_instead_of_overflowing(client):
    top = 2**64 - 1
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": top, "batch_size": 2,
                                               **A1111})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["all_seeds"] == [top, 0]
    first, second = (pixels(i) for i in r.json()["images"])
    assert np.isfinite(first).all() and first.std() > 1 and np.abs(first - second).mean() > 1


def test_modelslab_strength_zero_is_refused_at_once(client):
    r = client.post("/api/v3/img2img", json={"prompt": "x", "init_image": b64png(),
                                            "strength": 0, "base64": "yes", **SMALL}).json()
    assert r["status"] == "error" and "strength" in json.dumps(r["message"])


# -- pixels --------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["(red:1.3) cube", "[red] cube", "((red)) cube",
                                    "(red:0.5) [cube]"])
def test_weighted_prompts_draw_real_pixels(client, prompt):
    plain = pixels(client.post("/sdapi/v1/txt2img", json={"prompt": "red cube", "seed": 5,
                                                          **A1111}).json()["images"][0])
    r = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, "seed": 5, **A1111})
    assert r.status_code == 200, r.text
    img = pixels(r.json()["images"][0])
    assert np.isfinite(img).all() and img.std() > 5  # not black, not constant
    assert np.abs(img - plain).max() > 0  # the weights reached the conditioning


def test_a_model_miss_does_not_rehash_models_on_disk(models_dir, monkeypatch):
    from shared.engine import registry as reg
    from shared.errors import ModelNotFound

    r = reg.ModelRegistry(models_dir)
    r.models()
    calls = []
    real = reg._short_hash
    monkeypatch.setattr(reg, "_short_hash", lambda p: calls.append(p) or real(p))
    with pytest.raises(ModelNotFound):
        r.resolve("no-such-model")  # rescans once, finds the same unchanged folders
    assert calls == []
