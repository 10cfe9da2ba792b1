"""ModelsLab super resolution (v3 / v6) and text2img `upscale: yes` on tiny upscaler files."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import with_tiny
from tests.engine.test_upscalers import picture, write_upscalers
from tests.http_helpers import SMALL, fetch_png


@pytest.fixture(scope="module")
def up_dir(models_dir, tmp_path_factory):
    return write_upscalers(with_tiny(tmp_path_factory.mktemp("mlup"), models_dir))


@pytest.fixture
def up(client_on, up_dir):
    return client_on(up_dir)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float64)


def test_v6_super_resolution_upscales_with_the_model_id(up):
    r = up.post("/api/v6/image_editing/super_resolution", json={
        "key": "", "init_image": b64(picture()), "model_id": "realesr-general-x4v3",
        "scale": "3", "face_enhance": False, "webhook": None, "track_id": None})
    body = r.json()
    assert body["status"] == "success", body
    assert set(body) >= {"status", "generationTime", "id", "output", "proxy_links", "meta"}
    img = fetch_png(up, body["output"][0])
    assert img.size == (96, 72)  # 32x24 x3, as upstream's scale asks
    arr = pixels(img)
    assert np.isfinite(arr).all() and arr.std() > 1.0
    assert body["meta"]["model_id"] == "realesr-general-x4v3" and body["meta"]["scale"] == 3
    # a finished job: fetchable by its id like a generation, at v6 image editing's own fetch
    for path in (f"/api/v6/image_editing/fetch/{body['id']}",
                 f"/api/v6/images/fetch/{body['id']}"):
        again = up.post(path, json={"key": ""}).json()
        assert again["status"] == "success" and again["output"] == body["output"]
    again = up.post("/api/v6/image_editing/fetch", json={"key": "", "request_id": body["id"]})
    assert again.json()["output"] == body["output"]


def test_super_resolution_default_scale_is_upstreams_3(up):
    body = up.post("/api/v6/image_editing/super_resolution", json={
        "key": "", "init_image": b64(picture(seed=2))}).json()
    assert body["status"] == "success", body
    assert fetch_png(up, body["output"][0]).size == (96, 72)  # 32x24, x3
    assert body["meta"]["scale"] == 3 and body["meta"]["model_id"] == "realesr-general-x4v3"


def test_v3_super_resolution_takes_url_field_and_base64_answers(up):
    r = up.post("/api/v3/super_resolution", json={
        "key": "", "url": b64(picture(seed=4)), "model_id": "RealESRGAN_x4plus", "scale": 2,
        "base64": "yes"})
    body = r.json()
    assert body["status"] == "success", body
    img = Image.open(io.BytesIO(base64.b64decode(body["output"][0])))
    assert img.size == (64, 48) and pixels(img).std() > 1.0
    # two models give two different pictures: the model_id is really used
    other = up.post("/api/v3/super_resolution", json={
        "key": "", "url": b64(picture(seed=4)), "model_id": "realesr-general-x4v3",
        "scale": 2, "base64": "yes"}).json()
    img2 = Image.open(io.BytesIO(base64.b64decode(other["output"][0])))
    assert img2.size == img.size and not np.array_equal(pixels(img), pixels(img2))


def test_super_resolution_refusals(up):
    r = up.post("/api/v3/super_resolution", json={"key": "", "url": b64(picture()),
                                                  "model_id": "ultra_resolution"}).json()
    assert r["status"] == "error" and "realesr-general-x4v3" in r["message"]["model_id"][0]
    r = up.post("/api/v3/super_resolution", json={"key": "", "scale": 2}).json()
    assert r == {"status": "error", "message": {"init_image": ["The init image field is required."]}}
    r = up.post("/api/v3/super_resolution", json={"key": "", "url": b64(picture()),
                                                  "scale": 9}).json()
    assert r["status"] == "error" and "scale" in r["message"]
    # face_enhance needs GFPGAN weights, which this folder lacks: a clear error, no image
    r = up.post("/api/v6/image_editing/super_resolution", json={
        "key": "", "init_image": b64(picture(seed=9)), "face_enhance": "yes"}).json()
    assert r["status"] == "error" and "GFPGAN" in str(r["message"])


def test_text2img_upscale_yes_doubles_the_size(up):
    body = {"key": "", "prompt": "a cat", "seed": 3, **SMALL}
    plain = up.post("/api/v3/text2img", json=body).json()
    big = up.post("/api/v3/text2img", json={**body, "upscale": "yes"}).json()
    assert plain["status"] == big["status"] == "success", big
    small_img, big_img = fetch_png(up, plain["output"][0]), fetch_png(up, big["output"][0])
    assert small_img.size == (64, 64) and big_img.size == (128, 128)
    assert big["meta"]["upscale"] == "yes"
    # the upscaled picture is the same picture: downsized, it is close to the plain one
    back = pixels(big_img.resize((64, 64), Image.LANCZOS))
    assert pixels(big_img).std() > 1.0
    assert np.abs(back - pixels(small_img)).mean() < np.abs(back - back.mean()).mean()


def test_text2img_upscale_without_the_model_is_refused(make_app):
    with TestClient(make_app(modelslab_upscaler="RealESRGAN_x4plus")) as c:  # no upscalers here
        r = c.post("/api/v3/text2img", json={"key": "", "prompt": "a cat", "upscale": "yes",
                                            **SMALL}).json()
    assert r["status"] == "error" and "RealESRGAN_x4plus" in r["message"]["upscale"][0]


def test_super_resolution_webhook_and_track_id(client_on, up_dir):
    from standardwebhooks import Webhook

    from tests.http_helpers import receiver
    from tests.test_modelslab_webhooks import SECRET, hook_settings, wait_webhook_status

    with receiver() as rec:
        c = client_on(up_dir, **hook_settings(rec))
        out = c.post("/api/v3/super_resolution", json={
            "key": "", "url": b64(picture()), "scale": 2, "webhook": rec.url + "/hook",
            "track_id": 42}).json()
        assert out["status"] == "success", out
        done = wait_webhook_status(c, out["id"])
        assert done["webhook_status"] == "success" and len(rec.hits) == 1
        payload = Webhook(SECRET).verify(rec.hits[0].body, rec.hits[0].headers)
        assert payload["id"] == out["id"] and payload["output"] == out["output"]
        assert payload["track_id"] == "42"


@pytest.fixture(scope="module")
def face_dir(models_dir, tmp_path_factory):
    """Upscalers plus the tiny face detector and a GFPGAN-folder restorer."""
    from tests.engine.faces_assets import write_pack, write_restorer
    from tests.engine.test_faces import BIG, SCALE, SMALL

    root = write_upscalers(with_tiny(tmp_path_factory.mktemp("mlfaces"), models_dir))
    write_pack(root, [(BIG, 0.9), (SMALL, 0.8)], SCALE)
    write_restorer(root / "GFPGAN" / "GFPGANv1.4.pth")
    return root


def test_face_enhance_restores_the_faces_of_the_upscaled_image(client_on, face_dir):
    from tests.engine.test_faces import BIG, SMALL, changed_outside, noise, png, region

    body = {"key": "", "init_image": b64(png(noise(5))), "scale": 1, "base64": "yes"}
    c = client_on(face_dir)
    plain = c.post("/api/v6/image_editing/super_resolution", json=body).json()
    faces = c.post("/api/v6/image_editing/super_resolution",
                   json={**body, "face_enhance": True}).json()
    assert plain["status"] == faces["status"] == "success", faces
    a, b = (pixels(Image.open(io.BytesIO(base64.b64decode(o["output"][0]))))
            for o in (plain, faces))
    assert a.shape == b.shape == (128, 256, 3)
    diff = np.abs(a - b)
    assert diff[region(BIG, 0)].mean() > 5  # the faces changed, nothing else did
    assert changed_outside(diff, 0.7, BIG, SMALL) == 0
    assert faces["meta"]["face_enhance"] is True
