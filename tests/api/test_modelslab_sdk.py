"""ModelsLab's official Python SDK (`modelslab_py`, PyPI) against a live sdgate: only its base URL
changed. Its Community API posts to /api/v6/images/{text2img,img2img,inpaint,controlnet} and
fetches /api/v6/images/fetch/{id}; Realtime posts /api/v6/realtime/{text2img,img2img} and fetches
/api/v6/realtime/fetch/{id}; Image_editing posts /api/v6/image_editing/super_resolution and
fetches /api/v6/image_editing/fetch/{id}."""

from __future__ import annotations

import base64
import warnings

import httpx
import numpy as np
import pytest

from tests.conftest import point_engine, with_tiny
from tests.engine.test_upscalers import picture, write_upscalers
from tests.http_helpers import b64png, fetch_png

pytest.importorskip("modelslab_py")
with warnings.catch_warnings():  # its schemas use pydantic v1 idioms (json_encoders, .dict())
    warnings.simplefilter("ignore", DeprecationWarning)
    from modelslab_py.core.apis.community import Community
    from modelslab_py.core.apis.image_editing import Image_editing
    from modelslab_py.core.apis.realtime import Realtime
    from modelslab_py.core.client import Client
    from modelslab_py.schemas.community import ControlNet, Image2Image, Inpainting, Text2Image
    from modelslab_py.schemas.image_editing import SuperResolutionSchema
    from modelslab_py.schemas.realtime import RealtimeImage2ImageSchema, RealtimeText2ImageSchema

# the SDK calls pydantic's deprecated .dict(); its warning is not ours
pytestmark = pytest.mark.filterwarnings("ignore:The `dict` method is deprecated")

SMALL = dict(width=64, height=64, samples=1, num_inference_steps=2, enhance_prompt="no",
             safety_checker="no")


@pytest.fixture(scope="module")
def sdk_dir(models_dir, controlnet_models, tmp_path_factory):
    """The tiny model, the tiny ControlNet and tiny upscaler files in one models folder."""
    root = with_tiny(tmp_path_factory.mktemp("mlsdk"), models_dir)
    (root / "ControlNet").symlink_to(controlnet_models, target_is_directory=True)
    return write_upscalers(root)


@pytest.fixture
def sdk(live_server, sdk_dir, engine, monkeypatch):
    point_engine(engine, monkeypatch, sdk_dir)
    base = live_server(models_dir=sdk_dir, api_keys="sdk-key")
    client = Client(api_key="sdk-key", fetch_retry=60, fetch_timeout=1)
    client.base_url = base + "/api/"  # the SDK's only server setting
    return client


def image(url: str) -> np.ndarray:
    img = fetch_png(httpx, url)
    arr = np.asarray(img.convert("RGB"), np.float64)
    assert np.isfinite(arr).all() and arr.std() > 1.0
    return arr


def test_sdk_community_text2img_img2img_inpaint_controlnet_and_fetch(sdk):
    api = Community(client=sdk)
    out = api.text_to_image(Text2Image(prompt="a lighthouse", model_id="tiny-sd", seed=5,
                                       **SMALL))
    assert out["status"] == "success", out
    first = image(out["output"][0])
    assert first.shape == (64, 64, 3) and out["meta"]["seed"] == 5
    # the SDK's fetch: POST {base}/v6/images/fetch/{id} with the key in the body
    assert api.fetch(str(out["id"]))["output"] == out["output"]

    init = b64png()
    i2i = api.image_to_image(Image2Image(prompt="watercolor", model_id="tiny-sd", seed=6,
                                         init_image=init, strength=0.7, **SMALL))
    assert i2i["status"] == "success", i2i
    assert image(i2i["output"][0]).shape == (64, 64, 3) and i2i["meta"]["strength"] == 0.7

    inp = api.inpainting(Inpainting(prompt="a cat", model_id="tiny-sd", seed=7, init_image=init,
                                    mask_image=b64png(color=(255, 255, 255)), **SMALL))
    assert inp["status"] == "success", inp
    assert image(inp["output"][0]).shape == (64, 64, 3)

    cn = api.controlnet(ControlNet(prompt="a house", model_id="tiny-sd",
                                   controlnet_model="tiny-cn", init_image=init, seed=8, **SMALL))
    assert cn["status"] == "success", cn
    assert image(cn["output"][0]).shape == (64, 64, 3)
    assert cn["meta"]["controlnet_model"] == "tiny-cn"


def test_sdk_wrong_key_gets_upstreams_invalid_key_body(sdk):
    """A refusal is a 4xx with upstream's body: the SDK raises with the code and the body."""
    bad = Client(api_key="nope")
    bad.base_url = sdk.base_url
    with pytest.raises(Exception, match="status code 401.*Invalid Api Key"):
        Community(client=bad).text_to_image(Text2Image(prompt="x", model_id="tiny-sd", **SMALL))


def test_sdk_super_resolution_and_its_fetch(sdk):
    api = Image_editing(client=sdk)
    src = base64.b64encode(picture(seed=3)).decode()
    out = api.super_resolution(SuperResolutionSchema(init_image=src, scale=2,
                                                     model_id="RealESRGAN_x4plus"))
    assert out["status"] == "success", out
    assert image(out["output"][0]).shape == (48, 64, 3)  # 32x24 x2
    # the SDK's fetch here: POST {base}/v6/image_editing/fetch/{id}
    assert api.fetch(str(out["id"]))["output"] == out["output"]
    # the SDK's own default model_id, "ultra_resolution", has no public weights: refused by name
    with pytest.raises(Exception, match="status code 400.*model_id.*ultra_resolution"):
        api.super_resolution(SuperResolutionSchema(init_image=src))


def test_sdk_realtime_text2img_img2img_and_fetch(sdk):
    """Realtime: no model_id (the server's default model), fetch at /api/v6/realtime/fetch/{id}."""
    api = Realtime(client=sdk)
    small = dict(width=64, height=64, samples=1, num_inference_steps=2, seed=9, base64=False)
    out = api.text_to_image(RealtimeText2ImageSchema(prompt="a boat", enhance_prompt="no",
                                                     **small))
    assert out["status"] == "success", out
    assert image(out["output"][0]).shape == (64, 64, 3) and out["meta"]["model"] == "tiny-sd"
    assert api.fetch(str(out["id"]))["output"] == out["output"]
    i2i = api.image_to_image(RealtimeImage2ImageSchema(prompt="a boat", init_image=b64png(),
                                                       strength=0.5, enhance_prompt="no",
                                                       **small))
    assert i2i["status"] == "success", i2i
    assert image(i2i["output"][0]).shape == (64, 64, 3) and i2i["meta"]["strength"] == 0.5
