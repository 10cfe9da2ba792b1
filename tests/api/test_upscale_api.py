"""A1111 extras, /upscalers and hires fix with model upscalers over HTTP, on both backends."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import with_tiny
from tests.engine.test_upscalers import FILES, picture, write_upscalers

P = "/sdapi/v1"


@pytest.fixture(scope="module")
def up_dir(models_dir, tmp_path_factory):
    """The tiny pipeline (linked) plus tiny upscalers in A1111's folders."""
    return write_upscalers(with_tiny(tmp_path_factory.mktemp("upmodels"), models_dir))


@pytest.fixture
def up(client_on, up_dir):
    return client_on(up_dir)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"), np.float64)


def test_extras_single_and_batch(up):
    r = up.post(f"{P}/extra-single-image", json={
        "image": b64(picture()), "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"html_info", "image"}
    out = decode(body["image"])
    assert out.shape == (96, 128, 3) and np.isfinite(out).all() and out.std() > 1.0
    assert body["html_info"] == ("<p>Postprocess upscale by: 4, "
                                 "Postprocess upscaler: R-ESRGAN 4x+</p>")

    r = up.post(f"{P}/extra-batch-images", json={
        "imageList": [{"data": b64(picture(seed=1)), "name": "a.png"},
                      {"data": b64(picture(seed=2)), "name": "b.png"}],
        "resize_mode": 1, "upscaling_resize_w": 64, "upscaling_resize_h": 48,
        "upscaler_1": "4x-UltraSharp", "upscaler_2": "Nearest",
        "extras_upscaler_2_visibility": 0.3})
    assert r.status_code == 200, r.text
    images = [decode(i) for i in r.json()["images"]]
    assert [i.shape for i in images] == [(48, 64, 3)] * 2
    assert not np.array_equal(images[0], images[1]) and images[0].std() > 1.0
    assert "Postprocess upscaler 2: Nearest" in r.json()["html_info"]


def test_lists(up, up_dir):
    ups = {u["name"]: u for u in up.get(f"{P}/upscalers").json()}
    assert list(ups)[:3] == ["None", "Lanczos", "Nearest"]
    assert set(FILES) <= set(ups)
    assert ups["4x-UltraSharp"] == {
        "name": "4x-UltraSharp", "model_name": "ESRGAN_4x", "scale": 4, "model_url": None,
        "model_path": str(up_dir / "ESRGAN" / "4x-UltraSharp.safetensors")}
    real = up.get(f"{P}/realesrgan-models").json()
    assert {m["name"] for m in real} == {"R-ESRGAN 4x+", "R-ESRGAN General 4xV3"}
    assert set(real[0]) == {"name", "path", "scale"}


def test_refusals(up):
    r = up.post(f"{P}/extra-single-image", json={"image": b64(picture()), "upscaler_1": "LDSR"})
    assert r.status_code == 400 and "R-ESRGAN 4x+" in r.json()["detail"]
    r = up.post(f"{P}/extra-single-image", json={"image": b64(picture()),
                                                  "gfpgan_visibility": 0.5})
    assert r.status_code == 404 and "face restorer" in r.json()["detail"]  # no GFPGAN weights
    r = up.post(f"{P}/extra-single-image", json={"image": "", "upscaler_1": "Lanczos"})
    assert r.status_code == 400
    r = up.post(f"{P}/extra-single-image", json={"image": b64(picture()), "upscaling_resize": 9})
    assert r.status_code == 422


def test_hires_fix_with_model_upscaler(up):
    r = up.post(f"{P}/txt2img", json={
        "prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 5, "enable_hr": True,
        "hr_scale": 2, "hr_upscaler": "R-ESRGAN General 4xV3", "denoising_strength": 0.5})
    assert r.status_code == 200, r.text
    out = decode(r.json()["images"][0])
    assert out.shape == (128, 128, 3) and out.std() > 1.0
    assert "Hires upscaler: R-ESRGAN General 4xV3" in r.json()["info"]
    r = up.post(f"{P}/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 2,
                                       "enable_hr": True, "hr_upscaler": "LDSR"})
    assert r.status_code == 400 and "SwinIR_4x" in r.json()["detail"]
