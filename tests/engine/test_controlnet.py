"""ControlNet in the engine on the tiny model and a tiny random ControlNet built from its UNet."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shared.engine import batching, controlnet, preprocessors
from shared.errors import InvalidRequest, Unsupported
from shared.generation import ControlNetUnit, GenerationRequest

SIZE = 64


def square(size=SIZE, box=(16, 16, 47, 47)) -> Image.Image:
    img = Image.new("RGB", (size, size))
    ImageDraw.Draw(img).rectangle(box, fill="white")
    return img


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


CTRL = png(square())


def pixels(engine, units, **kw) -> np.ndarray:
    req = GenerationRequest(prompt="a house", width=SIZE, height=SIZE, steps=3, seed=7,
                            controlnets=units, **kw)
    out = engine.generate(req).images[0]
    return np.asarray(Image.open(io.BytesIO(out.data))).astype(int)


@pytest.fixture(scope="module")
def base(engine, controlnet_models):
    return pixels(engine, [])


def unit(**kw) -> ControlNetUnit:
    return ControlNetUnit(**{"model": "tiny-cn", "image": CTRL, **kw})


def test_weight_zero_is_no_unit_and_weight_one_changes(engine, base):
    assert (pixels(engine, [unit(weight=0.0)]) == base).all()
    one = pixels(engine, [unit(module="canny")])
    assert np.abs(one - base).mean() > 1 and one.std() > 0


def test_single_file_loads_like_the_folder(engine, base):
    a = pixels(engine, [unit()])
    b = pixels(engine, [unit(model="tiny-cn-file [0123abcd]")])
    assert (a == b).all() and (a != base).any()


def test_guidance_window(engine, base):
    full = pixels(engine, [unit()])
    assert (pixels(engine, [unit(guidance_start=0.9)]) == base).all()  # no step in the window
    half = pixels(engine, [unit(guidance_start=0.5)])
    assert (half != base).any() and (half != full).any()


def test_multi_unit_and_control_modes(engine, base):
    one = pixels(engine, [unit()])
    multi = pixels(engine, [unit(), unit(model="tiny-cn-file", weight=0.5, module="invert")])
    assert (multi != one).any() and (multi != base).any()
    assert (pixels(engine, [unit(control_mode="prompt")]) != one).any()
    assert (pixels(engine, [unit(control_mode="controlnet")]) != one).any()
    with pytest.raises(Unsupported):
        pixels(engine, [unit(control_mode="controlnet"), unit()])


def test_img2img_uses_the_init_image_and_inpaint_keeps_the_rest(engine):
    init = png(Image.new("RGB", (SIZE, SIZE), (200, 40, 40)))
    plain = pixels(engine, [], mode="img2img", init_image=init, strength=0.7)
    ctl = pixels(engine, [ControlNetUnit(model="tiny-cn")], mode="img2img", init_image=init,
                 strength=0.7)
    assert (ctl != plain).any()
    mask = Image.new("L", (SIZE, SIZE))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, SIZE - 1), fill=255)
    out = pixels(engine, [unit()], mode="inpaint", init_image=init, mask=png(mask), strength=0.8)
    assert (out[:, 40:] == (200, 40, 40)).all()  # outside the mask: untouched
    assert (out[:, :24] != (200, 40, 40)).any()


def test_canny_of_a_square_is_its_border():
    edges = np.asarray(preprocessors.run("canny", square(128, (32, 32, 95, 95))).convert("L"))
    ys, xs = np.nonzero(edges)
    assert len(ys) > 100
    on_border = (np.minimum(np.abs(ys[:, None] - [32, 95]).min(1),
                            np.abs(xs[:, None] - [32, 95]).min(1)) <= 2)
    assert on_border.all()
    assert edges[50:80, 50:80].max() == 0 and edges[:20].max() == 0


def test_other_preprocessors():
    img = square(64)
    inv = np.asarray(preprocessors.run("invert (from white bg & black line)", img))
    assert (inv == 255 - np.asarray(img)).all()
    grey = Image.new("RGB", (64, 64), (100, 100, 100))
    assert np.asarray(preprocessors.run("threshold", grey, 50)).min() == 255
    assert np.asarray(preprocessors.run("threshold", grey, 150)).max() == 0
    blurred = np.asarray(preprocessors.run("blur_gaussian", img, 3)).astype(int)
    assert 0 < blurred[32, 16, 0] < 255 and blurred[32, 32, 0] == 255
    assert preprocessors.run("tile_resample", img, 2.0).size == (32, 32)
    shuffled = np.asarray(preprocessors.run("shuffle", img))
    assert shuffled.shape == (64, 64, 3) and (shuffled != np.asarray(img)).any()
    scribble = np.asarray(preprocessors.run("scribble_xdog", img))
    assert scribble.max() == 255 and scribble[32, 32].max() == 0


def test_pixel_perfect_and_resize_modes():
    assert controlnet.pixel_perfect_res(Image.new("RGB", (200, 100)), 64, 64, 1) == 64
    assert controlnet.pixel_perfect_res(Image.new("RGB", (200, 100)), 64, 64, 2) == 32
    wide = Image.new("RGB", (128, 64), "white")
    crop = controlnet.control_image(ControlNetUnit(model="x", resize_mode=1), wide, 64, 64)
    assert crop.size == (64, 64) and np.asarray(crop).min() == 255


def test_wrong_names_name_the_choices(engine, controlnet_models):
    with pytest.raises(InvalidRequest, match="tiny-cn"):
        pixels(engine, [unit(model="nope")])
    with pytest.raises(InvalidRequest, match="canny"):
        pixels(engine, [unit(module="banana")])
    with pytest.raises(Unsupported, match="OpenPose"):
        preprocessors.canonical("openpose_full")
    with pytest.raises(InvalidRequest, match="no image"):
        pixels(engine, [ControlNetUnit(model="tiny-cn")])


def test_controlnet_requests_are_not_batched():
    plain = GenerationRequest(prompt="a")
    assert batching.batchable(plain)
    assert not batching.batchable(GenerationRequest(prompt="a", controlnets=[unit()]))



def side_mask(side: str, size: int) -> bytes:
    m = Image.new("L", (size, size))
    box = (0, 0, size // 2 - 1, size - 1) if side == "left" else (size // 2, 0, size - 1, size - 1)
    ImageDraw.Draw(m).rectangle(box, fill=255)
    return png(m)


def halves(out, base, size):
    change = np.abs(out - base).mean(axis=(0, 2))  # per column
    return change[:size // 2].mean(), change[size // 2:].mean()


def test_effective_region_mask(engine, base):
    full = pixels(engine, [unit(module="canny")])
    white = png(Image.new("L", (SIZE, SIZE), 255))
    black = png(Image.new("L", (SIZE, SIZE), 0))
    assert (pixels(engine, [unit(module="canny", region_mask=white)]) == full).all()
    assert (pixels(engine, [unit(module="canny", region_mask=black)]) == base).all()
    big = 128  # 16x16 latents: enough room to see where it acts (the net still spreads it)

    def at(units):
        req = GenerationRequest(prompt="a house", width=big, height=big, steps=3, seed=7,
                                controlnets=units)
        return np.asarray(Image.open(io.BytesIO(engine.generate(req).images[0].data))).astype(int)

    plain = at([])
    ctl = png(square(big, (32, 32, 95, 95)))
    left, right = (halves(at([unit(image=ctl, region_mask=side_mask(s, big))]), plain, big)
                   for s in ("left", "right"))
    assert left[0] > 1.4 * left[1] and right[1] > 1.4 * right[0]
    with pytest.raises(Unsupported, match="inpaint preprocessors"):
        pixels(engine, [unit(mask=white)])
