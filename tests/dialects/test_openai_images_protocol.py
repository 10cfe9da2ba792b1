"""OpenAI Images dialect, pure: sizes, model names, field translation, masks, error envelope."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from shared.dialects.openai_images.masks import edit_mask
from shared.dialects.openai_images.protocol import (EDIT_STRENGTH, QUALITY_STEPS,
                                                    VARIATION_STRENGTH, ImageEditRequest,
                                                    ImageGenerateRequest, ImageVariationRequest,
                                                    fit_size, parse_size, sdgate_model)
from shared.dialects.openai_images.router import render_error
from shared.errors import (GenerationFailed, InvalidRequest, ModelNotFound, PayloadTooLarge,
                           RateLimited, Unauthorized, Unsupported, ValidationFailed)
from shared.generation import GenerationRequest, Mode, OutputFormat


@pytest.mark.parametrize("name", [None, "", "dall-e-2", "dall-e-3", "DALL-E-3", "gpt-image-1",
                                  "gpt-image-2.5-flare", "chatgpt-image-latest"])
def test_openai_model_names_mean_the_default_model(name):
    assert sdgate_model(name) is None


def test_other_model_names_pass_through_to_the_registry():
    assert sdgate_model(" tiny-sd ") == "tiny-sd"
    assert sdgate_model("dall-e") == "dall-e"  # not an OpenAI name: the registry decides


@pytest.mark.parametrize("model,given,want", [
    (None, None, "url"), ("dall-e-3", None, "url"), ("tiny-sd", None, "url"),
    ("gpt-image-1", None, "b64_json"), ("chatgpt-image-latest", None, "b64_json"),
    ("gpt-image-1", "url", "url"), ("dall-e-2", "b64_json", "b64_json"),
])
def test_response_format_default_follows_the_model(model, given, want):
    req = ImageGenerateRequest(prompt="x", model=model, response_format=given)
    assert req.response_kind() == want


@pytest.mark.parametrize("size,want", [
    (None, (512, 512)), ("auto", (512, 512)), ("", (512, 512)), ("256x256", (256, 256)),
    ("1024x1024", (1024, 1024)), ("1792x1024", (1792, 1024)), ("1024x1536", (1024, 1536)),
    ("64x72", (64, 72)), (" 640 X 480 ", (640, 480)),
])
def test_sizes(size, want):
    assert parse_size(size, (512, 512)) == want


@pytest.mark.parametrize("size", ["100x100", "512x500", "32x32", "4096x4096", "big", "512",
                                  "-64x64", "512x512x3"])
def test_bad_sizes_name_the_field(size):
    with pytest.raises(ValidationFailed) as e:
        parse_size(size, (512, 512))
    assert e.value.param == "size" and size.strip() in e.value.message


def test_input_image_sizes_are_made_valid():
    assert fit_size(512, 512) == (512, 512)
    assert fit_size(4000, 3000) == (2048, 1536)
    assert fit_size(30, 30) == (64, 64)
    assert fit_size(513, 511) == (512, 512)


def test_generation_translation():
    req = ImageGenerateRequest(prompt="a cat", model="dall-e-3", n=3, size="1024x768",
                               quality="hd", style="vivid", output_format="webp", user="u1")
    internal = req.to_internal(native=512)
    assert internal.mode is Mode.txt2img and internal.model is None
    assert (internal.width, internal.height, internal.num_images) == (1024, 768, 3)
    assert internal.steps == QUALITY_STEPS["hd"]
    assert internal.output_format is OutputFormat.webp


@pytest.mark.parametrize("quality", [None, "auto", "standard", "medium"])
def test_default_qualities_keep_the_default_steps(quality):
    req = ImageGenerateRequest(prompt="x", quality=quality)
    assert req.to_internal(512).steps == GenerationRequest(prompt="x").steps


def test_omitted_fields_give_one_native_png():
    internal = ImageGenerateRequest(prompt="x", model="tiny-sd").to_internal(native=768)
    assert (internal.width, internal.height, internal.num_images) == (768, 768, 1)
    assert internal.model == "tiny-sd" and internal.output_format is OutputFormat.png


def test_generations_and_edits_stream():
    internal = ImageGenerateRequest(prompt="x", stream=True, partial_images=2).to_internal(512)
    assert internal.partial_images == 2
    edit = ImageEditRequest(prompt="x", model="gpt-image-1", stream=True, partial_images=1)
    internal = edit.to_internal(b"png", None, (64, 64))
    assert internal.partial_images == 1 and internal.mode is Mode.img2img
    assert (ImageGenerateRequest.events, ImageEditRequest.events) == ("image_generation",
                                                                      "image_edit")
    for cls in (ImageGenerateRequest, ImageEditRequest):
        with pytest.raises(ValidationFailed) as e:  # previews without a stream to send them on
            cls(prompt="x", partial_images=2).refuse_unsupported()
        assert e.value.param == "partial_images"


@pytest.mark.parametrize("fields,param", [
    ({"frame_count": 9}, "frame_count"), ({"frame_duration_ms": 100}, "frame_duration_ms"),
    ({"svg": {"model": "m"}}, "svg"), ({"svg[model]": "m"}, "svg"),  # multipart spelling
])
def test_gif_and_svg_options_are_refused(fields, param):
    for cls in (ImageGenerateRequest, ImageEditRequest):
        with pytest.raises(Unsupported) as e:
            cls(prompt="x", **fields).refuse_unsupported()
        assert e.value.param == param


@pytest.mark.parametrize("fields,want", [
    ({}, {"quality": "medium", "safety_identifier": None}),
    ({"quality": "hd", "user": "u"}, {"quality": "high", "safety_identifier": "u"}),
    ({"quality": "low", "user": "u", "safety_identifier": "s"},
     {"quality": "low", "safety_identifier": "s"}),
    ({"user": "u", "safety_identifier": ""}, {"quality": "medium", "safety_identifier": "u"}),
])
def test_the_answer_echoes_quality_and_the_end_user(fields, want):
    assert ImageGenerateRequest(prompt="x", **fields).echo() == want
    assert ImageVariationRequest(user="u").echo() == {"quality": "medium",
                                                      "safety_identifier": "u"}


@pytest.mark.parametrize("fields,param", [
    ({"background": "transparent"}, "background"), ({"output_format": "gif"}, "output_format"),
    ({"output_format": "svg"}, "output_format"),
])
def test_what_sdgate_cannot_do_is_refused(fields, param):
    with pytest.raises(Unsupported) as e:
        ImageGenerateRequest(prompt="x", **fields).to_internal(512)
    assert e.value.param == param


def test_accepted_options_without_effect_do_not_fail():
    req = ImageGenerateRequest(prompt="x", background="opaque", moderation="low", stream=False,
                               partial_images=0, output_compression=50, complexity="low",
                               safety_identifier="h")
    assert req.to_internal(512).prompt == "x"


def test_edit_translation_uses_the_image_size_and_repaints_fully():
    internal = ImageEditRequest(prompt="a hat", n=2).to_internal(b"img", b"mask", (640, 480))
    assert internal.mode is Mode.inpaint and internal.strength == EDIT_STRENGTH
    assert (internal.width, internal.height) == (640, 480)
    assert internal.init_image == b"img" and internal.mask == b"mask"
    assert internal.num_images == 2


def test_variation_is_img2img_with_an_empty_prompt():
    internal = ImageVariationRequest(size="256x256").to_internal(b"img", (640, 480))
    assert internal.mode is Mode.img2img and internal.prompt == ""
    assert internal.strength == VARIATION_STRENGTH
    assert (internal.width, internal.height) == (256, 256)


# -- masks --------------------------------------------------------------------------------------

def _mask_pixels(png: bytes):
    img = Image.open(io.BytesIO(png))
    assert img.mode == "L"
    return img


def _rgba(size=(16, 16), hole=(4, 4, 12, 12), hole_alpha=0):
    img = Image.new("RGBA", size, (10, 20, 30, 255))
    img.paste((0, 0, 0, hole_alpha), hole)
    return img


def test_transparent_mask_pixels_become_white():
    out = _mask_pixels(edit_mask(Image.new("RGB", (16, 16)), _rgba()))
    assert out.getpixel((8, 8)) == 255 and out.getpixel((0, 0)) == 0


def test_only_fully_transparent_pixels_are_edited():
    with pytest.raises(InvalidRequest, match="nothing to edit"):
        edit_mask(Image.new("RGB", (16, 16)), _rgba(hole_alpha=10))


def test_mask_without_alpha_is_white_means_repaint():
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))
    out = _mask_pixels(edit_mask(Image.new("RGB", (16, 16)), mask))
    assert out.getpixel((2, 2)) == 255 and out.getpixel((12, 2)) == 0


def test_opaque_rgba_mask_is_read_as_black_and_white():
    mask = Image.new("RGBA", (16, 16), (0, 0, 0, 255))
    mask.paste((255, 255, 255, 255), (8, 0, 16, 16))
    out = _mask_pixels(edit_mask(Image.new("RGB", (16, 16)), mask))
    assert out.getpixel((12, 2)) == 255 and out.getpixel((2, 2)) == 0


def test_without_a_mask_the_images_own_alpha_is_used():
    out = _mask_pixels(edit_mask(_rgba(), None))
    assert out.getpixel((8, 8)) == 255 and out.getpixel((0, 0)) == 0


def test_without_mask_or_transparency_the_edit_is_refused():
    with pytest.raises(InvalidRequest) as e:
        edit_mask(Image.new("RGB", (16, 16)), None)
    assert e.value.param == "mask" and "no transparent pixels" in e.value.message


def test_mask_must_match_the_image_size():
    with pytest.raises(InvalidRequest, match="same size"):
        edit_mask(Image.new("RGB", (16, 16)), _rgba(size=(32, 32)))


def test_a_mask_marking_nothing_is_refused():
    with pytest.raises(InvalidRequest, match="nothing to edit"):
        edit_mask(Image.new("RGB", (16, 16)), Image.new("L", (16, 16), 0))


# -- error envelope -----------------------------------------------------------------------------

@pytest.mark.parametrize("err,status,kind,code", [
    (ValidationFailed("n too big", param="n"), 400, "invalid_request_error", "invalid_value"),
    (Unsupported("no", param="stream"), 400, "invalid_request_error", "unsupported_value"),
    (Unauthorized("Invalid API key"), 401, "invalid_request_error", "invalid_api_key"),
    (ModelNotFound("nope", param="model"), 404, "invalid_request_error", "model_not_found"),
    (PayloadTooLarge("big"), 413, "invalid_request_error", "payload_too_large"),
    (RateLimited("slow down"), 429, "requests", "rate_limit_exceeded"),
    (GenerationFailed("boom"), 500, "server_error", "generation_failed"),
])
def test_errors_render_in_openais_envelope(err, status, kind, code):
    resp = render_error(err)
    body = json.loads(resp.body)
    assert resp.status_code == status
    assert body == {"error": {"message": err.message, "type": kind, "param": err.param,
                              "code": code}}
