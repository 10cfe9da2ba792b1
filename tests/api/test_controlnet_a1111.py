"""sd-webui-controlnet's API on the tiny model: alwayson_scripts units and the /controlnet routes."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw


def b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def square(size=64) -> Image.Image:
    img = Image.new("RGB", (size, size))
    ImageDraw.Draw(img).rectangle((16, 16, 47, 47), fill="white")
    return img


BODY = {"prompt": "a house", "width": 64, "height": 64, "steps": 3, "seed": 5}


def decode(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))).astype(int)


def with_units(*units, **extra):
    return {**BODY, **extra, "alwayson_scripts": {"controlnet": {"args": list(units)}}}


@pytest.fixture
def cn_client(client, controlnet_models):
    return client


def test_txt2img_single_multi_and_weight_zero(cn_client):
    c = cn_client
    plain = decode(c.post("/sdapi/v1/txt2img", json=BODY))
    unit = {"enabled": True, "module": "canny", "model": "tiny-cn [abcdef12]", "weight": 1.0,
            "image": b64(square()), "resize_mode": "Crop and Resize", "processor_res": 64,
            "threshold_a": 100, "threshold_b": 200, "guidance_start": 0.0, "guidance_end": 1.0,
            "control_mode": "Balanced", "pixel_perfect": False}
    one = decode(c.post("/sdapi/v1/txt2img", json=with_units(unit)))
    assert np.abs(one - plain).mean() > 1
    zero = decode(c.post("/sdapi/v1/txt2img", json=with_units({**unit, "weight": 0})))
    assert (zero == plain).all()
    off = decode(c.post("/sdapi/v1/txt2img", json=with_units({**unit, "enabled": False},
                                                            {"model": "None"})))
    assert (off == plain).all()
    old_names = {"input_image": b64(square()), "model": "tiny-cn-file", "module": "invert",
                 "guessmode": False, "guidance": 1.0, "lowvram": True, "resize_mode": 0,
                 "control_mode": 1}
    multi = decode(c.post("/sdapi/v1/txt2img", json=with_units(unit, old_names)))
    assert (multi != one).any() and (multi != plain).any()


def test_guidance_window_is_respected(cn_client):
    """guidance_start/end (and the old `guidance` name for the end) decide which steps the unit
    acts on: a window holding no step gives the pixels of no unit, half a window something between."""
    c = cn_client
    plain = decode(c.post("/sdapi/v1/txt2img", json=BODY))
    unit = {"module": "canny", "model": "tiny-cn", "image": b64(square()), "processor_res": 64,
            "threshold_a": 100, "threshold_b": 200}
    full = decode(c.post("/sdapi/v1/txt2img", json=with_units(unit)))
    late = decode(c.post("/sdapi/v1/txt2img", json=with_units({**unit, "guidance_start": 0.9})))
    assert (late == plain).all()  # 3 steps: none starts at or after 0.9
    early = decode(c.post("/sdapi/v1/txt2img", json=with_units({**unit, "guidance_end": 0.1})))
    assert (early == plain).all()
    old = decode(c.post("/sdapi/v1/txt2img", json=with_units({**unit, "guidance": 0.1})))
    assert (old == plain).all()  # sd-webui-controlnet's old name for guidance_end
    half = decode(c.post("/sdapi/v1/txt2img", json=with_units({**unit, "guidance_start": 0.5})))
    assert (half != plain).any() and (half != full).any()
    first = decode(c.post("/sdapi/v1/txt2img", json=with_units({**unit, "guidance_end": 0.5})))
    assert (first != plain).any() and (first != full).any() and (first != half).any()


def test_img2img_and_inpaint(cn_client):
    c = cn_client
    init = b64(Image.new("RGB", (64, 64), (200, 40, 40)))
    body = {**BODY, "init_images": [init], "denoising_strength": 0.7}
    plain = decode(c.post("/sdapi/v1/img2img", json=body))
    unit = {"model": "tiny-cn", "module": "none"}  # no image: the init image is the control
    ctl = decode(c.post("/sdapi/v1/img2img", json=with_units(unit, **body)))
    assert (ctl != plain).any()
    mask = Image.new("L", (64, 64))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    out = decode(c.post("/sdapi/v1/img2img", json=with_units(
        {**unit, "image": {"image": b64(square()), "mask": None}}, **body, mask=b64(mask), mask_blur=0)))
    assert (out[:, 40:] == (200, 40, 40)).all() and (out[:, :24] != (200, 40, 40)).any()


def test_routes(cn_client):
    c = cn_client
    assert c.get("/controlnet/version").json() == {"version": 2}
    assert c.get("/controlnet/settings").json()["control_net_unit_count"] >= 2
    listed = c.get("/controlnet/model_list").json()["model_list"]
    assert listed[:2] == ["tiny-cn", "tiny-cn-file"]  # then IP-Adapters, if installed
    modules = c.get("/controlnet/module_list").json()
    assert {"none", "canny", "invert", "threshold", "tile_resample", "blur_gaussian",
            "shuffle"} <= set(modules["module_list"])
    r = c.post("/controlnet/detect", json={"controlnet_module": "canny",
                                           "controlnet_input_images": [b64(square())],
                                           "controlnet_processor_res": 64,
                                           "controlnet_threshold_a": 100,
                                           "controlnet_threshold_b": 200})
    assert r.status_code == 200, r.text
    edges = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("L"))
    assert edges.shape[:2] == (64, 64) and edges.max() == 255 and edges[32, 32] == 0


def test_errors_name_the_choices(cn_client):
    c = cn_client
    r = c.post("/sdapi/v1/txt2img", json=with_units({"model": "nope", "image": b64(square())}))
    assert r.status_code == 400 and "tiny-cn" in r.json()["detail"]
    r = c.post("/sdapi/v1/txt2img", json=with_units({"model": "tiny-cn", "module": "banana",
                                                     "image": b64(square())}))
    assert r.status_code == 400 and "canny" in r.json()["detail"]
    r = c.post("/controlnet/detect", json={"controlnet_module": "depth_midas",
                                           "controlnet_input_images": [b64(square())]})
    assert r.status_code == 400 and "MiDaS" in r.json()["detail"]
    r = c.post("/sdapi/v1/txt2img", json=with_units({"model": "tiny-cn", "weird": 1}))
    assert r.status_code == 400 and "weird" in r.json()["detail"]
    r = c.post("/sdapi/v1/txt2img", json=with_units({"model": "tiny-cn"}))  # txt2img: no image
    assert r.status_code == 400
    r = c.post("/sdapi/v1/txt2img", json=with_units({"model": "tiny-cn", "image": b64(square()),
                                                     "control_mode": 7}))
    assert r.status_code == 400 and "Balanced" in r.text or "balanced" in r.text
    r = c.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {"regional prompter": {
        "args": []}}})
    assert r.status_code == 422 and "regional prompter" in r.text


RED_DOT = Image.new("RGB", (64, 64), (20, 20, 20))
ImageDraw.Draw(RED_DOT).ellipse((8, 8, 40, 56), fill=(230, 30, 30))


def test_ip_adapter_units(cn_client, ip_adapter_models):
    c = cn_client
    plain = decode(c.post("/sdapi/v1/txt2img", json=BODY))
    unit = {"module": "ip-adapter_clip_sd15", "model": "tiny-ip-adapter [1234abcd]",
            "weight": 1.0, "image": b64(RED_DOT), "resize_mode": "Crop and Resize",
            "pixel_perfect": False, "control_mode": "Balanced"}
    ip = decode(c.post("/sdapi/v1/txt2img", json=with_units(unit)))
    assert np.abs(ip - plain).mean() > 1
    zero = decode(c.post("/sdapi/v1/txt2img", json=with_units({**unit, "weight": 0})))
    assert (zero == plain).all()
    cn = {"module": "canny", "model": "tiny-cn", "image": b64(square())}
    only_cn = decode(c.post("/sdapi/v1/txt2img", json=with_units(cn)))
    both = decode(c.post("/sdapi/v1/txt2img", json=with_units(cn, unit)))
    assert (both != only_cn).any() and (both != ip).any()
    # img2img: a unit without an image takes the init image, as upstream
    init = b64(Image.new("RGB", (64, 64), (40, 200, 40)))
    body = {**BODY, "init_images": [init], "denoising_strength": 0.7}
    i2i = decode(c.post("/sdapi/v1/img2img", json=body))
    no_img = {k: v for k, v in unit.items() if k != "image"}
    assert (decode(c.post("/sdapi/v1/img2img", json=with_units(no_img, **body))) != i2i).any()
    assert "tiny-ip-adapter" in c.get("/controlnet/model_list").json()["model_list"]
    assert "ip-adapter_clip_sd15" in c.get("/controlnet/module_list").json()["module_list"]
    for bad, word in (({"model": "nope"}, "tiny-ip-adapter"),
                      ({"module": "ip-adapter_face_id_plus"}, "insightface"),
                      ({"guidance_start": 0.5}, "guidance"),
                      ({"model": "None"}, "model")):
        r = c.post("/sdapi/v1/txt2img", json=with_units({**unit, **bad}))
        assert 400 <= r.status_code < 500 and word in r.text, (bad, r.text)
    r = c.post("/sdapi/v1/txt2img", json=with_units(no_img))
    assert r.status_code == 400 and "no image" in r.text


def test_effective_region_mask(cn_client, ip_adapter_models):
    c = cn_client
    plain = decode(c.post("/sdapi/v1/txt2img", json=BODY))
    black = b64(Image.new("L", (64, 64), 0))
    half = Image.new("L", (64, 64))
    ImageDraw.Draw(half).rectangle((0, 0, 31, 63), fill=255)
    cn = {"module": "canny", "model": "tiny-cn", "image": b64(square())}
    ip = {"module": "ip-adapter_clip_sd15", "model": "tiny-ip-adapter", "image": b64(RED_DOT)}
    for unit in (cn, ip):
        full = decode(c.post("/sdapi/v1/txt2img", json=with_units(unit)))
        nowhere = decode(c.post("/sdapi/v1/txt2img", json=with_units(
            {**unit, "effective_region_mask": black})))
        assert (nowhere == plain).all() and (full != plain).any()
        part = decode(c.post("/sdapi/v1/txt2img", json=with_units(
            {**unit, "effective_region_mask": b64(half)})))
        assert (part != full).any() and (part != plain).any()
    r = c.post("/sdapi/v1/txt2img", json=with_units({**cn, "ipadapter_input": ["x"]}))
    assert r.status_code == 400 and "ipadapter_input" in r.text
