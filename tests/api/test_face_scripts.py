"""A1111 alwayson face scripts (ReActor, ADetailer) on txt2img / img2img, on tiny models."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.api.test_reactor_api import api, b64, face_pack  # noqa: F401 (fixtures)
from tests.engine.test_faces import BIG, H, SMALL, W, changed_outside, decode, noise, region

TXT = {"prompt": "a face", "width": W, "height": H, "steps": 2, "seed": 11}


def reactor_args(**named) -> list:
    """ReActor's positional args (upstream's order), defaults as its UI, then `named`."""
    from shared.dialects.a1111.reactor_script import ARGS, NAMES

    values = dict(ARGS)
    values.update({"img": b64(noise(2)), "enable": True, **named})
    return [values[n] for n in NAMES]


def image(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return decode(base64.b64decode(r.json()["images"][0]))


def with_scripts(body: dict, **scripts) -> dict:
    return {**body, "alwayson_scripts": {k: {"args": v} for k, v in scripts.items()}}


def test_reactor_swaps_only_the_detected_face_of_the_generated_image(api):
    client = api()
    plain = image(client.post("/sdapi/v1/txt2img", json=TXT))
    swapped = image(client.post("/sdapi/v1/txt2img",
                                json=with_scripts(TXT, reactor=reactor_args(faces_index="1"))))
    diff = np.abs(swapped - plain)
    assert diff[region(SMALL, 0)].mean() > 10
    assert changed_outside(diff, 0.5, SMALL) == 0
    assert diff[region(BIG, 0)].sum() == 0


def test_reactor_disabled_or_no_face_leaves_the_image_alone(api):
    client = api()
    plain = image(client.post("/sdapi/v1/txt2img", json=TXT))
    off = client.post("/sdapi/v1/txt2img", json=with_scripts(TXT, reactor=reactor_args(
        enable=False)))
    none = client.post("/sdapi/v1/txt2img", json=with_scripts(TXT, reactor=reactor_args(
        faces_index="5")))  # no such face in the generated image: ReActor skips it
    assert (image(off) == plain).all() and (image(none) == plain).all()
    assert "Steps: 2" in none.json()["info"]


def test_reactor_swap_in_source_changes_the_init_image(api):
    client = api()
    body = {"prompt": "a face", "init_images": [b64(noise(1))], "steps": 4,
            "denoising_strength": 0.5, "seed": 3, "width": W, "height": H}
    plain = image(client.post("/sdapi/v1/img2img", json=body))
    args = reactor_args(swap_in_source=True, swap_in_generated=False)
    swapped = image(client.post("/sdapi/v1/img2img", json=with_scripts(body, reactor=args)))
    assert np.abs(swapped - plain).sum() > 0
    # the same init image swapped by hand, then img2img: the same picture
    init = client.post("/reactor/image", json={"source_image": b64(noise(2)),
                                               "target_image": b64(noise(1))}).json()["image"]
    by_hand = image(client.post("/sdapi/v1/img2img", json={**body, "init_images": [init]}))
    assert (by_hand == swapped).all()


@pytest.mark.parametrize("named,status,word", [
    (dict(mask_face=True), 400, "mask_face"),
    (dict(model="inswapper_512.onnx"), 404, "inswapper_512"),
    (dict(face_restorer_name="CodeFormer"), 404, "Codeformer"),
    (dict(upscaler_name="R-ESRGAN 4x+", upscaler_scale=2), 400, "upscaler"),
    (dict(select_source=2, source_folder="/tmp"), 400, "folder"),
    (dict(img=""), 400, "source image"),
    (dict(gender_source="both"), 400, "gender_source"),
    (dict(faces_index=[1]), 400, "face numbers"),
])
def test_reactor_refusals(api, named, status, word):
    r = api().post("/sdapi/v1/txt2img", json=with_scripts(TXT, reactor=reactor_args(**named)))
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "detail", "body", "errors"}
    assert word.lower() in r.text.lower()


def test_reactor_script_needs_faces_on_and_base64(api):
    body = with_scripts(TXT, reactor=reactor_args())
    client = api()
    r = client.post("/sdapi/v1/txt2img", json={**body, "response_format": "url"})
    assert r.status_code == 400 and "url" in r.json()["detail"].lower()
    r = client.post("/sdapi/v1/txt2img", json=with_scripts(TXT, reactor=reactor_args() + [0]))
    assert r.status_code == 400 and "at most" in r.json()["detail"]
    assert api(faces=False).post("/sdapi/v1/txt2img", json=body).status_code == 503


def test_safety_screening_refuses_without_a_checker(api):
    r = api().post("/reactor/image", json={"source_image": b64(noise(2)), "safety_checker": True,
                                           "target_image": b64(noise(1))})
    assert r.status_code == 400 and "safety checker" in r.json()["detail"]
    client = api(faces_safety_checker=True)  # the server screens every swap
    r = client.post("/sdapi/v1/txt2img", json=with_scripts(TXT, reactor=reactor_args()))
    assert r.status_code == 400 and "safety checker" in r.json()["detail"]
    r = client.post("/reactor/image", json={"source_image": b64(noise(2)),
                                            "target_image": b64(noise(1))})
    assert r.status_code == 400 and "safety checker" in r.json()["detail"]


# -- ADetailer -------------------------------------------------------------------------------------
@pytest.fixture
def ad_api(api, face_pack):
    from tests.engine.faces_assets import write_yolo
    from tests.engine.test_adetailer import BOX

    write_yolo(face_pack / "adetailer" / "face_yolov8n.onnx", [(BOX, 0.9)], (W, H))
    return api


def ad_args(**unit) -> list:
    return [True, False, {"ad_model": "face_yolov8n.pt", "ad_denoising_strength": 0.75,
                          "ad_dilate_erode": 0, "ad_mask_blur": 0, **unit}]


def test_adetailer_repaints_only_the_detected_box(ad_api):
    from tests.engine.test_adetailer import BOX

    client = ad_api()
    body = {**TXT, "steps": 4}
    plain = image(client.post("/sdapi/v1/txt2img", json=body))
    r = client.post("/sdapi/v1/txt2img", json=with_scripts(body, ADetailer=ad_args(
        ad_prompt="a detailed face")))
    detailed = image(r)
    diff = np.abs(detailed - plain)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    assert diff[y1:y2, x1:x2].mean() > 5
    assert changed_outside(diff, 0.0, BOX) == 0
    info = r.json()["info"]
    assert "ADetailer model: face_yolov8n.pt" in info and "ADetailer prompt" in info
    off = client.post("/sdapi/v1/txt2img", json=with_scripts(body, ADetailer=[False, False, {
        "ad_model": "face_yolov8n.pt"}]))
    assert (image(off) == plain).all()


def test_adetailer_then_reactor_on_img2img(ad_api):
    client = ad_api()
    body = {"prompt": "a face", "init_images": [b64(noise(1))], "steps": 4,
            "denoising_strength": 0.5, "seed": 3, "width": W, "height": H}
    r = client.post("/sdapi/v1/img2img", json=with_scripts(
        body, ADetailer=ad_args(ad_model="face_scrfd_10g"), reactor=reactor_args()))
    assert image(r).shape == (H, W, 3)


@pytest.mark.parametrize("args,status,word", [
    (ad_args(ad_model="hand_yolov8n.pt"), 404, "face_yolov8n.pt"),
    (ad_args(ad_model="mediapipe_face_full"), 400, "mediapipe"),
    (ad_args(ad_use_checkpoint=True, ad_checkpoint="other"), 400, "ad_checkpoint"),
    (ad_args(ad_restore_face=True), 400, "ad_restore_face"),
    (ad_args(ad_bogus=1), 422, "ad_bogus"),
    (ad_args(ad_confidence=2), 422, "ad_confidence"),
    (ad_args(ad_use_sampler=True, ad_sampler="Bogus Sampler"), 404, "Bogus"),
    (ad_args(ad_use_sampler=True, ad_scheduler="Bogus"), 404, "Bogus"),
    (ad_args(ad_use_cfg_scale=True, ad_cfg_scale=1000), 422, "ad_cfg_scale"),
    (["nope"], 400, "dict"),
])
def test_adetailer_refusals(ad_api, args, status, word):
    r = ad_api().post("/sdapi/v1/txt2img", json=with_scripts(TXT, ADetailer=args))
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "detail", "body", "errors"}
    assert word in r.text


def test_adetailer_info_routes(ad_api):
    client = ad_api()
    assert client.get("/adetailer/v1/ad_model").json() == {
        "ad_model": ["None", "face_yolov8n.pt", "face_scrfd_10g"]}
    assert client.get("/adetailer/v1/version").json()["version"]
    assert "ad_denoising_strength" in client.get("/adetailer/v1/schema").json()["properties"]
