"""The GPU-path options on the tiny model (CPU): each is applied for real and keeps images sane."""

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from shared.config import Settings
from shared.engine import Engine, accel
from shared.engine.accel import AccelOptions
from shared.engine.deepcache import DeepCache
from shared.engine.registry import ModelRegistry
from shared.errors import GenerationFailed
from shared.generation import GenerationRequest

SMALL = dict(prompt="a red fox", width=64, height=64, steps=6, seed=5)


@pytest.fixture
def pipe():
    from shared.bench.arch import tiny_pipeline

    return tiny_pipeline("cpu")


def run(pipe, steps=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return pipe("a fox", num_inference_steps=steps, width=64, height=64, generator=g,
                output_type="np").images


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_defaults_are_on_only_where_they_help():
    opts = AccelOptions.from_settings(Settings(_env_file=None))
    cpu, gpu = opts.for_device("cpu"), opts.for_device("cuda")
    assert cpu.channels_last is False and gpu.channels_last is True
    assert opts.torch_dtype("cpu") == torch.float32 and opts.torch_dtype("cuda") == torch.float16
    assert AccelOptions(dtype="bf16").torch_dtype("cuda") == torch.bfloat16
    assert opts.sdpa and not (opts.compile or opts.fuse_qkv or opts.tiny_vae)
    assert opts.deepcache_interval == 0


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SDGATE_CHANNELS_LAST", "on")
    monkeypatch.setenv("SDGATE_DEEPCACHE_INTERVAL", "3")
    monkeypatch.setenv("SDGATE_COMPILE_CACHE_DIR", str(tmp_path))
    opts = AccelOptions.from_settings(Settings(_env_file=None))
    assert opts.channels_last is True and opts.deepcache_interval == 3
    assert opts.compile_cache_dir == tmp_path
    with pytest.raises(ValueError, match="compile mode"):
        AccelOptions(compile_mode="fastest")


def test_sdpa_channels_last_and_fused_qkv_keep_the_image(pipe):
    from diffusers.models.attention_processor import (AttnProcessor, AttnProcessor2_0,
                                                      FusedAttnProcessor2_0)

    accel.set_attention(pipe, False)
    assert all(isinstance(p, AttnProcessor) for p in pipe.unet.attn_processors.values())
    classic = run(pipe)
    accel.set_attention(pipe, True)
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    accel.to_channels_last(pipe)
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    accel.fuse_qkv(pipe)
    assert all(isinstance(p, FusedAttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    assert hasattr(pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1, "to_qkv")
    # Same maths, other kernels: the image may move by float rounding only.
    assert np.abs(run(pipe) - classic).max() < 1e-3


def test_deepcache_skips_the_deep_blocks_and_changes_compute(pipe):
    calls = []
    pipe.unet.down_blocks[1].resnets[0].register_forward_hook(lambda *a: calls.append(1))
    plain = run(pipe)
    full = len(calls)
    cache = DeepCache(pipe.unet, 3).enable()
    calls.clear()
    cached = run(pipe)
    assert len(calls) < full / 2  # the deep blocks ran on every third UNet call only
    assert cache.cached_steps > cache.full_steps > 0
    assert np.isfinite(cached).all() and np.abs(cached - plain).max() > 0
    # A second generation starts again with a full step: same result, no stale features.
    assert np.array_equal(run(pipe), cached)
    other = run(pipe, seed=2)
    cache.disable()
    calls.clear()
    assert np.array_equal(run(pipe), plain) and len(calls) == full
    assert not np.array_equal(other, cached)


def test_deepcache_interval_one_is_exact(pipe):
    plain = run(pipe)
    cache = DeepCache(pipe.unet, 1).enable()
    assert np.array_equal(run(pipe), plain) and cache.cached_steps == 0


def test_deepcache_never_reuses_features_across_sizes(pipe):
    cache = DeepCache(pipe.unet, 4).enable()
    run(pipe, steps=2)
    g = torch.Generator().manual_seed(1)
    img = pipe("a fox", num_inference_steps=2, width=96, height=64, generator=g,
               output_type="np").images
    assert img.shape[1:3] == (64, 96) and cache.full_steps == 2


def test_tiny_vae_needs_weights_unless_random(pipe, tmp_path):
    with pytest.raises(ValueError, match="taesd"):
        accel.tiny_vae(pipe, AccelOptions(tiny_vae=True, models_dir=tmp_path))
    from safetensors.torch import save_file

    from shared.engine.archs import build_tiny_vae

    ref = build_tiny_vae(None)
    (tmp_path / "taesd").mkdir()
    save_file(ref.state_dict(), str(tmp_path / "taesd" / "diffusion_pytorch_model.safetensors"))
    loaded = accel.tiny_vae(pipe, AccelOptions(tiny_vae=True, models_dir=tmp_path))
    assert type(loaded).__name__ == "AutoencoderTiny"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                  ref.state_dict().values()))
    pipe.vae = loaded
    assert run(pipe, steps=2).shape == (1, 64, 64, 3)


def test_compile_is_set_up_lazily_with_its_cache_dir(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/nowhere")
    accel.compile_unet(pipe, "max-autotune-no-cudagraphs", tmp_path / "inductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert (tmp_path / "inductor").is_dir()
    assert pipe.unet._compiled_call_impl is not None  # compiled on the first call (not run here)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"


def test_engine_applies_options_once_after_load(models_dir):
    plain = Engine(ModelRegistry(models_dir))
    cached = Engine(ModelRegistry(models_dir), accel=AccelOptions(deepcache_interval=3,
                                                                   channels_last=True))
    assert cached.warm().speedups == ["dtype=float32", "sdpa", "channels_last", "deepcache=3"]
    a = plain.generate(GenerationRequest(**SMALL)).images[0].data
    b = cached.generate(GenerationRequest(**SMALL)).images[0].data
    assert a != b and pixels(b).std() > 0
    assert cached.cache.loads == 1


def test_engine_refuses_tiny_vae_without_weights(models_dir, tmp_path):
    eng = Engine(ModelRegistry(models_dir), accel=AccelOptions(tiny_vae=True, models_dir=tmp_path))
    with pytest.raises(GenerationFailed, match="taesd"):
        eng.warm()


def test_loras_are_refused_with_fused_qkv(models_dir, engine):
    from shared.errors import Unsupported
    from tests.engine.a1111_assets import LORA_NAME, ensure_assets

    ensure_assets(models_dir, engine.warm().pipe)
    fused = Engine(ModelRegistry(models_dir), accel=AccelOptions(fuse_qkv=True))
    with pytest.raises(Unsupported, match="SDGATE_FUSE_QKV"):
        fused.generate(GenerationRequest(**{**SMALL, "prompt": f"a fox <lora:{LORA_NAME}:1>"}))
    assert fused.generate(GenerationRequest(**SMALL)).images[0].data  # without LoRA: fine
