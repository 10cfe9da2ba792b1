"""Real clients against a live server: the unmodified `webuiapi` library, and seed 001's example
request sent through the gateway prefix with a Bearer key."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

KEY = "sk-gateway-key"

# Seed 001's request body, verbatim except `model`: the tiny model stands in for
# majicmixRealistic_v7, which this machine does not have.
SEED_001 = {
    "model": "tiny-sd",
    "sampler_name": "DPM++ 2M SDE Karras",
    "prompt": "((dark theme)), (best quality:1.2), High quality texture, intricate details, "
              "detailed texture, High quality shadow, perspective, ((ultra-detailed)), "
              "distinct_image, (lustrous skin) ((black skirt)), high heel shoes, black pantyhose,"
              " street, brown eye pupil, 20s, blush, glossy lips, perfect body, lean body, "
              "(narrow waist:1.3), large breast, solo focus, ((brown hair)), (streaked hair), "
              "((long hair)), (big eyes:1.2) (masterpiece), (highly detailed CG illustration), "
              "perspective, depth of field",
    "negative_prompt": "(((stocking, hat, glove, choker, collar, nail polish, necklace))), "
                       ",paintings, sketches, (worst quality:2), (low quality:2), (normal "
                       "quality:2), lowres, normal quality, ((monochrome)), ((grayscale)), skin "
                       "spots, acnes, skin blemishes, age spot,extra fingers,fewer fingers",
    "steps": 40,
    "cfg_scale": 7,
    "width": 720,
    "height": 960,
}

# The keys of `parameters` and `info` in seed 001's response example (A1111 v1.7).
SEED_PARAMETERS = {
    "prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength",
    "seed_resize_from_h", "seed_resize_from_w", "sampler_name", "batch_size", "n_iter", "steps",
    "cfg_scale", "width", "height", "restore_faces", "tiling", "do_not_save_samples",
    "do_not_save_grid", "eta", "denoising_strength", "s_min_uncond", "s_churn", "s_tmax",
    "s_tmin", "s_noise", "override_settings", "override_settings_restore_afterwards",
    "refiner_checkpoint", "refiner_switch_at", "disable_extra_networks", "comments",
    "enable_hr", "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler",
    "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name",
    "hr_sampler_name", "hr_prompt", "hr_negative_prompt", "sampler_index", "script_name",
    "script_args", "send_images", "save_images", "alwayson_scripts"}
SEED_INFO = {
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds",
    "subseed", "all_subseeds", "subseed_strength", "width", "height", "sampler_name",
    "cfg_scale", "steps", "batch_size", "restore_faces", "face_restoration_model",
    "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash", "seed_resize_from_w",
    "seed_resize_from_h", "denoising_strength", "extra_generation_params",
    "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
    "is_using_inpainting_conditioning", "version"}


# The seed's full-size example (720x960, 40 steps) takes most of a minute on a CPU: it runs on
# the local backend; the Modal wiring serves the same routes in every other remote test.
@pytest.mark.parametrize("make_app", ["local"], indirect=True)
def test_seed_001_example_through_the_gateway_prefix(live_server):
    base = live_server(api_keys=KEY)
    url = f"{base}/v1/sdapi/v1/txt2img"
    assert httpx.post(url, json=SEED_001, timeout=60).status_code == 401  # no key
    r = httpx.post(url, json=SEED_001, headers={"Authorization": f"Bearer {KEY}"}, timeout=600)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert SEED_PARAMETERS <= set(body["parameters"])
    assert body["parameters"]["sampler_name"] == "DPM++ 2M SDE Karras"
    assert body["parameters"]["seed"] == -1  # echoed as sent, as upstream
    info = json.loads(body["info"])
    assert SEED_INFO == set(info)
    assert info["sd_model_name"] == "tiny-sd" and info["steps"] == 40
    assert info["all_seeds"] == [info["seed"]] and 0 <= info["seed"] < 4294967294
    img = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert img.format == "PNG" and img.size == (720, 960)
    text = img.info["parameters"]
    assert text == info["infotexts"][0]
    assert text.startswith(SEED_001["prompt"] + "\nNegative prompt: " +
                           SEED_001["negative_prompt"] + "\nSteps: 40, Sampler: DPM++ 2M SDE "
                           "Karras, CFG scale: 7.0, Seed: ")
    # The `parameters` chunk reads back through png-info.
    back = httpx.post(f"{base}/v1/sdapi/v1/png-info", json={"image": body["images"][0]},
                      headers={"Authorization": f"Bearer {KEY}"}).json()
    assert back["info"] == text
    p = back["parameters"]
    assert (p["Prompt"], p["Negative prompt"]) == (SEED_001["prompt"], SEED_001["negative_prompt"])
    assert (p["Steps"], p["Sampler"], p["Seed"]) == ("40", "DPM++ 2M SDE Karras",
                                                    str(info["seed"]))
    assert (p["Size-1"], p["Size-2"], p["Model"]) == ("720", "960", "tiny-sd")


# -- the unmodified webuiapi client --------------------------------------------------------------
@pytest.fixture
def api(live_server):
    import webuiapi

    base = live_server(api_keys=KEY)
    port = int(base.rsplit(":", 1)[1])
    # A1111's --api-auth is HTTP Basic; sdgate takes the key as the password.
    client = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=3)
    client.set_auth("anyone", KEY)
    return client


def test_webuiapi_reads_models_samplers_options(api):
    models = api.get_sd_models()
    assert any(m["model_name"] == "tiny-sd" for m in models)
    assert any(t.startswith("tiny-sd [") for t in api.util_get_model_names())
    assert "DPM++ 2M SDE" in api.util_get_sampler_names()
    assert "karras" in api.util_get_scheduler_names()
    assert api.get_options()["sd_model_checkpoint"].startswith("tiny-sd [")
    assert api.util_get_current_model().startswith("tiny-sd")
    api.util_set_model("tiny-sd")
    assert api.get_progress()["state"]["job_count"] == 0


def test_webuiapi_txt2img_img2img_inpaint(api):
    r = api.txt2img(prompt="a (red:1.2) cat", negative_prompt="dog", seed=11, width=64,
                    height=64, batch_size=2)
    assert len(r.images) == 2 and r.images[0].size == (64, 64)
    assert r.info["all_seeds"] == [11, 12]
    assert r.parameters["prompt"] == "a (red:1.2) cat"
    assert "Sampler: Euler a" in r.images[0].info["parameters"]

    i2i = api.img2img(images=[r.image], prompt="a dog", width=64, height=64,
                      denoising_strength=0.6, seed=3)
    assert len(i2i.images) == 1 and i2i.images[0].size == (64, 64)
    assert "Denoising strength: 0.6" in i2i.info["infotexts"][0]

    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    inpainted = api.img2img(images=[r.image], mask_image=mask, prompt="a hat", width=64,
                            height=64, denoising_strength=0.9, inpainting_fill=1)
    out = inpainted.images[0].convert("RGB")
    assert out.size == (64, 64)
    src = r.image.convert("RGB")
    assert out.getpixel((2, 2)) == src.getpixel((2, 2))  # outside the mask: untouched
    assert "Masked content: original" in inpainted.info["infotexts"][0]

    back = api.png_info(r.image)
    assert back.info == r.info["infotexts"][0]
    assert back.parameters["Seed"] == "11"


def test_webuiapi_at_the_gateway_prefix_with_a_bearer_key(live_server):
    import webuiapi

    base = live_server(api_keys=KEY)
    client = webuiapi.WebUIApi(baseurl=f"{base}/v1/sdapi/v1", sampler="Euler", steps=2)
    client.session.headers["Authorization"] = f"Bearer {KEY}"
    r = client.txt2img(prompt="a cat", width=64, height=64, seed=1)
    assert r.image.size == (64, 64) and r.info["all_seeds"] == [1]
