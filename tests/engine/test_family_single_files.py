"""Single-file checkpoints: SD3 and Flux holding the transformer only, and SD 1.x / SD 2.x /
SDXL all-in-one files in the original LDM / SGM layout (A1111 and Civitai checkpoints), the rest
from the family's configs folder as `sdgate pull --configs` fills it. Each is detected from its
keys, loaded with diffusers' from_single_file offline, and draws the pixels of the same weights
saved as a folder, through the engine, A1111 and OpenAI."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from shared.engine import families
from shared.engine.tiny_families import write_single_file, write_tiny_family
from shared.engine.tiny_ldm import LDM_KINDS, write_ldm_single_file
from shared.generation import GenerationRequest, Mode
from tests.engine.family_assets import INIT, MASK, alpha_mask, family_client, pixels, png

KINDS = ("sd3", "flux-dev", "flux-schnell", "sd1", "sd2", "sdxl")
FILE = {"sd3": "file-a", "flux-dev": "file-b", "flux-schnell": "file-c", "sd1": "file-d",
        "sdxl": "file-e", "sd2": "file-f"}
FOLDER = {"sd3": "dir-a", "flux-dev": "dir-b", "flux-schnell": "dir-c", "sd1": "dir-d",
          "sdxl": "dir-e", "sd2": "dir-f"}
TYPE = {"sd1": "v1", "sd2": "v2", "sdxl": "xl_base"}  # diffusers' single-file type


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    for kind in KINDS:
        if kind in LDM_KINDS:  # the same pipeline as one file and as a folder
            write_ldm_single_file(kind, root, FILE[kind], folder=root / FOLDER[kind])
            continue
        write_single_file(kind, root, FILE[kind])
        write_tiny_family(kind, root / FOLDER[kind])  # the same seed-0 weights, as a folder
    return root


@pytest.fixture(scope="module")
def single_engine(single_dir):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    return Engine(ModelRegistry(single_dir, default=FILE["sd3"]), max_loaded=len(KINDS) * 2)




def test_diffusers_configs_repos_agree():
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS

    for kind, repo in families.CONFIG_REPOS.items():
        assert DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind]["pretrained_model_name_or_path"] == repo


def test_sd3_original_keys_round_trip_through_diffusers_converter():
    import torch
    from diffusers.loaders.single_file_utils import (
        convert_sd3_transformer_checkpoint_to_diffusers)

    from shared.engine.tiny_families import build_sd3, sd3_original_keys

    sd = build_sd3(t5=False).transformer.state_dict()
    original = sd3_original_keys(sd)
    assert all(k.startswith("model.diffusion_model.joint_blocks.") or "." in k for k in original)
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def _same(back: dict, sd: dict):
    """Two state dicts with the same keys and bitwise equal tensors."""
    import torch

    assert set(back) == set(sd), sorted(set(back) ^ set(sd))[:5]
    assert all(torch.equal(back[k], sd[k]) for k in sd)


@pytest.mark.parametrize("kind", LDM_KINDS)
def test_ldm_original_keys_round_trip_through_diffusers_converters(kind):
    """The all-in-one file's UNet, VAE and text encoders, read back by the converters
    diffusers' from_single_file uses, are exactly the pipeline's state dicts."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint,
                                                     convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint,
                                                     convert_open_clip_checkpoint,
                                                     infer_diffusers_model_type)

    from shared.engine import tiny_ldm

    pipe = tiny_ldm.LDM_BUILDERS[kind]()
    ckpt = tiny_ldm.original_checkpoint(pipe)
    assert infer_diffusers_model_type(ckpt) == TYPE[kind]
    assert {k.split(".")[0] for k in ckpt} == (
        {"model", "first_stage_model", "conditioner"} if kind == "sdxl"
        else {"model", "first_stage_model", "cond_stage_model"})
    _same(convert_ldm_unet_checkpoint(dict(ckpt), pipe.unet.config), pipe.unet.state_dict())
    _same(convert_ldm_vae_checkpoint(dict(ckpt), pipe.vae.config), pipe.vae.state_dict())
    if kind == "sd2":  # OpenCLIP-H, read into a CLIPTextModel; its text_projection is unused
        assert ckpt[tiny_ldm.SD2_OPEN_CLIP + "text_projection"].shape == (1024, 1024)
        clip = convert_open_clip_checkpoint(pipe.text_encoder, dict(ckpt),
                                            prefix=tiny_ldm.SD2_OPEN_CLIP)
    else:
        clip = convert_ldm_clip_checkpoint(dict(ckpt))  # transformers 5 flattens CLIPTextModel
    _same({k.removeprefix("text_model."): v for k, v in clip.items()},
          pipe.text_encoder.state_dict())
    if kind == "sdxl":
        _same(convert_open_clip_checkpoint(pipe.text_encoder_2, dict(ckpt),
                                           prefix=tiny_ldm.SDXL_OPEN_CLIP),
              pipe.text_encoder_2.state_dict())


@pytest.mark.parametrize("kind", KINDS)
def test_single_files_are_detected_with_their_configs_repo(single_dir, kind):
    found = families.detect(single_dir / f"{FILE[kind]}.safetensors")
    assert found.family == kind and found.source.startswith("single-file")
    assert found.config_repo == families.CONFIG_REPOS[TYPE.get(kind, kind)]
    assert ("diffusers keys" in found.source) == kind.startswith("flux")
    assert found.distilled == ("schnell" if kind == "flux-schnell" else "")
    if kind in TYPE:
        assert found.source == f"single-file {TYPE[kind]}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_single_file_draws_what_the_folder_draws(single_engine, kind, mode):
    def run(name):
        extra = {}
        if mode != "txt2img":
            extra.update(init_image=png(INIT), strength=0.6)
        if mode == "inpaint":
            extra["mask"] = png(MASK)
        return single_engine.generate(GenerationRequest(
            model=name, prompt="a red cat", width=64, height=64, steps=2, seed=9,
            mode=Mode(mode), **extra)).images[0].data

    one = pixels(run(FILE[kind]))
    assert single_engine.warm(FILE[kind]).info.single_file
    other = pixels(run(FOLDER[kind]))
    if kind in LDM_KINDS:
        # the weights are bitwise the folder's (test below); a tensor's memory alignment (the
        # folder's are mmapped at odd offsets) picks another BLAS kernel, which can round one
        # pixel level apart here and there
        assert np.abs(one - other).max() <= 1 and (one != other).mean() < 0.005
    else:
        assert np.array_equal(one, other)  # the transformer is the file's


def test_the_transformer_comes_from_the_file(single_engine, single_dir):
    """The configs folder has no transformer weights; the loaded one equals the file's."""
    import torch
    from safetensors.torch import load_file

    cfg = single_dir / "configs" / families.CONFIG_REPOS["flux-dev"] / "transformer"
    assert not list(cfg.glob("*.safetensors"))
    loaded = single_engine.warm(FILE["flux-dev"]).pipe.transformer.state_dict()
    stored = load_file(str(single_dir / f"{FILE['flux-dev']}.safetensors"))
    assert all(torch.equal(loaded[k].float(), stored[k].float()) for k in stored)


@pytest.mark.parametrize("kind", LDM_KINDS)
def test_all_in_one_files_hold_every_weight(single_engine, single_dir, kind):
    """The configs folder holds no UNet, VAE or text encoder weights; the loaded ones equal,
    bit for bit, the same pipeline saved as a folder."""
    from shared.engine.tiny_ldm import WEIGHT_PARTS

    cfg = single_dir / "configs" / families.CONFIG_REPOS[TYPE[kind]]
    assert (cfg / "model_index.json").is_file()
    assert not list(cfg.glob("*/*.safetensors"))
    one, other = single_engine.warm(FILE[kind]).pipe, single_engine.warm(FOLDER[kind]).pipe
    parts = [p for p in WEIGHT_PARTS if getattr(other, p, None) is not None]
    assert parts == (list(WEIGHT_PARTS) if kind == "sdxl" else ["unet", "vae", "text_encoder"])
    for part in parts:
        _same(getattr(one, part).state_dict(), getattr(other, part).state_dict())


def test_sd2_v_prediction_comes_from_the_configs(tmp_path):
    """An SD 2.x file holds no sign of v-prediction: with v-prediction configs (SD 2.1's) the
    same kind of file is family sd2-v, loads with that scheduler and draws the folder's pixels;
    the sd2 fixture's epsilon configs make it sd2."""
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    write_ldm_single_file("sd2-v", tmp_path, "v-file", folder=tmp_path / "v-dir")
    found = families.detect(tmp_path / "v-file.safetensors")
    assert (found.family, found.source) == ("sd2-v", "single-file v2")
    assert families.detect(tmp_path / "v-dir").family == "sd2-v"
    eng = Engine(ModelRegistry(tmp_path), max_loaded=2)
    assert eng.warm("v-file").pipe.scheduler.config.prediction_type == "v_prediction"

    def run(name):
        return pixels(eng.generate(GenerationRequest(
            model=name, prompt="a red cat", width=64, height=64, steps=2, seed=9)).images[0].data)

    one, other = run("v-file"), run("v-dir")
    assert np.abs(one - other).max() <= 1 and (one != other).mean() < 0.005


def test_a_single_file_without_configs_is_refused_clearly(tmp_path, monkeypatch):
    """No configs folder: diffusers would fetch the hub's; offline that fails, and the error
    says how to fill them."""
    import diffusers

    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry
    from shared.errors import SdgateError, status_of

    write_single_file("flux-schnell", tmp_path, "lonely")
    import shutil

    shutil.rmtree(tmp_path / "configs")

    def offline(*a, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(diffusers.FluxPipeline, "from_single_file", offline)
    eng = Engine(ModelRegistry(tmp_path), max_loaded=1)
    with pytest.raises(SdgateError, match="sdgate pull --configs flux-schnell") as e:
        eng.generate(GenerationRequest(model="lonely", prompt="x", width=64, height=64))
    assert 400 <= status_of(e.value) < 500


# -- two API shapes ------------------------------------------------------------------------------
@pytest.fixture(params=["local", "remote"])
def single_client(request, single_dir, single_engine, make_settings, monkeypatch):
    with family_client(request.param, single_dir, single_engine, FILE["sd3"], make_settings,
                       monkeypatch) as c:
        yield c


def test_a1111_lists_and_draws_single_files(single_client):
    models = {m["model_name"]: m for m in single_client.get("/sdapi/v1/sd-models").json()}
    assert {models[FILE[k]]["family"] for k in KINDS} == set(KINDS)
    assert "configs" not in models  # the configs folder is not a model
    for kind in ("sd3", "flux-schnell", "sd1", "sd2", "sdxl"):
        base = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 2, "seed": 3,
                "override_settings": {"sd_model_checkpoint": FILE[kind]}}
        r = single_client.post("/sdapi/v1/txt2img", json=base)
        assert r.status_code == 200, r.text
        pixels(base64.b64decode(r.json()["images"][0]))
        init = base64.b64encode(png(INIT)).decode()
        r = single_client.post("/sdapi/v1/img2img", json={
            **base, "init_images": [init], "denoising_strength": 0.8,
            "mask": base64.b64encode(png(MASK)).decode()})
        assert r.status_code == 200, r.text
        out = pixels(base64.b64decode(r.json()["images"][0]))
        assert np.abs(out[np.asarray(MASK) == 0] - np.array((200, 40, 40))).mean() < 25


def test_openai_draws_single_files(single_client):
    for kind in ("sd3", "flux-dev", "sd1", "sd2", "sdxl"):
        r = single_client.post("/v1/images/generations", json={
            "model": FILE[kind], "prompt": "a red cat", "size": "64x64",
            "response_format": "b64_json"})
        assert r.status_code == 200, r.text
        pixels(base64.b64decode(r.json()["data"][0]["b64_json"]))
        r = single_client.post("/v1/images/edits", data={
            "model": FILE[kind], "prompt": "a red cat", "size": "64x64",
            "response_format": "b64_json"}, files={
            "image": ("i.png", png(INIT), "image/png"),
            "mask": ("m.png", png(alpha_mask()), "image/png")})
        assert r.status_code == 200, r.text
        out = pixels(base64.b64decode(r.json()["data"][0]["b64_json"]))
        assert np.abs(out[np.asarray(MASK) == 0] - np.array((200, 40, 40))).mean() < 25
