"""Every field of ModelsLab's documented request bodies is handled: named in docs/modelslab.md, and
either changes the engine request when sent with a non-default value, or is refused naming the
field, or is one of the job / ignored fields listed here with the test that covers it.

The field lists are rebuilt from upstream's documents: docs.modelslab.com's openapi files and
example bodies (ModelsLab/docs-v2: image-generation/community-models/openapi.json for
/api/v6/images/{text2img,img2img,inpaint,fetch}, the inpaint example's `steps`,
image-generation/controlnet/openapi.json for /api/v5/controlnet, image-editing/openapi.json for
/api/v6/image_editing/super_resolution, model-operation for model_list, the realtime pages'
`instant_response` / `enhance_style`), and the stablediffusionapi.com v3 / v4 pages (seed 003).
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from shared.dialects.modelslab.controlnet import ControlNetRequest
from shared.dialects.modelslab.protocol import (Img2ImgRequest, InpaintRequest, Text2ImgRequest,
                                                parse, refuse)
from shared.dialects.modelslab.render import error_body, status
from shared.dialects.modelslab.superres import SuperResolutionRequest
from shared.errors import SdgateError, ValidationFailed
from shared.images import b64decode_strict

DOCS = (Path(__file__).parents[1] / "docs" / "modelslab.md").read_text()


def documented(field: str) -> bool:
    """The field is named in the docs as `field` or `field: value`."""
    return re.search(rf"`{re.escape(field)}[`:]", DOCS) is not None

# -- upstream's documented fields, per body ------------------------------------------------------
V3_TEXT2IMG = ["key", "prompt", "negative_prompt", "width", "height", "samples",
               "num_inference_steps", "guidance_scale", "seed", "safety_checker",
               "safety_checker_type", "enhance_prompt", "multi_lingual", "panorama",
               "self_attention", "upscale", "embeddings_model", "webhook", "track_id", "base64"]
V4_EXTRA = ["model_id", "lora_model", "lora_strength", "scheduler", "use_karras_sigmas",
            "algorithm_type", "vae", "clip_skip", "tomesd"]
V6_TEXT2IMG = ["key", "model_id", "prompt", "negative_prompt", "enhance_prompt", "width",
               "height", "samples", "num_inference_steps", "safety_checker",
               "safety_checker_type", "seed", "guidance_scale", "use_karras_sigmas",
               "algorithm_type", "vae", "lora_strength", "lora_model", "clip_skip", "base64",
               "temp", "webhook", "track_id", "ip_adapter_id", "ip_adapter_scale",
               "ip_adapter_image", "scheduler", "multi_lingual", "upscale", "highres_fix",
               # the realtime / flux pages of the same docs
               "instant_response", "enhance_style"]
IMG2IMG_EXTRA = ["init_image", "strength"]
INPAINT_EXTRA = ["init_image", "mask_image", "strength", "steps"]  # `steps`: v6 inpaint example
CONTROLNET = ["key", "model_id", "controlnet_model", "controlnet_type", "auto_hint",
              "guess_mode", "prompt", "negative_prompt", "init_image", "control_image",
              "mask_image", "width", "height", "samples", "scheduler", "tomesd",
              "use_karras_sigmas", "algorithm_type", "vae", "lora_strength", "lora_model",
              "num_inference_steps", "safety_checker", "ip_adapter_id", "ip_adapter_scale",
              "ip_adapter_image", "enhance_prompt", "controlnet_conditioning_scale", "strength",
              "guidance_scale", "seed", "webhook", "track_id", "upscale", "clip_skip", "base64",
              "temp"]
SUPER_RESOLUTION = ["key", "init_image", "url", "model_id", "scale", "face_enhance", "webhook",
                    "track_id", "base64"]
FETCH = ["key", "request_id"]

BODIES = {
    "text2img": (Text2ImgRequest, V3_TEXT2IMG + V4_EXTRA + V6_TEXT2IMG),
    "img2img": (Img2ImgRequest, V3_TEXT2IMG + V4_EXTRA + V6_TEXT2IMG + IMG2IMG_EXTRA),
    "inpaint": (InpaintRequest, V3_TEXT2IMG + V4_EXTRA + V6_TEXT2IMG + INPAINT_EXTRA),
    "controlnet": (ControlNetRequest, CONTROLNET),
}

# Fields that do not reach the engine request, and where they are proven.
NOT_ENGINE = {
    "key": "tests/test_modelslab_clients.py::test_key_in_a_header_or_the_query",
    "webhook": "tests/test_modelslab_webhooks.py",
    "track_id": "tests/test_modelslab_webhooks.py",
    "base64": "tests/test_modelslab_api.py (base64 output)",
    "instant_response": "tests/api/test_modelslab_v6_fields.py::test_instant_response_*",
    "multi_lingual": "tests/api/test_modelslab_translate.py (the dialect translates)",
    "embeddings_model": "must be installed (test_embeddings_model_must_be_installed, and the "
                        "refusal over HTTP in tests/api/test_modelslab_v6_fields.py); "
                        "textual inversions apply where their name is in the prompt",
    "temp": "ignored: upstream's 24-hour link storage, no effect on the picture",
}
def png_b64(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


INIT, OTHER, MASK = png_b64((200, 30, 30)), png_b64((30, 200, 30)), png_b64((255, 255, 255))
# field -> (non-default value, companion fields both sides carry)
SAMPLES = {
    "prompt": ("another prompt", {}),
    "negative_prompt": ("blurry", {}),
    "width": ("256", {}), "height": ("256", {}), "samples": ("2", {}),
    "num_inference_steps": ("7", {}), "steps": ("7", {}), "guidance_scale": ("3", {}),
    "seed": ("99", {}), "safety_checker": ("no", {}), "safety_checker_type": ("blur", {}),
    "enhance_prompt": ("no", {}), "panorama": ("yes", {}), "self_attention": ("yes", {}),
    "upscale": ("yes", {}), "model_id": ("another-model", {}),
    "lora_model": ("more_details", {}),
    "lora_strength": ("0.5", {"lora_model": "more_details"}),
    "scheduler": ("EulerDiscreteScheduler", {}),
    "use_karras_sigmas": ("no", {"scheduler": "EulerDiscreteScheduler"}),
    "algorithm_type": ("dpmsolver+++", {"scheduler": "DPMSolverMultistepScheduler"}),
    "clip_skip": ("2", {}),
    "ip_adapter_image": (INIT, {}),
    "ip_adapter_id": ("tiny-ip-adapter", {"ip_adapter_image": INIT}),
    "ip_adapter_scale": ("0.5", {"ip_adapter_image": INIT}),
    "init_image": (OTHER, {}), "mask_image": (OTHER, {}), "strength": ("0.3", {}),
    # ControlNet
    "controlnet_model": ("tiny-cn-file", {}),
    "controlnet_type": ("tile", {"auto_hint": "yes", "controlnet_type": "canny"}),
    "auto_hint": ("yes", {"controlnet_type": "canny"}),
    "guess_mode": ("yes", {}), "control_image": (OTHER, {}),
    "controlnet_conditioning_scale": ("0.5", {}),
    # refused
    "tomesd": ("no", {}),  # unset is upstream's "yes"
    "vae": ("some-vae", {}), "highres_fix": ("yes", {}),
    "enhance_style": ("cinematic", {}),
}
BASE = {"prompt": "a house", "seed": 1, "init_image": INIT, "mask_image": MASK,
        "controlnet_model": "tiny-cn"}
REFUSED = {"vae", "highres_fix", "enhance_style"}
TXT2IMG_ONLY = {"panorama", "self_attention"}  # refused on img2img, inpaint and ControlNet


def base_for(model) -> dict:
    return {k: v for k, v in BASE.items() if k in model.model_fields}


def to_internal(model, body: dict, root: Path):
    """What the dialect does with a body, without HTTP or engine: parse, refusals, images
    decoded, the upscaler named when upscale is yes."""
    req = parse(model, body)
    refuse(req.refusals())
    images = {name: b64decode_strict(value, field)
              for name, (field, value) in req.image_inputs().items()}
    return req.to_internal(req.model_id, "best quality", "R-ESRGAN 4x+" if req.upscale else None,
                           root=root, **images)


def cases():
    for route, (model, fields) in BODIES.items():
        for field in dict.fromkeys(fields):
            yield pytest.param(route, model, field, id=f"{route}-{field}")


@pytest.fixture(scope="module")
def root(models_dir, controlnet_models, ip_adapter_models) -> Path:
    return models_dir


@pytest.mark.parametrize("route,model,field", list(cases()))
def test_documented_field_is_handled(route, model, field, root):
    assert documented(field), f"docs/modelslab.md does not name {field}"
    if field in NOT_ENGINE:
        return
    assert field in SAMPLES, f"no sample value for {field}: add one, or list it in NOT_ENGINE"
    value, companions = SAMPLES[field]
    before = {**base_for(model), **companions}
    after = {**before, field: value}
    refused = field in REFUSED or (model is not Text2ImgRequest and field in TXT2IMG_ONLY)
    if refused:
        with pytest.raises(SdgateError) as e:
            to_internal(model, after, root)
        names = {f.field for f in e.value.fields} | {e.value.param}
        body = error_body(e.value)
        assert field in names and body["status"] == "error" and field in body["message"]
        assert status(e.value) == 400  # a 4xx, upstream's code for a parameter it cannot take
        return
    a = to_internal(model, before, root).model_dump()
    b = to_internal(model, after, root).model_dump()
    changed = {k for k in a if a[k] != b[k]}
    assert changed, f"{route}: {field}={value!r} reached nothing in the engine request"


def test_super_resolution_fields_reach_the_upscale():
    img = b64decode_strict(INIT, "init_image")
    base = SuperResolutionRequest.model_validate({"init_image": INIT})
    assert base.scale == 3 and base.model_id == "realesr-general-x4v3"
    for field in SUPER_RESOLUTION:
        assert documented(field), field
    up = SuperResolutionRequest.model_validate({"init_image": INIT, "scale": "2",
                                                "model_id": "RealESRGAN_x4plus"})
    assert (up.to_upscale(img).scale, up.to_upscale(img).upscaler_1) == (2.0, "RealESRGAN_x4plus")
    assert base.face_restore(img) is None
    assert SuperResolutionRequest.model_validate(
        {"init_image": INIT, "face_enhance": True}).face_restore(img) is not None
    assert SuperResolutionRequest.model_validate({"url": INIT}).image_ref() == ("url", INIT)


def test_fetch_and_model_list_fields_are_documented():
    for field in FETCH:
        assert documented(field), field


def test_embeddings_model_must_be_installed():
    req = parse(Text2ImgRequest, {"prompt": "x", "embeddings_model": "easynegative,missing"})
    req.check_embeddings({"easynegative": Path("e.pt"), "missing": Path("m.pt")})
    with pytest.raises(ValidationFailed) as e:
        req.check_embeddings({"easynegative": Path("e.pt")})
    assert error_body(e.value)["message"]["embeddings_model"][0].startswith(
        "The embeddings model 'missing' is not installed")
