"""A1111 semantics in the engine, on the tiny model: LoRA tags, textual inversion, hires fix,
tiling, seeds and variations, inpainting, resize modes, interrupt."""

from __future__ import annotations

import io
import threading
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from tests.engine.a1111_assets import (EMBEDDING_NAME, LORA_NAME, ensure_assets,
                                       write_kohya_lora)
from shared.engine import embeddings, hires, masking, resize
from shared.errors import NotFound, Unsupported
from shared.generation import GenerationRequest, HiresFix, LoraRef, Mode
from shared.progress import TASKS

SECOND_LORA = "tiny_second_lora"


@pytest.fixture(scope="module")
def pipe(engine, models_dir):
    p = engine.warm().pipe
    ensure_assets(models_dir, p)
    second = models_dir / "Lora" / f"{SECOND_LORA}.safetensors"
    if not second.exists():
        write_kohya_lora(p, second, seed=1)
    return p


def gen(engine, prompt="a cat", **kw):
    kw = {"width": 64, "height": 64, "steps": 3, "seed": 7, **kw}
    return engine.generate(GenerationRequest(prompt=prompt, **kw))


def pixels(image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def lora_layers(p) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for part in (p.unet, p.text_encoder)
               for m in part.modules())


# -- LoRA ---------------------------------------------------------------------------------------
def test_lora_tag_is_applied_with_its_weight_and_removed_after(engine, pipe):
    base = pixels(gen(engine).images[0])
    full = pixels(gen(engine, f"a cat <lora:{LORA_NAME}:1>").images[0])
    half = pixels(gen(engine, f"a cat <lora:{LORA_NAME}:0.5>").images[0])
    zero = pixels(gen(engine, f"a cat <lora:{LORA_NAME}:0>").images[0])
    assert not np.array_equal(full, base)
    assert not np.array_equal(half, full)
    assert np.array_equal(zero, base)  # weight 0: the LoRA contributes nothing
    assert lora_layers(pipe) == 0 and pipe.get_list_adapters() == {}
    assert np.array_equal(pixels(gen(engine).images[0]), base)  # the model is as before


def test_several_loras_at_once(engine, pipe):
    one = pixels(gen(engine, f"a cat <lora:{LORA_NAME}:1>").images[0])
    other = pixels(gen(engine, f"a cat <lora:{SECOND_LORA}:1>").images[0])
    both = pixels(gen(engine, f"a cat <lora:{LORA_NAME}:1> <lora:{SECOND_LORA}:1>").images[0])
    assert not np.array_equal(both, one) and not np.array_equal(both, other)
    # A LoraRef in the request is the same as the tag.
    ref = gen(engine, loras=[LoraRef(name=LORA_NAME, weight=1.0)]).images[0]
    assert np.array_equal(pixels(ref), one)


def test_lora_text_encoder_and_unet_weights_split(engine, pipe):
    full = pixels(gen(engine, f"a cat <lora:{LORA_NAME}:1:1>").images[0])
    unet_only = pixels(gen(engine, f"a cat <lora:{LORA_NAME}:0:1>").images[0])
    te_only = pixels(gen(engine, f"a cat <lora:{LORA_NAME}:te=1:unet=0>").images[0])
    assert not np.array_equal(full, unet_only) and not np.array_equal(full, te_only)


def test_unknown_lora_and_other_networks_are_refused(engine, pipe):
    with pytest.raises(NotFound, match="LoRA not found: 'nope'"):
        gen(engine, "a cat <lora:nope:1>")
    with pytest.raises(Unsupported, match="hypernet"):
        gen(engine, "a cat <hypernet:thing:1>")
    assert lora_layers(pipe) == 0


# -- textual inversion --------------------------------------------------------------------------
def test_embedding_is_loaded_by_file_name(engine, pipe, models_dir):
    from safetensors.torch import load_file

    result = gen(engine, "a cat", negative_prompt=f"blurry, {EMBEDDING_NAME}")
    assert len(result.images) == 1
    tok = pipe.tokenizer
    ids = tok(pipe.maybe_convert_prompt(EMBEDDING_NAME, tok), add_special_tokens=False).input_ids
    assert len(ids) == 2  # one token per vector of the embedding
    want = load_file(str(models_dir / "embeddings" / f"{EMBEDDING_NAME}.safetensors"))
    rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach()
    assert np.allclose(rows.numpy(), want["emb_params"].numpy())


def test_embedding_names_match_whole_words():
    names = ["easyneg", "bad-hands"]
    assert embeddings.mentioned(names, ["(easyneg:1.2), x"]) == ["easyneg"]
    assert embeddings.mentioned(names, ["easynegative", "bad-handsome"]) == []


# -- hires fix ----------------------------------------------------------------------------------
@pytest.mark.parametrize("upscaler", ["Latent", "Latent (bicubic antialiased)", "Lanczos"])
def test_hires_fix_second_pass_at_the_target_size(engine, upscaler):
    task = uuid.uuid4().hex
    r = gen(engine, width=64, height=48, task_id=task,
            hires=HiresFix(width=128, height=96, steps=3, strength=0.5, upscaler=upscaler))
    assert (r.images[0].width, r.images[0].height) == (128, 96)
    assert "Hires upscaler: " + upscaler in r.images[0].infotext
    t = TASKS.get(task)
    assert (t.job_no, t.job_count) == (2, 2)
    assert t.sampling_step == t.sampling_steps == 3  # exactly the hires steps asked for


def test_hires_weight_backed_upscaler_is_refused(engine):
    with pytest.raises(Unsupported, match="R-ESRGAN"):
        gen(engine, hires=HiresFix(width=128, height=128, upscaler="R-ESRGAN 4x+"))


@pytest.mark.parametrize("steps, strength", [(3, 0.5), (10, 0.7), (20, 0.33), (7, 1.0)])
def test_img2img_steps_give_the_exact_step_count(steps, strength):
    assert int(hires.img2img_steps(steps, strength) * strength) == steps


# -- tiling, seeds ------------------------------------------------------------------------------
def test_tiling_is_applied_and_restored(engine, pipe):
    import torch

    plain = pixels(gen(engine).images[0])
    tiled = gen(engine, tiling=True).images[0]
    assert not np.array_equal(pixels(tiled), plain)
    assert "Tiling: True" in tiled.infotext
    convs = [m for m in [*pipe.unet.modules(), *pipe.vae.modules()]
             if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.padding_mode == "zeros" for m in convs)


def test_seeds_and_variation_seeds_as_a1111(engine):
    r = gen(engine, num_images=3, batch_size=2, seed=100, subseed=500)
    assert [i.seed for i in r.images] == [100, 101, 102]
    assert [i.subseed for i in r.images] == [500, 501, 502]
    v = gen(engine, num_images=2, seed=100, subseed=500, subseed_strength=0.5)
    assert [i.seed for i in v.images] == [100, 100]
    assert [i.subseed for i in v.images] == [500, 501]
    assert not np.array_equal(pixels(v.images[0]), pixels(v.images[1]))
    assert "Variation seed: 500" in v.images[0].infotext


def test_seed_resize_from(engine):
    same = gen(engine, seed_resize_from=(64, 64)).images[0]
    assert np.array_equal(pixels(same), pixels(gen(engine).images[0]))
    other = gen(engine, seed_resize_from=(32, 48)).images[0]
    assert not np.array_equal(pixels(other), pixels(same))
    assert "Seed resize from: 32x48" in other.infotext


# -- img2img and inpainting ---------------------------------------------------------------------
RED = Image.new("RGB", (64, 64), (200, 30, 30))


def square_mask(size=64, box=(16, 16, 48, 48)) -> Image.Image:
    m = Image.new("L", (size, size))
    m.paste(255, box)
    return m


def inpaint(engine, init=RED, mask=None, **kw):
    return gen(engine, mode=Mode.inpaint, init_image=png(init),
               mask=png(mask or square_mask(init.width)), strength=0.9, steps=4, **kw)


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_inpaint_keeps_pixels_outside_the_mask(engine, fill):
    out = pixels(inpaint(engine, inpainting_fill=fill).images[0])
    red = np.asarray(RED, dtype=np.int16)
    inside = np.zeros((64, 64), bool)
    inside[16:48, 16:48] = True
    assert np.array_equal(out[~inside], red[~inside])
    assert not np.array_equal(out[inside], red[inside])


def test_inpaint_mask_invert_and_blur(engine):
    out = pixels(inpaint(engine, mask_invert=True).images[0])
    red = np.asarray(RED, dtype=np.int16)
    assert np.array_equal(out[20:44, 20:44], red[20:44, 20:44])  # the square is kept now
    blurred = inpaint(engine, mask_blur=(4, 4)).images[0]
    assert "Mask blur: 4" in blurred.infotext


def test_inpaint_only_masked_returns_the_full_picture(engine):
    big = Image.new("RGB", (128, 128), (20, 90, 200))
    out = inpaint(engine, init=big, mask=square_mask(128, (80, 80, 112, 112)),
                  inpaint_full_res=True, inpaint_full_res_padding=8).images[0]
    assert (out.width, out.height) == (128, 128)
    px, blue = pixels(out), np.asarray(big, dtype=np.int16)
    assert np.array_equal(px[:64, :64], blue[:64, :64])
    assert not np.array_equal(px[80:112, 80:112], blue[80:112, 80:112])
    assert "Inpaint area: Only masked" in out.infotext


def test_empty_mask_falls_back_to_img2img(engine):
    out = inpaint(engine, mask=Image.new("L", (64, 64))).images[0]
    assert (out.width, out.height) == (64, 64)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_img2img_resize_modes(engine, mode):
    wide = Image.new("RGB", (96, 48), (10, 200, 10))
    r = gen(engine, mode=Mode.img2img, init_image=png(wide), width=64, height=64,
            strength=0.5, steps=4, resize_mode=mode)
    assert (r.images[0].width, r.images[0].height) == (64, 64)


def test_resize_helpers():
    wide = Image.new("RGB", (100, 50))
    assert resize.fit(wide, resize.CROP, 64, 64).size == (64, 64)
    assert resize.fit(wide, resize.FILL, 64, 64).size == (64, 64)
    assert resize.fit(wide, resize.LATENT, 64, 64).size == (100, 50)
    region = masking.crop_region(square_mask(128, (10, 10, 20, 40)), 4, 64, 32)
    x1, y1, x2, y2 = region
    assert (x2 - x1) == 2 * (y2 - y1) and x1 >= 0 and x2 <= 128


# -- interrupt ----------------------------------------------------------------------------------
def test_interrupt_stops_the_running_task_and_its_later_batches(engine):
    task = uuid.uuid4().hex
    out = {}
    worker = threading.Thread(target=lambda: out.update(r=gen(
        engine, steps=300, num_images=3, batch_size=1, task_id=task)))
    worker.start()
    while worker.is_alive():  # wait until sampling has begun, then interrupt
        t = TASKS.get(task)
        if t is not None and t.sampling_step >= 1:
            TASKS.interrupt(task)
            break
        time.sleep(0.01)
    worker.join()
    result = out["r"]
    assert result.interrupted
    assert len(result.images) == 1  # later batches never started
    assert TASKS.get(task).sampling_step < 300
