"""SD3 and Flux as single-file checkpoints (transformer only, the rest from the family's configs
folder as `sdgate pull --configs` fills it): detected from the keys, loaded with diffusers'
from_single_file offline, drawing the same pixels as the same weights saved as a folder, through
the engine, A1111 and OpenAI."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from shared.engine import families
from shared.engine.tiny_families import write_single_file, write_tiny_family
from shared.generation import GenerationRequest, Mode

KINDS = ("sd3", "flux-dev", "flux-schnell")
FILE = {"sd3": "file-a", "flux-dev": "file-b", "flux-schnell": "file-c"}
FOLDER = {"sd3": "dir-a", "flux-dev": "dir-b", "flux-schnell": "dir-c"}


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    for kind in KINDS:
        write_single_file(kind, root, FILE[kind])
        write_tiny_family(kind, root / FOLDER[kind])  # the same seed-0 weights, as a folder
    return root


@pytest.fixture(scope="module")
def single_engine(single_dir):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    return Engine(ModelRegistry(single_dir, default=FILE["sd3"]), max_loaded=6)


def _pixels(data: bytes) -> np.ndarray:
    a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    assert np.isfinite(a).all() and a.std() > 1.0, "blank or constant image"
    return a


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


INIT = Image.new("RGB", (64, 64), (200, 40, 40))
MASK = Image.new("L", (64, 64), 0)
MASK.paste(255, (16, 16, 48, 48))


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


@pytest.mark.parametrize("kind", KINDS)
def test_single_files_are_detected_with_their_configs_repo(single_dir, kind):
    found = families.detect(single_dir / f"{FILE[kind]}.safetensors")
    assert found.family == kind and found.source.startswith("single-file")
    assert found.config_repo == families.CONFIG_REPOS[kind]
    assert ("diffusers keys" in found.source) == kind.startswith("flux")
    assert found.distilled == ("schnell" if kind == "flux-schnell" else "")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_single_file_draws_what_the_folder_draws(single_engine, kind, mode):
    def run(name):
        extra = {}
        if mode != "txt2img":
            extra.update(init_image=_png(INIT), strength=0.6)
        if mode == "inpaint":
            extra["mask"] = _png(MASK)
        return single_engine.generate(GenerationRequest(
            model=name, prompt="a red cat", width=64, height=64, steps=2, seed=9,
            mode=Mode(mode), **extra)).images[0].data

    one = _pixels(run(FILE[kind]))
    assert single_engine.warm(FILE[kind]).info.single_file
    assert np.array_equal(one, _pixels(run(FOLDER[kind])))  # the transformer is the file's


def test_the_transformer_comes_from_the_file(single_engine, single_dir):
    """The configs folder has no transformer weights; the loaded one equals the file's."""
    import torch
    from safetensors.torch import load_file

    cfg = single_dir / "configs" / families.CONFIG_REPOS["flux-dev"] / "transformer"
    assert not list(cfg.glob("*.safetensors"))
    loaded = single_engine.warm(FILE["flux-dev"]).pipe.transformer.state_dict()
    stored = load_file(str(single_dir / f"{FILE['flux-dev']}.safetensors"))
    assert all(torch.equal(loaded[k].float(), stored[k].float()) for k in stored)


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
    from fastapi.testclient import TestClient

    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.storage import make_storage
    from tests.conftest import gpu_class_backend

    settings = make_settings(models_dir=single_dir, default_model=FILE["sd3"])
    if request.param == "remote":
        app = create_app(settings, gpu_class_backend(settings, monkeypatch))
    else:
        app = create_app(settings, LocalBackend(single_engine, make_storage(settings)))
    with TestClient(app) as c:
        yield c


def test_a1111_lists_and_draws_single_files(single_client):
    models = {m["model_name"]: m for m in single_client.get("/sdapi/v1/sd-models").json()}
    assert {models[FILE[k]]["family"] for k in KINDS} == set(KINDS)
    assert "configs" not in models  # the configs folder is not a model
    for kind in ("sd3", "flux-schnell"):
        base = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 2, "seed": 3,
                "override_settings": {"sd_model_checkpoint": FILE[kind]}}
        r = single_client.post("/sdapi/v1/txt2img", json=base)
        assert r.status_code == 200, r.text
        _pixels(base64.b64decode(r.json()["images"][0]))
        init = base64.b64encode(_png(INIT)).decode()
        r = single_client.post("/sdapi/v1/img2img", json={
            **base, "init_images": [init], "denoising_strength": 0.8,
            "mask": base64.b64encode(_png(MASK)).decode()})
        assert r.status_code == 200, r.text
        out = _pixels(base64.b64decode(r.json()["images"][0]))
        assert np.abs(out[np.asarray(MASK) == 0] - np.array((200, 40, 40))).mean() < 25


def test_openai_draws_single_files(single_client):
    for kind in ("sd3", "flux-dev"):
        r = single_client.post("/v1/images/generations", json={
            "model": FILE[kind], "prompt": "a red cat", "size": "64x64",
            "response_format": "b64_json"})
        assert r.status_code == 200, r.text
        _pixels(base64.b64decode(r.json()["data"][0]["b64_json"]))
        r = single_client.post("/v1/images/edits", data={
            "model": FILE[kind], "prompt": "a red cat", "size": "64x64",
            "response_format": "b64_json"}, files={
            "image": ("i.png", _png(INIT), "image/png"),
            "mask": ("m.png", _png(_alpha_mask()), "image/png")})
        assert r.status_code == 200, r.text
        _pixels(base64.b64decode(r.json()["data"][0]["b64_json"]))


def _alpha_mask() -> Image.Image:
    """OpenAI's mask: transparent where to edit."""
    m = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (16, 16, 48, 48))
    return m
