"""Model families: detected from the files (folders and single-file keys, never the name), and
tiny random-weight SDXL / SD3 / Flux models generating through the engine and two API shapes
(A1111 and OpenAI), on the local and the Modal-wiring backends."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from shared.engine import families
from shared.engine.tiny_families import TINY_FAMILIES, write_keys_checkpoint, write_tiny_family
from tests.engine.family_assets import INIT, MASK, alpha_mask, pixels, png, scheduler_variant
from tests.engine.family_assets import family_client as api_client

# Names say nothing of the family: detection must come from the files.
NAMES = {"sdxl": "model-a", "sdxl-refiner": "model-b", "sd3": "model-c", "flux-dev": "model-d",
         "flux-schnell": "model-e", "sd2-v": "model-f", "lcm": "model-g", "turbo": "model-h"}
GENERATING = ("sdxl", "sd3", "flux-dev", "flux-schnell")


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory, models_dir):
    """Every tiny family as a diffusers folder, plus SD1 variants told apart by their configs."""
    root = tmp_path_factory.mktemp("families")
    for kind in TINY_FAMILIES:
        write_tiny_family(kind, root / NAMES[kind])
    variants = {  # the tiny SD1 with another scheduler config
        "sd2-v": {"prediction_type": "v_prediction"},
        "lcm": {"_class_name": "LCMScheduler"},
        "turbo": {"_class_name": "EulerAncestralDiscreteScheduler",
                  "timestep_spacing": "trailing"},
    }
    for kind, change in variants.items():
        scheduler_variant(models_dir / "tiny-sd", root / NAMES[kind], change)
    return root


@pytest.fixture(scope="module")
def family_engine(family_dir):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    return Engine(ModelRegistry(family_dir, default=NAMES["sd3"]), max_loaded=2)


# -- detection -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, family, distilled", [
    ("sdxl", "sdxl", ""), ("sdxl-refiner", "sdxl-refiner", ""), ("sd3", "sd3", ""),
    ("flux-dev", "flux-dev", ""), ("flux-schnell", "flux-schnell", "schnell"),
    ("sd2-v", "sd2-v", ""), ("lcm", "sd1", "lcm"), ("turbo", "sd1", "turbo"),
])
def test_folders_are_detected_from_their_configs(family_dir, kind, family, distilled):
    found = families.detect(family_dir / NAMES[kind])
    assert (found.family, found.distilled) == (family, distilled)
    assert found.source.startswith("model_index")


def test_the_tiny_sd1_is_sd1(models_dir):
    assert families.detect(models_dir / "tiny-sd").family == "sd1"


@pytest.mark.parametrize("kind, family", [
    ("sd1", "sd1"), ("sd2", "sd2"), ("sdxl", "sdxl"), ("sdxl-refiner", "sdxl-refiner"),
    ("sd3", "sd3"), ("flux-dev", "flux-dev"), ("flux-schnell", "flux-schnell"),
])
def test_single_files_are_detected_by_diffusers_from_their_keys(tmp_path, kind, family):
    path = write_keys_checkpoint(kind, tmp_path / "checkpoint.safetensors")
    found = families.detect(path)
    assert found.family == family
    assert found.source.startswith("single-file")


def test_detection_reads_no_weights(tmp_path):
    """Only the safetensors header is read: a checkpoint whose tensor bytes are cut off (as if
    never read) is still detected."""
    path = write_keys_checkpoint("sdxl", tmp_path / "x.safetensors")
    data = path.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    path.write_bytes(data[:header])
    assert families.detect(path).family == "sdxl"


def test_unrecognised_files_are_listed_as_unknown_and_refused(tmp_path):
    from safetensors.torch import save_file
    import torch

    save_file({"something.else": torch.zeros(1)}, str(tmp_path / "odd.safetensors"))
    assert families.detect(tmp_path / "odd.safetensors").family == families.UNKNOWN
    with pytest.raises(families.Unsupported, match="not supported"):
        families.get(families.UNKNOWN)


def test_registry_gives_family_and_native_size(family_engine):
    reg = family_engine.registry
    info = {m.name: m for m in reg.models()}
    assert info[NAMES["sd3"]].family == "sd3"
    assert info[NAMES["flux-schnell"]].distilled == "schnell"
    # folder configs: sample size x VAE factor; Flux's transformer has none: the family's 1024
    assert reg.native_size(info[NAMES["sd3"]]) == 16 * 8
    assert reg.native_size(info[NAMES["flux-dev"]]) == 1024


# -- samplers ------------------------------------------------------------------------------------
def test_flow_families_map_a1111_samplers_or_refuse():
    from shared.errors import SamplerNotFound

    assert families.sampler_spec("sd3", "Euler", None) is None  # the model's own, shift kept
    assert families.sampler_spec("flux-dev", None, "automatic") is None
    spec = families.sampler_spec("sd3", "Euler a", None)
    assert spec.class_name == "FlowMatchEulerDiscreteScheduler"
    assert dict(spec.options) == {"stochastic_sampling": True}
    assert dict(families.sampler_spec("sd3", "Euler", "karras").options) == {
        "use_karras_sigmas": True}
    with pytest.raises(SamplerNotFound, match="flow-matching"):
        families.sampler_spec("flux-dev", "DPM++ 2M", None)
    with pytest.raises(SamplerNotFound, match="schedule type"):
        families.sampler_spec("sd3", "Euler", "align_your_steps")
    # CLIP families resolve as before
    assert families.sampler_spec("sdxl", "DPM++ 2M", "karras").class_name == \
        "DPMSolverMultistepScheduler"


# -- the engine ----------------------------------------------------------------------------------
def _request(kind: str, mode: str = "txt2img", **kw):
    from shared.generation import GenerationRequest

    extra = {"seed": 7, "prompt": "a red cat"}
    if mode != "txt2img":
        extra.update(init_image=png(INIT), strength=0.6)
    if mode == "inpaint":
        extra["mask"] = png(MASK)
    return GenerationRequest(**{"model": NAMES[kind], "width": 64, "height": 64, "steps": 2,
                                "mode": mode, **extra, **kw})


@pytest.mark.parametrize("kind", GENERATING)
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_each_family_generates_each_mode(family_engine, kind, mode):
    result = family_engine.generate(_request(kind, mode))
    image = result.images[0]
    assert (image.width, image.height) == (64, 64)
    a = pixels(image.data)
    if mode == "inpaint":  # outside the mask the init picture is kept
        outside = np.asarray(MASK) == 0
        assert np.abs(a[outside] - np.array(INIT.getpixel((0, 0)))).mean() < 25


def test_seeds_reproduce_and_differ(family_engine):
    a = family_engine.generate(_request("flux-dev")).images[0].data
    b = family_engine.generate(_request("flux-dev")).images[0].data
    c = family_engine.generate(_request("flux-dev", seed=8)).images[0].data
    assert pixels(a).tolist() == pixels(b).tolist()
    assert np.abs(pixels(a) - pixels(c)).mean() > 1


def test_subseed_variation_works_on_packed_flux_latents(family_engine):
    plain = pixels(family_engine.generate(_request("flux-schnell")).images[0].data)
    varied = pixels(family_engine.generate(
        _request("flux-schnell", subseed=3, subseed_strength=0.5)).images[0].data)
    assert np.abs(plain - varied).mean() > 0.5


def test_sd2_v_prediction_and_distilled_sd1_generate(family_engine):
    for kind in ("sd2-v", "lcm", "turbo"):
        loaded = family_engine.warm(NAMES[kind])
        pixels(family_engine.generate(_request(kind, sampler=None)).images[0].data)
    assert family_engine.warm(NAMES["sd2-v"]).pipe.scheduler.config.prediction_type == \
        "v_prediction"
    assert type(loaded.pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert loaded.pipe.scheduler.config.timestep_spacing == "trailing"


def test_the_refiner_refines_but_draws_nothing_from_text(family_engine):
    from shared.errors import Unsupported

    pixels(family_engine.generate(_request("sdxl-refiner", "img2img")).images[0].data)
    with pytest.raises(Unsupported, match="txt2img"):
        family_engine.generate(_request("sdxl-refiner"))


@pytest.mark.parametrize("kind, change, match", [
    ("sd3", {"prompt": "a (red:1.3) cat"}, "prompt weighting"),
    ("flux-dev", {"prompt": "a cat BREAK a dog"}, "prompt weighting"),
    ("sd3", {"prompt": "a [red:blue:1] cat"}, "prompt editing"),
    ("sd3", {"clip_skip": 2}, "clip skip"),
    ("flux-dev", {"negative_prompt": "blurry"}, "negative prompt"),
    ("sd3", {"eta": 0.5}, "eta"),
    ("flux-schnell", {"tiling": True}, "tiling"),
    ("sd3", {"sampler": "DPM++ 2M"}, "flow-matching"),
    ("sd3", {"prompt": "word " * 300}, "at most 256"),
])
def test_what_a_family_cannot_do_is_refused_clearly(family_engine, kind, change, match):
    from shared.errors import SdgateError, status_of

    with pytest.raises(SdgateError, match=match) as e:
        family_engine.generate(_request(kind, **change))
    assert 400 <= status_of(e.value) < 500


def test_t5_families_keep_escaped_brackets_as_text():
    assert families.FAMILIES["sd3"].prompt_weights is False
    from shared.engine.prompts import plain_text

    assert plain_text(r"a \(red\) cat", families.FAMILIES["sd3"]) == "a (red) cat"


def test_sd3_without_t5_generates(tmp_path):
    """T5 is optional for SD3: a folder saved without text_encoder_3 loads and draws."""
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry
    from shared.engine.tiny_families import build_sd3

    build_sd3(t5=False).save_pretrained(tmp_path / "no-t5", safe_serialization=True)
    eng = Engine(ModelRegistry(tmp_path), max_loaded=1)
    assert eng.registry.resolve("no-t5").family == "sd3"
    req = _request("sd3").model_copy(update={"model": "no-t5"})
    pixels(eng.generate(req).images[0].data)


# -- two API shapes, both backends ---------------------------------------------------------------
@pytest.fixture(params=["local", "remote"])
def family_client(request, family_dir, family_engine, make_settings, monkeypatch):
    with api_client(request.param, family_dir, family_engine, NAMES["sd3"], make_settings,
                    monkeypatch) as c:
        yield c


def test_a1111_lists_families(family_client):
    models = {m["model_name"]: m for m in family_client.get("/sdapi/v1/sd-models").json()}
    for kind in ("sdxl", "sd3", "flux-dev", "flux-schnell", "sdxl-refiner", "sd2-v"):
        assert models[NAMES[kind]]["family"] == kind
    assert models[NAMES["lcm"]]["distilled"] == "lcm"


@pytest.mark.parametrize("kind", ["sd3", "flux-dev"])
def test_a1111_txt2img_img2img_inpaint(family_client, kind):
    base = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 2, "seed": 3,
            "override_settings": {"sd_model_checkpoint": NAMES[kind]}}
    r = family_client.post("/sdapi/v1/txt2img", json=base)
    assert r.status_code == 200, r.text
    pixels(base64.b64decode(r.json()["images"][0]))
    assert json.loads(r.json()["info"])["sd_model_name"] == NAMES[kind]
    init = base64.b64encode(png(INIT)).decode()
    r = family_client.post("/sdapi/v1/img2img", json={**base, "init_images": [init],
                                                      "denoising_strength": 0.6})
    assert r.status_code == 200, r.text
    pixels(base64.b64decode(r.json()["images"][0]))
    r = family_client.post("/sdapi/v1/img2img", json={
        **base, "init_images": [init], "denoising_strength": 0.8,
        "mask": base64.b64encode(png(MASK)).decode()})
    assert r.status_code == 200, r.text
    out = pixels(base64.b64decode(r.json()["images"][0]))
    assert np.abs(out[np.asarray(MASK) == 0] - np.array((200, 40, 40))).mean() < 25


def test_a1111_refuses_in_its_own_error_shape(family_client):
    r = family_client.post("/sdapi/v1/txt2img", json={
        "prompt": "a (red:1.4) cat", "width": 64, "height": 64, "steps": 2,
        "override_settings": {"sd_model_checkpoint": NAMES["flux-dev"]}})
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    assert "prompt weighting" in body["detail"]


@pytest.mark.parametrize("kind", ["sd3", "flux-schnell", "sdxl"])
def test_openai_generations_and_edits(family_client, kind):
    r = family_client.post("/v1/images/generations", json={
        "model": NAMES[kind], "prompt": "a red cat", "size": "64x64",
        "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    pixels(base64.b64decode(r.json()["data"][0]["b64_json"]))
    r = family_client.post("/v1/images/edits", data={
        "model": NAMES[kind], "prompt": "a red cat", "size": "64x64",
        "response_format": "b64_json"}, files={
        "image": ("i.png", png(INIT), "image/png"),
        "mask": ("m.png", png(alpha_mask()), "image/png")})
    assert r.status_code == 200, r.text
    pixels(base64.b64decode(r.json()["data"][0]["b64_json"]))



def test_openai_refusal_in_its_own_shape(family_client):
    r = family_client.post("/v1/images/generations", json={
        "model": NAMES["flux-dev"], "prompt": "a ((red)) cat", "size": "64x64"})
    assert r.status_code == 400, r.text
    assert "prompt weighting" in r.json()["error"]["message"]


# -- the SDXL refiner (A1111 refiner_checkpoint / refiner_switch_at) -------------------------------
def test_the_refiner_finishes_what_the_base_began(family_engine):
    from shared.generation import Refiner

    plain = pixels(family_engine.generate(_request("sdxl", steps=4)).images[0].data)
    req = _request("sdxl", steps=4, refiner=Refiner(model=NAMES["sdxl-refiner"], switch_at=0.5))
    result = family_engine.generate(req)
    refined = pixels(result.images[0].data)
    assert refined.shape == plain.shape == (64, 64, 3)
    assert np.abs(refined - plain).mean() > 1  # the refiner's steps changed the picture
    assert "Refiner: model-b, Refiner switch at: 0.5" in result.images[0].infotext
    again = pixels(family_engine.generate(req).images[0].data)
    assert (again == refined).all()  # seeded end to end
    later = _request("sdxl", steps=4, refiner=Refiner(model=NAMES["sdxl-refiner"],
                                                      switch_at=0.75))
    assert np.abs(pixels(family_engine.generate(later).images[0].data) - refined).sum() > 0
    img2img = _request("sdxl", "img2img", steps=4,
                       refiner=Refiner(model=NAMES["sdxl-refiner"], switch_at=0.5))
    pixels(family_engine.generate(img2img).images[0].data)


def test_the_refiner_inpaints_inside_the_mask_only(family_engine):
    from shared.generation import Refiner

    plain = _request("sdxl", "inpaint", steps=4, strength=0.9)
    refined = plain.model_copy(update={"refiner": Refiner(model=NAMES["sdxl-refiner"],
                                                          switch_at=0.5)})
    a = pixels(family_engine.generate(plain).images[0].data)
    b = pixels(family_engine.generate(refined).images[0].data)
    outside = np.asarray(MASK) == 0
    assert np.abs(a - b)[~outside].mean() > 1  # the refiner's steps changed the masked part
    assert np.abs(b[outside] - np.array(INIT.getpixel((0, 0)))).mean() < 25  # not the rest


@pytest.mark.parametrize("kind, model, mode, match", [
    ("sdxl", "ghost", "txt2img", "ghost"),
    ("sd3", "sdxl-refiner", "txt2img", "SDXL"),
    ("sdxl", "sd3", "txt2img", "SDXL"),
])
def test_what_cannot_be_refined_is_refused(family_engine, kind, model, mode, match):
    from shared.errors import SdgateError, status_of
    from shared.generation import Refiner

    req = _request(kind, mode, refiner=Refiner(model=NAMES.get(model, model), switch_at=0.8))
    with pytest.raises(SdgateError, match=match) as e:
        family_engine.generate(req)
    assert 400 <= status_of(e.value) < 500


def test_a1111_refiner_checkpoint(family_client):
    base = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 4, "seed": 3,
            "override_settings": {"sd_model_checkpoint": NAMES["sdxl"]}}
    plain = family_client.post("/sdapi/v1/txt2img", json=base)
    refined = family_client.post("/sdapi/v1/txt2img", json={
        **base, "refiner_checkpoint": NAMES["sdxl-refiner"], "refiner_switch_at": 0.5})
    assert plain.status_code == refined.status_code == 200, refined.text
    a, b = (pixels(base64.b64decode(r.json()["images"][0])) for r in (plain, refined))
    assert a.shape == b.shape and np.abs(a - b).mean() > 1
    assert "Refiner switch at: 0.5" in refined.json()["info"]
    unchanged = family_client.post("/sdapi/v1/txt2img", json={
        **base, "refiner_checkpoint": "None", "refiner_switch_at": 0.5})
    assert (pixels(base64.b64decode(unchanged.json()["images"][0])) == a).all()
    r = family_client.post("/sdapi/v1/txt2img", json={**base, "refiner_checkpoint": "ghost",
                                                      "refiner_switch_at": 0.8})
    assert r.status_code == 404 and set(r.json()) == {"error", "detail", "body", "errors"}
    assert "ghost" in r.json()["detail"]
    r = family_client.post("/sdapi/v1/txt2img", json={**base,
                                                      "refiner_checkpoint": NAMES["sdxl-refiner"]})
    assert r.status_code == 422 and "refiner_switch_at" in r.text
