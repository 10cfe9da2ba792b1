"""A1111 v1.10 parity over HTTP: any size, prompt editing, samplers, routes, options."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

PREFIXES = ["/sdapi/v1", "/v1/sdapi/v1"]


def decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def px(b64: str) -> np.ndarray:
    return np.asarray(decode(b64).convert("RGB")).astype(int)


def error_shape(r, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    return body


def test_any_size_runs_at_the_next_multiple_of_8_and_returns_the_asked_size(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "width": 500, "height": 333,
                                              "steps": 2, "seed": 3})
    assert r.status_code == 200, r.text
    img = decode(r.json()["images"][0])
    assert img.size == (500, 333)
    a = np.asarray(img.convert("RGB")).astype(int)
    assert np.isfinite(a).all() and a.std() > 0
    init = r.json()["images"][0]
    r = client.post("/sdapi/v1/img2img", json={"prompt": "a fox", "width": 90, "height": 70,
                                              "steps": 2, "init_images": [init]})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).size == (90, 70)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_samplers_and_schedulers_listings(client, prefix):
    rows = {s["name"]: s for s in client.get(f"{prefix}/samplers").json()}
    assert rows["DPM++ 2M SDE"] == {"name": "DPM++ 2M SDE", "aliases": ["k_dpmpp_2m_sde"],
                                    "options": {"scheduler": "exponential",
                                                "brownian_noise": True}}
    assert {"Restart", "DDIM CFG++", "LCM", "DPM adaptive"} <= set(rows)
    scheds = {s["name"]: s for s in client.get(f"{prefix}/schedulers").json()}
    assert scheds["karras"] == {"name": "karras", "label": "Karras", "aliases": None,
                                "default_rho": 7.0, "need_inner_model": False}
    assert scheds["sgm_uniform"]["aliases"] == ["SGMUniform"] and len(scheds) == 12


def test_sampler_alias_schedule_and_refusals_over_http(client):
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 3, "seed": 5}
    a = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "k_euler",
                                              "scheduler": "Karras"})
    b = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "Euler",
                                              "scheduler": "beta"})
    assert a.status_code == b.status_code == 200
    assert not np.array_equal(px(a.json()["images"][0]), px(b.json()["images"][0]))
    err = error_shape(client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "Restart"}),
                      400)
    assert "Restart" in err["detail"]
    err = error_shape(client.post("/sdapi/v1/txt2img", json={**body, "scheduler": "nope"}), 404)
    assert "karras" in err["detail"]


def test_prompt_editing_switches_conditioning_per_step(client):
    body = {"width": 64, "height": 64, "steps": 4, "seed": 11, "cfg_scale": 7}

    def draw(prompt, **kw):
        r = client.post("/sdapi/v1/txt2img", json={**body, "prompt": prompt, **kw})
        assert r.status_code == 200, r.text
        return px(r.json()["images"][0])

    cat, dog = draw("a cat"), draw("a dog")
    edited = draw("a [cat:dog:0.5]")
    assert not np.array_equal(edited, cat) and not np.array_equal(edited, dog)
    assert np.array_equal(draw("a [cat:dog:4]"), cat)  # switches after the last step: cat only
    alternate = draw("a [cat|dog]")
    assert not np.array_equal(alternate, cat) and not np.array_equal(alternate, dog)
    long = "a " + ", ".join(["red fox"] * 40)  # >75 tokens: several chunks, padded alike
    assert draw(f"(a:1.2) [cat:{long}:2] BREAK x").std() > 0
    neg = draw("a cat", negative_prompt="[blurry:sharp:0.5]")
    assert not np.array_equal(neg, cat)
    hr = draw("a [cat:dog:0.5]", enable_hr=True, hr_scale=1.5, denoising_strength=0.6,
              hr_prompt="a [dog:cat:0.5]", hr_upscaler="Latent")
    assert hr.shape == (96, 96, 3) and hr.std() > 0


def test_prompt_editing_in_img2img(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a", "width": 64, "height": 64,
                                              "steps": 2, "seed": 1})
    init = r.json()["images"][0]
    body = {"width": 64, "height": 64, "steps": 6, "seed": 2, "init_images": [init],
            "denoising_strength": 0.8}
    out = [px(client.post("/sdapi/v1/img2img", json={**body, "prompt": p}).json()["images"][0])
           for p in ("a cat", "a dog", "a [cat:dog:2]")]
    assert not np.array_equal(out[2], out[0]) and not np.array_equal(out[2], out[1])


def test_hires_denoising_zero_is_the_upscaled_first_pass(client):
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "seed": 9}
    first = decode(client.post("/sdapi/v1/txt2img", json=body).json()["images"][0])
    r = client.post("/sdapi/v1/txt2img", json={**body, "enable_hr": True, "hr_scale": 2,
                                              "hr_upscaler": "Lanczos", "denoising_strength": 0})
    assert r.status_code == 200, r.text
    hr = np.asarray(decode(r.json()["images"][0]).convert("RGB")).astype(int)
    want = np.asarray(first.convert("RGB").resize((128, 128), Image.LANCZOS)).astype(int)
    assert hr.shape == (128, 128, 3) and np.abs(hr - want).max() <= 1
    latent = client.post("/sdapi/v1/txt2img", json={**body, "enable_hr": True, "hr_scale": 2,
                                                   "denoising_strength": 0})
    assert decode(latent.json()["images"][0]).size == (128, 128)


@pytest.mark.parametrize("extra", [{"infotext": "a\nSteps: 2, Size: 64xabc, Seed: 1"},
                                   {"infotext": "a\nSteps: 2, Sampler: Euler, Size: 64x64, "
                                                "Clip skip: two"},
                                   {"override_settings": {"CLIP_stop_at_last_layers": "x"},
                                    "width": 64, "height": 64}])
def test_user_strings_that_are_not_integers_are_422(client, extra):
    body = error_shape(client.post("/sdapi/v1/txt2img", json={
        "prompt": "a", "steps": 2, **extra}), 422)
    assert "not an integer" in body["errors"]


# -- routes and response keys against upstream's list (tests/fixtures/a1111_v1_10_api.json) ----
def _upstream():
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent.parent / "fixtures" / "a1111_v1_10_api.json")
                      .read_text())


def test_every_upstream_route_is_served_at_both_prefixes(client):
    spec = _upstream()
    missing = []
    for method, path, _ in spec["routes"]:
        if path in spec["pending_elsewhere"]:
            continue
        for prefix in PREFIXES:
            # A body that is not JSON: a real route answers (or refuses it) itself; only an
            # unknown path reaches the fallback's plain "Not Found".
            r = client.request(method, f"{prefix}/{path}", content=b"{not json",
                               headers={"content-type": "application/json"})
            if r.status_code == 404 and r.json().get("detail") == "Not Found":
                missing.append((method, prefix, path))
    assert missing == []


@pytest.mark.parametrize("path, model", [("samplers", "SamplerItem[]"),
                                         ("schedulers", "SchedulerItem[]"),
                                         ("upscalers", "UpscalerItem[]"),
                                         ("latent-upscale-modes", "LatentUpscalerModeItem[]"),
                                         ("sd-models", "SDModelItem[]"), ("memory", "MemoryResponse"),
                                         ("embeddings", "EmbeddingsResponse"),
                                         ("progress", "ProgressResponse"),
                                         ("scripts", "ScriptsList"), ("cmd-flags", "FlagsModel"),
                                         ("options", "OptionsModel")])
def test_response_keys_are_upstreams(client, path, model):
    want = _upstream()["models"][model.removesuffix("[]")]
    for prefix in PREFIXES:
        body = client.get(f"{prefix}/{path}").json()
        items = body if model.endswith("[]") else [body]
        assert items, path
        for item in items:
            assert set(want) <= set(item), (path, set(want) - set(item))


def test_unknown_routes_and_refusals_in_upstreams_error_shape(client):
    for prefix in PREFIXES:
        body = error_shape(client.get(f"{prefix}/no-such-route"), 404)
        assert body["detail"] == "Not Found"
        error_shape(client.post(f"{prefix}/server-kill"), 404)
        body = error_shape(client.post(f"{prefix}/train/embedding", json={}), 400)
        assert "training" in body["detail"]
        assert client.post(f"{prefix}/reload-checkpoint").json() == {}
        assert client.get(f"{prefix}/extensions").json() == []


def _keys_hold(body, model: str, spec) -> list:
    """Upstream keys missing from a response (each item of a list), nested models included."""
    want = spec["models"][model.removesuffix("[]")]
    items = body if model.endswith("[]") else [body]
    missing = [(model, k) for item in items for k in set(want) - set(item)]
    if model.removesuffix("[]") == "ScriptInfo":
        missing += [m for item in items for arg in item["args"]
                    for m in _keys_hold(arg, "ScriptArg", spec)]
    if model == "EmbeddingsResponse":
        missing += [m for part in ("loaded", "skipped") for emb in body[part].values()
                    for m in _keys_hold(emb, "EmbeddingItem", spec)]
    return missing


def test_every_get_route_answers_with_upstreams_keys(client):
    """Each GET route the fixture names a response model for: every item carries upstream's keys;
    every such model is transcribed in the fixture (so a new route cannot go unchecked)."""
    spec = _upstream()
    missing, empty = [], []
    for method, path, model in spec["routes"]:
        if model is None:
            continue
        assert model.removesuffix("[]") in spec["models"], model
        if method != "GET":
            continue
        for prefix in PREFIXES:
            r = client.get(f"{prefix}/{path}")
            assert r.status_code == 200, (path, r.text)
            body = r.json()
            if model.endswith("[]") and not body:
                empty.append(path)
            missing += _keys_hold(body, model, spec)
    assert missing == []
    # Lists that are empty on a bare models folder (nothing of that kind is installed).
    assert set(empty) <= {"hypernetworks", "face-restorers", "realesrgan-models", "script-info",
                          "prompt-styles", "sd-vae", "extensions", "sd-modules"}, empty


def test_post_routes_answer_with_upstreams_keys(client):
    spec = _upstream()
    img = Image.new("RGB", (64, 64), (120, 30, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    small = {"prompt": "a", "steps": 2, "width": 64, "height": 64, "seed": 3}
    for prefix in PREFIXES:
        t = client.post(f"{prefix}/txt2img", json=small).json()
        assert _keys_hold(t, "TextToImageResponse", spec) == []
        assert decode(t["images"][0]).size == (64, 64)
        i = client.post(f"{prefix}/img2img", json={**small, "init_images": [b64]}).json()
        assert _keys_hold(i, "ImageToImageResponse", spec) == []
        assert i["parameters"]["include_init_images"] is False
        assert i["parameters"]["init_images"] is None
        assert decode(i["images"][0]).size == (64, 64)
        one = client.post(f"{prefix}/extra-single-image", json={
            "image": b64, "upscaler_1": "Nearest", "upscaling_resize": 2}).json()
        assert _keys_hold(one, "ExtrasSingleImageResponse", spec) == []
        assert decode(one["image"]).size == (128, 128)
        many = client.post(f"{prefix}/extra-batch-images", json={
            "imageList": [{"data": b64, "name": "a.png"}], "upscaler_1": "Nearest",
            "upscaling_resize": 2}).json()
        assert _keys_hold(many, "ExtrasBatchImagesResponse", spec) == []
        assert [decode(x).size for x in many["images"]] == [(128, 128)]
        info = client.post(f"{prefix}/png-info", json={"image": t["images"][0]}).json()
        assert _keys_hold(info, "PNGInfoResponse", spec) == []
        assert str(info["parameters"]["Seed"]) == "3"
