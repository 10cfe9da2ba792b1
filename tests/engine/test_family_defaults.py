"""Step-distilled (and flow-matching) models run with their model card's steps, guidance and
scheduler when the client leaves them unset, on the engine and through A1111, OpenAI and
ModelsLab; what the client sends is kept; the response and the infotext say what ran."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from shared.engine import families
from shared.generation import GenerationRequest, Mode
from shared.infotext import parse_infotext
from tests.engine.family_assets import family_client, pixels, png, scheduler_variant

# Names say nothing of the kind: defaults come from the detected family / scheduler config.
NAMES = {"schnell": "m-one", "flux-dev": "m-two", "turbo": "m-three", "lightning": "m-four",
         "lcm": "m-five"}
SCHEDULERS = {  # the tiny SD1 with a distilled model's scheduler config
    "turbo": {"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing"},
    "lightning": {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing"},
    "lcm": {"_class_name": "LCMScheduler"},
}


@pytest.fixture(scope="module")
def defaults_dir(tmp_path_factory, models_dir):
    from shared.engine.tiny_families import write_tiny_family

    root = tmp_path_factory.mktemp("distilled")
    write_tiny_family("flux-schnell", root / NAMES["schnell"])
    write_tiny_family("flux-dev", root / NAMES["flux-dev"])
    for kind, change in SCHEDULERS.items():
        scheduler_variant(models_dir / "tiny-sd", root / NAMES[kind], change)
    return root


@pytest.fixture(scope="module")
def defaults_engine(defaults_dir):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    return Engine(ModelRegistry(defaults_dir, default=NAMES["turbo"]), max_loaded=5)


class _Calls:
    """Counts denoiser forward calls (one per step: no CFG batch is split)."""

    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1


def _denoiser(loaded):
    return getattr(loaded.pipe, "unet", None) or loaded.pipe.transformer


# -- detection and the table ---------------------------------------------------------------------
@pytest.mark.parametrize("kind, distilled", [("schnell", "schnell"), ("turbo", "turbo"),
                                             ("lightning", "trailing"), ("lcm", "lcm")])
def test_distilled_kind_comes_from_the_configs(defaults_dir, kind, distilled):
    assert families.detect(defaults_dir / NAMES[kind]).distilled == distilled


def test_model_defaults_follow_the_model_cards():
    assert families.model_defaults("flux-schnell", "schnell") == {
        "steps": 4, "guidance": 0.0, "sampler": None}
    assert families.model_defaults("sdxl", "turbo")["steps"] == 1  # SDXL-Turbo: 1 step, cfg 0
    assert families.model_defaults("sdxl", "trailing")["steps"] == 4  # Lightning / Hyper 4-step
    assert families.model_defaults("sd1", "lcm") == {"steps": 4, "guidance": 1.0,
                                                     "sampler": None}
    assert families.model_defaults("flux-dev")["guidance"] == 3.5  # the family's own
    assert families.model_defaults("sd1") is None  # the API shape's own defaults stay
    assert families.model_defaults("sdxl") is None


def test_only_unset_fields_take_the_models_defaults():
    unset = GenerationRequest(prompt="x")
    assert set(unset.defaulted) == {"steps", "guidance", "sampler"}
    out, applied = families.apply_defaults(unset, "flux-schnell", "schnell")
    assert (out.steps, out.guidance, out.sampler, applied) == (4, 0.0, None,
                                                               ["steps", "guidance", "sampler"])
    assert out.extra_params["Model defaults"] == "schnell: steps, CFG scale, sampler"
    given = GenerationRequest(prompt="x", steps=9, guidance=2.0, sampler="Euler a")
    out, applied = families.apply_defaults(given, "sd1", "turbo")
    assert (out.steps, out.guidance, out.sampler, applied) == (9, 2.0, "Euler a", [])
    out, _ = families.apply_defaults(GenerationRequest(prompt="x"), "sd1", "")
    assert (out.steps, out.guidance) == (20, 7.0)  # not distilled: untouched
    # img2img keeps one denoising step: Turbo's card says 2 steps at strength 0.5
    img = GenerationRequest(prompt="x", mode=Mode.img2img, init_image=b"x", strength=0.5)
    assert families.apply_defaults(img, "sdxl", "turbo")[0].steps == 2


def test_defaulted_survives_the_trip_to_the_gpu_tier():
    import pickle

    req = GenerationRequest(prompt="x", steps=3)
    again = GenerationRequest.model_validate(json.loads(req.model_dump_json()))
    assert again.defaulted == ["guidance", "sampler"] == pickle.loads(pickle.dumps(req)).defaulted


# -- the engine ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, steps, guidance, scheduler", [
    ("schnell", 4, 0.0, "FlowMatchEulerDiscreteScheduler"),
    ("turbo", 1, 0.0, "EulerAncestralDiscreteScheduler"),
    ("lightning", 4, 0.0, "EulerDiscreteScheduler"),
    ("lcm", 4, 1.0, "LCMScheduler"),
])
def test_engine_runs_the_cards_steps_when_unset(defaults_engine, kind, steps, guidance,
                                                scheduler):
    loaded = defaults_engine.warm(NAMES[kind])
    calls = _Calls(_denoiser(loaded))
    try:
        result = defaults_engine.generate(GenerationRequest(
            model=NAMES[kind], prompt="a red cat", width=64, height=64, seed=5))
    finally:
        calls.handle.remove()
    assert calls.n == steps  # guidance <= 1: no classifier-free guidance batch either
    assert (result.steps, result.guidance, result.sampler) == (steps, guidance, scheduler)
    assert set(result.model_defaults) == {"steps", "guidance", "sampler"}
    image = result.images[0]
    pixels(image.data)
    params = parse_infotext(image.infotext)
    assert (params["Steps"], float(params["CFG scale"]), params["Sampler"]) == (
        str(steps), guidance, scheduler)
    assert params["Model defaults"].startswith(families.detect(loaded.info.path).distilled)
    # the scheduler that ran keeps the model's own spacing
    if kind in ("turbo", "lightning"):
        assert loaded.pipe.scheduler.config.timestep_spacing == "trailing"


def test_what_the_client_sends_wins(defaults_engine):
    loaded = defaults_engine.warm(NAMES["turbo"])
    calls = _Calls(loaded.pipe.unet)
    try:
        result = defaults_engine.generate(GenerationRequest(
            model=NAMES["turbo"], prompt="a red cat", width=64, height=64, seed=5, steps=3,
            guidance=0.0))
    finally:
        calls.handle.remove()
    assert calls.n == 3 and result.steps == 3 and result.model_defaults == ["sampler"]


def test_flux_dev_takes_its_guidance_when_unset(defaults_engine):
    result = defaults_engine.generate(GenerationRequest(
        model=NAMES["flux-dev"], prompt="a red cat", width=64, height=64, seed=5, steps=2))
    assert (result.steps, result.guidance) == (2, 3.5)  # steps sent, guidance the family's
    assert parse_infotext(result.images[0].infotext)["CFG scale"] == "3.5"


def test_turbo_img2img_keeps_a_denoising_step(defaults_engine):
    init = png(Image.new("RGB", (64, 64), (200, 40, 40)))
    result = defaults_engine.generate(GenerationRequest(
        model=NAMES["turbo"], prompt="a red cat", width=64, height=64, seed=5,
        mode=Mode.img2img, init_image=init, strength=0.5))
    assert result.steps == 2
    pixels(result.images[0].data)


# -- API shapes ----------------------------------------------------------------------------------
@pytest.fixture(params=["local", "remote"])
def defaults_client(request, defaults_dir, defaults_engine, make_settings, monkeypatch):
    with family_client(request.param, defaults_dir, defaults_engine, NAMES["turbo"],
                       make_settings, monkeypatch) as c:
        yield c


def test_a1111_unset_steps_and_cfg_take_the_cards(defaults_client):
    base = {"prompt": "a red cat", "width": 64, "height": 64, "seed": 3,
            "override_settings": {"sd_model_checkpoint": NAMES["schnell"]}}
    r = defaults_client.post("/sdapi/v1/txt2img", json=base)
    assert r.status_code == 200, r.text
    body = r.json()
    pixels(base64.b64decode(body["images"][0]))
    info = json.loads(body["info"])
    assert (info["steps"], info["cfg_scale"]) == (4, 0.0)
    assert (body["parameters"]["steps"], body["parameters"]["cfg_scale"]) == (4, 0.0)
    assert "Steps: 4," in info["infotexts"][0]
    # sent values are kept (A1111's own 50-step default is not "sent")
    r = defaults_client.post("/sdapi/v1/txt2img", json={**base, "steps": 2, "cfg_scale": 0})
    info = json.loads(r.json()["info"])
    assert (info["steps"], info["cfg_scale"]) == (2, 0.0)
    assert parse_infotext(info["infotexts"][0])["Model defaults"] == "schnell: sampler"


def test_a1111_on_an_sd1_model_keeps_upstreams_defaults():
    """Not distilled: an A1111 request without steps still runs upstream's 50 steps / cfg 7."""
    from shared.dialects.a1111 import serving
    from shared.dialects.a1111.protocol import Txt2ImgRequest
    from shared.dialects.base import validate

    req = serving.to_internal(validate(Txt2ImgRequest, {"prompt": "x", "steps": None}), {})
    assert set(req.defaulted) == {"steps", "guidance", "sampler"}
    out, applied = families.apply_defaults(req, "sd1", "")
    assert (out.steps, out.guidance, out.sampler, applied) == (50, 7.0, "Euler", [])
    sent = serving.to_internal(validate(Txt2ImgRequest, {"steps": 8, "sampler_index": "DDIM"}),
                               {})
    assert sent.defaulted == ["guidance"]


def test_a1111_turbo_img2img_with_unset_steps(defaults_client):
    init = base64.b64encode(png(Image.new("RGB", (64, 64), (200, 40, 40)))).decode()
    r = defaults_client.post("/sdapi/v1/img2img", json={
        "prompt": "a red cat", "width": 64, "height": 64, "seed": 3, "init_images": [init],
        "denoising_strength": 0.5,
        "override_settings": {"sd_model_checkpoint": NAMES["turbo"]}})
    assert r.status_code == 200, r.text
    pixels(base64.b64decode(r.json()["images"][0]))
    assert json.loads(r.json()["info"])["steps"] == 2


def test_openai_generation_on_schnell_runs_four_steps(defaults_client):
    r = defaults_client.post("/v1/images/generations", json={
        "model": NAMES["schnell"], "prompt": "a red cat", "size": "64x64",
        "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    data = base64.b64decode(r.json()["data"][0]["b64_json"])
    pixels(data)
    params = parse_infotext(Image.open(io.BytesIO(data)).info["parameters"])
    assert (params["Steps"], params["CFG scale"]) == ("4", "0.0")


def test_modelslab_blank_steps_take_the_cards(defaults_client):
    r = defaults_client.post("/api/v4/dreambooth", json={
        "key": "", "model_id": NAMES["turbo"], "prompt": "a red cat", "width": 64,
        "height": 64, "num_inference_steps": "", "guidance_scale": None, "seed": 4})
    out = r.json()
    assert out["status"] == "success", out
    assert (out["meta"]["steps"], out["meta"]["guidance_scale"]) == (1, 0.0)
    png = defaults_client.get(out["output"][0].replace("http://testserver", ""))
    pixels(png.content)
