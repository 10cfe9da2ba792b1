"""Seed 003 request parsing, conversion and error bodies (pure: no engine, no HTTP)."""

from __future__ import annotations

import inspect

import pytest

from shared.dialects.modelslab import render
from shared.dialects.modelslab.protocol import (KARRAS_CAPABLE, Img2ImgRequest, InpaintRequest,
                                                Text2ImgRequest, parse)
from shared.dialects.modelslab.spam import SpamFilter
from shared.errors import (GenerationFailed, ModelNotFound, RateLimited, StorageFailed,
                           Unauthorized, Unsupported, ValidationFailed)
from shared.generation import Mode, NsfwAction, Variant


def test_numbers_as_strings_and_switches_as_yes_no():
    req = parse(Text2ImgRequest, {
        "prompt": "a cat", "width": "768", "height": "512", "samples": "4",
        "num_inference_steps": "31", "guidance_scale": "7.5", "seed": "42",
        "safety_checker": "no", "enhance_prompt": "no", "panorama": "yes", "base64": True,
        "clip_skip": "2", "track_id": 7})
    assert (req.width, req.height, req.samples, req.num_inference_steps) == (768, 512, 4, 31)
    assert req.guidance_scale == 7.5 and req.seed == 42 and req.clip_skip == 2
    assert req.safety_checker is False and req.enhance_prompt is False
    assert req.panorama is True and req.base64 is True


def test_null_and_empty_mean_upstream_default():
    req = parse(Text2ImgRequest, {"prompt": "a cat", "seed": None, "width": "",
                                  "negative_prompt": None, "webhook": None, "scheduler": "",
                                  "safety_checker": None, "enhance_prompt": ""})
    assert req.seed is None and req.width == 512 and req.negative_prompt == ""
    assert req.webhook is None and req.scheduler is None
    assert req.safety_checker is True and req.enhance_prompt is True  # upstream's defaults


def test_missing_prompt_gets_the_seed_validation_map():
    with pytest.raises(ValidationFailed) as e:
        parse(Text2ImgRequest, {"width": 512})
    assert render.error_body(e.value) == {
        "status": "error", "message": {"prompt": ["The prompt field is required."]}}


@pytest.mark.parametrize("field,value,message", [
    ("width", "2000", "The width must not be greater than 1024."),
    ("height", 0, "The height must be at least 8."),
    ("samples", "5", "The samples must not be greater than 4."),
    ("num_inference_steps", "abc", "The num inference steps must be an integer."),
    ("guidance_scale", 21, "The guidance scale must not be greater than 20."),
    ("safety_checker", "maybe", "The safety checker field must be yes or no."),
    ("safety_checker_type", "censor", "The selected safety checker type is invalid."),
])
def test_out_of_range_fields_use_upstream_wording(field, value, message):
    with pytest.raises(ValidationFailed) as e:
        parse(Text2ImgRequest, {"prompt": "a cat", field: value})
    assert render.error_body(e.value) == {"status": "error", "message": {field: [message]}}


def test_every_bad_field_is_listed():
    with pytest.raises(ValidationFailed) as e:
        parse(InpaintRequest, {"samples": 9})
    assert set(render.error_body(e.value)["message"]) == {
        "prompt", "samples", "init_image", "mask_image"}


def test_to_internal_maps_fields_and_fixes_a_random_seed():
    req = parse(Img2ImgRequest, {"prompt": "a cat", "negative_prompt": "dog", "width": "64",
                                 "height": "128", "samples": "2", "num_inference_steps": "3",
                                 "guidance_scale": "5", "strength": "0.5", "seed": None,
                                 "enhance_prompt": "no", "clip_skip": 2, "init_image": "x",
                                 "safety_checker_type": "blur"})
    internal = req.to_internal("tiny-sd", "suffix", init_image=b"png")
    assert internal.mode is Mode.img2img and internal.model == "tiny-sd"
    assert (internal.prompt, internal.negative_prompt) == ("a cat", "dog")
    assert (internal.width, internal.height, internal.num_images, internal.steps) == (64, 128, 2, 3)
    assert (internal.guidance, internal.strength, internal.clip_skip) == (5.0, 0.5, 2)
    assert internal.safety_checker is True and internal.safety_checker_type is NsfwAction.blur
    assert 0 <= internal.seed < 2**32  # fixed now, so a resumed job draws the same image


def test_enhance_prompt_appends_the_configured_terms():
    req = parse(Text2ImgRequest, {"prompt": "a cat"})
    assert req.to_internal(None, "best quality").prompt == "a cat, best quality"


@pytest.mark.parametrize("body,sampler,schedule", [
    ({}, None, None),
    ({"scheduler": "UniPCMultistepScheduler"}, "UniPCMultistepScheduler", "karras"),
    ({"scheduler": "UniPCMultistepScheduler", "use_karras_sigmas": "no"},
     "UniPCMultistepScheduler", None),
    ({"scheduler": "DDIMScheduler"}, "DDIMScheduler", None),  # no Karras sigmas there
    ({"scheduler": "DDPMScheduler"}, "DDPMScheduler", None),
    ({"scheduler": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"},
     "DPM++ 2M SDE", "karras"),
    ({"scheduler": "EulerDiscreteScheduler", "algorithm_type": "none"},
     "EulerDiscreteScheduler", "karras"),
])
def test_scheduler_fields_become_a_sampler(body, sampler, schedule):
    req = parse(Text2ImgRequest, {"prompt": "a cat", **body})
    assert req.sampler() == (sampler, schedule)


def test_unknown_scheduler_and_misplaced_algorithm_are_field_errors():
    for body, field in [({"scheduler": "FancyScheduler"}, "scheduler"),
                        ({"scheduler": "DDIMScheduler", "algorithm_type": "sde-dpmsolver++"},
                         "algorithm_type")]:
        with pytest.raises(ValidationFailed) as e:
            parse(Text2ImgRequest, {"prompt": "a cat", **body}).sampler()
        assert list(render.error_body(e.value)["message"]) == [field]


def test_karras_table_matches_diffusers():
    import diffusers

    from shared.engine.samplers import DIFFUSERS_CLASSES

    capable = {name for name in DIFFUSERS_CLASSES if "use_karras_sigmas"
               in inspect.signature(getattr(diffusers, name).__init__).parameters}
    assert capable == KARRAS_CAPABLE


def test_variants_and_refusals():
    req = parse(Text2ImgRequest, {"prompt": "a cat", "self_attention": "yes"})
    assert req.to_internal(None, "").variant is Variant.self_attention
    req = parse(Text2ImgRequest, {"prompt": "a cat", "multi_lingual": "yes", "upscale": "yes",
                                  "tomesd": "yes", "vae": "x", "panorama": "yes",
                                  "self_attention": "yes"})
    refused = {f.field for f in req.refusals()}
    assert refused == {"vae", "panorama"}  # upscale, multi_lingual: the router's
    img = parse(Img2ImgRequest, {"prompt": "a", "init_image": "x", "panorama": "yes"})
    assert [f.field for f in img.refusals()] == ["panorama"]


def test_tomesd_is_token_merging_on_unless_no():
    def internal(**kw):
        return parse(Text2ImgRequest, {"prompt": "a cat", **kw}).to_internal(None, "")

    unset, yes, no = internal(), internal(tomesd="yes"), internal(tomesd="no")
    assert (unset.token_merging_ratio, yes.token_merging_ratio, no.token_merging_ratio) == (
        0.5, 0.5, 0.0)  # tomesd.apply_patch's default ratio; upstream's default is "yes"
    assert unset.token_merging_random and yes.token_merging_random
    assert unset.token_merging_optional and not yes.token_merging_optional
    assert internal(tomesd="").token_merging_optional  # blank: the default, as every field


def test_error_bodies_are_the_seeds():
    assert render.error_body(Unauthorized("Invalid API key")) == {
        "status": "error", "message": "Invalid Api Key",
        "tip": "1. Make sure you are passing Content-Type: application/json in header. 2. Make "
               "sure you are doing POST request with valid JSON. 3. Make sure your JSON does not "
               "have error, use jsonlint to validate json array. 4. Make sure you have valid API "
               "key."}
    # a key's own limits say which limit; the spam filter's refusal is the seed's fixed body
    assert render.error_body(RateLimited("Concurrency limit: 2")) == {
        "status": "error", "message": "Concurrency limit: 2"}
    assert render.error_body(RateLimited("Rate limit exceeded")) == {
        "status": "error", "message": "Rate limit exceeded",
        "tips": "you are sending same request multiple times, spam filter is enabled, please "
                "wait for 30 seconds and try again"}
    assert render.error_body(ModelNotFound("x")) == {"status": "error",
                                                     "message": "Model id not found"}
    failed = {"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}
    assert render.error_body(GenerationFailed("boom")) == failed
    assert render.error_body(StorageFailed("bucket down")) == failed
    assert render.error_body(Unsupported("no", param="upscale")) == {
        "status": "error", "message": {"upscale": ["no"]}}


def test_spam_filter_refuses_the_same_body_within_the_window():
    spam = SpamFilter(30)
    body = {"key": "k", "prompt": "a cat"}
    spam.check(body, now=100.0)
    with pytest.raises(RateLimited):
        spam.check(dict(reversed(body.items())), now=110.0)  # key order does not matter
    spam.check({"key": "other", "prompt": "a cat"}, now=110.0)  # another key is another request
    spam.check({"key": "k", "prompt": "a dog"}, now=110.0)
    spam.check(body, now=131.0)  # the window has passed
    SpamFilter(0).check(body) or SpamFilter(0).check(body)  # 0 turns it off


@pytest.mark.parametrize("body,expected", [
    ({"lora_model": "more_details"}, [("more_details", 1.0)]),
    ({"lora_model": "more_details, anime", "lora_strength": "0.6"},
     [("more_details", 0.6), ("anime", 0.6)]),
    ({"lora_model": "a,b", "lora_strength": "0.5,0.9"}, [("a", 0.5), ("b", 0.9)]),
    ({"lora_model": "a", "lora_strength": 0.7}, [("a", 0.7)]),
    ({"lora_model": None, "lora_strength": "0.7"}, []),
])
def test_lora_model_becomes_lora_refs(body, expected):
    req = parse(Text2ImgRequest, {"prompt": "a cat", **body})
    assert [(r.name, r.weight) for r in req.to_internal(None, "").loras] == expected


@pytest.mark.parametrize("strength", ["0.5,0.6,0.7", "strong", "50"])
def test_bad_lora_strength_is_a_field_error(strength):
    req = parse(Text2ImgRequest, {"prompt": "a", "lora_model": "a,b", "lora_strength": strength})
    with pytest.raises(ValidationFailed) as e:
        req.loras()
    assert list(render.error_body(e.value)["message"]) == ["lora_strength"]
