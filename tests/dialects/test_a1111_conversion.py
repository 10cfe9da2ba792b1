"""The A1111 dialect without a server: request models, to_internal, rendering, error envelope."""

from __future__ import annotations

import json

import pytest

from shared.dialects.a1111 import serving
from shared.dialects.a1111.protocol import Img2ImgRequest, Txt2ImgRequest
from shared.dialects.base import validate
from shared.errors import (FieldError, GenerationFailed, SamplerNotFound, Unsupported,
                           ValidationFailed)
from shared.generation import (GeneratedImage, GenerationResult, HiresFix, Mode,
                               OutputFormat)


def t2i(**kw) -> Txt2ImgRequest:
    return validate(Txt2ImgRequest, kw)


def internal(req, options=None, **kw):
    return serving.to_internal(req, options or {}, **kw)


# -- request models ------------------------------------------------------------------------------
def test_upstream_defaults():
    req = t2i()
    assert (req.steps, req.cfg_scale, req.width, req.height, req.seed, req.sampler_index) == \
        (50, 7.0, 512, 512, -1, "Euler")
    assert req.hr_scale == 2.0 and req.denoising_strength is None and req.send_images
    i2i = validate(Img2ImgRequest, {})
    assert i2i.denoising_strength == 0.75 and i2i.inpaint_full_res and i2i.blur() == (4, 4)


def test_null_means_default_and_extra_fields_are_accepted():
    req = t2i(steps=None, width=None, tiling=None, some_extension_field={"x": 1})
    assert req.steps == 50 and req.width == 512 and req.tiling is None
    assert req.model_extra == {"some_extension_field": {"x": 1}}


@pytest.mark.parametrize("field, value", [("width", 63), ("height", 30), ("steps", 0),
                                          ("steps", 151), ("batch_size", 0), ("cfg_scale", 31),
                                          ("width", 4096)])
def test_out_of_range_fields_fail_validation(field, value):
    with pytest.raises(ValidationFailed) as e:
        t2i(**{field: value})
    assert e.value.fields[0].field == field


def test_too_many_images():
    with pytest.raises(ValidationFailed, match="at most 64"):
        t2i(batch_size=8, n_iter=9)


# -- to_internal ---------------------------------------------------------------------------------
def test_basic_mapping():
    req = t2i(prompt="a (cat:1.2)", negative_prompt="dog", steps=12, cfg_scale=5, width=64,
              height=96, seed=3, subseed=9, subseed_strength=0.2, batch_size=2, n_iter=3,
              sampler_name="DPM++ 2M", scheduler="Karras", tiling=True, eta=0.3,
              force_task_id="job-1", seed_resize_from_w=32, seed_resize_from_h=48)
    g = internal(req)
    assert (g.prompt, g.negative_prompt, g.steps, g.guidance, g.width, g.height) == \
        ("a (cat:1.2)", "dog", 12, 5.0, 64, 96)
    assert (g.seed, g.subseed, g.subseed_strength) == (3, 9, 0.2)
    assert (g.num_images, g.batch_size) == (6, 2)
    assert (g.sampler, g.scheduler, g.tiling, g.eta) == ("DPM++ 2M", "karras", True, 0.3)
    assert g.task_id == "job-1" and g.seed_resize_from == (32, 48)
    assert g.mode is Mode.txt2img and g.hires is None


def test_sampler_defaults_to_euler_and_sampler_index_is_the_old_alias():
    assert internal(t2i()).sampler == "Euler"
    assert internal(t2i(sampler_index="DDIM")).sampler == "DDIM"
    assert internal(t2i(sampler_index="DDIM", sampler_name="LMS")).sampler == "LMS"


def test_random_subseed_is_resolved_like_upstream():
    g = internal(t2i())
    assert 0 <= g.subseed < 4294967294


@pytest.mark.parametrize("value, name", [("SGM Uniform", "sgm_uniform"), ("karras", "karras"),
                                         ("Automatic", "automatic"), (None, None)])
def test_schedule_names_and_labels(value, name):
    assert serving.schedule_name(value) == name


def test_model_precedence():
    opts = {"sd_model_checkpoint": "from-options [abc]"}
    assert internal(t2i(), opts).model == "from-options [abc]"
    assert internal(t2i(model="gateway-model"), opts).model == "gateway-model"
    over = t2i(model="gateway-model", override_settings={"sd_model_checkpoint": "override"})
    assert internal(over, opts).model == "override"


def test_override_settings():
    g = internal(t2i(override_settings={"CLIP_stop_at_last_layers": 2, "samples_format": "jpg",
                                        "sd_vae": "Automatic", "unrelated_option": 1}))
    assert g.clip_skip == 2 and g.output_format is OutputFormat.jpeg
    assert internal(t2i(), {"CLIP_stop_at_last_layers": 3}).clip_skip == 3
    with pytest.raises(Unsupported, match="sd_vae"):
        internal(t2i(override_settings={"sd_vae": "kl-f8-anime.ckpt"}))
    with pytest.raises(ValidationFailed, match="samples_format"):
        internal(t2i(override_settings={"samples_format": "tiff"}))


@pytest.mark.parametrize("kw, size", [
    ({}, (256, 192)),
    ({"hr_scale": 1.5}, (192, 144)),
    ({"hr_resize_x": 512}, (512, 384)),
    ({"hr_resize_y": 384}, (512, 384)),
    ({"hr_resize_x": 200, "hr_resize_y": 200}, (200, 200)),
])
def test_hires_target_size(kw, size):
    g = internal(t2i(width=128, height=96, enable_hr=True, **kw))
    assert (g.hires.width, g.hires.height) == size


def test_hires_fields():
    g = internal(t2i(width=64, height=64, enable_hr=True, hr_second_pass_steps=5,
                     denoising_strength=0.4, hr_upscaler="Lanczos", hr_sampler_name="DDIM",
                     hr_prompt="sharp", hr_negative_prompt="blur"))
    assert g.hires == HiresFix(width=128, height=128, steps=5, strength=0.4, upscaler="Lanczos",
                               sampler="DDIM", prompt="sharp", negative_prompt="blur")
    default = internal(t2i(width=64, height=64, enable_hr=True)).hires
    assert (default.strength, default.upscaler, default.steps) == (0.7, "Latent", None)


def test_old_firstphase_hires_api():
    g = internal(t2i(width=128, height=128, enable_hr=True, firstphase_width=64,
                     firstphase_height=64))
    assert (g.width, g.height, g.hires.width, g.hires.height) == (64, 64, 128, 128)


def test_client_neutral_values_pass():
    """What webuiapi sends by default must not trip the refusals."""
    internal(t2i(s_churn=0, s_tmax=0, s_tmin=0, s_noise=1, eta=1.0, restore_faces=False,
                 styles=[], alwayson_scripts={}, script_args=[], hr_upscaler="Latent",
                 hr_checkpoint_name=None, seed_resize_from_h=0, seed_resize_from_w=0))


@pytest.mark.parametrize("kw, cls, match", [
    ({"styles": ["cinematic"]}, Unsupported, "styles"),
    ({"script_name": "x/y/z plot"}, ValidationFailed, "Script 'x/y/z plot' not found"),
    ({"alwayson_scripts": {"Dynamic Prompts": {"args": []}}}, ValidationFailed,
     "Dynamic Prompts not found"),
    ({"s_churn": 0.5}, Unsupported, "s_churn"),
    ({"refiner_checkpoint": "sdxl_refiner"}, ValidationFailed, "refiner_switch_at"),
    ({"refiner_checkpoint": "sdxl_refiner", "refiner_switch_at": 0}, ValidationFailed,
     "above 0"),
    ({"firstpass_image": "abc"}, Unsupported, "firstpass_image"),
    ({"enable_hr": True, "hr_checkpoint_name": "other"}, Unsupported, "hr_checkpoint_name"),
])
def test_features_without_weights_are_refused(kw, cls, match):
    with pytest.raises(cls, match=match):
        internal(t2i(**kw))


def test_refiner_mapping():
    g = internal(t2i(refiner_checkpoint="sdxl_refiner", refiner_switch_at=0.8))
    assert (g.refiner.model, g.refiner.switch_at) == ("sdxl_refiner", 0.8)
    assert internal(t2i(refiner_checkpoint="sdxl_refiner", refiner_switch_at=1)).refiner is None
    assert internal(t2i(refiner_checkpoint="None", refiner_switch_at=0.8)).refiner is None


def test_img2img_mapping():
    req = validate(Img2ImgRequest, {"init_images": ["x"], "denoising_strength": 0.4,
                                    "resize_mode": 2, "mask_blur": 6, "inpainting_fill": 3,
                                    "inpainting_mask_invert": 1, "inpaint_full_res": False})
    g = internal(req, init=b"img", mask=b"mask")
    assert g.mode is Mode.inpaint and (g.init_image, g.mask) == (b"img", b"mask")
    assert (g.strength, g.resize_mode, g.mask_blur, g.inpainting_fill) == (0.4, 2, (6, 6), 3)
    assert g.mask_invert and not g.inpaint_full_res
    plain = internal(validate(Img2ImgRequest, {"init_images": ["x"]}), init=b"img")
    assert plain.mode is Mode.img2img and plain.strength == 0.75


def test_img2img_refusals():
    with pytest.raises(Unsupported, match="subseed"):
        internal(validate(Img2ImgRequest, {"subseed_strength": 0.3}), init=b"i")
    with pytest.raises(Unsupported, match="initial_noise_multiplier"):
        internal(validate(Img2ImgRequest, {"initial_noise_multiplier": 1.1}), init=b"i")
    with pytest.raises(ValidationFailed, match="init_images"):
        serving.checked_init_images(validate(Img2ImgRequest, {}))
    with pytest.raises(Exception, match="one init image"):
        serving.checked_init_images(validate(Img2ImgRequest, {"init_images": ["a", "b"]}))


def test_disable_extra_networks_strips_tags():
    g = internal(t2i(prompt="a <lora:style:1> cat", disable_extra_networks=True))
    assert g.prompt == "a  cat"


def test_infotext_field_fills_what_the_request_left_out():
    text = "a cat\nNegative prompt: dog\nSteps: 9, Sampler: DDIM, CFG scale: 4.5, Seed: 42, " \
           "Size: 64x96, Clip skip: 2"
    data = serving.apply_infotext({"infotext": text, "steps": 3})
    req = t2i(**data)
    assert (req.prompt, req.negative_prompt, req.steps, req.sampler_name, req.seed) == \
        ("a cat", "dog", 3, "DDIM", 42)
    assert (req.width, req.height, req.cfg_scale) == (64, 96, 4.5)
    assert internal(req).clip_skip == 2


# -- rendering -----------------------------------------------------------------------------------
INFO_KEYS = {"prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed",
             "all_seeds", "subseed", "all_subseeds", "subseed_strength", "width", "height",
             "sampler_name", "cfg_scale", "steps", "batch_size", "restore_faces",
             "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name",
             "sd_vae_hash", "seed_resize_from_w", "seed_resize_from_h", "denoising_strength",
             "extra_generation_params", "index_of_first_image", "infotexts", "styles",
             "job_timestamp", "clip_skip", "is_using_inpainting_conditioning", "version"}


def fake_result(n=2) -> GenerationResult:
    imgs = [GeneratedImage(seed=10 + i, subseed=20 + i, data=b"\x89PNG", width=64, height=64,
                           url=f"http://x/{i}.png",
                           infotext=f"p\nSteps: 3, Sampler: Euler, Seed: {10 + i}, Tiling: True")
            for i in range(n)]
    return GenerationResult(images=imgs, model="tiny-sd", seed=10, subseed=20,
                            model_hash="abc")


def test_render_shape_and_info_keys():
    req = t2i(prompt="p", batch_size=2, width=64, height=64)
    g = internal(req)
    body = serving.render(req, g, fake_result(), urls=False)
    assert set(body) == {"images", "parameters", "info"}
    assert body["images"] == ["iVBORw==", "iVBORw=="]
    info = json.loads(body["info"])
    assert set(info) == INFO_KEYS
    assert info["all_seeds"] == [10, 11] and info["all_subseeds"] == [20, 21]
    assert info["sd_model_name"] == "tiny-sd" and info["sd_model_hash"] == "abc"
    assert info["extra_generation_params"] == {"Tiling": "True"}
    assert serving.render(req, g, fake_result(), urls=True)["images"][1] == "http://x/1.png"
    assert serving.render(t2i(send_images=False), g, fake_result(), urls=False)["images"] == []


def test_parameters_echo_upstream_fields_only():
    params = serving.parameters(t2i(model="tiny-sd", response_format="url", foo=1))
    assert "model" not in params and "response_format" not in params and "foo" not in params
    assert params["sampler_index"] == "Euler" and params["hr_scale"] == 2.0
    i2i = validate(Img2ImgRequest, {"init_images": ["abc"], "mask": "m"})
    echoed = serving.parameters(i2i)
    assert echoed["init_images"] is None and echoed["mask"] is None
    assert echoed["include_init_images"] is False  # upstream's vars(img2imgreq) keeps it
    kept = validate(Img2ImgRequest, {"init_images": ["abc"], "include_init_images": True})
    assert serving.parameters(kept)["init_images"] == ["abc"]


def test_error_envelopes():
    v = serving.render_error(ValidationFailed("steps: too big", fields=[
        FieldError("steps", "too big")]))
    assert v.status_code == 422
    body = json.loads(v.body)
    assert body["error"] == "RequestValidationError" and set(body) == {"error", "detail",
                                                                       "body", "errors"}
    assert body["detail"][0]["loc"] == ["body", "steps"]
    s = serving.render_error(SamplerNotFound("Sampler not found: 'x'"))
    assert s.status_code == 404
    assert json.loads(s.body) == {"error": "HTTPException", "detail": "Sampler not found: 'x'",
                                  "body": "", "errors": "404: Sampler not found: 'x'"}
    g = serving.render_error(GenerationFailed("boom"))
    assert g.status_code == 500 and json.loads(g.body)["error"] == "GenerationFailed"


def test_png_info_parses_sizes():
    from PIL import Image

    img = Image.new("RGB", (4, 4))
    img.info["parameters"] = "a cat\nSteps: 40, Sampler: Euler, Seed: 1, Size: 720x960"
    img.info["extra"] = "x"
    out = serving.png_info(img)
    assert out["info"].startswith("a cat")
    assert out["items"] == {"extra": "x"}
    p = out["parameters"]
    assert (p["Prompt"], p["Steps"], p["Size-1"], p["Size-2"], p["Clip skip"]) == \
        ("a cat", "40", "720", "960", "1")


@pytest.mark.parametrize("options,overrides,first,hr", [
    ({}, {}, 0.0, None),
    ({"token_merging_ratio": 0.5}, {}, 0.5, None),  # hires: None = the first pass's
    ({"token_merging_ratio": 0.5}, {"token_merging_ratio_hr": 0.2}, 0.5, 0.2),
    ({}, {"token_merging_ratio_hr": 0.3}, 0.0, 0.3),
])
def test_token_merging_ratios_for_txt2img_and_hires(options, overrides, first, hr):
    req = t2i(enable_hr=True, hr_scale=2, override_settings=overrides)
    out = internal(req, options)
    assert (out.token_merging_ratio, out.hires.token_merging_ratio) == (first, hr)
    assert not out.token_merging_random  # upstream calls tomesd with use_rand=False


@pytest.mark.parametrize("options,overrides,ratio", [
    ({"token_merging_ratio": 0.5}, {}, 0.5),  # img2img's own 0: txt2img's
    ({"token_merging_ratio": 0.5, "token_merging_ratio_img2img": 0.3}, {}, 0.3),
    ({"token_merging_ratio_img2img": 0.3}, {"token_merging_ratio": 0.6}, 0.6),  # override wins
    ({"token_merging_ratio_img2img": 0.3}, {"token_merging_ratio": 0}, 0.3),  # 0 falls through
])
def test_token_merging_ratio_for_img2img(options, overrides, ratio):
    req = validate(Img2ImgRequest, {"prompt": "x", "init_images": ["x"],
                                    "override_settings": overrides})
    init = b"\x89PNG"
    assert serving.to_internal(req, options, init=init).token_merging_ratio == ratio


def test_infotext_token_merging_fills_override_settings():
    text = "a cat\nSteps: 3, Seed: 1, Size: 64x64, Token merging ratio: 0.5, " \
           "Token merging ratio hr: 0.3"
    out = serving.apply_infotext({"infotext": text,
                                  "override_settings": {"token_merging_ratio_hr": 0.1}})
    assert out["override_settings"] == {"token_merging_ratio": 0.5,
                                        "token_merging_ratio_hr": 0.1}  # the request's wins
    with pytest.raises(ValidationFailed):
        serving.apply_infotext({"infotext": "a\nSteps: 3, Seed: 1, Token merging ratio: x"})
