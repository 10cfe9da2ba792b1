"""Upscaling (shared/engine/upscalers.py) with tiny random-weight upscalers in the real formats."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from shared.engine import ops, tiny_upscalers
from shared.engine.registry import ModelRegistry
from shared.errors import InvalidRequest
from shared.postprocess import UpscaleRequest, installed

FILES = {
    "R-ESRGAN 4x+": ("RealESRGAN/RealESRGAN_x4plus.pth", tiny_upscalers.realesrgan_x4plus),
    "R-ESRGAN General 4xV3": ("RealESRGAN/realesr-general-x4v3.pth", tiny_upscalers.compact),
    "4x-UltraSharp": ("ESRGAN/4x-UltraSharp.safetensors", tiny_upscalers.esrgan_old),
    "ESRGAN_4x": ("ESRGAN/ESRGAN_4x.pth", tiny_upscalers.esrgan_old),
    "SwinIR_4x": ("SwinIR/SwinIR_4x.pth", tiny_upscalers.swinir),
}


def write_upscalers(root: Path) -> Path:
    for rel, make in FILES.values():
        make(root / rel)
    return root


@pytest.fixture(scope="module")
def up_dir(tmp_path_factory) -> Path:
    return write_upscalers(tmp_path_factory.mktemp("upscalers"))


@pytest.fixture(scope="module")
def eng(up_dir):
    """What the operation reads of an engine: the registry's folder, the pixel limit, device."""
    return SimpleNamespace(registry=ModelRegistry(up_dir), max_image_pixels=2048 * 2048,
                           device="cpu")


def picture(w: int = 32, h: int = 24, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float64)


def run(eng, **kw):
    return ops.run(eng, "upscale", UpscaleRequest(images=[picture()], **kw))


def test_names_as_upstream(up_dir):
    found = {u.name: u for u in installed(up_dir)}
    assert set(found) == set(FILES)
    assert found["R-ESRGAN 4x+"].model_name is None and found["ESRGAN_4x"].model_name == "ESRGAN_4x"


@pytest.mark.parametrize("name", list(FILES))
def test_every_format_upscales_4x(eng, name):
    res = run(eng, upscaler_1=name, scale=4, tile=0)
    out = pixels(res.images[0])
    assert out.shape == (96, 128, 3)
    assert np.isfinite(out).all() and out.std() > 1.0
    assert res.info == {"Postprocess upscale by": "4", "Postprocess upscaler": name}


def test_tiles_cover_the_image(eng, monkeypatch):
    from shared.engine import spandrel_models

    whole = pixels(run(eng, upscaler_1="R-ESRGAN General 4xV3", scale=4, tile=0).images[0])
    calls = []
    model = spandrel_models.load(eng.registry.root / FILES["R-ESRGAN General 4xV3"][0])
    monkeypatch.setattr(type(model), "__call__",
                        lambda self, x, _f=type(model).__call__: calls.append(x.shape)
                        or _f(self, x))
    tiled = pixels(run(eng, upscaler_1="R-ESRGAN General 4xV3", scale=4, tile=16,
                       tile_overlap=4).images[0])
    assert len(calls) == 3 * 2 and all(s[-1] <= 16 and s[-2] <= 16 for s in calls)
    assert tiled.shape == whole.shape
    # a tiny receptive field: tiles agree with the whole image except near the seams
    assert np.abs(tiled - whole).mean() < 8


def test_model_scale_2_from_4x_model_and_8_in_two_passes(eng):
    assert pixels(run(eng, upscaler_1="4x-UltraSharp", scale=2).images[0]).shape == (48, 64, 3)
    assert pixels(run(eng, upscaler_1="R-ESRGAN General 4xV3", scale=8,
                      tile=0).images[0]).shape == (192, 256, 3)


def test_builtins(eng):
    src = pixels(picture())
    near = pixels(run(eng, upscaler_1="Nearest", scale=2).images[0])
    assert np.array_equal(near, src.repeat(2, 0).repeat(2, 1))
    lanczos = pixels(run(eng, upscaler_1="Lanczos", scale=2).images[0])
    assert lanczos.shape == near.shape and not np.array_equal(lanczos, near)
    assert np.array_equal(pixels(run(eng, upscaler_1=None).images[0]), src)  # null: untouched


def test_second_upscaler_is_blended(eng):
    a = Image.open(io.BytesIO(run(eng, upscaler_1="Nearest", scale=2).images[0]))
    b = Image.open(io.BytesIO(run(eng, upscaler_1="Lanczos", scale=2).images[0]))
    res = run(eng, upscaler_1="Nearest", upscaler_2="Lanczos", upscaler_2_visibility=0.5, scale=2)
    want = np.asarray(Image.blend(a.convert("RGB"), b.convert("RGB"), 0.5)).astype(np.float64)
    assert np.array_equal(pixels(res.images[0]), want)
    assert res.info["Postprocess upscaler 2"] == "Lanczos"


def test_resize_to_size_and_crop(eng):
    res = run(eng, upscaler_1="R-ESRGAN 4x+", resize_mode="size", width=100, height=60, tile=0)
    out = pixels(res.images[0])
    assert out.shape == (60, 100, 3)  # scale max(100/32, 60/24) -> 100x75 floored to 96x72
    assert out[:, :2].sum() == 0 and out[:, -2:].sum() == 0 and out[:, 4:-4].std() > 1.0
    assert res.info["Postprocess crop to"] == "100x60"
    uncropped = pixels(run(eng, upscaler_1="Lanczos", resize_mode="size", width=100, height=60,
                           crop=False).images[0])
    assert uncropped.shape == (72, 96, 3)


def test_refusals(eng):
    with pytest.raises(InvalidRequest, match="R-ESRGAN 4x\\+.*SwinIR_4x"):
        run(eng, upscaler_1="LDSR")
    with pytest.raises(InvalidRequest, match="over the limit"):
        ops.run(eng, "upscale", UpscaleRequest(images=[picture(512, 512)], upscaler_1="Lanczos",
                                               scale=8))
