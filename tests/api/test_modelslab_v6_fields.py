"""ModelsLab v6 fields beyond v4's, over HTTP on the tiny model: IP-Adapter on text2img, the
inpaint example's `steps`, algorithm_type "dpmsolver+++", instant_response, the refusals, and
super resolution's v6 fetch."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from tests.conftest import with_tiny
from tests.http_helpers import SMALL, b64png, fetch_png, poll

BASE = {"key": "", "model_id": "tiny-sd", "prompt": "a red house", "seed": 11, **SMALL}


def pixels(client, out) -> np.ndarray:
    assert out["status"] == "success", out
    return np.asarray(fetch_png(client, out["output"][0]).convert("RGB")).astype(int)


def post(client, path="/api/v6/images/text2img", **fields) -> dict:
    return client.post(path, json={**BASE, **fields}).json()


def dot_b64() -> str:
    import base64
    import io

    img = Image.new("RGB", (64, 64), (20, 20, 20))
    ImageDraw.Draw(img).ellipse((8, 8, 40, 56), fill=(230, 30, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_ip_adapter_on_v6_text2img_changes_the_pixels(client, ip_adapter_models):
    plain = pixels(client, post(client))
    out = post(client, ip_adapter_id="tiny-ip-adapter", ip_adapter_image=dot_b64(),
               ip_adapter_scale="0.8")
    with_ip = pixels(client, out)
    assert np.abs(with_ip - plain).mean() > 0.5 and with_ip.std() > 1.0
    assert (out["meta"]["ip_adapter_id"], out["meta"]["ip_adapter_scale"]) == \
        ("tiny-ip-adapter", 0.8)
    # scale 0: exactly the picture without the adapter (the image prompt really is the cause)
    zero = pixels(client, post(client, ip_adapter_image=dot_b64(), ip_adapter_scale=0))
    assert (zero == plain).all()
    # on img2img too
    i2i = dict(init_image=b64png(), strength=0.8)
    a = pixels(client, post(client, "/api/v6/images/img2img", **i2i))
    b = pixels(client, post(client, "/api/v6/images/img2img", **i2i,
                            ip_adapter_image=dot_b64()))
    assert np.abs(a - b).mean() > 0.5
    for fields, name in (({"ip_adapter_id": "nope", "ip_adapter_image": dot_b64()},
                          "ip_adapter_id"),
                         ({"ip_adapter_id": "tiny-ip-adapter"}, "ip_adapter_image")):
        r = post(client, **fields)
        assert r["status"] == "error" and name in r["message"], r


def test_ip_adapter_without_any_installed_is_refused(client_on, tmp_path, models_dir):
    c = client_on(with_tiny(tmp_path / "models", models_dir))
    r = post(c, ip_adapter_image=dot_b64())
    assert r["status"] == "error" and "No IP-Adapter" in r["message"]["ip_adapter_id"][0]


def test_inpaint_example_steps_field_sets_the_steps(client):
    """docs.modelslab.com's v6 inpaint example sends "steps": "21", not num_inference_steps."""
    body = {k: v for k, v in BASE.items() if k != "num_inference_steps"}
    img = {"init_image": b64png(), "mask_image": b64png(color=(255, 255, 255))}
    out = client.post("/api/v6/images/inpaint", json={**body, **img, "steps": "3"}).json()
    assert out["status"] == "success", out
    assert out["meta"]["steps"] == 3
    three = pixels(client, out)
    # the same picture as num_inference_steps 3
    same = pixels(client, client.post("/api/v6/images/inpaint", json={
        **body, **img, "num_inference_steps": 3}).json())
    assert (three == same).all()
    # num_inference_steps wins when both are sent
    both = client.post("/api/v6/images/inpaint", json={
        **body, **img, "steps": "3", "num_inference_steps": 2}).json()
    assert both["meta"]["steps"] == 2


def test_algorithm_type_dpmsolver_triple_plus_is_the_sde_variant(client):
    """stablediffusionapi.com/docs/a1111schedulers: DPM++ 2M SDE is DPMSolverMultistepScheduler
    with algorithm_type "dpmsolver+++"."""
    sched = {"scheduler": "DPMSolverMultistepScheduler", "use_karras_sigmas": "no"}
    plus3 = pixels(client, post(client, **sched, algorithm_type="dpmsolver+++"))
    sde = pixels(client, post(client, **sched, algorithm_type="sde-dpmsolver++"))
    plain = pixels(client, post(client, **sched, algorithm_type="none"))
    assert (plus3 == sde).all() and np.abs(plus3 - plain).mean() > 0.1


@pytest.mark.parametrize("field,value", [("highres_fix", "yes"), ("enhance_style", "cinematic"),
                                         ("vae", "some-vae"),
                                         ("embeddings_model", "not-installed")])
def test_fields_sdgate_cannot_honour_are_refused_naming_them(client, field, value):
    r = client.post("/api/v6/images/text2img", json={**BASE, field: value})
    assert r.status_code == 400 and r.json()["status"] == "error"
    assert list(r.json()["message"]) == [field], r.text


def test_instant_response_answers_processing_then_fetch_succeeds(client):
    out = post(client, instant_response="yes", seed=12)
    assert out["status"] in ("processing", "success")  # a finished tiny job may win the race
    if out["status"] == "processing":
        assert out["fetch_result"].endswith(f"/api/v6/images/fetch/{out['id']}")
        assert out["messege"] and out["future_links"]
        out = poll(client, out["fetch_result"], {"key": ""})
    assert out["status"] == "success"
    assert pixels(client, out).std() > 1.0


def test_v6_controlnet_path_the_sdk_posts_to(client, controlnet_models):
    out = client.post("/api/v6/images/controlnet", json={
        **BASE, "controlnet_model": "tiny-cn", "init_image": b64png()}).json()
    assert pixels(client, out).std() > 1.0 and out["meta"]["controlnet_model"] == "tiny-cn"
    assert client.post(f"/api/v6/images/fetch/{out['id']}", json={}).json()["output"] == \
        out["output"]


def test_realtime_routes_use_the_default_model_and_their_own_fetch(make_app):
    with TestClient(make_app(sync_wait_seconds=0)) as c:
        body = {k: v for k, v in BASE.items() if k != "model_id"}
        out = c.post("/api/v6/realtime/text2img", json=body).json()
        if out["status"] == "processing":
            assert out["fetch_result"].endswith(f"/api/v6/realtime/fetch/{out['id']}")
            out = poll(c, out["fetch_result"], {"key": ""})
        assert out["meta"]["model"] == "tiny-sd"
        assert pixels(c, out).std() > 1.0
        got = c.post("/api/v6/realtime/fetch", json={"key": "", "request_id": out["id"]}).json()
        assert got["output"] == out["output"]
