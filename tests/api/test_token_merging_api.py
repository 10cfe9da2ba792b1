"""Token merging over HTTP: ModelsLab's `tomesd` and A1111's token_merging_ratio options, on a
tiny SD 1.x whose full-resolution blocks have attention (tests/engine/tome_assets.py)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.engine.tome_assets import write_models
from tests.http_helpers import SMALL, b64png, fetch_png

ML = {"key": "", "model_id": "tiny-sd", "prompt": "a red house", "seed": 11,
      "safety_checker": "no", **SMALL}
A1 = {"prompt": "a red house", "seed": 11, "width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def tome_engine(tmp_path_factory):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    eng = Engine(ModelRegistry(write_models(tmp_path_factory.mktemp("tome-api"))))
    eng.warm()
    return eng


@pytest.fixture
def client(tome_engine, make_settings):
    from fastapi.testclient import TestClient

    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.storage import make_storage

    settings = make_settings(models_dir=tome_engine.registry.root)
    with TestClient(create_app(settings, LocalBackend(tome_engine, make_storage(settings)))) as c:
        yield c


# -- ModelsLab --------------------------------------------------------------------------------
def ml(client, path="/api/v4/dreambooth", **fields):
    out = client.post(path, json={**ML, **fields}).json()
    assert out["status"] == "success", out
    img = np.asarray(fetch_png(client, out["output"][0]).convert("RGB")).astype(int)
    assert np.isfinite(img).all() and img.std() > 1
    return img, out


@pytest.mark.parametrize("path", ["/api/v3/text2img", "/api/v4/dreambooth",
                                  "/api/v6/images/text2img", "/api/v6/images/img2img"])
def test_tomesd_yes_is_upstreams_default_and_no_turns_it_off(client, path):
    extra = {"init_image": b64png(), "strength": "0.8"} if "img2img" in path else {}
    yes, out = ml(client, path, tomesd="yes", **extra)
    assert out["meta"]["tomesd"] == "yes"
    no, out = ml(client, path, tomesd="no", **extra)
    assert out["meta"]["tomesd"] == "no"
    unset, _ = ml(client, path, **extra)
    assert np.abs(yes - no).max() > 8
    assert (unset == yes).all()


@pytest.mark.parametrize("path", ["/api/v5/controlnet", "/api/v6/images/controlnet"])
def test_tomesd_on_controlnet_routes(client, path):
    fields = dict(controlnet_model="tiny-cn", controlnet_type="tile", init_image=b64png(),
                  auto_hint="no")
    yes, _ = ml(client, path, tomesd="yes", **fields)
    no, _ = ml(client, path, tomesd="no", **fields)
    assert np.abs(yes - no).max() > 8


def test_tomesd_on_sd3_is_refused_only_when_sent(client):
    r = client.post("/api/v4/dreambooth", json={**ML, "model_id": "tiny-sd3", "tomesd": "yes"})
    assert r.status_code == 400 and r.json()["status"] == "error"
    assert list(r.json()["message"]) == ["tomesd"] and "UNet" in r.json()["message"]["tomesd"][0]
    r = client.post("/api/v3/text2img", json={**ML, "tomesd": "maybe"})
    assert r.status_code == 400 and list(r.json()["message"]) == ["tomesd"]
    unset, _ = ml(client, model_id="tiny-sd3")  # upstream's default "yes": drawn without it
    no, _ = ml(client, model_id="tiny-sd3", tomesd="no")
    assert (unset == no).all()


# -- A1111 ------------------------------------------------------------------------------------
def a1(client, path="/sdapi/v1/txt2img", **fields):
    r = client.post(path, json={**A1, **fields})
    assert r.status_code == 200, r.text
    out = r.json()
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["images"][0]))).convert("RGB"))
    assert img.astype(float).std() > 1
    return img.astype(int), json.loads(out["info"])


def test_override_settings_token_merging_ratio(client):
    base, info = a1(client)
    assert "Token merging" not in info["infotexts"][0]
    merged, info = a1(client, override_settings={"token_merging_ratio": 0.5})
    assert np.abs(base - merged).max() > 8
    assert "Token merging ratio: 0.5" in info["infotexts"][0]
    assert info["extra_generation_params"]["Token merging ratio"] == "0.5"
    again, _ = a1(client)
    assert (again == base).all()  # override_settings_restore_afterwards: the default, restored
    pasted, _ = a1(client, infotext=info["infotexts"][0])  # upstream's infotext field
    assert (pasted == merged).all()


def test_options_ratios_for_txt2img_img2img_and_hires(client):
    init = {"init_images": [b64png()], "denoising_strength": 0.8}
    plain_i2i, _ = a1(client, "/sdapi/v1/img2img", **init)
    assert client.post("/sdapi/v1/options", json={"token_merging_ratio": 0.5}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["token_merging_ratio"] == 0.5
    _, info = a1(client)
    assert "Token merging ratio: 0.5" in info["infotexts"][0]
    i2i, info = a1(client, "/sdapi/v1/img2img", **init)  # img2img's own is 0: txt2img's
    assert "Token merging ratio: 0.5" in info["infotexts"][0]
    assert np.abs(i2i - plain_i2i).max() > 8
    _, info = a1(client, "/sdapi/v1/img2img", **init,
                 override_settings={"token_merging_ratio_img2img": 0.3})
    assert "Token merging ratio: 0.3" in info["infotexts"][0]
    hires = dict(enable_hr=True, hr_scale=1.5, denoising_strength=0.5, hr_second_pass_steps=2)
    _, info = a1(client, **hires, override_settings={"token_merging_ratio_hr": 0.2})
    assert "Token merging ratio: 0.5" in info["infotexts"][0]
    assert "Token merging ratio hr: 0.2" in info["infotexts"][0]
    _, info = a1(client, **hires)  # hr 0: the first pass's, as upstream
    assert "Token merging ratio hr: 0.5" in info["infotexts"][0]


@pytest.mark.parametrize("value", [1.5, -0.1, "half", True])
def test_bad_ratios_are_a_422_naming_the_option(client, value):
    r = client.post("/sdapi/v1/txt2img", json={**A1, "override_settings": {
        "token_merging_ratio_hr": value}})
    assert r.status_code == 422 and "override_settings.token_merging_ratio_hr" in r.text
    r = client.post("/sdapi/v1/options", json={"token_merging_ratio": value})
    assert r.status_code == 422 and "token_merging_ratio" in r.text


def test_a1111_token_merging_on_sd3_is_refused(client):
    r = client.post("/sdapi/v1/txt2img", json={**A1, "override_settings": {
        "sd_model_checkpoint": "tiny-sd3", "token_merging_ratio": 0.5}})
    assert r.status_code == 400 and "token merging" in r.json()["detail"]
