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
