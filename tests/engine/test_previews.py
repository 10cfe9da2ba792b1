"""Streaming previews of intermediate latents: TAESD when it is installed, else the linear map."""

from __future__ import annotations

import base64
import io
import shutil
from types import SimpleNamespace

import numpy as np
import openai
import pytest
import torch
from PIL import Image

from shared.engine import previews


@pytest.fixture
def taesd_dir(models_dir):
    """A random-weight TAESD installed as <models_dir>/taesd for one test, removed after."""
    from safetensors.torch import save_file

    from shared.engine.archs import build_tiny_vae

    where = models_dir / "taesd"
    where.mkdir()
    save_file(build_tiny_vae(None).state_dict(),
              str(where / "diffusion_pytorch_model.safetensors"))
    yield where
    shutil.rmtree(where)


def loaded(family: str = "sd1", vae=None):
    """The two things previews read of a LoadedModel: its family and its pipeline."""
    pipe = SimpleNamespace(vae=vae or object(), unet=SimpleNamespace(dtype=torch.float32),
                           device=torch.device("cpu"))
    return SimpleNamespace(info=SimpleNamespace(family=family), pipe=pipe)


LATENTS = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def picture(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.size == (64, 64)
    px = np.asarray(img.convert("RGB"), dtype=float)
    assert np.isfinite(px).all() and px.std() > 0
    return px


def test_without_taesd_the_preview_is_the_linear_map(models_dir):
    assert previews.taesd(loaded(), models_dir) is None
    make = previews.preview_fn(None, (64, 64), "png")
    assert make(LATENTS) == previews.latent_png(LATENTS, (64, 64), "png")
    picture(make(LATENTS))


def test_an_installed_taesd_decodes_the_previews(models_dir, taesd_dir):
    decoder = previews.taesd(loaded(), models_dir)
    assert type(decoder).__name__ == "AutoencoderTiny"
    assert previews.taesd(loaded(), models_dir) is decoder  # loaded once
    data = previews.preview_fn(decoder, (64, 64), "png")(LATENTS)
    assert data == previews.taesd_png(decoder, LATENTS, (64, 64), "png")
    assert not np.array_equal(picture(data), picture(previews.latent_png(LATENTS, (64, 64))))
    assert Image.open(io.BytesIO(previews.preview_fn(decoder, (64, 64), "jpeg")(LATENTS))
                      ).format == "JPEG"  # in the request's output format


def test_the_pipelines_own_taesd_is_used_and_other_latent_spaces_get_none(models_dir,
                                                                            taesd_dir):
    from shared.engine.archs import build_tiny_vae

    own = build_tiny_vae(None)
    assert previews.taesd(loaded(vae=own), models_dir) is own  # SDGATE_TINY_VAE: no second copy
    for family in ("sd3", "flux-dev"):  # 16-channel latents: TAESD for SD does not read them
        assert previews.taesd(loaded(family), models_dir) is None
    assert previews.taesd(loaded("sdxl"), models_dir) is None  # taesdxl/ is not installed


def test_unreadable_taesd_weights_fall_back_to_the_linear_map(models_dir, taesd_dir):
    (taesd_dir / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    assert previews.taesd(loaded(), models_dir) is None  # logged, not raised


def test_a_failing_decode_falls_back_to_the_linear_map():
    broken = SimpleNamespace(device="cpu", dtype=torch.float32, decode=None)  # not callable
    data = previews.preview_fn(broken, (64, 64), "png")(LATENTS)
    assert data == previews.latent_png(LATENTS, (64, 64), "png")


def test_streamed_partial_images_are_taesd_decodes(live_server, taesd_dir, monkeypatch):
    made = []
    real = previews.taesd_png

    def spy(decoder, latents, size, fmt="png"):
        made.append(real(decoder, latents, size, fmt))
        return made[-1]

    monkeypatch.setattr(previews, "taesd_png", spy)
    client = openai.OpenAI(base_url=f"{live_server()}/v1", api_key="x", max_retries=0)
    events = list(client.images.generate(model="gpt-image-1", prompt="a lighthouse",
                                         size="64x64", stream=True, partial_images=2))
    assert [e.type for e in events][-1] == "image_generation.completed"
    partial = [base64.b64decode(e.b64_json) for e in events[:-1]]
    assert len(partial) == 2 and partial == made  # the previews are TAESD's pictures
    for data in partial:
        picture(data)
