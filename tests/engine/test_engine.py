"""The engine on the tiny model: seeds, batches, modes, sizes, caching."""

import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from shared.engine.registry import ModelRegistry
from shared.errors import ModelNotFound, SamplerNotFound
from shared.generation import GenerationRequest

SMALL = dict(prompt="a red fox", width=64, height=64, steps=4)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_same_seed_same_bytes(engine):
    a = engine.generate(GenerationRequest(**SMALL, seed=123))
    b = engine.generate(GenerationRequest(**SMALL, seed=123))
    c = engine.generate(GenerationRequest(**SMALL, seed=124))
    assert a.images[0].data == b.images[0].data
    assert a.images[0].data != c.images[0].data


def test_batch_seeds_are_consecutive_and_position_independent(engine):
    batch = engine.generate(GenerationRequest(**SMALL, seed=40, num_images=3))
    assert [i.seed for i in batch.images] == [40, 41, 42]
    assert len({i.data for i in batch.images}) == 3
    alone = engine.generate(GenerationRequest(**SMALL, seed=42))
    # Same seed -> same image at any batch position (batched matmuls may differ by 1/255).
    assert np.abs(pixels(batch.images[2].data) - pixels(alone.images[0].data)).max() <= 2


def test_random_seed_when_minus_one(engine):
    r = engine.generate(GenerationRequest(**SMALL, seed=-1, num_images=2))
    assert 0 <= r.seed < 4294967294 and r.images[1].seed == r.seed + 1


def test_size_not_multiple_of_8_is_honoured(engine):
    r = engine.generate(GenerationRequest(**{**SMALL, "width": 60, "height": 44}))
    assert Image.open(io.BytesIO(r.images[0].data)).size == (60, 44)
    assert (r.images[0].width, r.images[0].height) == (60, 44)


def test_png_carries_infotext(engine):
    r = engine.generate(GenerationRequest(**SMALL, seed=7, sampler="Euler a"))
    text = Image.open(io.BytesIO(r.images[0].data)).info["parameters"]
    assert text.startswith("a red fox\n") and "Seed: 7" in text and "Sampler: Euler a" in text


def test_output_formats(engine):
    for fmt, mime in [("jpeg", "image/jpeg"), ("webp", "image/webp")]:
        r = engine.generate(GenerationRequest(**SMALL, output_format=fmt))
        assert r.images[0].mime_type == mime
        assert Image.open(io.BytesIO(r.images[0].data)).format == fmt.upper()


def test_img2img_and_inpaint(engine):
    init = engine.generate(GenerationRequest(**SMALL, seed=1)).images[0].data
    mask = io.BytesIO()
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (0, 0, 32, 64))
    m.save(mask, format="PNG")
    i2i = engine.generate(GenerationRequest(**SMALL, mode="img2img", init_image=init,
                                            strength=0.5, seed=2))
    inp = engine.generate(GenerationRequest(**SMALL, mode="inpaint", init_image=init,
                                            mask=mask.getvalue(), seed=2))
    assert Image.open(io.BytesIO(i2i.images[0].data)).size == (64, 64)
    # Random weights cannot reconstruct the picture, but the init image and strength must matter.
    other = engine.generate(GenerationRequest(**SMALL, seed=9)).images[0].data
    i2i_other = engine.generate(GenerationRequest(**SMALL, mode="img2img", init_image=other,
                                                  strength=0.5, seed=2))
    stronger = engine.generate(GenerationRequest(**SMALL, mode="img2img", init_image=init,
                                                 strength=0.9, seed=2))
    assert i2i.images[0].data != i2i_other.images[0].data
    assert i2i.images[0].data != stronger.images[0].data
    assert inp.images[0].data != init


def test_samplers_change_the_image(engine):
    a = engine.generate(GenerationRequest(**SMALL, seed=3, sampler="Euler"))
    b = engine.generate(GenerationRequest(**SMALL, seed=3, sampler="DPM++ 2M SDE Karras"))
    assert a.images[0].data != b.images[0].data


def test_unknown_model_and_sampler(engine):
    with pytest.raises(ModelNotFound, match="tiny-sd"):
        engine.generate(GenerationRequest(**SMALL, model="nope"))
    with pytest.raises(SamplerNotFound):
        engine.generate(GenerationRequest(**SMALL, sampler="nope"))


def test_warm_model_is_not_reloaded(engine):
    engine.warm()
    before = engine.cache.loads
    engine.generate(GenerationRequest(**SMALL))
    engine.generate(GenerationRequest(**SMALL, mode="img2img", init_image=engine.generate(
        GenerationRequest(**SMALL)).images[0].data))
    assert engine.cache.loads == before


def test_concurrent_requests_are_serialised_safely(engine):
    results, errors = {}, []

    def run(seed):
        try:
            results[seed] = engine.generate(GenerationRequest(**SMALL, seed=seed)).images[0].data
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in (11, 12, 11, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[11] == engine.generate(GenerationRequest(**SMALL, seed=11)).images[0].data


def test_registry_names_titles_and_native_size(models_dir):
    reg = ModelRegistry(models_dir)
    m = reg.resolve("tiny-sd")
    assert reg.resolve(m.title) == m and reg.resolve(m.hash) == m and reg.resolve(None) == m
    assert reg.native_size(m) == 512


def test_lru_cache_is_bounded(models_dir, tmp_path):
    import shutil

    from shared.engine import Engine

    for name in ("a", "b", "c"):
        shutil.copytree(models_dir / "tiny-sd", tmp_path / name)
    eng = Engine(ModelRegistry(tmp_path), max_loaded=2)
    for name in ("a", "b", "c"):
        eng.generate(GenerationRequest(**SMALL, model=name))
    assert eng.cache.loaded() == ["b", "c"] and eng.cache.loads == 3


def test_tiny_model_layout(models_dir):
    index = json.loads((models_dir / "tiny-sd" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    vae = json.loads((models_dir / "tiny-sd" / "vae" / "config.json").read_text())
    assert len(vae["block_out_channels"]) == 4  # 8x latents, like real SD


def test_subseed_variation(engine):
    base = engine.generate(GenerationRequest(**SMALL, seed=8))
    same = engine.generate(GenerationRequest(**SMALL, seed=8, subseed=99, subseed_strength=0.0))
    varied = engine.generate(GenerationRequest(**SMALL, seed=8, subseed=99, subseed_strength=0.3))
    assert base.images[0].data == same.images[0].data != varied.images[0].data
    rand = engine.generate(GenerationRequest(**SMALL, seed=8, subseed_strength=0.3))
    assert rand.subseed != 8 and "Variation seed strength: 0.3" in rand.images[0].infotext
