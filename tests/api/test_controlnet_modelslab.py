"""ModelsLab's /api/v5/controlnet on the tiny model and tiny ControlNets: pixels, modes, errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.http_helpers import fetch_png


def b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def square() -> Image.Image:
    img = Image.new("RGB", (64, 64))
    ImageDraw.Draw(img).rectangle((16, 16, 47, 47), fill="white")
    return img


RED = (200, 40, 40)
BASE = {"key": "", "model_id": "tiny-sd", "prompt": "a house", "width": "64", "height": "64",
        "num_inference_steps": "3", "enhance_prompt": "no", "safety_checker": "no",
        "seed": 5, "scheduler": "UniPCMultistepScheduler", "guidance_scale": 7.5}


def run(client, path="/api/v5/controlnet", **fields) -> np.ndarray:
    r = client.post(path, json={**BASE, **fields})
    out = r.json()
    assert out["status"] == "success", out
    return np.asarray(fetch_png(client, out["output"][0]).convert("RGB")).astype(int), out


@pytest.fixture
def c(client, controlnet_models):
    return client


def test_txt2img_single_multi_scales_and_weight_zero(c):
    plain, _ = run(c, "/api/v4/dreambooth", use_karras_sigmas="yes")
    one, out = run(c, controlnet_model="tiny-cn", controlnet_type="canny", auto_hint="yes",
                   init_image=b64(square()), controlnet_conditioning_scale="1")
    assert np.abs(one - plain).mean() > 1 and one.std() > 0
    meta = out["meta"]
    assert (meta["controlnet_model"], meta["auto_hint"], meta["init_image"]) == \
        ("tiny-cn", "yes", "base64")
    zero, _ = run(c, controlnet_model="tiny-cn", init_image=b64(square()),
                  controlnet_conditioning_scale=0)
    assert (zero == plain).all()  # weight 0: the same pixels as no ControlNet
    hint, _ = run(c, controlnet_model="tiny-cn", auto_hint="no", init_image=b64(square()))
    assert (hint != one).any()  # no auto hint: the picture itself is the control, not its edges
    multi, _ = run(c, controlnet_model="tiny-cn,tiny-cn-file", controlnet_type="canny,invert",
                   auto_hint="yes", control_image=b64(square()),
                   controlnet_conditioning_scale="1,0.5")
    assert (multi != one).any() and (multi != plain).any()
    half, _ = run(c, controlnet_model="tiny-cn,tiny-cn-file", controlnet_type="canny,invert",
                  auto_hint="yes", control_image=b64(square()),
                  controlnet_conditioning_scale="1,0")
    assert (half == one).all()  # the second unit at scale 0 adds nothing
    guess, _ = run(c, controlnet_model="tiny-cn", controlnet_type="canny", auto_hint="yes",
                   init_image=b64(square()), guess_mode="yes")
    assert (guess != one).any()


def test_img2img_and_inpaint(c):
    init = b64(Image.new("RGB", (64, 64), RED))
    plain, _ = run(c, "/api/v4/dreambooth/img2img", init_image=init, strength=0.7)
    ctl, out = run(c, controlnet_model="tiny-cn", init_image=init, control_image=b64(square()),
                   strength=0.7)
    assert (ctl != plain).any() and out["meta"]["strength"] == 0.7
    mask = Image.new("L", (64, 64))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    inp, _ = run(c, controlnet_model="tiny-cn", init_image=init, control_image=b64(square()),
                 mask_image=b64(mask), strength=0.8)
    assert (inp[:, 40:] == RED).all()  # outside the mask: untouched
    assert (inp[:, :24] != RED).any()


def test_wrong_model_type_and_fields_name_the_choices(c):
    img = b64(square())

    def error(**fields):
        r = c.post("/api/v5/controlnet", json={**BASE, "init_image": img, **fields})
        body = r.json()
        assert body["status"] == "error", body
        return body["message"]

    msg = error(controlnet_model="nope")
    assert "controlnet_model" in msg and "tiny-cn" in msg["controlnet_model"][0]
    msg = error(controlnet_model="tiny-cn", controlnet_type="banana", auto_hint="yes")
    assert "controlnet_type" in msg and "canny" in msg["controlnet_type"][0]
    msg = error(controlnet_model="tiny-cn", controlnet_type="depth", auto_hint="yes")
    assert "depth" in msg["controlnet_type"][0].lower()  # needs annotator weights: named
    msg = error(controlnet_model="tiny-cn,tiny-cn-file", controlnet_conditioning_scale="1,2,3")
    assert "controlnet_conditioning_scale" in msg
    assert "init_image" in error(controlnet_model="tiny-cn", init_image=None)
    assert "init_image" in error(controlnet_model="tiny-cn", init_image=None,
                                 control_image=img, mask_image=img)
    assert "controlnet_model" in error(controlnet_model="")
    assert error(controlnet_model="tiny-cn", model_id="nope") == "Model id not found"


def test_ip_adapter_fields(c, ip_adapter_models):
    dot = Image.new("RGB", (64, 64), (20, 20, 20))
    ImageDraw.Draw(dot).ellipse((8, 8, 40, 56), fill=(230, 30, 30))
    body = dict(controlnet_model="tiny-cn", init_image=b64(square()))
    cn, _ = run(c, **body)
    ip, out = run(c, **body, ip_adapter_id="tiny-ip-adapter", ip_adapter_image=b64(dot),
                  ip_adapter_scale=0.8)
    assert np.abs(ip - cn).mean() > 0.5
    assert (out["meta"]["ip_adapter_id"], out["meta"]["ip_adapter_scale"]) == \
        ("tiny-ip-adapter", 0.8)
    zero, _ = run(c, **body, ip_adapter_image=b64(dot), ip_adapter_scale=0)
    assert (zero == cn).all()
    for fields, name in (({"ip_adapter_id": "nope", "ip_adapter_image": b64(dot)},
                          "ip_adapter_id"),
                         ({"ip_adapter_id": "tiny-ip-adapter"}, "ip_adapter_image")):
        r = c.post("/api/v5/controlnet", json={**BASE, **body, **fields}).json()
        assert r["status"] == "error" and name in r["message"], r
