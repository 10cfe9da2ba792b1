"""ReActor's /reactor/* routes over HTTP on tiny face models, through both backends."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.engine.faces_assets import write_face_model, write_pack, write_restorer
from tests.engine.test_faces import BIG, SCALE, SMALL, changed_outside, decode, noise, png, region


@pytest.fixture(scope="session")
def face_pack(models_dir):
    """The tiny face models in the session's models folder (two faces in every 256x128 image)."""
    write_pack(models_dir, [(BIG, 0.9), (SMALL, 0.8)], SCALE)
    write_restorer(models_dir / "GFPGAN" / "GFPGANv1.4.pth")
    write_face_model(models_dir / "reactor" / "faces" / "elena.safetensors",
                     np.random.default_rng(3).standard_normal(512))
    return models_dir


@pytest.fixture
def api(make_app, face_pack):
    def make(**kw):
        return TestClient(make_app(**kw))
    return make


def b64(arr) -> str:
    return base64.b64encode(png(arr)).decode()


def swap(client, prefix="", **fields):
    body = {"source_image": b64(noise(2)), "target_image": b64(noise(1)), **fields}
    return client.post(f"{prefix}/reactor/image", json=body)


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_reactor_image_swaps_the_chosen_face_only(api, prefix):
    r = swap(api(), prefix, face_index=[1])
    assert r.status_code == 200, r.text
    diff = np.abs(decode(base64.b64decode(r.json()["image"])) - noise(1))
    assert diff[region(SMALL, 0)].mean() > 10
    assert changed_outside(diff, 0.5, SMALL) == 0


def test_restorer_visibility_zero_equals_no_restorer(api):
    client = api()
    plain = swap(client).json()["image"]
    zero = swap(client, face_restorer="GFPGAN", restorer_visibility=0).json()["image"]
    full = swap(client, face_restorer="GFPGAN", restorer_visibility=1).json()["image"]
    assert decode(base64.b64decode(zero)).tolist() == decode(base64.b64decode(plain)).tolist()
    assert full != plain


def test_face_model_source(api):
    r = swap(api(), select_source=1, face_model="elena", source_image="")
    assert r.status_code == 200, r.text


def test_lists(api):
    client = api()
    assert client.get("/reactor/models").json() == {"models": ["inswapper_128.onnx"]}
    assert client.get("/reactor/facemodels").json() == {"facemodels": ["elena"]}
    assert client.get("/v1/reactor/upscalers").json() == {"upscalers": ["None"]}


@pytest.mark.parametrize("fields,status,word", [
    (dict(face_index=[3]), 422, "out of range"),
    (dict(det_thresh=0.95), 400, "no face"),
    (dict(target_image="not-an-image!"), 400, "base64"),
    (dict(target_image=base64.b64encode(b"GIF89a broken").decode()), 400, "target_image"),
    (dict(model="inswapper_512.onnx"), 404, "inswapper_512"),
    (dict(face_restorer="CodeFormer"), 404, "Codeformer"),
    (dict(face_restorer="RestoreAll"), 404, "RestoreAll"),
    (dict(upscaler="R-ESRGAN 4x+", scale=2), 400, "upscaler"),
    (dict(mask_face=1), 400, "mask_face"),
    (dict(save_to_file=1), 400, "save_to_file"),
    (dict(gender_source=3), 422, "gender_source"),
])
def test_bad_inputs_are_clear_4xx_in_a1111_shape(api, fields, status, word):
    r = swap(api(), **fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    assert word.lower() in str(body).lower()


def test_faces_off_refuses_every_route(api):
    client = api(faces=False)
    assert swap(client).status_code == 503
    assert client.get("/reactor/models").status_code == 503


# -- A1111 restore_faces ---------------------------------------------------------------------------
TXT = {"prompt": "a face", "width": 64, "height": 64, "steps": 2, "seed": 7}


def test_a1111_restore_faces_changes_the_faces_with_the_chosen_restorer(api):
    client = api()
    plain = client.post("/sdapi/v1/txt2img", json=TXT)
    fixed = client.post("/sdapi/v1/txt2img", json={
        **TXT, "restore_faces": True, "override_settings": {"face_restoration_model": "GFPGAN"}})
    assert plain.status_code == fixed.status_code == 200, fixed.text
    a = decode(base64.b64decode(plain.json()["images"][0]))
    b = decode(base64.b64decode(fixed.json()["images"][0]))
    assert a.shape == b.shape and np.abs(a - b).sum() > 0
    assert json_info(fixed)["restore_faces"] is True
    listed = client.get("/sdapi/v1/face-restorers").json()
    assert [r["name"] for r in listed] == ["GFPGAN"]


def test_a1111_restore_faces_refusals(api):
    client = api()
    r = client.post("/sdapi/v1/txt2img", json={**TXT, "restore_faces": True})  # CodeFormer
    assert r.status_code == 404 and "Codeformer" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={
        **TXT, "restore_faces": True, "response_format": "url",
        "override_settings": {"face_restoration_model": "GFPGAN"}})
    assert r.status_code == 400 and "restore_faces" in r.json()["detail"]


def json_info(r) -> dict:
    import json

    return json.loads(r.json()["info"])


def test_extras_gfpgan_visibility_restores_faces(api):
    client = api()
    image = noise(5)
    body = {"image": b64(image), "upscaler_1": "None", "upscaling_resize": 1}
    r = client.post("/sdapi/v1/extra-single-image", json={**body, "gfpgan_visibility": 1})
    assert r.status_code == 200, r.text
    diff = np.abs(decode(base64.b64decode(r.json()["image"])) - image)
    assert diff[region(BIG, 0)].mean() > 5 and changed_outside(diff, 0.7, BIG, SMALL) == 0
    assert "GFPGAN visibility" in r.json()["html_info"]
    full = decode(base64.b64decode(r.json()["image"]))
    r = client.post("/sdapi/v1/extra-single-image", json={**body, "gfpgan_visibility": 0})
    assert (decode(base64.b64decode(r.json()["image"])) == image).all()  # visibility 0: as sent
    r = client.post("/sdapi/v1/extra-single-image", json={**body, "gfpgan_visibility": 0.5})
    half = decode(base64.b64decode(r.json()["image"]))
    assert 0 < np.abs(half - image)[region(BIG, 0)].mean() < np.abs(full - image)[
        region(BIG, 0)].mean()
    r = client.post("/sdapi/v1/extra-single-image", json={**body, "codeformer_visibility": 1})
    assert r.status_code == 404 and "Codeformer" in r.json()["detail"]
